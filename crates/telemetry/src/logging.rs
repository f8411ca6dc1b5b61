//! Logging and tracing setup: human-readable text locally, JSON lines in
//! production (with `trace_id` and `span_id` while a traced span is
//! current), and spans exported over OTLP when the environment asks for
//! it (see [`crate::trace`]). The log level comes from `RUST_LOG` (default
//! `info`).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::trace::{self, Tracing, WithTraceIds};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber for `service` (the default
/// `service.name` of its spans): logs to stderr in `format`, or none at
/// all, and the span export when configured. Must be called inside a Tokio
/// runtime. A second call (tests) leaves the first in place and returns an
/// idle [`Tracing`].
pub fn init(format: Option<LogFormat>, service: &str) -> Tracing {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = format.map(|format| {
        let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        match format {
            LogFormat::Text => layer.with_filter(filter()).boxed(),
            LogFormat::Json => layer
                .fmt_fields(JsonFields::new())
                .event_format(WithTraceIds(
                    tracing_subscriber::fmt::format().json().flatten_event(true),
                ))
                .with_filter(filter())
                .boxed(),
        }
    });
    let (spans, tracing, error) = trace::layer(service);
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init();
    if installed.is_err() {
        return Tracing::default();
    }
    if let Some(error) = error {
        tracing::error!(%error, "spans are not exported");
    } else if tracing.enabled() {
        trace::set_enabled();
        tracing::info!(service, "exporting spans over OTLP");
    }
    tracing
}
