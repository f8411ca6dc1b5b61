//! The command line: global flags (each with its environment variable) and
//! the commands.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::endpoint::{GrpcUrl, HttpUrl, Token};

/// `automationctl`.
#[derive(Debug, Parser)]
#[command(
    name = "automationctl",
    version,
    about = "The command-line client of the automation platform",
    long_about = "The command-line client of the automation platform: every \
        service's health, the test-watcher, the audit-agent, chat through the \
        api-gateway, and the collector's key figures."
)]
pub struct Cli {
    /// Endpoints, token, time limit, output format.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The collector's gRPC endpoint (https:// for TLS).
    #[arg(
        long,
        env = "COLLECTOR_ENDPOINT",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub collector: GrpcUrl,
    /// The collector's Prometheus endpoint (plain http).
    #[arg(
        long,
        env = "COLLECTOR_METRICS_URL",
        default_value = "http://127.0.0.1:9400/metrics",
        global = true
    )]
    pub collector_metrics: HttpUrl,
    /// The test-watcher's gRPC endpoint.
    #[arg(
        long,
        env = "WATCHER_ENDPOINT",
        default_value = "http://127.0.0.1:50052",
        global = true
    )]
    pub watcher: GrpcUrl,
    /// The audit-agent's gRPC endpoint.
    #[arg(
        long,
        env = "AUDIT_ENDPOINT",
        default_value = "http://127.0.0.1:50053",
        global = true
    )]
    pub audit: GrpcUrl,
    /// The api-gateway's gRPC endpoint.
    #[arg(
        long,
        env = "GATEWAY_ENDPOINT",
        default_value = "http://127.0.0.1:50054",
        global = true
    )]
    pub gateway: GrpcUrl,
    /// Bearer token sent on every gRPC call.
    #[arg(long, env = "AUTOMATION_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<Token>,
    /// Time limit of each call; streams (watch, chat) are limited only while connecting.
    #[arg(
        long,
        env = "AUTOMATIONCTL_TIMEOUT",
        default_value = "10s",
        value_parser = parse_timeout,
        global = true
    )]
    pub timeout: Duration,
    /// Output format: aligned tables for people, JSON for scripts.
    #[arg(
        long,
        short = 'o',
        env = "AUTOMATIONCTL_OUTPUT",
        value_enum,
        default_value_t = Format::Table,
        global = true
    )]
    pub output: Format,
    /// CA certificate (PEM) for https:// endpoints (default: system roots).
    #[arg(long, env = "TLS_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// JSON (one object per line for `watcher watch`).
    Json,
}

/// The commands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Every service's liveness and readiness (grpc.health.v1); exit 1 unless all are ready.
    Status,
    /// The test-watcher: status, manual runs, live results.
    #[command(subcommand)]
    Watcher(WatcherCommand),
    /// The audit-agent: run an audit, read reports, page through history.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Ask the api-gateway; the answer is printed as it arrives.
    Chat(ChatArgs),
    /// The collector's key figures per component, read from /metrics.
    Metrics,
}

/// `automationctl watcher …`.
#[derive(Debug, Clone, Subcommand)]
pub enum WatcherCommand {
    /// What the watcher is doing, and the last run.
    Status,
    /// Run the tests now.
    Run {
        /// Why (the run's trigger; default "manual"), at most 64 bytes.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Print every run as it finishes, until Ctrl-C.
    Watch {
        /// Print the last finished run first.
        #[arg(long)]
        include_last: bool,
    },
}

/// `automationctl audit …`.
#[derive(Debug, Clone, Subcommand)]
pub enum AuditCommand {
    /// Audit now and print the report.
    Run {
        /// Why (shown in the report), at most 64 bytes.
        #[arg(long)]
        reason: Option<String>,
    },
    /// A stored report (the latest by default).
    Report {
        /// The report id (from `audit history`); 0 is the latest.
        #[arg(long, default_value_t = 0)]
        id: u64,
        /// Include the per-document breakdown.
        #[arg(long)]
        documents: bool,
    },
    /// Stored reports, newest first.
    History {
        /// Reports per page (1 to 100).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
        /// The next page, from a previous page's output.
        #[arg(long)]
        page_token: Option<String>,
    },
}

/// `automationctl chat …`.
#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// The question (several words are joined with spaces; `-` reads stdin).
    #[arg(required = true, value_name = "PROMPT")]
    pub prompt: Vec<String>,
    /// The model (default: the gateway's default model).
    #[arg(long)]
    pub model: Option<String>,
    /// A system message sent before the prompt.
    #[arg(long)]
    pub system: Option<String>,
}

/// Parses a time limit such as `500ms`, `10s` or `2m` (above zero).
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e} (write a duration such as 500ms, 10s, 2m)"))?;
    if duration.is_zero() {
        return Err("the time limit must be above zero".to_owned());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        let cli = Cli::try_parse_from([
            "automationctl",
            "audit",
            "history",
            "--output",
            "json",
            "--timeout",
            "2s",
        ])
        .unwrap();
        assert_eq!(cli.global.output, Format::Json);
        assert_eq!(cli.global.timeout, Duration::from_secs(2));
        let cli = Cli::try_parse_from(["automationctl", "--output", "json", "metrics"]).unwrap();
        assert_eq!(cli.global.output, Format::Json);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["automationctl", "--timeout", "0s", "status"][..],
            &["automationctl", "--timeout", "soon", "status"],
            &["automationctl", "--collector", "ftp://x:1", "status"],
            &["automationctl", "audit", "history", "--limit", "0"],
            &["automationctl", "chat"],
        ] {
            let error = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn the_prompt_is_every_word() {
        let cli =
            Cli::try_parse_from(["automationctl", "chat", "why", "so", "--model", "m"]).unwrap();
        let Command::Chat(chat) = cli.command else {
            panic!("chat");
        };
        assert_eq!(chat.prompt, ["why", "so"]);
        assert_eq!(chat.model.as_deref(), Some("m"));
    }
}
