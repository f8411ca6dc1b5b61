//! The reporter against a fake collector over real sockets and real tonic.

#[path = "reporter/fake.rs"]
mod fake;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use automation_proto::v1::event::Payload;
use automation_proto::v1::{
    BridgeState, ComponentError, Event, EventBatch, GatewayState, Goodbye, Heartbeat, Source,
    TestRun, WatcherState,
};
use automation_telemetry::client::ClientError;
use automation_telemetry::reporter::{
    LiveState, MIN_HEARTBEAT_INTERVAL, PushError, Reporter, ReporterConfig, ReporterError,
};
use automation_testkit::eventually;
use fake::{Answer, FakeCollector};
use prost::Message;
use tonic::Code;

/// Every wait is bounded, so a bug fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(15);

/// Fast timings; heartbeats only at start unless a test wants more.
fn config(endpoint: String) -> ReporterConfig {
    let mut config = ReporterConfig::new(endpoint, "test-watcher", "pod-1", "1.2.3");
    config.heartbeat_interval = Duration::from_secs(3600);
    config.batch_max_delay = Duration::from_millis(20);
    config.retry_min = Duration::from_millis(20);
    config.retry_max = Duration::from_millis(200);
    config.push_timeout = Duration::from_secs(2);
    config.connect_timeout = Duration::from_secs(1);
    config
}

fn start(config: ReporterConfig) -> Reporter {
    Reporter::start(config, Arc::new(())).expect("reporter starts")
}

fn numbered(n: u64) -> Payload {
    Payload::Error(ComponentError {
        kind: "test".to_owned(),
        message: n.to_string(),
        model: String::new(),
    })
}

/// A numbered test event of about `bytes` bytes.
fn padded(n: u64, bytes: usize) -> Payload {
    Payload::Error(ComponentError {
        kind: "test".to_owned(),
        message: format!("{n} {}", "x".repeat(bytes)),
        model: String::new(),
    })
}

/// The number a test event carries, `None` for other events.
fn number(event: &Event) -> Option<u64> {
    match &event.payload {
        Some(Payload::Error(error)) if error.kind == "test" => {
            error.message.split(' ').next()?.parse().ok()
        }
        _ => None,
    }
}

/// The bytes `event` adds to an encoded batch.
fn size_in_batch(event: &Event) -> usize {
    let len = event.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

fn heartbeat(event: &Event) -> Option<&Heartbeat> {
    match &event.payload {
        Some(Payload::Heartbeat(heartbeat)) => Some(heartbeat),
        _ => None,
    }
}

/// The numbers of the test events the fake applied, in order.
fn delivered(fake: &FakeCollector) -> Vec<u64> {
    fake.state().events().filter_map(number).collect()
}

async fn shutdown(reporter: Reporter) -> automation_telemetry::reporter::ReporterStats {
    tokio::time::timeout(
        PATIENCE,
        reporter.shutdown("test over", Duration::from_secs(5)),
    )
    .await
    .expect("shutdown within its deadline")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reported_while_the_collector_is_away_arrive_in_order_exactly_once() {
    let mut fake = FakeCollector::reserved();
    let mut config = config(fake.endpoint());
    config.batch_max_events = 50;
    let reporter = start(config);

    // Nothing listens yet. Report from a plain thread, as sync code does.
    let sync = reporter.clone();
    tokio::task::spawn_blocking(move || (0..300).for_each(|n| sync.report(numbered(n))))
        .await
        .unwrap();
    let error = eventually("a failed push", || reporter.stats().last_error).await;
    assert!(error.contains("Unavailable"), "{error}");
    assert!(!reporter.stats().connected);
    assert!(reporter.check().await.is_err());

    fake.listen().await;
    eventually("the first 300 events", || {
        (delivered(&fake).len() >= 300).then_some(())
    })
    .await;

    // Lose the collector again, then bring it back on the same port.
    fake.stop().await;
    (300..600).for_each(|n| reporter.report(numbered(n)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    fake.listen().await;
    eventually("all 600 events", || {
        (delivered(&fake).len() >= 600).then_some(())
    })
    .await;

    assert_eq!(delivered(&fake), (0..600).collect::<Vec<_>>());
    let sequences: Vec<u64> = fake.state().batches.iter().map(|b| b.sequence).collect();
    assert_eq!(sequences, (1..=sequences.len() as u64).collect::<Vec<_>>());
    let source = fake.state().batches[0].source.clone().unwrap();
    assert_eq!(
        (
            source.service.as_str(),
            source.instance.as_str(),
            source.version.as_str()
        ),
        ("test-watcher", "pod-1", "1.2.3")
    );
    assert_eq!(source.incarnation, reporter.incarnation());
    assert_ne!(reporter.incarnation(), 0);

    let stats = eventually("everything acknowledged", || {
        let stats = reporter.stats();
        (stats.buffered_events == 0).then_some(stats)
    })
    .await;
    assert_eq!(stats.dropped_events, 0);
    assert_eq!(stats.acked_events, fake.state().events().count() as u64);
    assert_eq!(stats.sent_batches, sequences.len() as u64);
    assert!(stats.connected);
    assert_eq!(reporter.check().await, Ok(()));
    shutdown(reporter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_acknowledgement_is_replayed_with_the_same_sequence() {
    let fake = FakeCollector::start().await;
    fake.state()
        .script
        .extend([Answer::LoseAck, Answer::LoseAck]);
    let reporter = start(config(fake.endpoint()));
    (0..10).for_each(|n| reporter.report(numbered(n)));

    eventually("all events", || {
        (delivered(&fake).len() >= 10).then_some(())
    })
    .await;
    let stats = eventually("everything acknowledged", || {
        let stats = reporter.stats();
        (stats.buffered_events == 0).then_some(stats)
    })
    .await;

    let pushes = fake.state().pushes.clone();
    let first = &pushes[0];
    assert!(!first.replay);
    assert_eq!(pushes[1].sequence, first.sequence, "{pushes:?}");
    assert!(pushes[1].replay, "{pushes:?}");
    assert!(pushes[2].replay, "{pushes:?}");
    assert_eq!(delivered(&fake), (0..10).collect::<Vec<_>>());
    assert_eq!(stats.dropped_events, 0);
    assert_eq!(stats.acked_events, fake.state().events().count() as u64);
    shutdown(reporter).await;
}

/// Stamps each heartbeat with its number, so a test knows how many were made.
#[derive(Default)]
struct CountingLiveState {
    fills: AtomicU64,
}

impl LiveState for CountingLiveState {
    fn fill(&self, heartbeat: &mut Heartbeat) {
        let n = self.fills.fetch_add(1, Ordering::SeqCst) + 1;
        heartbeat.watcher = Some(WatcherState {
            changed_files_pending: n,
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_the_oldest_and_the_heartbeat_says_how_many() {
    let mut fake = FakeCollector::reserved();
    let mut config = config(fake.endpoint());
    config.buffer_max_events = 10;
    config.batch_max_events = 5;
    config.heartbeat_interval = Duration::from_millis(500);
    let reporter = Reporter::start(config, Arc::new(CountingLiveState::default())).unwrap();
    (0..100).for_each(|n| reporter.report(numbered(n)));
    eventually("the buffer to overflow", || {
        let stats = reporter.stats();
        (stats.dropped_events > 0 && stats.buffered_events <= 15).then_some(())
    })
    .await;

    fake.listen().await;
    // Once nothing is buffered, everything reported so far is delivered or dropped.
    let applied_before = eventually("the buffer to drain", || {
        (reporter.stats().buffered_events == 0).then(|| fake.state().batches.len())
    })
    .await;
    let (number, dropped_total, delivered_before) = eventually("a later heartbeat", || {
        let state = fake.state();
        let mut delivered_before = state.batches[..applied_before]
            .iter()
            .map(|b| b.events.len() as u64)
            .sum::<u64>();
        for batch in &state.batches[applied_before..] {
            for event in &batch.events {
                if let Some(heartbeat) = heartbeat(event) {
                    let number = heartbeat.watcher.as_ref().unwrap().changed_files_pending;
                    return Some((number, heartbeat.events_dropped_total, delivered_before));
                }
                delivered_before += 1;
            }
        }
        None
    })
    .await;

    // 100 test events and the heartbeats before this one were reported.
    let reported = 100 + (number - 1);
    assert_eq!(dropped_total, reported - delivered_before);
    assert_eq!(reporter.stats().dropped_events, dropped_total);
    let kept = delivered(&fake);
    assert!(kept.len() < 100, "{kept:?}");
    assert!(
        kept.windows(2).all(|w| w[0] < w[1]),
        "in order, once: {kept:?}"
    );
    shutdown(reporter).await;
}

struct GatewayLive;

impl LiveState for GatewayLive {
    fn fill(&self, heartbeat: &mut Heartbeat) {
        heartbeat.gateway = Some(GatewayState {
            in_flight_requests: 3,
            circuit_open: true,
            balances: Vec::new(),
        });
        heartbeat.bridge = Some(BridgeState {
            pending_tasks: 2,
            active_loops: 1,
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_carry_the_interval_process_and_system_figures_and_live_state() {
    let fake = FakeCollector::start().await;
    let mut config = config(fake.endpoint());
    config.heartbeat_interval = Duration::from_millis(300);
    let reporter = Reporter::start(config, Arc::new(GatewayLive)).unwrap();

    let beats: Vec<Event> = eventually("three heartbeats", || {
        let state = fake.state();
        let beats: Vec<Event> = state
            .events()
            .filter(|e| heartbeat(e).is_some())
            .cloned()
            .collect();
        (beats.len() >= 3).then_some(beats)
    })
    .await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for event in &beats {
        let beat = heartbeat(event).unwrap();
        assert_eq!(beat.interval_seconds, 0.3);
        let process = beat.process.unwrap();
        assert!(process.resident_memory_bytes > 0, "{process:?}");
        assert!(process.open_fds >= 3, "{process:?}");
        assert!(process.cpu_seconds_total >= 0.0, "{process:?}");
        assert!(process.start_time_seconds <= now + 1.0, "{process:?}");
        assert!(process.start_time_seconds > now - 3600.0, "{process:?}");
        let system = beat.system.unwrap();
        assert!(system.memory_used_bytes > 0, "{system:?}");
        assert!(
            system.memory_total_bytes >= system.memory_used_bytes,
            "{system:?}"
        );
        assert_eq!(beat.events_dropped_total, 0);
        assert_eq!(beat.gateway.as_ref().unwrap().in_flight_requests, 3);
        assert!(beat.gateway.as_ref().unwrap().circuit_open);
        assert_eq!(beat.bridge.unwrap().pending_tasks, 2);
        let time = event.time.unwrap();
        assert!(
            (time.seconds as f64 - now).abs() < 60.0,
            "stamped now: {time:?}"
        );
    }
    // The first at start, then one per interval.
    let seconds = |e: &Event| {
        let t = e.time.unwrap();
        t.seconds as f64 + f64::from(t.nanos) / 1e9
    };
    let gap = seconds(&beats[2]) - seconds(&beats[1]);
    assert!((0.2..1.0).contains(&gap), "heartbeats {gap} s apart");
    shutdown(reporter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_says_goodbye_after_flushing_everything() {
    let fake = FakeCollector::start().await;
    let mut config = config(fake.endpoint());
    // Longer than the test: only shutdown can flush these events.
    config.batch_max_delay = Duration::from_secs(3600);
    let reporter = start(config);
    let late = reporter.clone();
    (0..50).for_each(|n| reporter.report(numbered(n)));

    let stats = shutdown(reporter).await;
    assert_eq!(stats.buffered_events, 0);
    assert_eq!(stats.dropped_events, 0);
    assert_eq!(stats.acked_events, fake.state().events().count() as u64);
    assert_eq!(delivered(&fake), (0..50).collect::<Vec<_>>());
    let last = fake.state().events().last().cloned().unwrap();
    match last.payload {
        Some(Payload::Goodbye(goodbye)) => assert_eq!(goodbye.reason, "test over"),
        other => panic!("the last event is {other:?}, not a goodbye"),
    }

    // After the goodbye nothing more is sent; late events are counted as dropped.
    late.report(numbered(50));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(late.stats().dropped_events, 1);
    assert!(matches!(
        fake.state().events().last().unwrap().payload,
        Some(Payload::Goodbye(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_at_its_deadline_and_counts_what_was_lost() {
    let fake = FakeCollector::reserved();
    let reporter = start(config(fake.endpoint()));
    (0..20).for_each(|n| reporter.report(numbered(n)));
    eventually("the heartbeat at start", || {
        (reporter.stats().buffered_events == 21).then_some(())
    })
    .await;
    let started = tokio::time::Instant::now();
    let stats = tokio::time::timeout(
        PATIENCE,
        reporter.shutdown("bye", Duration::from_millis(300)),
    )
    .await
    .expect("shutdown returns");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stats.buffered_events, 0);
    assert_eq!(stats.acked_events, 0);
    // The 20 events, the heartbeat at start and the goodbye.
    assert_eq!(stats.dropped_events, 22);
    assert!(stats.last_error.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_sent_and_a_rewritten_file_takes_effect_without_restart() {
    let fake = FakeCollector::start().await;
    fake.state().required_token = Some("alpha".to_owned());
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("collector-token");
    std::fs::write(&token_file, "alpha\n").unwrap();
    let mut config = config(fake.endpoint());
    config.token_file = Some(token_file.clone());
    let reporter = start(config);

    reporter.report(numbered(0));
    eventually("the first event", || {
        (delivered(&fake) == [0]).then_some(())
    })
    .await;
    assert!(
        fake.state()
            .pushes
            .iter()
            .all(|p| p.authorization.as_deref() == Some("Bearer alpha"))
    );

    // The secret rotates: the collector takes the new token only.
    std::fs::write(&token_file, "beta\n").unwrap();
    fake.state().required_token = Some("beta".to_owned());
    let mut n = 1;
    eventually("a push with the new token", || {
        reporter.report(numbered(n));
        n += 1;
        fake.state()
            .pushes
            .iter()
            .any(|p| p.authorization.as_deref() == Some("Bearer beta"))
            .then_some(())
    })
    .await;
    // Refused pushes (UNAUTHENTICATED) were retried, so nothing was lost.
    let sent = n;
    eventually("every event", || {
        (delivered(&fake).len() as u64 == sent).then_some(())
    })
    .await;
    assert_eq!(delivered(&fake), (0..sent).collect::<Vec<_>>());
    let pushes = fake.state().pushes.clone();
    let switched = pushes
        .iter()
        .position(|p| p.authorization.as_deref() == Some("Bearer beta"))
        .unwrap();
    assert!(
        pushes[switched..]
            .iter()
            .all(|p| p.authorization.as_deref() == Some("Bearer beta")),
        "{pushes:?}"
    );
    shutdown(reporter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_is_dropped_and_passing_failures_are_retried() {
    let fake = FakeCollector::start().await;
    fake.state().script.extend([
        Answer::Fail(Code::ResourceExhausted),
        Answer::Fail(Code::Unavailable),
        Answer::Fail(Code::DeadlineExceeded),
        Answer::Fail(Code::InvalidArgument),
    ]);
    let mut config = config(fake.endpoint());
    config.batch_max_events = 5;
    let reporter = start(config);
    (0..5).for_each(|n| reporter.report(numbered(n)));
    let refused_batch = eventually("the refusal", || {
        let state = fake.state();
        (state.pushes.len() >= 4).then(|| state.pushes[3].sequence)
    })
    .await;
    (5..10).for_each(|n| reporter.report(numbered(n)));
    let stats = eventually("the rest delivered", || {
        let stats = reporter.stats();
        (stats.buffered_events == 0 && !delivered(&fake).is_empty()).then_some(stats)
    })
    .await;

    // The same batch was tried four times; the fourth answer gave it up for good.
    let pushes = fake.state().pushes.clone();
    assert!(
        pushes[..4].iter().all(|p| p.sequence == refused_batch),
        "{pushes:?}"
    );
    assert_eq!(stats.dropped_events, 5, "one full batch refused");
    assert!(stats.last_error.unwrap().contains("InvalidArgument"));
    assert!(
        fake.state()
            .batches
            .iter()
            .all(|b| b.sequence != refused_batch)
    );
    let kept = delivered(&fake);
    assert!(
        kept.contains(&9) && kept.windows(2).all(|w| w[0] < w[1]),
        "{kept:?}"
    );
    assert_eq!(stats.acked_events, fake.state().events().count() as u64);
    shutdown(reporter).await;
}

#[tokio::test]
async fn a_bad_endpoint_is_an_error_at_start_and_an_absent_collector_is_not() {
    for endpoint in [
        "not a url",
        "ftp://127.0.0.1:50051",
        "127.0.0.1:50051",
        "http://",
    ] {
        let error = Reporter::start(config(endpoint.to_owned()), Arc::new(())).unwrap_err();
        assert!(
            matches!(error, ReporterError::Client(ClientError::Endpoint { .. })),
            "{endpoint}: {error}"
        );
    }
    let absent = FakeCollector::reserved();
    let reporter = Reporter::start(config(absent.endpoint()), Arc::new(())).unwrap();
    assert!(reporter.check().await.is_err());
}

#[test]
fn starting_outside_a_runtime_is_an_error() {
    let error = Reporter::start(config("http://127.0.0.1:1".to_owned()), Arc::new(())).unwrap_err();
    assert!(matches!(error, ReporterError::NoRuntime), "{error}");
}

#[tokio::test]
async fn unusable_token_or_ca_files_are_errors_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut with_token = config("http://127.0.0.1:1".to_owned());
    with_token.token_file = Some(dir.path().join("absent-token"));
    let error = Reporter::start(with_token, Arc::new(())).unwrap_err();
    assert!(error.to_string().contains("absent-token"), "{error}");

    let mut with_ca = config("https://127.0.0.1:1".to_owned());
    with_ca.tls_ca_file = Some(dir.path().join("absent-ca.pem"));
    let error = Reporter::start(with_ca, Arc::new(())).unwrap_err();
    assert!(error.to_string().contains("absent-ca.pem"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabytes_of_events_go_in_batches_under_the_byte_limit_and_none_is_lost() {
    const LIMIT: usize = 1 << 20;
    const EVENTS: u64 = 1600;
    // The fake decodes no more than a batch may weigh: a batch over the
    // limit would be refused (OUT_OF_RANGE) and its events counted as dropped.
    let fake = FakeCollector::start_with(Some(LIMIT)).await;
    let mut config = config(fake.endpoint());
    assert_eq!(config.batch_max_bytes, LIMIT, "the default");
    assert_eq!(config.batch_max_events, 500, "the default");
    // Only size (or shutdown) closes a batch here.
    config.batch_max_delay = Duration::from_secs(3600);
    let reporter = start(config);
    // About 4 KiB each, 6.5 MiB in all: some 256 per batch, fewer than 500.
    (0..EVENTS).for_each(|n| reporter.report(padded(n, 4000)));
    eventually(
        "the full batches, sent without waiting for the delay",
        || (fake.state().batches.len() >= 5).then_some(()),
    )
    .await;
    let stats = shutdown(reporter).await;

    assert_eq!(stats.dropped_events, 0, "{stats:?}");
    assert_eq!(stats.buffered_events, 0, "{stats:?}");
    assert_eq!(delivered(&fake), (0..EVENTS).collect::<Vec<_>>());
    let state = fake.state();
    assert!(state.pushes.iter().all(|p| !p.replay), "{:?}", state.pushes);
    let sizes: Vec<(usize, usize)> = state.pushes.iter().map(|p| (p.events, p.bytes)).collect();
    assert!(sizes.len() >= 7, "6.5 MiB in 1 MiB batches: {sizes:?}");
    assert!(sizes.iter().all(|&(_, bytes)| bytes <= LIMIT), "{sizes:?}");
    assert!(
        sizes.iter().all(|&(events, _)| events < 500),
        "bytes, not the count, closed the batches: {sizes:?}"
    );
    // A batch closes only when the next event would take it over the limit.
    for pair in state.batches.windows(2) {
        let (batch, next) = (&pair[0], &pair[1]);
        if next
            .events
            .iter()
            .any(|e| matches!(e.payload, Some(Payload::Goodbye(_))))
        {
            break; // shutdown formed the last batch from what was left
        }
        let (len, next_size) = (batch.encoded_len(), size_in_batch(&next.events[0]));
        assert!(
            len + next_size > LIMIT,
            "batch {} closed at {len} bytes; the next event ({next_size} bytes) fitted",
            batch.sequence
        );
    }
    assert_eq!(stats.acked_events, state.events().count() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_free_text_arrives_truncated() {
    let fake = FakeCollector::start().await;
    let reporter = start(config(fake.endpoint()));
    let huge = format!("panicked at {}", "é".repeat(5 << 20)); // 10 MiB
    reporter.report(Payload::Error(ComponentError {
        kind: "huge".to_owned(),
        message: huge.clone(),
        model: String::new(),
    }));
    reporter.report(Payload::TestRun(TestRun {
        tests_failed: 1000,
        failed_tests: (0..1000)
            .map(|n| format!("t{n}_{}", "x".repeat(1000)))
            .collect(),
        ..TestRun::default()
    }));
    let (message, failed_tests) = eventually("both events", || {
        let state = fake.state();
        let message = state.events().find_map(|e| match &e.payload {
            Some(Payload::Error(error)) if error.kind == "huge" => Some(error.message.clone()),
            _ => None,
        })?;
        let failed = state.events().find_map(|e| match &e.payload {
            Some(Payload::TestRun(run)) => Some(run.failed_tests.clone()),
            _ => None,
        })?;
        Some((message, failed))
    })
    .await;

    assert!(message.len() <= 4096, "{} bytes", message.len());
    assert!(message.len() > 4000, "{} bytes", message.len());
    assert!(message.ends_with("…(truncated)"), "{message}");
    let kept = message.trim_end_matches("…(truncated)");
    assert!(
        huge.starts_with(kept),
        "cut at a character boundary, from the start"
    );

    assert_eq!(failed_tests.len(), 200);
    assert!(failed_tests[0].starts_with("t0_") && failed_tests[199].starts_with("t199_"));
    assert!(
        failed_tests
            .iter()
            .all(|name| name.len() <= 512 && name.ends_with("…(truncated)"))
    );

    let stats = shutdown(reporter).await;
    assert_eq!(stats.dropped_events, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_goodbye_reason_is_truncated_too() {
    let fake = FakeCollector::start().await;
    let reporter = start(config(fake.endpoint()));
    let reason = "r".repeat(1 << 20);
    let stats = tokio::time::timeout(PATIENCE, reporter.shutdown(&reason, Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(stats.dropped_events, 0);
    let last = fake.state().events().last().cloned().unwrap();
    let Some(Payload::Goodbye(Goodbye { reason })) = last.payload else {
        panic!("not a goodbye: {last:?}");
    };
    assert!(
        reason.len() <= 4096 && reason.ends_with("…(truncated)"),
        "{}",
        reason.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answered_out_of_range_is_dropped_and_counted_and_later_ones_delivered() {
    let fake = FakeCollector::start().await;
    let mut config = config(fake.endpoint());
    config.batch_max_events = 5;
    let reporter = start(config);
    eventually("the heartbeat at start", || {
        (reporter.stats().acked_events == 1).then_some(())
    })
    .await;
    let before = {
        let mut state = fake.state();
        state.script.push_back(Answer::Fail(Code::OutOfRange));
        state.pushes.len()
    };
    (0..5).for_each(|n| reporter.report(numbered(n)));
    let refused = eventually("the refusal", || {
        let stats = reporter.stats();
        let state = fake.state();
        (stats.dropped_events > 0).then(|| state.pushes[before].clone())
    })
    .await;
    // The refused batch is counted as dropped, once, and never pushed again.
    (5..10).for_each(|n| reporter.report(numbered(n)));
    let stats = eventually("the rest delivered", || {
        let stats = reporter.stats();
        (stats.buffered_events == 0 && delivered(&fake).contains(&9)).then_some(stats)
    })
    .await;
    assert_eq!(stats.dropped_events, refused.events as u64, "{refused:?}");
    assert!(stats.last_error.unwrap().contains("OutOfRange"));
    {
        let state = fake.state();
        assert_eq!(
            state
                .pushes
                .iter()
                .filter(|p| p.sequence == refused.sequence)
                .count(),
            1,
            "not retried: {:?}",
            state.pushes
        );
        assert!(state.batches.iter().all(|b| b.sequence != refused.sequence));
        let kept: Vec<u64> = state.events().filter_map(number).collect();
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "{kept:?}");
        assert!((5..10).all(|n| kept.contains(&n)), "{kept:?}");
        assert_eq!(stats.acked_events, state.events().count() as u64);
        assert_eq!(
            stats.acked_events + stats.dropped_events,
            11,
            "10 test events and the heartbeat at start, each delivered or dropped"
        );
    }
    shutdown(reporter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_collectors_decoding_limit_never_blocks_the_queue() {
    // A collector that decodes 64 KiB at most, a reporter that batches up to
    // 1 MiB: tonic itself answers OUT_OF_RANGE, which no retry can change.
    let fake = FakeCollector::start_with(Some(64 << 10)).await;
    let reporter = start(config(fake.endpoint()));
    eventually("the heartbeat at start", || {
        (reporter.stats().acked_events > 0).then_some(())
    })
    .await;
    (0..40).for_each(|n| reporter.report(padded(n, 4000)));
    let stats = eventually("the big batch refused", || {
        let stats = reporter.stats();
        (stats.dropped_events > 0).then_some(stats)
    })
    .await;
    assert!(stats.last_error.unwrap().contains("OutOfRange"));
    (40..45).for_each(|n| reporter.report(numbered(n)));
    eventually("later events delivered", || {
        delivered(&fake).contains(&44).then_some(())
    })
    .await;
    let stats = shutdown(reporter).await;
    let state = fake.state();
    let small: Vec<u64> = state
        .events()
        .filter_map(number)
        .filter(|n| *n >= 40)
        .collect();
    assert_eq!(small, (40..45).collect::<Vec<_>>());
    let big_delivered = state
        .events()
        .filter_map(number)
        .filter(|n| *n < 40)
        .count() as u64;
    assert!(big_delivered < 40, "a batch of them was refused");
    assert_eq!(stats.dropped_events + big_delivered, 40, "{stats:?}");
    let goodbye = state.events().last().unwrap();
    assert!(
        matches!(goodbye.payload, Some(Payload::Goodbye(_))),
        "{goodbye:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_and_unacknowledged_events_stay_within_the_bound() {
    const BOUND: u64 = 50;
    const BATCH: u64 = 10;
    const REPORTED: u64 = 500;
    let mut fake = FakeCollector::reserved();
    let mut config = config(fake.endpoint());
    config.buffer_max_events = BOUND as usize;
    config.batch_max_events = BATCH as usize;
    let reporter = start(config);
    for n in 0..REPORTED {
        reporter.report(numbered(n));
        let stats = reporter.stats();
        assert!(
            stats.buffered_events <= BOUND,
            "waiting and being sent together: {stats:?}"
        );
        if n % 50 == 0 {
            // Let the sender form batches and fail pushes meanwhile.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    eventually("a failed push", || reporter.stats().last_error).await;
    assert_eq!(reporter.stats().buffered_events, BOUND);

    fake.listen().await;
    let stats = eventually("the buffer to drain", || {
        let stats = reporter.stats();
        (stats.buffered_events == 0).then_some(stats)
    })
    .await;
    let kept = delivered(&fake);
    let batches: Vec<usize> = fake
        .state()
        .batches
        .iter()
        .map(|b| b.events.len())
        .collect();
    // The heartbeat at start and the test events: each delivered or dropped.
    assert_eq!(
        stats.acked_events + stats.dropped_events,
        REPORTED + 1,
        "{stats:?}"
    );
    assert_eq!(stats.acked_events, fake.state().events().count() as u64);
    assert!(stats.acked_events <= BOUND, "{stats:?}");
    assert!(
        kept.windows(2).all(|w| w[0] < w[1]),
        "in order, once: {kept:?}"
    );
    // The batch that was being sent throughout, then the newest, which waited
    // beside it: the oldest made room.
    let waited = BOUND - batches[0] as u64;
    let newest: Vec<u64> = (REPORTED - waited..REPORTED).collect();
    assert!(kept.ends_with(&newest), "{batches:?} {kept:?}");
    shutdown(reporter).await;
}

#[tokio::test]
async fn a_heartbeat_interval_under_100ms_is_refused_at_start() {
    assert_eq!(MIN_HEARTBEAT_INTERVAL, Duration::from_millis(100));
    for interval in [
        Duration::ZERO,
        Duration::from_millis(1),
        Duration::from_millis(99),
    ] {
        let mut config = config("http://127.0.0.1:1".to_owned());
        config.heartbeat_interval = interval;
        let error = Reporter::start(config, Arc::new(())).unwrap_err();
        assert!(
            matches!(error, ReporterError::HeartbeatInterval(d) if d == interval),
            "{interval:?}: {error}"
        );
        assert!(error.to_string().contains("at least 100ms"), "{error}");
    }
    let mut config = config("http://127.0.0.1:1".to_owned());
    config.heartbeat_interval = MIN_HEARTBEAT_INTERVAL;
    let reporter = Reporter::start(config, Arc::new(())).expect("100 ms is enough");
    drop(reporter);
}

/// A batch a service keeps itself (an outbox) goes as it is, under its own
/// incarnation and sequence, with the reporter's token: a resend is a
/// replay, a refusal for good and a passing failure are told apart, and
/// nothing of it passes through the reporter's own queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_pushed_as_it_is_keeps_its_identity_so_a_resend_is_a_replay() {
    let mut fake = FakeCollector::start().await;
    fake.state().required_token = Some("alpha".to_owned());
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("collector-token");
    std::fs::write(&token_file, "alpha\n").unwrap();
    let mut config = config(fake.endpoint());
    config.token_file = Some(token_file);
    let reporter = start(config);
    let own = reporter.source();
    assert_eq!(
        (
            own.service.as_str(),
            own.instance.as_str(),
            own.version.as_str()
        ),
        ("test-watcher", "pod-1", "1.2.3")
    );
    assert_eq!(own.incarnation, reporter.incarnation());

    let stored = Reporter::event(padded(7, 10_000));
    match &stored.payload {
        Some(Payload::Error(e)) => assert!(e.message.len() <= 4096, "bounded as report() does"),
        other => panic!("{other:?}"),
    }
    assert!(stored.time.is_some());
    let batch = EventBatch {
        source: Some(Source {
            incarnation: 0x0dd_ba11,
            instance: "pod-0".to_owned(),
            ..own
        }),
        sequence: 41,
        events: vec![stored],
    };
    let first = reporter.push(batch.clone()).await.unwrap();
    assert_eq!((first.sequence, first.duplicate), (41, false));
    let again = reporter.push(batch.clone()).await.unwrap();
    assert!(again.duplicate, "the same identity is a replay");
    {
        let state = fake.state();
        let applied: Vec<_> = state.batches.iter().filter(|b| b.sequence == 41).collect();
        assert_eq!(applied.len(), 1);
        assert_eq!(*applied[0], batch, "sent as it is");
        let pushed = state.pushes.iter().filter(|p| p.sequence == 41);
        assert!(pushed.clone().count() == 2);
        assert!(
            pushed
                .clone()
                .all(|p| p.authorization.as_deref() == Some("Bearer alpha"))
        );
    }

    fake.state()
        .script
        .push_back(Answer::Fail(Code::InvalidArgument));
    let refused = reporter.push(batch.clone()).await.unwrap_err();
    assert!(
        matches!(refused, PushError::Refused(ref e) if e.contains("InvalidArgument")),
        "{refused}"
    );
    fake.state()
        .script
        .push_back(Answer::Fail(Code::ResourceExhausted));
    let passing = reporter.push(batch.clone()).await.unwrap_err();
    assert!(matches!(passing, PushError::Failed(_)), "{passing}");
    reporter.count_dropped(3);
    assert_eq!(reporter.stats().dropped_events, 3);
    shutdown(reporter.clone()).await;
    fake.stop().await;
    let away = reporter.push(batch).await.unwrap_err();
    assert!(matches!(away, PushError::Failed(_)), "{away}");
}
