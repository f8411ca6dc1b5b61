//! Collector figures, printed (`make bench`):
//! * ingest: N concurrent reporters, each on its own connection, pushing
//!   batches of B events as fast as acknowledgements come back: events/s,
//!   push latency p50/p99, process RSS;
//! * `/metrics` render time at about 10k and 100k series.
//!
//! Environment: `BENCH_REPORTERS` (default 4), `BENCH_BATCH` (500),
//! `BENCH_SECONDS` (5).

use std::sync::Arc;
use std::time::{Duration, Instant};

use automation_collector::{Config, Limits, State, render};
use automation_proto::v1::{self, event::Payload};
use automation_testkit::TestCollector;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn payload(i: usize) -> Payload {
    match i % 4 {
        0 => Payload::BridgeCall(v1::BridgeCall {
            direction: 1 + (i % 2) as i32,
            outcome: v1::BridgeOutcome::Ok as i32,
            duration_seconds: 0.0004,
            pending_tasks: 1,
            active_loops: 1,
        }),
        1 => Payload::FileChanges(v1::FileChanges {
            files_processed: 2,
            debounce_seconds: Some(0.1),
            processing_seconds: Some(0.002),
            changed_files_pending: 0,
        }),
        2 => Payload::TestRun(v1::TestRun {
            result: v1::RunResult::Passed as i32,
            tests_passed: 40,
            tests_failed: 0,
            tests_ignored: 1,
            duration_seconds: 3.0,
            peak_rss_bytes: 1 << 28,
            failed_tests: vec![],
        }),
        _ => Payload::Error(v1::ComponentError {
            kind: "watch".into(),
            message: "transient".into(),
            model: String::new(),
        }),
    }
}

fn batch(instance: &str, size: usize) -> v1::EventBatch {
    v1::EventBatch {
        source: Some(v1::Source {
            service: "test-watcher".into(),
            instance: instance.into(),
            version: "bench".into(),
            incarnation: 7,
        }),
        sequence: 0,
        events: (0..size)
            .map(|i| v1::Event {
                time: None,
                payload: Some(payload(i)),
            })
            .collect(),
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn ingest(reporters: usize, batch_size: usize, seconds: u64) {
    let collector = TestCollector::start(Config::new("bench")).await;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for r in 0..reporters {
        let mut client = collector.client().await;
        let mut template = batch(&format!("reporter-{r}"), batch_size);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut events = 0u64;
            let mut sequence = 0;
            while Instant::now() < deadline {
                sequence += 1;
                template.sequence = sequence;
                let started = Instant::now();
                let answer = client.push(template.clone()).await.expect("push");
                latencies.push(started.elapsed());
                events += u64::from(answer.into_inner().accepted);
            }
            (events, latencies)
        }));
    }
    let started = Instant::now();
    let mut events = 0;
    let mut latencies = Vec::new();
    for task in tasks {
        let (n, l) = task.await.expect("reporter");
        events += n;
        latencies.extend(l);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    println!(
        "ingest  reporters={reporters:<3} batch={batch_size:<5} events/s={:>10.0}  pushes={:<7} p50={:>8.3} ms  p99={:>8.3} ms  rss={:.1} MiB (collector and clients in one process)",
        events as f64 / elapsed,
        latencies.len(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        rss_bytes() as f64 / (1 << 20) as f64,
    );
    collector.stop().await;
}

fn render_at(target_series: usize) {
    let limits = Limits {
        max_series_per_metric: usize::MAX / 2,
        max_instances: 1 << 20,
        ..Limits::default()
    };
    let state: Arc<State> = State::new(limits, "bench", "bench");
    let mut instance = 0;
    let mut kinds = 0;
    // Grow instances, each with a spread of error kinds, until the
    // exposition holds the target number of series (sample lines).
    loop {
        let series = render::render(&state)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .count();
        if series >= target_series {
            break;
        }
        let mut b = batch(&format!("instance-{instance}"), 0);
        b.sequence = 1;
        b.events = (0..100)
            .map(|_| {
                kinds += 1;
                v1::Event {
                    time: None,
                    payload: Some(Payload::Error(v1::ComponentError {
                        kind: format!("kind-{kinds}"),
                        message: String::new(),
                        model: String::new(),
                    })),
                }
            })
            .chain((0..4).map(|i| v1::Event {
                time: None,
                payload: Some(payload(i)),
            }))
            .collect();
        state.push(&b);
        instance += 1;
    }
    let mut times = Vec::new();
    let mut series = 0;
    for _ in 0..7 {
        let started = Instant::now();
        let text = render::render(&state);
        times.push(started.elapsed());
        series = text.lines().filter(|l| !l.starts_with('#')).count();
    }
    times.sort();
    println!(
        "render  series={series:<7} instances={instance:<5} median={:>8.1} ms  max={:>8.1} ms",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3,
    );
}

fn main() {
    let reporters = env("BENCH_REPORTERS", 4) as usize;
    let batch_size = env("BENCH_BATCH", 500) as usize;
    let seconds = env("BENCH_SECONDS", 5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(ingest(reporters, batch_size, seconds));
    render_at(10_000);
    render_at(100_000);
}
