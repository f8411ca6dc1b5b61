//! The DeepSeek key never shows: every log line of the process (at trace
//! level, the libraries' included) and every error text a client sees are
//! checked for it, across answers, retries, upstream errors that echo the
//! key, stalls and timeouts.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use automation_api_gateway::testing::{FakeUpstream, Reply, Sse, answer, chunk};
use automation_api_gateway::upstream::ApiKey;
use automation_api_gateway::{Config, run};
use automation_collector::testing::within;
use automation_proto::v1::api_gateway_client::ApiGatewayClient;
use automation_proto::v1::{ChatMessage, ChatRequest};
use automation_telemetry::serve::Listeners;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const KEY: &str = "sk-SECRET-7f3a9c1e5b2d4f60";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_key_is_in_no_log_line_and_no_error() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();

    let upstream = FakeUpstream::start().await;
    let echo = format!(
        r#"{{"error":{{"message":"Authentication Fails, Your api key: {KEY} is invalid"}}}}"#
    );
    upstream.push(answer("fine", 1, 2, 3));
    upstream.push(Reply::Status {
        status: 401,
        retry_after: None,
        body: echo.clone(),
    });
    upstream.push(Reply::Status {
        status: 429,
        retry_after: Some("0".into()),
        body: echo.clone(),
    });
    upstream.push(Reply::Status {
        status: 503,
        retry_after: None,
        body: echo.clone(),
    });
    upstream.push(Reply::Status {
        status: 400,
        retry_after: None,
        body: echo.clone(),
    });
    upstream.push(Reply::Stream(vec![
        Sse::Data(chunk("a")),
        Sse::Pause(Duration::from_secs(5)),
    ]));
    let mut config = Config::new(
        "secrets",
        &upstream.base_url(),
        ApiKey::value(KEY.to_owned()),
    );
    config.shutdown_delay = Duration::ZERO;
    config.upstream.max_attempts = 2;
    config.upstream.backoff_base = Duration::from_millis(5);
    config.upstream.idle_timeout = Duration::from_millis(300);
    config.upstream_check_interval = Duration::from_millis(50);
    config.client_rate = None;
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(run(
        config,
        Listeners { grpc, http },
        shutdown.clone(),
        Some(tx),
    ));
    rx.await.unwrap();
    let mut client = ApiGatewayClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let ask = || ChatRequest {
        messages: vec![ChatMessage {
            role: "user".into(),
            content: "hi".into(),
            name: String::new(),
        }],
        ..ChatRequest::default()
    };
    let mut errors = Vec::new();
    for _ in 0..5 {
        if let Err(status) = within("a call", client.chat_completion(ask())).await {
            errors.push(format!("{status:?}"));
        }
    }
    let mut stream = client
        .stream_chat_completion(ask())
        .await
        .unwrap()
        .into_inner();
    loop {
        match within("a chunk", stream.message()).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(status) => {
                errors.push(format!("{status:?}"));
                break;
            }
        }
    }
    upstream.fail_models(401);
    tokio::time::sleep(Duration::from_millis(200)).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();

    assert!(errors.len() >= 4, "{errors:#?}");
    for error in &errors {
        assert!(!error.contains(KEY), "the key is in an error: {error}");
        assert!(
            !error.contains("7f3a9c1e5b2d4f60"),
            "part of the key is in an error: {error}"
        );
    }
    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(logs.lines().count() > 20, "logs were captured:\n{logs}");
    for line in logs.lines() {
        assert!(
            !line.contains("7f3a9c1e5b2d4f60"),
            "the key is in a log line: {line}"
        );
    }
}
