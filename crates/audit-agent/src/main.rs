//! `audit-agent`: the configuration converted, served until a signal; or
//! the database backed up or restored.

use automation_audit_agent::config::Cli;
use automation_audit_agent::{NAME, start};
use automation_runtime::binary;
use automation_runtime::config::parse_or_exit;
use automation_telemetry::logging;

#[tokio::main]
async fn main() {
    let cli: Cli = parse_or_exit(NAME);
    let Some(command) = &cli.command else {
        return binary::serve(NAME, cli, start).await;
    };
    let traces = logging::init(Some(cli.common.log_format), NAME);
    let done = command.run(&cli.database_path);
    traces.shutdown().await;
    match done {
        Ok(line) => println!("{line}"),
        Err(error) => {
            eprintln!("{NAME}: {error}");
            std::process::exit(1);
        }
    }
}
