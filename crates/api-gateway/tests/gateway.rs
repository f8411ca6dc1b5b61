//! The api-gateway over real sockets, speaking real HTTP to a local fake
//! DeepSeek that each test scripts: answers, streams with keep-alives,
//! 429s, 5xx, stalls, 401/402; client limits and auth; and the figures on a
//! real collector's `/metrics`.

use std::time::Duration;

use automation_api_gateway::upstream::ApiKey;
use automation_proto::v1::{self, ChatChunk, ChatMessage, ChatRequest};
use automation_telemetry::auth::BearerAuth;
use automation_testkit::upstream::{
    FakeUpstream, Reply, Sse, answer, chunk, finish_chunk, reasoning_chunk, usage_chunk,
};
use automation_testkit::{Samples, TestCollector, http_get, within};
use tonic::Code;
use tonic::transport::Channel;

mod support;
use support::{KEY, config, reporting};

use support::Gateway;

impl Gateway {
    async fn chat(&mut self, text: &str) -> Result<v1::ChatResponse, tonic::Status> {
        within("a chat call", self.client.chat_completion(ask(text)))
            .await
            .map(|r| r.into_inner())
    }

    /// Streams a call to its end: the chunks, and the error that ended it.
    async fn stream(&mut self, text: &str) -> (Vec<ChatChunk>, Option<tonic::Status>) {
        let mut stream = match self.client.stream_chat_completion(ask(text)).await {
            Ok(s) => s.into_inner(),
            Err(status) => return (Vec::new(), Some(status)),
        };
        let mut chunks = Vec::new();
        loop {
            match within("the next chunk", stream.message()).await {
                Ok(Some(chunk)) => chunks.push(chunk),
                Ok(None) => return (chunks, None),
                Err(status) => return (chunks, Some(status)),
            }
        }
    }
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage {
            role: "user".to_owned(),
            content: text.to_owned(),
            ..ChatMessage::default()
        }],
        ..ChatRequest::default()
    }
}

fn usage_of(r: &v1::ChatResponse) -> v1::Usage {
    r.usage.unwrap_or_default()
}

#[tokio::test]
async fn a_plain_answer_with_usage_and_cost() {
    let upstream = FakeUpstream::start().await;
    upstream.push(answer(
        "The tests fail because the parser drops empty input.",
        1_000,
        2_000,
        500,
    ));
    let mut gw = Gateway::start(config(&upstream)).await;
    let response = gw.chat("why?").await.unwrap();
    assert_eq!(
        response.content,
        "The tests fail because the parser drops empty input."
    );
    assert_eq!(response.finish_reason, "stop");
    assert_eq!(response.attempts, 1);
    let usage = usage_of(&response);
    assert_eq!(
        (
            usage.input_cache_hit_tokens,
            usage.input_cache_miss_tokens,
            usage.output_tokens
        ),
        (1_000, 2_000, 500)
    );
    // 1,000 × 0.028 + 2,000 × 0.28 + 500 × 0.42 per million tokens.
    let expected = (1_000.0 * 0.028 + 2_000.0 * 0.28 + 500.0 * 0.42) / 1e6;
    assert!(
        (usage.cost_usd.unwrap() - expected).abs() < 1e-12,
        "{usage:?}"
    );

    // What went upstream: the key, a stream with usage, the messages.
    let sent = upstream.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].authorization, format!("Bearer {KEY}"));
    assert_eq!(sent[0].body["stream"], true);
    assert_eq!(sent[0].body["stream_options"]["include_usage"], true);
    assert_eq!(sent[0].body["model"], "deepseek-chat");
    assert_eq!(sent[0].body["messages"][0]["content"], "why?");
    gw.stop().await;
}

#[tokio::test]
async fn a_stream_with_keep_alives_ends_with_usage_and_finish_reason() {
    let upstream = FakeUpstream::start().await;
    upstream.push(Reply::Stream(vec![
        Sse::KeepAlive,
        Sse::Blank,
        Sse::Data(reasoning_chunk("Think. ")),
        Sse::KeepAlive,
        Sse::Data(chunk("Hel")),
        Sse::Pause(Duration::from_millis(50)),
        Sse::KeepAlive,
        Sse::Data(chunk("lo")),
        Sse::Data(finish_chunk("stop")),
        Sse::Data(usage_chunk(64, 16, 8, 3)),
        Sse::Done,
    ]));
    let mut gw = Gateway::start(config(&upstream)).await;
    let (chunks, error) = gw.stream("hi").await;
    assert!(error.is_none(), "{error:?}");
    let reasoning: String = chunks
        .iter()
        .map(|c| c.reasoning_content.as_str())
        .collect();
    let content: String = chunks.iter().map(|c| c.content.as_str()).collect();
    assert_eq!((reasoning.as_str(), content.as_str()), ("Think. ", "Hello"));
    let last = chunks.last().unwrap();
    assert_eq!(last.finish_reason, "stop");
    let usage = last.usage.unwrap();
    assert_eq!(
        (
            usage.input_cache_hit_tokens,
            usage.input_cache_miss_tokens,
            usage.output_tokens,
            usage.reasoning_tokens
        ),
        (64, 16, 8, 3)
    );
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c.usage.is_none()));
    gw.stop().await;
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried() {
    let upstream = FakeUpstream::start().await;
    upstream.push(Reply::Status {
        status: 429,
        retry_after: Some("1".to_owned()),
        body: r#"{"error":{"message":"Rate limit reached"}}"#.to_owned(),
    });
    upstream.push(answer("ok", 0, 10, 2));
    let mut gw = Gateway::start(config(&upstream)).await;
    let started = std::time::Instant::now();
    let response = gw.chat("again").await.unwrap();
    assert_eq!(response.content, "ok");
    assert_eq!(response.attempts, 2);
    assert_eq!(upstream.requests().len(), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After honoured"
    );
    gw.stop().await;
}

#[tokio::test]
async fn repeated_503s_open_the_circuit() {
    let upstream = FakeUpstream::start().await;
    upstream.set_default(Reply::Status {
        status: 503,
        retry_after: None,
        body: r#"{"error":{"message":"Service Unavailable"}}"#.to_owned(),
    });
    let mut c = config(&upstream);
    c.upstream.max_attempts = 2;
    c.circuit = (3, Duration::from_secs(60));
    let mut gw = Gateway::start(c).await;
    for _ in 0..3 {
        let error = gw.chat("x").await.unwrap_err();
        assert_eq!(error.code(), Code::Unavailable, "{error:?}");
    }
    assert_eq!(upstream.requests().len(), 6, "two attempts per call");
    let fast = gw.chat("x").await.unwrap_err();
    assert_eq!(fast.code(), Code::Unavailable);
    assert!(fast.message().contains("fails fast"), "{}", fast.message());
    assert!(fast.metadata().get("retry-after-ms").is_some());
    assert_eq!(upstream.requests().len(), 6, "no upstream call while open");
    assert!(gw.handles.gateway.circuit.is_open());
    gw.stop().await;
}

#[tokio::test]
async fn unauthorized_and_payment_required_say_which() {
    let upstream = FakeUpstream::start().await;
    upstream.push(Reply::Status {
        status: 401,
        retry_after: None,
        body: format!(
            r#"{{"error":{{"message":"Authentication Fails, Your api key: {KEY} is invalid"}}}}"#
        ),
    });
    upstream.push(Reply::Status {
        status: 402,
        retry_after: None,
        body: r#"{"error":{"message":"Insufficient Balance"}}"#.to_owned(),
    });
    upstream.push(Reply::Status {
        status: 400,
        retry_after: None,
        body: r#"{"error":{"message":"Invalid max_tokens value"}}"#.to_owned(),
    });
    let mut gw = Gateway::start(config(&upstream)).await;
    let denied = gw.chat("x").await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("401"), "{}", denied.message());
    assert!(
        !denied.message().contains(KEY),
        "the key leaked: {}",
        denied.message()
    );
    let broke = gw.chat("x").await.unwrap_err();
    assert_eq!(broke.code(), Code::FailedPrecondition);
    assert!(broke.message().contains("402"), "{}", broke.message());
    assert!(broke.message().contains("balance"), "{}", broke.message());
    let invalid = gw.chat("x").await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(
        invalid.message().contains("max_tokens"),
        "{}",
        invalid.message()
    );
    assert_eq!(upstream.requests().len(), 3, "none of these is retried");

    // A request the gateway itself refuses never goes upstream.
    let empty = gw
        .client
        .chat_completion(ChatRequest::default())
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(upstream.requests().len(), 3);
    gw.stop().await;
}

#[tokio::test]
async fn a_stall_after_the_first_token_ends_with_deadline_exceeded() {
    let upstream = FakeUpstream::start().await;
    upstream.push(Reply::Stream(vec![
        Sse::Data(chunk("partial ")),
        Sse::KeepAlive,
        Sse::Pause(Duration::from_millis(300)),
        Sse::KeepAlive,
        Sse::Pause(Duration::from_secs(30)),
    ]));
    let mut gw = Gateway::start(config(&upstream)).await;
    let (chunks, error) = gw.stream("x").await;
    assert_eq!(chunks.len(), 1, "the first token went out");
    let error = error.expect("the stall ends the stream");
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");
    assert_eq!(
        upstream.requests().len(),
        1,
        "never retried after a chunk went out"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_client_over_its_rate_limit_gets_a_retry_hint() {
    let upstream = FakeUpstream::start().await;
    let mut c = config(&upstream);
    c.client_rate = Some((0.5, 2));
    let mut gw = Gateway::start(c).await;
    gw.chat("1").await.unwrap();
    gw.chat("2").await.unwrap();
    let limited = gw.chat("3").await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    let hint: u64 = limited
        .metadata()
        .get("retry-after-ms")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2_000).contains(&hint), "{hint}");
    assert_eq!(upstream.requests().len(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn client_tokens_are_required_when_configured_but_health_stays_open() {
    let upstream = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "client-token-1\n").unwrap();
    let mut c = config(&upstream);
    c.service.auth = BearerAuth::from_file(Some(&tokens)).unwrap();
    let mut gw = Gateway::start(c).await;
    let missing = gw.chat("x").await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    let mut request = tonic::Request::new(ask("x"));
    request
        .metadata_mut()
        .insert("authorization", "Bearer client-token-1".parse().unwrap());
    gw.client.chat_completion(request).await.unwrap();
    let channel = Channel::from_shared(format!("http://{}", gw.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "readiness".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    gw.stop().await;
}

#[tokio::test]
async fn without_a_key_it_is_not_ready_and_says_why() {
    let upstream = FakeUpstream::start().await;
    let mut c = config(&upstream);
    c.key = ApiKey::none();
    let mut gw = Gateway::start(c).await;
    gw.handles.health.check_now().await;
    let (status, body) = http_get(gw.http, "/ready").await;
    assert_eq!(status, 503, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    let error = report["components"]["api_key"]["last_error"]
        .as_str()
        .unwrap();
    assert!(error.contains("DEEPSEEK_API_KEY"), "{error}");
    let refused = gw.chat("x").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("DEEPSEEK_API_KEY"),
        "{}",
        refused.message()
    );
    assert!(upstream.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_failing_upstream_check_shows_as_degraded() {
    let upstream = FakeUpstream::start().await;
    upstream.fail_models(500);
    let mut c = config(&upstream);
    c.upstream_check_interval = Duration::from_millis(100);
    let gw = Gateway::start(c).await;
    let body = within("degraded", async {
        loop {
            gw.handles.health.check_now().await;
            let (status, body) = http_get(gw.http, "/ready").await;
            assert_eq!(
                status, 200,
                "a failing upstream must not make it unready: {body}"
            );
            let report: serde_json::Value = serde_json::from_str(&body).unwrap();
            let upstream = &report["components"]["upstream"];
            if upstream["status"] == "degraded"
                && upstream["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("500"))
            {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        body["components"]["upstream"]["last_error"]
            .as_str()
            .unwrap()
            .contains("500")
    );
    gw.stop().await;
}

#[tokio::test]
async fn models_and_balance() {
    let upstream = FakeUpstream::start().await;
    upstream.set_models(serde_json::json!({"object":"list","data":[
        {"id":"deepseek-chat","object":"model","owned_by":"deepseek"},
        {"id":"deepseek-next","object":"model","owned_by":"deepseek"}]}));
    upstream.set_balance(serde_json::json!({"is_available":true,"balance_infos":[
        {"currency":"USD","total_balance":"12.50","granted_balance":"2.50","topped_up_balance":"10.00"}]}));
    let mut gw = Gateway::start(config(&upstream)).await;
    let models = gw
        .client
        .list_models(v1::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    assert_eq!(models.len(), 2);
    assert!(models[0].configured && models[0].price_output == Some(0.42));
    assert!(!models[1].configured && models[1].price_output.is_none());
    let balance = gw
        .client
        .get_balance(v1::GetBalanceRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(balance.is_available);
    assert_eq!(balance.balances[0].currency, "USD");
    assert_eq!(balance.balances[0].total, 12.5);
    gw.stop().await;
}

fn labels(extra: (&'static str, &'static str)) -> Vec<(&'static str, &'static str)> {
    automation_testkit::series("api-gateway", "gw-test", &[extra])
}

#[tokio::test]
async fn the_collector_shows_tokens_cost_retries_and_rate_limits() {
    let collector = TestCollector::start(automation_collector::Config::new("c")).await;
    let upstream = FakeUpstream::start().await;
    upstream.push(answer("one", 100, 200, 50));
    upstream.push(Reply::Status {
        status: 429,
        retry_after: Some("0".to_owned()),
        body: String::new(),
    });
    upstream.push(Reply::Status {
        status: 502,
        retry_after: None,
        body: String::new(),
    });
    upstream.push(answer("two", 0, 1_000, 10));
    upstream.push(Reply::Status {
        status: 402,
        retry_after: None,
        body: r#"{"error":{"message":"Insufficient Balance"}}"#.to_owned(),
    });
    upstream.set_balance(serde_json::json!({"is_available":true,"balance_infos":[
        {"currency":"USD","total_balance":"7.25","granted_balance":"0","topped_up_balance":"7.25"}]}));
    let mut c = config(&upstream);
    reporting(&mut c, &collector);
    c.models = automation_api_gateway::pricing::Models::new(
        &["deepseek-chat".to_owned()],
        "deepseek-chat=1/2/4",
    )
    .unwrap();
    let mut gw = Gateway::start(c).await;
    gw.chat("a").await.unwrap();
    gw.chat("b").await.unwrap();
    gw.chat("c").await.unwrap_err();
    let mut other = ask("d");
    other.model = "some-new-model".to_owned();
    upstream.push(answer("three", 0, 5, 5));
    gw.client.chat_completion(other).await.unwrap();
    gw.client
        .get_balance(v1::GetBalanceRequest {})
        .await
        .unwrap();

    let m: Samples = collector
        .eventually("four calls", |m| {
            m.get("deepseek_api_calls_total", &{
                let mut l = labels(("model", "other"));
                l.push(("status", "ok"));
                l
            })
            .is_some()
                && m.get("deepseek_api_balance", &labels(("currency", "USD")))
                    .is_some()
        })
        .await;
    let chat = |extra| {
        let mut l = labels(("model", "deepseek-chat"));
        l.push(extra);
        l
    };
    assert_eq!(
        m.value("deepseek_api_calls_total", &chat(("status", "ok"))),
        2.0
    );
    assert_eq!(
        m.value(
            "deepseek_api_calls_total",
            &chat(("status", "payment_required"))
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "deepseek_api_tokens_used_total",
            &chat(("type", "input_cache_hit"))
        ),
        100.0
    );
    assert_eq!(
        m.value(
            "deepseek_api_tokens_used_total",
            &chat(("type", "input_cache_miss"))
        ),
        1_200.0
    );
    assert_eq!(
        m.value("deepseek_api_tokens_used_total", &chat(("type", "output"))),
        60.0
    );
    assert_eq!(
        m.value(
            "deepseek_api_rate_limits_total",
            &labels(("model", "deepseek-chat"))
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "deepseek_api_retries_total",
            &chat(("reason", "rate_limited"))
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "deepseek_api_retries_total",
            &chat(("reason", "server_error"))
        ),
        1.0
    );
    // Cost: (100×1 + 200×2 + 50×4 + 1000×2 + 10×4) / 1e6 USD.
    let spent = m.value(
        "deepseek_api_request_cost_usd_sum",
        &labels(("model", "deepseek-chat")),
    );
    assert!((spent - 2_740.0 / 1e6).abs() < 1e-12, "{spent}");
    assert_eq!(
        m.value(
            "deepseek_api_request_cost_usd_count",
            &labels(("model", "deepseek-chat"))
        ),
        2.0
    );
    // A model outside the configuration is "other", and has no price.
    assert_eq!(
        m.value("deepseek_api_calls_total", &{
            let mut l = labels(("model", "other"));
            l.push(("status", "ok"));
            l
        }),
        1.0
    );
    assert_eq!(
        m.value("deepseek_api_balance", &labels(("currency", "USD"))),
        7.25
    );
    assert_eq!(
        m.value(
            "deepseek_api_circuit_open",
            &labels(("component", "api-gateway"))
        ),
        0.0
    );
    assert_eq!(
        m.value(
            "automation_component_up",
            &labels(("component", "api-gateway"))
        ),
        1.0
    );
    let text = collector.metrics_text().await;
    assert!(!text.contains(KEY), "the key is in /metrics");
    gw.stop().await;
    collector.stop().await;
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
    let mut gw = Gateway::start(c).await;
    let mut stream = gw
        .client
        .stream_chat_completion(ask("x"))
        .await
        .unwrap()
        .into_inner();
    let first = within("the first chunk", stream.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.content, "first ");
    assert_eq!(gw.handles.gateway.concurrency.in_flight(), 1);
    drop(stream);
    within("the slot freed", async {
        while gw.handles.gateway.concurrency.in_flight() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    gw.stop().await;
}

#[tokio::test]
async fn a_long_probe_does_not_keep_the_circuit_closed_to_others() {
    let upstream = FakeUpstream::start().await;
    upstream.push(Reply::Status {
        status: 503,
        retry_after: None,
        body: String::new(),
    });
    let mut c = config(&upstream);
    c.upstream.max_attempts = 1;
    c.upstream.idle_timeout = Duration::from_secs(30);
    c.circuit = (1, Duration::from_millis(200));
    let mut gw = Gateway::start(c).await;
    assert_eq!(gw.chat("x").await.unwrap_err().code(), Code::Unavailable);
    assert!(gw.handles.gateway.circuit.is_open());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The probe: a stream that goes on generating for a while.
    upstream.push(Reply::Stream(vec![
        Sse::Data(chunk("slow ")),
        Sse::Pause(Duration::from_secs(3)),
        Sse::Data(finish_chunk("stop")),
        Sse::Done,
    ]));
    let mut probe = gw
        .client
        .stream_chat_completion(ask("probe"))
        .await
        .unwrap()
        .into_inner();
    within("the probe's first chunk", probe.message())
        .await
        .unwrap()
        .unwrap();
    // Its first chunk proved the upstream healthy: others get through now.
    let other = gw.chat("meanwhile").await.unwrap();
    assert!(!other.content.is_empty());
    assert!(!gw.handles.gateway.circuit.is_open());
    drop(probe);
    gw.stop().await;
}

#[tokio::test]
async fn no_part_of_the_key_survives_a_cut_error_text() {
    let upstream = FakeUpstream::start().await;
    // The key straddles the point where error texts are cut.
    let padding = "x".repeat(495);
    upstream.push(Reply::Status {
        status: 401,
        retry_after: None,
        body: format!(r#"{{"error":{{"message":"{padding}{KEY} is invalid"}}}}"#),
    });
    let mut gw = Gateway::start(config(&upstream)).await;
    let error = gw.chat("x").await.unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    assert!(!error.message().contains(&KEY[..8]), "{}", error.message());
    gw.stop().await;
}

#[tokio::test]
async fn an_oversized_prompt_is_resource_exhausted_and_counted() {
    let collector = TestCollector::start(automation_collector::Config::new("c")).await;
    let upstream = FakeUpstream::start().await;
    let mut c = config(&upstream);
    reporting(&mut c, &collector);
    let mut gw = Gateway::start(c).await;
    let huge = "x".repeat(5 * 1024 * 1024);
    for streaming in [false, true] {
        let refused = if streaming {
            gw.stream(&huge).await.1.expect("refused")
        } else {
            gw.chat(&huge).await.unwrap_err()
        };
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(
            refused.message().contains("4194304"),
            "names the limit: {}",
            refused.message()
        );
    }
    assert!(upstream.requests().is_empty(), "nothing went upstream");
    // The gateway still answers a prompt within the limit.
    gw.chat("small").await.unwrap();
    let errors = |m: &Samples| {
        m.get("deepseek_api_errors_total", &{
            let mut l = labels(("model", "other"));
            l.push(("kind", "request_too_large"));
            l
        })
    };
    let m = collector
        .eventually("the refusals counted", |m| errors(m) == Some(2.0))
        .await;
    assert_eq!(
        m.value("deepseek_api_calls_total", &{
            let mut l = labels(("model", "other"));
            l.push(("status", "invalid"));
            l
        }),
        2.0
    );
    gw.stop().await;
    collector.stop().await;
}

/// Calls `ChatCompletion` presenting `token`.
async fn chat_as(gw: &mut Gateway, token: &str) -> Result<v1::ChatResponse, tonic::Status> {
    let mut request = tonic::Request::new(ask("x"));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    within("a chat call", gw.client.chat_completion(request))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn without_client_tokens_made_up_tokens_share_their_peers_rate_limit() {
    let upstream = FakeUpstream::start().await;
    let mut c = config(&upstream);
    c.client_rate = Some((0.1, 2));
    let mut gw = Gateway::start(c).await;
    chat_as(&mut gw, "made-up-1").await.unwrap();
    chat_as(&mut gw, "made-up-2").await.unwrap();
    // Unverified tokens say nothing about who calls: a new one is no new client.
    for token in ["made-up-3", "made-up-4"] {
        let limited = chat_as(&mut gw, token).await.unwrap_err();
        assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    }
    let limited = gw.chat("no token").await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    assert_eq!(upstream.requests().len(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn with_client_tokens_each_verified_token_has_its_own_rate_limit() {
    let upstream = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "token-a\ntoken-b\n").unwrap();
    let mut c = config(&upstream);
    c.service.auth = BearerAuth::from_file(Some(&tokens)).unwrap();
    c.client_rate = Some((0.1, 2));
    let mut gw = Gateway::start(c).await;
    chat_as(&mut gw, "token-a").await.unwrap();
    chat_as(&mut gw, "token-a").await.unwrap();
    let limited = chat_as(&mut gw, "token-a").await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    // Another verified client on the same address has its own bucket.
    chat_as(&mut gw, "token-b").await.unwrap();
    chat_as(&mut gw, "token-b").await.unwrap();
    assert_eq!(upstream.requests().len(), 4);
    gw.stop().await;
}

/// The call's error, whether it came at once or in the stream.
async fn stream_error(gw: &mut Gateway) -> tonic::Status {
    let (_, error) = gw.stream("x").await;
    error.expect("the stream ends with an error")
}

#[tokio::test]
async fn a_never_ending_data_line_ends_at_the_event_size_limit() {
    let upstream = FakeUpstream::start().await;
    upstream.push(Reply::Stream(vec![
        Sse::Raw("data: ".to_owned()),
        Sse::Endless("x".to_owned()),
    ]));
    upstream.push(Reply::Stream(vec![
        Sse::Data(chunk("a ")),
        Sse::Raw("data: ".to_owned()),
        Sse::Endless("y".to_owned()),
    ]));
    let mut gw = Gateway::start(config(&upstream)).await;
    for expected_chunks in [0, 1] {
        let (chunks, error) = gw.stream("x").await;
        assert_eq!(chunks.len(), expected_chunks);
        let error = error.expect("the stream ends with an error");
        assert_eq!(error.code(), Code::Unavailable, "{error:?}");
        assert!(
            error.message().contains("1048576") && error.message().contains("MAX_SSE_EVENT_BYTES"),
            "names the limit: {}",
            error.message()
        );
    }
    assert_eq!(upstream.requests().len(), 2, "not retried");
    gw.stop().await;
}

#[tokio::test]
async fn a_huge_event_is_refused_naming_the_limit_and_counted() {
    let collector = TestCollector::start(automation_collector::Config::new("c")).await;
    let upstream = FakeUpstream::start().await;
    upstream.push(Reply::Stream(vec![
        Sse::Data(chunk(&"z".repeat(8 * 1024 * 1024))),
        Sse::Data(finish_chunk("stop")),
        Sse::Done,
    ]));
    let mut c = config(&upstream);
    reporting(&mut c, &collector);
    let mut gw = Gateway::start(c).await;
    let error = stream_error(&mut gw).await;
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");
    assert!(error.message().contains("1048576"), "{}", error.message());
    collector
        .eventually("the error counted", |m| {
            m.get("deepseek_api_errors_total", &{
                let mut l = labels(("model", "deepseek-chat"));
                l.push(("kind", "event_too_large"));
                l
            }) == Some(1.0)
        })
        .await;
    gw.stop().await;
    collector.stop().await;
}

#[tokio::test]
async fn an_answer_too_large_for_one_message_is_refused_not_gathered() {
    let collector = TestCollector::start(automation_collector::Config::new("c")).await;
    let upstream = FakeUpstream::start().await;
    // Ten events under the event limit, over 4 MiB together, then more.
    let mut items: Vec<Sse> = (0..10)
        .map(|_| Sse::Data(chunk(&"z".repeat(900 * 1024))))
        .collect();
    items.push(Sse::Endless(format!("data: {}\n\n", chunk("more"))));
    upstream.push(Reply::Stream(items));
    let mut c = config(&upstream);
    reporting(&mut c, &collector);
    let mut gw = Gateway::start(c).await;
    let error = gw.chat("write a lot").await.unwrap_err();
    assert_eq!(error.code(), Code::ResourceExhausted, "{error:?}");
    assert!(
        error.message().contains("StreamChatCompletion"),
        "{error:?}"
    );
    collector
        .eventually("the refusal counted", |m| {
            m.get("deepseek_api_errors_total", &{
                let mut l = labels(("model", "deepseek-chat"));
                l.push(("kind", "answer_too_large"));
                l
            }) == Some(1.0)
        })
        .await;
    gw.stop().await;
    collector.stop().await;
}

#[tokio::test]
async fn deadlines_fire_while_bytes_that_are_no_events_keep_coming() {
    let upstream = FakeUpstream::start().await;
    // Before the first token: keep-alives and blank lines, endlessly.
    upstream.push(Reply::Stream(vec![Sse::Endless(
        ": keep-alive\n\n".to_owned(),
    )]));
    upstream.push(Reply::Stream(vec![Sse::Endless("\n".to_owned())]));
    // After it: the same, and events that carry nothing.
    upstream.push(Reply::Stream(vec![
        Sse::Data(chunk("a ")),
        Sse::Endless(": keep-alive\n\n".to_owned()),
    ]));
    upstream.push(Reply::Stream(vec![
        Sse::Data(chunk("a ")),
        Sse::Endless(format!("data: {}\n\n", serde_json::json!({"choices": []}))),
    ]));
    let mut c = config(&upstream);
    c.upstream.first_token_timeout = Duration::from_secs(1);
    c.upstream.idle_timeout = Duration::from_secs(1);
    c.upstream.max_attempts = 1;
    let mut gw = Gateway::start(c).await;
    for what in [
        "no first token",
        "no first token",
        "no stream event",
        "no stream event",
    ] {
        let started = std::time::Instant::now();
        let error = stream_error(&mut gw).await;
        assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");
        assert!(
            error.message().contains(what),
            "{what}: {}",
            error.message()
        );
        // The upstream would go on for ever: the deadline, not it, ended the call.
        assert!(started.elapsed() < Duration::from_secs(20), "{what}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn an_unrelated_chat_completes_while_a_hostile_stream_floods() {
    let upstream = FakeUpstream::start().await;
    upstream.push(Reply::Stream(vec![
        Sse::Raw("data: ".to_owned()),
        Sse::Endless("x".repeat(1000)),
    ]));
    upstream.push(Reply::Stream(vec![Sse::Endless(
        ": keep-alive\n\n".to_owned(),
    )]));
    let mut c = config(&upstream);
    c.upstream.first_token_timeout = Duration::from_secs(4);
    c.upstream.max_attempts = 1;
    let mut gw = Gateway::start(c).await;
    let mut hostile = Vec::new();
    for _ in 0..2 {
        let mut client = gw.client.clone();
        hostile.push(tokio::spawn(async move {
            client.chat_completion(ask("hostile")).await
        }));
    }
    within("the hostile calls reach the upstream", async {
        while upstream.request_count() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let fine = gw.chat("meanwhile").await.unwrap();
    assert_eq!(fine.content, "Hello!");
    for call in hostile {
        let error = within("a hostile call ends", call)
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(error.code(), Code::Unavailable | Code::DeadlineExceeded),
            "{error:?}"
        );
    }
    gw.stop().await;
}
