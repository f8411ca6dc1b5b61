//! `automationctl metrics`: the key figures of a collector that received
//! events, as a table and as JSON.

use std::time::Duration;

use automation_collector::Config;
use automation_proto::v1::{self, event::Payload};
use automation_testkit::TestCollector;

use crate::support::{automationctl, closed_port};

fn batch(service: &str, sequence: u64, payloads: Vec<Payload>) -> v1::EventBatch {
    v1::EventBatch {
        source: Some(v1::Source {
            service: service.to_owned(),
            instance: format!("{service}-1"),
            version: "1.0".to_owned(),
            incarnation: 42,
        }),
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

fn heartbeat() -> Payload {
    Payload::Heartbeat(v1::Heartbeat {
        interval_seconds: 60.0,
        ..Default::default()
    })
}

fn audit_run(result: v1::AuditResult, new_commits: u64) -> Payload {
    Payload::AuditRun(v1::AuditRun {
        result: result as i32,
        duration_seconds: 0.5,
        new_commits,
        ..Default::default()
    })
}

fn api_call(status: v1::ApiStatus, cost: Option<f64>) -> Payload {
    Payload::ApiCall(v1::ApiCall {
        model: "deepseek-chat".to_owned(),
        status: status as i32,
        duration_seconds: 1.0,
        input_cache_hit_tokens: 100,
        input_cache_miss_tokens: 20,
        output_tokens: 30,
        cost_usd: cost,
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn key_figures_per_component() {
    let collector = TestCollector::start(Config::new("cli-metrics")).await;
    let mut client = collector.client().await;
    let pushes = [
        batch(
            "audit-agent",
            1,
            vec![
                heartbeat(),
                audit_run(v1::AuditResult::Ok, 3),
                audit_run(v1::AuditResult::Ok, 2),
                audit_run(v1::AuditResult::Failed, 0),
            ],
        ),
        batch(
            "api-gateway",
            1,
            vec![
                heartbeat(),
                api_call(v1::ApiStatus::Ok, Some(0.0025)),
                api_call(v1::ApiStatus::Ok, Some(0.0005)),
                api_call(v1::ApiStatus::RateLimited, None),
            ],
        ),
    ];
    for push in pushes {
        let answer = client.push(push).await.unwrap().into_inner();
        assert_eq!(answer.rejected, 0);
    }
    collector
        .eventually("the figures", |m| {
            m.has("deepseek_api_calls_total", &[("status", "rate_limited")])
        })
        .await;
    let url = format!("http://{}/metrics", collector.http);

    let out = automationctl(&["metrics", "--collector-metrics", &url, "-o", "json"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let value = out.json();
    let audit = &value["components"]["audit-agent"];
    assert_eq!(audit["instances"], 1);
    assert_eq!(audit["up"], 1.0);
    assert_eq!(audit["audit_runs"]["total"], 3.0);
    assert_eq!(audit["audit_runs"]["by_result"]["ok"], 2.0);
    assert_eq!(audit["audit_runs"]["by_result"]["failed"], 1.0);
    assert_eq!(audit["commits_detected"]["total"], 5.0);
    let gateway = &value["components"]["api-gateway"];
    assert_eq!(gateway["api_calls"]["by_status"]["ok"], 2.0);
    assert_eq!(gateway["api_calls"]["by_status"]["rate_limited"], 1.0);
    assert_eq!(gateway["tokens"]["by_type"]["input_cache_hit"], 300.0);
    assert_eq!(gateway["tokens"]["total"], 450.0);
    let cost = gateway["cost_usd"]["total"].as_f64().unwrap();
    assert!((cost - 0.003).abs() < 1e-9, "{cost}");
    let collector_figures = &value["components"]["collector"];
    assert_eq!(
        collector_figures["events_received"]["by_event"]["audit_run"],
        3.0
    );
    assert_eq!(collector_figures["events_rejected"]["total"], 0.0);

    let out = automationctl(&["metrics", "--collector-metrics", &url]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let rows: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    for expected in [
        &["audit-agent", "instances up", "1 of 1"][..],
        &["audit-agent", "audit runs", "3", "failed=1 ok=2"],
        &["audit-agent", "commits detected", "5"],
        &["api-gateway", "API calls", "3", "ok=2 rate_limited=1"],
        &["api-gateway", "cost (USD)", "0.003"],
    ] {
        assert!(
            rows.iter().any(|r| r == expected),
            "{expected:?} in\n{}",
            out.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_metrics_endpoint_is_named() {
    let addr = closed_port();
    let url = format!("http://{addr}/metrics");
    let out = automationctl(&["metrics", "--collector-metrics", &url, "--timeout", "5s"]).await;
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr,
        format!("automationctl: collector /metrics at {addr}: connection refused\n")
    );
    assert!(out.stdout.is_empty());
    // Not a metrics endpoint at all: a gRPC port answers HTTP/1 with an error.
    let collector = TestCollector::start(Config::new("cli-metrics")).await;
    let wrong = format!("http://{}/metrics", collector.grpc);
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        automationctl(&["metrics", "--collector-metrics", &wrong, "--timeout", "3s"]),
    )
    .await
    .unwrap();
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.starts_with(&format!(
            "automationctl: collector /metrics at {}: ",
            collector.grpc
        )),
        "{out:?}"
    );
}
