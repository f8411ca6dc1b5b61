//! The bounded export queue, and the count of the spans it drops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor,
};

use super::DROPPED;

/// Spans waiting for export, at most, unless `OTEL_BSP_MAX_QUEUE_SIZE`
/// says otherwise.
const DEFAULT_QUEUE: usize = 2048;

/// A batch processor whose queue is counted here: a span that finds the
/// queue full is dropped (and counted) without waiting, and so is every
/// span of a failed export.
pub(super) fn bounded<E>(exporter: E) -> Bounded
where
    E: SpanExporter + 'static,
{
    let capacity = std::env::var("OTEL_BSP_MAX_QUEUE_SIZE")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    // The processor's own queue is as large as the count kept here, which
    // also counts the batch being exported: it never fills first.
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(capacity)
        .build();
    let inner = BatchSpanProcessor::builder(Counting {
        inner: exporter,
        queued: Arc::clone(&queued),
        failing: AtomicBool::new(false),
    })
    .with_batch_config(config)
    .build();
    Bounded {
        inner,
        queued,
        capacity,
    }
}

/// See [`bounded`].
#[derive(Debug)]
pub(super) struct Bounded {
    inner: BatchSpanProcessor,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter, releasing the queue's count once a batch is done and
/// counting the spans of a failed (or abandoned) export as dropped.
#[derive(Debug)]
struct Counting<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
    failing: AtomicBool,
}

/// Releases a batch's count when dropped; unless marked exported, its spans
/// are counted as dropped.
struct Release<'a> {
    queued: &'a AtomicUsize,
    spans: usize,
    exported: bool,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.queued.fetch_sub(self.spans, Ordering::AcqRel);
        if !self.exported {
            DROPPED.fetch_add(self.spans as u64, Ordering::Relaxed);
        }
    }
}

impl<E: SpanExporter> SpanExporter for Counting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut release = Release {
            queued: &self.queued,
            spans: batch.len(),
            exported: false,
        };
        let result = self.inner.export(batch).await;
        release.exported = result.is_ok();
        // Said once when exports start failing and once when they recover,
        // not for every batch.
        let was_failing = self.failing.swap(result.is_err(), Ordering::Relaxed);
        match &result {
            Err(error) if !was_failing => {
                tracing::warn!(%error, "exporting spans failed; spans are dropped (and counted) until it works again");
            }
            Ok(()) if was_failing => tracing::info!("exporting spans works again"),
            _ => {}
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
