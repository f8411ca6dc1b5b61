//! The chat call: [`Upstream::chat`] and [`Upstream::stream`] with their
//! retries and backoff, one attempt up to the first meaningful chunk, the
//! key's `Authorization` header and the trace context sent upstream.

use std::time::Duration;

use automation_proto::v1::RetryReason;
use automation_telemetry::backoff::Backoff;
use automation_telemetry::client::error_chain;
use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokio::time::{Instant, timeout_at};
use tracing::Instrument;

use super::Upstream;
use super::failure::{
    AttemptError, Attempts, Failure, FailureKind, deadline_message, event_failure, fmt_duration,
    http_error,
};
use super::stream::{ChatStream, EventBox};
use super::wire::{ChunkError, parse_chunk};
use crate::redact::Redactor;
use crate::sse::{Events, SseError};

/// The "deadline" of a client stream: far enough never to matter.
const STREAM_HORIZON: Duration = Duration::from_secs(30 * 24 * 3600);

impl Upstream {
    /// Sends `body` (an OpenAI chat request object, without stream fields; the
    /// stream fields are added) with retries until the first meaningful chunk
    /// (content, reasoning content, a tool call, finish reason or usage)
    /// arrives.
    /// `deadline`: optional caller deadline (the earlier of it and
    /// `total_timeout` applies).
    pub async fn chat(
        &self,
        body: Value,
        deadline: Option<Instant>,
    ) -> Result<ChatStream, Failure> {
        let start = Instant::now();
        let total_deadline = start + self.inner.config.total_timeout;
        let deadline = deadline.map_or(total_deadline, |d| d.min(total_deadline));
        self.chat_until(body, start, deadline).await
    }

    /// Like [`Upstream::chat`] for a client stream: no total deadline (a
    /// stream that keeps making progress may run as long as it generates),
    /// only the first-token and between-events limits.
    pub async fn stream(&self, body: Value) -> Result<ChatStream, Failure> {
        let start = Instant::now();
        self.chat_until(body, start, start + STREAM_HORIZON).await
    }

    async fn chat_until(
        &self,
        body: Value,
        start: Instant,
        deadline: Instant,
    ) -> Result<ChatStream, Failure> {
        let config = &self.inner.config;
        let mut attempts = Attempts::default();

        let (redactor, auth) = self.auth()?;
        let Value::Object(mut map) = body else {
            return Err(AttemptError::new(
                FailureKind::BadRequest,
                "the chat request body must be a JSON object".to_owned(),
                None,
            )
            .into_failure(attempts));
        };
        map.insert("stream".to_owned(), Value::Bool(true));
        map.insert(
            "stream_options".to_owned(),
            json!({ "include_usage": true }),
        );
        let payload = match serde_json::to_vec(&map) {
            Ok(p) => p,
            Err(e) => {
                return Err(AttemptError::new(
                    FailureKind::BadRequest,
                    format!("cannot encode the chat request: {e}"),
                    None,
                )
                .into_failure(attempts));
            }
        };
        let max_attempts = config.max_attempts.max(1);

        loop {
            attempts.attempts += 1;
            let span = attempt_span(&attempts);
            let attempted = self
                .attempt(&redactor, &auth, &payload, start, deadline, &mut attempts)
                .instrument(span.clone())
                .await;
            if let Err(err) = &attempted {
                span.record("otel.status_code", "ERROR");
                span.record("error", err.message.as_str());
            }
            let err = match attempted {
                Ok(stream) => {
                    tracing::debug!(
                        attempts = attempts.attempts,
                        ttft_ms = stream.time_to_first_token.as_millis() as u64,
                        "upstream stream started"
                    );
                    return Ok(stream.with_attempts(attempts));
                }
                Err(err) => err,
            };
            let mut err = err;
            let Some(reason) = err.retry else {
                return Err(err.into_failure(attempts));
            };
            if attempts.attempts >= max_attempts {
                if attempts.attempts > 1 {
                    err.message = format!("{} (after {} attempts)", err.message, attempts.attempts);
                }
                return Err(err.into_failure(attempts));
            }
            let wait = match err.retry_after {
                Some(retry_after) if retry_after > config.max_retry_after => {
                    err.message = format!(
                        "{} (Retry-After {} exceeds the {} limit)",
                        err.message,
                        fmt_duration(retry_after),
                        fmt_duration(config.max_retry_after)
                    );
                    return Err(err.into_failure(attempts));
                }
                Some(retry_after) => retry_after,
                None => self.backoff(attempts.retries.len()),
            };
            if Instant::now() + wait >= deadline {
                err.message = format!(
                    "{} (no time left for a retry within the deadline of {})",
                    err.message,
                    fmt_duration(deadline.saturating_duration_since(start))
                );
                return Err(err.into_failure(attempts));
            }
            tracing::warn!(
                attempt = attempts.attempts,
                reason = reason.as_str_name(),
                error = %err.message,
                wait_ms = wait.as_millis() as u64,
                "upstream attempt failed, retrying"
            );
            attempts.retries.push(reason);
            tokio::time::sleep(wait).await;
        }
    }

    /// The key's redactor and its `Authorization` header value (marked
    /// sensitive).
    pub(super) fn auth(&self) -> Result<(Redactor, HeaderValue), Failure> {
        let once = Attempts::default();
        let Some(key) = self.inner.key.get() else {
            return Err(AttemptError::new(
                FailureKind::NoKey,
                format!("no DeepSeek API key: {}", self.inner.key.describe()),
                None,
            )
            .into_failure(once));
        };
        let Ok(mut auth) = HeaderValue::from_str(&format!("Bearer {key}")) else {
            return Err(AttemptError::new(
                FailureKind::NoKey,
                "the DeepSeek API key has characters not allowed in an HTTP header".to_owned(),
                None,
            )
            .into_failure(once));
        };
        auth.set_sensitive(true);
        Ok((Redactor::new(&key), auth))
    }

    /// The jittered exponential backoff before retry number `retry` (from 0).
    fn backoff(&self, retry: usize) -> Duration {
        let config = &self.inner.config;
        Backoff::new(config.backoff_base, config.backoff_max)
            .delay(u32::try_from(retry).unwrap_or(u32::MAX))
    }

    /// One attempt: send, check the status, read until the first meaningful
    /// chunk.
    async fn attempt(
        &self,
        redactor: &Redactor,
        auth: &HeaderValue,
        payload: &[u8],
        start: Instant,
        deadline: Instant,
        attempts: &mut Attempts,
    ) -> Result<ChatStream, AttemptError> {
        let config = &self.inner.config;
        let attempt_start = Instant::now();
        let first_token_deadline = (attempt_start + config.first_token_timeout).min(deadline);
        let timed_out = || {
            if first_token_deadline >= deadline {
                AttemptError::new(
                    FailureKind::Timeout,
                    deadline_message(start, deadline),
                    None,
                )
            } else {
                AttemptError::new(
                    FailureKind::Timeout,
                    format!(
                        "no first token within {}",
                        fmt_duration(config.first_token_timeout)
                    ),
                    Some(RetryReason::Timeout),
                )
            }
        };

        let mut traced = HeaderMap::new();
        upstream_trace_headers(&mut traced);
        let request = self
            .inner
            .client
            .post(self.inner.chat_url.clone())
            .header(AUTHORIZATION, auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "text/event-stream")
            .headers(traced)
            .body(payload.to_vec());
        let response = match timeout_at(first_token_deadline, request.send()).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => return Err(self.send_error(&e, redactor)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        tracing::Span::current().record("http.response.status_code", status.as_u16());
        if status == StatusCode::TOO_MANY_REQUESTS {
            attempts.rate_limited += 1;
        }
        if !status.is_success() {
            return Err(http_error(response, first_token_deadline, redactor).await);
        }
        if let Some(content_type) = response.headers().get(CONTENT_TYPE) {
            let content_type = content_type.to_str().unwrap_or_default();
            if !content_type.starts_with("text/event-stream") {
                return Err(AttemptError::new(
                    FailureKind::Protocol,
                    format!(
                        "the upstream answered with Content-Type {:?} instead of an event stream",
                        redactor.cut(content_type, 100)
                    ),
                    None,
                ));
            }
        }

        let mut events: EventBox = Box::pin(Events::new(
            Box::pin(response.bytes_stream()),
            config.max_event_bytes,
        ));
        loop {
            let next = match timeout_at(first_token_deadline, events.next()).await {
                Err(_) => return Err(timed_out()),
                Ok(next) => next,
            };
            let event = match next {
                None => {
                    return Err(AttemptError::new(
                        FailureKind::Protocol,
                        "the upstream stream ended before the first token".to_owned(),
                        None,
                    ));
                }
                Some(Err(SseError::Transport(e))) => {
                    return Err(AttemptError::new(
                        FailureKind::Connection,
                        redactor.redact(&format!(
                            "the upstream connection broke before the first token: {}",
                            error_chain(&e)
                        )),
                        Some(RetryReason::Connection),
                    ));
                }
                Some(Err(e)) => {
                    let (kind, message) = event_failure(&e);
                    return Err(AttemptError::new(kind, message, None));
                }
                Some(Ok(event)) => event,
            };
            if event == "[DONE]" {
                return Err(AttemptError::new(
                    FailureKind::Protocol,
                    "the upstream stream ended ([DONE]) before the first token".to_owned(),
                    None,
                ));
            }
            let delta = match parse_chunk(&event, redactor) {
                Ok(delta) => delta,
                Err(ChunkError::Upstream(message)) => {
                    return Err(AttemptError::new(
                        FailureKind::Server,
                        message,
                        Some(RetryReason::ServerError),
                    ));
                }
                Err(ChunkError::Bad(message)) => {
                    return Err(AttemptError::new(FailureKind::Protocol, message, None));
                }
            };
            if delta.is_meaningful() {
                return Ok(ChatStream {
                    events: Some(events),
                    pending: Some(delta),
                    attempts: Attempts::default(),
                    time_to_first_token: start.elapsed(),
                    idle_timeout: config.idle_timeout,
                    deadline,
                    deadline_message: deadline_message(start, deadline),
                    redactor: redactor.clone(),
                    saw_finish: false,
                    finished: false,
                });
            }
        }
    }

    /// Classifies an error from `send()`.
    pub(super) fn send_error(&self, e: &reqwest::Error, redactor: &Redactor) -> AttemptError {
        if e.is_timeout() {
            AttemptError::new(
                FailureKind::Timeout,
                format!(
                    "connect timeout after {}",
                    fmt_duration(self.inner.config.connect_timeout)
                ),
                Some(RetryReason::Timeout),
            )
        } else if e.is_connect() {
            AttemptError::new(
                FailureKind::Connection,
                redactor.redact(&format!(
                    "cannot connect to the upstream: {}",
                    error_chain(e)
                )),
                Some(RetryReason::Connection),
            )
        } else {
            AttemptError::new(
                FailureKind::Connection,
                redactor.redact(&format!("the upstream request failed: {}", error_chain(e))),
                Some(RetryReason::Connection),
            )
        }
    }
}

/// The trace context for DeepSeek: `traceparent` only. A caller's
/// `tracestate` (up to 32 vendor entries it chose) stays inside.
pub(super) fn upstream_trace_headers(headers: &mut HeaderMap) {
    automation_telemetry::trace::inject_headers(headers);
    headers.remove("tracestate");
}

/// The span of one upstream attempt (none while tracing is off): its
/// number and, for a retry, why the previous attempt was retried.
fn attempt_span(attempts: &Attempts) -> tracing::Span {
    if !automation_telemetry::trace::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "upstream.attempt",
        otel.kind = "client",
        attempt = attempts.attempts,
        retry.reason = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        error = tracing::field::Empty,
    );
    if let Some(reason) = attempts.retries.last() {
        span.record("retry.reason", reason.as_str_name());
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::test_support::{KEY, chat_all, client, config, status};
    use crate::upstream::{ApiKey, UpstreamConfig};
    use automation_testkit::upstream::{FakeUpstream, Reply, Sse, answer};

    #[tokio::test]
    async fn default_answer_and_request_shape() {
        let fake = FakeUpstream::start().await;
        let upstream = client(&fake);
        let (answer, attempts) = chat_all(&upstream).await.unwrap();
        assert_eq!(answer.content, "Hello!");
        assert_eq!(attempts.attempts, 1);
        assert!(answer.usage.is_some());
        let requests = fake.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].authorization, "Bearer sk-SECRET-abc123");
        let body = &requests[0].body;
        assert_eq!(body["stream"], json!(true));
        assert_eq!(body["stream_options"]["include_usage"], json!(true));
        assert_eq!(body["model"], json!("deepseek-chat"));
        assert_eq!(body["messages"][0]["content"], json!("Hi"));
        fake.stop().await;
    }

    #[tokio::test]
    async fn rate_limited_then_success_waits_retry_after() {
        let fake = FakeUpstream::start().await;
        fake.push(Reply::Status {
            status: 429,
            retry_after: Some("1".to_owned()),
            body: r#"{"error":{"message":"Rate limit reached"}}"#.to_owned(),
        });
        let started = std::time::Instant::now();
        let (answer, attempts) = chat_all(&client(&fake)).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(900));
        assert_eq!(answer.content, "Hello!");
        assert_eq!(attempts.attempts, 2);
        assert_eq!(attempts.retries, vec![RetryReason::RateLimited]);
        assert_eq!(attempts.rate_limited, 1);
        assert_eq!(fake.requests().len(), 2);
        fake.stop().await;
    }

    #[tokio::test]
    async fn long_retry_after_is_not_waited_for() {
        let fake = FakeUpstream::start().await;
        fake.push(Reply::Status {
            status: 429,
            retry_after: Some("120".to_owned()),
            body: String::new(),
        });
        let failure = chat_all(&client(&fake)).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::RateLimited);
        assert_eq!(failure.retry_after, Some(Duration::from_secs(120)));
        assert_eq!(failure.status, Some(429));
        assert_eq!(failure.attempts.attempts, 1);
        assert_eq!(failure.attempts.rate_limited, 1);
        assert!(
            failure.message.contains("Retry-After 120s"),
            "{}",
            failure.message
        );
        assert_eq!(fake.requests().len(), 1);
        fake.stop().await;
    }

    #[tokio::test]
    async fn server_errors_exhaust_the_attempts() {
        let fake = FakeUpstream::start().await;
        for _ in 0..4 {
            fake.push(status(503, r#"{"error":{"message":"Server busy"}}"#));
        }
        fake.push(answer("too late", 0, 0, 0));
        let failure = chat_all(&client(&fake)).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Server);
        assert_eq!(failure.status, Some(503));
        assert_eq!(failure.attempts.attempts, 4);
        assert_eq!(failure.attempts.retries, vec![RetryReason::ServerError; 3]);
        assert!(
            failure
                .message
                .starts_with("upstream 503 Service Unavailable: Server busy"),
            "{}",
            failure.message
        );
        assert!(failure.message.contains("after 4 attempts"));
        assert_eq!(fake.requests().len(), 4);
        fake.stop().await;
    }

    #[tokio::test]
    async fn client_errors_are_not_retried() {
        let cases = [
            (400, FailureKind::BadRequest, "Invalid request"),
            (
                401,
                FailureKind::Unauthorized,
                "Authentication Fails (key invalid)",
            ),
            (402, FailureKind::PaymentRequired, "Insufficient Balance"),
            (422, FailureKind::BadRequest, "Invalid Parameters"),
            (404, FailureKind::BadRequest, "Not Found"),
        ];
        for (code, kind, text) in cases {
            let fake = FakeUpstream::start().await;
            fake.push(status(
                code,
                &format!(r#"{{"error":{{"message":"{text}"}}}}"#),
            ));
            let failure = chat_all(&client(&fake)).await.unwrap_err();
            assert_eq!(failure.kind, kind, "{code}");
            assert_eq!(failure.status, Some(code));
            assert_eq!(failure.attempts.attempts, 1);
            assert!(failure.attempts.retries.is_empty());
            assert_eq!(fake.requests().len(), 1, "{code}");
            let reason = StatusCode::from_u16(code)
                .unwrap()
                .canonical_reason()
                .unwrap();
            assert_eq!(failure.message, format!("upstream {code} {reason}: {text}"));
            fake.stop().await;
        }
    }

    #[tokio::test]
    async fn error_text_is_bounded() {
        let fake = FakeUpstream::start().await;
        fake.push(status(400, &"x".repeat(5000)));
        let failure = chat_all(&client(&fake)).await.unwrap_err();
        assert!(
            failure.message.chars().count() < 600,
            "{}",
            failure.message.len()
        );
        fake.stop().await;
    }

    #[tokio::test]
    async fn only_keep_alives_before_first_token_time_out_and_retry() {
        let fake = FakeUpstream::start().await;
        let mut script = Vec::new();
        for _ in 0..100 {
            script.push(Sse::KeepAlive);
            script.push(Sse::Pause(Duration::from_millis(50)));
        }
        let upstream = Upstream::new(
            UpstreamConfig {
                max_attempts: 2,
                ..config(fake.base_url())
            },
            ApiKey::value(KEY.to_owned()),
        )
        .unwrap();
        fake.set_default(Reply::Stream(script));
        let failure = chat_all(&upstream).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Timeout);
        assert!(
            failure.message.starts_with("no first token within 300ms"),
            "{}",
            failure.message
        );
        assert_eq!(failure.attempts.attempts, 2);
        assert_eq!(failure.attempts.retries, vec![RetryReason::Timeout]);
        assert_eq!(fake.requests().len(), 2);
        fake.stop().await;
    }

    #[tokio::test]
    async fn hang_times_out_then_retries() {
        let fake = FakeUpstream::start().await;
        fake.push(Reply::Hang);
        let (answer, attempts) = chat_all(&client(&fake)).await.unwrap();
        assert_eq!(answer.content, "Hello!");
        assert_eq!(attempts.attempts, 2);
        assert_eq!(attempts.retries, vec![RetryReason::Timeout]);
        assert_eq!(attempts.rate_limited, 0);
        assert_eq!(fake.requests().len(), 2);
        fake.stop().await;
    }

    #[tokio::test]
    async fn key_never_leaks() {
        let fake = FakeUpstream::start().await;
        fake.push(status(
            401,
            r#"{"error":{"message":"Authentication Fails, Your api key: sk-SECRET-abc123 is invalid"}}"#,
        ));
        let upstream = client(&fake);
        let failure = chat_all(&upstream).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Unauthorized);
        assert_eq!(
            failure.message,
            "upstream 401 Unauthorized: Authentication Fails, Your api key: [redacted] is invalid"
        );
        for text in [
            failure.message.clone(),
            failure.to_string(),
            format!("{failure:?}"),
            format!("{upstream:?}"),
            format!("{:?}", upstream.key()),
            format!("{}", upstream.key()),
        ] {
            assert!(!text.contains(KEY), "{text}");
        }
        assert_eq!(format!("{:?}", upstream.key()), "ApiKey(set)");
        assert_eq!(ApiKey::none().to_string(), "ApiKey(unset)");
        // An error inside the stream, echoing the key, too.
        fake.push(Reply::Stream(vec![Sse::Data(
            json!({"error": {"message": "bad key sk-SECRET-abc123"}}),
        )]));
        fake.push(status(
            402,
            r#"{"error":{"message":"Insufficient Balance"}}"#,
        ));
        let failure = chat_all(&upstream).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::PaymentRequired);
        assert_eq!(failure.attempts.retries, vec![RetryReason::ServerError]);
        assert!(!format!("{failure:?}").contains(KEY));
        fake.stop().await;
    }

    #[tokio::test]
    async fn no_key_fails_without_a_request() {
        let fake = FakeUpstream::start().await;
        let upstream = Upstream::new(config(fake.base_url()), ApiKey::none()).unwrap();
        let failure = chat_all(&upstream).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::NoKey);
        assert_eq!(
            failure.message,
            "no DeepSeek API key: DEEPSEEK_API_KEY and DEEPSEEK_API_KEY_FILE are unset"
        );
        assert_eq!(
            upstream.models().await.unwrap_err().kind,
            FailureKind::NoKey
        );
        assert!(fake.requests().is_empty());
        fake.stop().await;
    }

    #[tokio::test]
    async fn connection_refused_is_retried() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let upstream = Upstream::new(
            config(format!("http://127.0.0.1:{port}/")),
            ApiKey::value(KEY.to_owned()),
        )
        .unwrap();
        let failure = chat_all(&upstream).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Connection);
        assert_eq!(failure.attempts.attempts, 4);
        assert_eq!(failure.attempts.retries, vec![RetryReason::Connection; 3]);
        assert!(
            failure
                .message
                .starts_with("cannot connect to the upstream"),
            "{}",
            failure.message
        );
    }

    #[tokio::test]
    async fn non_object_body_is_a_bad_request() {
        let fake = FakeUpstream::start().await;
        let failure = client(&fake).chat(json!([1]), None).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::BadRequest);
        assert!(fake.requests().is_empty());
        fake.stop().await;
    }

    #[test]
    fn backoff_is_capped() {
        let upstream = Upstream::new(
            UpstreamConfig {
                backoff_base: Duration::from_millis(100),
                backoff_max: Duration::from_millis(250),
                ..UpstreamConfig::default()
            },
            ApiKey::none(),
        )
        .unwrap();
        for retry in 0..40 {
            let cap =
                Duration::from_millis(200 * (1 << retry.min(20))).min(Duration::from_millis(250));
            let delay = upstream.backoff(retry);
            assert!(
                delay >= Duration::from_millis(50) && delay <= cap,
                "{retry}: {delay:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_redirect_is_a_failure_not_a_second_request() {
        let fake = FakeUpstream::start().await;
        let elsewhere = format!("{}/chat/completions", fake.base_url());
        let redirect = axum::Router::new().fallback(move || {
            let elsewhere = elsewhere.clone();
            async move {
                (
                    axum::http::StatusCode::TEMPORARY_REDIRECT,
                    [(axum::http::header::LOCATION, elsewhere)],
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, redirect).await });
        let upstream = Upstream::new(config(base_url), ApiKey::value(KEY.to_owned())).unwrap();
        let failure = chat_all(&upstream).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Protocol);
        assert_eq!(failure.status, Some(307));
        assert!(
            failure
                .message
                .starts_with("upstream 307 Temporary Redirect"),
            "{}",
            failure.message
        );
        // The key went nowhere else.
        assert!(fake.requests().is_empty());
        server.abort();
        fake.stop().await;
    }
}
