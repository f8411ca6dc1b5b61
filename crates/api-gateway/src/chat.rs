//! One chat call, whichever door it comes through (gRPC, or the
//! OpenAI-compatible HTTP door): the client's rate limit, the request's
//! checks, the circuit, the concurrency limit, the upstream call, and one
//! `ApiCall` event when it ends. A door turns its request into a
//! [`ChatRequest`], takes the answer as a `ChatResponse` or as `ChatChunk`s,
//! and maps a [`Refusal`] to its own errors in one place.
//!
//! Layout: `call` (the accounting), `request` (the checks and the upstream's
//! JSON body), `answer` (a unary answer gathered, a stream pumped to its
//! client), `watched` (a stream its writer polls directly, dropped when the
//! writer stops taking what is ready).

mod answer;
mod call;
mod request;
mod watched;

use std::sync::Arc;
use std::time::Duration;

use automation_proto::v1::{ApiStatus, ChatRequest};
use tracing::Instrument;

use crate::circuit::Ticket;
use crate::limits::Slot;
use crate::server::Gateway;
use crate::upstream::{ChatStream, Failure, FailureKind};
pub use answer::MAX_ANSWER_BYTES;
pub(crate) use call::Call;

/// What kind of refusal a [`Refusal`] is; each door maps it to its own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The request is wrong (the gateway's checks, or the upstream's 4xx).
    Invalid,
    /// The request is over the size limit.
    RequestTooLarge,
    /// A unary answer grew over the most one answer gathers.
    AnswerTooLarge,
    /// A rate or concurrency limit, the client's, the gateway's or the
    /// upstream's; [`Refusal::retry_after`] says when to try again.
    RateLimited,
    /// The upstream refused the gateway's key (its 401).
    KeyRejected,
    /// The upstream account has no balance left (its 402).
    PaymentRequired,
    /// The gateway has no key configured.
    NotConfigured,
    /// The circuit is open: the upstream is failing.
    CircuitOpen,
    /// The upstream failed: 5xx, a broken connection or event stream.
    Upstream,
    /// A time limit was reached.
    Timeout,
}

/// A call refused or failed: what its client is told and what is reported.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    /// What kind.
    pub(crate) class: Class,
    /// What happened, for the client; never holds the key.
    pub(crate) message: String,
    /// When to try again, for limits and an open circuit.
    pub(crate) retry_after: Option<Duration>,
    /// The `ApiCall` status reported.
    pub(crate) status: ApiStatus,
    /// The `ApiCall` error kind reported; the HTTP door's error `code`.
    pub(crate) kind: &'static str,
}

impl Refusal {
    /// A refusal of the request itself.
    pub(crate) fn invalid(message: String) -> Self {
        Self {
            class: Class::Invalid,
            message,
            retry_after: None,
            status: ApiStatus::Invalid,
            kind: "invalid_request",
        }
    }

    /// A limit reached: try again after `wait`.
    fn limited(kind: &'static str, message: &str, wait: Duration) -> Self {
        Self {
            class: Class::RateLimited,
            message: message.to_owned(),
            retry_after: Some(wait),
            status: ApiStatus::RateLimited,
            kind,
        }
    }
}

/// The refusal for an upstream failure, and whether the failure says the
/// upstream is unhealthy (for the circuit).
pub(crate) fn map_failure(failure: &Failure) -> (Refusal, Option<bool>) {
    let message = failure.message.clone();
    let (class, status, message, healthy) = match failure.kind {
        FailureKind::BadRequest => (Class::Invalid, ApiStatus::Invalid, message, None),
        FailureKind::Unauthorized => (
            Class::KeyRejected,
            ApiStatus::Unauthorized,
            format!(
                "DeepSeek rejected the gateway's API key (401); check DEEPSEEK_API_KEY: {message}"
            ),
            None,
        ),
        FailureKind::PaymentRequired => (
            Class::PaymentRequired,
            ApiStatus::PaymentRequired,
            format!("the DeepSeek account has no balance left (402); top it up: {message}"),
            None,
        ),
        FailureKind::RateLimited => (
            Class::RateLimited,
            ApiStatus::RateLimited,
            format!("DeepSeek is rate limiting the gateway (429) after retries: {message}"),
            None,
        ),
        FailureKind::Server | FailureKind::Protocol | FailureKind::EventTooLarge => (
            Class::Upstream,
            ApiStatus::ServerError,
            message,
            Some(false),
        ),
        FailureKind::Connection => (
            Class::Upstream,
            ApiStatus::Unavailable,
            message,
            Some(false),
        ),
        FailureKind::Timeout => (Class::Timeout, ApiStatus::Timeout, message, Some(false)),
        FailureKind::NoKey => (Class::NotConfigured, ApiStatus::Unavailable, message, None),
    };
    let retry_after = (class == Class::RateLimited)
        .then(|| failure.retry_after.unwrap_or(Duration::from_secs(1)));
    let refusal = Refusal {
        class,
        message,
        retry_after,
        status,
        kind: failure.kind.as_str(),
    };
    (refusal, healthy)
}

/// Settles the circuit ticket for a failure.
fn settle(ticket: Ticket, healthy: Option<bool>) {
    match healthy {
        Some(true) => ticket.success(),
        Some(false) => ticket.failure(),
        None => drop(ticket),
    }
}

/// A chat call admitted and started: the upstream sent its first chunk.
pub(crate) struct Admitted {
    call: Call,
    slot: Slot,
    stream: ChatStream,
}

impl Gateway {
    /// The per-client rate limit, for calls that report no `ApiCall`.
    pub(crate) fn check_rate(&self, client: &str) -> Result<(), Refusal> {
        self.clients.check(client).map_err(|wait| {
            Refusal::limited(
                "client_rate_limit",
                "this client is over its request rate limit",
                wait,
            )
        })
    }

    /// Limits, checks, circuit, concurrency, then the upstream until its
    /// first chunk; every refusal is reported. `client` is the rate limit's
    /// key. The circuit is settled here: the first chunk proves the
    /// upstream healthy (so a recovered upstream is open to all at once,
    /// not after a long probe generation ends); a stall or break later on
    /// is the client's error to see, not a reason to fail everyone fast.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        client: &str,
        request: &ChatRequest,
        streaming: bool,
    ) -> Result<Admitted, Refusal> {
        let model_hint = if request.model.is_empty() {
            self.models.default_model()
        } else {
            &request.model
        };
        let mut call = Call::new(self, model_hint);
        if let Err(refusal) = self.check_rate(client) {
            return Err(call.refuse(refusal));
        }
        let (model, body) = match request::upstream_body(&self.models, request) {
            Ok(v) => v,
            Err(message) => return Err(call.refuse(Refusal::invalid(message))),
        };
        call.model = model;
        let ticket = match self.circuit.admit() {
            Ok(ticket) => ticket,
            Err(wait) => {
                return Err(call.refuse(Refusal {
                    class: Class::CircuitOpen,
                    message: "the upstream is failing; the gateway fails fast until it recovers"
                        .to_owned(),
                    retry_after: Some(wait),
                    status: ApiStatus::Unavailable,
                    kind: "circuit_open",
                }));
            }
        };
        let slot = match self.concurrency.acquire().await {
            Ok(slot) => slot,
            Err(wait) => {
                drop(ticket);
                return Err(call.refuse(Refusal::limited(
                    "concurrency_limit",
                    "the gateway is at its concurrency limit",
                    wait,
                )));
            }
        };
        call.holds_slot = true;
        let span = call.span.clone();
        let opened = if streaming {
            self.upstream.stream(body).instrument(span).await
        } else {
            self.upstream.chat(body, None).instrument(span).await
        };
        match opened {
            Ok(stream) => {
                ticket.success();
                call.attempts = stream.attempts().clone();
                call.ttft = Some(stream.time_to_first_token());
                Ok(Admitted { call, slot, stream })
            }
            Err(failure) => {
                call.attempts = failure.attempts.clone();
                let (refusal, healthy) = map_failure(&failure);
                settle(ticket, healthy);
                Err(call.refuse(refusal))
            }
        }
    }
}
