//! Every call is counted exactly once, under one outcome, and pending work
//! is counted until it really ends.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use automation_async_bridge::{Bridge, BridgeError, Direction, DirectionStats, Outcome};

use crate::support::{
    DropFlag, Gate, LONG, Recording, SHORT, multi_thread, recorded, until, within,
};

#[test]
fn each_outcome_of_a_sync_call_is_counted_once() {
    let (bridge, recording) = recorded();
    let cancelled = DropFlag::default();
    let flag = cancelled.clone();
    let b = bridge.clone();
    let (ok, failed, panicked, timed_out) = within(move || {
        let ok = b.run_async(LONG, async { 1 });
        let failed = b.try_run_async(LONG, async { Err::<(), _>("refused") });
        let panicked = b.run_async(LONG, async { panic!("boom") });
        let timed_out = b.run_async(SHORT, async move {
            let _held = flag.guard();
            std::future::pending::<()>().await;
        });
        (ok, failed, panicked, timed_out)
    });
    assert_eq!(ok.expect("ok"), 1);
    assert!(matches!(failed, Err(BridgeError::Failed("refused"))));
    assert!(matches!(panicked, Err(BridgeError::Panicked(ref m)) if m == "boom"));
    assert!(matches!(timed_out, Err(BridgeError::Timeout(t)) if t == SHORT));

    use Outcome::*;
    let to_async = |o| (Direction::ToAsync, o);
    assert_eq!(
        recording.outcomes(),
        [Ok, Error, Panic, Timeout].map(to_async)
    );
    let stats = bridge.stats();
    assert_eq!(
        without_busy(stats.to_async),
        DirectionStats {
            calls: 4,
            ok: 1,
            errors: 2,
            panics: 1,
            timeouts: 1,
            ..DirectionStats::default()
        }
    );
    assert_eq!(stats.to_blocking, DirectionStats::default());
    let timeout = recording.records()[3];
    assert!(timeout.duration >= SHORT, "{timeout:?}");

    // The timed-out future is cancelled: dropped, and no longer pending.
    until("the timed-out future is dropped", || {
        cancelled.dropped() && bridge.pending() == 0
    });
}

#[test]
fn each_outcome_of_a_blocking_call_is_counted_once() {
    let (bridge, recording) = recorded();
    let mut gate = Gate::new();
    let work = gate.work();
    let b = bridge.clone();
    let (ok, failed, panicked, timed_out, pending_after) = within(move || {
        let runtime = multi_thread(2);
        let results = runtime.block_on(async move {
            let ok = b.run_blocking(LONG, || 1).await;
            let failed = b.try_run_blocking(LONG, || Err::<(), _>("refused")).await;
            let panicked = b.run_blocking(LONG, || panic!("boom")).await;
            let timed_out = b.run_blocking(SHORT, work).await;
            (ok, failed, panicked, timed_out, b.pending())
        });
        // Dropping the runtime would wait for the detached work.
        runtime.shutdown_background();
        results
    });
    assert_eq!(ok.expect("ok"), 1);
    assert!(matches!(failed, Err(BridgeError::Failed("refused"))));
    assert!(matches!(panicked, Err(BridgeError::Panicked(ref m)) if m == "boom"));
    assert!(matches!(timed_out, Err(BridgeError::Timeout(t)) if t == SHORT));

    use Outcome::*;
    let to_blocking = |o| (Direction::ToBlocking, o);
    assert_eq!(
        recording.outcomes(),
        [Ok, Error, Panic, Timeout].map(to_blocking)
    );
    assert_eq!(
        without_busy(bridge.stats().to_blocking),
        DirectionStats {
            calls: 4,
            ok: 1,
            errors: 2,
            panics: 1,
            timeouts: 1,
            ..DirectionStats::default()
        }
    );
    let records = recording.records();
    assert_eq!(
        records.iter().map(|r| r.pending).collect::<Vec<_>>(),
        [0, 0, 0, 1],
        "the timed-out work still runs right after its call"
    );

    // Detached, not stopped: pending until the work really ends.
    assert_eq!(pending_after, 1);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(bridge.pending(), 1);
    gate.open();
    until("the detached work ends", || bridge.pending() == 0);
    assert_eq!(recording.records().len(), 4, "its end is no second call");
}

#[test]
fn a_caller_that_stops_waiting_is_counted_as_cancelled() {
    let (bridge, recording) = recorded();
    let mut gate = Gate::new();
    let work = gate.work();
    let b = bridge.clone();
    within(move || {
        let runtime = multi_thread(1);
        runtime.block_on(async move {
            let abandoned = tokio::time::timeout(SHORT, b.run_blocking(LONG, work)).await;
            assert!(abandoned.is_err(), "the caller stopped waiting");
        });
        // Dropping the runtime would wait for the detached work.
        runtime.shutdown_background();
    });
    assert_eq!(
        recording.outcomes(),
        [(Direction::ToBlocking, Outcome::Cancelled)]
    );
    let stats = bridge.stats().to_blocking;
    assert_eq!((stats.calls, stats.cancelled, stats.errors), (1, 1, 0));
    assert_eq!(bridge.pending(), 1);
    gate.open();
    until("the abandoned work ends", || bridge.pending() == 0);
}

#[test]
fn run_blocking_outside_a_runtime_is_an_error() {
    let (bridge, recording) = recorded();
    let mut cx = Context::from_waker(Waker::noop());
    let call = pin!(bridge.run_blocking(LONG, || 1));
    let Poll::Ready(result) = call.poll(&mut cx) else {
        panic!("without a runtime the call ends at once");
    };
    assert!(matches!(result, Err(BridgeError::NoRuntime)));
    assert_eq!(
        recording.outcomes(),
        [(Direction::ToBlocking, Outcome::Error)]
    );
    assert_eq!(bridge.pending(), 0);
}

#[test]
fn a_shut_down_runtime_is_an_error() {
    let recording = std::sync::Arc::new(Recording::default());
    let runtime = multi_thread(1);
    let bridge = Bridge::builder()
        .handle(runtime.handle().clone())
        .observer(std::sync::Arc::clone(&recording))
        .build()
        .expect("multi-thread");
    runtime.shutdown_background();
    let b = bridge.clone();
    let result = within(move || b.run_async(LONG, async { 1 }));
    assert!(matches!(result, Err(BridgeError::Shutdown)), "{result:?}");
    assert_eq!(recording.outcomes(), [(Direction::ToAsync, Outcome::Error)]);
    assert_eq!(bridge.pending(), 0);
}

#[test]
fn records_carry_the_live_values() {
    let (bridge, recording) = recorded();
    assert_eq!(bridge.active_loops(), 0, "the runtime starts on first use");
    let b = bridge.clone();
    within(move || b.run_async(LONG, async {}).expect("ran"));
    let record = recording.records()[0];
    assert_eq!((record.pending, record.active_loops), (0, 1));
    assert_eq!(bridge.stats().active_loops, 1);

    let runtime = multi_thread(1);
    let on_handle = Bridge::with_handle(runtime.handle().clone()).expect("multi-thread");
    let b = on_handle.clone();
    within(move || b.run_async(LONG, async {}).expect("ran"));
    assert_eq!(
        on_handle.active_loops(),
        0,
        "a given runtime is not the bridge's"
    );

    let gauges = bridge.gauges();
    drop(bridge);
    assert_eq!(
        gauges.active_loops(),
        0,
        "the last bridge stops its runtime"
    );
}

#[test]
fn the_builders_gauges_are_the_bridges() {
    let builder = Bridge::builder();
    let gauges = builder.gauges();
    let bridge = builder.build().expect("bridge");
    let b = bridge.clone();
    within(move || b.run_async(LONG, async {}).expect("ran"));
    assert_eq!(gauges.stats(), bridge.stats());
    assert_eq!(gauges.stats().to_async.calls, 1);
}

/// The counts alone: durations vary from run to run.
fn without_busy(stats: DirectionStats) -> DirectionStats {
    DirectionStats {
        busy: Duration::ZERO,
        ..stats
    }
}
