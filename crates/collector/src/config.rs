//! The collector's command line; every flag also reads its environment
//! variable (DESIGN §3).

use std::net::SocketAddr;
use std::time::Duration;

use automation_runtime::config::{CommonArgs, parse_duration, parse_interval};

use crate::state::Limits;
use crate::{Config, NAME};

/// `collector [catalog]`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "collector",
    version,
    about = "Receives every service's events over gRPC and serves them to Prometheus"
)]
pub struct Cli {
    /// What to do instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// gRPC listen address.
    #[arg(long, env = "GRPC_LISTEN", default_value = "0.0.0.0:50051")]
    pub grpc_listen: SocketAddr,
    /// HTTP admin listen address (/metrics, /health, /ready).
    #[arg(long, env = "HTTP_LISTEN", default_value = "0.0.0.0:9400")]
    pub http_listen: SocketAddr,
    /// OTLP/gRPC listen address (`off`: not served; OTLP/gRPC is also
    /// served on the gRPC port).
    #[arg(long, env = "OTLP_GRPC_LISTEN", value_parser = parse_listen, default_value = "0.0.0.0:4317")]
    pub otlp_grpc_listen: Listen,
    /// OTLP/HTTP listen address for `POST /v1/metrics` (`off`: not served).
    #[arg(long, env = "OTLP_HTTP_LISTEN", value_parser = parse_listen, default_value = "0.0.0.0:4318")]
    pub otlp_http_listen: Listen,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub collector: CollectorArgs,
}

automation_runtime::service_cli!(Cli);

impl TryFrom<Cli> for Config {
    type Error = String;

    fn try_from(cli: Cli) -> Result<Self, String> {
        let service = cli.common.service_config(NAME, None)?;
        let mut config = Config::new(&service.instance);
        config.service = service;
        cli.collector.apply(&mut config);
        config.otlp_grpc = cli.otlp_grpc_listen.0;
        config.otlp_http = cli.otlp_http_listen.0;
        Ok(config)
    }
}

/// A listen address, or none (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

/// `host:port`, or `off`.
pub fn parse_listen(text: &str) -> Result<Listen, String> {
    match text.trim() {
        "off" => Ok(Listen(None)),
        addr => addr
            .parse()
            .map(|addr| Listen(Some(addr)))
            .map_err(|e| format!("{e} (write host:port, or off)")),
    }
}

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the metric catalog as JSON and exit.
    Catalog,
}

/// The collector's own tuning flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CollectorArgs {
    /// Label sets per metric before new label values fold into `other`.
    #[arg(long, env = "MAX_SERIES_PER_METRIC", default_value_t = 10_000)]
    pub max_series_per_metric: usize,
    /// Instances per component before new ones fold into `other`.
    #[arg(long, env = "MAX_INSTANCES", default_value_t = 1_000)]
    pub max_instances: usize,
    /// Events per batch; a larger batch is refused.
    #[arg(long, env = "MAX_BATCH_EVENTS", default_value_t = 10_000)]
    pub max_batch_events: usize,
    /// Encoded bytes per batch; a larger batch is refused.
    #[arg(long, env = "MAX_BATCH_BYTES", default_value_t = 4 << 20)]
    pub max_batch_bytes: usize,
    /// Bytes of a label value.
    #[arg(long, env = "MAX_LABEL_LENGTH", default_value_t = 128)]
    pub max_label_length: usize,
    /// Pushes processed at once; more are answered RESOURCE_EXHAUSTED.
    #[arg(long, env = "MAX_CONCURRENT_PUSHES", default_value_t = 1_024)]
    pub max_concurrent_pushes: usize,
    /// Of those, how many one connection may hold.
    #[arg(long, env = "MAX_PUSHES_PER_CONNECTION", default_value_t = 16)]
    pub max_pushes_per_connection: usize,
    /// How long the series of a silent instance stay.
    #[arg(long, env = "IDLE_TIMEOUT", value_parser = parse_duration, default_value = "15m")]
    pub idle_timeout: Duration,
    /// How long the series of an instance that said goodbye stay.
    #[arg(long, env = "STOPPED_LINGER", value_parser = parse_duration, default_value = "5m")]
    pub stopped_linger: Duration,
    /// How long replay windows outlive a silent reporter's series.
    #[arg(long, env = "DEDUP_MEMORY", value_parser = parse_duration, default_value = "6h")]
    pub dedup_memory: Duration,
    /// The longest an instance counts as up without a batch, whatever
    /// heartbeat interval it claims.
    #[arg(long, env = "MAX_SILENCE", value_parser = parse_interval, default_value = "10m")]
    pub max_silence: Duration,
    /// OTLP metric names held at once; points of further names are refused.
    #[arg(long, env = "MAX_OTLP_METRICS", default_value_t = 1_000)]
    pub max_otlp_metrics: usize,
    /// OTLP label sets held at once; points of further series are refused.
    #[arg(long, env = "MAX_OTLP_SERIES", default_value_t = 100_000)]
    pub max_otlp_series: usize,
    /// Replay windows kept per instance (its newest incarnations).
    #[arg(long, env = "MAX_INCARNATIONS", default_value_t = 8)]
    pub max_incarnations: usize,
    /// How often silent instances are looked for.
    #[arg(long, env = "SWEEP_INTERVAL", value_parser = parse_interval, default_value = "1s")]
    pub sweep_interval: Duration,
}

impl CollectorArgs {
    /// Sets what these flags say in `config`.
    pub fn apply(&self, config: &mut Config) {
        config.limits = self.limits();
        config.max_concurrent_pushes = self.max_concurrent_pushes;
        config.max_pushes_per_connection = self.max_pushes_per_connection;
        config.sweep_interval = self.sweep_interval;
    }

    /// The limits these flags set.
    pub fn limits(&self) -> Limits {
        Limits {
            max_series_per_metric: self.max_series_per_metric,
            max_instances: self.max_instances,
            max_batch_events: self.max_batch_events,
            max_batch_bytes: self.max_batch_bytes,
            max_label_length: self.max_label_length,
            idle_timeout: self.idle_timeout,
            stopped_linger: self.stopped_linger,
            dedup_memory: self.dedup_memory,
            max_incarnations: self.max_incarnations,
            max_otlp_metrics: self.max_otlp_metrics,
            max_otlp_series: self.max_otlp_series,
            max_silence: self.max_silence,
        }
    }
}

#[cfg(test)]
mod tests {
    use automation_testkit::config::{assert_converts, converted};

    use super::*;

    fn config(args: &[&str]) -> Result<Config, String> {
        converted::<Cli, Config>(args)
    }

    #[test]
    fn the_flags_defaults_are_the_libraries() {
        let mut expected = Config::new("c-1");
        expected.otlp_grpc = Some("0.0.0.0:4317".parse().unwrap());
        expected.otlp_http = Some("0.0.0.0:4318".parse().unwrap());
        assert_converts::<Cli, Config>(&["--instance", "c-1"], &expected);
    }

    #[test]
    fn flags_set_the_configuration() {
        let config = config(&[
            "--instance",
            "c-2",
            "--otlp-grpc-listen",
            "off",
            "--otlp-http-listen",
            "127.0.0.1:14318",
            "--max-concurrent-pushes",
            "8",
            "--max-batch-events",
            "7",
            "--sweep-interval",
            "250ms",
            "--shutdown-delay",
            "0s",
        ])
        .unwrap();
        assert_eq!(config.service.instance, "c-2");
        assert_eq!(config.otlp_grpc, None);
        assert_eq!(config.otlp_http, Some("127.0.0.1:14318".parse().unwrap()));
        assert_eq!(config.max_concurrent_pushes, 8);
        assert_eq!(config.limits.max_batch_events, 7);
        assert_eq!(config.sweep_interval, Duration::from_millis(250));
        assert_eq!(config.service.shutdown_delay, Duration::ZERO);
    }

    #[test]
    fn an_unreadable_token_file_is_refused_by_name() {
        let error = config(&["--auth-token-file", "/nonexistent/tokens"]).unwrap_err();
        assert!(error.contains("/nonexistent/tokens"), "{error}");
    }
}
