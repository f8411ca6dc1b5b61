//! The OTLP series of one instance, and the collector-wide guard on them.
//!
//! OTLP points arrive already aggregated (a histogram's bucket counts, a
//! sum as a double), which the Prometheus exporter's recorder cannot take:
//! it buckets samples itself and counts in whole numbers. So each instance
//! keeps its OTLP series here, beside its recorder, and they go with the
//! instance (idle expiry, eviction) exactly like its other series.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::names::Shape;
use crate::render::label_value;

/// A label set: sorted by name, without `component` and `component_instance`.
pub type LabelSet = Vec<(String, String)>;

/// Why a point was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The name is already in use with another shape (a gauge and a counter
    /// of one name, say), or is one of the platform's own metrics.
    Conflict,
    /// The collector holds `max_names` OTLP metric names already.
    TooManyNames,
    /// The metric has `max_series_per_name` label sets already.
    TooManySeries,
    /// The collector holds `max_series` OTLP label sets already.
    TooManyInAll,
}

#[derive(Debug)]
struct NameEntry {
    shape: Shape,
    help: String,
    series: usize,
}

/// Bounds on OTLP series across every instance: metric names, label sets
/// per name and in all. A name's shape and help are those it was first
/// seen with.
#[derive(Debug)]
pub struct OtlpGuard {
    max_names: usize,
    max_series_per_name: usize,
    max_series: usize,
    names: Mutex<Names>,
}

#[derive(Debug, Default)]
struct Names {
    by_name: HashMap<String, NameEntry>,
    series: usize,
}

/// The lines a histogram `name` writes besides its own name.
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

impl OtlpGuard {
    /// At most `max_names` names, `max_series_per_name` label sets each
    /// and `max_series` in all.
    pub fn new(max_names: usize, max_series_per_name: usize, max_series: usize) -> Self {
        Self {
            max_names,
            max_series_per_name,
            max_series,
            names: Mutex::default(),
        }
    }

    /// Makes room for one more label set of `name`; its help text.
    fn admit(&self, name: &str, shape: Shape, help: &str) -> Result<String, Refusal> {
        let mut guarded = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        if guarded.series >= self.max_series {
            return Err(Refusal::TooManyInAll);
        }
        let names = &mut guarded.by_name;
        if !names.contains_key(name) {
            if names.len() >= self.max_names {
                return Err(Refusal::TooManyNames);
            }
            // A histogram's lines must not meet another metric's.
            let clash = match shape {
                Shape::Histogram => HISTOGRAM_SUFFIXES
                    .iter()
                    .any(|suffix| names.contains_key(&format!("{name}{suffix}"))),
                _ => HISTOGRAM_SUFFIXES.iter().any(|suffix| {
                    name.strip_suffix(suffix)
                        .and_then(|base| names.get(base))
                        .is_some_and(|entry| entry.shape == Shape::Histogram)
                }),
            };
            if clash {
                return Err(Refusal::Conflict);
            }
        }
        let entry = names.entry(name.to_owned()).or_insert_with(|| NameEntry {
            shape,
            help: help.to_owned(),
            series: 0,
        });
        if entry.shape != shape {
            return Err(Refusal::Conflict);
        }
        if entry.series >= self.max_series_per_name {
            return Err(Refusal::TooManySeries);
        }
        entry.series += 1;
        let help = entry.help.clone();
        guarded.series += 1;
        Ok(help)
    }

    /// The shape `name` has, when it has one.
    fn shape(&self, name: &str) -> Option<Shape> {
        let names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        names.by_name.get(name).map(|entry| entry.shape)
    }

    /// `count` label sets of `name` went away.
    fn release(&self, name: &str, count: usize) {
        let mut guarded = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        guarded.series = guarded.series.saturating_sub(count);
        if let Some(entry) = guarded.by_name.get_mut(name) {
            entry.series = entry.series.saturating_sub(count);
            if entry.series == 0 {
                guarded.by_name.remove(name);
            }
        }
    }

    /// OTLP metric names held now.
    pub fn names(&self) -> usize {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_name
            .len()
    }
}

/// What a point does to its series.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// Takes this value (a gauge, a cumulative sum).
    Set(f64),
    /// Adds this value (a delta sum).
    Add(f64),
    /// A histogram: cumulative points replace it, delta points add to it
    /// (or replace it when the bounds changed).
    Histogram {
        /// Upper bounds, increasing.
        bounds: Vec<f64>,
        /// Per-bucket counts, one more than the bounds.
        counts: Vec<u64>,
        /// Sum of the observations.
        sum: f64,
        /// Delta temporality.
        delta: bool,
    },
}

#[derive(Debug, Clone)]
enum Value {
    Number(f64),
    Histogram {
        bounds: Vec<f64>,
        counts: Vec<u64>,
        sum: f64,
    },
}

#[derive(Debug)]
struct Family {
    shape: Shape,
    help: String,
    series: HashMap<LabelSet, Value>,
}

/// One instance's OTLP series.
#[derive(Debug)]
pub struct OtlpSeries {
    guard: Arc<OtlpGuard>,
    families: Mutex<BTreeMap<String, Family>>,
    last_export: Mutex<Option<Instant>>,
}

impl OtlpSeries {
    /// Empty, under `guard`.
    pub fn new(guard: Arc<OtlpGuard>) -> Self {
        Self {
            guard,
            families: Mutex::default(),
            last_export: Mutex::default(),
        }
    }

    /// An export arrived at `now`: the time since the one before, if any
    /// (how often this sender exports).
    pub fn exported(&self, now: Instant) -> Option<Duration> {
        let mut last = self
            .last_export
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let gap = last.map(|before| now.saturating_duration_since(before));
        *last = Some(now);
        gap
    }

    /// Applies a point to the series `name`/`labels` (of `shape`, described
    /// by `help` when new).
    pub fn record(
        &self,
        name: &str,
        shape: Shape,
        help: &str,
        labels: LabelSet,
        update: Update,
    ) -> Result<(), Refusal> {
        let mut families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(family) = families.get_mut(name) {
            if family.shape != shape {
                return Err(Refusal::Conflict);
            }
            if let Some(value) = family.series.get_mut(&labels) {
                apply(value, update);
                return Ok(());
            }
        } else if self.guard.shape(name).is_some_and(|s| s != shape) {
            return Err(Refusal::Conflict);
        }
        let help = self.guard.admit(name, shape, help)?;
        let family = families.entry(name.to_owned()).or_insert_with(|| Family {
            shape,
            help,
            series: HashMap::new(),
        });
        let mut value = match &update {
            Update::Histogram { bounds, .. } => Value::Histogram {
                bounds: bounds.clone(),
                counts: vec![0; bounds.len() + 1],
                sum: 0.0,
            },
            _ => Value::Number(0.0),
        };
        apply(&mut value, update);
        family.series.insert(labels, value);
        Ok(())
    }

    /// Appends the series in the text format, each with the instance's
    /// `labels` (see [`instance_labels`](crate::render::instance_labels)).
    pub fn render(&self, labels: &str, out: &mut String) {
        let families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, family) in families.iter() {
            let kind = match family.shape {
                Shape::Counter => "counter",
                Shape::Gauge => "gauge",
                Shape::Histogram => "histogram",
            };
            let help = family.help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (attributes, value) in &family.series {
                let mut set = labels.to_owned();
                for (key, value) in attributes {
                    let _ = write!(set, ",{key}=\"{}\"", label_value(value));
                }
                match value {
                    Value::Number(v) => {
                        let _ = writeln!(out, "{name}{{{set}}} {}", number(*v));
                    }
                    Value::Histogram {
                        bounds,
                        counts,
                        sum,
                    } => {
                        let mut cumulative = 0u64;
                        for (i, count) in counts.iter().enumerate() {
                            cumulative = cumulative.saturating_add(*count);
                            let le = bounds.get(i).map_or("+Inf".to_owned(), |b| number(*b));
                            let _ =
                                writeln!(out, "{name}_bucket{{{set},le=\"{le}\"}} {cumulative}");
                        }
                        let _ = writeln!(out, "{name}_sum{{{set}}} {}", number(*sum));
                        let _ = writeln!(out, "{name}_count{{{set}}} {cumulative}");
                    }
                }
            }
        }
        out.push('\n');
    }
}

impl Drop for OtlpSeries {
    fn drop(&mut self) {
        let families = self
            .families
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for (name, family) in families.iter() {
            self.guard.release(name, family.series.len());
        }
    }
}

fn apply(value: &mut Value, update: Update) {
    match (value, update) {
        (Value::Number(v), Update::Set(x)) => *v = x,
        (Value::Number(v), Update::Add(x)) => *v += x,
        (
            value @ Value::Histogram { .. },
            Update::Histogram {
                bounds: new_bounds,
                counts: new_counts,
                sum: new_sum,
                delta,
            },
        ) => {
            if let Value::Histogram {
                bounds,
                counts,
                sum,
            } = value
                && delta
                && *bounds == new_bounds
            {
                for (count, add) in counts.iter_mut().zip(&new_counts) {
                    *count = count.saturating_add(*add);
                }
                *sum += new_sum;
                return;
            }
            *value = Value::Histogram {
                bounds: new_bounds,
                counts: new_counts,
                sum: new_sum,
            };
        }
        // A point's shape always matches its family's: checked by `record`.
        _ => {}
    }
}

/// A sample value as the text format writes it.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn sums_gauges_and_histograms_render_as_prometheus_text() {
        let guard = Arc::new(OtlpGuard::new(10, 10, 100));
        let series = OtlpSeries::new(Arc::clone(&guard));
        let l = labels(&[("route", "/a\"b")]);
        series
            .record(
                "orders_total",
                Shape::Counter,
                "Orders.",
                l.clone(),
                Update::Add(2.0),
            )
            .unwrap();
        series
            .record(
                "orders_total",
                Shape::Counter,
                "",
                l.clone(),
                Update::Add(3.0),
            )
            .unwrap();
        series
            .record(
                "temp",
                Shape::Gauge,
                "Temp.",
                labels(&[]),
                Update::Set(-1.5),
            )
            .unwrap();
        let histogram = |counts: Vec<u64>, delta| Update::Histogram {
            bounds: vec![0.1, 1.0],
            counts,
            sum: 2.5,
            delta,
        };
        series
            .record(
                "lat_seconds",
                Shape::Histogram,
                "Latency.",
                labels(&[]),
                histogram(vec![1, 2, 0], true),
            )
            .unwrap();
        series
            .record(
                "lat_seconds",
                Shape::Histogram,
                "",
                labels(&[]),
                histogram(vec![1, 0, 1], true),
            )
            .unwrap();
        let mut text = String::new();
        series.render(&crate::render::instance_labels("shop", "pod-1"), &mut text);
        let common = "component=\"shop\",component_instance=\"pod-1\"";
        assert!(
            text.contains(&format!("orders_total{{{common},route=\"/a\\\"b\"}} 5.0\n")),
            "{text}"
        );
        assert!(text.contains(&format!("temp{{{common}}} -1.5\n")), "{text}");
        assert!(
            text.contains(&format!("lat_seconds_bucket{{{common},le=\"0.1\"}} 2\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("lat_seconds_bucket{{{common},le=\"1.0\"}} 4\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("lat_seconds_bucket{{{common},le=\"+Inf\"}} 5\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("lat_seconds_sum{{{common}}} 5.0\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("lat_seconds_count{{{common}}} 5\n")),
            "{text}"
        );
        assert!(text.contains("# TYPE lat_seconds histogram\n"), "{text}");
        assert!(text.contains("# HELP orders_total Orders.\n"), "{text}");
        assert_eq!(guard.names(), 3);
        drop(series);
        assert_eq!(
            guard.names(),
            0,
            "an instance's series leave the guard with it"
        );
    }

    #[test]
    fn the_guard_bounds_names_series_and_shapes() {
        let guard = Arc::new(OtlpGuard::new(4, 2, 5));
        let a = OtlpSeries::new(Arc::clone(&guard));
        let b = OtlpSeries::new(Arc::clone(&guard));
        let set = |v: &str| labels(&[("k", v)]);
        let gauge = |series: &OtlpSeries, name: &str, v: &str| {
            series.record(name, Shape::Gauge, "", set(v), Update::Set(1.0))
        };
        gauge(&a, "x", "1").unwrap();
        gauge(&b, "x", "2").unwrap();
        assert_eq!(gauge(&a, "x", "3"), Err(Refusal::TooManySeries));
        assert_eq!(
            b.record("x", Shape::Counter, "", set("9"), Update::Add(1.0)),
            Err(Refusal::Conflict)
        );
        a.record("y", Shape::Counter, "", set("1"), Update::Add(1.0))
            .unwrap();
        // A gauge whose lines a histogram writes is refused.
        let histogram = Update::Histogram {
            bounds: vec![1.0],
            counts: vec![0, 1],
            sum: 1.0,
            delta: false,
        };
        a.record("h", Shape::Histogram, "", set("1"), histogram)
            .unwrap();
        assert_eq!(gauge(&b, "h_count", "1"), Err(Refusal::Conflict));
        gauge(&a, "w", "1").unwrap();
        assert_eq!(gauge(&a, "z", "1"), Err(Refusal::TooManyInAll));
        drop(b);
        assert_eq!(gauge(&a, "z", "1"), Err(Refusal::TooManyNames));
        // Updating a series it has costs nothing more.
        a.record("x", Shape::Gauge, "", set("1"), Update::Set(2.0))
            .unwrap();
    }
}
