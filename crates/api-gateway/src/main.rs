//! `api-gateway`: parse the configuration, set up logging, bind, serve.

use automation_api_gateway::config::Cli;
use automation_api_gateway::pricing::Models;
use automation_api_gateway::upstream::ApiKey;
use automation_api_gateway::{Config, run};
use automation_telemetry::config::{config_error, parse_or_exit};
use automation_telemetry::serve::Listeners;
use automation_telemetry::{logging, shutdown};

const NAME: &str = "api-gateway";

/// No time limit above a week makes sense; far larger ones overflow clocks.
const MAX_LIMIT: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

#[tokio::main]
async fn main() {
    let cli: Cli = parse_or_exit(NAME);
    automation_api_gateway::upstream::install_crypto();
    let traces = logging::init(Some(cli.common.log_format), NAME);
    let instance = cli.common.instance_name();
    let g = &cli.gateway;
    let key = ApiKey::configured(g.deepseek_api_key_file.as_deref())
        .unwrap_or_else(|e| config_error(NAME, e));
    let models = Models::new(&g.deepseek_models, &g.model_prices)
        .unwrap_or_else(|e| config_error(NAME, e.to_string()));
    let client_rate =
        automation_api_gateway::config::client_rate(g.client_rate_limit, g.client_rate_burst)
            .unwrap_or_else(|e| config_error(NAME, e));
    for (name, limit) in [
        ("CONNECT_TIMEOUT", g.connect_timeout),
        ("FIRST_TOKEN_TIMEOUT", g.first_token_timeout),
        ("STREAM_IDLE_TIMEOUT", g.stream_idle_timeout),
        ("REQUEST_TIMEOUT", g.request_timeout),
        ("RETRY_BACKOFF", g.retry_backoff),
        ("RETRY_BACKOFF_MAX", g.retry_backoff_max),
        ("MAX_RETRY_AFTER", g.max_retry_after),
        ("QUEUE_TIMEOUT", g.queue_timeout),
        ("CIRCUIT_COOLDOWN", g.circuit_cooldown),
    ] {
        if limit > MAX_LIMIT {
            config_error(NAME, format!("{name} is above the largest allowed, 7 days"));
        }
    }
    let mut config = Config::new(&instance, &g.deepseek_base_url, key);
    config.models = models;
    config.upstream.connect_timeout = g.connect_timeout;
    config.upstream.first_token_timeout = g.first_token_timeout;
    config.upstream.idle_timeout = g.stream_idle_timeout;
    config.upstream.total_timeout = g.request_timeout;
    config.upstream.max_attempts = g.max_attempts;
    config.upstream.backoff_base = g.retry_backoff;
    config.upstream.backoff_max = g.retry_backoff_max;
    config.upstream.max_retry_after = g.max_retry_after;
    config.upstream.max_event_bytes = usize::try_from(g.max_sse_event_bytes).unwrap_or(usize::MAX);
    config.max_concurrent = usize::try_from(g.max_concurrent_requests).unwrap_or(usize::MAX);
    config.queue_timeout = g.queue_timeout;
    config.client_rate = client_rate;
    config.circuit = (g.circuit_threshold, g.circuit_cooldown);
    config.upstream_check_interval = g.upstream_check_interval;
    config.balance_interval = g.balance_interval;
    config.shutdown_delay = cli.common.shutdown_delay;
    config.shutdown_grace = cli.common.shutdown_grace;
    config.connections = cli.common.connections.limits();
    config.reporter = Some(cli.reporter.reporter_config(
        NAME,
        &instance,
        env!("CARGO_PKG_VERSION"),
    ));
    config.auth = cli.common.auth_or_exit(NAME);
    config.tls = cli.common.tls_or_exit(NAME);
    if let Err(e) = config.upstream.check() {
        config_error(NAME, format!("DEEPSEEK_BASE_URL: {e}"));
    }
    let listeners = Listeners::bind_or_exit(NAME, cli.grpc_listen, cli.http_listen).await;
    let served = run(config, listeners, shutdown::on_signal(), None).await;
    traces.shutdown().await;
    if let Err(error) = served {
        eprintln!("{NAME}: {error}");
        std::process::exit(1);
    }
}
