//! `automationctl`: parses the command line (usage errors exit 2) and runs
//! the command on a single-threaded runtime.

use std::io::IsTerminal;
use std::process::ExitCode;

use automation_cli::{Cli, Io, run};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("automationctl: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    let color = stderr.is_terminal();
    let mut io = Io {
        out: &mut stdout.lock(),
        err: &mut stderr.lock(),
        format: cli.global.output,
        color,
    };
    ExitCode::from(runtime.block_on(async {
        // Spans only, no log lines: the command's own output is the report.
        let traces = automation_telemetry::logging::init(None, "automationctl");
        let code = run(cli, &mut io).await;
        // The command's spans, unless the tracing backend keeps them
        // waiting: the command's own answer is already out.
        traces
            .shutdown_within(std::time::Duration::from_secs(2))
            .await;
        code
    }))
}
