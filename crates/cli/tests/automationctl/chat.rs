//! `automationctl chat`: an answer streamed through an in-process api-gateway
//! from a fake DeepSeek, shown as it arrives.

use std::time::Duration;

use automation_testkit::upstream::{
    FakeUpstream, Reply, Sse, answer, chunk, finish_chunk, reasoning_chunk, usage_chunk,
};

use crate::services;
use crate::support::{Live, automationctl};

#[tokio::test(flavor = "multi_thread")]
async fn the_answer_appears_on_stdout_as_it_streams() {
    let upstream = FakeUpstream::start().await;
    upstream.push(Reply::Stream(vec![
        Sse::Data(reasoning_chunk("Thinking it over.")),
        Sse::Data(chunk("The first half, ")),
        Sse::Pause(Duration::from_secs(2)),
        Sse::Data(chunk("then the rest.")),
        Sse::Data(finish_chunk("stop")),
        Sse::Data(usage_chunk(10, 5, 7, 2)),
        Sse::Done,
    ]));
    let gateway = services::gateway(&upstream).await;

    let mut live = Live::spawn(&["chat", "why", "--gateway", &gateway.endpoint]);
    let early = live
        .read_until(Duration::from_secs(30), |s| s.contains("The first half, "))
        .await;
    assert!(!early.contains("the rest"), "{early:?}");
    assert!(
        live.running(),
        "the first half arrives while the answer streams"
    );
    let all = live
        .read_until(Duration::from_secs(30), |s| s.ends_with('\n'))
        .await;
    assert_eq!(early + &all, "The first half, then the rest.\n");
    let status = live.child.wait().unwrap();
    assert!(status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(live.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.starts_with("reasoning: Thinking it over.\n"),
        "{stderr:?}"
    );
    assert!(
        stderr.contains("tokens: 15 in (10 cached), 7 out (2 reasoning); cost $"),
        "{stderr:?}"
    );
    assert!(
        stderr.ends_with("; deepseek-chat, finish stop\n"),
        "{stderr:?}"
    );

    let sent = upstream.requests();
    assert_eq!(sent[0].body["messages"][0]["content"], "why");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_is_the_whole_answer_in_one_object() {
    let upstream = FakeUpstream::start().await;
    upstream.push(answer("Short answer.", 3, 4, 5));
    let gateway = services::gateway(&upstream).await;
    let out = automationctl(&[
        "chat",
        "be",
        "brief",
        "--system",
        "You are terse.",
        "--model",
        "deepseek-chat",
        "--gateway",
        &gateway.endpoint,
        "--output",
        "json",
    ])
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let value = out.json();
    assert_eq!(value["content"], "Short answer.");
    assert_eq!(value["finish_reason"], "stop");
    assert_eq!(value["model"], "deepseek-chat");
    assert_eq!(value["usage"]["input_cache_hit_tokens"], 3);
    assert_eq!(value["usage"]["output_tokens"], 5);
    let sent = &upstream.requests()[0].body;
    assert_eq!(sent["messages"][0]["role"], "system");
    assert_eq!(sent["messages"][1]["content"], "be brief");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_failure_is_one_line_naming_the_gateway() {
    let upstream = FakeUpstream::start().await;
    upstream.push(Reply::Status {
        status: 401,
        retry_after: None,
        body: r#"{"error":{"message":"Authentication Fails"}}"#.to_owned(),
    });
    let gateway = services::gateway(&upstream).await;
    let out = automationctl(&["chat", "hi", "--gateway", &gateway.endpoint]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    let prefix = format!("automationctl: api-gateway at {}: ", gateway.addr);
    assert!(out.stderr.starts_with(&prefix), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
}
