//! The account calls: the upstream's models (`GET /models`) and balance
//! (`GET /user/balance`), one attempt each.

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap};
use reqwest::{StatusCode, Url};
use serde_json::Value;
use tokio::time::{Instant, timeout_at};
use tracing::Instrument;

use super::Upstream;
use super::client::upstream_trace_headers;
use super::failure::{
    AttemptError, Attempts, Failure, FailureKind, ReadError, deadline_message, http_error,
    read_bounded,
};
use super::wire::{CurrencyBalance, UpstreamBalance, UpstreamModel};
use crate::redact::Redactor;

/// Most bytes of a `/models` or `/user/balance` answer.
const MAX_JSON_BODY: usize = 4 * 1024 * 1024;

impl Upstream {
    /// The upstream's models (`GET /models`). No retries; connect timeout and
    /// `total_timeout` apply.
    pub async fn models(&self) -> Result<Vec<UpstreamModel>, Failure> {
        let value = self.get_json(&self.inner.models_url).await?;
        let Some(data) = value.get("data").and_then(Value::as_array) else {
            return Err(self.protocol_once("the upstream's model list has no \"data\" array"));
        };
        let mut models = Vec::with_capacity(data.len());
        for entry in data {
            let Some(id) = entry.get("id").and_then(Value::as_str) else {
                return Err(self.protocol_once("a model in the upstream's list has no \"id\""));
            };
            let owned_by = entry
                .get("owned_by")
                .and_then(Value::as_str)
                .unwrap_or_default();
            models.push(UpstreamModel {
                id: id.to_owned(),
                owned_by: owned_by.to_owned(),
            });
        }
        Ok(models)
    }

    /// The account balance (`GET /user/balance`). No retries; connect timeout
    /// and `total_timeout` apply.
    pub async fn balance(&self) -> Result<UpstreamBalance, Failure> {
        let value = self.get_json(&self.inner.balance_url).await?;
        let redactor = self.redactor();
        let Some(is_available) = value.get("is_available").and_then(Value::as_bool) else {
            return Err(self.protocol_once("the upstream's balance has no \"is_available\""));
        };
        let infos = match value.get("balance_infos") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(infos)) => &infos[..],
            Some(_) => {
                return Err(self.protocol_once("the upstream's \"balance_infos\" is not a list"));
            }
        };
        let mut balances = Vec::with_capacity(infos.len());
        for info in infos {
            let amount = |field: &str| -> Result<f64, Failure> {
                match info.get(field) {
                    None | Some(Value::Null) => Ok(0.0),
                    Some(Value::Number(n)) => n.as_f64().ok_or_else(|| {
                        self.protocol_once(&format!("bad balance amount {field}: {n}"))
                    }),
                    Some(Value::String(s)) => s
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .ok_or_else(|| {
                            self.protocol_once(&format!(
                                "bad balance amount {field}: {:?}",
                                redactor.cut(s, 50)
                            ))
                        }),
                    Some(other) => Err(self.protocol_once(&format!(
                        "bad balance amount {field}: {}",
                        redactor.cut(&other.to_string(), 50)
                    ))),
                }
            };
            let currency = info
                .get("currency")
                .and_then(Value::as_str)
                .unwrap_or_default();
            // A label value (and a field of GetBalance): refused rather than
            // passed on when it holds a piece of the key, and then not quoted.
            if redactor.leaks(currency) {
                return Err(self.protocol_once(
                    "the upstream's balance names a currency that holds (part of) the API key",
                ));
            }
            // Short, or refused rather than passed on.
            if currency.is_empty()
                || currency.len() > 16
                || !currency.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return Err(self.protocol_once(&format!(
                    "bad balance currency {:?}",
                    redactor.cut(currency, 20)
                )));
            }
            balances.push(CurrencyBalance {
                currency: currency.to_owned(),
                total: amount("total_balance")?,
                granted: amount("granted_balance")?,
                topped_up: amount("topped_up_balance")?,
            });
        }
        Ok(UpstreamBalance {
            is_available,
            balances,
        })
    }

    /// A redactor for the key as configured now.
    fn redactor(&self) -> Redactor {
        Redactor::new(self.inner.key.get().as_deref().unwrap_or_default())
    }

    /// A protocol failure of a one-attempt call (models, balance).
    fn protocol_once(&self, message: &str) -> Failure {
        AttemptError::new(FailureKind::Protocol, self.redactor().redact(message), None)
            .into_failure(Attempts {
                attempts: 1,
                ..Attempts::default()
            })
    }

    /// `GET url` as JSON, one attempt.
    async fn get_json(&self, url: &Url) -> Result<Value, Failure> {
        let (redactor, auth) = self.auth()?;
        let mut attempts = Attempts {
            attempts: 1,
            ..Attempts::default()
        };
        let start = Instant::now();
        let deadline = start + self.inner.config.total_timeout;
        let span = if automation_telemetry::trace::enabled() {
            tracing::info_span!(
                "upstream.request",
                otel.kind = "client",
                url.path = url.path(),
                http.response.status_code = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        let mut traced = HeaderMap::new();
        span.in_scope(|| upstream_trace_headers(&mut traced));
        let request = self
            .inner
            .client
            .get(url.clone())
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, "application/json")
            .headers(traced);
        let timeout = || {
            AttemptError::new(
                FailureKind::Timeout,
                deadline_message(start, deadline),
                None,
            )
        };
        let response = match timeout_at(deadline, request.send().instrument(span.clone())).await {
            Err(_) => return Err(timeout().into_failure(attempts)),
            Ok(Err(e)) => return Err(self.send_error(&e, &redactor).into_failure(attempts)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        if status == StatusCode::TOO_MANY_REQUESTS {
            attempts.rate_limited += 1;
        }
        if !status.is_success() {
            return Err(http_error(response, deadline, &redactor)
                .await
                .into_failure(attempts));
        }
        let body = match read_bounded(response, deadline, MAX_JSON_BODY).await {
            Ok(body) => body,
            Err(ReadError::Timeout) => return Err(timeout().into_failure(attempts)),
            Err(ReadError::Transport(message)) => {
                return Err(AttemptError::new(
                    FailureKind::Connection,
                    redactor.redact(&format!("reading the upstream's answer failed: {message}")),
                    None,
                )
                .into_failure(attempts));
            }
        };
        serde_json::from_slice(&body).map_err(|e| {
            AttemptError::new(
                FailureKind::Protocol,
                format!("the upstream's answer is not JSON: {e}"),
                None,
            )
            .into_failure(attempts)
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::upstream::test_support::client;
    use automation_testkit::upstream::FakeUpstream;

    #[tokio::test]
    async fn balance_accepts_string_and_number_amounts() {
        let fake = FakeUpstream::start().await;
        fake.set_balance(json!({"is_available": true, "balance_infos": [
            {"currency": "CNY", "total_balance": "110.00", "granted_balance": "10.00",
             "topped_up_balance": "100.00"},
            {"currency": "USD", "total_balance": 2.5, "granted_balance": 0,
             "topped_up_balance": 2.5}]}));
        let balance = client(&fake).balance().await.unwrap();
        assert_eq!(
            balance,
            UpstreamBalance {
                is_available: true,
                balances: vec![
                    CurrencyBalance {
                        currency: "CNY".to_owned(),
                        total: 110.0,
                        granted: 10.0,
                        topped_up: 100.0
                    },
                    CurrencyBalance {
                        currency: "USD".to_owned(),
                        total: 2.5,
                        granted: 0.0,
                        topped_up: 2.5
                    },
                ]
            }
        );
        fake.set_balance(json!({"is_available": false, "balance_infos": [
            {"currency": "CNY", "total_balance": "lots"}]}));
        let failure = client(&fake).balance().await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Protocol);
        fake.stop().await;
    }

    #[tokio::test]
    async fn models_are_listed() {
        let fake = FakeUpstream::start().await;
        let upstream = client(&fake);
        let models = upstream.models().await.unwrap();
        assert!(
            models
                .iter()
                .any(|m| m.id == "deepseek-chat" && m.owned_by == "deepseek")
        );
        fake.set_models(json!({"object": "list", "data": [{"id": "m1"}]}));
        assert_eq!(
            upstream.models().await.unwrap(),
            vec![UpstreamModel {
                id: "m1".to_owned(),
                owned_by: String::new()
            }]
        );
        fake.fail_models(503);
        let failure = upstream.models().await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Server);
        assert_eq!(failure.status, Some(503));
        assert_eq!(failure.attempts.attempts, 1);
        fake.stop().await;
    }
}
