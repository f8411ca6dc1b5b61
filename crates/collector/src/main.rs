//! `collector`: parse the configuration, set up logging, bind, serve.

use automation_collector::config::{Cli, Command};
use automation_collector::{Config, catalog, run};
use automation_telemetry::config::parse_or_exit;
use automation_telemetry::serve::Listeners;
use automation_telemetry::{logging, shutdown};

const NAME: &str = "collector";

#[tokio::main]
async fn main() {
    let cli: Cli = parse_or_exit(NAME);
    if let Some(Command::Catalog) = cli.command {
        println!("{}", catalog::to_json());
        return;
    }
    let traces = logging::init(Some(cli.common.log_format), NAME);
    let mut config = Config::new(&cli.common.instance_name());
    config.limits = cli.collector.limits();
    config.max_concurrent_pushes = cli.collector.max_concurrent_pushes;
    config.max_pushes_per_connection = cli.collector.max_pushes_per_connection;
    config.connections = cli.common.connections.limits();
    config.otlp_grpc = cli.otlp_grpc_listen.0;
    config.otlp_http = cli.otlp_http_listen.0;
    config.sweep_interval = cli.collector.sweep_interval;
    config.shutdown_delay = cli.common.shutdown_delay;
    config.shutdown_grace = cli.common.shutdown_grace;
    config.auth = cli.common.auth_or_exit(NAME);
    config.tls = cli.common.tls_or_exit(NAME);
    let listeners = Listeners::bind_or_exit(NAME, cli.grpc_listen, cli.http_listen).await;
    let served = run(config, listeners, shutdown::on_signal(), None).await;
    traces.shutdown().await;
    if let Err(error) = served {
        eprintln!("{NAME}: {error}");
        std::process::exit(1);
    }
}
