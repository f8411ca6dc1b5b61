//! A real collector for tests, on 127.0.0.1 ports chosen by the OS, with a
//! gRPC client and a `/metrics` reader. Other crates' tests use it as the
//! collector their services report to.

use std::net::SocketAddr;
use std::time::Duration;

use automation_proto::v1::collector_client::CollectorClient;
use tokio::net::TcpListener;
use tonic::transport::Channel;

use automation_runtime::serve::Listeners;
use automation_telemetry::reporter::ReporterConfig;

use automation_collector::{Config, Error, Handles, start};

use crate::http::http_get;
use crate::samples::Samples;
use crate::service::{self, Service};
use crate::wait::within;

/// A collector serving on loopback until stopped (or dropped): a
/// [`Service`] (its addresses, handles and shutdown) with a client, its
/// `/metrics` and reporter configurations for it.
#[derive(Debug)]
pub struct TestCollector {
    service: Service<Handles, Error>,
}

impl std::ops::Deref for TestCollector {
    type Target = Service<Handles, Error>;

    fn deref(&self) -> &Self::Target {
        &self.service
    }
}

impl TestCollector {
    /// Starts a collector with `config` on fresh ports.
    pub async fn start(config: Config) -> Self {
        Self::start_on(config, "127.0.0.1:0".parse().expect("address")).await
    }

    /// Starts a collector with `config`, gRPC on `grpc` (to restart one on
    /// the port it had).
    pub async fn start_on(mut config: Config, grpc: SocketAddr) -> Self {
        config.service.shutdown_delay = Duration::ZERO;
        let listeners = Listeners {
            grpc: bind_retrying(grpc).await,
            http: TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP"),
        };
        let service = service::start_on(listeners, |listeners, shutdown| {
            start(config, listeners, shutdown)
        })
        .await
        .expect("the collector starts");
        Self { service }
    }

    /// A reporter configuration for `service`'s instance `instance` that
    /// reports here quickly (heartbeats every 200 ms, batches within 20 ms).
    pub fn reporter(&self, service: &str, instance: &str) -> ReporterConfig {
        let mut config = ReporterConfig::new(self.endpoint(), service, instance, "1.0");
        config.heartbeat_interval = Duration::from_millis(200);
        config.batch_max_delay = Duration::from_millis(20);
        config
    }

    /// A gRPC client connected to it.
    pub async fn client(&self) -> CollectorClient<Channel> {
        CollectorClient::connect(self.endpoint())
            .await
            .expect("connect to the collector")
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        let (status, body) = http_get(self.http, "/metrics").await;
        assert_eq!(status, 200, "/metrics answered {status}: {body}");
        body
    }

    /// The `/metrics` samples.
    pub async fn metrics(&self) -> Samples {
        Samples::parse(&self.metrics_text().await)
    }

    /// Polls `/metrics` until `check` holds (panics after 30 s, naming `what`).
    pub async fn eventually(&self, what: &str, check: impl Fn(&Samples) -> bool) -> Samples {
        within(what, async {
            loop {
                let samples = self.metrics().await;
                if check(&samples) {
                    return samples;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await
    }

    /// Shuts it down gracefully and waits until it has stopped.
    pub async fn stop(self) {
        let _ = service::stop(self.service).await;
    }
}

/// Runs the real `promtool check metrics` on `text`: panics with its report
/// when it fails or has any remark.
pub fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is needed (Debian package prometheus; `make test` installs it)");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ends");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{report}"
    );
    assert!(report.trim().is_empty(), "promtool has remarks:\n{report}");
}

async fn bind_retrying(addr: SocketAddr) -> TcpListener {
    // A port just released by a stopped collector may take a moment to free.
    for _ in 0..100 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    TcpListener::bind(addr).await.expect("bind gRPC")
}
