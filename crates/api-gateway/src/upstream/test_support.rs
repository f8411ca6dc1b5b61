//! What the upstream module's tests share: a client for a fake upstream,
//! a chat request, and an answer gathered from its stream.

use std::time::Duration;

use serde_json::{Value, json};

use super::{ApiKey, Attempts, ChatStream, Failure, TokenUsage, Upstream, UpstreamConfig};
use automation_testkit::upstream::{FakeUpstream, Reply};

pub(super) const KEY: &str = "sk-SECRET-abc123";

pub(super) fn config(base_url: String) -> UpstreamConfig {
    UpstreamConfig {
        base_url,
        connect_timeout: Duration::from_secs(2),
        first_token_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        total_timeout: Duration::from_secs(10),
        max_attempts: 4,
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(30),
        max_event_bytes: 1024 * 1024,
    }
}

pub(super) fn client(fake: &FakeUpstream) -> Upstream {
    Upstream::new(config(fake.base_url()), ApiKey::value(KEY.to_owned())).unwrap()
}

pub(super) fn request() -> Value {
    json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "Hi"}]})
}

/// Everything a stream yields, aggregated.
#[derive(Debug, Default)]
pub(super) struct Answer {
    pub(super) content: String,
    pub(super) reasoning: String,
    pub(super) finish: Option<String>,
    pub(super) usage: Option<TokenUsage>,
    pub(super) deltas: usize,
}

pub(super) async fn collect(stream: &mut ChatStream) -> Result<Answer, Failure> {
    let mut answer = Answer::default();
    while let Some(delta) = stream.next().await? {
        answer.deltas += 1;
        answer.content.push_str(&delta.content);
        answer.reasoning.push_str(&delta.reasoning_content);
        if delta.finish_reason.is_some() {
            answer.finish = delta.finish_reason;
        }
        if delta.usage.is_some() {
            answer.usage = delta.usage;
        }
    }
    Ok(answer)
}

pub(super) async fn chat_all(upstream: &Upstream) -> Result<(Answer, Attempts), Failure> {
    let mut stream = upstream.chat(request(), None).await?;
    let answer = collect(&mut stream).await?;
    Ok((answer, stream.attempts().clone()))
}

pub(super) fn status(status: u16, body: &str) -> Reply {
    Reply::Status {
        status,
        retry_after: None,
        body: body.to_owned(),
    }
}
