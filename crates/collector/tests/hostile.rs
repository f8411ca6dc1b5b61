//! Reporters that lie: impossible numbers, label values that only differ in
//! escaping, endless new incarnations, instances and versions. Whatever they
//! send, the collector's memory stays bounded, live instances keep their
//! place, and `/metrics` says only true things.

use std::time::Duration;

use automation_collector::testing::TestCollector;
use automation_collector::{Config, catalog};
use automation_proto::v1::{self, event::Payload};

fn source(service: &str, instance: &str, incarnation: u64) -> v1::Source {
    v1::Source {
        service: service.into(),
        instance: instance.into(),
        version: "1.0.0".into(),
        incarnation,
    }
}

fn batch(source: v1::Source, sequence: u64, payloads: Vec<Payload>) -> v1::EventBatch {
    v1::EventBatch {
        source: Some(source),
        sequence,
        events: payloads
            .into_iter()
            .map(|payload| v1::Event {
                time: None,
                payload: Some(payload),
            })
            .collect(),
    }
}

fn heartbeat(interval: f64) -> Payload {
    Payload::Heartbeat(v1::Heartbeat {
        interval_seconds: interval,
        ..Default::default()
    })
}

fn config() -> Config {
    let mut config = Config::new("collector-test");
    config.sweep_interval = Duration::from_millis(50);
    config
}

#[tokio::test]
async fn impossible_numbers_are_rejected_with_a_reason_and_counters_never_go_back() {
    let collector = TestCollector::start(config()).await;
    let mut client = collector.client().await;
    let gw = || source("api-gateway", "gw", 1);
    let call = |output_tokens| {
        Payload::ApiCall(v1::ApiCall {
            model: "deepseek-chat".into(),
            status: v1::ApiStatus::Ok as i32,
            duration_seconds: 1.0,
            output_tokens,
            ..Default::default()
        })
    };
    client.push(batch(gw(), 1, vec![call(100)])).await.unwrap();

    let mut far_future = v1::Event {
        time: Some(prost_types::Timestamp {
            seconds: 1 << 62,
            nanos: 0,
        }),
        payload: Some(Payload::TestRun(v1::TestRun {
            result: v1::RunResult::Passed as i32,
            duration_seconds: 1.0,
            ..Default::default()
        })),
    };
    let hostile = vec![
        call(u64::MAX),
        Payload::Heartbeat(v1::Heartbeat {
            interval_seconds: 10.0,
            process: Some(v1::ProcessStats {
                cpu_seconds_total: 1e30,
                ..Default::default()
            }),
            ..Default::default()
        }),
        heartbeat(1e308),
        Payload::BridgeCall(v1::BridgeCall {
            duration_seconds: 1e300,
            ..Default::default()
        }),
    ];
    let mut hostile = batch(gw(), 2, hostile);
    far_future.time.as_mut().unwrap().seconds = 1 << 62;
    hostile.events.push(far_future);
    let answer = client.push(hostile).await.unwrap().into_inner();
    assert_eq!((answer.accepted, answer.rejected), (0, 5));

    let m = collector.metrics().await;
    let gw_labels = [("component", "api-gateway"), ("component_instance", "gw")];
    let output = [
        gw_labels[0],
        gw_labels[1],
        ("model", "deepseek-chat"),
        ("type", "output"),
    ];
    assert_eq!(m.value("deepseek_api_tokens_used_total", &output), 100.0);
    assert_eq!(
        m.value("automation_process_cpu_seconds_total", &gw_labels),
        0.0
    );
    let rejected = |reason| m.value("collector_events_rejected_total", &[("reason", reason)]);
    assert_eq!(rejected("value_too_large"), 3.0, "tokens, cpu, interval");
    assert_eq!(rejected("invalid_duration"), 1.0);
    assert_eq!(rejected("invalid_time"), 1.0);
    assert!(!m.has("test_watcher_last_run_timestamp_seconds", &[]));

    // The maxima are part of the printed catalog.
    let printed: serde_json::Value = serde_json::from_str(&catalog::to_json()).unwrap();
    let limits = printed["event_limits"].as_array().unwrap();
    assert!(
        limits
            .iter()
            .any(|l| l["max"] == catalog::limits::COUNT as f64)
    );
}
