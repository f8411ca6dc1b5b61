//! `collector`: parse the configuration, set up logging, bind, serve.

use automation_collector::config::{Cli, Command};
use automation_collector::{Config, catalog, run};
use automation_telemetry::auth::BearerAuth;
use automation_telemetry::config::{config_error, parse_or_exit};
use automation_telemetry::{logging, shutdown, tls};

#[tokio::main]
async fn main() {
    let cli: Cli = parse_or_exit("collector");
    if let Some(Command::Catalog) = cli.command {
        println!("{}", catalog::to_json());
        return;
    }
    logging::init(cli.common.log_format);
    let mut config = Config::new(&cli.common.instance_name());
    config.limits = cli.collector.limits();
    config.max_concurrent_pushes = cli.collector.max_concurrent_pushes;
    config.sweep_interval = cli.collector.sweep_interval;
    config.shutdown_delay = cli.common.shutdown_delay;
    config.shutdown_grace = cli.common.shutdown_grace;
    config.auth = BearerAuth::from_file(cli.common.auth_token_file.as_deref())
        .unwrap_or_else(|e| config_error("collector", e));
    if let (Some(cert), Some(key)) = (&cli.common.tls_cert_file, &cli.common.tls_key_file) {
        config.tls =
            Some(tls::server_config(cert, key).unwrap_or_else(|e| config_error("collector", e)));
    }
    let grpc = bind("gRPC", cli.grpc_listen).await;
    let http = bind("HTTP", cli.http_listen).await;
    tracing::info!(grpc = %cli.grpc_listen, http = %cli.http_listen, "listening");
    if let Err(error) = run(config, grpc, http, shutdown::on_signal(), None).await {
        eprintln!("collector: {error}");
        std::process::exit(1);
    }
}

async fn bind(what: &str, addr: std::net::SocketAddr) -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|error| {
            eprintln!("collector: cannot listen for {what} on {addr}: {error}");
            std::process::exit(1);
        })
}
