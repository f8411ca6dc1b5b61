//! The api-gateway's command line; every flag also reads its environment
//! variable (DESIGN §3).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use automation_runtime::config::{
    CommonArgs, ReporterArgs, ServiceConfig, parse_duration, parse_interval,
};

use crate::pricing::Models;
use crate::upstream::ApiKey;
use crate::{Config, NAME};

/// `api-gateway`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "api-gateway",
    version,
    about = "The one door to the DeepSeek API: time limits, retries, rate limits, token and cost accounting"
)]
pub struct Cli {
    /// gRPC listen address.
    #[arg(long, env = "GRPC_LISTEN", default_value = "0.0.0.0:50054")]
    pub grpc_listen: SocketAddr,
    /// HTTP listen address: /health, /ready, and the OpenAI-compatible
    /// door (/v1/chat/completions, /v1/models).
    #[arg(long, env = "HTTP_LISTEN", default_value = "0.0.0.0:9403")]
    pub http_listen: SocketAddr,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub reporter: ReporterArgs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

automation_runtime::service_cli!(Cli);

impl TryFrom<Cli> for Config {
    type Error = String;

    fn try_from(cli: Cli) -> Result<Self, String> {
        let service = cli.common.service_config(NAME, Some(&cli.reporter))?;
        cli.gateway.config(service)
    }
}

/// No time limit above a week makes sense; far larger ones overflow clocks.
const MAX_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The upstream, its limits and prices.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// The OpenAI-compatible upstream.
    #[arg(
        long,
        env = "DEEPSEEK_BASE_URL",
        default_value = "https://api.deepseek.com"
    )]
    pub deepseek_base_url: String,
    /// A file holding the DeepSeek key, re-read when it changes. (Or the
    /// key itself in the environment variable DEEPSEEK_API_KEY — never a
    /// flag, so it shows in no process list.)
    #[arg(long, env = "DEEPSEEK_API_KEY_FILE")]
    pub deepseek_api_key_file: Option<PathBuf>,
    /// Models the metrics name (others are labelled "other"); the first is the default.
    #[arg(long, env = "DEEPSEEK_MODELS", value_delimiter = ',', default_values_t = Models::default_names().iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())]
    pub deepseek_models: Vec<String>,
    /// USD per million tokens: model=cache_hit/cache_miss/output, comma-separated.
    #[arg(long, env = "MODEL_PRICES", default_value = Models::default_prices())]
    pub model_prices: String,
    /// Connecting to the upstream.
    #[arg(long, env = "CONNECT_TIMEOUT", value_parser = parse_interval, default_value = "10s")]
    pub connect_timeout: Duration,
    /// Request sent to first token.
    #[arg(long, env = "FIRST_TOKEN_TIMEOUT", value_parser = parse_interval, default_value = "120s")]
    pub first_token_timeout: Duration,
    /// Longest gap between stream events (keep-alives do not count).
    #[arg(long, env = "STREAM_IDLE_TIMEOUT", value_parser = parse_interval, default_value = "60s")]
    pub stream_idle_timeout: Duration,
    /// Whole request, all attempts.
    #[arg(long, env = "REQUEST_TIMEOUT", value_parser = parse_interval, default_value = "600s")]
    pub request_timeout: Duration,
    /// Upstream attempts per request (1: no retries).
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub max_attempts: u32,
    /// First retry backoff (jittered, doubling).
    #[arg(long, env = "RETRY_BACKOFF", value_parser = parse_interval, default_value = "200ms")]
    pub retry_backoff: Duration,
    /// Largest retry backoff.
    #[arg(long, env = "RETRY_BACKOFF_MAX", value_parser = parse_interval, default_value = "10s")]
    pub retry_backoff_max: Duration,
    /// A Retry-After longer than this is not waited for.
    #[arg(long, env = "MAX_RETRY_AFTER", value_parser = parse_duration, default_value = "30s")]
    pub max_retry_after: Duration,
    /// The most bytes one upstream SSE event or line may hold; a larger one
    /// ends the call (UNAVAILABLE, counted as event_too_large).
    #[arg(long, env = "MAX_SSE_EVENT_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=256 * 1024 * 1024))]
    pub max_sse_event_bytes: u64,
    /// Upstream calls at once (keep below the account's limit ÷ replicas).
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_concurrent_requests: u64,
    /// How long a request waits for a free slot.
    #[arg(long, env = "QUEUE_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub queue_timeout: Duration,
    /// Requests per second per client: per verified token with
    /// AUTH_TOKEN_FILE, else per client address (0: unlimited).
    #[arg(long, env = "CLIENT_RATE_LIMIT", default_value_t = 10.0)]
    pub client_rate_limit: f64,
    /// Burst per client.
    #[arg(long, env = "CLIENT_RATE_BURST", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub client_rate_burst: u32,
    /// Consecutive upstream failures that open the circuit.
    #[arg(long, env = "CIRCUIT_THRESHOLD", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub circuit_threshold: u32,
    /// How long the circuit stays open before a probe.
    #[arg(long, env = "CIRCUIT_COOLDOWN", value_parser = parse_interval, default_value = "30s")]
    pub circuit_cooldown: Duration,
    /// How often the upstream's /models is checked (health).
    #[arg(long, env = "UPSTREAM_CHECK_INTERVAL", value_parser = parse_interval, default_value = "60s")]
    pub upstream_check_interval: Duration,
    /// How often the balance is read.
    #[arg(long, env = "BALANCE_INTERVAL", value_parser = parse_interval, default_value = "5m")]
    pub balance_interval: Duration,
}

impl GatewayArgs {
    /// The gateway's configuration: `service`, and what these flags say.
    /// The key (from its file or `DEEPSEEK_API_KEY`) is read here; a bad
    /// base URL, price list, rate or time limit is refused, naming it.
    pub fn config(&self, service: ServiceConfig) -> Result<Config, String> {
        for (name, limit) in [
            ("CONNECT_TIMEOUT", self.connect_timeout),
            ("FIRST_TOKEN_TIMEOUT", self.first_token_timeout),
            ("STREAM_IDLE_TIMEOUT", self.stream_idle_timeout),
            ("REQUEST_TIMEOUT", self.request_timeout),
            ("RETRY_BACKOFF", self.retry_backoff),
            ("RETRY_BACKOFF_MAX", self.retry_backoff_max),
            ("MAX_RETRY_AFTER", self.max_retry_after),
            ("QUEUE_TIMEOUT", self.queue_timeout),
            ("CIRCUIT_COOLDOWN", self.circuit_cooldown),
        ] {
            if limit > MAX_LIMIT {
                return Err(format!("{name} is above the largest allowed, 7 days"));
            }
        }
        let key = ApiKey::configured(self.deepseek_api_key_file.as_deref())?;
        let mut config = Config::new(&service.instance, &self.deepseek_base_url, key);
        config.service = service;
        config.models =
            Models::new(&self.deepseek_models, &self.model_prices).map_err(|e| e.to_string())?;
        let upstream = &mut config.upstream;
        upstream.connect_timeout = self.connect_timeout;
        upstream.first_token_timeout = self.first_token_timeout;
        upstream.idle_timeout = self.stream_idle_timeout;
        upstream.total_timeout = self.request_timeout;
        upstream.max_attempts = self.max_attempts;
        upstream.backoff_base = self.retry_backoff;
        upstream.backoff_max = self.retry_backoff_max;
        upstream.max_retry_after = self.max_retry_after;
        upstream.max_event_bytes = usize::try_from(self.max_sse_event_bytes).unwrap_or(usize::MAX);
        upstream
            .check()
            .map_err(|e| format!("DEEPSEEK_BASE_URL: {e}"))?;
        config.max_concurrent = usize::try_from(self.max_concurrent_requests).unwrap_or(usize::MAX);
        config.queue_timeout = self.queue_timeout;
        config.client_rate = client_rate(self.client_rate_limit, self.client_rate_burst)?;
        config.circuit = (self.circuit_threshold, self.circuit_cooldown);
        config.upstream_check_interval = self.upstream_check_interval;
        config.balance_interval = self.balance_interval;
        Ok(config)
    }
}

/// The per-client rate limit from `CLIENT_RATE_LIMIT` (requests per second,
/// 0 for none) and its burst.
pub fn client_rate(limit: f64, burst: u32) -> Result<Option<(f64, u32)>, String> {
    if !(limit.is_finite() && limit >= 0.0) {
        return Err(format!(
            "CLIENT_RATE_LIMIT {limit} is not a rate (requests per second, 0 for none)"
        ));
    }
    Ok((limit > 0.0).then_some((limit, burst)))
}

#[cfg(test)]
mod tests {
    use automation_testkit::config::{assert_converts, converted, default_reporter};

    use super::*;

    fn config(args: &[&str]) -> Result<Config, String> {
        converted::<Cli, Config>(args)
    }

    #[test]
    fn the_flags_defaults_are_the_libraries() {
        let mut expected = Config::new("gw-1", "https://api.deepseek.com", ApiKey::none());
        expected.service.reporter = Some(default_reporter(NAME, "gw-1"));
        assert_converts::<Cli, Config>(&["--instance", "gw-1"], &expected);
    }

    #[test]
    fn flags_set_the_configuration() {
        let config = config(&[
            "--deepseek-base-url",
            "http://127.0.0.1:8080/",
            "--max-attempts",
            "2",
            "--client-rate-limit",
            "0",
            "--circuit-threshold",
            "3",
            "--circuit-cooldown",
            "1m",
            "--stream-idle-timeout",
            "5s",
        ])
        .unwrap();
        assert_eq!(config.upstream.base_url, "http://127.0.0.1:8080/");
        assert_eq!(config.upstream.max_attempts, 2);
        assert_eq!(config.upstream.idle_timeout, Duration::from_secs(5));
        assert_eq!(config.client_rate, None);
        assert_eq!(config.circuit, (3, Duration::from_secs(60)));
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        for (args, names) in [
            (&["--request-timeout", "8d"][..], "REQUEST_TIMEOUT"),
            (
                &["--deepseek-base-url", "ftp://example.com"],
                "DEEPSEEK_BASE_URL",
            ),
            (&["--client-rate-limit=-1"], "CLIENT_RATE_LIMIT"),
            (&["--model-prices", "deepseek-chat=x"], "deepseek-chat"),
        ] {
            let error = config(args).unwrap_err();
            assert!(error.contains(names), "{args:?}: {error}");
        }
    }
}
