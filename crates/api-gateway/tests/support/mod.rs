//! A gateway on loopback ports for the door tests, in front of a fake
//! upstream, optionally reporting to a real collector.

#![allow(dead_code, reason = "each test binary uses a part of these helpers")]

use std::net::SocketAddr;
use std::time::Duration;

use automation_api_gateway::upstream::ApiKey;
use automation_api_gateway::{Config, Handles, start};
use automation_proto::v1::api_gateway_client::ApiGatewayClient;
use automation_testkit::service::{self, Service};
use automation_testkit::upstream::FakeUpstream;
use automation_testkit::{TestCollector, within};
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
    config.service.shutdown_delay = Duration::ZERO;
    config.upstream.backoff_base = Duration::from_millis(10);
    config.upstream.backoff_max = Duration::from_millis(50);
    config.upstream.first_token_timeout = Duration::from_secs(5);
    config.upstream.idle_timeout = Duration::from_millis(500);
    config.client_rate = None;
    config
}

/// Reports to `collector`, quickly.
pub fn reporting(config: &mut Config, collector: &TestCollector) {
    config.service.reporter = Some(collector.reporter("api-gateway", "gw-test"));
}

/// A running gateway.
pub struct Gateway {
    /// Its gRPC address.
    pub grpc: SocketAddr,
    /// Its HTTP address (health, and the OpenAI door under `/v1`).
    pub http: SocketAddr,
    /// A gRPC client connected to it.
    pub client: ApiGatewayClient<Channel>,
    service: Service<Handles, automation_api_gateway::Error>,
}

impl std::ops::Deref for Gateway {
    type Target = Service<Handles, automation_api_gateway::Error>;

    fn deref(&self) -> &Self::Target {
        &self.service
    }
}

impl Gateway {
    /// Starts a gateway with `config` on fresh loopback ports.
    pub async fn start(config: Config) -> Self {
        let service = service::start(|listeners, shutdown| start(config, listeners, shutdown))
            .await
            .expect("the gateway starts");
        let client = ApiGatewayClient::connect(service.endpoint()).await.unwrap();
        Self {
            grpc: service.grpc,
            http: service.http,
            client,
            service,
        }
    }

    /// The OpenAI door's base URL, as an OpenAI SDK takes it.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.http)
    }

    /// Shuts down and waits for the end.
    pub async fn stop(self) {
        service::stop(self.service).await.unwrap();
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
