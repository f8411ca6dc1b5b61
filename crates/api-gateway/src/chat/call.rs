//! One `ApiCall` event per chat call, reported once, with its final status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use automation_proto::v1::{self, ApiStatus, Usage};

use super::Refusal;
use crate::server::Gateway;
use crate::upstream::{Attempts, TokenUsage};

/// One request's facts, reported when it ends.
pub(crate) struct Call {
    pub(super) gateway: Arc<Gateway>,
    pub(super) model: String,
    started: Instant,
    pub(super) ttft: Option<Duration>,
    pub(super) usage: TokenUsage,
    pub(super) attempts: Attempts,
    reported: bool,
    /// Holds a concurrency slot: not counted in the in-flight figure it
    /// reports, since it is finishing.
    pub(super) holds_slot: bool,
    /// The call's span (none while tracing is off), parent of its
    /// upstream attempts; ends when the call does.
    pub(super) span: tracing::Span,
}

impl Call {
    /// A call of `model` (the requested one; "other" in metrics when it is
    /// not configured), starting now.
    pub(crate) fn new(gateway: &Arc<Gateway>, model: &str) -> Self {
        Self {
            gateway: Arc::clone(gateway),
            model: model.to_owned(),
            started: Instant::now(),
            ttft: None,
            usage: TokenUsage::default(),
            attempts: Attempts::default(),
            reported: false,
            holds_slot: false,
            span: if automation_telemetry::trace::enabled() {
                tracing::info_span!(
                    "chat",
                    gen_ai.request.model = gateway.models.label(model),
                    gateway.status = tracing::field::Empty,
                    error.kind = tracing::field::Empty,
                    gen_ai.usage.input_tokens = tracing::field::Empty,
                    gen_ai.usage.output_tokens = tracing::field::Empty,
                    otel.status_code = tracing::field::Empty,
                )
            } else {
                tracing::Span::none()
            },
        }
    }

    /// The upstream attempts it took.
    pub(super) fn attempts(&self) -> u32 {
        self.attempts.attempts
    }

    /// The cost, once the upstream sent usage (a call that failed before
    /// it has no cost to report, rather than a cost of zero).
    fn cost(&self) -> Option<f64> {
        if self.usage == TokenUsage::default() {
            return None;
        }
        self.gateway.models.cost(
            &self.model,
            self.usage.input_cache_hit,
            self.usage.input_cache_miss,
            self.usage.output,
        )
    }

    /// The usage and cost, as the client sees them.
    pub(super) fn usage(&self) -> Usage {
        Usage {
            input_cache_hit_tokens: self.usage.input_cache_hit,
            input_cache_miss_tokens: self.usage.input_cache_miss,
            output_tokens: self.usage.output,
            reasoning_tokens: self.usage.reasoning,
            cost_usd: self.cost(),
        }
    }

    /// Reports the call once, with its final status.
    pub(super) fn finish(&mut self, status: ApiStatus, error_kind: &str) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        self.span.in_scope(|| {
            tracing::info!(
                // A configured model's name, else "other": the client
                // chooses the text.
                model = self.gateway.models.label(&self.model),
                status = status.as_str_name(),
                error_kind,
                attempts = self.attempts.attempts,
                duration_ms = self.started.elapsed().as_millis() as u64,
                "chat call finished"
            );
        });
        if !self.span.is_none() {
            self.span.record("gateway.status", status.as_str_name());
            if !error_kind.is_empty() {
                self.span.record("error.kind", error_kind);
                self.span.record("otel.status_code", "ERROR");
            }
            self.span.record(
                "gen_ai.usage.input_tokens",
                self.usage.input_cache_hit + self.usage.input_cache_miss,
            );
            self.span
                .record("gen_ai.usage.output_tokens", self.usage.output);
        }
        let Some(reporter) = &self.gateway.reporter else {
            return;
        };
        reporter.report(v1::event::Payload::ApiCall(v1::ApiCall {
            model: self.gateway.models.label(&self.model).to_owned(),
            status: status as i32,
            duration_seconds: self.started.elapsed().as_secs_f64(),
            time_to_first_token_seconds: self.ttft.map(|d| d.as_secs_f64()),
            input_cache_hit_tokens: self.usage.input_cache_hit,
            input_cache_miss_tokens: self.usage.input_cache_miss,
            output_tokens: self.usage.output,
            reasoning_tokens: self.usage.reasoning,
            retries: self.attempts.retries.iter().map(|r| *r as i32).collect(),
            rate_limited_responses: self.attempts.rate_limited,
            cost_usd: self.cost(),
            error_kind: error_kind.to_owned(),
            in_flight_requests: self
                .gateway
                .concurrency
                .in_flight()
                .saturating_sub(u64::from(self.holds_slot)),
        }));
    }

    /// Reports a refusal and returns it.
    pub(crate) fn refuse(&mut self, refusal: Refusal) -> Refusal {
        self.finish(refusal.status, refusal.kind);
        refusal
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // Ended without an outcome: the client went away.
        self.finish(ApiStatus::Cancelled, "cancelled");
    }
}
