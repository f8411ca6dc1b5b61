//! The HTTP client for DeepSeek's OpenAI-compatible API.
//!
//! Every chat call asks the upstream for a stream (`"stream": true` with
//! `stream_options.include_usage`), also for unary client calls, so time
//! limits, stall detection, time-to-first-token and usage work the same way
//! for both; the caller aggregates unary answers.
//!
//! Time limits: reqwest gets only a connect timeout (its `.timeout()` would
//! cut long streams). The first meaningful chunk (content, reasoning content,
//! a piece of a tool call, finish reason or usage) must arrive within
//! [`UpstreamConfig::first_token_timeout`] of the attempt's start; after that,
//! meaningful chunks must come at most [`UpstreamConfig::idle_timeout`]
//! apart — `: keep-alive` comments, blank lines, events that carry nothing
//! and bytes that do not complete an event never count as progress. The
//! whole call, all attempts included, ends at the deadline (the shorter of
//! [`UpstreamConfig::total_timeout`] and the caller's).
//!
//! Events are parsed in bounded memory and time (the `sse` module): none may
//! exceed [`UpstreamConfig::max_event_bytes`] ([`FailureKind::EventTooLarge`]),
//! and a flood of bytes yields to other tasks and to the time limits.
//!
//! Retries happen only before the first meaningful chunk, on 429, 500, 502,
//! 503, 504, connection errors, connect timeouts and first-token timeouts.
//!
//! The API key never appears in a [`Failure`], in `Debug` output or in a log
//! line: every text taken from the upstream (bodies, headers, events, balance
//! fields) goes through the `redact` module before it is cut or quoted, which
//! replaces the key, raw or JSON-escaped, and a piece of it left at the end
//! of a body read only up to a limit; a balance currency holding a piece of
//! the key is refused. The `Authorization` header is marked sensitive and
//! never logged.
//!
//! Layout: `key` (the API key), `failure` (failures and their mapping),
//! `wire` (the upstream's JSON: usage, deltas, models, balance), `stream`
//! (a started answer), `client` (the chat call: attempts, retries,
//! backoff), `account` (the models and balance calls).

mod account;
mod client;
mod failure;
mod key;
mod stream;
#[cfg(test)]
mod test_support;
mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use automation_telemetry::client::error_chain;
use reqwest::{Client, Url};

pub use failure::{Attempts, Failure, FailureKind};
pub use key::ApiKey;
pub use stream::ChatStream;
pub use wire::{CurrencyBalance, Delta, TokenUsage, UpstreamBalance, UpstreamModel};

/// Installs rustls' `ring` crypto provider as the process default, once.
///
/// Idempotent: a provider that is already installed (by this or by anyone
/// else) is left alone. [`Upstream::new`] calls it before building its client.
pub fn install_crypto() {
    // An error only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Settings of the upstream client.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The API root, `https://api.deepseek.com` by default; a trailing `/` is
    /// tolerated.
    pub base_url: String,
    /// TCP (and TLS) connect limit, 10 s by default.
    pub connect_timeout: Duration,
    /// From sending a request to its first meaningful chunk (content,
    /// reasoning content, a tool call, finish reason or usage), per attempt;
    /// 120 s by default.
    pub first_token_timeout: Duration,
    /// Longest gap between real SSE events once the answer has started;
    /// keep-alive comments and blank lines do not count. 60 s by default.
    pub idle_timeout: Duration,
    /// The whole call, all attempts included; a caller may pass a shorter
    /// deadline. 600 s by default.
    pub total_timeout: Duration,
    /// Attempts per call, retries included; 4 by default (0 counts as 1).
    pub max_attempts: u32,
    /// Base of the exponential backoff: the wait before retry `n` (from 0) is
    /// random in `[backoff_base / 2, min(backoff_max, backoff_base * 2^(n+1))]`
    /// ([`Backoff`](automation_telemetry::backoff::Backoff)).
    /// 200 ms by default.
    pub backoff_base: Duration,
    /// Cap of the backoff, 10 s by default.
    pub backoff_max: Duration,
    /// A `Retry-After` longer than this is not waited for: the failure is
    /// returned with [`Failure::retry_after`] set. 30 s by default.
    pub max_retry_after: Duration,
    /// The most bytes one SSE event (its data) or one line may hold; a
    /// larger one ends the call with [`FailureKind::EventTooLarge`]. 1 MiB
    /// by default, far above any real chunk.
    pub max_event_bytes: usize,
}

impl UpstreamConfig {
    /// Checks the base URL without building a client: what `main` turns
    /// into exit code 64.
    pub fn check(&self) -> Result<(), UpstreamError> {
        self.urls().map(drop)
    }

    /// The chat, models and balance URLs under the base URL.
    fn urls(&self) -> Result<[Url; 3], UpstreamError> {
        let base = self.base_url.trim().trim_end_matches('/');
        let bad = |reason: String| UpstreamError::BadBaseUrl {
            url: self.base_url.clone(),
            reason,
        };
        let parsed = Url::parse(base).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad(format!(
                "scheme {:?} is not http or https",
                parsed.scheme()
            )));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("a query or fragment is not allowed".to_owned()));
        }
        let url = |path: &str| Url::parse(&format!("{base}{path}")).map_err(|e| bad(e.to_string()));
        Ok([
            url("/chat/completions")?,
            url("/models")?,
            url("/user/balance")?,
        ])
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.deepseek.com".to_owned(),
            connect_timeout: Duration::from_secs(10),
            first_token_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(60),
            total_timeout: Duration::from_secs(600),
            max_attempts: 4,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(30),
            max_event_bytes: 1024 * 1024,
        }
    }
}

/// Why an [`Upstream`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The base URL does not parse or is not `http(s)`.
    #[error("bad upstream base URL {url:?}: {reason}")]
    BadBaseUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// reqwest refused to build the client (e.g. no TLS provider).
    #[error("cannot build the upstream HTTP client: {0}")]
    Client(String),
}

/// The client for the upstream API. Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    config: UpstreamConfig,
    key: ApiKey,
    client: Client,
    chat_url: Url,
    models_url: Url,
    balance_url: Url,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("config", &self.inner.config)
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the client (installing the crypto provider first). Fails on a
    /// base URL that does not parse or is not `http`/`https`.
    pub fn new(config: UpstreamConfig, key: ApiKey) -> Result<Self, UpstreamError> {
        install_crypto();
        let [chat_url, models_url, balance_url] = config.urls()?;
        let client = Client::builder()
            .connect_timeout(config.connect_timeout)
            .tcp_keepalive(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(90))
            // The API answers where it is asked; a redirect is an error
            // (reported with its status), not a second request.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| UpstreamError::Client(error_chain(&e)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                key,
                client,
                chat_url,
                models_url,
                balance_url,
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &UpstreamConfig {
        &self.inner.config
    }

    /// The key source.
    pub fn key(&self) -> &ApiKey {
        &self.inner.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_base_urls_are_refused() {
        for url in ["not a url", "ftp://x", "http://x/?q=1"] {
            let config = UpstreamConfig {
                base_url: url.to_owned(),
                ..UpstreamConfig::default()
            };
            let err = Upstream::new(config, ApiKey::none()).unwrap_err();
            assert!(matches!(err, UpstreamError::BadBaseUrl { .. }), "{url}");
        }
        let upstream = Upstream::new(UpstreamConfig::default(), ApiKey::none()).unwrap();
        assert_eq!(
            upstream.inner.chat_url.as_str(),
            "https://api.deepseek.com/chat/completions"
        );
    }
}
