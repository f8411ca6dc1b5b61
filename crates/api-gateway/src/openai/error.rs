//! The HTTP door's errors, as OpenAI-shaped JSON with an HTTP status: the
//! one place this door maps errors to responses.
//!
//! | refusal | status | `type` |
//! |---|---|---|
//! | invalid request (the gateway's checks, the upstream's 4xx), answer over 4 MiB | 400 | `invalid_request_error` |
//! | missing or unaccepted client token | 401 | `authentication_error` |
//! | the upstream account has no balance (its 402) | 402 | `insufficient_quota` |
//! | the upstream refused the gateway's key (its 401) | 403 | `permission_error` |
//! | unknown model (`GET /v1/models/{id}`) or path | 404 | `invalid_request_error` |
//! | wrong method | 405 | `invalid_request_error` |
//! | request body not whole within the body time limit | 408 | `invalid_request_error` |
//! | request over 4 MiB | 413 | `invalid_request_error` |
//! | client rate limit, concurrency limit, the upstream's 429 after retries | 429 + `Retry-After` | `rate_limit_error` |
//! | upstream 5xx, broken connection or stream | 502 | `server_error` |
//! | circuit open (+ `Retry-After`), no DeepSeek key configured | 503 | `server_error` |
//! | a time limit (first token, between events, whole request) | 504 | `server_error` |
//!
//! `code` is the error kind the metrics count (`client_rate_limit`,
//! `rate_limited`, `timeout` …), or `invalid_api_key`, `model_not_found`.
//! A wait goes out as `Retry-After` in whole seconds (rounded up) and as
//! `retry-after-ms`, which OpenAI's SDKs prefer.

use axum::http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::chat::{Class, Refusal};

/// Why the door answers with an error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// Refused or failed in the shared call path (or by this door's reading
    /// of the request, reported the same way); `param` names the field.
    #[error("{}", .refusal.message)]
    Refused {
        /// The refusal.
        refusal: Refusal,
        /// The request field at fault, when known.
        param: Option<String>,
    },
    /// No bearer token, or one that is not accepted.
    #[error("{0}")]
    Unauthenticated(String),
    /// The request body did not arrive whole in time.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// The request body could not be read (the client went away).
    #[error("reading the request body failed: {0}")]
    Body(String),
    /// No such model upstream.
    #[error("the model {0:?} does not exist")]
    UnknownModel(String),
    /// No such path.
    #[error("no such endpoint; this door serves POST /v1/chat/completions and GET /v1/models")]
    NotFound,
    /// A known path with the wrong method.
    #[error("method not allowed for this endpoint")]
    MethodNotAllowed,
}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Self {
        Self::Refused {
            refusal,
            param: None,
        }
    }
}

impl Error {
    /// The status, `type`, `code`, `param` and wait of the answer.
    fn parts(
        &self,
    ) -> (
        StatusCode,
        &'static str,
        &str,
        Option<&str>,
        Option<std::time::Duration>,
    ) {
        const INVALID: &str = "invalid_request_error";
        match self {
            Self::Refused { refusal, param } => {
                let (status, kind) = match refusal.class {
                    Class::Invalid | Class::AnswerTooLarge => (StatusCode::BAD_REQUEST, INVALID),
                    Class::RequestTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, INVALID),
                    Class::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
                    Class::PaymentRequired => (StatusCode::PAYMENT_REQUIRED, "insufficient_quota"),
                    Class::KeyRejected => (StatusCode::FORBIDDEN, "permission_error"),
                    Class::Upstream => (StatusCode::BAD_GATEWAY, "server_error"),
                    Class::CircuitOpen | Class::NotConfigured => {
                        (StatusCode::SERVICE_UNAVAILABLE, "server_error")
                    }
                    Class::Timeout => (StatusCode::GATEWAY_TIMEOUT, "server_error"),
                };
                (
                    status,
                    kind,
                    refusal.kind,
                    param.as_deref(),
                    refusal.retry_after,
                )
            }
            Self::Unauthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_api_key",
                None,
                None,
            ),
            Self::BodyTimeout(_) => (
                StatusCode::REQUEST_TIMEOUT,
                INVALID,
                "request_body_timeout",
                None,
                None,
            ),
            Self::Body(_) => (
                StatusCode::BAD_REQUEST,
                INVALID,
                "invalid_request",
                None,
                None,
            ),
            Self::UnknownModel(_) => (
                StatusCode::NOT_FOUND,
                INVALID,
                "model_not_found",
                Some("model"),
                None,
            ),
            Self::NotFound => (StatusCode::NOT_FOUND, INVALID, "not_found", None, None),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                INVALID,
                "method_not_allowed",
                None,
                None,
            ),
        }
    }

    /// The `{"error": {message, type, param, code}}` object, also sent as
    /// the event that ends a broken stream.
    pub(crate) fn body(&self) -> Value {
        let (_, kind, code, param, _) = self.parts();
        json!({ "error": { "message": self.to_string(), "type": kind, "param": param, "code": code } })
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, _, _, _, wait) = self.parts();
        let mut response = Response::new(self.body().to_string().into());
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(wait) = wait {
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
            headers.insert(RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
            headers.insert("retry-after-ms", HeaderValue::from(ms));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
