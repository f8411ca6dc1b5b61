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

use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use automation_proto::v1::{RetryReason, ToolCallDelta};
use automation_telemetry::client::error_chain;
use futures_util::{Stream, StreamExt};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Client, StatusCode, Url};
use serde_json::{Value, json};
use tokio::time::{Instant, timeout_at};
use tracing::Instrument;

use crate::redact::{Redactor, bounded};
use crate::sse::{Events, SseError};
use crate::tools;

/// Longest upstream error text quoted in a [`Failure`] message, in characters.
const MAX_ERROR_TEXT: usize = 500;
/// Most bytes of an HTTP error body read to find its message.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Most bytes of a `/models` or `/user/balance` answer.
const MAX_JSON_BODY: usize = 4 * 1024 * 1024;
/// How long a finished stream's rest is drained in the background so that its
/// connection can go back to the pool.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Installs rustls' `ring` crypto provider as the process default, once.
///
/// Idempotent: a provider that is already installed (by this or by anyone
/// else) is left alone. [`Upstream::new`] calls it before building its client.
pub fn install_crypto() {
    // An error only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Settings of the upstream client.
/// The "deadline" of a client stream: far enough never to matter.
const STREAM_HORIZON: Duration = Duration::from_secs(30 * 24 * 3600);

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
    /// random in `[0, min(backoff_max, backoff_base * 2^n)]` (full jitter).
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

/// The DeepSeek API key: none, a fixed value, or a file that is re-read when
/// it changes (its modification time, length or inode, checked on every
/// [`ApiKey::get`] — one `stat`).
///
/// `Debug` and `Display` never show the key: they print `ApiKey(set)` or
/// `ApiKey(unset)`.
#[derive(Clone)]
pub struct ApiKey {
    source: Arc<KeySource>,
}

enum KeySource {
    None,
    Value(Option<Arc<str>>),
    File {
        path: PathBuf,
        cache: Mutex<FileKey>,
    },
}

/// What the key file held when last read.
struct FileKey {
    stamp: Option<FileStamp>,
    state: KeyState,
}

#[derive(Clone)]
enum KeyState {
    Set(Arc<str>),
    Empty,
    Error(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ApiKey {
    /// No key: every call fails with [`FailureKind::NoKey`].
    pub fn none() -> Self {
        Self {
            source: Arc::new(KeySource::None),
        }
    }

    /// A fixed key (from `DEEPSEEK_API_KEY`); surrounding whitespace is
    /// trimmed and an empty value counts as no key.
    pub fn value(v: String) -> Self {
        let v = v.trim();
        let key = (!v.is_empty()).then(|| Arc::<str>::from(v));
        Self {
            source: Arc::new(KeySource::Value(key)),
        }
    }

    /// The key as configured: `DEEPSEEK_API_KEY` from the environment
    /// (never a flag, so it shows in no process list) or the file of
    /// `DEEPSEEK_API_KEY_FILE`, not both; neither is no key.
    pub fn configured(file: Option<&Path>) -> Result<Self, String> {
        let from_env = std::env::var("DEEPSEEK_API_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty());
        match (from_env, file) {
            (Some(_), Some(_)) => {
                Err("set DEEPSEEK_API_KEY or DEEPSEEK_API_KEY_FILE, not both".to_owned())
            }
            (Some(value), None) => Ok(Self::value(value)),
            (None, Some(path)) => Ok(Self::file(path.to_path_buf())),
            (None, None) => Ok(Self::none()),
        }
    }

    /// A key read from a file (from `DEEPSEEK_API_KEY_FILE`), re-read when the
    /// file changes; surrounding whitespace is trimmed.
    pub fn file(path: PathBuf) -> Self {
        Self {
            source: Arc::new(KeySource::File {
                path,
                cache: Mutex::new(FileKey {
                    stamp: None,
                    state: KeyState::Error("not read yet".to_owned()),
                }),
            }),
        }
    }

    /// The key, trimmed; `None` when unset, empty or unreadable.
    pub fn get(&self) -> Option<Arc<str>> {
        match self.state() {
            KeyState::Set(key) => Some(key),
            KeyState::Empty | KeyState::Error(_) => None,
        }
    }

    /// Where the key comes from and, when there is none, why: e.g.
    /// `DEEPSEEK_API_KEY and DEEPSEEK_API_KEY_FILE are unset`,
    /// `DEEPSEEK_API_KEY_FILE /x: No such file or directory (os error 2)`,
    /// `DEEPSEEK_API_KEY_FILE /x is empty`, `DEEPSEEK_API_KEY is set`.
    pub fn describe(&self) -> String {
        let state = self.state();
        match (&*self.source, state) {
            (KeySource::None, _) => {
                "DEEPSEEK_API_KEY and DEEPSEEK_API_KEY_FILE are unset".to_owned()
            }
            (KeySource::Value(_), KeyState::Set(_)) => "DEEPSEEK_API_KEY is set".to_owned(),
            (KeySource::Value(_), _) => "DEEPSEEK_API_KEY is empty".to_owned(),
            (KeySource::File { path, .. }, KeyState::Set(_)) => {
                format!("DEEPSEEK_API_KEY_FILE {} is set", path.display())
            }
            (KeySource::File { path, .. }, KeyState::Empty) => {
                format!("DEEPSEEK_API_KEY_FILE {} is empty", path.display())
            }
            (KeySource::File { path, .. }, KeyState::Error(e)) => {
                format!("DEEPSEEK_API_KEY_FILE {}: {e}", path.display())
            }
        }
    }

    fn state(&self) -> KeyState {
        match &*self.source {
            KeySource::None => KeyState::Empty,
            KeySource::Value(Some(key)) => KeyState::Set(key.clone()),
            KeySource::Value(None) => KeyState::Empty,
            KeySource::File { path, cache } => {
                let mut cache = lock(cache);
                match std::fs::metadata(path) {
                    Err(e) => {
                        cache.stamp = None;
                        cache.state = KeyState::Error(e.to_string());
                    }
                    Ok(meta) => {
                        let stamp = FileStamp::of(&meta);
                        if cache.stamp != Some(stamp) {
                            cache.state = match std::fs::read_to_string(path) {
                                Ok(text) if text.trim().is_empty() => KeyState::Empty,
                                Ok(text) => KeyState::Set(Arc::from(text.trim())),
                                Err(e) => KeyState::Error(e.to_string()),
                            };
                            cache.stamp = match cache.state {
                                KeyState::Error(_) => None,
                                _ => Some(stamp),
                            };
                        }
                    }
                }
                cache.state.clone()
            }
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.get().is_some() {
            f.write_str("ApiKey(set)")
        } else {
            f.write_str("ApiKey(unset)")
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

/// Attempt accounting, carried by both success and failure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attempts {
    /// Upstream attempts made (1 without retries).
    pub attempts: u32,
    /// One entry per retried attempt: why it was retried.
    pub retries: Vec<RetryReason>,
    /// Upstream 429 answers received across the attempts.
    pub rate_limited: u32,
}

/// The kind of an upstream [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// 400, 422 and other 4xx not listed below: the request is wrong.
    BadRequest,
    /// 401: the key is wrong.
    Unauthorized,
    /// 402: the balance is insufficient.
    PaymentRequired,
    /// 429, after the retries.
    RateLimited,
    /// 5xx, after the retries where they apply.
    Server,
    /// Connect, first-token, idle or deadline limit reached.
    Timeout,
    /// The connection could not be made or broke.
    Connection,
    /// Bad SSE or JSON, an unexpected answer, or a stream that ended early.
    Protocol,
    /// An SSE event (or line) over [`UpstreamConfig::max_event_bytes`].
    EventTooLarge,
    /// No API key is configured.
    NoKey,
}

impl FailureKind {
    /// A short machine-readable name: `bad_request`, `unauthorized`,
    /// `payment_required`, `rate_limited`, `server_error`, `timeout`,
    /// `connection`, `protocol`, `event_too_large` or `no_key`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::PaymentRequired => "payment_required",
            Self::RateLimited => "rate_limited",
            Self::Server => "server_error",
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::Protocol => "protocol",
            Self::EventTooLarge => "event_too_large",
            Self::NoKey => "no_key",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed upstream call; its message is scrubbed of the API key.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What went wrong.
    pub kind: FailureKind,
    /// A human-readable explanation, e.g. `upstream 402 Payment Required:
    /// Insufficient Balance` or `no stream event for 60s`.
    pub message: String,
    /// The upstream's `Retry-After`, when its last answer had one.
    pub retry_after: Option<Duration>,
    /// The attempts made.
    pub attempts: Attempts,
    /// The HTTP status of the last upstream answer, for HTTP errors.
    pub status: Option<u16>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// A model as listed by the upstream's `GET /models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamModel {
    /// The model name, e.g. `deepseek-chat`.
    pub id: String,
    /// Its owner (`deepseek`); empty when not sent.
    pub owned_by: String,
}

/// The account balance from the upstream's `GET /user/balance`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamBalance {
    /// The account can make API calls.
    pub is_available: bool,
    /// One entry per currency.
    pub balances: Vec<CurrencyBalance>,
}

/// The balance in one currency. DeepSeek sends the amounts as strings
/// (`"110.00"`); numbers are accepted too, a missing amount reads 0.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrencyBalance {
    /// `CNY`, `USD` …
    pub currency: String,
    /// Granted plus topped-up.
    pub total: f64,
    /// Granted (bonus) balance.
    pub granted: f64,
    /// Paid balance.
    pub topped_up: f64,
}

/// Token counts of one answer. Cache hits, cache misses and output are
/// disjoint; reasoning tokens are part of output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Prompt tokens served from the context cache.
    pub input_cache_hit: u64,
    /// Prompt tokens not in the cache.
    pub input_cache_miss: u64,
    /// Completion tokens, reasoning included.
    pub output: u64,
    /// Reasoning tokens (part of `output`).
    pub reasoning: u64,
}

impl TokenUsage {
    /// Reads an OpenAI/DeepSeek `usage` object: cache hits and misses from
    /// `prompt_cache_hit_tokens`/`prompt_cache_miss_tokens` when present, else
    /// from `prompt_tokens_details.cached_tokens` (misses are the rest of
    /// `prompt_tokens`), else every prompt token is a miss. Output is
    /// `completion_tokens`, reasoning `completion_tokens_details.reasoning_tokens`.
    pub fn from_json(usage: &Value) -> Self {
        let num = |v: Option<&Value>| v.and_then(Value::as_u64);
        let prompt = num(usage.get("prompt_tokens"));
        let hit = num(usage.get("prompt_cache_hit_tokens"));
        let miss = num(usage.get("prompt_cache_miss_tokens"));
        let cached = num(usage.pointer("/prompt_tokens_details/cached_tokens"));
        let prompt_total = prompt.unwrap_or(0);
        let (input_cache_hit, input_cache_miss) = match (hit, miss, cached) {
            (Some(hit), Some(miss), _) => (hit, miss),
            (Some(hit), None, _) => (hit, prompt_total.saturating_sub(hit)),
            (None, Some(miss), _) => (prompt_total.saturating_sub(miss), miss),
            (None, None, Some(cached)) => (cached, prompt_total.saturating_sub(cached)),
            (None, None, None) => (0, prompt_total),
        };
        let output = num(usage.get("completion_tokens")).unwrap_or(0);
        Self {
            input_cache_hit,
            input_cache_miss,
            output,
            // Part of the output: never more than it.
            reasoning: num(usage.pointer("/completion_tokens_details/reasoning_tokens"))
                .unwrap_or(0)
                .min(output),
        }
    }
}

/// One meaningful piece of a streamed answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delta {
    /// The upstream's completion id.
    pub id: String,
    /// The model that answers.
    pub model: String,
    /// Answer text added by this chunk.
    pub content: String,
    /// Reasoning text added by this chunk (reasoning models).
    pub reasoning_content: String,
    /// Set on the chunk that ends the answer.
    pub finish_reason: Option<String>,
    /// Set on the usage chunk (normally the last, with empty `choices`).
    pub usage: Option<TokenUsage>,
    /// Pieces of tool calls added by this chunk, in the upstream's order.
    pub tool_calls: Vec<ToolCallDelta>,
}

impl Delta {
    fn is_meaningful(&self) -> bool {
        !self.content.is_empty()
            || !self.reasoning_content.is_empty()
            || !self.tool_calls.is_empty()
            || self.finish_reason.is_some()
            || self.usage.is_some()
    }
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

/// The `data` of each upstream event.
type EventBox = Pin<Box<dyn Stream<Item = Result<String, SseError<reqwest::Error>>> + Send>>;

/// A failed attempt, before the retry decision.
struct AttemptError {
    kind: FailureKind,
    message: String,
    /// Why to retry, when the failure may be retried.
    retry: Option<RetryReason>,
    retry_after: Option<Duration>,
    status: Option<u16>,
}

impl AttemptError {
    fn new(kind: FailureKind, message: String, retry: Option<RetryReason>) -> Self {
        Self {
            kind,
            message,
            retry,
            retry_after: None,
            status: None,
        }
    }

    fn into_failure(self, attempts: Attempts) -> Failure {
        Failure {
            kind: self.kind,
            message: self.message,
            retry_after: self.retry_after,
            attempts,
            status: self.status,
        }
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

    /// Sends `body` (an OpenAI chat request object, without stream fields; the
    /// stream fields are added) with retries until the first meaningful chunk
    /// (content, reasoning content, a tool call, finish reason or usage)
    /// arrives.
    /// `deadline`: optional caller deadline (the earlier of it and
    /// `total_timeout` applies).
    pub async fn chat(
        &self,
        body: Value,
        deadline: Option<Instant>,
    ) -> Result<ChatStream, Failure> {
        let start = Instant::now();
        let total_deadline = start + self.inner.config.total_timeout;
        let deadline = deadline.map_or(total_deadline, |d| d.min(total_deadline));
        self.chat_until(body, start, deadline).await
    }

    /// Like [`Upstream::chat`] for a client stream: no total deadline (a
    /// stream that keeps making progress may run as long as it generates),
    /// only the first-token and between-events limits.
    pub async fn stream(&self, body: Value) -> Result<ChatStream, Failure> {
        let start = Instant::now();
        self.chat_until(body, start, start + STREAM_HORIZON).await
    }

    async fn chat_until(
        &self,
        body: Value,
        start: Instant,
        deadline: Instant,
    ) -> Result<ChatStream, Failure> {
        let config = &self.inner.config;
        let mut attempts = Attempts::default();

        let (redactor, auth) = self.auth()?;
        let Value::Object(mut map) = body else {
            return Err(AttemptError::new(
                FailureKind::BadRequest,
                "the chat request body must be a JSON object".to_owned(),
                None,
            )
            .into_failure(attempts));
        };
        map.insert("stream".to_owned(), Value::Bool(true));
        map.insert(
            "stream_options".to_owned(),
            json!({ "include_usage": true }),
        );
        let payload = match serde_json::to_vec(&map) {
            Ok(p) => p,
            Err(e) => {
                return Err(AttemptError::new(
                    FailureKind::BadRequest,
                    format!("cannot encode the chat request: {e}"),
                    None,
                )
                .into_failure(attempts));
            }
        };
        let max_attempts = config.max_attempts.max(1);

        loop {
            attempts.attempts += 1;
            let span = attempt_span(&attempts);
            let attempted = self
                .attempt(&redactor, &auth, &payload, start, deadline, &mut attempts)
                .instrument(span.clone())
                .await;
            if let Err(err) = &attempted {
                span.record("otel.status_code", "ERROR");
                span.record("error", err.message.as_str());
            }
            let err = match attempted {
                Ok(stream) => {
                    tracing::debug!(
                        attempts = attempts.attempts,
                        ttft_ms = stream.time_to_first_token.as_millis() as u64,
                        "upstream stream started"
                    );
                    return Ok(stream.with_attempts(attempts));
                }
                Err(err) => err,
            };
            let mut err = err;
            let Some(reason) = err.retry else {
                return Err(err.into_failure(attempts));
            };
            if attempts.attempts >= max_attempts {
                if attempts.attempts > 1 {
                    err.message = format!("{} (after {} attempts)", err.message, attempts.attempts);
                }
                return Err(err.into_failure(attempts));
            }
            let wait = match err.retry_after {
                Some(retry_after) if retry_after > config.max_retry_after => {
                    err.message = format!(
                        "{} (Retry-After {} exceeds the {} limit)",
                        err.message,
                        fmt_duration(retry_after),
                        fmt_duration(config.max_retry_after)
                    );
                    return Err(err.into_failure(attempts));
                }
                Some(retry_after) => retry_after,
                None => self.backoff(attempts.retries.len()),
            };
            if Instant::now() + wait >= deadline {
                err.message = format!(
                    "{} (no time left for a retry within the deadline of {})",
                    err.message,
                    fmt_duration(deadline.saturating_duration_since(start))
                );
                return Err(err.into_failure(attempts));
            }
            tracing::warn!(
                attempt = attempts.attempts,
                reason = reason.as_str_name(),
                error = %err.message,
                wait_ms = wait.as_millis() as u64,
                "upstream attempt failed, retrying"
            );
            attempts.retries.push(reason);
            tokio::time::sleep(wait).await;
        }
    }

    /// The upstream's models (`GET /models`). No retries; connect timeout and
    /// `total_timeout` apply.
    pub async fn models(&self) -> Result<Vec<UpstreamModel>, Failure> {
        let value = self.get_json(&self.inner.models_url).await?;
        let Some(data) = value.get("data").and_then(Value::as_array) else {
            return Err(self.protocol_once("the upstream's model list has no \"data\" array"));
        };
        let mut models = Vec::with_capacity(data.len());
        for entry in data {
            let Some(id) = entry.get("id").and_then(Value::as_str) else {
                return Err(self.protocol_once("a model in the upstream's list has no \"id\""));
            };
            let owned_by = entry
                .get("owned_by")
                .and_then(Value::as_str)
                .unwrap_or_default();
            models.push(UpstreamModel {
                id: id.to_owned(),
                owned_by: owned_by.to_owned(),
            });
        }
        Ok(models)
    }

    /// The account balance (`GET /user/balance`). No retries; connect timeout
    /// and `total_timeout` apply.
    pub async fn balance(&self) -> Result<UpstreamBalance, Failure> {
        let value = self.get_json(&self.inner.balance_url).await?;
        let redactor = self.redactor();
        let Some(is_available) = value.get("is_available").and_then(Value::as_bool) else {
            return Err(self.protocol_once("the upstream's balance has no \"is_available\""));
        };
        let infos = match value.get("balance_infos") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(infos)) => &infos[..],
            Some(_) => {
                return Err(self.protocol_once("the upstream's \"balance_infos\" is not a list"));
            }
        };
        let mut balances = Vec::with_capacity(infos.len());
        for info in infos {
            let amount = |field: &str| -> Result<f64, Failure> {
                match info.get(field) {
                    None | Some(Value::Null) => Ok(0.0),
                    Some(Value::Number(n)) => n.as_f64().ok_or_else(|| {
                        self.protocol_once(&format!("bad balance amount {field}: {n}"))
                    }),
                    Some(Value::String(s)) => s
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .ok_or_else(|| {
                            self.protocol_once(&format!(
                                "bad balance amount {field}: {:?}",
                                redactor.cut(s, 50)
                            ))
                        }),
                    Some(other) => Err(self.protocol_once(&format!(
                        "bad balance amount {field}: {}",
                        redactor.cut(&other.to_string(), 50)
                    ))),
                }
            };
            let currency = info
                .get("currency")
                .and_then(Value::as_str)
                .unwrap_or_default();
            // A label value (and a field of GetBalance): refused rather than
            // passed on when it holds a piece of the key, and then not quoted.
            if redactor.leaks(currency) {
                return Err(self.protocol_once(
                    "the upstream's balance names a currency that holds (part of) the API key",
                ));
            }
            // Short, or refused rather than passed on.
            if currency.is_empty()
                || currency.len() > 16
                || !currency.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return Err(self.protocol_once(&format!(
                    "bad balance currency {:?}",
                    redactor.cut(currency, 20)
                )));
            }
            balances.push(CurrencyBalance {
                currency: currency.to_owned(),
                total: amount("total_balance")?,
                granted: amount("granted_balance")?,
                topped_up: amount("topped_up_balance")?,
            });
        }
        Ok(UpstreamBalance {
            is_available,
            balances,
        })
    }

    /// The key's redactor and its `Authorization` header value (marked
    /// sensitive).
    fn auth(&self) -> Result<(Redactor, HeaderValue), Failure> {
        let once = Attempts::default();
        let Some(key) = self.inner.key.get() else {
            return Err(AttemptError::new(
                FailureKind::NoKey,
                format!("no DeepSeek API key: {}", self.inner.key.describe()),
                None,
            )
            .into_failure(once));
        };
        let Ok(mut auth) = HeaderValue::from_str(&format!("Bearer {key}")) else {
            return Err(AttemptError::new(
                FailureKind::NoKey,
                "the DeepSeek API key has characters not allowed in an HTTP header".to_owned(),
                None,
            )
            .into_failure(once));
        };
        auth.set_sensitive(true);
        Ok((Redactor::new(&key), auth))
    }

    /// Full-jitter exponential backoff before retry number `retry` (from 0).
    fn backoff(&self, retry: usize) -> Duration {
        let config = &self.inner.config;
        let shift = u32::try_from(retry).unwrap_or(u32::MAX).min(31);
        let cap = config
            .backoff_base
            .saturating_mul(1u32 << shift)
            .min(config.backoff_max);
        let cap_nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        if cap_nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::random_range(0..=cap_nanos))
    }

    /// One attempt: send, check the status, read until the first meaningful
    /// chunk.
    async fn attempt(
        &self,
        redactor: &Redactor,
        auth: &HeaderValue,
        payload: &[u8],
        start: Instant,
        deadline: Instant,
        attempts: &mut Attempts,
    ) -> Result<ChatStream, AttemptError> {
        let config = &self.inner.config;
        let attempt_start = Instant::now();
        let first_token_deadline = (attempt_start + config.first_token_timeout).min(deadline);
        let timed_out = || {
            if first_token_deadline >= deadline {
                AttemptError::new(
                    FailureKind::Timeout,
                    deadline_message(start, deadline),
                    None,
                )
            } else {
                AttemptError::new(
                    FailureKind::Timeout,
                    format!(
                        "no first token within {}",
                        fmt_duration(config.first_token_timeout)
                    ),
                    Some(RetryReason::Timeout),
                )
            }
        };

        let mut traced = HeaderMap::new();
        upstream_trace_headers(&mut traced);
        let request = self
            .inner
            .client
            .post(self.inner.chat_url.clone())
            .header(AUTHORIZATION, auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "text/event-stream")
            .headers(traced)
            .body(payload.to_vec());
        let response = match timeout_at(first_token_deadline, request.send()).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => return Err(self.send_error(&e, redactor)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        tracing::Span::current().record("http.response.status_code", status.as_u16());
        if status == StatusCode::TOO_MANY_REQUESTS {
            attempts.rate_limited += 1;
        }
        if !status.is_success() {
            return Err(http_error(response, first_token_deadline, redactor).await);
        }
        if let Some(content_type) = response.headers().get(CONTENT_TYPE) {
            let content_type = content_type.to_str().unwrap_or_default();
            if !content_type.starts_with("text/event-stream") {
                return Err(AttemptError::new(
                    FailureKind::Protocol,
                    format!(
                        "the upstream answered with Content-Type {:?} instead of an event stream",
                        redactor.cut(content_type, 100)
                    ),
                    None,
                ));
            }
        }

        let mut events: EventBox = Box::pin(Events::new(
            Box::pin(response.bytes_stream()),
            config.max_event_bytes,
        ));
        loop {
            let next = match timeout_at(first_token_deadline, events.next()).await {
                Err(_) => return Err(timed_out()),
                Ok(next) => next,
            };
            let event = match next {
                None => {
                    return Err(AttemptError::new(
                        FailureKind::Protocol,
                        "the upstream stream ended before the first token".to_owned(),
                        None,
                    ));
                }
                Some(Err(SseError::Transport(e))) => {
                    return Err(AttemptError::new(
                        FailureKind::Connection,
                        redactor.redact(&format!(
                            "the upstream connection broke before the first token: {}",
                            error_chain(&e)
                        )),
                        Some(RetryReason::Connection),
                    ));
                }
                Some(Err(e)) => {
                    let (kind, message) = event_failure(&e);
                    return Err(AttemptError::new(kind, message, None));
                }
                Some(Ok(event)) => event,
            };
            if event == "[DONE]" {
                return Err(AttemptError::new(
                    FailureKind::Protocol,
                    "the upstream stream ended ([DONE]) before the first token".to_owned(),
                    None,
                ));
            }
            let delta = match parse_chunk(&event, redactor) {
                Ok(delta) => delta,
                Err(ChunkError::Upstream(message)) => {
                    return Err(AttemptError::new(
                        FailureKind::Server,
                        message,
                        Some(RetryReason::ServerError),
                    ));
                }
                Err(ChunkError::Bad(message)) => {
                    return Err(AttemptError::new(FailureKind::Protocol, message, None));
                }
            };
            if delta.is_meaningful() {
                return Ok(ChatStream {
                    events: Some(events),
                    pending: Some(delta),
                    attempts: Attempts::default(),
                    time_to_first_token: start.elapsed(),
                    idle_timeout: config.idle_timeout,
                    deadline,
                    deadline_message: deadline_message(start, deadline),
                    redactor: redactor.clone(),
                    saw_finish: false,
                    finished: false,
                });
            }
        }
    }

    /// Classifies an error from `send()`.
    fn send_error(&self, e: &reqwest::Error, redactor: &Redactor) -> AttemptError {
        if e.is_timeout() {
            AttemptError::new(
                FailureKind::Timeout,
                format!(
                    "connect timeout after {}",
                    fmt_duration(self.inner.config.connect_timeout)
                ),
                Some(RetryReason::Timeout),
            )
        } else if e.is_connect() {
            AttemptError::new(
                FailureKind::Connection,
                redactor.redact(&format!(
                    "cannot connect to the upstream: {}",
                    error_chain(e)
                )),
                Some(RetryReason::Connection),
            )
        } else {
            AttemptError::new(
                FailureKind::Connection,
                redactor.redact(&format!("the upstream request failed: {}", error_chain(e))),
                Some(RetryReason::Connection),
            )
        }
    }

    /// A redactor for the key as configured now.
    fn redactor(&self) -> Redactor {
        Redactor::new(self.inner.key.get().as_deref().unwrap_or_default())
    }

    /// A protocol failure of a one-attempt call (models, balance).
    fn protocol_once(&self, message: &str) -> Failure {
        AttemptError::new(FailureKind::Protocol, self.redactor().redact(message), None)
            .into_failure(Attempts {
                attempts: 1,
                ..Attempts::default()
            })
    }

    /// `GET url` as JSON, one attempt.
    async fn get_json(&self, url: &Url) -> Result<Value, Failure> {
        let (redactor, auth) = self.auth()?;
        let mut attempts = Attempts {
            attempts: 1,
            ..Attempts::default()
        };
        let start = Instant::now();
        let deadline = start + self.inner.config.total_timeout;
        let span = if automation_telemetry::trace::enabled() {
            tracing::info_span!(
                "upstream.request",
                otel.kind = "client",
                url.path = url.path(),
                http.response.status_code = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        let mut traced = HeaderMap::new();
        span.in_scope(|| upstream_trace_headers(&mut traced));
        let request = self
            .inner
            .client
            .get(url.clone())
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, "application/json")
            .headers(traced);
        let timeout = || {
            AttemptError::new(
                FailureKind::Timeout,
                deadline_message(start, deadline),
                None,
            )
        };
        let response = match timeout_at(deadline, request.send().instrument(span.clone())).await {
            Err(_) => return Err(timeout().into_failure(attempts)),
            Ok(Err(e)) => return Err(self.send_error(&e, &redactor).into_failure(attempts)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        if status == StatusCode::TOO_MANY_REQUESTS {
            attempts.rate_limited += 1;
        }
        if !status.is_success() {
            return Err(http_error(response, deadline, &redactor)
                .await
                .into_failure(attempts));
        }
        let body = match read_bounded(response, deadline, MAX_JSON_BODY).await {
            Ok(body) => body,
            Err(ReadError::Timeout) => return Err(timeout().into_failure(attempts)),
            Err(ReadError::Transport(message)) => {
                return Err(AttemptError::new(
                    FailureKind::Connection,
                    redactor.redact(&format!("reading the upstream's answer failed: {message}")),
                    None,
                )
                .into_failure(attempts));
            }
        };
        serde_json::from_slice(&body).map_err(|e| {
            AttemptError::new(
                FailureKind::Protocol,
                format!("the upstream's answer is not JSON: {e}"),
                None,
            )
            .into_failure(attempts)
        })
    }
}

/// A started answer: the deltas after the retry phase.
///
/// Dropping it closes the upstream request.
pub struct ChatStream {
    /// `None` once handed to the background drain.
    events: Option<EventBox>,
    /// The chunk that ended the retry phase, returned by the first `next`.
    pending: Option<Delta>,
    attempts: Attempts,
    time_to_first_token: Duration,
    idle_timeout: Duration,
    deadline: Instant,
    deadline_message: String,
    redactor: Redactor,
    saw_finish: bool,
    finished: bool,
}

impl fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatStream")
            .field("attempts", &self.attempts)
            .field("time_to_first_token", &self.time_to_first_token)
            .field("saw_finish", &self.saw_finish)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

enum ChunkError {
    /// The upstream sent an `error` object in the stream.
    Upstream(String),
    /// Not a valid chunk.
    Bad(String),
}

impl ChatStream {
    fn with_attempts(mut self, attempts: Attempts) -> Self {
        self.attempts = attempts;
        self
    }

    /// The attempts it took to start the answer.
    pub fn attempts(&self) -> &Attempts {
        &self.attempts
    }

    /// From the call's start (first attempt, backoff included) to the first
    /// meaningful chunk.
    pub fn time_to_first_token(&self) -> Duration {
        self.time_to_first_token
    }

    /// The next delta; the first call returns the chunk that ended the retry
    /// phase. Enforces the idle timeout between real events (keep-alive
    /// comments and blank lines do not count) and the call's deadline.
    ///
    /// Ends with `Ok(None)` after `data: [DONE]`, or when the stream closes
    /// after a finish reason was seen. A stream that ends with neither is a
    /// [`FailureKind::Protocol`] failure. After a failure or the end, further
    /// calls return `Ok(None)`.
    pub async fn next(&mut self) -> Result<Option<Delta>, Failure> {
        if let Some(delta) = self.pending.take() {
            self.saw_finish |= delta.finish_reason.is_some();
            return Ok(Some(delta));
        }
        if self.finished {
            return Ok(None);
        }
        let Some(events) = self.events.as_mut() else {
            return Ok(None);
        };
        // Only a meaningful delta is progress: events that carry nothing do
        // not put the idle deadline off.
        let idle_deadline = Instant::now() + self.idle_timeout;
        loop {
            let next = match timeout_at(idle_deadline.min(self.deadline), events.next()).await {
                Ok(next) => next,
                Err(_) => {
                    let message = if self.deadline <= idle_deadline {
                        self.deadline_message.clone()
                    } else {
                        format!("no stream event for {}", fmt_duration(self.idle_timeout))
                    };
                    return Err(self.fail(FailureKind::Timeout, message));
                }
            };
            let event = match next {
                None => return self.end(None),
                Some(Err(SseError::Transport(e))) => {
                    return self.end(Some(error_chain(&e)));
                }
                Some(Err(e)) => {
                    let (kind, message) = event_failure(&e);
                    return Err(self.fail(kind, message));
                }
                Some(Ok(event)) => event,
            };
            if event == "[DONE]" {
                self.finished = true;
                self.drain();
                return Ok(None);
            }
            match parse_chunk(&event, &self.redactor) {
                Ok(delta) if delta.is_meaningful() => {
                    self.saw_finish |= delta.finish_reason.is_some();
                    return Ok(Some(delta));
                }
                Ok(_) => {}
                Err(ChunkError::Upstream(message)) => {
                    return Err(self.fail(FailureKind::Server, message));
                }
                Err(ChunkError::Bad(message)) => {
                    return Err(self.fail(FailureKind::Protocol, message));
                }
            }
        }
    }

    /// The stream closed (cleanly, or with a transport error `cause`).
    fn end(&mut self, cause: Option<String>) -> Result<Option<Delta>, Failure> {
        self.finished = true;
        self.events = None;
        if self.saw_finish {
            return Ok(None);
        }
        let mut message = "the upstream stream ended before the answer finished".to_owned();
        if let Some(cause) = cause {
            message = self.redactor.redact(&format!("{message}: {cause}"));
        }
        Err(self.fail(FailureKind::Protocol, message))
    }

    fn fail(&mut self, kind: FailureKind, message: String) -> Failure {
        self.finished = true;
        self.events = None;
        Failure {
            kind,
            message,
            retry_after: None,
            attempts: self.attempts.clone(),
            status: None,
        }
    }

    /// Reads the rest of a finished stream in the background so that its
    /// connection returns to the pool.
    fn drain(&mut self) {
        let Some(mut events) = self.events.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
                    while events.next().await.is_some() {}
                })
                .await;
            });
        }
    }
}

/// The failure for a broken event stream (not a broken connection).
fn event_failure<E>(e: &SseError<E>) -> (FailureKind, String) {
    let kind = match e {
        SseError::TooLarge(_) => FailureKind::EventTooLarge,
        SseError::Transport(_) | SseError::NotUtf8 => FailureKind::Protocol,
    };
    (kind, format!("bad event stream from the upstream: {e}"))
}

/// Parses one SSE `data` payload into a delta.
fn parse_chunk(data: &str, redactor: &Redactor) -> Result<Delta, ChunkError> {
    let value: Value = serde_json::from_str(data).map_err(|e| {
        ChunkError::Bad(format!(
            "bad JSON chunk from the upstream ({e}): {}",
            redactor.cut(data, 200)
        ))
    })?;
    let Value::Object(chunk) = &value else {
        return Err(ChunkError::Bad(format!(
            "a chunk from the upstream is not an object: {}",
            redactor.cut(data, 200)
        )));
    };
    if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
        let text = error
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| error.to_string(), str::to_owned);
        return Err(ChunkError::Upstream(format!(
            "upstream error in the stream: {}",
            redactor.cut(&text, MAX_ERROR_TEXT)
        )));
    }
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    let choice = chunk
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|choices| choices.first());
    let delta = choice.and_then(|c| c.get("delta"));
    Ok(Delta {
        id: text(chunk.get("id")),
        model: text(chunk.get("model")),
        content: text(delta.and_then(|d| d.get("content"))),
        reasoning_content: text(delta.and_then(|d| d.get("reasoning_content"))),
        finish_reason: choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        usage: chunk
            .get("usage")
            .filter(|u| u.is_object())
            .map(TokenUsage::from_json),
        tool_calls: tools::parse_deltas(delta),
    })
}

enum ReadError {
    Timeout,
    Transport(String),
}

/// Reads at most `limit` bytes of a body by `deadline`.
async fn read_bounded(
    mut response: reqwest::Response,
    deadline: Instant,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        match timeout_at(deadline, response.chunk()).await {
            Err(_) => return Err(ReadError::Timeout),
            Ok(Err(e)) => return Err(ReadError::Transport(error_chain(&e))),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(chunk))) => {
                let room = limit.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= limit {
                    return Ok(body);
                }
            }
        }
    }
}

/// Turns an HTTP error answer into an attempt error, reading (part of) its
/// body for the upstream's message.
async fn http_error(
    response: reqwest::Response,
    deadline: Instant,
    redactor: &Redactor,
) -> AttemptError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    // A body that cannot be read in time still leaves the status.
    let body: Vec<u8> = read_bounded(response, deadline, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let mut message = format!(
        "upstream {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("error")
    );
    if let Some(detail) = error_detail(&body, body.len() >= MAX_ERROR_BODY, redactor) {
        message.push_str(": ");
        message.push_str(&detail);
    }
    let code = status.as_u16();
    let (kind, retry) = match code {
        400 | 422 => (FailureKind::BadRequest, None),
        401 => (FailureKind::Unauthorized, None),
        402 => (FailureKind::PaymentRequired, None),
        429 => (FailureKind::RateLimited, Some(RetryReason::RateLimited)),
        500 | 502 | 503 | 504 => (FailureKind::Server, Some(RetryReason::ServerError)),
        500..=599 => (FailureKind::Server, None),
        400..=499 => (FailureKind::BadRequest, None),
        _ => (FailureKind::Protocol, None),
    };
    AttemptError {
        kind,
        message,
        retry,
        retry_after,
        status: Some(code),
    }
}

/// The upstream's explanation in an error body: `error.message` (or a
/// top-level `message`) of a JSON body, else the body's text; redacted, then
/// bounded. `cut_off`: the body was read only up to a limit.
fn error_detail(body: &[u8], cut_off: bool, redactor: &Redactor) -> Option<String> {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        let message = value
            .pointer("/error/message")
            .or_else(|| value.get("message"))
            .or_else(|| value.get("error").filter(|e| e.is_string()))
            .and_then(Value::as_str);
        if let Some(message) = message.map(str::trim).filter(|m| !m.is_empty()) {
            return Some(redactor.cut(message, MAX_ERROR_TEXT));
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = if cut_off {
        redactor.redact_cut_off(&text)
    } else {
        redactor.redact(&text)
    };
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then(|| bounded(&text, MAX_ERROR_TEXT))
}

/// `Retry-After` as delta-seconds (fractions tolerated) or an HTTP date.
/// The trace context for DeepSeek: `traceparent` only. A caller's
/// `tracestate` (up to 32 vendor entries it chose) stays inside.
fn upstream_trace_headers(headers: &mut HeaderMap) {
    automation_telemetry::trace::inject_headers(headers);
    headers.remove("tracestate");
}

/// The span of one upstream attempt (none while tracing is off): its
/// number and, for a retry, why the previous attempt was retried.
fn attempt_span(attempts: &Attempts) -> tracing::Span {
    if !automation_telemetry::trace::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "upstream.attempt",
        otel.kind = "client",
        attempt = attempts.attempts,
        retry.reason = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        error = tracing::field::Empty,
    );
    if let Some(reason) = attempts.retries.last() {
        span.record("retry.reason", reason.as_str_name());
    }
    span
}

fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn deadline_message(start: Instant, deadline: Instant) -> String {
    format!(
        "deadline of {} reached",
        fmt_duration(deadline.saturating_duration_since(start))
    )
}

/// `120s`, `300ms`, `1.5s`.
fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automation_testkit::upstream::{
        FakeUpstream, Reply, Sse, answer, chunk, finish_chunk, reasoning_chunk, usage_chunk,
    };

    const KEY: &str = "sk-SECRET-abc123";

    fn config(base_url: String) -> UpstreamConfig {
        UpstreamConfig {
            base_url,
            connect_timeout: Duration::from_secs(2),
            first_token_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(300),
            total_timeout: Duration::from_secs(10),
            max_attempts: 4,
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(5),
            max_retry_after: Duration::from_secs(30),
            max_event_bytes: 1024 * 1024,
        }
    }

    fn client(fake: &FakeUpstream) -> Upstream {
        Upstream::new(config(fake.base_url()), ApiKey::value(KEY.to_owned())).unwrap()
    }

    fn request() -> Value {
        json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "Hi"}]})
    }

    /// Everything a stream yields, aggregated.
    #[derive(Debug, Default)]
    struct Answer {
        content: String,
        reasoning: String,
        finish: Option<String>,
        usage: Option<TokenUsage>,
        deltas: usize,
    }

    async fn collect(stream: &mut ChatStream) -> Result<Answer, Failure> {
        let mut answer = Answer::default();
        while let Some(delta) = stream.next().await? {
            answer.deltas += 1;
            answer.content.push_str(&delta.content);
            answer.reasoning.push_str(&delta.reasoning_content);
            if delta.finish_reason.is_some() {
                answer.finish = delta.finish_reason;
            }
            if delta.usage.is_some() {
                answer.usage = delta.usage;
            }
        }
        Ok(answer)
    }

    async fn chat_all(upstream: &Upstream) -> Result<(Answer, Attempts), Failure> {
        let mut stream = upstream.chat(request(), None).await?;
        let answer = collect(&mut stream).await?;
        Ok((answer, stream.attempts().clone()))
    }

    fn status(status: u16, body: &str) -> Reply {
        Reply::Status {
            status,
            retry_after: None,
            body: body.to_owned(),
        }
    }

    #[tokio::test]
    async fn streamed_answer_with_usage() {
        let fake = FakeUpstream::start().await;
        fake.push(Reply::Stream(vec![
            Sse::Data(json!({"id": "x", "model": "deepseek-reasoner",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})),
            Sse::Data(reasoning_chunk("Think.")),
            Sse::Data(chunk("Hel")),
            Sse::Data(chunk("lo")),
            Sse::Data(finish_chunk("stop")),
            Sse::Data(usage_chunk(10, 5, 3, 1)),
            Sse::Done,
        ]));
        let upstream = client(&fake);
        let mut stream = upstream.chat(request(), None).await.unwrap();
        assert!(stream.time_to_first_token() > Duration::ZERO);
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.reasoning_content, "Think.");
        assert_eq!(first.model, "deepseek-chat");
        assert!(!first.id.is_empty());
        let answer = collect(&mut stream).await.unwrap();
        assert_eq!(answer.content, "Hello");
        assert_eq!(answer.finish.as_deref(), Some("stop"));
        assert_eq!(
            answer.usage,
            Some(TokenUsage {
                input_cache_hit: 10,
                input_cache_miss: 5,
                output: 3,
                reasoning: 1
            })
        );
        assert_eq!(
            stream.attempts(),
            &Attempts {
                attempts: 1,
                retries: vec![],
                rate_limited: 0
            }
        );
        // Ended: further calls stay at the end.
        assert_eq!(stream.next().await.unwrap(), None);
        fake.stop().await;
    }

    #[tokio::test]
    async fn default_answer_and_request_shape() {
        let fake = FakeUpstream::start().await;
        let upstream = client(&fake);
        let (answer, attempts) = chat_all(&upstream).await.unwrap();
        assert_eq!(answer.content, "Hello!");
        assert_eq!(attempts.attempts, 1);
        assert!(answer.usage.is_some());
        let requests = fake.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].authorization, "Bearer sk-SECRET-abc123");
        let body = &requests[0].body;
        assert_eq!(body["stream"], json!(true));
        assert_eq!(body["stream_options"]["include_usage"], json!(true));
        assert_eq!(body["model"], json!("deepseek-chat"));
        assert_eq!(body["messages"][0]["content"], json!("Hi"));
        fake.stop().await;
    }

    #[tokio::test]
    async fn keep_alives_and_blank_lines_are_tolerated() {
        let fake = FakeUpstream::start().await;
        fake.push(Reply::Stream(vec![
            Sse::KeepAlive,
            Sse::Blank,
            Sse::Data(chunk("a")),
            Sse::KeepAlive,
            Sse::Blank,
            Sse::Blank,
            Sse::Data(chunk("b")),
            Sse::KeepAlive,
            Sse::Data(finish_chunk("stop")),
            Sse::Blank,
            Sse::Data(usage_chunk(1, 2, 3, 0)),
            Sse::KeepAlive,
            Sse::Done,
        ]));
        let (answer, _) = chat_all(&client(&fake)).await.unwrap();
        assert_eq!(answer.content, "ab");
        assert_eq!(answer.deltas, 4);
        assert_eq!(answer.usage.unwrap().output, 3);
        fake.stop().await;
    }

    #[tokio::test]
    async fn rate_limited_then_success_waits_retry_after() {
        let fake = FakeUpstream::start().await;
        fake.push(Reply::Status {
            status: 429,
            retry_after: Some("1".to_owned()),
            body: r#"{"error":{"message":"Rate limit reached"}}"#.to_owned(),
        });
        let started = std::time::Instant::now();
        let (answer, attempts) = chat_all(&client(&fake)).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(900));
        assert_eq!(answer.content, "Hello!");
        assert_eq!(attempts.attempts, 2);
        assert_eq!(attempts.retries, vec![RetryReason::RateLimited]);
        assert_eq!(attempts.rate_limited, 1);
        assert_eq!(fake.requests().len(), 2);
        fake.stop().await;
    }

    #[tokio::test]
    async fn long_retry_after_is_not_waited_for() {
        let fake = FakeUpstream::start().await;
        fake.push(Reply::Status {
            status: 429,
            retry_after: Some("120".to_owned()),
            body: String::new(),
        });
        let failure = chat_all(&client(&fake)).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::RateLimited);
        assert_eq!(failure.retry_after, Some(Duration::from_secs(120)));
        assert_eq!(failure.status, Some(429));
        assert_eq!(failure.attempts.attempts, 1);
        assert_eq!(failure.attempts.rate_limited, 1);
        assert!(
            failure.message.contains("Retry-After 120s"),
            "{}",
            failure.message
        );
        assert_eq!(fake.requests().len(), 1);
        fake.stop().await;
    }

    #[tokio::test]
    async fn server_errors_exhaust_the_attempts() {
        let fake = FakeUpstream::start().await;
        for _ in 0..4 {
            fake.push(status(503, r#"{"error":{"message":"Server busy"}}"#));
        }
        fake.push(answer("too late", 0, 0, 0));
        let failure = chat_all(&client(&fake)).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Server);
        assert_eq!(failure.status, Some(503));
        assert_eq!(failure.attempts.attempts, 4);
        assert_eq!(failure.attempts.retries, vec![RetryReason::ServerError; 3]);
        assert!(
            failure
                .message
                .starts_with("upstream 503 Service Unavailable: Server busy"),
            "{}",
            failure.message
        );
        assert!(failure.message.contains("after 4 attempts"));
        assert_eq!(fake.requests().len(), 4);
        fake.stop().await;
    }

    #[tokio::test]
    async fn client_errors_are_not_retried() {
        let cases = [
            (400, FailureKind::BadRequest, "Invalid request"),
            (
                401,
                FailureKind::Unauthorized,
                "Authentication Fails (key invalid)",
            ),
            (402, FailureKind::PaymentRequired, "Insufficient Balance"),
            (422, FailureKind::BadRequest, "Invalid Parameters"),
            (404, FailureKind::BadRequest, "Not Found"),
        ];
        for (code, kind, text) in cases {
            let fake = FakeUpstream::start().await;
            fake.push(status(
                code,
                &format!(r#"{{"error":{{"message":"{text}"}}}}"#),
            ));
            let failure = chat_all(&client(&fake)).await.unwrap_err();
            assert_eq!(failure.kind, kind, "{code}");
            assert_eq!(failure.status, Some(code));
            assert_eq!(failure.attempts.attempts, 1);
            assert!(failure.attempts.retries.is_empty());
            assert_eq!(fake.requests().len(), 1, "{code}");
            let reason = StatusCode::from_u16(code)
                .unwrap()
                .canonical_reason()
                .unwrap();
            assert_eq!(failure.message, format!("upstream {code} {reason}: {text}"));
            fake.stop().await;
        }
    }

    #[tokio::test]
    async fn error_text_is_bounded() {
        let fake = FakeUpstream::start().await;
        fake.push(status(400, &"x".repeat(5000)));
        let failure = chat_all(&client(&fake)).await.unwrap_err();
        assert!(
            failure.message.chars().count() < 600,
            "{}",
            failure.message.len()
        );
        fake.stop().await;
    }

    #[tokio::test]
    async fn stall_after_first_token_times_out_on_idle() {
        let fake = FakeUpstream::start().await;
        fake.push(Reply::Stream(vec![
            Sse::Data(chunk("a")),
            Sse::Pause(Duration::from_secs(5)),
            Sse::Data(finish_chunk("stop")),
            Sse::Done,
        ]));
        let mut stream = client(&fake).chat(request(), None).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap().content, "a");
        let failure = stream.next().await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Timeout);
        assert_eq!(failure.message, "no stream event for 300ms");
        assert_eq!(failure.attempts.attempts, 1);
        assert_eq!(stream.next().await.unwrap(), None);
        fake.stop().await;
    }

    #[tokio::test]
    async fn keep_alives_do_not_count_as_progress() {
        let fake = FakeUpstream::start().await;
        let mut script = vec![Sse::Data(chunk("a"))];
        for _ in 0..50 {
            script.push(Sse::KeepAlive);
            script.push(Sse::Blank);
            script.push(Sse::Pause(Duration::from_millis(50)));
        }
        script.push(Sse::Data(finish_chunk("stop")));
        script.push(Sse::Done);
        fake.push(Reply::Stream(script));
        let mut stream = client(&fake).chat(request(), None).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap().content, "a");
        let started = std::time::Instant::now();
        let failure = stream.next().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(failure.kind, FailureKind::Timeout);
        assert_eq!(failure.message, "no stream event for 300ms");
        fake.stop().await;
    }

    #[tokio::test]
    async fn only_keep_alives_before_first_token_time_out_and_retry() {
        let fake = FakeUpstream::start().await;
        let mut script = Vec::new();
        for _ in 0..100 {
            script.push(Sse::KeepAlive);
            script.push(Sse::Pause(Duration::from_millis(50)));
        }
        let upstream = Upstream::new(
            UpstreamConfig {
                max_attempts: 2,
                ..config(fake.base_url())
            },
            ApiKey::value(KEY.to_owned()),
        )
        .unwrap();
        fake.set_default(Reply::Stream(script));
        let failure = chat_all(&upstream).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Timeout);
        assert!(
            failure.message.starts_with("no first token within 300ms"),
            "{}",
            failure.message
        );
        assert_eq!(failure.attempts.attempts, 2);
        assert_eq!(failure.attempts.retries, vec![RetryReason::Timeout]);
        assert_eq!(fake.requests().len(), 2);
        fake.stop().await;
    }

    #[tokio::test]
    async fn hang_times_out_then_retries() {
        let fake = FakeUpstream::start().await;
        fake.push(Reply::Hang);
        let (answer, attempts) = chat_all(&client(&fake)).await.unwrap();
        assert_eq!(answer.content, "Hello!");
        assert_eq!(attempts.attempts, 2);
        assert_eq!(attempts.retries, vec![RetryReason::Timeout]);
        assert_eq!(attempts.rate_limited, 0);
        assert_eq!(fake.requests().len(), 2);
        fake.stop().await;
    }

    #[tokio::test]
    async fn caller_deadline_is_enforced() {
        let fake = FakeUpstream::start().await;
        fake.push(Reply::Stream(vec![
            Sse::Data(chunk("a")),
            Sse::Pause(Duration::from_millis(100)),
            Sse::Data(chunk("b")),
            Sse::Pause(Duration::from_millis(100)),
            Sse::Data(chunk("c")),
            Sse::Pause(Duration::from_millis(100)),
            Sse::Data(finish_chunk("stop")),
            Sse::Done,
        ]));
        let upstream = client(&fake);
        let deadline = Instant::now() + Duration::from_millis(150);
        let mut stream = upstream.chat(request(), Some(deadline)).await.unwrap();
        let failure = collect(&mut stream).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Timeout);
        assert!(
            failure.message.starts_with("deadline of 1"),
            "{}",
            failure.message
        );
        assert!(
            failure.message.ends_with("ms reached"),
            "{}",
            failure.message
        );
        fake.stop().await;
    }

    #[tokio::test]
    async fn early_end_is_a_protocol_failure() {
        for last in [Some(Sse::Close), None] {
            let fake = FakeUpstream::start().await;
            let mut script = vec![Sse::Data(chunk("a")), Sse::Data(chunk("b"))];
            script.extend(last);
            fake.push(Reply::Stream(script));
            let failure = chat_all(&client(&fake)).await.unwrap_err();
            assert_eq!(failure.kind, FailureKind::Protocol);
            assert!(
                failure
                    .message
                    .starts_with("the upstream stream ended before the answer finished"),
                "{}",
                failure.message
            );
            assert_eq!(fake.requests().len(), 1);
            fake.stop().await;
        }
    }

    #[tokio::test]
    async fn close_after_finish_without_done_is_fine() {
        let fake = FakeUpstream::start().await;
        fake.push(Reply::Stream(vec![
            Sse::Data(chunk("a")),
            Sse::Data(finish_chunk("length")),
        ]));
        let (answer, _) = chat_all(&client(&fake)).await.unwrap();
        assert_eq!(answer.content, "a");
        assert_eq!(answer.finish.as_deref(), Some("length"));
        fake.stop().await;
    }

    #[tokio::test]
    async fn bad_json_chunk_is_a_protocol_failure() {
        let fake = FakeUpstream::start().await;
        fake.push(Reply::Stream(vec![
            Sse::Data(chunk("a")),
            Sse::Data(json!("not an object")),
        ]));
        let failure = chat_all(&client(&fake)).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Protocol);
        assert!(
            failure.message.contains("not an object"),
            "{}",
            failure.message
        );
        assert!(parse_chunk("{nope", &Redactor::new(KEY)).is_err());
        fake.stop().await;
    }

    #[tokio::test]
    async fn key_never_leaks() {
        let fake = FakeUpstream::start().await;
        fake.push(status(
            401,
            r#"{"error":{"message":"Authentication Fails, Your api key: sk-SECRET-abc123 is invalid"}}"#,
        ));
        let upstream = client(&fake);
        let failure = chat_all(&upstream).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Unauthorized);
        assert_eq!(
            failure.message,
            "upstream 401 Unauthorized: Authentication Fails, Your api key: [redacted] is invalid"
        );
        for text in [
            failure.message.clone(),
            failure.to_string(),
            format!("{failure:?}"),
            format!("{upstream:?}"),
            format!("{:?}", upstream.key()),
            format!("{}", upstream.key()),
        ] {
            assert!(!text.contains(KEY), "{text}");
        }
        assert_eq!(format!("{:?}", upstream.key()), "ApiKey(set)");
        assert_eq!(ApiKey::none().to_string(), "ApiKey(unset)");
        // An error inside the stream, echoing the key, too.
        fake.push(Reply::Stream(vec![Sse::Data(
            json!({"error": {"message": "bad key sk-SECRET-abc123"}}),
        )]));
        fake.push(status(
            402,
            r#"{"error":{"message":"Insufficient Balance"}}"#,
        ));
        let failure = chat_all(&upstream).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::PaymentRequired);
        assert_eq!(failure.attempts.retries, vec![RetryReason::ServerError]);
        assert!(!format!("{failure:?}").contains(KEY));
        fake.stop().await;
    }

    #[tokio::test]
    async fn openai_cached_tokens_usage_is_accepted() {
        let fake = FakeUpstream::start().await;
        fake.push(Reply::Stream(vec![
            Sse::Data(chunk("a")),
            Sse::Data(finish_chunk("stop")),
            Sse::Data(json!({"id": "c", "model": "m", "choices": [], "usage": {
                "prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                "prompt_tokens_details": {"cached_tokens": 60},
                "completion_tokens_details": {"reasoning_tokens": 5}}})),
            Sse::Done,
        ]));
        let (answer, _) = chat_all(&client(&fake)).await.unwrap();
        assert_eq!(
            answer.usage,
            Some(TokenUsage {
                input_cache_hit: 60,
                input_cache_miss: 40,
                output: 20,
                reasoning: 5
            })
        );
        fake.stop().await;
    }

    #[test]
    fn usage_parsing_variants() {
        let plain = TokenUsage::from_json(&json!({"prompt_tokens": 7, "completion_tokens": 2}));
        assert_eq!(
            plain,
            TokenUsage {
                input_cache_hit: 0,
                input_cache_miss: 7,
                output: 2,
                reasoning: 0
            }
        );
        // DeepSeek's fields win over OpenAI's.
        let both = TokenUsage::from_json(&json!({"prompt_tokens": 10,
            "prompt_cache_hit_tokens": 4, "prompt_cache_miss_tokens": 6,
            "prompt_tokens_details": {"cached_tokens": 9}}));
        assert_eq!((both.input_cache_hit, both.input_cache_miss), (4, 6));
    }

    #[tokio::test]
    async fn no_key_fails_without_a_request() {
        let fake = FakeUpstream::start().await;
        let upstream = Upstream::new(config(fake.base_url()), ApiKey::none()).unwrap();
        let failure = chat_all(&upstream).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::NoKey);
        assert_eq!(
            failure.message,
            "no DeepSeek API key: DEEPSEEK_API_KEY and DEEPSEEK_API_KEY_FILE are unset"
        );
        assert_eq!(
            upstream.models().await.unwrap_err().kind,
            FailureKind::NoKey
        );
        assert!(fake.requests().is_empty());
        fake.stop().await;
    }

    #[tokio::test]
    async fn connection_refused_is_retried() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let upstream = Upstream::new(
            config(format!("http://127.0.0.1:{port}/")),
            ApiKey::value(KEY.to_owned()),
        )
        .unwrap();
        let failure = chat_all(&upstream).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Connection);
        assert_eq!(failure.attempts.attempts, 4);
        assert_eq!(failure.attempts.retries, vec![RetryReason::Connection; 3]);
        assert!(
            failure
                .message
                .starts_with("cannot connect to the upstream"),
            "{}",
            failure.message
        );
    }

    #[tokio::test]
    async fn non_object_body_is_a_bad_request() {
        let fake = FakeUpstream::start().await;
        let failure = client(&fake).chat(json!([1]), None).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::BadRequest);
        assert!(fake.requests().is_empty());
        fake.stop().await;
    }

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

    #[test]
    fn api_key_file_is_reread_after_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = ApiKey::file(path.clone());
        assert_eq!(key.get(), None);
        assert!(
            key.describe().starts_with(&format!(
                "DEEPSEEK_API_KEY_FILE {}: No such file",
                path.display()
            )),
            "{}",
            key.describe()
        );
        std::fs::write(&path, "sk-one\n").unwrap();
        assert_eq!(key.get().as_deref(), Some("sk-one"));
        assert_eq!(key.to_string(), "ApiKey(set)");
        std::fs::write(&path, "  sk-two-longer  \n").unwrap();
        assert_eq!(key.get().as_deref(), Some("sk-two-longer"));
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(key.get(), None);
        assert_eq!(
            key.describe(),
            format!("DEEPSEEK_API_KEY_FILE {} is empty", path.display())
        );
        std::fs::write(&path, "sk-three").unwrap();
        assert_eq!(key.clone().get().as_deref(), Some("sk-three"));
        assert_eq!(ApiKey::value("  ".to_owned()).get(), None);
        assert_eq!(ApiKey::value(" k ".to_owned()).get().as_deref(), Some("k"));
        assert_eq!(
            ApiKey::value(String::new()).describe(),
            "DEEPSEEK_API_KEY is empty"
        );
    }

    #[tokio::test]
    async fn balance_accepts_string_and_number_amounts() {
        let fake = FakeUpstream::start().await;
        fake.set_balance(json!({"is_available": true, "balance_infos": [
            {"currency": "CNY", "total_balance": "110.00", "granted_balance": "10.00",
             "topped_up_balance": "100.00"},
            {"currency": "USD", "total_balance": 2.5, "granted_balance": 0,
             "topped_up_balance": 2.5}]}));
        let balance = client(&fake).balance().await.unwrap();
        assert_eq!(
            balance,
            UpstreamBalance {
                is_available: true,
                balances: vec![
                    CurrencyBalance {
                        currency: "CNY".to_owned(),
                        total: 110.0,
                        granted: 10.0,
                        topped_up: 100.0
                    },
                    CurrencyBalance {
                        currency: "USD".to_owned(),
                        total: 2.5,
                        granted: 0.0,
                        topped_up: 2.5
                    },
                ]
            }
        );
        fake.set_balance(json!({"is_available": false, "balance_infos": [
            {"currency": "CNY", "total_balance": "lots"}]}));
        let failure = client(&fake).balance().await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Protocol);
        fake.stop().await;
    }

    #[tokio::test]
    async fn models_are_listed() {
        let fake = FakeUpstream::start().await;
        let upstream = client(&fake);
        let models = upstream.models().await.unwrap();
        assert!(
            models
                .iter()
                .any(|m| m.id == "deepseek-chat" && m.owned_by == "deepseek")
        );
        fake.set_models(json!({"object": "list", "data": [{"id": "m1"}]}));
        assert_eq!(
            upstream.models().await.unwrap(),
            vec![UpstreamModel {
                id: "m1".to_owned(),
                owned_by: String::new()
            }]
        );
        fake.fail_models(503);
        let failure = upstream.models().await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Server);
        assert_eq!(failure.status, Some(503));
        assert_eq!(failure.attempts.attempts, 1);
        fake.stop().await;
    }

    #[test]
    fn retry_after_formats() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = SystemTime::now() + Duration::from_secs(20);
        let parsed = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(parsed > Duration::from_secs(17) && parsed <= Duration::from_secs(20));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn helpers() {
        assert_eq!(fmt_duration(Duration::from_secs(120)), "120s");
        assert_eq!(fmt_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(FailureKind::Server.as_str(), "server_error");
        assert_eq!(FailureKind::NoKey.to_string(), "no_key");
        let upstream = Upstream::new(
            UpstreamConfig {
                backoff_base: Duration::from_millis(100),
                backoff_max: Duration::from_millis(250),
                ..UpstreamConfig::default()
            },
            ApiKey::none(),
        )
        .unwrap();
        for retry in 0..40 {
            let cap =
                Duration::from_millis(100 * (1 << retry.min(20))).min(Duration::from_millis(250));
            assert!(upstream.backoff(retry) <= cap);
        }
    }
}
