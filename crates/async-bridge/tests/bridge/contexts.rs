//! `run_async` from every context sync code runs in, and `run_blocking` from
//! both runtime flavours: each completes, none deadlocks or panics.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use automation_async_bridge::{Bridge, BridgeError, BuildError};
use tokio::runtime::RuntimeFlavor;

use crate::support::{LONG, SHORT, current_thread, multi_thread, within};

/// A future that only finishes if a timer of the runtime running it works.
async fn answer_after_a_nap() -> u32 {
    tokio::time::sleep(Duration::from_millis(10)).await;
    42
}

#[test]
fn from_a_plain_thread() {
    let answer = within(|| {
        let bridge = Bridge::new();
        bridge.run_async(LONG, answer_after_a_nap())
    });
    assert_eq!(answer.expect("answered"), 42);
}

#[test]
fn from_inside_a_current_thread_runtime() {
    let answer = within(|| {
        let bridge = Bridge::new();
        // Sync code called from a future on the runtime's only thread.
        current_thread().block_on(async move { bridge.run_async(LONG, answer_after_a_nap()) })
    });
    assert_eq!(answer.expect("answered"), 42);
}

#[test]
fn a_future_that_needs_the_blocked_current_thread_runtime_times_out() {
    // The documented caveat: the answer comes from a task of the runtime the
    // caller blocks, so it cannot come before the call gives up. The call
    // times out instead of deadlocking, and the runtime then goes on.
    let (result, later) = within(|| {
        let bridge = Bridge::new();
        current_thread().block_on(async move {
            let (send, receive) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(async move {
                let _ = send.send(42);
            });
            let result = bridge.run_async(SHORT, receive);
            (result, task.await.is_ok())
        })
    });
    assert!(matches!(result, Err(BridgeError::Timeout(t)) if t == SHORT));
    assert!(later, "the runtime went on after the call");
}

#[test]
fn from_a_multi_thread_runtime_worker() {
    let answer = within(|| {
        let bridge = Bridge::new();
        multi_thread(2).block_on(async move {
            tokio::spawn(async move { bridge.run_async(LONG, answer_after_a_nap()) })
                .await
                .expect("task")
        })
    });
    assert_eq!(answer.expect("answered"), 42);
}

#[test]
fn on_the_callers_own_runtime_with_every_worker_waiting() {
    // Six tasks on two workers each wait in a bridge call on that same
    // runtime, and each future finishes only once all six run at once.
    const CALLERS: usize = 6;
    let answers = within(|| {
        let runtime = multi_thread(2);
        let bridge = Bridge::with_handle(runtime.handle().clone()).expect("multi-thread");
        let started = Arc::new(AtomicUsize::new(0));
        runtime.block_on(async move {
            let callers: Vec<_> = (0..CALLERS)
                .map(|i| {
                    let (bridge, started) = (bridge.clone(), Arc::clone(&started));
                    tokio::spawn(async move {
                        bridge.run_async(LONG, async move {
                            started.fetch_add(1, Ordering::SeqCst);
                            while started.load(Ordering::SeqCst) < CALLERS {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                            i
                        })
                    })
                })
                .collect();
            let mut answers = Vec::new();
            for caller in callers {
                answers.push(caller.await.expect("task").expect("answered"));
            }
            answers
        })
    });
    assert_eq!(answers, (0..CALLERS).collect::<Vec<_>>());
}

#[test]
fn from_a_future_the_bridge_itself_runs() {
    // A worker of the bridge's own one-worker runtime waits for a future
    // that needs a worker of that same runtime.
    let answer = within(|| {
        let bridge = Bridge::builder().worker_threads(1).build().expect("bridge");
        let inner = bridge.clone();
        bridge.run_async(
            LONG,
            async move { inner.run_async(LONG, answer_after_a_nap()) },
        )
    });
    assert_eq!(answer.expect("outer").expect("inner"), 42);
}

#[test]
fn from_a_blocking_pool_thread() {
    let answer = within(|| {
        let bridge = Bridge::new();
        multi_thread(1).block_on(async move {
            tokio::task::spawn_blocking(move || bridge.run_async(LONG, answer_after_a_nap()))
                .await
                .expect("blocking task")
        })
    });
    assert_eq!(answer.expect("answered"), 42);
}

#[test]
fn with_a_multi_thread_runtime_entered_inside_a_current_thread_one() {
    // The multi-thread runtime is current, but the thread is a current-thread
    // runtime's: the wait cannot be handed over and simply blocks.
    let answer = within(|| {
        let other = multi_thread(1);
        let handle = other.handle().clone();
        let bridge = Bridge::new();
        current_thread().block_on(async move {
            let _entered = handle.enter();
            bridge.run_async(LONG, answer_after_a_nap())
        })
    });
    assert_eq!(answer.expect("answered"), 42);
}

#[test]
fn a_current_thread_handle_is_refused() {
    let runtime = current_thread();
    let refused = Bridge::with_handle(runtime.handle().clone());
    assert!(matches!(
        refused,
        Err(BuildError::NotMultiThread(RuntimeFlavor::CurrentThread))
    ));
}

#[test]
fn run_blocking_from_either_runtime_flavour() {
    let answers = within(|| {
        let bridge = Bridge::new();
        let work = || std::thread::sleep(Duration::from_millis(5));
        let on_current = current_thread().block_on(bridge.run_blocking(LONG, work));
        let on_multi = multi_thread(1).block_on(bridge.run_blocking(LONG, work));
        (on_current, on_multi)
    });
    assert!(answers.0.is_ok() && answers.1.is_ok(), "{answers:?}");
}

#[test]
fn run_blocking_from_a_spawned_task() {
    // The call's future is Send: a gRPC handler or a spawned task can await it.
    let answer = within(|| {
        let bridge = Bridge::new();
        multi_thread(1).block_on(async move {
            tokio::spawn(async move { bridge.run_blocking(LONG, || 42).await })
                .await
                .expect("task")
        })
    });
    assert_eq!(answer.expect("answered"), 42);
}

#[test]
fn the_last_bridge_may_be_dropped_inside_a_runtime() {
    // Dropping a runtime inside async code panics; the bridge's own runtime
    // is shut down in the background instead.
    let loops_after = within(|| {
        multi_thread(1).block_on(async {
            let bridge = Bridge::new();
            bridge.run_async(LONG, async {}).expect("ran");
            let gauges = bridge.gauges();
            assert_eq!(gauges.active_loops(), 1);
            drop(bridge);
            gauges.active_loops()
        })
    });
    assert_eq!(loops_after, 0);
}
