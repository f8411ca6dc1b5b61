//! A gateway on loopback ports for the door tests, in front of a fake
//! upstream, optionally reporting to a real collector.

#![allow(dead_code, reason = "each test binary uses a part of these helpers")]

use std::net::SocketAddr;
use std::time::Duration;

use automation_api_gateway::upstream::ApiKey;
use automation_api_gateway::{Config, Handles, run};
use automation_proto::v1::api_gateway_client::ApiGatewayClient;
use automation_telemetry::reporter::ReporterConfig;
use automation_telemetry::serve::Listeners;
use automation_testkit::upstream::FakeUpstream;
use automation_testkit::{TestCollector, within};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// The gateway's DeepSeek key in these tests.
pub const KEY: &str = "sk-test-0123456789abcdef";

/// A test configuration: short backoffs and limits, no client rate limit.
pub fn config(upstream: &FakeUpstream) -> Config {
    let mut config = Config::new(
        "gw-test",
        &upstream.base_url(),
        ApiKey::value(KEY.to_owned()),
    );
    config.shutdown_delay = Duration::ZERO;
    config.upstream.backoff_base = Duration::from_millis(10);
    config.upstream.backoff_max = Duration::from_millis(50);
    config.upstream.first_token_timeout = Duration::from_secs(5);
    config.upstream.idle_timeout = Duration::from_millis(500);
    config.client_rate = None;
    config
}

/// Reports to `collector`, quickly.
pub fn reporting(config: &mut Config, collector: &TestCollector) {
    let mut rc = ReporterConfig::new(collector.endpoint(), "api-gateway", "gw-test", "1.0");
    rc.heartbeat_interval = Duration::from_millis(200);
    rc.batch_max_delay = Duration::from_millis(20);
    config.reporter = Some(rc);
}

/// A running gateway.
pub struct Gateway {
    /// Its gRPC address.
    pub grpc: SocketAddr,
    /// Its HTTP address (health, and the OpenAI door under `/v1`).
    pub http: SocketAddr,
    /// Its core.
    pub handles: Handles,
    /// A gRPC client connected to it.
    pub client: ApiGatewayClient<Channel>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), automation_api_gateway::Error>>,
}

impl Gateway {
    /// Starts a gateway with `config` on fresh loopback ports.
    pub async fn start(config: Config) -> Self {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(run(
            config,
            Listeners { grpc, http },
            shutdown.clone(),
            Some(tx),
        ));
        let handles = rx.await.expect("the gateway starts");
        let client = ApiGatewayClient::connect(format!("http://{grpc_addr}"))
            .await
            .unwrap();
        Self {
            grpc: grpc_addr,
            http: http_addr,
            handles,
            client,
            shutdown,
            task,
        }
    }

    /// The OpenAI door's base URL, as an OpenAI SDK takes it.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.http)
    }

    /// Shuts down and waits for the end.
    pub async fn stop(self) {
        self.shutdown.cancel();
        within("shutdown", self.task).await.unwrap().unwrap();
    }
}

/// Runs `scenario` of `tests/openai/client.py` (the real `openai` package)
/// against the gateway's HTTP door with `token` as the API key, and returns
/// the JSON it prints.
pub async fn openai_sdk(gw: &Gateway, scenario: &str, token: &str) -> serde_json::Value {
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = crate_dir.join("../../.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make tools` to create the project's Python \
         environment with the openai package (scripts/requirements-test.txt)",
        python.display()
    );
    let mut command = std::process::Command::new(python);
    command
        .arg(crate_dir.join("tests/openai/client.py"))
        .args([scenario, &gw.base_url(), token])
        // The door is on loopback: no proxy from the environment applies.
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY");
    let output = within(
        scenario,
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .unwrap()
    .expect("run python");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'openai'"),
        "the openai package is missing: run `make tools` ({stderr})"
    );
    assert!(output.status.success(), "{scenario} failed: {stderr}");
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{scenario} printed no JSON ({e}): {stderr}"))
}
