//! The whole platform in one process, end to end: the stack on free ports
//! over a temporary git repository with a failing test and a coverage file,
//! the gateway pointed at a local fake DeepSeek, a test run and an audit
//! triggered through `automationctl`, and the collector's `/metrics`
//! carrying correct figures for all four services.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use automation_api_gateway::upstream::ApiKey;
use automation_stack::{Addresses, StackConfig, start};
use automation_testkit::upstream::FakeUpstream;
use automation_testkit::{Samples, http_get};
use common::{automationctl, repository, until};

fn labels(
    component: &'static str,
    extra: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    let mut l = vec![("component", component)];
    l.extend_from_slice(extra);
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_stack_end_to_end_through_automationctl() {
    let repo = repository();
    let upstream = FakeUpstream::start().await;
    let instance = "e2e";
    let mut watcher = automation_test_watcher::Config::new(instance, repo.path().to_path_buf());
    watcher.engine.command = "sh run-tests.sh".to_owned();
    let mut audit = automation_audit_agent::Config::new(
        instance,
        repo.path().to_path_buf(),
        repo.path().join(".automation/audit-agent.db"),
    );
    audit.interval = None;
    audit.audit_on_start = false;
    let gateway = automation_api_gateway::Config::new(
        instance,
        &upstream.base_url(),
        ApiKey::value("sk-e2e".to_owned()),
    );
    let mut collector = automation_collector::Config::new(instance);
    collector.sweep_interval = Duration::from_millis(100);
    let mut config = StackConfig {
        addresses: [Addresses {
            grpc: (IpAddr::V4(Ipv4Addr::LOCALHOST), 0).into(),
            http: (IpAddr::V4(Ipv4Addr::LOCALHOST), 0).into(),
        }; 4],
        collector,
        watcher,
        audit,
        gateway,
        heartbeat_interval: Duration::from_millis(200),
        token_file: None,
    };
    for delay in [
        &mut config.collector.service.shutdown_delay,
        &mut config.watcher.service.shutdown_delay,
        &mut config.audit.service.shutdown_delay,
        &mut config.gateway.service.shutdown_delay,
    ] {
        *delay = Duration::ZERO;
    }
    let stack = start(config).await.expect("the stack starts");
    stack.settle(Duration::from_secs(30)).await;
    for (name, ready) in stack.readiness() {
        assert_eq!(ready, Ok(()), "{name} is not ready:\n{}", stack.table());
    }
    let addr = |name: &str| stack.service(name).unwrap().addresses;
    let endpoints = vec![
        format!("--collector=http://{}", addr("collector").grpc),
        format!(
            "--collector-metrics=http://{}/metrics",
            addr("collector").http
        ),
        format!("--watcher=http://{}", addr("test-watcher").grpc),
        format!("--audit=http://{}", addr("audit-agent").grpc),
        format!("--gateway=http://{}", addr("api-gateway").grpc),
    ];

    let status = automationctl(&endpoints, &["status"]).await;
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    let run = automationctl(&endpoints, &["watcher", "run", "--reason", "e2e"]).await;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let audit = automationctl(&endpoints, &["--output", "json", "audit", "run"]).await;
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(report["new_commits"].as_u64(), Some(2), "{report}");
    let chat = automationctl(&endpoints, &["chat", "Say hello"]).await;
    assert!(
        chat.status.success(),
        "{}",
        String::from_utf8_lossy(&chat.stderr)
    );
    assert!(!chat.stdout.is_empty());

    let metrics = addr("collector").http;
    let m: Samples = until(
        "the figures of all four services",
        Duration::from_secs(30),
        async || {
            let (_, text) = http_get(metrics, "/metrics").await;
            let m = Samples::parse(&text);
            let done = m.get(
                "test_watcher_api_calls_total",
                &labels("test-watcher", &[("outcome", "ok")]),
            ) == Some(1.0)
                && m.get(
                    "audit_agent_runs_total",
                    &labels("audit-agent", &[("result", "ok")]),
                ) == Some(1.0)
                // The gateway reports its calls on its own schedule.
                && m.get(
                    "deepseek_api_calls_total",
                    &labels(
                        "api-gateway",
                        &[("model", "deepseek-chat"), ("status", "ok")],
                    ),
                ) == Some(2.0);
            (done, m)
        },
    )
    .await;
    // The watcher: one failed run, its tests, and the explanation it asked for.
    assert_eq!(
        m.value(
            "test_watcher_runs_total",
            &labels("test-watcher", &[("result", "failed")])
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "test_watcher_tests_run_total",
            &labels("test-watcher", &[("outcome", "failed")])
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "test_watcher_tests_run_total",
            &labels("test-watcher", &[("outcome", "passed")])
        ),
        2.0
    );
    // The audit: two commits, two items newly done, 75 % coverage, one in progress.
    assert_eq!(
        m.value(
            "audit_agent_git_commits_detected_total",
            &labels("audit-agent", &[])
        ),
        2.0
    );
    assert_eq!(
        m.value(
            "audit_agent_completion_markers_found_total",
            &labels("audit-agent", &[("marker", "checkbox")])
        ),
        2.0
    );
    assert_eq!(
        m.value("audit_agent_coverage_percent", &labels("audit-agent", &[])),
        75.0
    );
    assert_eq!(
        m.value("audit_agent_active_tasks", &labels("audit-agent", &[])),
        1.0
    );
    // The gateway: the watcher's explanation and the chat, both answered.
    assert_eq!(
        m.value(
            "deepseek_api_calls_total",
            &labels(
                "api-gateway",
                &[("model", "deepseek-chat"), ("status", "ok")]
            )
        ),
        2.0
    );
    assert!(
        m.value(
            "deepseek_api_tokens_used_total",
            &labels(
                "api-gateway",
                &[("model", "deepseek-chat"), ("type", "output")]
            )
        ) > 0.0
    );
    // The collector counted what it received.
    let received: f64 = m
        .matching("collector_events_received_total", &labels("collector", &[]))
        .map(|(_, v)| v)
        .sum();
    assert!(received > 0.0);
    for component in ["test-watcher", "audit-agent", "api-gateway", "collector"] {
        assert_eq!(
            m.value("automation_component_up", &labels(component, &[])),
            1.0,
            "{component}"
        );
    }
    assert_eq!(upstream.requests().len(), 2);

    let metrics_cmd = automationctl(&endpoints, &["metrics"]).await;
    assert!(
        metrics_cmd.status.success(),
        "{}",
        String::from_utf8_lossy(&metrics_cmd.stderr)
    );
    stack.stop().await.unwrap();
}
