//! W3C trace context (`traceparent`, `tracestate`) in and out: injected
//! into every outgoing gRPC call and HTTP request, taken from every request
//! served.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// HTTP headers as a carrier of trace context.
struct HeaderCarrier<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// gRPC metadata as a carrier of trace context.
struct MetadataCarrier<'a>(pub &'a mut MetadataMap);

impl Injector for MetadataCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Read-only headers, for extraction.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Adds the current span's trace context to outgoing HTTP headers (nothing
/// while tracing is off).
pub fn inject_headers(headers: &mut HeaderMap) {
    if super::enabled() {
        let cx = tracing::Span::current().context();
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderCarrier(headers));
    }
}

/// Adds the current span's trace context to an outgoing gRPC call's
/// metadata (nothing while tracing is off).
pub fn inject_metadata(metadata: &mut MetadataMap) {
    if super::enabled() {
        let cx = tracing::Span::current().context();
        TraceContextPropagator::new().inject_context(&cx, &mut MetadataCarrier(metadata));
    }
}

/// Makes `span` a child of the trace context `headers` carry, if any (an
/// invalid `traceparent` is ignored: the span starts a new trace).
pub fn set_parent(span: &tracing::Span, headers: &HeaderMap) {
    if super::enabled() && headers.contains_key("traceparent") {
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        let _ = span.set_parent(parent);
    }
}
