//! Tracing across processes: `automationctl chat` against the
//! `automation-stack` binary (the gateway pointed at a local fake DeepSeek),
//! both exporting to an in-test OTLP receiver. One chat is one trace from
//! automationctl through the gateway to the upstream attempt, the same
//! trace id reaches DeepSeek in `traceparent` and appears in the stack's
//! JSON logs. The test-watcher's explanation and every reporter push carry
//! their traces too, and a caller's `traceparent` at the OpenAI-compatible
//! door is continued. An export endpoint that never answers holds no
//! request up, and the spans it cannot take are counted.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use automation_testkit::upstream::FakeUpstream;
use automation_testkit::{Samples, http_get};
use common::process::StackProcess;
use common::traces::{Received, TraceReceiver};
use common::{binary, repository, until};

/// `automationctl chat <prompt>` against `stack`'s gateway, exporting its
/// spans to `otlp`.
async fn chat(stack: &StackProcess, otlp: &str, prompt: &str) -> Output {
    let (bin, gateway, otlp, prompt) = (
        binary("automationctl"),
        format!("--gateway=http://{}", stack.gateway),
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

/// The stack, exporting its spans to `otlp` over gRPC every 100 ms.
async fn stack(
    root: &Path,
    upstream: &FakeUpstream,
    otlp: &str,
    extra: &[(&str, &str)],
) -> StackProcess {
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    env.extend_from_slice(extra);
    StackProcess::start(binary("automation-stack"), root, upstream, &env).await
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
    let stack = stack(repo.path(), &upstream, &otlp, &[]).await;

    let chat = chat(&stack, &otlp, "Say hello").await;
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

    // DeepSeek was called within the same trace, from the attempt's span
    // (the watcher may ask for an explanation too, in a trace of its own).
    let sent: Vec<String> = upstream
        .requests()
        .into_iter()
        .map(|r| r.traceparent)
        .filter(|t| t.contains(&root.trace_id))
        .collect();
    assert_eq!(
        sent,
        [format!("00-{}-{}-01", root.trace_id, attempt.span_id)]
    );

    // The stack's JSON log lines of that call carry its trace id.
    let lines = stack.log();
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
    let export_timeout = Duration::from_secs(60);
    let stack = stack(
        repo.path(),
        &upstream,
        &otlp,
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
        let chat = chat(&stack, &otlp, "Say hello").await;
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

/// The spans of `trace`.
fn of_trace(spans: &[Received], trace: &str) -> Vec<Received> {
    spans
        .iter()
        .filter(|s| s.trace_id == trace)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explanations_pushes_and_the_openai_door_carry_their_traces() {
    let repo = repository();
    let upstream = FakeUpstream::start().await;
    upstream.record_requests(true);
    let (receiver, otlp) = TraceReceiver::start().await;
    let otlp = format!("http://{otlp}");
    // The watcher runs the failing tests at once and asks for an explanation.
    let stack = stack(repo.path(), &upstream, &otlp, &[("RUN_ON_START", "true")]).await;

    // A caller of the OpenAI-compatible door with its own trace.
    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let body = r#"{"model":"deepseek-chat","messages":[{"role":"user","content":"hi"}]}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n\
         traceparent: 00-{trace}-{parent}-01\r\ntracestate: caller=secret\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut door = tokio::net::TcpStream::connect(stack.gateway_http)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut door, request.as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut door, &mut answer)
        .await
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{}",
        answer.lines().next().unwrap_or("")
    );

    until("the three traces", Duration::from_secs(30), async || {
        let spans = receiver.spans();
        let explained = spans.iter().filter(|s| s.name == "explain").any(|e| {
            of_trace(&spans, &e.trace_id)
                .iter()
                .any(|s| s.name == "upstream.attempt")
        });
        let pushed = spans.iter().filter(|s| s.name == "reporter.push").any(|p| {
            spans
                .iter()
                .any(|s| s.parent_span_id == p.span_id && s.name == "automation.v1.Collector/Push")
        });
        let door = of_trace(&spans, trace)
            .iter()
            .any(|s| s.name == "upstream.attempt");
        (explained && pushed && door, spans.len())
    })
    .await;

    // test-watcher → api-gateway: the explanation's trace holds the
    // gateway's unary call under the explain span.
    let spans = receiver.spans();
    let explain = spans
        .iter()
        .find(|e| {
            e.name == "explain"
                && of_trace(&spans, &e.trace_id)
                    .iter()
                    .any(|s| s.name == "upstream.attempt")
        })
        .unwrap();
    let explained = of_trace(&spans, &explain.trace_id);
    let call = one(&explained, "the gateway's request", |s| {
        s.name == "automation.v1.ApiGateway/ChatCompletion"
    });
    assert_eq!(call.parent_span_id, explain.span_id, "{call:#?}");

    // The OpenAI door continued the caller's trace, and passed it upstream.
    let continued = of_trace(&spans, trace);
    let served = one(&continued, "the door's request span", |s| s.name == "POST");
    assert_eq!(served.parent_span_id, parent, "{served:#?}");
    assert_eq!(served.attribute("url.path"), Some("/v1/chat/completions"));
    assert_eq!(served.attribute("http.response.status_code"), Some("200"));
    // The caller's trace reached DeepSeek; its tracestate did not.
    let sent: Vec<_> = upstream
        .requests()
        .into_iter()
        .filter(|r| r.traceparent.starts_with(&format!("00-{trace}-")))
        .collect();
    assert_eq!(sent.len(), 1, "DeepSeek never saw the caller's trace");
    assert_eq!(sent[0].tracestate, "");
}
