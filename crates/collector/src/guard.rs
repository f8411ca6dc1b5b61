//! The cardinality guard: a ceiling on the label sets of each metric across
//! all instances. A new free label value (an error kind, a model, a currency,
//! a version) past the ceiling is folded into `other` and counted in
//! `collector_series_limited_total{metric}`. Label sets are counted, not
//! bucket series.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::catalog::METRICS;

/// Label sets per metric, and the ceiling.
#[derive(Debug)]
pub struct Guard {
    max_per_metric: usize,
    counts: Vec<AtomicUsize>,
}

impl Guard {
    /// A guard allowing `max_per_metric` label sets per metric.
    pub fn new(max_per_metric: usize) -> Self {
        Self {
            max_per_metric,
            counts: METRICS.iter().map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// Whether `n` more label sets of metric `id` fit under the ceiling.
    pub fn admits(&self, id: usize, n: usize) -> bool {
        self.counts[id].load(Ordering::Relaxed) + n <= self.max_per_metric
    }

    /// `n` label sets of metric `id` were registered.
    pub fn add(&self, id: usize, n: usize) {
        self.counts[id].fetch_add(n, Ordering::Relaxed);
    }

    /// `n` label sets of metric `id` went away with their instance.
    pub fn remove(&self, id: usize, n: usize) {
        self.counts[id].fetch_sub(n, Ordering::Relaxed);
    }

    /// Label sets of metric `id` now.
    pub fn count(&self, id: usize) -> usize {
        self.counts[id].load(Ordering::Relaxed)
    }
}
