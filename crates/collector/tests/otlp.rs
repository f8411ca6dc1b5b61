//! OTLP in, with the real OpenTelemetry SDK for Python and its OTLP/gRPC
//! and OTLP/HTTP exporters (installed in the project's `.venv` by
//! `make test`): what they send shows on `/metrics` with the right values,
//! under the collector's auth, liveness and accounting, and passes
//! `promtool check metrics`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use automation_collector::Config;
use automation_testkit::{Samples, TestCollector, promtool_check_metrics};

fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: `make tools` installs the OpenTelemetry SDK there",
        python.display()
    );
    python
}

/// Runs `send.py` with `args` (off the runtime the collector serves on);
/// its JSON answer.
async fn send(args: &[&str]) -> serde_json::Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/otlp/send.py");
    let mut command = Command::new(python());
    command.arg(script).args(args);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run the OpenTelemetry sender");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "send.py {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

async fn collector(configure: impl FnOnce(&mut Config)) -> TestCollector {
    let mut config = Config::new("collector-test");
    config.sweep_interval = Duration::from_millis(50);
    config.otlp_grpc = Some("127.0.0.1:0".parse().unwrap());
    config.otlp_http = Some("127.0.0.1:0".parse().unwrap());
    configure(&mut config);
    TestCollector::start(config).await
}

fn grpc_endpoint(collector: &TestCollector) -> String {
    format!("http://{}", collector.handles.otlp_grpc.unwrap())
}

fn http_endpoint(collector: &TestCollector) -> String {
    format!("http://{}/v1/metrics", collector.handles.otlp_http.unwrap())
}

fn check_round(m: &Samples, instance: &str) {
    let shop = |extra: &[(&'static str, &'static str)]| {
        let mut labels = vec![("component", "shop"), ("component_instance", instance)];
        labels.extend_from_slice(extra);
        labels
    };
    let value = |name: &str, extra: &[(&'static str, &'static str)]| m.value(name, &shop(extra));
    assert_eq!(value("orders_total", &[("payment_method", "card")]), 2.0);
    assert_eq!(value("orders_total", &[("payment_method", "cash")]), 3.0);
    assert_eq!(value("queue_depth", &[]), 3.0);
    assert_eq!(value("temperature_celsius", &[("room", "server")]), 21.5);
    let route = [("route", "/buy")];
    assert_eq!(value("request_duration_seconds_count", &route), 4.0);
    assert!((value("request_duration_seconds_sum", &route) - 3.45).abs() < 1e-9);
    let bucket = |le: &'static str| {
        value(
            "request_duration_seconds_bucket",
            &[("route", "/buy"), ("le", le)],
        )
    };
    // The SDK's default bounds: 0, 5, 10, 25, 50, 75, 100, 250, …
    assert_eq!(bucket("0.0"), 0.0);
    assert_eq!(bucket("5.0"), 4.0);
    assert_eq!(bucket("+Inf"), 4.0);
    assert_eq!(value("automation_component_up", &[]), 1.0);
}

#[tokio::test]
async fn the_opentelemetry_sdk_sends_over_grpc_and_http_and_prometheus_reads_it() {
    let collector = collector(|_| {}).await;
    let grpc = send(&["grpc", &grpc_endpoint(&collector), "shop", "shop-1"]).await;
    assert_eq!(grpc["exported"], true, "{grpc}");
    let http = send(&[
        "http",
        &http_endpoint(&collector),
        "shop",
        "shop-2",
        "--delta",
    ])
    .await;
    assert_eq!(http["exported"], true, "{http}");

    let text = collector.metrics_text().await;
    let m = Samples::parse(&text);
    check_round(&m, "shop-1");
    check_round(&m, "shop-2");
    assert!(m.value("collector_pushes_total", &[("code", "ok")]) >= 2.0);
    assert!(
        m.value(
            "collector_events_received_total",
            &[("event", "otlp_data_point")]
        ) >= 12.0
    );
    assert!(
        text.contains("# HELP orders_total Orders placed.\n"),
        "{text}"
    );
    assert!(
        !m.has(
            "automation_process_resident_memory_bytes",
            &[("component", "shop")]
        ),
        "an OTLP sender gets no platform reporter series"
    );
    promtool_check_metrics(&text);
}

#[tokio::test]
async fn unsupported_kinds_are_refused_per_point_and_counted() {
    let collector = collector(|_| {}).await;
    let sent = send(&[
        "grpc",
        &grpc_endpoint(&collector),
        "shop",
        "shop-1",
        "--exponential",
    ])
    .await;
    // The exporter reports success: the refusal is a partial success.
    assert_eq!(sent["exported"], true, "{sent}");
    let m = collector.metrics().await;
    check_round(&m, "shop-1");
    assert!(!m.has("size_bytes_bucket", &[]));
    assert!(
        m.value(
            "collector_events_rejected_total",
            &[("reason", "unsupported_metric")]
        ) >= 1.0
    );
}

#[tokio::test]
async fn otlp_senders_need_a_token_bound_to_their_service() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "shop-token shop\nother-token billing\n").unwrap();
    let auth = automation_telemetry::auth::BearerAuth::from_file(Some(&tokens)).unwrap();
    let collector = collector(|config| config.service.auth = auth).await;
    let (grpc, http) = (grpc_endpoint(&collector), http_endpoint(&collector));

    assert_eq!(
        send(&["grpc", &grpc, "shop", "shop-1", "--token", "shop-token"]).await["exported"],
        true
    );
    assert_eq!(
        send(&["http", &http, "shop", "shop-2", "--token", "shop-token"]).await["exported"],
        true
    );
    for (protocol, endpoint) in [("grpc", &grpc), ("http", &http)] {
        let no = send(&[protocol, endpoint, "shop", "x", "--token", "made-up"]).await;
        assert_eq!(no["exported"], false, "{protocol}: {no}");
        let not_yours = send(&[protocol, endpoint, "shop", "y", "--token", "other-token"]).await;
        assert_eq!(not_yours["exported"], false, "{protocol}: {not_yours}");
    }
    let m = collector.metrics().await;
    check_round(&m, "shop-1");
    check_round(&m, "shop-2");
    for instance in ["x", "y"] {
        assert!(
            !m.has("orders_total", &[("component_instance", instance)]),
            "{instance}"
        );
    }
    assert!(m.value("collector_pushes_total", &[("code", "unauthenticated")]) >= 2.0);
    assert!(m.value("collector_pushes_total", &[("code", "permission_denied")]) >= 2.0);
}

fn attribute(key: &str, value: &str) -> otlp::common::v1::KeyValue {
    use otlp::common::v1::{AnyValue, KeyValue, any_value};
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// A hand-made export of `metrics` from `service`'s instance `instance`.
fn export_of(
    service: &str,
    instance: &str,
    metrics: Vec<otlp::metrics::v1::Metric>,
) -> otlp::collector::metrics::v1::ExportMetricsServiceRequest {
    use otlp::metrics::v1::{ResourceMetrics, ScopeMetrics};
    otlp::collector::metrics::v1::ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(otlp::resource::v1::Resource {
                attributes: vec![
                    attribute("service.name", service),
                    attribute("service.instance.id", instance),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// One number point of `value`, its attribute `k` set to `label`.
fn number_point(label: &str, value: f64) -> otlp::metrics::v1::NumberDataPoint {
    use otlp::metrics::v1::{NumberDataPoint, number_data_point};
    NumberDataPoint {
        attributes: vec![attribute("k", label)],
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

/// A hand-made export of one gauge point per attribute value in `values`.
fn gauge_export(
    service: &str,
    instance: &str,
    name: &str,
    values: &[String],
) -> otlp::collector::metrics::v1::ExportMetricsServiceRequest {
    use otlp::metrics::v1::{Gauge, Metric, metric};
    let metric = Metric {
        name: name.to_owned(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: values.iter().map(|v| number_point(v, 1.0)).collect(),
        })),
        ..Default::default()
    };
    export_of(service, instance, vec![metric])
}

#[tokio::test]
async fn summaries_are_refused_by_point_and_delta_sums_add_up() {
    use otlp::metrics::v1::{
        AggregationTemporality, Metric, Sum, Summary, SummaryDataPoint, metric,
    };
    let collector = collector(|_| {}).await;
    let mut client = otlp_client(&collector).await;
    let delta = |value: f64| Metric {
        name: "jobs".to_owned(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![number_point("a", value)],
            aggregation_temporality: AggregationTemporality::Delta as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let summary = Metric {
        name: "latency".to_owned(),
        data: Some(metric::Data::Summary(Summary {
            data_points: vec![SummaryDataPoint::default(), SummaryDataPoint::default()],
        })),
        ..Default::default()
    };
    let answer = client
        .export(export_of("batch", "b-1", vec![delta(3.0), summary]))
        .await
        .expect("a partial success, not an error")
        .into_inner();
    let partial = answer.partial_success.expect("the refusal is said");
    assert_eq!(partial.rejected_data_points, 2, "{partial:?}");
    assert!(partial.error_message.contains("summaries"), "{partial:?}");
    client
        .export(export_of("batch", "b-1", vec![delta(4.5)]))
        .await
        .expect("the second delta");

    let labels = [
        ("component", "batch"),
        ("component_instance", "b-1"),
        ("k", "a"),
    ];
    let m = collector
        .eventually("the deltas add up", |m| {
            m.value("jobs_total", &labels) == 7.5
        })
        .await;
    assert!(!m.has("latency", &[]) && !m.has("latency_count", &[]));
    assert!(
        m.value(
            "collector_events_rejected_total",
            &[("reason", "unsupported_metric")]
        ) >= 2.0
    );
}

use opentelemetry_proto::tonic as otlp;
use otlp::collector::metrics::v1::metrics_service_client::MetricsServiceClient;

/// A generated OTLP/gRPC client of the collector.
async fn otlp_client(collector: &TestCollector) -> MetricsServiceClient<tonic::transport::Channel> {
    MetricsServiceClient::connect(grpc_endpoint(collector))
        .await
        .expect("connect to the OTLP/gRPC port")
}

#[tokio::test]
async fn otlp_points_meet_the_label_and_series_limits_of_everyone() {
    let collector = collector(|config| {
        config.limits.max_series_per_metric = 3;
        config.limits.max_label_length = 16;
    })
    .await;
    let mut client = otlp_client(&collector).await;
    let values: Vec<String> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|v| (*v).to_owned())
        .chain(["x".repeat(40)])
        .collect();
    let answer = client
        .export(gauge_export("shop", "shop-1", "load", &values))
        .await
        .unwrap()
        .into_inner();
    let partial = answer.partial_success.expect("some points refused");
    assert_eq!(partial.rejected_data_points, 3, "{partial:?}");
    assert!(
        partial.error_message.contains("MAX_SERIES_PER_METRIC"),
        "{partial:?}"
    );
    assert!(
        partial.error_message.contains("over 16 bytes"),
        "{partial:?}"
    );
    // Nor is the name the collector gives what it folds.
    let answer = client
        .export(gauge_export("other", "x", "load", &values[..1]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.partial_success.unwrap().rejected_data_points, 1);
    // A platform metric's name is not for OTLP senders.
    let answer = client
        .export(gauge_export(
            "shop",
            "shop-1",
            "automation_component_up",
            &values[..1],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.partial_success.unwrap().rejected_data_points, 1);

    let m = collector.metrics().await;
    let load: Vec<_> = m.matching("load", &[("component", "shop")]).collect();
    assert_eq!(load.len(), 3);
    assert_eq!(
        m.value("collector_series_limited_total", &[("metric", "otlp")]),
        2.0
    );
    assert_eq!(
        m.value(
            "collector_events_rejected_total",
            &[("reason", "label_too_long")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "collector_events_rejected_total",
            &[("reason", "metric_conflict")]
        ),
        2.0
    );
    assert_eq!(
        m.value(
            "automation_component_up",
            &[("component", "shop"), ("component_instance", "shop-1")]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_silent_otlp_sender_goes_down_then_away() {
    let collector = collector(|config| {
        config.limits.max_silence = Duration::from_millis(300);
        config.limits.idle_timeout = Duration::from_millis(600);
    })
    .await;
    let mut client = otlp_client(&collector).await;
    client
        .export(gauge_export("shop", "shop-1", "load", &["a".to_owned()]))
        .await
        .unwrap();
    let shop = [("component", "shop"), ("component_instance", "shop-1")];
    collector
        .eventually("the silent sender to be down", |m| {
            m.get("automation_component_up", &shop) == Some(0.0) && m.has("load", &shop)
        })
        .await;
    collector
        .eventually("its series to be gone", |m| {
            !m.has("automation_component_up", &shop) && !m.has("load", &shop)
        })
        .await;
    // Room for its names again.
    assert_eq!(collector.handles.state.otlp_guard().names(), 0);
}
