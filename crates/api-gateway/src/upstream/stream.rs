//! A started answer: [`ChatStream`] reads the deltas after the retry
//! phase, with the idle timeout and the call's deadline, and drains a
//! finished stream so its connection goes back to the pool.

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use automation_telemetry::client::error_chain;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::time::{Instant, timeout_at};

use super::failure::{Attempts, Failure, FailureKind, event_failure, fmt_duration};
use super::wire::{ChunkError, Delta, parse_chunk};
use crate::redact::Redactor;
use crate::sse::SseError;

/// How long a finished stream's rest is drained in the background so that its
/// connection can go back to the pool.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// How many already-arrived items a finished stream reads at once before the
/// rest goes to the background drain: an upstream that keeps sending after
/// `[DONE]` must not hold the call's task.
const DRAIN_AT_ONCE: usize = 4;

/// The `data` of each upstream event.
pub(super) type EventBox =
    Pin<Box<dyn Stream<Item = Result<String, SseError<reqwest::Error>>> + Send>>;

/// A started answer: the deltas after the retry phase.
///
/// Dropping it closes the upstream request.
pub struct ChatStream {
    /// `None` once finished and drained (or handed to the background drain).
    pub(super) events: Option<EventBox>,
    /// The chunk that ended the retry phase, returned by the first `next`.
    pub(super) pending: Option<Delta>,
    pub(super) attempts: Attempts,
    pub(super) time_to_first_token: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) deadline: Instant,
    pub(super) deadline_message: String,
    pub(super) redactor: Redactor,
    pub(super) saw_finish: bool,
    pub(super) finished: bool,
}

impl fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatStream")
            .field("attempts", &self.attempts)
            .field("time_to_first_token", &self.time_to_first_token)
            .field("saw_finish", &self.saw_finish)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl ChatStream {
    pub(super) fn with_attempts(mut self, attempts: Attempts) -> Self {
        self.attempts = attempts;
        self
    }

    /// The attempts it took to start the answer.
    pub fn attempts(&self) -> &Attempts {
        &self.attempts
    }

    /// From the call's start (first attempt, backoff included) to the first
    /// meaningful chunk.
    pub fn time_to_first_token(&self) -> Duration {
        self.time_to_first_token
    }

    /// The next delta; the first call returns the chunk that ended the retry
    /// phase. Enforces the idle timeout between real events (keep-alive
    /// comments and blank lines do not count) and the call's deadline.
    ///
    /// Ends with `Ok(None)` after `data: [DONE]`, or when the stream closes
    /// after a finish reason was seen. A stream that ends with neither is a
    /// [`FailureKind::Protocol`] failure. After a failure or the end, further
    /// calls return `Ok(None)`.
    pub async fn next(&mut self) -> Result<Option<Delta>, Failure> {
        if let Some(delta) = self.pending.take() {
            self.saw_finish |= delta.finish_reason.is_some();
            return Ok(Some(delta));
        }
        if self.finished {
            return Ok(None);
        }
        let Some(events) = self.events.as_mut() else {
            return Ok(None);
        };
        // Only a meaningful delta is progress: events that carry nothing do
        // not put the idle deadline off.
        let idle_deadline = Instant::now() + self.idle_timeout;
        loop {
            let next = match timeout_at(idle_deadline.min(self.deadline), events.next()).await {
                Ok(next) => next,
                Err(_) => {
                    let message = if self.deadline <= idle_deadline {
                        self.deadline_message.clone()
                    } else {
                        format!("no stream event for {}", fmt_duration(self.idle_timeout))
                    };
                    return Err(self.fail(FailureKind::Timeout, message));
                }
            };
            let event = match next {
                None => return self.end(None),
                Some(Err(SseError::Transport(e))) => {
                    return self.end(Some(error_chain(&e)));
                }
                Some(Err(e)) => {
                    let (kind, message) = event_failure(&e);
                    return Err(self.fail(kind, message));
                }
                Some(Ok(event)) => event,
            };
            if event == "[DONE]" {
                self.finished = true;
                self.drain();
                return Ok(None);
            }
            match parse_chunk(&event, &self.redactor) {
                Ok(delta) if delta.is_meaningful() => {
                    self.saw_finish |= delta.finish_reason.is_some();
                    return Ok(Some(delta));
                }
                Ok(_) => {}
                Err(ChunkError::Upstream(message)) => {
                    return Err(self.fail(FailureKind::Server, message));
                }
                Err(ChunkError::Bad(message)) => {
                    return Err(self.fail(FailureKind::Protocol, message));
                }
            }
        }
    }

    /// The stream closed (cleanly, or with a transport error `cause`).
    fn end(&mut self, cause: Option<String>) -> Result<Option<Delta>, Failure> {
        self.finished = true;
        self.events = None;
        if self.saw_finish {
            return Ok(None);
        }
        let mut message = "the upstream stream ended before the answer finished".to_owned();
        if let Some(cause) = cause {
            message = self.redactor.redact(&format!("{message}: {cause}"));
        }
        Err(self.fail(FailureKind::Protocol, message))
    }

    fn fail(&mut self, kind: FailureKind, message: String) -> Failure {
        self.finished = true;
        self.events = None;
        Failure {
            kind,
            message,
            retry_after: None,
            attempts: self.attempts.clone(),
            status: None,
        }
    }

    /// Reads the rest of a finished stream so that its connection returns
    /// to the pool: at once when it has already arrived (the usual case,
    /// the body's end follows `[DONE]`), else in the background, within
    /// [`DRAIN_TIMEOUT`].
    fn drain(&mut self) {
        let Some(mut events) = self.events.take() else {
            return;
        };
        for _ in 0..DRAIN_AT_ONCE {
            match events.next().now_or_never() {
                Some(Some(_)) => {}
                Some(None) => return,
                None => break,
            }
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
                    while events.next().await.is_some() {}
                })
                .await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::upstream::TokenUsage;
    use crate::upstream::test_support::{chat_all, client, collect, request};
    use automation_testkit::upstream::{
        FakeUpstream, Reply, Sse, chunk, finish_chunk, reasoning_chunk, usage_chunk,
    };

    #[tokio::test]
    async fn streamed_answer_with_usage() {
        let fake = FakeUpstream::start().await;
        fake.push(Reply::Stream(vec![
            Sse::Data(json!({"id": "x", "model": "deepseek-reasoner",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})),
            Sse::Data(reasoning_chunk("Think.")),
            Sse::Data(chunk("Hel")),
            Sse::Data(chunk("lo")),
            Sse::Data(finish_chunk("stop")),
            Sse::Data(usage_chunk(10, 5, 3, 1)),
            Sse::Done,
        ]));
        let upstream = client(&fake);
        let mut stream = upstream.chat(request(), None).await.unwrap();
        assert!(stream.time_to_first_token() > Duration::ZERO);
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.reasoning_content, "Think.");
        assert_eq!(first.model, "deepseek-chat");
        assert!(!first.id.is_empty());
        let answer = collect(&mut stream).await.unwrap();
        assert_eq!(answer.content, "Hello");
        assert_eq!(answer.finish.as_deref(), Some("stop"));
        assert_eq!(
            answer.usage,
            Some(TokenUsage {
                input_cache_hit: 10,
                input_cache_miss: 5,
                output: 3,
                reasoning: 1
            })
        );
        assert_eq!(
            stream.attempts(),
            &Attempts {
                attempts: 1,
                retries: vec![],
                rate_limited: 0
            }
        );
        // Ended: further calls stay at the end.
        assert_eq!(stream.next().await.unwrap(), None);
        fake.stop().await;
    }

    #[tokio::test]
    async fn a_finished_stream_gives_its_connection_back() {
        let fake = FakeUpstream::start().await;
        let upstream = client(&fake);
        // A call, then a pause in which the pool takes the connection back
        // (the client does that in the background, as calls go by).
        let call = async |expect: &str| {
            assert_eq!(chat_all(&upstream).await.unwrap().0.content, expect);
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // The body's end right behind `[DONE]` (the fake's usual answer)…
        for _ in 0..3 {
            call("Hello!").await;
        }
        // …and arriving a while after it.
        fake.push(Reply::Stream(vec![
            Sse::Data(chunk("Late")),
            Sse::Data(finish_chunk("stop")),
            Sse::Done,
            Sse::Pause(Duration::from_millis(50)),
        ]));
        call("Late").await;
        call("Hello!").await;
        assert_eq!(fake.request_count(), 5);
        assert_eq!(fake.connection_count(), 1, "one connection for all five");
    }

    #[tokio::test]
    async fn keep_alives_and_blank_lines_are_tolerated() {
        let fake = FakeUpstream::start().await;
        fake.push(Reply::Stream(vec![
            Sse::KeepAlive,
            Sse::Blank,
            Sse::Data(chunk("a")),
            Sse::KeepAlive,
            Sse::Blank,
            Sse::Blank,
            Sse::Data(chunk("b")),
            Sse::KeepAlive,
            Sse::Data(finish_chunk("stop")),
            Sse::Blank,
            Sse::Data(usage_chunk(1, 2, 3, 0)),
            Sse::KeepAlive,
            Sse::Done,
        ]));
        let (answer, _) = chat_all(&client(&fake)).await.unwrap();
        assert_eq!(answer.content, "ab");
        assert_eq!(answer.deltas, 4);
        assert_eq!(answer.usage.unwrap().output, 3);
        fake.stop().await;
    }

    #[tokio::test]
    async fn stall_after_first_token_times_out_on_idle() {
        let fake = FakeUpstream::start().await;
        fake.push(Reply::Stream(vec![
            Sse::Data(chunk("a")),
            Sse::Pause(Duration::from_secs(5)),
            Sse::Data(finish_chunk("stop")),
            Sse::Done,
        ]));
        let mut stream = client(&fake).chat(request(), None).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap().content, "a");
        let failure = stream.next().await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Timeout);
        assert_eq!(failure.message, "no stream event for 300ms");
        assert_eq!(failure.attempts.attempts, 1);
        assert_eq!(stream.next().await.unwrap(), None);
        fake.stop().await;
    }

    #[tokio::test]
    async fn keep_alives_do_not_count_as_progress() {
        let fake = FakeUpstream::start().await;
        let mut script = vec![Sse::Data(chunk("a"))];
        for _ in 0..50 {
            script.push(Sse::KeepAlive);
            script.push(Sse::Blank);
            script.push(Sse::Pause(Duration::from_millis(50)));
        }
        script.push(Sse::Data(finish_chunk("stop")));
        script.push(Sse::Done);
        fake.push(Reply::Stream(script));
        let mut stream = client(&fake).chat(request(), None).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap().content, "a");
        let started = std::time::Instant::now();
        let failure = stream.next().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(failure.kind, FailureKind::Timeout);
        assert_eq!(failure.message, "no stream event for 300ms");
        fake.stop().await;
    }

    #[tokio::test]
    async fn caller_deadline_is_enforced() {
        let fake = FakeUpstream::start().await;
        fake.push(Reply::Stream(vec![
            Sse::Data(chunk("a")),
            Sse::Pause(Duration::from_millis(100)),
            Sse::Data(chunk("b")),
            Sse::Pause(Duration::from_millis(100)),
            Sse::Data(chunk("c")),
            Sse::Pause(Duration::from_millis(100)),
            Sse::Data(finish_chunk("stop")),
            Sse::Done,
        ]));
        let upstream = client(&fake);
        let deadline = Instant::now() + Duration::from_millis(150);
        let mut stream = upstream.chat(request(), Some(deadline)).await.unwrap();
        let failure = collect(&mut stream).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Timeout);
        assert!(
            failure.message.starts_with("deadline of 1"),
            "{}",
            failure.message
        );
        assert!(
            failure.message.ends_with("ms reached"),
            "{}",
            failure.message
        );
        fake.stop().await;
    }

    #[tokio::test]
    async fn early_end_is_a_protocol_failure() {
        for last in [Some(Sse::Close), None] {
            let fake = FakeUpstream::start().await;
            let mut script = vec![Sse::Data(chunk("a")), Sse::Data(chunk("b"))];
            script.extend(last);
            fake.push(Reply::Stream(script));
            let failure = chat_all(&client(&fake)).await.unwrap_err();
            assert_eq!(failure.kind, FailureKind::Protocol);
            assert!(
                failure
                    .message
                    .starts_with("the upstream stream ended before the answer finished"),
                "{}",
                failure.message
            );
            assert_eq!(fake.requests().len(), 1);
            fake.stop().await;
        }
    }

    #[tokio::test]
    async fn close_after_finish_without_done_is_fine() {
        let fake = FakeUpstream::start().await;
        fake.push(Reply::Stream(vec![
            Sse::Data(chunk("a")),
            Sse::Data(finish_chunk("length")),
        ]));
        let (answer, _) = chat_all(&client(&fake)).await.unwrap();
        assert_eq!(answer.content, "a");
        assert_eq!(answer.finish.as_deref(), Some("length"));
        fake.stop().await;
    }

    #[tokio::test]
    async fn bad_json_chunk_is_a_protocol_failure() {
        let fake = FakeUpstream::start().await;
        fake.push(Reply::Stream(vec![
            Sse::Data(chunk("a")),
            Sse::Data(json!("not an object")),
        ]));
        let failure = chat_all(&client(&fake)).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Protocol);
        assert!(
            failure.message.contains("not an object"),
            "{}",
            failure.message
        );
        fake.stop().await;
    }

    #[tokio::test]
    async fn openai_cached_tokens_usage_is_accepted() {
        let fake = FakeUpstream::start().await;
        fake.push(Reply::Stream(vec![
            Sse::Data(chunk("a")),
            Sse::Data(finish_chunk("stop")),
            Sse::Data(json!({"id": "c", "model": "m", "choices": [], "usage": {
                "prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                "prompt_tokens_details": {"cached_tokens": 60},
                "completion_tokens_details": {"reasoning_tokens": 5}}})),
            Sse::Done,
        ]));
        let (answer, _) = chat_all(&client(&fake)).await.unwrap();
        assert_eq!(
            answer.usage,
            Some(TokenUsage {
                input_cache_hit: 60,
                input_cache_miss: 40,
                output: 20,
                reasoning: 5
            })
        );
        fake.stop().await;
    }
}
