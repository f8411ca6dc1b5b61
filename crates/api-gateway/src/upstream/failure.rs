//! How an upstream call fails: [`Failure`] and its [`FailureKind`], the
//! [`Attempts`] made, a failed attempt before the retry decision, and the
//! mapping of HTTP error answers (status, body, `Retry-After`) and broken
//! event streams to failures.

use std::fmt;
use std::time::{Duration, SystemTime};

use automation_proto::v1::RetryReason;
use automation_telemetry::client::error_chain;
use reqwest::header::RETRY_AFTER;
use serde_json::Value;
use tokio::time::{Instant, timeout_at};

use crate::redact::{Redactor, bounded};
use crate::sse::SseError;

/// Longest upstream error text quoted in a [`Failure`] message, in characters.
pub(super) const MAX_ERROR_TEXT: usize = 500;
/// Most bytes of an HTTP error body read to find its message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Attempt accounting, carried by both success and failure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attempts {
    /// Upstream attempts made (1 without retries).
    pub attempts: u32,
    /// One entry per retried attempt: why it was retried.
    pub retries: Vec<RetryReason>,
    /// Upstream 429 answers received across the attempts.
    pub rate_limited: u32,
}

/// The kind of an upstream [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// 400, 422 and other 4xx not listed below: the request is wrong.
    BadRequest,
    /// 401: the key is wrong.
    Unauthorized,
    /// 402: the balance is insufficient.
    PaymentRequired,
    /// 429, after the retries.
    RateLimited,
    /// 5xx, after the retries where they apply.
    Server,
    /// Connect, first-token, idle or deadline limit reached.
    Timeout,
    /// The connection could not be made or broke.
    Connection,
    /// Bad SSE or JSON, an unexpected answer, or a stream that ended early.
    Protocol,
    /// An SSE event (or line) over
    /// [`UpstreamConfig::max_event_bytes`](super::UpstreamConfig::max_event_bytes).
    EventTooLarge,
    /// No API key is configured.
    NoKey,
}

impl FailureKind {
    /// A short machine-readable name: `bad_request`, `unauthorized`,
    /// `payment_required`, `rate_limited`, `server_error`, `timeout`,
    /// `connection`, `protocol`, `event_too_large` or `no_key`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::PaymentRequired => "payment_required",
            Self::RateLimited => "rate_limited",
            Self::Server => "server_error",
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::Protocol => "protocol",
            Self::EventTooLarge => "event_too_large",
            Self::NoKey => "no_key",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed upstream call; its message is scrubbed of the API key.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What went wrong.
    pub kind: FailureKind,
    /// A human-readable explanation, e.g. `upstream 402 Payment Required:
    /// Insufficient Balance` or `no stream event for 60s`.
    pub message: String,
    /// The upstream's `Retry-After`, when its last answer had one.
    pub retry_after: Option<Duration>,
    /// The attempts made.
    pub attempts: Attempts,
    /// The HTTP status of the last upstream answer, for HTTP errors.
    pub status: Option<u16>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// A failed attempt, before the retry decision.
pub(super) struct AttemptError {
    pub(super) kind: FailureKind,
    pub(super) message: String,
    /// Why to retry, when the failure may be retried.
    pub(super) retry: Option<RetryReason>,
    pub(super) retry_after: Option<Duration>,
    pub(super) status: Option<u16>,
}

impl AttemptError {
    pub(super) fn new(kind: FailureKind, message: String, retry: Option<RetryReason>) -> Self {
        Self {
            kind,
            message,
            retry,
            retry_after: None,
            status: None,
        }
    }

    pub(super) fn into_failure(self, attempts: Attempts) -> Failure {
        Failure {
            kind: self.kind,
            message: self.message,
            retry_after: self.retry_after,
            attempts,
            status: self.status,
        }
    }
}

/// The failure for a broken event stream (not a broken connection).
pub(super) fn event_failure<E>(e: &SseError<E>) -> (FailureKind, String) {
    let kind = match e {
        SseError::TooLarge(_) => FailureKind::EventTooLarge,
        SseError::Transport(_) | SseError::NotUtf8 => FailureKind::Protocol,
    };
    (kind, format!("bad event stream from the upstream: {e}"))
}

pub(super) enum ReadError {
    Timeout,
    Transport(String),
}

/// Reads at most `limit` bytes of a body by `deadline`.
pub(super) async fn read_bounded(
    mut response: reqwest::Response,
    deadline: Instant,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        match timeout_at(deadline, response.chunk()).await {
            Err(_) => return Err(ReadError::Timeout),
            Ok(Err(e)) => return Err(ReadError::Transport(error_chain(&e))),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(chunk))) => {
                let room = limit.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= limit {
                    return Ok(body);
                }
            }
        }
    }
}

/// Turns an HTTP error answer into an attempt error, reading (part of) its
/// body for the upstream's message.
pub(super) async fn http_error(
    response: reqwest::Response,
    deadline: Instant,
    redactor: &Redactor,
) -> AttemptError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    // A body that cannot be read in time still leaves the status.
    let body: Vec<u8> = read_bounded(response, deadline, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let mut message = format!(
        "upstream {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("error")
    );
    if let Some(detail) = error_detail(&body, body.len() >= MAX_ERROR_BODY, redactor) {
        message.push_str(": ");
        message.push_str(&detail);
    }
    let code = status.as_u16();
    let (kind, retry) = match code {
        400 | 422 => (FailureKind::BadRequest, None),
        401 => (FailureKind::Unauthorized, None),
        402 => (FailureKind::PaymentRequired, None),
        429 => (FailureKind::RateLimited, Some(RetryReason::RateLimited)),
        500 | 502 | 503 | 504 => (FailureKind::Server, Some(RetryReason::ServerError)),
        500..=599 => (FailureKind::Server, None),
        400..=499 => (FailureKind::BadRequest, None),
        _ => (FailureKind::Protocol, None),
    };
    AttemptError {
        kind,
        message,
        retry,
        retry_after,
        status: Some(code),
    }
}

/// The upstream's explanation in an error body: `error.message` (or a
/// top-level `message`) of a JSON body, else the body's text; redacted, then
/// bounded. `cut_off`: the body was read only up to a limit.
fn error_detail(body: &[u8], cut_off: bool, redactor: &Redactor) -> Option<String> {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        let message = value
            .pointer("/error/message")
            .or_else(|| value.get("message"))
            .or_else(|| value.get("error").filter(|e| e.is_string()))
            .and_then(Value::as_str);
        if let Some(message) = message.map(str::trim).filter(|m| !m.is_empty()) {
            return Some(redactor.cut(message, MAX_ERROR_TEXT));
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = if cut_off {
        redactor.redact_cut_off(&text)
    } else {
        redactor.redact(&text)
    };
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then(|| bounded(&text, MAX_ERROR_TEXT))
}

/// `Retry-After` as delta-seconds (fractions tolerated) or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

pub(super) fn deadline_message(start: Instant, deadline: Instant) -> String {
    format!(
        "deadline of {} reached",
        fmt_duration(deadline.saturating_duration_since(start))
    )
}

/// `120s`, `300ms`, `1.5s`.
pub(super) fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_formats() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = SystemTime::now() + Duration::from_secs(20);
        let parsed = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(parsed > Duration::from_secs(17) && parsed <= Duration::from_secs(20));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn helpers() {
        assert_eq!(fmt_duration(Duration::from_secs(120)), "120s");
        assert_eq!(fmt_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(FailureKind::Server.as_str(), "server_error");
        assert_eq!(FailureKind::NoKey.to_string(), "no_key");
    }
}
