//! The async bridge, watched end to end (DESIGN §5, `safe_async_bridge_*`):
//! a bridge wired to a real reporter through `ReportingObserver` and
//! `BridgeLiveState` makes calls in both directions, timeouts and panics
//! included, and a real collector's `/metrics` shows each call counted once,
//! the bridge's live values, and the process figures of the heartbeat.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use automation_async_bridge::{Bridge, BridgeError};
use automation_collector::Config;
use automation_telemetry::bridge::{BridgeLiveState, ReportingObserver};
use automation_telemetry::reporter::{Reporter, ReporterConfig};
use automation_testkit::{Samples, TestCollector, within};
use tokio::time::sleep;

const INSTANCE: &str = "bridge-e2e";
/// The timeout of calls meant to succeed.
const LONG: Duration = Duration::from_secs(10);
/// The timeout of calls meant to time out.
const SHORT: Duration = Duration::from_millis(100);

const CALLS: &str = "safe_async_bridge_calls_total";
const ERRORS: &str = "safe_async_bridge_errors_total";
const TIMEOUTS: &str = "safe_async_bridge_timeouts_total";
const DURATIONS: &str = "safe_async_bridge_execution_duration_seconds_count";
const PENDING: &str = "safe_async_bridge_pending_tasks";
const LOOPS: &str = "safe_async_bridge_active_loops";

fn instance() -> [(&'static str, &'static str); 2] {
    [
        ("component", "test-watcher"),
        ("component_instance", INSTANCE),
    ]
}

fn direction(direction: &'static str) -> [(&'static str, &'static str); 3] {
    let [component, instance] = instance();
    [component, instance, ("direction", direction)]
}

/// `(calls, errors, timeouts, durations recorded)` of one direction.
fn counts(m: &Samples, dir: &'static str) -> (f64, f64, f64, f64) {
    let labels = direction(dir);
    let get = |name| m.get(name, &labels).unwrap_or(0.0);
    (get(CALLS), get(ERRORS), get(TIMEOUTS), get(DURATIONS))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_calls_and_live_values_reach_the_metrics() {
    let collector = TestCollector::start(Config::new("c")).await;
    let builder = Bridge::builder().worker_threads(1);
    let live = Arc::new(BridgeLiveState::new(builder.gauges()));
    let mut config = ReporterConfig::new(collector.endpoint(), "test-watcher", INSTANCE, "1.0");
    config.heartbeat_interval = Duration::from_millis(200);
    config.batch_max_delay = Duration::from_millis(10);
    let reporter = Reporter::start(config, live).expect("reporter starts");
    let bridge = builder
        .observer(ReportingObserver::new(reporter.clone()))
        .build()
        .expect("bridge");

    // Sync code (a plain thread) runs futures: 3 ok, 1 failed, 1 panic, 1 timeout.
    let sync_side = {
        let bridge = bridge.clone();
        std::thread::spawn(move || {
            for i in 0..3 {
                assert_eq!(bridge.run_async(LONG, async move { i }).expect("ok"), i);
            }
            let failed = bridge.try_run_async(LONG, async { Err::<(), _>("refused") });
            assert!(matches!(failed, Err(BridgeError::Failed("refused"))));
            let panicked = bridge.run_async(LONG, async { panic!("boom") });
            assert!(matches!(panicked, Err(BridgeError::Panicked(m)) if m == "boom"));
            let timed_out = bridge.run_async(SHORT, std::future::pending::<()>());
            assert!(matches!(timed_out, Err(BridgeError::Timeout(_))));
        })
    };
    within(
        "the sync side",
        tokio::task::spawn_blocking(move || sync_side.join()),
    )
    .await
    .expect("join")
    .expect("every sync call ended as expected");

    // Async code runs blocking work: 2 ok, 1 panic, 1 timeout whose work
    // goes on until released.
    for _ in 0..2 {
        bridge.run_blocking(LONG, || ()).await.expect("ok");
    }
    let panicked = bridge.run_blocking(LONG, || panic!("boom")).await;
    assert!(matches!(panicked, Err(BridgeError::Panicked(m)) if m == "boom"));
    let (release, held) = std::sync::mpsc::channel::<()>();
    let timed_out = bridge
        .run_blocking(SHORT, move || held.recv_timeout(Duration::from_secs(30)))
        .await;
    assert!(matches!(timed_out, Err(BridgeError::Timeout(_))));

    let expected_async = (6.0, 2.0, 1.0, 6.0);
    let expected_blocking = (4.0, 1.0, 1.0, 4.0);
    let m = collector
        .eventually("every call counted", |m| {
            counts(m, "to_async").0 >= expected_async.0
                && counts(m, "to_blocking").0 >= expected_blocking.0
        })
        .await;
    assert_eq!(counts(&m, "to_async"), expected_async);
    assert_eq!(counts(&m, "to_blocking"), expected_blocking);

    // The detached work still runs: one task pending, in events and heartbeats.
    let m = collector
        .eventually("a heartbeat after the calls", |m| {
            m.get(PENDING, &instance()) == Some(1.0)
        })
        .await;
    assert_eq!(m.value(LOOPS, &instance()), 1.0, "the bridge's own runtime");
    release.send(()).expect("the detached work waits");
    collector
        .eventually("the detached work ended", |m| {
            m.get(PENDING, &instance()) == Some(0.0)
        })
        .await;

    // The heartbeat's process and system figures.
    let m = collector.metrics().await;
    let tw = instance();
    assert!(m.value("automation_process_resident_memory_bytes", &tw) > 0.0);
    assert!(m.value("automation_process_open_fds", &tw) > 0.0);
    assert!(m.value("automation_system_memory_total_bytes", &tw) > 0.0);
    assert!(m.value("automation_system_disk_available_bytes", &tw) > 0.0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    let started = m.value("automation_process_start_time_seconds", &tw);
    assert!(
        (now - 3600.0..=now + 1.0).contains(&started),
        "this test process started {started}, now is {now}"
    );

    // Heartbeats go on; nothing is counted twice.
    sleep(Duration::from_millis(600)).await;
    let m = collector.metrics().await;
    assert_eq!(counts(&m, "to_async"), expected_async);
    assert_eq!(counts(&m, "to_blocking"), expected_blocking);

    // The last bridge gone, its runtime stops and the heartbeat says so.
    drop(bridge);
    collector
        .eventually("no active loop", |m| m.get(LOOPS, &instance()) == Some(0.0))
        .await;

    let stats = within(
        "reporter shutdown",
        reporter.shutdown("test over", Duration::from_secs(5)),
    )
    .await;
    assert_eq!(stats.dropped_events, 0);
}
