//! The OpenAI-compatible door with the real `openai` Python package, as
//! users of OpenAI SDKs meet it: answers and streams with DeepSeek's cache
//! usage, a bad token, an upstream 429 storm and 5xx, the model list; and
//! the calls on a real collector's `/metrics`, counted as gRPC's are.

mod support;

use automation_telemetry::auth::BearerAuth;
use automation_testkit::upstream::{FakeUpstream, Reply, answer};
use automation_testkit::{Samples, TestCollector};
use serde_json::{Value, json};
use support::{Gateway, KEY, config, openai_sdk, reporting};

const TOKEN: &str = "client-token-1";

fn labels(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut l = vec![("model", "deepseek-chat")];
    l.extend_from_slice(extra);
    automation_testkit::series("api-gateway", "gw-test", &l)
}

/// A gateway that accepts only [`TOKEN`].
fn with_tokens(config: &mut automation_api_gateway::Config, dir: &tempfile::TempDir) {
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    config.service.auth = BearerAuth::from_file(Some(&tokens)).unwrap();
}

#[tokio::test]
async fn the_sdk_gets_answers_and_streams_with_cache_usage_all_counted() {
    let collector = TestCollector::start(automation_collector::Config::new("c")).await;
    let upstream = FakeUpstream::start().await;
    upstream.push(answer("The parser drops empty input.", 1_000, 2_000, 500));
    upstream.push(answer("Because of the parser.", 64, 16, 8));
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&upstream);
    with_tokens(&mut c, &dir);
    reporting(&mut c, &collector);
    let gw = Gateway::start(c).await;

    let completion = openai_sdk(&gw, "chat", TOKEN).await;
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["id"], "chatcmpl-fake");
    assert_eq!(completion["model"], "deepseek-chat");
    let choice = &completion["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(
        choice["message"]["content"],
        "The parser drops empty input."
    );
    assert_eq!(choice["finish_reason"], "stop");
    let usage = &completion["usage"];
    assert_eq!(
        (
            &usage["prompt_tokens"],
            &usage["completion_tokens"],
            &usage["total_tokens"]
        ),
        (&json!(3_000), &json!(500), &json!(3_500))
    );
    assert_eq!(
        (
            &usage["prompt_cache_hit_tokens"],
            &usage["prompt_cache_miss_tokens"]
        ),
        (&json!(1_000), &json!(2_000))
    );
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 1_000);

    let streamed = openai_sdk(&gw, "stream", TOKEN).await;
    let chunks = streamed["chunks"].as_array().unwrap();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Because of the parser.");
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("stop")]);
    // With include_usage the usage comes last, in a chunk without choices.
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        (
            &last["usage"]["prompt_cache_hit_tokens"],
            &last["usage"]["prompt_cache_miss_tokens"],
            &last["usage"]["completion_tokens"],
        ),
        (&json!(64), &json!(16), &json!(8))
    );

    // The gateway's key went upstream, never the client's token.
    let sent = upstream.requests();
    assert_eq!(sent.len(), 2);
    for request in &sent {
        assert_eq!(request.authorization, format!("Bearer {KEY}"));
        assert_eq!(
            request.body["messages"][1]["content"],
            "Why do the tests fail?"
        );
    }
    assert_eq!(sent[0].body["temperature"], 0.2);
    assert_eq!(sent[0].body["max_tokens"], 64);

    let m = collector
        .eventually("both calls counted", |m: &Samples| {
            m.get("deepseek_api_calls_total", &labels(&[("status", "ok")])) == Some(2.0)
        })
        .await;
    for (kind, tokens) in [
        ("input_cache_hit", 1_064.0),
        ("input_cache_miss", 2_016.0),
        ("output", 508.0),
    ] {
        assert_eq!(
            m.value("deepseek_api_tokens_used_total", &labels(&[("type", kind)])),
            tokens,
            "{kind}"
        );
    }
    assert_eq!(
        m.value("deepseek_api_request_cost_usd_count", &labels(&[])),
        2.0
    );
    let text = collector.metrics_text().await;
    assert!(!text.contains(TOKEN) && !text.contains(KEY));
    gw.stop().await;
    collector.stop().await;
}

#[tokio::test]
async fn a_bad_token_is_the_sdks_authentication_error() {
    let upstream = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&upstream);
    with_tokens(&mut c, &dir);
    let gw = Gateway::start(c).await;
    let refused = openai_sdk(&gw, "refused", "not-a-client-token").await;
    assert_eq!(refused["error"], "AuthenticationError");
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["code"], "invalid_api_key");
    assert_eq!(
        refused["message"],
        "Error code: 401 - bearer token not accepted"
    );
    assert!(upstream.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn an_upstream_429_storm_is_the_sdks_rate_limit_error_after_honouring_retry_after() {
    let collector = TestCollector::start(automation_collector::Config::new("c")).await;
    let upstream = FakeUpstream::start().await;
    upstream.set_default(Reply::Status {
        status: 429,
        retry_after: Some("1".to_owned()),
        body: r#"{"error":{"message":"Rate limit reached"}}"#.to_owned(),
    });
    let mut c = config(&upstream);
    c.upstream.max_attempts = 1;
    reporting(&mut c, &collector);
    let gw = Gateway::start(c).await;
    let refused = openai_sdk(&gw, "refused_after_a_retry", "any").await;
    assert_eq!(refused["error"], "RateLimitError");
    assert_eq!(refused["status"], 429);
    assert_eq!(refused["code"], "rate_limited");
    assert_eq!(
        (&refused["retry_after"], &refused["retry_after_ms"]),
        (&json!("1"), &json!("1000"))
    );
    // The SDK waited the second it was told before its one retry.
    assert!(refused["elapsed"].as_f64().unwrap() >= 1.0, "{refused}");
    assert_eq!(upstream.requests().len(), 2, "the SDK retried once");
    let m = collector
        .eventually("both counted", |m: &Samples| {
            m.get(
                "deepseek_api_calls_total",
                &labels(&[("status", "rate_limited")]),
            ) == Some(2.0)
        })
        .await;
    assert_eq!(m.value("deepseek_api_rate_limits_total", &labels(&[])), 2.0);
    gw.stop().await;
    collector.stop().await;
}

#[tokio::test]
async fn an_upstream_5xx_is_the_sdks_internal_server_error_after_the_gateways_retries() {
    let upstream = FakeUpstream::start().await;
    upstream.set_default(Reply::Status {
        status: 503,
        retry_after: None,
        body: r#"{"error":{"message":"Service Unavailable"}}"#.to_owned(),
    });
    let mut c = config(&upstream);
    c.upstream.max_attempts = 2;
    let gw = Gateway::start(c).await;
    let refused = openai_sdk(&gw, "refused", "any").await;
    assert_eq!(refused["error"], "InternalServerError");
    assert_eq!(refused["status"], 502);
    assert_eq!(refused["code"], "server_error");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("upstream 503 Service Unavailable"),
        "{refused}"
    );
    assert_eq!(upstream.requests().len(), 2, "the gateway's two attempts");
    gw.stop().await;
}

#[tokio::test]
async fn the_sdk_lists_and_retrieves_models() {
    let upstream = FakeUpstream::start().await;
    let gw = Gateway::start(config(&upstream)).await;
    let models = openai_sdk(&gw, "models", "any").await;
    let ids: Vec<&str> = models["listed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["deepseek-chat", "deepseek-reasoner"]);
    assert_eq!(models["one"]["id"], "deepseek-chat");
    assert_eq!(models["one"]["owned_by"], "deepseek");
    assert_eq!(models["missing"]["error"], "NotFoundError");
    assert_eq!(models["missing"]["code"], "model_not_found");
    gw.stop().await;
}
