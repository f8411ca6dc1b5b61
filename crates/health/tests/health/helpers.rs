//! `TestApp`: a checker served on `127.0.0.1:0` over HTTP and gRPC, and the
//! clients to ask it.

use std::net::SocketAddr;
use std::time::Duration;

use automation_health::HealthChecker;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The longest any test may take before it counts as hung.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How soon a readiness change must show on the gRPC health service. The
/// tests use an interval of an hour, so only the push path can meet this.
pub const PROMPTLY: Duration = Duration::from_millis(500);
/// An interval no test waits for.
pub const NEVER: Duration = Duration::from_secs(3600);

/// Runs a test body, failing it instead of hanging.
pub async fn within<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test hung")
}

/// An HTTP answer: status code and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub code: u16,
    pub body: Value,
}

/// A checker served over HTTP and gRPC on loopback.
pub struct TestApp {
    http: SocketAddr,
    grpc: HealthClient<Channel>,
    servers: CancellationToken,
}

impl TestApp {
    pub async fn spawn(checker: &HealthChecker) -> Self {
        let servers = CancellationToken::new();

        let http_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let http = http_listener.local_addr().expect("http address");
        let admin = axum::serve(http_listener, checker.router())
            .with_graceful_shutdown(servers.clone().cancelled_owned());
        tokio::spawn(admin.into_future());

        let grpc_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let grpc_addr = grpc_listener.local_addr().expect("grpc address");
        let grpc_server = Server::builder()
            .add_service(checker.grpc_service())
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(grpc_listener),
                servers.clone().cancelled_owned(),
            );
        tokio::spawn(grpc_server);
        // tonic-health's generated client has no `connect`: dial the channel here.
        let channel = Endpoint::from_shared(format!("http://{grpc_addr}"))
            .expect("grpc endpoint")
            .connect()
            .await
            .expect("connect grpc");
        let grpc = HealthClient::new(channel);

        Self {
            http,
            grpc,
            servers,
        }
    }

    /// `GET path` over a fresh connection, the way a kubelet probe does it.
    pub async fn get(&self, path: &str) -> Answer {
        let mut stream = TcpStream::connect(self.http).await.expect("connect http");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.http
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut raw = String::new();
        stream
            .read_to_string(&mut raw)
            .await
            .expect("read response");
        let (head, body) = raw.split_once("\r\n\r\n").expect("response has a head");
        let code = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("status line has a code");
        let body = serde_json::from_str(body).expect("body is JSON");
        Answer { code, body }
    }

    /// `grpc.health.v1.Health/Check` for `service`.
    pub async fn grpc_status(&self, service: &str) -> ServingStatus {
        let answer = self
            .grpc
            .clone()
            .check(request(service))
            .await
            .expect("health check answers");
        serving_status(answer.get_ref())
    }

    /// `grpc.health.v1.Health/Watch` for `service`.
    pub async fn grpc_watch(&self, service: &str) -> Streaming<HealthCheckResponse> {
        self.grpc
            .clone()
            .watch(request(service))
            .await
            .expect("health watch answers")
            .into_inner()
    }

    /// Waits (at most `limit`) until `service` reports `expected` over gRPC.
    pub async fn grpc_becomes(&self, service: &str, expected: ServingStatus, limit: Duration) {
        let polling = async {
            while self.grpc_status(service).await != expected {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(limit, polling)
            .await
            .unwrap_or_else(|_| panic!("{service:?} did not become {expected:?} within {limit:?}"));
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.servers.cancel();
    }
}

/// The next status a gRPC watch reports, waiting at most `limit`.
pub async fn next_status(
    watch: &mut Streaming<HealthCheckResponse>,
    limit: Duration,
) -> ServingStatus {
    let next = tokio::time::timeout(limit, watch.message())
        .await
        .unwrap_or_else(|_| panic!("no status within {limit:?}"))
        .expect("watch stream healthy")
        .expect("watch stream open");
    serving_status(&next)
}

/// Waits (at most `limit`) until `done` holds for the checker's report.
pub async fn report_becomes(
    checker: &HealthChecker,
    limit: Duration,
    done: impl Fn(&automation_health::HealthReport) -> bool,
) {
    let polling = async {
        while !done(&checker.report()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(limit, polling)
        .await
        .unwrap_or_else(|_| panic!("report still {:?} after {limit:?}", checker.report()));
}

fn request(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

fn serving_status(answer: &HealthCheckResponse) -> ServingStatus {
    ServingStatus::try_from(answer.status).expect("a known serving status")
}
