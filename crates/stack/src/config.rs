//! The stack's command line: where it listens and what it watches, and
//! each service's own flag group (the same flags and environment variables
//! as the separate binaries), converted into a [`StackConfig`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use automation_collector::config::{CollectorArgs, Listen, parse_listen};
use automation_runtime::config::{CommonArgs, parse_duration, parse_heartbeat_interval};

use crate::{Addresses, StackConfig};

/// The stack's name, in logs and messages.
pub const NAME: &str = "automation-stack";

/// `automation-stack`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "automation-stack",
    version,
    about = "The whole platform in one process: collector, test-watcher, audit-agent, api-gateway"
)]
pub struct Cli {
    /// The repository to watch and audit.
    #[arg(long, env = "STACK_ROOT", default_value = ".")]
    pub root: PathBuf,
    /// The address every service listens on (design ports 50051-50054, 9400-9403).
    #[arg(long, env = "STACK_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// The collector's gRPC address (default <host>:50051).
    #[arg(long, env = "COLLECTOR_GRPC_LISTEN")]
    pub collector_grpc: Option<SocketAddr>,
    /// The collector's HTTP address (default <host>:9400).
    #[arg(long, env = "COLLECTOR_HTTP_LISTEN")]
    pub collector_http: Option<SocketAddr>,
    /// The collector's OTLP/gRPC address (default <host>:4317; `off`: none).
    #[arg(long, env = "COLLECTOR_OTLP_GRPC_LISTEN", value_parser = parse_listen)]
    pub collector_otlp_grpc: Option<Listen>,
    /// The collector's OTLP/HTTP address (default <host>:4318; `off`: none).
    #[arg(long, env = "COLLECTOR_OTLP_HTTP_LISTEN", value_parser = parse_listen)]
    pub collector_otlp_http: Option<Listen>,
    /// The test-watcher's gRPC address (default <host>:50052).
    #[arg(long, env = "WATCHER_GRPC_LISTEN")]
    pub watcher_grpc: Option<SocketAddr>,
    /// The test-watcher's HTTP address (default <host>:9401).
    #[arg(long, env = "WATCHER_HTTP_LISTEN")]
    pub watcher_http: Option<SocketAddr>,
    /// The audit-agent's gRPC address (default <host>:50053).
    #[arg(long, env = "AUDIT_GRPC_LISTEN")]
    pub audit_grpc: Option<SocketAddr>,
    /// The audit-agent's HTTP address (default <host>:9402).
    #[arg(long, env = "AUDIT_HTTP_LISTEN")]
    pub audit_http: Option<SocketAddr>,
    /// The api-gateway's gRPC address (default <host>:50054).
    #[arg(long, env = "GATEWAY_GRPC_LISTEN")]
    pub gateway_grpc: Option<SocketAddr>,
    /// The api-gateway's HTTP address (default <host>:9403).
    #[arg(long, env = "GATEWAY_HTTP_LISTEN")]
    pub gateway_http: Option<SocketAddr>,
    /// The audit history (default: <root>/.automation/audit-agent.db).
    #[arg(long, env = "DATABASE_PATH")]
    pub database_path: Option<PathBuf>,
    /// The reporters' heartbeat (at least 100ms).
    #[arg(long, env = "HEARTBEAT_INTERVAL", value_parser = parse_heartbeat_interval, default_value = "10s")]
    pub heartbeat_interval: Duration,
    /// How long to wait for every service to be ready before printing the table.
    #[arg(long, env = "READY_TIMEOUT", value_parser = parse_duration, default_value = "60s")]
    pub ready_timeout: Duration,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub collector: CollectorArgs,
    #[command(flatten)]
    pub watcher: automation_test_watcher::config::WatcherArgs,
    #[command(flatten)]
    pub audit: automation_audit_agent::config::AuditArgs,
    #[command(flatten)]
    pub gateway: automation_api_gateway::config::GatewayArgs,
}

impl TryFrom<Cli> for StackConfig {
    type Error = String;

    fn try_from(cli: Cli) -> Result<Self, String> {
        if cli.common.tls_cert_file.is_some() {
            return Err(
                "the local stack serves plain text on loopback; TLS is for the separate services"
                    .to_owned(),
            );
        }
        if !cli.root.is_dir() {
            return Err(format!(
                "STACK_ROOT {} is not a directory",
                cli.root.display()
            ));
        }
        let mut service = cli.common.service_config(NAME, None)?;
        // One process on a laptop: nobody's load balancer to wait for.
        service.shutdown_delay = Duration::ZERO;

        let mut addresses = Addresses::design(cli.host);
        let overrides = [
            (cli.collector_grpc, cli.collector_http),
            (cli.watcher_grpc, cli.watcher_http),
            (cli.audit_grpc, cli.audit_http),
            (cli.gateway_grpc, cli.gateway_http),
        ];
        for (a, (grpc, http)) in addresses.iter_mut().zip(overrides) {
            a.grpc = grpc.unwrap_or(a.grpc);
            a.http = http.unwrap_or(a.http);
        }

        let mut collector = automation_collector::Config::new(&service.instance);
        collector.service = service.clone();
        cli.collector.apply(&mut collector);
        let otlp = |listen: Option<Listen>, port| {
            listen.map_or(Some(SocketAddr::new(cli.host, port)), |listen| listen.0)
        };
        collector.otlp_grpc = otlp(cli.collector_otlp_grpc, 4317);
        collector.otlp_http = otlp(cli.collector_otlp_http, 4318);
        let database = cli
            .database_path
            .clone()
            .unwrap_or_else(|| cli.root.join(".automation/audit-agent.db"));
        Ok(StackConfig {
            addresses,
            collector,
            watcher: cli.watcher.config(service.clone(), cli.root.clone())?,
            audit: cli
                .audit
                .config(service.clone(), cli.root.clone(), database)?,
            gateway: cli.gateway.config(service)?,
            heartbeat_interval: cli.heartbeat_interval,
            token_file: cli.common.auth_token_file.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn config(args: &[&str]) -> Result<StackConfig, String> {
        automation_testkit::config::converted::<Cli, StackConfig>(args)
    }

    #[test]
    fn the_services_flag_groups_fit_together() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_stack_takes_each_services_flags() {
        let root = tempfile::tempdir().unwrap();
        let root_arg = root.path().to_str().unwrap();
        let config = config(&[
            "--root",
            root_arg,
            "--instance",
            "laptop",
            "--test-command",
            "make check",
            "--audit-interval",
            "0s",
            "--client-rate-limit",
            "0",
            "--max-series-per-metric",
            "50",
            "--collector-otlp-http",
            "off",
            "--shutdown-delay",
            "9s",
        ])
        .unwrap();
        assert_eq!(config.watcher.engine.command, "make check");
        assert_eq!(config.audit.interval, None);
        assert_eq!(config.gateway.client_rate, None);
        assert_eq!(config.collector.limits.max_series_per_metric, 50);
        assert_eq!(
            config.collector.otlp_grpc,
            Some("127.0.0.1:4317".parse().unwrap())
        );
        assert_eq!(config.collector.otlp_http, None);
        assert_eq!(
            config.audit.database,
            root.path().join(".automation/audit-agent.db")
        );
        for service in [
            &config.collector.service,
            &config.watcher.service,
            &config.audit.service,
            &config.gateway.service,
        ] {
            assert_eq!(service.instance, "laptop");
            assert_eq!(service.shutdown_delay, Duration::ZERO, "no load balancer");
        }
    }

    #[test]
    fn the_stack_refuses_what_a_service_would() {
        let root = tempfile::tempdir().unwrap();
        let root_arg = root.path().to_str().unwrap();
        let refused = |args: &[&str]| {
            let args: Vec<&str> = ["--root", root_arg].iter().chain(args).copied().collect();
            config(&args).unwrap_err()
        };
        assert!(refused(&["--markdown-globs", "a[b"]).contains("MARKDOWN_GLOBS"));
        assert!(refused(&["--deepseek-base-url", "ftp://x"]).contains("DEEPSEEK_BASE_URL"));
        assert!(refused(&["--tls-cert-file", "c", "--tls-key-file", "k"]).contains("plain text"));
        let missing = config(&["--root", "/nonexistent/tree"]).unwrap_err();
        assert!(missing.contains("STACK_ROOT"), "{missing}");
    }
}
