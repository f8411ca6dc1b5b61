//! What a call through the bridge costs over the raw Tokio call it wraps.
//!
//! Run with `cargo bench -p automation-async-bridge --bench bridge` (release
//! build); `BRIDGE_BENCH_CALLS` changes the number of calls per figure
//! (default 100 000). Calls are sequential: the figures are the latency of
//! one crossing, not throughput.
//!
//! * async → blocking, from a task on a 2-worker runtime: raw
//!   `spawn_blocking(..).await` against `Bridge::run_blocking`.
//! * sync → async, from a plain thread: raw `Handle::block_on` (which polls
//!   the future on the calling thread itself), raw `spawn` + channel (the
//!   hop to a worker that the bridge makes), against `Bridge::run_async`.
//!
//! Each bridge figure is taken with a no-op observer and with a counting
//! one (atomic counters per direction and outcome, durations summed: what a
//! metrics observer does before it hands the record on).
//!
//! The variants of a section run in turns, several rounds each, and each
//! figure is the median round, so that a burst of load elsewhere on the
//! machine lands on every variant alike instead of on one.

use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use automation_async_bridge::{Bridge, CallRecord, Direction, Observer, Outcome};
use tokio::runtime::{Handle, Runtime};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Counts calls per direction and outcome and sums their durations.
#[derive(Default)]
struct Counting {
    calls: [[AtomicU64; 5]; 2],
    nanos: [AtomicU64; 2],
}

impl Observer for Counting {
    fn on_call(&self, call: &CallRecord) {
        let direction = match call.direction {
            Direction::ToAsync => 0,
            Direction::ToBlocking => 1,
        };
        let outcome = match call.outcome {
            Outcome::Ok => 0,
            Outcome::Error => 1,
            Outcome::Panic => 2,
            Outcome::Timeout => 3,
            Outcome::Cancelled => 4,
        };
        self.calls[direction][outcome].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(call.duration.as_nanos()).unwrap_or(u64::MAX);
        self.nanos[direction].fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Rounds per variant; each round makes `calls / ROUNDS` calls.
const ROUNDS: u32 = 5;

/// One way to make a call: given a number of calls, how long they took.
type Variant<'a> = (&'a str, Box<dyn Fn(u32) -> Duration + 'a>);

/// Runs the `variants` in turns and prints ns/call (median and best round)
/// of each; the first is the baseline the others are compared with.
fn section(title: &str, calls: u32, variants: &[Variant<'_>]) {
    println!("\n{title}");
    let per_round = (calls / ROUNDS).max(1);
    let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _ in 0..ROUNDS {
        for ((_, run), figures) in variants.iter().zip(&mut rounds) {
            figures.push(run(per_round).as_nanos() as f64 / f64::from(per_round));
        }
    }
    let mut baseline = None;
    for ((name, _), figures) in variants.iter().zip(&mut rounds) {
        figures.sort_by(f64::total_cmp);
        let (median, best) = (figures[figures.len() / 2], figures[0]);
        match baseline {
            None => {
                baseline = Some(median);
                println!("  {name:<44} {median:>7.0} ns/call (best {best:.0})");
            }
            Some(base) => {
                let diff = median - base;
                println!(
                    "  {name:<44} {median:>7.0} ns/call (best {best:.0})  {diff:>+6.0} ns ({:+.0}%)",
                    diff / base * 100.0
                );
            }
        }
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Times `calls` sequential awaits of `call()` in a task on `runtime`, after
/// a warm-up.
fn time_async<F, Fut>(runtime: &Runtime, calls: u32, call: F) -> Duration
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = u64> + Send,
{
    let task = runtime.spawn(async move {
        for _ in 0..calls / 10 {
            black_box(call().await);
        }
        let start = Instant::now();
        for _ in 0..calls {
            black_box(call().await);
        }
        start.elapsed()
    });
    runtime.block_on(task).expect("benchmark task")
}

/// Times `calls` sequential `call()`s on this (plain) thread, after a warm-up.
fn time_sync(calls: u32, call: impl Fn() -> u64) -> Duration {
    for _ in 0..calls / 10 {
        black_box(call());
    }
    let start = Instant::now();
    for _ in 0..calls {
        black_box(call());
    }
    start.elapsed()
}

fn bridge_on(handle: &Handle, observer: impl Observer) -> Arc<Bridge> {
    let bridge = Bridge::builder()
        .handle(handle.clone())
        .observer(observer)
        .build()
        .expect("a multi-thread handle");
    Arc::new(bridge)
}

/// `bridge.run_blocking` of a trivial closure, from a task on `runtime`.
fn run_blocking(runtime: &Runtime, bridge: Arc<Bridge>) -> Box<dyn Fn(u32) -> Duration + '_> {
    Box::new(move |calls| {
        let bridge = Arc::clone(&bridge);
        time_async(runtime, calls, move || {
            let bridge = Arc::clone(&bridge);
            async move {
                bridge
                    .run_blocking(TIMEOUT, || black_box(1_u64))
                    .await
                    .expect("bridged blocking call")
            }
        })
    })
}

/// `bridge.run_async` of a trivial future, from this thread.
fn run_async<'a>(bridge: Arc<Bridge>) -> Box<dyn Fn(u32) -> Duration + 'a> {
    Box::new(move |calls| {
        time_sync(calls, || {
            bridge
                .run_async(TIMEOUT, async { black_box(1_u64) })
                .expect("bridged async call")
        })
    })
}

fn main() {
    let calls: u32 = std::env::var("BRIDGE_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runtime = runtime();
    let handle = runtime.handle().clone();
    println!(
        "async-bridge: {calls} sequential calls per variant ({ROUNDS} rounds in turns), trivial work; median round"
    );

    let raw_spawn_blocking: Box<dyn Fn(u32) -> Duration> = Box::new(|calls| {
        time_async(&runtime, calls, || async {
            tokio::task::spawn_blocking(|| black_box(1_u64))
                .await
                .expect("raw spawn_blocking")
        })
    });
    section(
        "async -> blocking (from a task on a 2-worker runtime)",
        calls,
        &[
            ("raw spawn_blocking", raw_spawn_blocking),
            (
                "bridge.run_blocking, no-op observer",
                run_blocking(&runtime, bridge_on(&handle, ())),
            ),
            (
                "bridge.run_blocking, counting observer",
                run_blocking(&runtime, bridge_on(&handle, Counting::default())),
            ),
        ],
    );

    let raw_block_on: Box<dyn Fn(u32) -> Duration> =
        Box::new(|calls| time_sync(calls, || handle.block_on(async { black_box(1_u64) })));
    let raw_hop: Box<dyn Fn(u32) -> Duration> = Box::new(|calls| {
        time_sync(calls, || {
            let (sender, receiver) = mpsc::sync_channel(1);
            handle.spawn(async move { sender.send(black_box(1_u64)) });
            receiver.recv().expect("raw spawn + channel")
        })
    });
    section(
        "sync -> async (from a plain thread)",
        calls,
        &[
            ("raw Handle::block_on (polls on this thread)", raw_block_on),
            ("raw spawn + channel recv (a worker hop)", raw_hop),
            (
                "bridge.run_async, no-op observer",
                run_async(bridge_on(&handle, ())),
            ),
            (
                "bridge.run_async, counting observer",
                run_async(bridge_on(&handle, Counting::default())),
            ),
            (
                "bridge.run_async, own runtime, no-op",
                run_async(Arc::new(Bridge::new())),
            ),
        ],
    );
    println!();
}
