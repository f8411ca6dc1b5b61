//! `automation-stack`: the whole platform in one process, watching and
//! auditing a repository (the current directory by default).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use automation_api_gateway::upstream::ApiKey;
use automation_collector::config::{Listen, parse_listen};
use automation_stack::{Addresses, StackConfig, start};
use automation_telemetry::config::{
    CommonArgs, config_error, parse_duration, parse_interval, parse_or_exit,
};
use automation_telemetry::{logging, shutdown};

const NAME: &str = "automation-stack";

/// `automation-stack`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "automation-stack",
    version,
    about = "The whole platform in one process: collector, test-watcher, audit-agent, api-gateway"
)]
struct Cli {
    /// The repository to watch and audit.
    #[arg(long, env = "STACK_ROOT", default_value = ".")]
    root: PathBuf,
    /// The address every service listens on (design ports 50051-50054, 9400-9403).
    #[arg(long, env = "STACK_HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    #[arg(long, env = "COLLECTOR_GRPC_LISTEN")]
    collector_grpc: Option<SocketAddr>,
    #[arg(long, env = "COLLECTOR_HTTP_LISTEN")]
    collector_http: Option<SocketAddr>,
    /// The collector's OTLP/gRPC address (default <host>:4317; `off`: none).
    #[arg(long, env = "COLLECTOR_OTLP_GRPC_LISTEN", value_parser = parse_listen)]
    collector_otlp_grpc: Option<Listen>,
    /// The collector's OTLP/HTTP address (default <host>:4318; `off`: none).
    #[arg(long, env = "COLLECTOR_OTLP_HTTP_LISTEN", value_parser = parse_listen)]
    collector_otlp_http: Option<Listen>,
    #[arg(long, env = "WATCHER_GRPC_LISTEN")]
    watcher_grpc: Option<SocketAddr>,
    #[arg(long, env = "WATCHER_HTTP_LISTEN")]
    watcher_http: Option<SocketAddr>,
    #[arg(long, env = "AUDIT_GRPC_LISTEN")]
    audit_grpc: Option<SocketAddr>,
    #[arg(long, env = "AUDIT_HTTP_LISTEN")]
    audit_http: Option<SocketAddr>,
    #[arg(long, env = "GATEWAY_GRPC_LISTEN")]
    gateway_grpc: Option<SocketAddr>,
    #[arg(long, env = "GATEWAY_HTTP_LISTEN")]
    gateway_http: Option<SocketAddr>,
    /// The test command the watcher runs on changes.
    #[arg(long, env = "TEST_COMMAND", default_value = "cargo test")]
    test_command: String,
    /// Run the tests once at start.
    #[arg(long, env = "RUN_ON_START")]
    run_on_start: bool,
    /// The audit history (default: <root>/.automation/audit-agent.db).
    #[arg(long, env = "DATABASE_PATH")]
    database_path: Option<PathBuf>,
    /// Audit this often; 0 audits on request only.
    #[arg(long, env = "AUDIT_INTERVAL", value_parser = parse_duration, default_value = "5m")]
    audit_interval: Duration,
    /// A coverage report (default: looked for).
    #[arg(long, env = "COVERAGE_PATH")]
    coverage_path: Option<PathBuf>,
    /// The OpenAI-compatible upstream.
    #[arg(
        long,
        env = "DEEPSEEK_BASE_URL",
        default_value = "https://api.deepseek.com"
    )]
    deepseek_base_url: String,
    /// A file holding the DeepSeek key (or the key itself in the environment
    /// variable DEEPSEEK_API_KEY, never a flag); without one the gateway is not ready.
    #[arg(long, env = "DEEPSEEK_API_KEY_FILE")]
    deepseek_api_key_file: Option<PathBuf>,
    /// The gateway's requests per second per client (peer address); 0 for
    /// no limit.
    #[arg(long, env = "CLIENT_RATE_LIMIT", default_value_t = 10.0)]
    client_rate_limit: f64,
    /// The reporters' heartbeat.
    #[arg(long, env = "HEARTBEAT_INTERVAL", value_parser = parse_interval, default_value = "10s")]
    heartbeat_interval: Duration,
    /// How long to wait for every service to be ready before printing the table.
    #[arg(long, env = "READY_TIMEOUT", value_parser = parse_duration, default_value = "60s")]
    ready_timeout: Duration,
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() {
    let cli: Cli = parse_or_exit(NAME);
    let traces = logging::init(Some(cli.common.log_format), NAME);
    automation_api_gateway::upstream::install_crypto();
    if cli.common.tls_cert_file.is_some() {
        config_error(
            NAME,
            "the local stack serves plain text on loopback; TLS is for the separate services",
        );
    }
    if !cli.root.is_dir() {
        config_error(
            NAME,
            format!("STACK_ROOT {} is not a directory", cli.root.display()),
        );
    }
    if cli.heartbeat_interval < Duration::from_millis(100) {
        config_error(NAME, "HEARTBEAT_INTERVAL must be at least 100ms");
    }
    let instance = cli.common.instance_name();
    let auth = cli.common.auth_or_exit(NAME);
    let token_file = cli.common.auth_token_file.clone();

    let mut addresses = Addresses::design(cli.host);
    let overrides = [
        (cli.collector_grpc, cli.collector_http),
        (cli.watcher_grpc, cli.watcher_http),
        (cli.audit_grpc, cli.audit_http),
        (cli.gateway_grpc, cli.gateway_http),
    ];
    for (a, (grpc, http)) in addresses.iter_mut().zip(overrides) {
        a.grpc = grpc.unwrap_or(a.grpc);
        a.http = http.unwrap_or(a.http);
    }

    let mut collector = automation_collector::Config::new(&instance);
    collector.otlp_grpc = cli
        .collector_otlp_grpc
        .map_or(Some(SocketAddr::new(cli.host, 4317)), |listen| listen.0);
    collector.otlp_http = cli
        .collector_otlp_http
        .map_or(Some(SocketAddr::new(cli.host, 4318)), |listen| listen.0);
    let mut watcher = automation_test_watcher::Config::new(&instance, cli.root.clone());
    watcher.engine.command = cli.test_command.clone();
    watcher.run_on_start = cli.run_on_start;
    let database = cli
        .database_path
        .clone()
        .unwrap_or_else(|| cli.root.join(".automation/audit-agent.db"));
    let mut audit = automation_audit_agent::Config::new(&instance, cli.root.clone(), database);
    audit.interval = (!cli.audit_interval.is_zero()).then_some(cli.audit_interval);
    audit.audit.coverage_path = cli.coverage_path.clone();
    let key = ApiKey::configured(cli.deepseek_api_key_file.as_deref())
        .unwrap_or_else(|e| config_error(NAME, e));
    let mut gateway = automation_api_gateway::Config::new(&instance, &cli.deepseek_base_url, key);
    if let Err(e) = gateway.upstream.check() {
        config_error(NAME, format!("DEEPSEEK_BASE_URL: {e}"));
    }
    collector.auth = auth.clone();
    watcher.auth = auth.clone();
    audit.auth = auth.clone();
    gateway.auth = auth;
    gateway.client_rate = automation_api_gateway::config::client_rate(cli.client_rate_limit, 20)
        .unwrap_or_else(|e| config_error(NAME, e));
    for (delay, grace, connections) in [
        (
            &mut collector.shutdown_delay,
            &mut collector.shutdown_grace,
            &mut collector.connections,
        ),
        (
            &mut watcher.shutdown_delay,
            &mut watcher.shutdown_grace,
            &mut watcher.connections,
        ),
        (
            &mut audit.shutdown_delay,
            &mut audit.shutdown_grace,
            &mut audit.connections,
        ),
        (
            &mut gateway.shutdown_delay,
            &mut gateway.shutdown_grace,
            &mut gateway.connections,
        ),
    ] {
        // One process on a laptop: nobody's load balancer to wait for.
        *delay = Duration::ZERO;
        *grace = cli.common.shutdown_grace;
        *connections = cli.common.connections.limits();
    }

    let config = StackConfig {
        addresses,
        collector,
        watcher,
        audit,
        gateway,
        heartbeat_interval: cli.heartbeat_interval,
        token_file,
    };
    let stop = shutdown::on_signal();
    let root = std::fs::canonicalize(&cli.root).unwrap_or(cli.root.clone());
    println!("{NAME}: starting, watching and auditing {}", root.display());
    let mut stack = match start(config).await {
        Ok(stack) => stack,
        Err(error) => {
            eprintln!("{NAME}: {error}");
            std::process::exit(1);
        }
    };
    tokio::select! {
        () = stack.settle(cli.ready_timeout) => {}
        () = stop.cancelled() => {}
    }
    println!("\n{}", stack.table());
    println!("Check again with `automationctl status`; stop with Ctrl-C.");
    let failed = tokio::select! {
        () = stop.cancelled() => None,
        error = stack.failed() => Some(error),
    };
    if let Some(error) = &failed {
        eprintln!("{NAME}: {error}; stopping the others");
    }
    println!("{NAME}: stopping");
    let stopped = stack.stop().await;
    traces.shutdown().await;
    if let Some(error) = failed.map(Err).unwrap_or(stopped).err() {
        eprintln!("{NAME}: {error}");
        std::process::exit(1);
    }
}
