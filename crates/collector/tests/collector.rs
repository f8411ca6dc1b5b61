//! The collector over real sockets: a real gRPC client pushes batches, and
//! `/metrics` is read over HTTP.

use std::time::Duration;

use automation_collector::{Config, catalog};
use automation_proto::v1::{self, event::Payload};
use automation_testkit::{TestCollector, http_get, promtool_check_metrics, within};
use tonic::Code;

fn source(service: &str, instance: &str) -> v1::Source {
    v1::Source {
        service: service.into(),
        instance: instance.into(),
        version: "1.2.3".into(),
        incarnation: 42,
    }
}

fn event(payload: Payload) -> v1::Event {
    v1::Event {
        time: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 500_000_000,
        }),
        payload: Some(payload),
    }
}

fn batch(service: &str, instance: &str, sequence: u64, payloads: Vec<Payload>) -> v1::EventBatch {
    v1::EventBatch {
        source: Some(source(service, instance)),
        sequence,
        events: payloads.into_iter().map(event).collect(),
    }
}

fn heartbeat(interval: f64) -> Payload {
    Payload::Heartbeat(v1::Heartbeat {
        interval_seconds: interval,
        process: Some(v1::ProcessStats {
            resident_memory_bytes: 50_000_000,
            cpu_seconds_total: 12.7,
            open_fds: 17,
            start_time_seconds: 1_699_999_000.0,
        }),
        system: Some(v1::SystemStats {
            memory_used_bytes: 4_000_000_000,
            memory_total_bytes: 16_000_000_000,
            disk_available_bytes: 100_000_000_000,
            cpu_usage_ratio: Some(0.25),
            disk_total_bytes: 400_000_000_000,
        }),
        events_dropped_total: 3,
        spans_dropped_total: 5,
        bridge: Some(v1::BridgeState {
            pending_tasks: 2,
            active_loops: 1,
        }),
        watcher: None,
        gateway: None,
    })
}

fn config() -> Config {
    let mut config = Config::new("collector-test");
    config.sweep_interval = Duration::from_millis(50);
    config
}

#[tokio::test]
async fn every_event_type_becomes_the_catalog_metrics() {
    let collector = TestCollector::start(config()).await;
    let mut client = collector.client().await;

    let watcher = batch(
        "test-watcher",
        "tw-1",
        1,
        vec![
            heartbeat(10.0),
            Payload::FileChanges(v1::FileChanges {
                files_processed: 4,
                debounce_seconds: Some(0.12),
                processing_seconds: Some(0.003),
                changed_files_pending: 1,
            }),
            Payload::TestRun(v1::TestRun {
                result: v1::RunResult::Failed as i32,
                tests_passed: 10,
                tests_failed: 2,
                tests_ignored: 1,
                duration_seconds: 3.5,
                peak_rss_bytes: 123_456_789,
                failed_tests: vec!["a::b".into(), "c".into()],
            }),
            Payload::GatewayRequest(v1::GatewayRequest {
                outcome: v1::CallOutcome::Ok as i32,
                duration_seconds: 1.0,
            }),
            Payload::Error(v1::ComponentError {
                kind: "watch".into(),
                message: "inotify limit".into(),
                model: String::new(),
            }),
            Payload::BridgeCall(v1::BridgeCall {
                direction: v1::BridgeDirection::ToAsync as i32,
                outcome: v1::BridgeOutcome::Timeout as i32,
                duration_seconds: 0.002,
                pending_tasks: 5,
                active_loops: 2,
            }),
        ],
    );
    let answer = client.push(watcher).await.unwrap().into_inner();
    assert_eq!(
        (answer.accepted, answer.rejected, answer.duplicate),
        (6, 0, false)
    );

    let audit = batch(
        "audit-agent",
        "aa-1",
        1,
        vec![Payload::AuditRun(v1::AuditRun {
            result: v1::AuditResult::Partial as i32,
            duration_seconds: 2.0,
            analyses: vec![
                v1::AnalysisTiming {
                    analysis: v1::Analysis::Git as i32,
                    duration_seconds: 0.5,
                },
                v1::AnalysisTiming {
                    analysis: v1::Analysis::Coverage as i32,
                    duration_seconds: 0.02,
                },
            ],
            new_commits: 7,
            history_rewritten: true,
            newly_completed: vec![
                v1::MarkerCount {
                    marker: v1::Marker::Checkbox as i32,
                    count: 3,
                },
                v1::MarkerCount {
                    marker: v1::Marker::StatusLine as i32,
                    count: 1,
                },
            ],
            coverage_percent: Some(81.25),
            tasks_done: 12,
            tasks_in_progress: 2,
            tasks_planned: 5,
        })],
    );
    client.push(audit).await.unwrap();

    let gateway = batch(
        "api-gateway",
        "gw-1",
        1,
        vec![
            Payload::ApiCall(v1::ApiCall {
                model: "deepseek-chat".into(),
                status: v1::ApiStatus::Ok as i32,
                duration_seconds: 1.5,
                time_to_first_token_seconds: Some(0.3),
                input_cache_hit_tokens: 100,
                input_cache_miss_tokens: 50,
                output_tokens: 40,
                reasoning_tokens: 10,
                retries: vec![v1::RetryReason::RateLimited as i32],
                rate_limited_responses: 1,
                cost_usd: Some(0.0025),
                error_kind: String::new(),
                in_flight_requests: 3,
            }),
            Payload::ApiCall(v1::ApiCall {
                model: "deepseek-chat".into(),
                status: v1::ApiStatus::Unauthorized as i32,
                duration_seconds: 0.1,
                error_kind: "unauthorized".into(),
                ..Default::default()
            }),
            Payload::Heartbeat(v1::Heartbeat {
                interval_seconds: 10.0,
                gateway: Some(v1::GatewayState {
                    in_flight_requests: 1,
                    circuit_open: true,
                    balances: vec![v1::Balance {
                        currency: "USD".into(),
                        amount: 9.5,
                    }],
                }),
                ..Default::default()
            }),
        ],
    );
    client.push(gateway).await.unwrap();

    let m = collector.metrics().await;
    let tw = [
        ("component", "test-watcher"),
        ("component_instance", "tw-1"),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut labels = tw.to_vec();
        labels.push(extra);
        labels
    };
    assert_eq!(m.value("test_watcher_files_processed_total", &tw), 4.0);
    assert_eq!(m.value("test_watcher_changed_files_current", &tw), 1.0);
    assert_eq!(
        m.value("test_watcher_debounce_duration_seconds_count", &tw),
        1.0
    );
    assert_eq!(
        m.value(
            "test_watcher_debounce_duration_seconds_bucket",
            &with(("le", "0.25"))
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "test_watcher_debounce_duration_seconds_bucket",
            &with(("le", "0.1"))
        ),
        0.0
    );
    assert_eq!(
        m.value("test_watcher_processing_duration_seconds_sum", &tw),
        0.003
    );
    assert_eq!(
        m.value("test_watcher_runs_total", &with(("result", "failed"))),
        1.0
    );
    assert_eq!(
        m.value("test_watcher_runs_total", &with(("result", "passed"))),
        0.0
    );
    assert_eq!(
        m.value("test_watcher_tests_run_total", &with(("outcome", "passed"))),
        10.0
    );
    assert_eq!(
        m.value("test_watcher_tests_run_total", &with(("outcome", "failed"))),
        2.0
    );
    assert_eq!(
        m.value(
            "test_watcher_tests_run_total",
            &with(("outcome", "ignored"))
        ),
        1.0
    );
    assert_eq!(
        m.value("test_watcher_test_execution_duration_seconds_sum", &tw),
        3.5
    );
    assert_eq!(
        m.value("test_watcher_memory_usage_bytes", &tw),
        123_456_789.0
    );
    assert_eq!(
        m.value("test_watcher_last_run_timestamp_seconds", &tw),
        1_700_000_000.5
    );
    assert_eq!(
        m.value("test_watcher_api_calls_total", &with(("outcome", "ok"))),
        1.0
    );
    assert_eq!(
        m.value("test_watcher_api_calls_total", &with(("outcome", "error"))),
        0.0
    );
    assert_eq!(
        m.value("test_watcher_errors_total", &with(("kind", "watch"))),
        1.0
    );
    assert_eq!(
        m.value(
            "safe_async_bridge_calls_total",
            &with(("direction", "to_async"))
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "safe_async_bridge_timeouts_total",
            &with(("direction", "to_async"))
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "safe_async_bridge_errors_total",
            &with(("direction", "to_async"))
        ),
        0.0
    );
    assert_eq!(m.value("safe_async_bridge_pending_tasks", &tw), 5.0);
    assert_eq!(m.value("safe_async_bridge_active_loops", &tw), 2.0);
    assert_eq!(
        m.value(
            "safe_async_bridge_execution_duration_seconds_count",
            &with(("direction", "to_async"))
        ),
        1.0
    );
    assert_eq!(
        m.value("automation_process_resident_memory_bytes", &tw),
        50_000_000.0
    );
    assert_eq!(m.value("automation_process_cpu_seconds_total", &tw), 12.0);
    assert_eq!(m.value("automation_process_open_fds", &tw), 17.0);
    assert_eq!(
        m.value("automation_process_start_time_seconds", &tw),
        1_699_999_000.0
    );
    assert_eq!(m.value("automation_system_memory_used_bytes", &tw), 4e9);
    assert_eq!(m.value("automation_system_memory_total_bytes", &tw), 16e9);
    assert_eq!(m.value("automation_system_disk_available_bytes", &tw), 1e11);
    assert_eq!(m.value("automation_system_disk_total_bytes", &tw), 4e11);
    assert_eq!(m.value("automation_system_cpu_usage_ratio", &tw), 0.25);
    assert_eq!(
        m.value("automation_reporter_events_dropped_total", &tw),
        3.0
    );
    assert_eq!(m.value("automation_trace_spans_dropped_total", &tw), 5.0);
    assert_eq!(m.value("automation_component_up", &tw), 1.0);
    assert_eq!(
        m.value("automation_component_info", &with(("version", "1.2.3"))),
        1.0
    );

    let aa = [("component", "audit-agent"), ("component_instance", "aa-1")];
    let aaw = |extra: (&'static str, &'static str)| {
        let mut labels = aa.to_vec();
        labels.push(extra);
        labels
    };
    assert_eq!(
        m.value("audit_agent_runs_total", &aaw(("result", "partial"))),
        1.0
    );
    assert_eq!(
        m.value("audit_agent_runs_total", &aaw(("result", "ok"))),
        0.0
    );
    assert_eq!(m.value("audit_agent_git_commits_detected_total", &aa), 7.0);
    assert_eq!(m.value("audit_agent_history_rewrites_total", &aa), 1.0);
    assert_eq!(
        m.value(
            "audit_agent_completion_markers_found_total",
            &aaw(("marker", "checkbox"))
        ),
        3.0
    );
    assert_eq!(
        m.value(
            "audit_agent_completion_markers_found_total",
            &aaw(("marker", "status_line"))
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "audit_agent_completion_markers_found_total",
            &aaw(("marker", "done_emoji"))
        ),
        0.0
    );
    assert_eq!(m.value("audit_agent_coverage_percent", &aa), 81.25);
    assert_eq!(m.value("audit_agent_tasks", &aaw(("state", "done"))), 12.0);
    assert_eq!(
        m.value("audit_agent_tasks", &aaw(("state", "in_progress"))),
        2.0
    );
    assert_eq!(
        m.value("audit_agent_tasks", &aaw(("state", "planned"))),
        5.0
    );
    assert_eq!(m.value("audit_agent_active_tasks", &aa), 2.0);
    assert_eq!(m.value("audit_agent_run_duration_seconds_sum", &aa), 2.0);
    assert_eq!(
        m.value(
            "audit_agent_analysis_duration_seconds_sum",
            &aaw(("analysis", "git"))
        ),
        0.5
    );
    assert_eq!(
        m.value(
            "audit_agent_analysis_duration_seconds_count",
            &aaw(("analysis", "markers"))
        ),
        0.0
    );
    assert_eq!(
        m.value("audit_agent_last_run_timestamp_seconds", &aa),
        1_700_000_000.5
    );

    let gw = [
        ("component", "api-gateway"),
        ("component_instance", "gw-1"),
        ("model", "deepseek-chat"),
    ];
    let gww = |extra: (&'static str, &'static str)| {
        let mut labels = gw.to_vec();
        labels.push(extra);
        labels
    };
    assert_eq!(
        m.value("deepseek_api_calls_total", &gww(("status", "ok"))),
        1.0
    );
    assert_eq!(
        m.value("deepseek_api_calls_total", &gww(("status", "unauthorized"))),
        1.0
    );
    assert_eq!(
        m.value("deepseek_api_calls_total", &gww(("status", "timeout"))),
        0.0
    );
    assert_eq!(
        m.value("deepseek_api_errors_total", &gww(("kind", "unauthorized"))),
        1.0
    );
    assert_eq!(
        m.value(
            "deepseek_api_tokens_used_total",
            &gww(("type", "input_cache_hit"))
        ),
        100.0
    );
    assert_eq!(
        m.value(
            "deepseek_api_tokens_used_total",
            &gww(("type", "input_cache_miss"))
        ),
        50.0
    );
    assert_eq!(
        m.value("deepseek_api_tokens_used_total", &gww(("type", "output"))),
        40.0
    );
    assert_eq!(m.value("deepseek_api_reasoning_tokens_total", &gw), 10.0);
    assert_eq!(
        m.value(
            "deepseek_api_retries_total",
            &gww(("reason", "rate_limited"))
        ),
        1.0
    );
    assert_eq!(m.value("deepseek_api_rate_limits_total", &gw), 1.0);
    assert_eq!(m.value("deepseek_api_request_cost_usd_sum", &gw), 0.0025);
    assert_eq!(
        m.value(
            "deepseek_api_request_cost_usd_bucket",
            &gww(("le", "0.005"))
        ),
        1.0
    );
    assert_eq!(
        m.value("deepseek_api_request_duration_seconds_count", &gw),
        2.0
    );
    assert_eq!(
        m.value("deepseek_api_time_to_first_token_seconds_sum", &gw),
        0.3
    );
    assert_eq!(m.value("deepseek_api_response_time_seconds", &gw), 0.1);
    let gw_only = [("component", "api-gateway"), ("component_instance", "gw-1")];
    assert_eq!(m.value("deepseek_api_in_flight_requests", &gw_only), 1.0);
    assert_eq!(m.value("deepseek_api_circuit_open", &gw_only), 1.0);
    let mut usd = gw_only.to_vec();
    usd.push(("currency", "USD"));
    assert_eq!(m.value("deepseek_api_balance", &usd), 9.5);

    let own = [
        ("component", "collector"),
        ("component_instance", "collector-test"),
    ];
    let ownw = |extra: (&'static str, &'static str)| {
        let mut labels = own.to_vec();
        labels.push(extra);
        labels
    };
    assert_eq!(
        m.value("collector_pushes_total", &ownw(("code", "ok"))),
        3.0
    );
    assert_eq!(
        m.value(
            "collector_events_received_total",
            &ownw(("event", "api_call"))
        ),
        2.0
    );
    assert_eq!(
        m.value(
            "collector_events_received_total",
            &ownw(("event", "heartbeat"))
        ),
        2.0
    );
    assert_eq!(m.value("collector_push_duration_seconds_count", &own), 3.0);
    assert_eq!(m.value("automation_component_up", &own), 1.0);
}

#[tokio::test]
async fn a_replayed_batch_is_counted_once() {
    let collector = TestCollector::start(config()).await;
    let mut client = collector.client().await;
    let files = || {
        batch(
            "test-watcher",
            "tw-1",
            7,
            vec![Payload::FileChanges(v1::FileChanges {
                files_processed: 5,
                ..Default::default()
            })],
        )
    };
    let first = client.push(files()).await.unwrap().into_inner();
    let again = client.push(files()).await.unwrap().into_inner();
    assert!(!first.duplicate);
    assert_eq!(first.accepted, 1);
    assert!(again.duplicate);
    assert_eq!((again.sequence, again.accepted), (7, 0));

    // A new incarnation of the same instance is a new reporter, not a replay.
    let mut reborn = files();
    reborn.source.as_mut().unwrap().incarnation = 43;
    assert!(!client.push(reborn).await.unwrap().into_inner().duplicate);

    let m = collector.metrics().await;
    let tw = [
        ("component", "test-watcher"),
        ("component_instance", "tw-1"),
    ];
    assert_eq!(m.value("test_watcher_files_processed_total", &tw), 10.0);
    assert_eq!(
        m.value("collector_pushes_total", &[("code", "duplicate")]),
        1.0
    );
}

#[tokio::test]
async fn malformed_batches_are_refused_whole_and_change_nothing() {
    let collector = TestCollector::start(config()).await;
    let mut client = collector.client().await;
    let before = collector.metrics().await;

    let cases = [
        (
            v1::EventBatch {
                source: None,
                sequence: 1,
                events: vec![event(heartbeat(1.0))],
            },
            "no source",
        ),
        (
            v1::EventBatch {
                source: Some(v1::Source {
                    incarnation: 0,
                    ..source("test-watcher", "x")
                }),
                sequence: 1,
                events: vec![],
            },
            "incarnation",
        ),
        (
            batch("test-watcher", "x", 0, vec![heartbeat(1.0)]),
            "sequence",
        ),
        (
            batch("test-watcher", &"i".repeat(500), 1, vec![heartbeat(1.0)]),
            "source.instance is 500 bytes",
        ),
        (
            batch("collector", "collector-test", 1, vec![heartbeat(1.0)]),
            "reserved",
        ),
    ];
    for (bad, problem) in cases {
        let status = client.push(bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains(problem),
            "{} lacks {problem}",
            status.message()
        );
    }

    let after = collector.metrics().await;
    assert!(!after.has("automation_component_up", &[("component", "test-watcher")]));
    assert_eq!(
        after.value("collector_pushes_total", &[("code", "invalid")]),
        5.0
    );
    assert_eq!(
        after.value("collector_pushes_total", &[("code", "ok")]),
        before.value("collector_pushes_total", &[("code", "ok")])
    );
}

#[tokio::test]
async fn an_oversized_batch_is_refused_naming_the_limit() {
    let mut config = config();
    config.limits.max_batch_bytes = 2_000;
    config.limits.max_batch_events = 50;
    let collector = TestCollector::start(config).await;
    let mut client = collector.client().await;
    let many = batch(
        "test-watcher",
        "tw",
        1,
        (0..60).map(|_| heartbeat(1.0)).collect(),
    );
    let status = client.push(many).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("60 events, over the limit of 50"),
        "{}",
        status.message()
    );

    let big = batch(
        "test-watcher",
        "tw",
        1,
        (0..40).map(|_| heartbeat(1.0)).collect(),
    );
    let status = client.push(big).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("over the limit of 2000"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn an_impossible_event_is_rejected_alone_and_unknown_enums_become_other() {
    let collector = TestCollector::start(config()).await;
    let mut client = collector.client().await;
    let mixed = v1::EventBatch {
        source: Some(source("test-watcher", "tw-1")),
        sequence: 1,
        events: vec![
            event(Payload::TestRun(v1::TestRun {
                result: v1::RunResult::Passed as i32,
                tests_passed: 3,
                duration_seconds: -1.0,
                ..Default::default()
            })),
            event(Payload::TestRun(v1::TestRun {
                result: v1::RunResult::Passed as i32,
                tests_passed: 4,
                duration_seconds: f64::NAN,
                ..Default::default()
            })),
            v1::Event {
                time: None,
                payload: None,
            },
            event(Payload::Error(v1::ComponentError {
                kind: "k".repeat(300),
                ..Default::default()
            })),
            event(Payload::TestRun(v1::TestRun {
                result: 99,
                tests_passed: 5,
                duration_seconds: 1.0,
                ..Default::default()
            })),
            event(Payload::TestRun(v1::TestRun {
                result: v1::RunResult::Passed as i32,
                tests_passed: 6,
                duration_seconds: 2.0,
                ..Default::default()
            })),
        ],
    };
    let answer = client.push(mixed).await.unwrap().into_inner();
    assert_eq!((answer.accepted, answer.rejected), (2, 4));

    let m = collector.metrics().await;
    let tw = |extra: (&'static str, &'static str)| {
        vec![
            ("component", "test-watcher"),
            ("component_instance", "tw-1"),
            extra,
        ]
    };
    assert_eq!(
        m.value("test_watcher_runs_total", &tw(("result", "other"))),
        1.0
    );
    assert_eq!(
        m.value("test_watcher_runs_total", &tw(("result", "passed"))),
        1.0
    );
    assert_eq!(
        m.value("test_watcher_tests_run_total", &tw(("outcome", "passed"))),
        11.0
    );
    assert!(!m.has(
        "test_watcher_errors_total",
        &[("component", "test-watcher")]
    ));
    assert_eq!(
        m.value(
            "collector_events_rejected_total",
            &[("reason", "invalid_duration")]
        ),
        2.0
    );
    assert_eq!(
        m.value(
            "collector_events_rejected_total",
            &[("reason", "no_payload")]
        ),
        1.0
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
            &[("reason", "invalid_value")]
        ),
        0.0
    );
}

#[tokio::test]
async fn silent_instances_go_down_and_goodbyes_mean_stopped() {
    let mut config = config();
    config.limits.stopped_linger = Duration::from_secs(60);
    let collector = TestCollector::start(config).await;
    let mut client = collector.client().await;
    client
        .push(batch("test-watcher", "quiet", 1, vec![heartbeat(0.1)]))
        .await
        .unwrap();
    client
        .push(batch("audit-agent", "leaving", 1, vec![heartbeat(0.1)]))
        .await
        .unwrap();
    let quiet = [
        ("component", "test-watcher"),
        ("component_instance", "quiet"),
    ];
    let leaving = [
        ("component", "audit-agent"),
        ("component_instance", "leaving"),
    ];
    let m = collector.metrics().await;
    assert_eq!(m.value("automation_component_up", &quiet), 1.0);

    client
        .push(batch(
            "audit-agent",
            "leaving",
            2,
            vec![Payload::Goodbye(v1::Goodbye {
                reason: "SIGTERM".into(),
            })],
        ))
        .await
        .unwrap();

    let m = collector
        .eventually("quiet instance marked down", |m| {
            m.get("automation_component_up", &quiet) == Some(0.0)
        })
        .await;
    assert_eq!(
        m.value("automation_component_stopped", &quiet),
        0.0,
        "down, not stopped"
    );
    assert_eq!(m.value("automation_component_up", &leaving), 0.0);
    assert_eq!(
        m.value("automation_component_stopped", &leaving),
        1.0,
        "stopped, not down"
    );

    // It comes back: up again.
    client
        .push(batch("test-watcher", "quiet", 2, vec![heartbeat(10.0)]))
        .await
        .unwrap();
    let m = collector.metrics().await;
    assert_eq!(m.value("automation_component_up", &quiet), 1.0);
}

#[tokio::test]
async fn idle_instances_are_forgotten_without_any_scrape() {
    let mut config = config();
    config.limits.idle_timeout = Duration::from_millis(300);
    let collector = TestCollector::start(config).await;
    let mut client = collector.client().await;
    client
        .push(batch("test-watcher", "gone", 1, vec![heartbeat(0.05)]))
        .await
        .unwrap();
    client
        .push(batch(
            "test-watcher",
            "gone",
            2,
            vec![Payload::Error(v1::ComponentError {
                kind: "boom".into(),
                ..Default::default()
            })],
        ))
        .await
        .unwrap();
    let state = &collector.handles.state;
    let errors = catalog::id::TW_ERRORS;
    let replay = || batch("test-watcher", "gone", 2, vec![]);
    assert_eq!(state.series_count(errors), 1);
    within("instance forgotten", async {
        while state.instances().iter().any(|i| i.name == "gone") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        state.series_count(errors),
        0,
        "its label sets no longer count against the guard"
    );
    let m = collector.metrics().await;
    assert!(!m.has("automation_component_up", &[("component_instance", "gone")]));
    assert!(!m.has("test_watcher_errors_total", &[]));
    // The collector's own series never expire.
    assert!(m.has("automation_component_up", &[("component", "collector")]));

    // The replay windows outlive the series: a reporter cut off for longer
    // than the idle timeout that replays an applied batch is not counted twice.
    let answer = client.push(replay()).await.unwrap().into_inner();
    assert!(
        answer.duplicate,
        "a replay after the instance was forgotten"
    );
}

#[tokio::test]
async fn two_collectors_in_one_process_keep_their_own_series() {
    let a = TestCollector::start(Config::new("collector-a")).await;
    let b = TestCollector::start(Config::new("collector-b")).await;
    a.client()
        .await
        .push(batch("test-watcher", "only-a", 1, vec![heartbeat(10.0)]))
        .await
        .unwrap();
    b.client()
        .await
        .push(batch("audit-agent", "only-b", 1, vec![heartbeat(10.0)]))
        .await
        .unwrap();
    let (ma, mb) = (a.metrics().await, b.metrics().await);
    assert!(ma.has(
        "automation_component_up",
        &[("component_instance", "only-a")]
    ));
    assert!(!ma.has(
        "automation_component_up",
        &[("component_instance", "only-b")]
    ));
    assert!(mb.has(
        "automation_component_up",
        &[("component_instance", "only-b")]
    ));
    assert!(!mb.has(
        "automation_component_up",
        &[("component_instance", "only-a")]
    ));
    assert!(!ma.has(
        "collector_pushes_total",
        &[("component_instance", "collector-b")]
    ));
}

#[tokio::test]
async fn past_the_series_limit_new_values_become_other() {
    let mut config = config();
    config.limits.max_series_per_metric = 3;
    let collector = TestCollector::start(config).await;
    let mut client = collector.client().await;
    let errors: Vec<Payload> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|kind| {
            Payload::Error(v1::ComponentError {
                kind: (*kind).into(),
                ..Default::default()
            })
        })
        .collect();
    client
        .push(batch("test-watcher", "tw", 1, errors))
        .await
        .unwrap();
    let m = collector.metrics().await;
    let kinds: Vec<String> = m
        .matching("test_watcher_errors_total", &[])
        .map(|(labels, _)| labels["kind"].clone())
        .collect();
    assert_eq!(kinds.len(), 4, "three kinds and other: {kinds:?}");
    assert_eq!(
        m.value("test_watcher_errors_total", &[("kind", "other")]),
        2.0
    );
    assert_eq!(
        m.value(
            "collector_series_limited_total",
            &[("metric", "test_watcher_errors_total")]
        ),
        2.0
    );
}

#[tokio::test]
async fn with_auth_on_only_known_tokens_get_in_and_health_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "s3cret\n").unwrap();
    let mut config = config();
    config.service.auth = automation_telemetry::auth::BearerAuth::from_file(Some(&tokens)).unwrap();
    let collector = TestCollector::start(config).await;
    let mut client = collector.client().await;

    let status = client
        .push(batch("test-watcher", "tw", 1, vec![heartbeat(1.0)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let mut wrong = tonic::Request::new(batch("test-watcher", "tw", 1, vec![heartbeat(1.0)]));
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer guess".parse().unwrap());
    assert_eq!(
        client.push(wrong).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    let mut right = tonic::Request::new(batch("test-watcher", "tw", 1, vec![heartbeat(1.0)]));
    right
        .metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    assert_eq!(client.push(right).await.unwrap().into_inner().accepted, 1);

    let channel = tonic::transport::Channel::from_shared(collector.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "readiness".into(),
        })
        .await
        .expect("health is never behind auth")
        .into_inner();
    assert_eq!(
        answer.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let m = collector.metrics().await;
    assert_eq!(
        m.value("collector_pushes_total", &[("code", "unauthenticated")]),
        2.0
    );
}

#[tokio::test]
async fn the_admin_port_answers_health_ready_and_the_catalog_is_complete() {
    let collector = TestCollector::start(config()).await;
    let (status, body) = http_get(collector.http, "/health").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(collector.http, "/ready").await;
    assert_eq!(status, 200, "{body}");

    let m = collector.metrics().await;
    let json: serde_json::Value = serde_json::from_str(&catalog::to_json()).unwrap();
    let names: Vec<&str> = json["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"automation_component_up"));
    // Every series the collector serves is in its catalog.
    let text = collector.metrics_text().await;
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(
            names.contains(&name),
            "{name} is served but not in the catalog"
        );
    }
    assert!(!m.is_empty());
}

#[tokio::test]
async fn the_exposition_passes_promtool_check_metrics() {
    let collector = TestCollector::start(config()).await;
    let mut client = collector.client().await;
    let payloads = vec![
        heartbeat(10.0),
        Payload::TestRun(v1::TestRun {
            result: v1::RunResult::Passed as i32,
            duration_seconds: 1.0,
            ..Default::default()
        }),
        Payload::Error(v1::ComponentError {
            kind: "spawn \"quoted\" \\ kind".into(),
            ..Default::default()
        }),
    ];
    client
        .push(batch("test-watcher", "tw", 1, payloads))
        .await
        .unwrap();
    client
        .push(batch(
            "api-gateway",
            "gw",
            1,
            vec![Payload::ApiCall(v1::ApiCall {
                model: "deepseek-reasoner".into(),
                status: v1::ApiStatus::Ok as i32,
                duration_seconds: 2.0,
                cost_usd: Some(0.01),
                ..Default::default()
            })],
        ))
        .await
        .unwrap();
    client
        .push(batch(
            "audit-agent",
            "aa",
            1,
            vec![Payload::AuditRun(v1::AuditRun {
                result: v1::AuditResult::Ok as i32,
                duration_seconds: 1.0,
                coverage_percent: Some(50.0),
                ..Default::default()
            })],
        ))
        .await
        .unwrap();
    promtool_check_metrics(&collector.metrics_text().await);
}

#[tokio::test]
async fn unknown_coverage_is_absent_and_an_old_version_leaves_info() {
    let collector = TestCollector::start(config()).await;
    let mut client = collector.client().await;
    let audit = |sequence, coverage| {
        batch(
            "audit-agent",
            "aa",
            sequence,
            vec![Payload::AuditRun(v1::AuditRun {
                result: v1::AuditResult::Ok as i32,
                duration_seconds: 1.0,
                coverage_percent: coverage,
                ..Default::default()
            })],
        )
    };
    let aa = [("component", "audit-agent"), ("component_instance", "aa")];
    client.push(audit(1, None)).await.unwrap();
    assert!(
        !collector
            .metrics()
            .await
            .has("audit_agent_coverage_percent", &aa)
    );
    client.push(audit(2, Some(75.0))).await.unwrap();
    assert_eq!(
        collector
            .metrics()
            .await
            .value("audit_agent_coverage_percent", &aa),
        75.0
    );
    client.push(audit(3, None)).await.unwrap();
    assert!(
        !collector
            .metrics()
            .await
            .has("audit_agent_coverage_percent", &aa),
        "unknown again: absent, not the stale 75"
    );

    let mut upgraded = audit(4, Some(80.0));
    upgraded.source.as_mut().unwrap().version = "2.0.0".into();
    client.push(upgraded).await.unwrap();
    let m = collector.metrics().await;
    let versions: Vec<(String, f64)> = m
        .matching("automation_component_info", &aa)
        .map(|(labels, v)| (labels["version"].clone(), v))
        .collect();
    assert_eq!(versions, vec![("2.0.0".to_owned(), 1.0)]);
    assert_eq!(m.value("audit_agent_coverage_percent", &aa), 80.0);
}

#[tokio::test]
async fn a_saturated_collector_answers_resource_exhausted_and_applies_nothing_of_it() {
    let mut config = config();
    config.max_concurrent_pushes = 1;
    let collector = TestCollector::start(config).await;
    let big = |reporter: usize, sequence: u64| {
        let payloads = (0..5_000)
            .map(|_| {
                Payload::FileChanges(v1::FileChanges {
                    files_processed: 1,
                    ..Default::default()
                })
            })
            .collect();
        batch("test-watcher", &format!("r{reporter}"), sequence, payloads)
    };
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(collector.client().await);
    }
    let (mut exhausted, mut applied) = (0u64, 0u64);
    for round in 1..=50u64 {
        let pushes = clients.iter().enumerate().map(|(r, client)| {
            let mut client = client.clone();
            let batch = big(r, round);
            tokio::spawn(async move { client.push(batch).await })
        });
        for push in pushes.collect::<Vec<_>>() {
            match push.await.unwrap() {
                Ok(answer) => applied += u64::from(answer.into_inner().accepted),
                Err(status) => {
                    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                    exhausted += 1;
                }
            }
        }
        if exhausted > 0 {
            break;
        }
    }
    assert!(
        exhausted > 0,
        "eight concurrent pushes never saturated a one-push collector"
    );
    let m = collector.metrics().await;
    assert_eq!(
        m.value("collector_pushes_total", &[("code", "exhausted")]),
        exhausted as f64
    );
    let files: f64 = m
        .matching("test_watcher_files_processed_total", &[])
        .map(|(_, v)| v)
        .sum();
    assert_eq!(files, applied as f64, "refused pushes applied nothing");
}

#[tokio::test]
async fn a_call_without_a_model_is_labelled_alike_in_calls_and_errors() {
    let collector = TestCollector::start(config()).await;
    let call = Payload::ApiCall(v1::ApiCall {
        status: v1::ApiStatus::Timeout as i32,
        duration_seconds: 30.0,
        error_kind: "timeout".into(),
        ..Default::default()
    });
    collector
        .client()
        .await
        .push(batch("api-gateway", "gw", 1, vec![call]))
        .await
        .unwrap();
    let m = collector.metrics().await;
    assert_eq!(
        m.value(
            "deepseek_api_calls_total",
            &[("model", "unknown"), ("status", "timeout")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "deepseek_api_errors_total",
            &[("model", "unknown"), ("kind", "timeout")]
        ),
        1.0
    );
}
