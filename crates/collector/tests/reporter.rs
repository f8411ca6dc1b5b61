//! The reporter against a real collector, over real sockets (DESIGN §7,
//! "nothing lost while the collector is away"): events reported before the
//! collector starts all arrive, once; a collector restart loses nothing the
//! buffer could hold; and when the buffer overflows, the oldest events are
//! dropped and exactly that many are counted, by the reporter and, through
//! its heartbeats, by the collector.
//!
//! Every FileChanges reported here has `files_processed = 1`, so
//! `test_watcher_files_processed_total` counts the FileChanges applied.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use automation_collector::Config;
use automation_proto::v1::{self, event::Payload};
use automation_telemetry::reporter::{LiveState, Reporter, ReporterConfig, ReporterStats};
use automation_testkit::{Samples, TestCollector, within};
use tokio::time::sleep;

const FILES: &str = "test_watcher_files_processed_total";
const DROPPED: &str = "automation_reporter_events_dropped_total";

fn config() -> Config {
    let mut config = Config::new("reporter-test");
    config.sweep_interval = Duration::from_millis(50);
    config
}

fn reporter(endpoint: String, instance: &str, live: Arc<dyn LiveState>) -> Reporter {
    let mut config = ReporterConfig::new(endpoint, "test-watcher", instance, "1.2.3");
    config.heartbeat_interval = Duration::from_millis(300);
    config.batch_max_delay = Duration::from_millis(10);
    config.retry_min = Duration::from_millis(10);
    config.retry_max = Duration::from_millis(100);
    Reporter::start(config, live).expect("reporter starts")
}

fn watcher(instance: &str) -> [(&str, &str); 2] {
    [
        ("component", "test-watcher"),
        ("component_instance", instance),
    ]
}

/// One changed file; `number` lands in `test_watcher_changed_files_current`.
fn file(number: u64) -> Payload {
    Payload::FileChanges(v1::FileChanges {
        files_processed: 1,
        changed_files_pending: number,
        ..Default::default()
    })
}

/// A port nothing listens on (yet).
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// Waits until the reporter's stats satisfy `check`.
async fn until_stats(reporter: &Reporter, what: &str, check: impl Fn(&ReporterStats) -> bool) {
    within(what, async {
        while !check(&reporter.stats()) {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Says goodbye and flushes; its final stats.
async fn shutdown(reporter: Reporter) -> ReporterStats {
    let deadline = Duration::from_secs(5);
    within("shutdown", reporter.shutdown("test over", deadline)).await
}

/// Reports `count` changed files, half from a plain thread, half from async code.
async fn report_files(reporter: &Reporter, count: u64) {
    let from_thread = count / 2;
    let thread = {
        let reporter = reporter.clone();
        std::thread::spawn(move || (0..from_thread).for_each(|_| reporter.report(file(0))))
    };
    for i in from_thread..count {
        reporter.report(file(0));
        if i % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
    within(
        "the reporting thread",
        tokio::task::spawn_blocking(|| thread.join()),
    )
    .await
    .expect("join")
    .expect("the reporting thread did not panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reported_before_the_collector_starts_arrive_exactly_once() {
    let addr = free_port();
    let reporter = reporter(format!("http://{addr}"), "early", Arc::new(()));
    report_files(&reporter, 300).await;
    until_stats(&reporter, "a push refused", |s| s.last_error.is_some()).await;
    assert!(!reporter.stats().connected);

    let collector = TestCollector::start_on(config(), addr).await;
    let tw = watcher("early");
    let m = collector
        .eventually("all 300 applied", |m| m.get(FILES, &tw) == Some(300.0))
        .await;
    assert_eq!(m.value("automation_component_up", &tw), 1.0);
    until_stats(&reporter, "reconnected", |s| s.connected).await;

    // Retries and heartbeats go on; nothing is counted twice.
    sleep(Duration::from_secs(1)).await;
    assert_eq!(collector.metrics().await.value(FILES, &tw), 300.0);

    let stats = shutdown(reporter).await;
    assert_eq!((stats.dropped_events, stats.buffered_events), (0, 0));
    let m = collector
        .eventually("goodbye applied", |m| {
            m.get("automation_component_stopped", &tw) == Some(1.0)
        })
        .await;
    assert_eq!(m.value("automation_component_up", &tw), 0.0);
    assert_eq!(m.value(FILES, &tw), 300.0);
    assert_eq!(m.value(DROPPED, &tw), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_restart_loses_nothing_the_buffer_holds() {
    let a = TestCollector::start(config()).await;
    let addr = a.grpc;
    let reporter = reporter(a.endpoint(), "restarted", Arc::new(()));
    let tw = watcher("restarted");

    report_files(&reporter, 100).await;
    let m = a
        .eventually("the first 100 applied and acknowledged", |m| {
            m.get(FILES, &tw) == Some(100.0) && reporter.stats().buffered_events == 0
        })
        .await;
    // A's counts go with A: what it applied is read before it stops.
    let applied_by_a = m.value(FILES, &tw);
    within("collector A stops", a.stop()).await;

    report_files(&reporter, 150).await;
    until_stats(&reporter, "the reporter notices", |s| !s.connected).await;
    let b = TestCollector::start_on(config(), addr).await;
    report_files(&reporter, 50).await;

    b.eventually("B applied what A never saw", |m| {
        m.get(FILES, &tw) == Some(200.0)
    })
    .await;
    sleep(Duration::from_secs(1)).await;
    let applied_by_b = b.metrics().await.value(FILES, &tw);
    assert_eq!(
        applied_by_b, 200.0,
        "nothing A acknowledged is replayed to B"
    );
    assert_eq!(applied_by_a + applied_by_b, 300.0);
    let stats = shutdown(reporter).await;
    assert_eq!(stats.dropped_events, 0);
}

/// Numbers the heartbeats in `bridge.pending_tasks`, so the collector's
/// `safe_async_bridge_pending_tasks` gauge names the last heartbeat applied.
#[derive(Default)]
struct NumberedHeartbeats(AtomicU64);

impl LiveState for NumberedHeartbeats {
    fn fill(&self, heartbeat: &mut v1::Heartbeat) {
        let number = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        heartbeat.bridge = Some(v1::BridgeState {
            pending_tasks: number,
            active_loops: 0,
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_the_oldest_and_counts_exactly_what_it_dropped() {
    const REPORTED: i64 = 200;
    let addr = free_port();
    let heartbeats = Arc::new(NumberedHeartbeats::default());
    let mut config = ReporterConfig::new(format!("http://{addr}"), "test-watcher", "tiny", "1");
    config.buffer_max_events = 20;
    config.batch_max_events = 5;
    config.heartbeat_interval = Duration::from_millis(200);
    config.batch_max_delay = Duration::from_millis(10);
    config.retry_min = Duration::from_millis(10);
    config.retry_max = Duration::from_millis(100);
    let reporter = Reporter::start(config, heartbeats.clone()).expect("reporter starts");
    // The first heartbeat waits in the buffer, the files pour in behind it,
    // and one more heartbeat comes while the collector is still away.
    until_stats(&reporter, "the first heartbeat buffered", |s| {
        s.buffered_events == 1
    })
    .await;
    (1..=REPORTED as u64).for_each(|n| reporter.report(file(n)));
    let heartbeats_before_the_end = heartbeats.0.load(Ordering::SeqCst);
    within("a heartbeat during the outage", async {
        while heartbeats.0.load(Ordering::SeqCst) == heartbeats_before_the_end {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    let collector = TestCollector::start_on(self::config(), addr).await;
    let tw = watcher("tiny");
    let last_heartbeat = |m: &Samples| m.get("safe_async_bridge_pending_tasks", &tw);

    // Heartbeats share the buffer, so some of the dropped events may be
    // heartbeats. To tell them apart exactly, wait for a settled moment: the
    // reporter's stats unchanged around a scrape, nothing buffered, and a
    // heartbeat sampled after the last file was reported applied (so the
    // collector has the final drop count). The last heartbeat reported is the
    // newest event, never dropped, so its number (in the bridge gauge) is
    // the number of heartbeats reported; the collector counts those it
    // received; the rest were dropped. If heartbeats were not told apart, the
    // best one could say is `files + stats.dropped_events >= 200`.
    let mut seen = None;
    let settled = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let before = reporter.stats();
            let m = collector.metrics().await;
            let after = reporter.stats();
            let done = before == after
                && before.buffered_events == 0
                && last_heartbeat(&m) > Some(heartbeats_before_the_end as f64)
                && m.get(DROPPED, &tw) == Some(before.dropped_events as f64);
            seen = Some((after, m.get(FILES, &tw), m.get(DROPPED, &tw)));
            if done {
                return (before, m);
            }
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let Ok((stats, m)) = settled else {
        panic!("never settled; last seen (stats, files, dropped): {seen:?}");
    };

    let count = |name, labels: &[(&str, &str)]| m.value(name, labels) as i64;
    let files = count(FILES, &tw);
    let received = |event| count("collector_events_received_total", &[("event", event)]);
    assert_eq!(received("file_changes"), files);
    let heartbeats_received = received("heartbeat");
    assert_eq!(
        stats.acked_events as i64,
        files + heartbeats_received,
        "the collector applied exactly what the reporter saw acknowledged"
    );
    let heartbeats_dropped = last_heartbeat(&m).expect("a heartbeat") as i64 - heartbeats_received;
    let files_dropped = stats.dropped_events as i64 - heartbeats_dropped;
    assert!(
        files_dropped > 0 && files <= 20,
        "at most the buffer's bound: {stats:?}"
    );
    assert_eq!(
        files + files_dropped,
        REPORTED,
        "every file is applied or counted as dropped: {files} applied, {stats:?}, \
         {heartbeats_received} heartbeats received, {heartbeats_dropped} dropped"
    );
    assert_eq!(count(DROPPED, &tw), stats.dropped_events as i64);
    assert_eq!(
        count("test_watcher_changed_files_current", &tw),
        REPORTED,
        "the oldest make room; the newest file arrived"
    );

    let last = shutdown(reporter).await;
    assert_eq!(last.dropped_events, stats.dropped_events);
    assert_eq!(collector.metrics().await.value(FILES, &tw) as i64, files);
}
