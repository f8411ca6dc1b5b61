//! The runner against real processes: exit codes, output, timeouts and
//! cancellation that take the whole process tree down, memory sampling.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use automation_test_watcher::runner::{Ending, RunOutcome, RunSpec, run};
use tokio_util::sync::CancellationToken;

/// No test here may hang the suite.
const GUARD: Duration = Duration::from_secs(30);

async fn guarded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, future)
        .await
        .expect("the test took longer than its guard")
}

fn spec(command: &str) -> RunSpec {
    let mut spec = RunSpec::new(command, std::env::temp_dir());
    spec.timeout = Duration::from_secs(20);
    spec.kill_grace = Duration::from_secs(2);
    spec
}

async fn run_it(spec: &RunSpec) -> RunOutcome {
    guarded(run(spec, CancellationToken::new())).await
}

/// The number printed as `<key>=<number>` in the output.
fn printed(output: &str, key: &str) -> i32 {
    let prefix = format!("{key}=");
    output
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {output:?}"))
}

/// Whether the process is running (a zombie is not: it is dead and only
/// waits for its reaper).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .get(stat.rfind(')')? + 1..)?
                .split_whitespace()
                .next()?;
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// Whether any running process is in process group `pgid`.
fn group_running(pgid: i32) -> bool {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| running(*pid))
        .any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let fields = stat.get(stat.rfind(')')? + 1..)?;
                    fields.split_whitespace().nth(2)?.parse::<i32>().ok()
                })
                == Some(pgid)
        })
}

#[tokio::test]
async fn exit_codes_and_both_streams_are_reported() {
    let outcome = run_it(&spec("echo to-stdout; echo to-stderr >&2")).await;
    assert_eq!(outcome.ending, Ending::Exited(0));
    assert!(
        outcome.output.contains("to-stdout\n"),
        "{:?}",
        outcome.output
    );
    assert!(
        outcome.output.contains("to-stderr\n"),
        "{:?}",
        outcome.output
    );

    let outcome = run_it(&spec("echo failing; exit 1")).await;
    assert_eq!(outcome.ending, Ending::Exited(1));
    assert_eq!(outcome.output, "failing\n");

    let outcome = run_it(&spec("exit 3")).await;
    assert_eq!(outcome.ending, Ending::Exited(3));
    assert!(outcome.duration < Duration::from_secs(5));
}

#[tokio::test]
async fn a_signal_from_elsewhere_is_signalled() {
    let outcome = run_it(&spec("kill -KILL $$")).await;
    assert_eq!(outcome.ending, Ending::Signalled(9));
}

#[tokio::test]
async fn environment_and_working_directory_are_applied() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut spec = spec("echo \"$GREETING from $(pwd)\"");
    spec.cwd = dir.path().to_path_buf();
    spec.env = vec![("GREETING".into(), "hello".into())];
    let outcome = run_it(&spec).await;
    assert_eq!(outcome.ending, Ending::Exited(0));
    let cwd = dir.path().canonicalize().expect("canonical temp dir");
    assert_eq!(outcome.output, format!("hello from {}\n", cwd.display()));
}

#[tokio::test]
async fn a_timeout_kills_the_whole_group() {
    let mut spec = spec("echo pgid=$$; sleep 1000 & echo grandchild=$!; sleep 1000");
    spec.timeout = Duration::from_millis(500);
    spec.kill_grace = Duration::from_secs(3);
    let started = Instant::now();
    let outcome = run_it(&spec).await;
    let elapsed = started.elapsed();

    assert_eq!(outcome.ending, Ending::TimedOut);
    // The sleeps die of SIGTERM: no need to wait for the grace period.
    assert!(elapsed >= spec.timeout, "{elapsed:?}");
    assert!(
        elapsed < spec.timeout + spec.kill_grace + Duration::from_secs(2),
        "{elapsed:?}"
    );
    let grandchild = printed(&outcome.output, "grandchild");
    assert!(!running(grandchild), "grandchild {grandchild} survived");
    assert!(!group_running(printed(&outcome.output, "pgid")));
}

#[tokio::test]
async fn a_group_ignoring_sigterm_is_killed_after_the_grace() {
    let mut spec = spec("trap '' TERM; echo pgid=$$; sleep 1000 & echo grandchild=$!; sleep 1000");
    spec.timeout = Duration::from_millis(300);
    spec.kill_grace = Duration::from_millis(700);
    let started = Instant::now();
    let outcome = run_it(&spec).await;
    let elapsed = started.elapsed();

    assert_eq!(outcome.ending, Ending::TimedOut);
    assert!(elapsed >= spec.timeout + spec.kill_grace, "{elapsed:?}");
    assert!(
        elapsed < spec.timeout + spec.kill_grace + Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert!(!running(printed(&outcome.output, "grandchild")));
    assert!(!group_running(printed(&outcome.output, "pgid")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_kills_the_whole_group() {
    let spec = spec("echo pgid=$$; sleep 1000 & echo grandchild=$!; sleep 1000");
    let cancel = CancellationToken::new();
    let running_run = tokio::spawn({
        let (spec, cancel) = (spec.clone(), cancel.clone());
        async move { run(&spec, cancel).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancelled_at = Instant::now();
    cancel.cancel();
    let outcome = guarded(running_run).await.expect("run task");

    assert_eq!(outcome.ending, Ending::Cancelled);
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(2),
        "{:?}",
        cancelled_at.elapsed()
    );
    assert!(!running(printed(&outcome.output, "grandchild")));
    assert!(!group_running(printed(&outcome.output, "pgid")));
}

#[tokio::test]
async fn an_already_cancelled_run_does_not_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let marker = dir.path().join("ran");
    let spec = spec(&format!("touch {}", marker.display()));
    let cancel = CancellationToken::new();
    cancel.cancel();
    let outcome = guarded(run(&spec, cancel)).await;
    assert_eq!(outcome.ending, Ending::Cancelled);
    assert!(!marker.exists());
}

#[tokio::test]
async fn processes_left_behind_are_stopped() {
    // The command exits at once but leaves a background process holding
    // its stdout: the run ends anyway, and takes the straggler with it.
    let started = Instant::now();
    let outcome = run_it(&spec("sleep 1000 & echo straggler=$!; exit 0")).await;
    assert_eq!(outcome.ending, Ending::Exited(0));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(!running(printed(&outcome.output, "straggler")));
}

#[tokio::test]
async fn dropping_the_run_kills_the_group() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pid_file = dir.path().join("pid");
    let spec = spec(&format!(
        "sleep 1000 & echo $! > {}; sleep 1000",
        pid_file.display()
    ));
    let dropped = tokio::time::timeout(
        Duration::from_millis(500),
        run(&spec, CancellationToken::new()),
    )
    .await;
    assert!(dropped.is_err(), "the run should still have been going");
    let grandchild: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid written")
        .trim()
        .parse()
        .expect("a pid");
    guarded(async {
        while running(grandchild) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn large_output_keeps_head_and_tail() {
    let mut spec = spec(
        "i=0; while [ $i -lt 20000 ]; do echo \"line $i\"; i=$((i+1)); done; \
         echo 'test result: ok. 7 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s'",
    );
    spec.output_limit = 10_000;
    let outcome = run_it(&spec).await;
    assert_eq!(outcome.ending, Ending::Exited(0));
    let output = &outcome.output;
    assert!(output.starts_with("line 0\nline 1\n"), "{}", &output[..100]);
    assert!(output.contains("line 19999\ntest result: ok. 7 passed"));
    assert!(output.contains("bytes of output cut here"));
    assert!(output.len() < 10_000 + 200, "{}", output.len());
    let counts = automation_test_watcher::results::parse_libtest(output).expect("summary kept");
    assert_eq!((counts.passed, counts.ignored), (7, 1));
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn peak_memory_of_the_tree_is_sampled() {
    let has_python = std::process::Command::new("python3")
        .arg("-c")
        .arg("pass")
        .output()
        .is_ok_and(|o| o.status.success());
    // The allocating process is a grandchild: the sample covers the group.
    let command = if has_python {
        "python3 -c 'x = bytearray(50 * 1024 * 1024); import time; time.sleep(0.6)'; true"
    } else {
        "x=$(head -c 52428800 /dev/zero | tr '\\0' a); sleep 0.6; echo ${#x}"
    };
    let outcome = run_it(&spec(command)).await;
    assert_eq!(outcome.ending, Ending::Exited(0), "{}", outcome.output);
    assert!(
        outcome.peak_rss_bytes >= 40 * 1024 * 1024,
        "peak {} bytes",
        outcome.peak_rss_bytes
    );
}

#[tokio::test]
async fn a_missing_working_directory_fails_to_start() {
    let mut spec = spec("true");
    spec.cwd = Path::new("/nonexistent/test-watcher/dir").to_path_buf();
    let outcome = run_it(&spec).await;
    match outcome.ending {
        Ending::FailedToStart(reason) => {
            assert!(reason.contains("/nonexistent/test-watcher/dir"), "{reason}")
        }
        other => panic!("expected FailedToStart, got {other:?}"),
    }
}

#[tokio::test]
async fn without_a_shell_the_run_fails_to_start_and_says_so() {
    // PATH set for the command is the one `sh` is looked up in: an empty
    // folder stands for an image without a shell.
    let empty = tempfile::tempdir().unwrap();
    let mut spec = spec("true");
    spec.env
        .push(("PATH".to_owned(), empty.path().display().to_string()));
    let outcome = run_it(&spec).await;
    match outcome.ending {
        Ending::FailedToStart(reason) => {
            assert!(reason.contains("no `sh` on PATH"), "{reason}")
        }
        other => panic!("expected FailedToStart, got {other:?}"),
    }
}
