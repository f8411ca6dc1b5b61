//! Distributed tracing: spans exported over OTLP, W3C trace context carried
//! on every hop, and the trace id in the JSON logs.
//!
//! Export is configured by the standard OpenTelemetry variables and is off
//! unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set:
//!
//! * `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`
//!   (`http/protobuf`, the default, or `grpc`), `OTEL_EXPORTER_OTLP_HEADERS`,
//!   `OTEL_EXPORTER_OTLP_TIMEOUT`;
//! * `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default
//!   `parentbased_always_on`);
//! * `OTEL_SERVICE_NAME` (default: the program's name) and
//!   `OTEL_RESOURCE_ATTRIBUTES`;
//! * `OTEL_BSP_MAX_QUEUE_SIZE` (2048), `OTEL_BSP_SCHEDULE_DELAY`,
//!   `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`;
//! * `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off.
//!
//! Off, nothing is created per request: [`enabled`] is false, the serving
//! layer passes requests straight through and nothing is injected.
//!
//! Export never blocks or slows a request: a finished span is handed to a
//! bounded queue that a separate thread exports; when the queue is full or
//! an export fails the spans are dropped and counted ([`spans_dropped`],
//! sent in every heartbeat as `automation_trace_spans_dropped_total`).

mod export;
mod json;
mod propagate;
mod serve;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

pub(crate) use json::WithTraceIds;
pub use propagate::{inject_headers, inject_metadata, set_parent};
pub use serve::{ServerSpan, ServerSpanLayer};

static ENABLED: AtomicBool = AtomicBool::new(false);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Whether spans are exported (set once, by [`crate::logging::init`]).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Marks the export as running, once its layer is installed.
pub(crate) fn set_enabled() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Spans dropped since the process started: the export queue was full, or
/// the export failed (the collector of traces is down or refused them).
pub fn spans_dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The export pipeline, while it runs. [`Tracing::shutdown`] exports what
/// is queued (within five seconds) before the process exits.
#[derive(Debug, Default)]
#[must_use = "dropping it without `shutdown` loses the spans still queued"]
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Whether spans are exported.
    pub fn enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still queued (within five seconds) and stops.
    pub async fn shutdown(self) {
        self.shutdown_within(Duration::from_secs(5)).await;
    }

    /// Exports the spans still queued and stops, giving up after `limit`
    /// (a command-line tool should not hang on an unreachable backend).
    /// Runs off the async workers, since the exporter may need the runtime
    /// to make progress meanwhile.
    pub async fn shutdown_within(mut self, limit: Duration) {
        if let Some(provider) = self.provider.take() {
            ENABLED.store(false, Ordering::Relaxed);
            let stopped =
                tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(limit));
            if let Ok(Ok(Err(error))) = tokio::time::timeout(limit, stopped).await {
                tracing::debug!(%error, "the trace exporter did not stop cleanly");
            }
        }
    }
}

/// Why the export pipeline could not be built (the process runs on without
/// it and says so in its log).
#[derive(Debug, thiserror::Error)]
#[error("tracing is off: {0}")]
pub(crate) struct TracingError(String);

/// Whether the environment asks for export.
fn wanted() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let is = |name: &str, value: &str| {
        std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !is("OTEL_SDK_DISABLED", "true")
        && !is("OTEL_TRACES_EXPORTER", "none")
}

/// The resource: `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` as
/// the SDK reads them, `service` when neither names the service.
fn resource(service: &str) -> Resource {
    let from_env = Resource::builder().build();
    let named = from_env
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named {
        from_env
    } else {
        Resource::builder()
            .with_service_name(service.to_owned())
            .build()
    }
}

/// The OpenTelemetry layer for `service`, when the environment asks for
/// export; must be called inside a Tokio runtime (the gRPC exporter's
/// channel needs one). Only the platform's own spans at INFO and above are
/// exported: libraries' spans would flood the traces, and the exporter's
/// own HTTP calls must never be traced.
pub(crate) fn layer<S>(
    service: &str,
) -> (
    Option<Box<dyn Layer<S> + Send + Sync + 'static>>,
    Tracing,
    Option<TracingError>,
)
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    if !wanted() {
        return (None, Tracing::default(), None);
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder().build() {
        Ok(exporter) => exporter,
        Err(error) => {
            return (
                None,
                Tracing::default(),
                Some(TracingError(error.to_string())),
            );
        }
    };
    let provider = SdkTracerProvider::builder()
        .with_span_processor(export::bounded(exporter))
        .with_resource(resource(service))
        .build();
    let tracer = provider.tracer("automation");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_threads(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.target().starts_with("automation") && *meta.level() <= tracing::Level::INFO
        }));
    (
        Some(Box::new(layer)),
        Tracing {
            provider: Some(provider),
        },
        None,
    )
}
