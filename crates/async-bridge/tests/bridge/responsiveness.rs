//! Blocking work handed to the bridge leaves the runtime free: other tasks
//! progress while it runs. The work below can only end once another task of
//! the runtime has ticked a number of times, so it proves progress instead
//! of timing it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use automation_async_bridge::Bridge;
use tokio::runtime::Runtime;

use crate::support::{DEADLINE, LONG, current_thread, multi_thread, within};

const TICKS: u64 = 20;

/// Runs blocking work that waits for `TICKS` ticks of another task of
/// `runtime`; true when they came while the work ran.
fn ticks_during_blocking_work(runtime: Runtime) -> bool {
    let bridge = Bridge::new();
    runtime.block_on(async move {
        let ticks = Arc::new(AtomicU64::new(0));
        let ticker = {
            let ticks = Arc::clone(&ticks);
            tokio::spawn(async move {
                loop {
                    ticks.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        let seen = bridge
            .run_blocking(LONG, move || {
                let start = Instant::now();
                let first = ticks.load(Ordering::SeqCst);
                while ticks.load(Ordering::SeqCst) < first + TICKS {
                    if start.elapsed() > DEADLINE {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                true
            })
            .await;
        ticker.abort();
        seen.expect("the blocking work ended")
    })
}

#[test]
fn a_current_thread_runtime_stays_responsive() {
    // One thread for everything: the worst case.
    assert!(within(|| ticks_during_blocking_work(current_thread())));
}

#[test]
fn a_single_worker_runtime_stays_responsive() {
    assert!(within(|| ticks_during_blocking_work(multi_thread(1))));
}
