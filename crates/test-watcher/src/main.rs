//! `test-watcher`: parse the configuration, set up logging, bind, serve.

use std::time::Duration;

use automation_telemetry::config::{config_error, parse_or_exit};
use automation_telemetry::serve::Listeners;
use automation_telemetry::{logging, shutdown};
use automation_test_watcher::config::Cli;
use automation_test_watcher::{Config, run};

const NAME: &str = "test-watcher";

#[tokio::main]
async fn main() {
    let cli: Cli = parse_or_exit(NAME);
    let traces = logging::init(Some(cli.common.log_format), NAME);
    let instance = cli.common.instance_name();
    let w = &cli.watcher;
    let mut config = Config::new(&instance, w.watch_root.clone());
    config.engine.command = w.test_command.clone();
    config.engine.debounce = Duration::from_millis(w.debounce_ms);
    config.engine.on_busy = w.on_busy;
    config.engine.timeout = w.run_timeout;
    config.engine.kill_grace = w.kill_grace;
    config.engine.junit = w.junit.clone();
    config.extensions = w.extensions.clone();
    config.poll = w.poll.then_some(w.poll_interval);
    config.run_on_start = w.run_on_start;
    config.shutdown_delay = cli.common.shutdown_delay;
    config.shutdown_grace = cli.common.shutdown_grace;
    config.connections = cli.common.connections.limits();
    config.reporter = Some(cli.reporter.reporter_config(
        NAME,
        &instance,
        env!("CARGO_PKG_VERSION"),
    ));
    config.gateway = cli.gateway.gateway_config(cli.reporter.tls_ca_file.clone());
    match &config.gateway {
        Some(gateway) => {
            if let Err(error) = gateway.check() {
                config_error(NAME, error);
            }
        }
        None if cli.gateway.gateway_token_file.is_some() => tracing::warn!(
            "GATEWAY_TOKEN_FILE is set but GATEWAY_ENDPOINT is not: failed runs are not explained"
        ),
        None => {}
    }
    config.auth = cli.common.auth_or_exit(NAME);
    config.tls = cli.common.tls_or_exit(NAME);
    if !w.watch_root.is_dir() {
        config_error(
            NAME,
            format!("WATCH_ROOT {} is not a directory", w.watch_root.display()),
        );
    }
    let listeners = Listeners::bind_or_exit(NAME, cli.grpc_listen, cli.http_listen).await;
    let served = run(config, listeners, shutdown::on_signal(), None).await;
    traces.shutdown().await;
    if let Err(error) = served {
        eprintln!("{NAME}: {error}");
        std::process::exit(1);
    }
}
