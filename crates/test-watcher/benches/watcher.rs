//! test-watcher figures, printed (`make bench`):
//! * change-to-test-start latency (file written → command started) at the
//!   default 100 ms debounce, median and p99;
//! * CPU used while idly watching a tree of 10,000 files (native events, and
//!   polling at 1 s).
//!
//! Environment: `BENCH_SAVES` (default 50), `BENCH_IDLE_SECONDS` (10).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use automation_test_watcher::{Config, Handles, start};
use automation_testkit::service::{self, Service};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 per second on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

async fn serve(config: Config) -> Service<Handles, automation_test_watcher::Error> {
    let service = service::start(|listeners, shutdown| start(config, listeners, shutdown))
        .await
        .expect("the test-watcher starts");
    service.handles.health.wait_ready().await;
    service
}

async fn latency(saves: usize) {
    let root = tempfile::tempdir().unwrap();
    let control = tempfile::tempdir().unwrap();
    let starts = control.path().join("starts");
    let mut config = Config::new("bench", root.path().to_path_buf());
    config.engine.command = format!("date +%s%N >> '{}'", starts.display());
    config.service.shutdown_delay = Duration::ZERO;
    let watcher = serve(config).await;
    let handles = &watcher.handles;
    let mut runs = handles.engine.subscribe();
    let mut latencies = Vec::new();
    for i in 0..saves {
        let written = now_nanos();
        std::fs::write(root.path().join("lib.rs"), format!("// {i}")).unwrap();
        tokio::time::timeout(Duration::from_secs(10), runs.recv())
            .await
            .expect("a run")
            .expect("run stream");
        let started: u128 = std::fs::read_to_string(&starts)
            .unwrap()
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap();
        latencies.push(Duration::from_nanos(
            (started.saturating_sub(written)) as u64,
        ));
        // Let the tree settle so every save is its own batch.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "latency  saves={saves:<4} debounce=100ms  change→start median={:>7.1} ms  p99={:>7.1} ms  min={:>7.1} ms",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        latencies[0].as_secs_f64() * 1e3,
    );
    let _ = watcher.stop().await;
}

fn make_tree(root: &Path, files: usize) {
    for i in 0..files {
        let dir = root.join(format!("d{:03}", i / 100));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}.rs")), "// file").unwrap();
    }
}

async fn idle(files: usize, seconds: u64, poll: Option<Duration>) {
    let root = tempfile::tempdir().unwrap();
    make_tree(root.path(), files);
    let mut config = Config::new("bench", root.path().to_path_buf());
    config.engine.command = "true".to_owned();
    config.service.shutdown_delay = Duration::ZERO;
    config.poll = poll;
    let setup = Instant::now();
    let watcher = serve(config).await;
    let handles = &watcher.handles;
    let ready = setup.elapsed();
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu = cpu_seconds() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let mode = poll.map_or("native".to_owned(), |p| format!("poll {:?}", p));
    println!(
        "idle     files={files:<6} mode={mode:<10} ready in {:>6.0} ms  cpu={:>6.2}% of one core over {wall:.0} s  runs={}",
        ready.as_secs_f64() * 1e3,
        cpu / wall * 100.0,
        handles.engine.status().runs_finished,
    );
    let _ = watcher.stop().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        latency(env("BENCH_SAVES", 50) as usize).await;
        let seconds = env("BENCH_IDLE_SECONDS", 10);
        idle(10_000, seconds, None).await;
        idle(10_000, seconds, Some(Duration::from_secs(1))).await;
    });
}
