//! The test-watcher's command line; every flag also reads its environment
//! variable (DESIGN §3).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use automation_telemetry::config::{CommonArgs, ReporterArgs, parse_duration, parse_interval};

use crate::engine::OnBusy;

/// `test-watcher`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "test-watcher",
    version,
    about = "Watches a source tree, debounces changes, runs the tests, reports every step"
)]
pub struct Cli {
    /// gRPC listen address.
    #[arg(long, env = "GRPC_LISTEN", default_value = "0.0.0.0:50052")]
    pub grpc_listen: SocketAddr,
    /// HTTP admin listen address (/health, /ready).
    #[arg(long, env = "HTTP_LISTEN", default_value = "0.0.0.0:9401")]
    pub http_listen: SocketAddr,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub reporter: ReporterArgs,
    #[command(flatten)]
    pub watcher: WatcherArgs,
}

/// What to watch and how to run the tests.
#[derive(Debug, Clone, clap::Args)]
pub struct WatcherArgs {
    /// The tree to watch; the test command runs there.
    #[arg(long, env = "WATCH_ROOT", default_value = ".")]
    pub watch_root: PathBuf,
    /// The test command, run with `sh -c` in its own process group.
    #[arg(long, env = "TEST_COMMAND", default_value = "cargo test")]
    pub test_command: String,
    /// Quiet time, in milliseconds, before a batch of changes starts a run.
    #[arg(long, env = "DEBOUNCE_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub debounce_ms: u64,
    /// What a change does while a run is in progress.
    #[arg(long, env = "ON_BUSY", value_enum, default_value = "queue")]
    pub on_busy: OnBusy,
    /// Only files with these extensions count (comma-separated, e.g. rs,toml); default: all.
    #[arg(long, env = "WATCH_EXTENSIONS", value_delimiter = ',')]
    pub extensions: Vec<String>,
    /// Poll the tree instead of using native events (network and container file systems).
    #[arg(long, env = "WATCH_POLL")]
    pub poll: bool,
    /// How often to poll with --poll.
    #[arg(long, env = "WATCH_POLL_INTERVAL", value_parser = parse_interval, default_value = "1s")]
    pub poll_interval: Duration,
    /// A run is stopped after this long (SIGTERM, then SIGKILL after --kill-grace).
    #[arg(long, env = "RUN_TIMEOUT", value_parser = parse_duration, default_value = "30m")]
    pub run_timeout: Duration,
    /// Between SIGTERM and SIGKILL.
    #[arg(long, env = "KILL_GRACE", value_parser = parse_duration, default_value = "5s")]
    pub kill_grace: Duration,
    /// Read results from this JUnit XML file (cargo-nextest's) instead of the output.
    #[arg(long, env = "JUNIT_PATH")]
    pub junit: Option<PathBuf>,
    /// Run the tests once at start.
    #[arg(long, env = "RUN_ON_START")]
    pub run_on_start: bool,
}
