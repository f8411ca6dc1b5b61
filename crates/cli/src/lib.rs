//! `automationctl`, the command-line client of the automation platform.
//!
//! ```text
//! automationctl status                       every service's liveness and readiness
//! automationctl watcher status|run|watch     the test-watcher
//! automationctl audit run|report|history     the audit-agent
//! automationctl chat PROMPT                  a streamed answer through the api-gateway
//! automationctl metrics                      the collector's key figures
//! ```
//!
//! Tables for people by default, `--output json` for scripts. Endpoints and
//! the token come from flags or the environment (`COLLECTOR_ENDPOINT`,
//! `AUTOMATION_TOKEN` …, see `--help`). A failure is one line on stderr,
//! `automationctl: <service> at <host:port>: <what>`, and exit code 1; a
//! usage error exits 2.
//!
//! Layout:
//! * [`cli`]: the command line; [`endpoint`]: flag values checked at parse time.
//! * [`connect`]: dialling, TLS, the token, time limits; [`error`]: failures in one line.
//! * [`status`], [`watcher`], [`audit`], [`chat`], [`metrics`]: the commands.
//! * [`prometheus`] and [`http`]: reading `/metrics`.
//! * [`table`] and [`format`]: output for people.
//!
//! Run it with `cargo run -p automation-cli --bin automationctl -- status`.

pub mod audit;
pub mod chat;
pub mod cli;
pub mod connect;
pub mod endpoint;
pub mod error;
pub mod format;
pub mod http;
pub mod metrics;
pub mod prometheus;
pub mod status;
pub mod table;
pub mod watcher;

use std::io::{self, Write};

pub use cli::Cli;
use cli::{Command, Format, Global};
use connect::Connector;
pub use error::Failure;
use tracing::Instrument;

/// Where a command writes: `out` for results, `err` for failures and side
/// notes (chat's reasoning and token line), and how.
pub struct Io<'a> {
    /// Standard output.
    pub out: &'a mut dyn Write,
    /// Standard error.
    pub err: &'a mut dyn Write,
    /// Tables or JSON.
    pub format: Format,
    /// Whether stderr may carry ANSI styling (it is a terminal).
    pub color: bool,
}

impl Io<'_> {
    /// Writes `value` as one line of JSON.
    pub fn json(&mut self, value: &serde_json::Value) -> io::Result<()> {
        writeln!(self.out, "{value}")?;
        self.out.flush()
    }
}

/// Runs `cli` and returns the exit code: 0 done, 1 failed (the failure
/// printed on `io.err`) or not ready (`status`).
pub async fn run(cli: Cli, io: &mut Io<'_>) -> u8 {
    match execute(cli, io).await {
        Ok(code) => code,
        // The reader went away (`| head`): nothing is left to say.
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(failure) => {
            let _ = writeln!(io.err, "automationctl: {failure}");
            1
        }
    }
}

async fn execute(cli: Cli, io: &mut Io<'_>) -> Result<u8, Failure> {
    let global = &cli.global;
    let connector = Connector::new(global);
    // The command's span, parent of every call it makes (while tracing is
    // on: `OTEL_EXPORTER_OTLP_ENDPOINT`).
    let name = match &cli.command {
        Command::Status => "automationctl status",
        Command::Watcher(_) => "automationctl watcher",
        Command::Audit(_) => "automationctl audit",
        Command::Chat(_) => "automationctl chat",
        Command::Metrics => "automationctl metrics",
    };
    let span = if automation_telemetry::trace::enabled() {
        tracing::info_span!("command", otel.name = name, otel.kind = "client")
    } else {
        tracing::Span::none()
    };
    run_command(cli.command, global, &connector, io)
        .instrument(span)
        .await
}

async fn run_command(
    command: Command,
    global: &Global,
    connector: &Connector,
    io: &mut Io<'_>,
) -> Result<u8, Failure> {
    match command {
        Command::Status => status::run(global, connector, io).await,
        Command::Watcher(command) => watcher::run(global, connector, command, io).await,
        Command::Audit(command) => audit::run(global, connector, command, io).await,
        Command::Chat(args) => chat::run(global, connector, args, io).await,
        Command::Metrics => metrics::run(global, io).await,
    }
}
