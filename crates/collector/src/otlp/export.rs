//! One OTLP export applied: resources become instances, data points become
//! series of those instances, each point judged on its own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use automation_telemetry::auth::Binding;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, HistogramDataPoint, Metric, NumberDataPoint, metric::Data,
    number_data_point,
};

use super::names::{Shape, label_name, metric_name};
use super::store::{LabelSet, OtlpSeries, Refusal, Update};
use crate::apply::Reject;
use crate::catalog::{self, COMPONENTS, METRICS, PushCode, limits};
use crate::state::State;

/// The heartbeat interval assumed for an OTLP sender until its second
/// export shows its own: the SDKs' default export interval.
const FIRST_INTERVAL: Duration = Duration::from_secs(60);

/// What an export came to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Exported {
    /// Data points applied.
    pub accepted: u64,
    /// Data points refused, each for a reason counted in the metrics.
    pub rejected: u64,
    /// The first few reasons, for the sender.
    pub message: String,
}

/// An export refused whole.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The token may not push as a resource's service and instance.
    #[error("this token may push as {binding}, not as {service}/{instance}")]
    NotYours {
        /// What the token is bound to.
        binding: String,
        /// The resource's `service.name`.
        service: String,
        /// The resource's instance.
        instance: String,
    },
}

/// How a refused point is counted: rejected for a reason, or limited by
/// the guard (`collector_series_limited_total{metric="otlp"}`).
#[derive(Debug, Clone, Copy)]
enum Refused {
    Reject(Reject),
    Limited,
}

/// `service.name` and `service.instance.id` (else `host.name`) of a resource.
fn identity(attributes: &[KeyValue]) -> (String, String) {
    let get = |key: &str| {
        attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .map(text)
            .filter(|v| !v.is_empty())
    };
    let service = get("service.name").unwrap_or_else(|| "unknown_service".to_owned());
    let instance = get("service.instance.id")
        .or_else(|| get("host.name"))
        .unwrap_or_else(|| "unknown".to_owned());
    (service, instance)
}

/// An attribute value as a label value: strings as they are, other values
/// as JSON would write them.
fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::ArrayValue(array)) => {
            let items: Vec<String> = array.values.iter().map(json).collect();
            format!("[{}]", items.join(","))
        }
        Some(any_value::Value::KvlistValue(list)) => {
            let items: Vec<String> = list
                .values
                .iter()
                .map(|kv| {
                    let value = kv.value.as_ref().map_or("null".to_owned(), json);
                    format!("{}:{value}", serde_json::Value::from(kv.key.as_str()))
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
        Some(any_value::Value::BytesValue(bytes)) => {
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        }
        Some(any_value::Value::StringValueStrindex(_)) | None => String::new(),
    }
}

fn json(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => serde_json::Value::from(s.as_str()).to_string(),
        _ => text(value),
    }
}

impl State {
    /// Applies an OTLP export: refused whole only when the token may not
    /// push as one of its resources; otherwise each data point is applied
    /// or refused on its own, and the push counted.
    pub fn export(
        &self,
        request: &ExportMetricsServiceRequest,
        binding: Option<&Binding>,
    ) -> Result<Exported, ExportError> {
        let resources: Vec<(String, String)> = request
            .resource_metrics
            .iter()
            .map(|rm| identity(rm.resource.as_ref().map_or(&[][..], |r| &r.attributes)))
            .collect();
        if let Some(binding) = binding
            && let Some((service, instance)) = resources
                .iter()
                .find(|(service, instance)| !binding.allows(service, instance))
        {
            self.count_push(PushCode::PermissionDenied);
            return Err(ExportError::NotYours {
                binding: binding.to_string(),
                service: service.clone(),
                instance: instance.clone(),
            });
        }
        let now = Instant::now();
        let mut tally = Tally::default();
        let mut points = 0u64;
        let max = self.limits().max_label_length;
        for (rm, (service, instance)) in request.resource_metrics.iter().zip(&resources) {
            let metrics = rm.scope_metrics.iter().flat_map(|sm| &sm.metrics);
            let count: u64 = metrics.clone().map(point_count).sum();
            points += count;
            if service.len() > max || instance.len() > max {
                tally.refuse(Refused::Reject(Reject::LabelTooLong), count, || {
                    format!("service.name or instance of {service:.32}… over {max} bytes")
                });
                continue;
            }
            if RESERVED_SERVICES.contains(&service.as_str()) {
                tally.refuse(Refused::Reject(Reject::MetricConflict), count, || {
                    format!("service.name {service:?} is reserved")
                });
                continue;
            }
            if count == 0 {
                continue;
            }
            let inst = self.otlp_instance(service, instance, now);
            let series = inst.otlp(self.otlp_guard());
            // A platform component's heartbeats say its interval.
            if !COMPONENTS.contains(&service.as_str()) {
                let gap = series.exported(now);
                let mut live = inst.liveness();
                live.interval = export_interval(live.interval, gap, self.limits().max_silence);
            }
            for metric in metrics {
                apply_metric(series, metric, max, &mut tally);
            }
        }
        let own = self.own().collector();
        own.received.nth(catalog::EVENT_OTLP).increment(points);
        for (i, n) in tally.rejected.iter().enumerate().filter(|(_, n)| **n > 0) {
            own.rejected.nth(i).increment(*n);
        }
        if tally.limited > 0 {
            self.count_limited_otlp(tally.limited);
        }
        self.count_push(PushCode::Ok);
        Ok(Exported {
            accepted: tally.accepted,
            rejected: tally.rejected.iter().sum::<u64>() + tally.limited,
            message: tally.message,
        })
    }
}

/// Service names an OTLP sender may not take: the collector's own, and the
/// `component` labels of what is folded past the instance limit.
const RESERVED_SERVICES: [&str; 3] = ["collector", crate::catalog::OTHER, OTLP_FOLDED];

/// The `component` of OTLP instances folded past the instance limit.
pub const OTLP_FOLDED: &str = "otlp-other";

/// An OTLP sender's export interval, from the time since its previous
/// export: the first is assumed the SDKs' default; a much shorter gap (a
/// retry, several resources of one sender in one export) is no interval.
fn export_interval(current: Duration, gap: Option<Duration>, max_silence: Duration) -> Duration {
    match gap {
        None => FIRST_INTERVAL,
        Some(gap) if gap < current / 2 => current,
        Some(gap) => gap.max(Duration::from_secs(1)).min(max_silence),
    }
}

/// What became of an export's points, and the first few reasons.
#[derive(Debug, Default)]
struct Tally {
    accepted: u64,
    rejected: [u64; catalog::REJECT_REASONS.len()],
    limited: u64,
    message: String,
}

impl Tally {
    /// `n` points refused; `why` is asked for only while the message has room.
    fn refuse(&mut self, refused: Refused, n: u64, why: impl FnOnce() -> String) {
        match refused {
            Refused::Reject(reason) => self.rejected[reason.index()] += n,
            Refused::Limited => self.limited += n,
        }
        const MAX: usize = 512;
        if self.message.len() < MAX {
            let why = why();
            if !self.message.contains(&why) {
                if !self.message.is_empty() {
                    self.message.push_str("; ");
                }
                self.message.push_str(&why);
            }
        }
    }
}

fn point_count(metric: &Metric) -> u64 {
    let n = match &metric.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 1,
    };
    n as u64
}

/// Whether `name` is (or renders as) one of the platform's own metrics.
fn reserved(name: &str) -> bool {
    METRICS.iter().any(|m| {
        name == m.name
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| name.strip_suffix(suffix) == Some(m.name))
    })
}

/// Each point of `metric` applied to `series`, or counted as refused.
fn apply_metric(series: &OtlpSeries, metric: &Metric, max_label: usize, tally: &mut Tally) {
    let original = &metric.name;
    let all = point_count(metric);
    let (shape, delta) = match &metric.data {
        None => {
            return tally.refuse(Refused::Reject(Reject::NoPayload), 1, || {
                format!("metric {original:.64} has no data")
            });
        }
        Some(Data::ExponentialHistogram(_) | Data::Summary(_)) => {
            return tally.refuse(Refused::Reject(Reject::UnsupportedMetric), all, || {
                format!(
                    "metric {original:.64}: exponential histograms and summaries are not supported"
                )
            });
        }
        Some(Data::Gauge(_)) => (Shape::Gauge, false),
        Some(Data::Sum(sum)) => (
            if sum.is_monotonic {
                Shape::Counter
            } else {
                Shape::Gauge
            },
            sum.aggregation_temporality == AggregationTemporality::Delta as i32,
        ),
        Some(Data::Histogram(h)) => (
            Shape::Histogram,
            h.aggregation_temporality == AggregationTemporality::Delta as i32,
        ),
    };
    let name = metric_name(original, &metric.unit, shape);
    if original.is_empty() || reserved(&name) {
        return tally.refuse(Refused::Reject(Reject::MetricConflict), all, || {
            format!("metric name {name:.64} is empty or one of the platform's own")
        });
    }
    let help = if metric.description.is_empty() {
        format!("OpenTelemetry metric {original:.128}")
    } else {
        metric.description.chars().take(1024).collect()
    };
    let record = |tally: &mut Tally, attributes: &[KeyValue], update: Update| {
        let labels = match labels(attributes, max_label) {
            Ok(labels) => labels,
            Err((reason, why)) => return tally.refuse(Refused::Reject(reason), 1, || why),
        };
        match series.record(&name, shape, &help, labels, update) {
            Ok(()) => tally.accepted += 1,
            Err(Refusal::Conflict) => {
                tally.refuse(Refused::Reject(Reject::MetricConflict), 1, || {
                    format!("metric {name:.64} is already another type")
                })
            }
            Err(Refusal::TooManyNames) => tally.refuse(Refused::Limited, 1, || {
                "the collector holds its limit of OTLP metric names (MAX_OTLP_METRICS)".to_owned()
            }),
            Err(Refusal::TooManySeries) => tally.refuse(Refused::Limited, 1, || {
                format!("metric {name:.64} has its limit of label sets (MAX_SERIES_PER_METRIC)")
            }),
            Err(Refusal::TooManyInAll) => tally.refuse(Refused::Limited, 1, || {
                "the collector holds its limit of OTLP series (MAX_OTLP_SERIES)".to_owned()
            }),
        }
    };
    let number = |tally: &mut Tally, point: &NumberDataPoint| {
        let value = match point.value {
            Some(number_data_point::Value::AsDouble(v)) => v,
            Some(number_data_point::Value::AsInt(v)) => v as f64,
            None => {
                return tally.refuse(Refused::Reject(Reject::NoPayload), 1, || {
                    format!("a point of {name:.64} has no value")
                });
            }
        };
        if !value.is_finite() || (shape == Shape::Counter && value < 0.0) {
            return tally.refuse(Refused::Reject(Reject::InvalidValue), 1, || {
                format!("a point of {name:.64} is {value}")
            });
        }
        let update = if delta {
            Update::Add(value)
        } else {
            Update::Set(value)
        };
        record(tally, &point.attributes, update);
    };
    match &metric.data {
        Some(Data::Gauge(g)) => g
            .data_points
            .iter()
            .filter(|p| recorded(p.flags))
            .for_each(|p| number(tally, p)),
        Some(Data::Sum(s)) => s
            .data_points
            .iter()
            .filter(|p| recorded(p.flags))
            .for_each(|p| number(tally, p)),
        Some(Data::Histogram(h)) => {
            for point in h.data_points.iter().filter(|p| recorded(p.flags)) {
                match histogram(point, delta) {
                    Ok(update) => record(tally, &point.attributes, update),
                    Err(why) => tally.refuse(Refused::Reject(Reject::InvalidValue), 1, || {
                        format!("a point of {name:.64}: {why}")
                    }),
                }
            }
        }
        _ => {}
    }
}

/// A point flagged "no recorded value" is a gap, not a value.
fn recorded(flags: u32) -> bool {
    flags & 1 == 0
}

fn histogram(point: &HistogramDataPoint, delta: bool) -> Result<Update, String> {
    let bounds = &point.explicit_bounds;
    // A point with no buckets at all has one: everything up to +Inf.
    let counts = if bounds.is_empty() && point.bucket_counts.is_empty() {
        vec![point.count]
    } else {
        point.bucket_counts.clone()
    };
    if bounds.len() > limits::HISTOGRAM_BOUNDS {
        return Err(format!(
            "{} bucket bounds, over {}",
            bounds.len(),
            limits::HISTOGRAM_BOUNDS
        ));
    }
    if bounds.iter().any(|b| !b.is_finite()) || bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err("bucket bounds are not finite and increasing".to_owned());
    }
    if counts.len() != bounds.len() + 1 {
        return Err(format!(
            "{} bucket counts for {} bounds",
            counts.len(),
            bounds.len()
        ));
    }
    let total = counts.iter().try_fold(0u64, |acc, c| acc.checked_add(*c));
    if total != Some(point.count) {
        return Err("the bucket counts do not add up to the count".to_owned());
    }
    let sum = point.sum.unwrap_or(0.0);
    if !sum.is_finite() {
        return Err(format!("its sum is {sum}"));
    }
    Ok(Update::Histogram {
        bounds: bounds.clone(),
        counts,
        sum,
        delta,
    })
}

/// A point's attributes as labels: names sanitised, values bounded; two
/// keys that sanitise alike have their values joined with `;` in key order.
fn labels(attributes: &[KeyValue], max_label: usize) -> Result<LabelSet, (Reject, String)> {
    if attributes.len() > limits::OTLP_ATTRIBUTES {
        return Err((
            Reject::ValueTooLarge,
            format!(
                "a point has {} attributes, over {}",
                attributes.len(),
                limits::OTLP_ATTRIBUTES
            ),
        ));
    }
    let mut sorted: Vec<&KeyValue> = attributes.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    for kv in sorted {
        let value = kv.value.as_ref().map(text).unwrap_or_default();
        labels
            .entry(label_name(&kv.key))
            .and_modify(|v| {
                v.push(';');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    if let Some((key, _)) = labels.iter().find(|(_, v)| v.len() > max_label) {
        return Err((
            Reject::LabelTooLong,
            format!("attribute {key:.64} is over {max_label} bytes"),
        ));
    }
    Ok(labels.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_and_retries_are_no_export_interval() {
        let max = Duration::from_secs(600);
        let s = Duration::from_secs;
        assert_eq!(export_interval(s(30), None, max), FIRST_INTERVAL);
        // Two resources of one sender in one export, a retry after backoff.
        assert_eq!(export_interval(s(60), Some(Duration::ZERO), max), s(60));
        assert_eq!(
            export_interval(s(60), Some(Duration::from_millis(200)), max),
            s(60)
        );
        // The sender's own rhythm, slower or somewhat faster.
        assert_eq!(export_interval(s(60), Some(s(300)), max), s(300));
        assert_eq!(export_interval(s(60), Some(s(40)), max), s(40));
        assert_eq!(export_interval(s(60), Some(s(3600)), max), max);
    }
}
