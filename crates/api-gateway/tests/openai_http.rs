//! The OpenAI-compatible door spoken to as curl would: bad bodies, sizes,
//! paths and methods, limits and upstream failures as OpenAI-shaped JSON
//! errors with the right HTTP status, and streams that end or break.

mod support;

use std::time::Duration;

use automation_api_gateway::upstream::ApiKey;
use automation_testkit::upstream::{FakeUpstream, Reply, Sse, chunk};
use automation_testkit::{Samples, TestCollector, http_get, within};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use support::{Gateway, config, reporting};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A small valid request.
fn hello(stream: bool) -> Value {
    json!({"model": "deepseek-chat", "stream": stream,
        "messages": [{"role": "user", "content": "hello"}]})
}

/// `POST /v1/chat/completions` with `body` as it is: the status, headers
/// and body text.
async fn post(gw: &Gateway, body: impl Into<reqwest::Body>) -> (StatusCode, HeaderMap, String) {
    let response = within(
        "a POST",
        reqwest::Client::new()
            .post(format!("{}/chat/completions", gw.base_url()))
            .header("content-type", "application/json")
            .body(body)
            .send(),
    )
    .await
    .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (
        status,
        headers,
        within("the body", response.text()).await.unwrap(),
    )
}

/// The `error` object of an error answer, checked to be OpenAI-shaped.
fn error_of(status: StatusCode, headers: &HeaderMap, body: &str) -> Value {
    assert_eq!(
        headers["content-type"], "application/json",
        "{status} {body}"
    );
    let value: Value = serde_json::from_str(body).unwrap();
    let error = value["error"].clone();
    for field in ["message", "type", "param", "code"] {
        assert!(error.get(field).is_some(), "no {field}: {body}");
    }
    error
}

fn labels(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    automation_testkit::series("api-gateway", "gw-test", extra)
}

#[tokio::test]
async fn malformed_json_and_wrong_types_are_400_naming_the_field_and_counted() {
    let collector = TestCollector::start(automation_collector::Config::new("c")).await;
    let upstream = FakeUpstream::start().await;
    let mut c = config(&upstream);
    reporting(&mut c, &collector);
    let gw = Gateway::start(c).await;
    let cases = [
        ("{\"messages\": [".to_owned(), Value::Null, "not valid JSON"),
        (
            json!({"messages": []}).to_string(),
            Value::Null,
            "messages is empty",
        ),
        (
            json!({"model": "m"}).to_string(),
            json!("messages"),
            "messages: is required",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"})
                .to_string(),
            json!("temperature"),
            "temperature: expected a number, got a string",
        ),
        (
            json!({"messages": [{"role": "user", "content": {"text": "x"}}]}).to_string(),
            json!("messages[0].content"),
            "expected a string or an array of text parts, got an object",
        ),
        (
            json!({"messages": [{"role": "robot", "content": "x"}]}).to_string(),
            Value::Null,
            "messages[0].role \"robot\" is not one of",
        ),
    ];
    for (body, param, text) in &cases {
        let (status, headers, answer) = post(&gw, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let error = error_of(status, &headers, &answer);
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["code"], "invalid_request");
        assert_eq!(&error["param"], param, "{answer}");
        assert!(
            error["message"].as_str().unwrap().contains(text),
            "{answer}"
        );
    }
    assert!(upstream.requests().is_empty(), "nothing went upstream");
    // Counted as gRPC's invalid calls are.
    collector
        .eventually("the refusals counted", |m: &Samples| {
            m.get(
                "deepseek_api_calls_total",
                &labels(&[("model", "other"), ("status", "invalid")]),
            )
            .unwrap_or(0.0)
                + m.get(
                    "deepseek_api_calls_total",
                    &labels(&[("model", "deepseek-chat"), ("status", "invalid")]),
                )
                .unwrap_or(0.0)
                == cases.len() as f64
        })
        .await;
    gw.stop().await;
    collector.stop().await;
}

#[tokio::test]
async fn an_oversized_body_is_413_whether_declared_or_streamed() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(config(&upstream)).await;
    let huge =
        json!({"messages": [{"role": "user", "content": "x".repeat(5 * 1024 * 1024)}]}).to_string();
    let (status, headers, body) = post(&gw, huge.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let error = error_of(status, &headers, &body);
    assert_eq!(error["code"], "request_too_large");
    assert!(
        error["message"].as_str().unwrap().contains("4194304"),
        "{body}"
    );
    // Without a Content-Length: refused once the limit is passed.
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = huge
        .into_bytes()
        .chunks(64 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let streamed = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
    let (status, _, body) = post(&gw, streamed).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(upstream.requests().is_empty());
    let (status, _, body) = post(&gw, hello(false).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    gw.stop().await;
}

#[tokio::test]
async fn a_body_that_never_arrives_whole_is_408() {
    let upstream = FakeUpstream::start().await;
    let mut c = config(&upstream);
    c.service.connections.request_body_timeout = Duration::from_millis(300);
    let gw = Gateway::start(c).await;
    let mut stream = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    stream
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"messages\":",
        )
        .await
        .unwrap();
    let mut answer = vec![0; 4096];
    let n = within("the answer", stream.read(&mut answer))
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_body_timeout"), "{answer}");
    gw.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_openai_shape_beside_health() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(config(&upstream)).await;
    let client = reqwest::Client::new();
    let response = client
        .get(format!("{}/embeddings", gw.base_url()))
        .send()
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    assert_eq!(status, StatusCode::NOT_FOUND);
    let error = error_of(status, &headers, &response.text().await.unwrap());
    assert_eq!(error["code"], "not_found");
    let response = client
        .get(format!("{}/chat/completions", gw.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = http_get(gw.http, "/health").await;
    assert_eq!(status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn a_client_over_its_rate_limit_gets_429_with_retry_after() {
    let upstream = FakeUpstream::start().await;
    let mut c = config(&upstream);
    c.client_rate = Some((0.5, 1));
    let gw = Gateway::start(c).await;
    let (status, _, _) = post(&gw, hello(false).to_string()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, body) = post(&gw, hello(true).to_string()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let error = error_of(status, &headers, &body);
    assert_eq!(
        (&error["type"], &error["code"]),
        (&json!("rate_limit_error"), &json!("client_rate_limit"))
    );
    // About two seconds: whole seconds rounded up, and milliseconds.
    assert_eq!(headers["retry-after"], "2");
    let ms: u64 = headers["retry-after-ms"].to_str().unwrap().parse().unwrap();
    assert!((1_001..=2_000).contains(&ms), "{ms}");
    assert_eq!(upstream.requests().len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn upstream_failures_map_to_http_statuses() {
    let status_reply = |status: u16, body: &str| Reply::Status {
        status,
        retry_after: None,
        body: body.to_owned(),
    };
    let cases = [
        (
            status_reply(401, r#"{"error":{"message":"bad key"}}"#),
            403,
            "permission_error",
            "unauthorized",
        ),
        (
            status_reply(402, r#"{"error":{"message":"Insufficient Balance"}}"#),
            402,
            "insufficient_quota",
            "payment_required",
        ),
        (
            status_reply(400, r#"{"error":{"message":"Model Not Exist"}}"#),
            400,
            "invalid_request_error",
            "bad_request",
        ),
        (status_reply(503, ""), 502, "server_error", "server_error"),
        (
            Reply::Stream(vec![Sse::Pause(Duration::from_secs(30))]),
            504,
            "server_error",
            "timeout",
        ),
    ];
    for (reply, code, kind, error_code) in cases {
        let upstream = FakeUpstream::start().await;
        upstream.set_default(reply);
        let mut c = config(&upstream);
        c.upstream.max_attempts = 1;
        c.upstream.first_token_timeout = Duration::from_millis(300);
        let gw = Gateway::start(c).await;
        for stream in [false, true] {
            let (status, headers, body) = post(&gw, hello(stream).to_string()).await;
            assert_eq!(status.as_u16(), code, "{body}");
            let error = error_of(status, &headers, &body);
            assert_eq!(
                (&error["type"], &error["code"]),
                (&json!(kind), &json!(error_code)),
                "{body}"
            );
        }
        gw.stop().await;
        upstream.stop().await;
    }
    // No key configured: the gateway cannot serve.
    let upstream = FakeUpstream::start().await;
    let mut c = config(&upstream);
    c.key = ApiKey::none();
    let gw = Gateway::start(c).await;
    let (status, headers, body) = post(&gw, hello(false).to_string()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_of(status, &headers, &body)["code"], "no_key");
    gw.stop().await;
}

#[tokio::test]
async fn an_open_circuit_is_503_with_retry_after() {
    let upstream = FakeUpstream::start().await;
    upstream.set_default(Reply::Status {
        status: 500,
        retry_after: None,
        body: String::new(),
    });
    let mut c = config(&upstream);
    c.upstream.max_attempts = 1;
    c.circuit = (1, Duration::from_secs(60));
    let gw = Gateway::start(c).await;
    let (status, _, _) = post(&gw, hello(false).to_string()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let (status, headers, body) = post(&gw, hello(false).to_string()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_of(status, &headers, &body)["code"], "circuit_open");
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(upstream.requests().len(), 1, "no upstream call while open");
    gw.stop().await;
}

/// The `data:` payloads of an event stream.
fn data_of(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_stream_that_breaks_ends_with_an_error_event_and_no_done() {
    let upstream = FakeUpstream::start().await;
    upstream.push(Reply::Stream(vec![
        Sse::Data(chunk("partial ")),
        Sse::KeepAlive,
        Sse::Pause(Duration::from_secs(30)),
    ]));
    let gw = Gateway::start(config(&upstream)).await;
    let (status, headers, body) = post(&gw, hello(true).to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/event-stream");
    let events = data_of(&body);
    assert_eq!(events.len(), 2, "{body}");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(
        first["choices"][0]["delta"],
        json!({"role": "assistant", "content": "partial "})
    );
    let last: Value = serde_json::from_str(&events[1]).unwrap();
    assert_eq!(last["error"]["code"], "timeout", "{body}");
    assert!(!body.contains("[DONE]"));
    gw.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_a_stream_frees_its_slot_at_once() {
    let upstream = FakeUpstream::start().await;
    upstream.push(Reply::Stream(vec![
        Sse::Data(chunk("first ")),
        Sse::Pause(Duration::from_secs(20)),
        Sse::Data(chunk("never seen")),
    ]));
    let mut c = config(&upstream);
    c.upstream.idle_timeout = Duration::from_secs(30);
    let gw = Gateway::start(c).await;
    let mut response = reqwest::Client::new()
        .post(format!("{}/chat/completions", gw.base_url()))
        .json(&hello(true))
        .send()
        .await
        .unwrap();
    let first = within("the first event", response.chunk())
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("first "));
    assert_eq!(gw.handles.gateway.concurrency.in_flight(), 1);
    drop(response);
    within("the slot freed", async {
        while gw.handles.gateway.concurrency.in_flight() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    gw.stop().await;
}
