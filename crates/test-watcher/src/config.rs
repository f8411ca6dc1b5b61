//! The test-watcher's command line; every flag also reads its environment
//! variable (DESIGN §3).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use automation_runtime::config::{
    CommonArgs, ReporterArgs, ServiceConfig, parse_duration, parse_interval,
};

use crate::engine::OnBusy;
use crate::explain::GatewayConfig;
use crate::{Config, NAME};

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
    /// The tree to watch; the test command runs there.
    #[arg(long, env = "WATCH_ROOT", default_value = ".")]
    pub watch_root: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub reporter: ReporterArgs,
    #[command(flatten)]
    pub watcher: WatcherArgs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

automation_runtime::service_cli!(Cli);

impl TryFrom<Cli> for Config {
    type Error = String;

    fn try_from(cli: Cli) -> Result<Self, String> {
        let service = cli.common.service_config(NAME, Some(&cli.reporter))?;
        let mut config = cli.watcher.config(service, cli.watch_root)?;
        config.gateway = cli.gateway.gateway_config(cli.reporter.tls_ca_file.clone());
        match &config.gateway {
            Some(gateway) => gateway.check().map_err(|e| e.to_string())?,
            None if cli.gateway.gateway_token_file.is_some() => tracing::warn!(
                "GATEWAY_TOKEN_FILE is set but GATEWAY_ENDPOINT is not: failed runs are not explained"
            ),
            None => {}
        }
        Ok(config)
    }
}

/// What to watch and how to run the tests.
#[derive(Debug, Clone, clap::Args)]
pub struct WatcherArgs {
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

impl WatcherArgs {
    /// The test-watcher's configuration: `service`, watching `root` as these
    /// flags say. A root that is not a directory is refused.
    pub fn config(&self, service: ServiceConfig, root: PathBuf) -> Result<Config, String> {
        if !root.is_dir() {
            return Err(format!("WATCH_ROOT {} is not a directory", root.display()));
        }
        let mut config = Config::new(&service.instance, root);
        config.service = service;
        let engine = &mut config.engine;
        engine.command.clone_from(&self.test_command);
        engine.debounce = Duration::from_millis(self.debounce_ms);
        engine.on_busy = self.on_busy;
        engine.timeout = self.run_timeout;
        engine.kill_grace = self.kill_grace;
        engine.junit.clone_from(&self.junit);
        config.extensions.clone_from(&self.extensions);
        config.poll = self.poll.then_some(self.poll_interval);
        config.run_on_start = self.run_on_start;
        Ok(config)
    }
}

/// The api-gateway client that explains failed runs.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// The api-gateway's gRPC endpoint (https:// for TLS, trusting TLS_CA_FILE); unset: failed runs are not explained.
    #[arg(long, env = "GATEWAY_ENDPOINT")]
    pub gateway_endpoint: Option<String>,
    /// Bearer token for the api-gateway, one line, re-read when it changes.
    #[arg(long, env = "GATEWAY_TOKEN_FILE")]
    pub gateway_token_file: Option<PathBuf>,
    /// How long asking the api-gateway for an explanation may take.
    #[arg(long, env = "EXPLAIN_TIMEOUT", value_parser = parse_interval, default_value = "120s")]
    pub explain_timeout: Duration,
    /// Bytes of the end of a failed run's output sent with the request (0: none).
    #[arg(long, env = "EXPLAIN_MAX_OUTPUT", default_value_t = 16384, value_parser = clap::value_parser!(u64).range(0..=4_194_304))]
    pub explain_max_output: u64,
}

impl GatewayArgs {
    /// The gateway client's configuration, `None` when no endpoint is set
    /// (an empty `GATEWAY_ENDPOINT` counts as unset).
    pub fn gateway_config(&self, tls_ca_file: Option<PathBuf>) -> Option<GatewayConfig> {
        let endpoint = self.gateway_endpoint.as_deref().map(str::trim)?;
        if endpoint.is_empty() {
            return None;
        }
        let mut config = GatewayConfig::new(endpoint);
        config.token_file = self.gateway_token_file.clone();
        config.tls_ca_file = tls_ca_file;
        config.timeout = self.explain_timeout;
        config.max_output = usize::try_from(self.explain_max_output).unwrap_or(usize::MAX);
        Some(config)
    }
}

#[cfg(test)]
mod tests {
    use automation_testkit::config::{assert_converts, converted, default_reporter};
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("test-watcher").chain(args.iter().copied()))
    }

    fn config(args: &[&str]) -> Result<Config, String> {
        converted::<Cli, Config>(args)
    }

    #[test]
    fn the_flags_defaults_are_the_libraries() {
        let mut expected = Config::new("tw-1", ".".into());
        expected.service.reporter = Some(default_reporter(NAME, "tw-1"));
        assert_converts::<Cli, Config>(&["--instance", "tw-1"], &expected);
    }

    #[test]
    fn flags_set_the_configuration() {
        let root = tempfile::tempdir().unwrap();
        let config = config(&[
            "--watch-root",
            root.path().to_str().unwrap(),
            "--test-command",
            "make check",
            "--debounce-ms",
            "250",
            "--poll",
            "--poll-interval",
            "2s",
            "--gateway-endpoint",
            "http://127.0.0.1:50054",
        ])
        .unwrap();
        assert_eq!(config.engine.root, root.path());
        assert_eq!(config.engine.command, "make check");
        assert_eq!(config.engine.debounce, Duration::from_millis(250));
        assert_eq!(config.poll, Some(Duration::from_secs(2)));
        let gateway = config.gateway.expect("explanations");
        assert_eq!(gateway.endpoint, "http://127.0.0.1:50054");
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        let error = config(&["--watch-root", "/nonexistent/tree"]).unwrap_err();
        assert!(error.contains("WATCH_ROOT /nonexistent/tree"), "{error}");
        let error = config(&["--gateway-endpoint", "gateway:50054"]).unwrap_err();
        assert!(error.contains("gateway:50054"), "{error}");
    }

    #[test]
    fn the_gateway_is_off_unless_an_endpoint_is_set() {
        let cli = parse(&[]).unwrap();
        assert!(cli.gateway.gateway_config(None).is_none());
        assert_eq!(cli.gateway.explain_timeout, Duration::from_secs(120));
        assert_eq!(cli.gateway.explain_max_output, 16 * 1024);
        let cli = parse(&["--gateway-endpoint", " "]).unwrap();
        assert!(cli.gateway.gateway_config(None).is_none());
        let cli = parse(&[
            "--gateway-endpoint",
            "http://gateway:50054",
            "--gateway-token-file",
            "/run/secrets/token",
            "--explain-timeout",
            "30s",
            "--explain-max-output",
            "0",
        ])
        .unwrap();
        let config = cli.gateway.gateway_config(Some("/ca.pem".into())).unwrap();
        assert_eq!(config.endpoint, "http://gateway:50054");
        assert_eq!(config.token_file, Some("/run/secrets/token".into()));
        assert_eq!(config.tls_ca_file, Some("/ca.pem".into()));
        assert_eq!(config.timeout, Duration::from_secs(30));
        assert_eq!(config.max_output, 0);
    }

    #[test]
    fn bad_explain_limits_are_refused() {
        for arg in [
            "--explain-timeout=0s",
            "--explain-timeout=soon",
            "--explain-max-output=-1",
            "--explain-max-output=16KiB",
            "--explain-max-output=4194305",
        ] {
            let error = parse(&[arg]).unwrap_err();
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{arg}: {error}"
            );
        }
    }
}
