//! `automation-stack`: the whole platform in one process, watching and
//! auditing a repository (the current directory by default).

use automation_runtime::config::{config_error, parse_or_exit};
use automation_runtime::shutdown;
use automation_stack::config::{Cli, NAME};
use automation_stack::{StackConfig, run};
use automation_telemetry::logging;

#[tokio::main]
async fn main() {
    let cli: Cli = parse_or_exit(NAME);
    let traces = logging::init(Some(cli.common.log_format), NAME);
    let root = std::fs::canonicalize(&cli.root).unwrap_or(cli.root.clone());
    let ready_timeout = cli.ready_timeout;
    let config = StackConfig::try_from(cli).unwrap_or_else(|error| config_error(NAME, error));
    println!("{NAME}: starting, watching and auditing {}", root.display());
    let ran = run(config, ready_timeout, shutdown::on_signal()).await;
    traces.shutdown().await;
    if let Err(error) = ran {
        eprintln!("{NAME}: {error}");
        std::process::exit(1);
    }
}
