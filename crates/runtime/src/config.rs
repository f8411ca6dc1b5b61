//! The flags every service takes. Each flag also reads an environment
//! variable (DESIGN §3); those names are the contract with the manifests.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use automation_telemetry::auth::BearerAuth;
use automation_telemetry::logging::LogFormat;
use automation_telemetry::reporter::{MIN_HEARTBEAT_INTERVAL, ReporterConfig};
use tonic::transport::ServerTlsConfig;

use crate::serve::connection::ConnectionLimits;

/// The exit code for a bad configuration (`EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;

/// Flags shared by every service.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Log format: text for people, json for log pipelines.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// This instance's name, the `component_instance` label (default: the host name).
    #[arg(long, env = "INSTANCE")]
    pub instance: Option<String>,
    /// Tokens the gRPC server accepts, one per line (unset: no auth).
    #[arg(long, env = "AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// PEM certificate chain for the gRPC listener (with --tls-key-file).
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for the gRPC listener (with --tls-cert-file).
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// After SIGTERM, how long to stay up unready so load balancers notice.
    #[arg(long, env = "SHUTDOWN_DELAY", value_parser = parse_duration, default_value = "5s")]
    pub shutdown_delay: Duration,
    /// After the delay, how long in-flight work may take to drain.
    #[arg(long, env = "SHUTDOWN_GRACE", value_parser = parse_duration, default_value = "20s")]
    pub shutdown_grace: Duration,
    #[command(flatten)]
    pub connections: ConnectionArgs,
}

/// What one client connection to the gRPC listener may hold, and for how long.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Requests open at once on one connection (HTTP/2 streams).
    #[arg(long, env = "MAX_CONCURRENT_STREAMS", default_value_t = 100)]
    pub max_concurrent_streams: u32,
    /// A new connection that sends nothing for this long is closed.
    #[arg(long, env = "HANDSHAKE_TIMEOUT", value_parser = parse_interval, default_value = "10s")]
    pub handshake_timeout: Duration,
    /// A connection without a request in flight for this long is closed.
    #[arg(long, env = "CONNECTION_IDLE_TIMEOUT", value_parser = parse_interval, default_value = "5m")]
    pub connection_idle_timeout: Duration,
    /// A request body must arrive whole within this, or the request ends DEADLINE_EXCEEDED.
    #[arg(long, env = "REQUEST_BODY_TIMEOUT", value_parser = parse_interval, default_value = "10s")]
    pub request_body_timeout: Duration,
    /// How often an HTTP/2 ping checks that a connection's peer is still there.
    #[arg(long, env = "KEEPALIVE_INTERVAL", value_parser = parse_interval, default_value = "30s")]
    pub keepalive_interval: Duration,
    /// How long the ping's answer may take before the connection is closed.
    #[arg(long, env = "KEEPALIVE_TIMEOUT", value_parser = parse_interval, default_value = "20s")]
    pub keepalive_timeout: Duration,
}

impl ConnectionArgs {
    /// The limits these flags set.
    pub fn limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_concurrent_streams: self.max_concurrent_streams.max(1),
            handshake_timeout: self.handshake_timeout,
            idle_timeout: self.connection_idle_timeout,
            request_body_timeout: self.request_body_timeout,
            keepalive_interval: self.keepalive_interval,
            keepalive_timeout: self.keepalive_timeout,
        }
    }
}

impl CommonArgs {
    /// The shared part of `service`'s configuration: its instance name,
    /// bearer tokens (`AUTH_TOKEN_FILE`), TLS (`TLS_CERT_FILE`,
    /// `TLS_KEY_FILE`), shutdown timings, connection limits, and with
    /// `reporter` where its events go. An unusable token or TLS file is an
    /// error naming it.
    pub fn service_config(
        &self,
        service: &str,
        reporter: Option<&ReporterArgs>,
    ) -> Result<ServiceConfig, String> {
        let instance = self.instance_name();
        let auth =
            BearerAuth::from_file(self.auth_token_file.as_deref()).map_err(|e| e.to_string())?;
        let tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some(
                automation_telemetry::tls::server_config(cert, key).map_err(|e| e.to_string())?,
            ),
            _ => None,
        };
        Ok(ServiceConfig {
            reporter: reporter.map(|r| r.reporter_config(service, &instance)),
            instance,
            auth,
            tls,
            shutdown_delay: self.shutdown_delay,
            shutdown_grace: self.shutdown_grace,
            connections: self.connections.limits(),
        })
    }

    /// The instance name: `--instance`, else the host name, else `unknown`.
    pub fn instance_name(&self) -> String {
        self.instance.clone().unwrap_or_else(|| {
            hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "unknown".to_owned())
        })
    }
}

/// What every service's configuration holds, whatever the service: the
/// fields of [`CommonArgs`] (and [`ReporterArgs`]) once converted.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// This instance's `component_instance`.
    pub instance: String,
    /// gRPC bearer tokens.
    pub auth: BearerAuth,
    /// TLS for the gRPC listener.
    pub tls: Option<ServerTlsConfig>,
    /// After shutdown begins, how long to stay up unready.
    pub shutdown_delay: Duration,
    /// Then how long in-flight work may take.
    pub shutdown_grace: Duration,
    /// What one gRPC connection may hold, and for how long.
    pub connections: ConnectionLimits,
    /// Where events go; `None` reports nothing (the collector itself, tests).
    pub reporter: Option<ReporterConfig>,
}

impl ServiceConfig {
    /// Plain text, no auth, no reporter, the flags' default timings.
    pub fn new(instance: &str) -> Self {
        Self {
            instance: instance.to_owned(),
            auth: BearerAuth::disabled(),
            tls: None,
            shutdown_delay: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(20),
            connections: ConnectionLimits::default(),
            reporter: None,
        }
    }
}

/// Flags of the services that report to the collector.
#[derive(Debug, Clone, clap::Args)]
pub struct ReporterArgs {
    /// The collector's gRPC endpoint (https:// for TLS).
    #[arg(
        long,
        env = "COLLECTOR_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub collector_endpoint: String,
    /// Bearer token for the collector, one line, re-read when it changes.
    #[arg(long, env = "COLLECTOR_TOKEN_FILE")]
    pub collector_token_file: Option<PathBuf>,
    /// CA certificate for TLS endpoints (default: system roots).
    #[arg(long, env = "TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// How often a heartbeat is sent (at least 100ms).
    #[arg(
        long,
        env = "HEARTBEAT_INTERVAL",
        value_parser = parse_heartbeat_interval,
        default_value = "10s"
    )]
    pub heartbeat_interval: Duration,
}

impl ReporterArgs {
    /// The reporter configuration for `service`'s instance `instance`.
    pub fn reporter_config(&self, service: &str, instance: &str) -> ReporterConfig {
        let mut config = ReporterConfig::new(
            self.collector_endpoint.clone(),
            service.to_owned(),
            instance.to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        );
        config.token_file = self.collector_token_file.clone();
        config.tls_ca_file = self.tls_ca_file.clone();
        config.heartbeat_interval = self.heartbeat_interval;
        config
    }
}

/// `path` made absolute, symbolic links kept (a root that is a link is
/// followed to whatever it leads to each time), if it is a directory that
/// can be read; why not otherwise.
pub fn usable_directory(path: &std::path::Path) -> Result<PathBuf, String> {
    let absolute = std::path::absolute(path).map_err(|e| e.to_string())?;
    let metadata = std::fs::metadata(&absolute).map_err(|e| e.to_string())?;
    if !metadata.is_dir() {
        return Err("not a directory".to_owned());
    }
    Ok(absolute)
}

/// Parses a duration such as `250ms`, `5s`, `5m` or `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|error| format!("{error} (write a duration such as 250ms, 5s, 5m)"))
}

/// Parses a duration above zero, written as for [`parse_duration`]: for
/// intervals and periods, where zero would mean a busy loop.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err(
            "the interval must be above zero (write a duration such as 250ms, 5s, 5m)".to_owned(),
        );
    }
    Ok(duration)
}

/// `--heartbeat-interval`: an interval of at least [`MIN_HEARTBEAT_INTERVAL`],
/// as [`Reporter::start`](automation_telemetry::reporter::Reporter::start) requires.
pub fn parse_heartbeat_interval(text: &str) -> Result<Duration, String> {
    let interval = parse_interval(text)?;
    if interval < MIN_HEARTBEAT_INTERVAL {
        return Err(format!(
            "the heartbeat interval must be at least {}",
            humantime::format_duration(MIN_HEARTBEAT_INTERVAL)
        ));
    }
    Ok(interval)
}

/// Parses the command line and environment. `--help` and `--version` print
/// and exit 0; anything wrong prints one line to stderr and exits 64.
pub fn parse_or_exit<T: Parser>(program: &str) -> T {
    T::try_parse().unwrap_or_else(|error| exit_on(program, &error))
}

/// Exits as [`parse_or_exit`] does for `error`.
pub fn exit_on(program: &str, error: &clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        std::process::exit(0);
    }
    let rendered = error.render().to_string();
    let line = rendered
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("invalid configuration")
        .trim()
        .trim_start_matches("error: ");
    config_error(program, line)
}

/// Prints `program: configuration error: message` and exits 64.
pub fn config_error(program: &str, message: impl std::fmt::Display) -> ! {
    eprintln!("{program}: configuration error: {message}");
    std::process::exit(EXIT_CONFIG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("soon").unwrap_err().contains("250ms"));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO), "unchanged");
    }

    #[test]
    fn intervals_are_above_zero() {
        assert_eq!(parse_interval("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_interval(" 5m "), Ok(Duration::from_secs(300)));
        for zero in ["0s", "0ms", "0ns"] {
            assert!(
                parse_interval(zero).unwrap_err().contains("above zero"),
                "{zero}"
            );
        }
        assert!(parse_interval("soon").unwrap_err().contains("250ms"));
    }

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        reporter: ReporterArgs,
    }

    fn heartbeat_flag(value: &str) -> Result<Duration, clap::Error> {
        Flags::try_parse_from(["service", "--heartbeat-interval", value])
            .map(|flags| flags.reporter.heartbeat_interval)
    }

    #[test]
    fn the_heartbeat_interval_flag_refuses_under_100ms() {
        assert_eq!(heartbeat_flag("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(heartbeat_flag("30s").unwrap(), Duration::from_secs(30));
        for (value, says) in [
            ("0s", "above zero"),
            ("99ms", "at least 100ms"),
            ("1ms", "at least 100ms"),
        ] {
            let error = heartbeat_flag(value).unwrap_err();
            // A clap error, which `parse_or_exit` turns into exit code 64.
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{value}"
            );
            let rendered = error.to_string();
            assert!(
                rendered.contains("--heartbeat-interval") && rendered.contains(says),
                "{value}: {rendered}"
            );
        }
    }
}
