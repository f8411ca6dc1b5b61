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

/// A refused point's reason, in the metrics and for the sender.
enum Refused {
    Reject(Reject, String),
    Limited(String),
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
        let mut exported = Exported::default();
        let mut rejected = [0u64; catalog::REJECT_REASONS.len()];
        let mut limited = 0u64;
        let mut points = 0u64;
        for (rm, (service, instance)) in request.resource_metrics.iter().zip(&resources) {
            let metrics = rm.scope_metrics.iter().flat_map(|sm| &sm.metrics);
            let count: u64 = metrics.clone().map(point_count).sum();
            points += count;
            let refuse_all =
                |reason: Reject, why: String, exported: &mut Exported, rejected: &mut [u64]| {
                    rejected[reason.index()] += count;
                    exported.rejected += count;
                    note(&mut exported.message, &why);
                };
            let max = self.limits().max_label_length;
            if service.len() > max || instance.len() > max {
                let why = format!("service.name or instance of {service:.32}… over {max} bytes");
                refuse_all(Reject::LabelTooLong, why, &mut exported, &mut rejected);
                continue;
            }
            if service == "collector" {
                let why =
                    "service.name \"collector\" is reserved for the collector itself".to_owned();
                refuse_all(Reject::MetricConflict, why, &mut exported, &mut rejected);
                continue;
            }
            if count == 0 {
                continue;
            }
            let inst = self.otlp_instance(service, instance, now);
            let series = inst.otlp(self.otlp_guard());
            if !COMPONENTS.contains(&service.as_str()) {
                let gap = series.exported(now);
                inst.liveness().interval = gap.map_or(FIRST_INTERVAL, |gap| {
                    gap.max(Duration::from_secs(1))
                        .min(self.limits().max_silence)
                });
            }
            for metric in metrics {
                for outcome in apply_metric(series, metric, max) {
                    match outcome {
                        Ok(()) => exported.accepted += 1,
                        Err(Refused::Reject(reason, why)) => {
                            rejected[reason.index()] += 1;
                            exported.rejected += 1;
                            note(&mut exported.message, &why);
                        }
                        Err(Refused::Limited(why)) => {
                            limited += 1;
                            exported.rejected += 1;
                            note(&mut exported.message, &why);
                        }
                    }
                }
            }
        }
        let own = self.own().collector();
        own.received.nth(catalog::EVENT_OTLP).increment(points);
        for (i, n) in rejected.iter().enumerate().filter(|(_, n)| **n > 0) {
            own.rejected.nth(i).increment(*n);
        }
        if limited > 0 {
            self.count_limited_otlp(limited);
        }
        self.count_push(PushCode::Ok);
        Ok(exported)
    }
}

/// Keeps the first few reasons, each once.
fn note(message: &mut String, why: &str) {
    const MAX: usize = 512;
    if message.len() < MAX && !message.contains(why) {
        if !message.is_empty() {
            message.push_str("; ");
        }
        message.push_str(why);
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

/// Each point of `metric` applied to `series`, or why not.
fn apply_metric(
    series: &OtlpSeries,
    metric: &Metric,
    max_label: usize,
) -> Vec<Result<(), Refused>> {
    let reject = |reason, why: String| Err(Refused::Reject(reason, why));
    let original = &metric.name;
    let (shape, delta) = match &metric.data {
        None => {
            return vec![reject(
                Reject::NoPayload,
                format!("metric {original:.64} has no data"),
            )];
        }
        Some(Data::ExponentialHistogram(_) | Data::Summary(_)) => {
            let why = format!(
                "metric {original:.64}: exponential histograms and summaries are not supported"
            );
            return (0..point_count(metric))
                .map(|_| reject(Reject::UnsupportedMetric, why.clone()))
                .collect();
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
        let why = format!("metric name {name:.64} is empty or one of the platform's own");
        return (0..point_count(metric))
            .map(|_| reject(Reject::MetricConflict, why.clone()))
            .collect();
    }
    let help = if metric.description.is_empty() {
        format!("OpenTelemetry metric {original:.128}")
    } else {
        metric.description.chars().take(1024).collect()
    };
    let record = |attributes: &[KeyValue], update: Update| -> Result<(), Refused> {
        let labels = labels(attributes, max_label)?;
        series
            .record(&name, shape, &help, labels, update)
            .map_err(|refusal| match refusal {
                Refusal::Conflict => Refused::Reject(
                    Reject::MetricConflict,
                    format!("metric {name:.64} is already another type"),
                ),
                Refusal::TooManyNames => Refused::Limited(
                    "the collector holds its limit of OTLP metric names (MAX_OTLP_METRICS)"
                        .to_owned(),
                ),
                Refusal::TooManySeries => Refused::Limited(format!(
                    "metric {name:.64} has its limit of label sets (MAX_SERIES_PER_METRIC)"
                )),
                Refusal::TooManyInAll => Refused::Limited(
                    "the collector holds its limit of OTLP series (MAX_OTLP_SERIES)".to_owned(),
                ),
            })
    };
    let number = |point: &NumberDataPoint| -> Result<(), Refused> {
        let value = match point.value {
            Some(number_data_point::Value::AsDouble(v)) => v,
            Some(number_data_point::Value::AsInt(v)) => v as f64,
            None => {
                return Err(Refused::Reject(
                    Reject::NoPayload,
                    format!("a point of {name:.64} has no value"),
                ));
            }
        };
        if !value.is_finite() || (shape == Shape::Counter && value < 0.0) {
            return Err(Refused::Reject(
                Reject::InvalidValue,
                format!("a point of {name:.64} is {value}"),
            ));
        }
        record(
            &point.attributes,
            if delta {
                Update::Add(value)
            } else {
                Update::Set(value)
            },
        )
    };
    match &metric.data {
        Some(Data::Gauge(g)) => g
            .data_points
            .iter()
            .filter(|p| recorded(p.flags))
            .map(number)
            .collect(),
        Some(Data::Sum(s)) => s
            .data_points
            .iter()
            .filter(|p| recorded(p.flags))
            .map(number)
            .collect(),
        Some(Data::Histogram(h)) => h
            .data_points
            .iter()
            .filter(|p| recorded(p.flags))
            .map(|point| {
                let update = histogram(point, delta).map_err(|why| {
                    Refused::Reject(
                        Reject::InvalidValue,
                        format!("a point of {name:.64}: {why}"),
                    )
                })?;
                record(&point.attributes, update)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A point flagged "no recorded value" is a gap, not a value.
fn recorded(flags: u32) -> bool {
    flags & 1 == 0
}

fn histogram(point: &HistogramDataPoint, delta: bool) -> Result<Update, String> {
    let bounds = &point.explicit_bounds;
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
    if point.bucket_counts.len() != bounds.len() + 1 {
        return Err(format!(
            "{} bucket counts for {} bounds",
            point.bucket_counts.len(),
            bounds.len()
        ));
    }
    let total = point
        .bucket_counts
        .iter()
        .try_fold(0u64, |acc, c| acc.checked_add(*c));
    if total != Some(point.count) {
        return Err("the bucket counts do not add up to the count".to_owned());
    }
    let sum = point.sum.unwrap_or(0.0);
    if !sum.is_finite() {
        return Err(format!("its sum is {sum}"));
    }
    Ok(Update::Histogram {
        bounds: bounds.clone(),
        counts: point.bucket_counts.clone(),
        sum,
        delta,
    })
}

/// A point's attributes as labels: names sanitised, values bounded; two
/// keys that sanitise alike have their values joined with `;` in key order.
fn labels(attributes: &[KeyValue], max_label: usize) -> Result<LabelSet, Refused> {
    if attributes.len() > limits::OTLP_ATTRIBUTES {
        return Err(Refused::Reject(
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
        return Err(Refused::Reject(
            Reject::LabelTooLong,
            format!("attribute {key:.64} is over {max_label} bytes"),
        ));
    }
    Ok(labels.into_iter().collect())
}
