//! Tracing across processes: `automationctl chat` against the
//! `automation-stack` binary (the gateway pointed at a local fake DeepSeek),
//! both exporting to an in-test OTLP receiver. One chat is one trace from
//! automationctl through the gateway to the upstream attempt, the same
//! trace id reaches DeepSeek in `traceparent` and appears in the stack's
//! JSON logs. An export endpoint that never answers holds no request up,
//! and the spans it cannot take are counted.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use automation_api_gateway::testing::FakeUpstream;
use automation_collector::testing::{Samples, http_get};
use common::traces::{Received, TraceReceiver};
use common::{binary, free_port, repository, until};

/// The stack binary, killed when dropped.
struct Stack {
    child: Child,
    gateway: SocketAddr,
    gateway_http: SocketAddr,
    collector_http: SocketAddr,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Stack {
    /// Starts the stack over `root`, exporting spans to `otlp`, writing its
    /// JSON logs to `log`.
    async fn start(
        root: &Path,
        upstream: &FakeUpstream,
        otlp: &str,
        log: &Path,
        extra: &[(&str, &str)],
    ) -> Self {
        let key = root.join(".deepseek-key");
        std::fs::write(&key, "sk-trace\n").unwrap();
        let ports: Vec<u16> = (0..8).map(|_| free_port()).collect();
        let at = |port: u16| -> SocketAddr { format!("127.0.0.1:{port}").parse().unwrap() };
        let names = [
            "COLLECTOR_GRPC_LISTEN",
            "COLLECTOR_HTTP_LISTEN",
            "WATCHER_GRPC_LISTEN",
            "WATCHER_HTTP_LISTEN",
            "AUDIT_GRPC_LISTEN",
            "AUDIT_HTTP_LISTEN",
            "GATEWAY_GRPC_LISTEN",
            "GATEWAY_HTTP_LISTEN",
        ];
        let mut command = Command::new(binary("automation-stack"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("STACK_ROOT", root)
            .env("TEST_COMMAND", "sh run-tests.sh")
            .env("DEEPSEEK_BASE_URL", upstream.base_url())
            .env("DEEPSEEK_API_KEY_FILE", &key)
            .env("COLLECTOR_OTLP_GRPC_LISTEN", "off")
            .env("COLLECTOR_OTLP_HTTP_LISTEN", "off")
            .env("HEARTBEAT_INTERVAL", "200ms")
            .env("SHUTDOWN_DELAY", "0s")
            .env("LOG_FORMAT", "json")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .envs(
                names
                    .iter()
                    .zip(&ports)
                    .map(|(name, port)| (*name, at(*port).to_string())),
            )
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        let stack = Self {
            child: command.spawn().unwrap(),
            gateway: at(ports[6]),
            gateway_http: at(ports[7]),
            collector_http: at(ports[1]),
        };
        let ready = stack.gateway_http;
        until(
            "the gateway is ready",
            Duration::from_secs(60),
            async || {
                let up = tokio::net::TcpStream::connect(ready).await.is_ok()
                    && http_get(ready, "/ready").await.0 == 200;
                (up, ())
            },
        )
        .await;
        stack
    }

    /// `automationctl chat <prompt>`, exporting its spans to `otlp`.
    async fn chat(&self, otlp: &str, prompt: &str) -> Output {
        let (bin, gateway, otlp, prompt) = (
            binary("automationctl"),
            format!("--gateway=http://{}", self.gateway),
            otlp.to_owned(),
            prompt.to_owned(),
        );
        tokio::task::spawn_blocking(move || {
            Command::new(bin)
                .args([gateway.as_str(), "chat", prompt.as_str()])
                .env_remove("AUTOMATION_TOKEN")
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
                .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    }
}

fn one<'a>(spans: &'a [Received], what: &str, matches: impl Fn(&Received) -> bool) -> &'a Received {
    let found: Vec<&Received> = spans.iter().filter(|s| matches(s)).collect();
    assert_eq!(found.len(), 1, "{what}: {found:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_chat_is_one_trace_from_automationctl_to_the_upstream() {
    let repo = repository();
    let upstream = FakeUpstream::start().await;
    upstream.record_requests(true);
    let (receiver, otlp) = TraceReceiver::start().await;
    let otlp = format!("http://{otlp}");
    let log = repo.path().join(".stack.log");
    let stack = Stack::start(repo.path(), &upstream, &otlp, &log, &[]).await;

    let chat = stack.chat(&otlp, "Say hello").await;
    assert!(
        chat.status.success(),
        "{}",
        String::from_utf8_lossy(&chat.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&chat.stdout).trim(), "Hello!");

    // automationctl's command span is the root; its trace holds the
    // gateway's request span, the chat and the upstream attempt.
    let spans = until("the chat's spans", Duration::from_secs(30), async || {
        let spans = receiver.spans();
        let root = spans
            .iter()
            .find(|s| s.service == "automationctl" && s.name == "automationctl chat");
        let done = root.is_some_and(|root| {
            spans
                .iter()
                .any(|s| s.trace_id == root.trace_id && s.name == "upstream.attempt")
        });
        (done, spans)
    })
    .await;
    let root = one(&spans, "automationctl's span", |s| {
        s.name == "automationctl chat"
    });
    assert_eq!(root.parent_span_id, "", "{root:#?}");
    let trace: Vec<Received> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .cloned()
        .collect();
    let request = one(&trace, "the gateway's request span", |s| {
        s.name == "automation.v1.ApiGateway/StreamChatCompletion"
    });
    assert_eq!(request.service, "automation-stack");
    assert_eq!(request.parent_span_id, root.span_id, "{request:#?}");
    let call = one(&trace, "the chat span", |s| s.name == "chat");
    assert_eq!(call.parent_span_id, request.span_id, "{call:#?}");
    assert_eq!(
        call.attribute("gateway.status"),
        Some("API_STATUS_OK"),
        "{call:#?}"
    );
    let attempt = one(&trace, "the upstream attempt", |s| {
        s.name == "upstream.attempt"
    });
    assert_eq!(attempt.parent_span_id, call.span_id, "{attempt:#?}");
    assert_eq!(attempt.attribute("attempt"), Some("1"));
    assert_eq!(attempt.attribute("http.response.status_code"), Some("200"));

    // DeepSeek was called with the same trace, from the attempt's span.
    let sent = upstream.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].traceparent,
        format!("00-{}-{}-01", root.trace_id, attempt.span_id)
    );

    // The stack's JSON log lines of that call carry its trace id.
    let lines = std::fs::read_to_string(&log).unwrap();
    let traced: Vec<serde_json::Value> = lines
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["trace_id"] == root.trace_id.as_str())
        .collect();
    assert!(
        traced
            .iter()
            .any(|line| line["message"] == "chat call finished"),
        "no log line of the call carries trace id {}",
        root.trace_id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_endpoint_that_never_answers_holds_no_request_up() {
    let repo = repository();
    let upstream = FakeUpstream::start().await;
    // Accepts connections and never says a word: every export waits out
    // its timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let log = repo.path().join(".stack.log");
    let export_timeout = Duration::from_secs(60);
    let stack = Stack::start(
        repo.path(),
        &upstream,
        &otlp,
        &log,
        &[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "8"),
        ],
    )
    .await;

    // Each chat is answered while the exports hang: were a request waiting
    // on the export, it would take the export's 60 s timeout.
    for n in 0..5 {
        let started = Instant::now();
        let chat = stack.chat(&otlp, "Say hello").await;
        assert!(
            chat.status.success(),
            "chat {n}: {}",
            String::from_utf8_lossy(&chat.stderr)
        );
        assert!(
            started.elapsed() < export_timeout / 2,
            "chat {n} waited on the export"
        );
    }
    // The queue of 8 filled up behind the hung export: the spans it could
    // not take are counted, and the collector shows it.
    let collector = stack.collector_http;
    until(
        "dropped spans counted",
        Duration::from_secs(30),
        async || {
            let (_, text) = http_get(collector, "/metrics").await;
            let m = Samples::parse(&text);
            let dropped = m.get(
                "automation_trace_spans_dropped_total",
                &[("component", "api-gateway")],
            );
            (dropped.is_some_and(|d| d > 0.0), dropped)
        },
    )
    .await;
}
