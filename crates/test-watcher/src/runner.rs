//! Running the test command: `sh -c <command>` in a process group of its
//! own, with a deadline, a cancel token, bounded output and the peak memory
//! of the whole process tree.
//!
//! The process group is what makes the run killable: `cargo test` starts
//! rustc, test binaries and whatever the tests spawn, and signalling only the
//! shell would leave them running. On timeout or cancellation the whole
//! group gets SIGTERM, then SIGKILL once the grace period is over. Processes
//! the command leaves behind after it exits (`server &`) are stopped the
//! same way, and if the [`run`] future is dropped mid-run the group gets
//! SIGKILL at once. A process that leaves the group (`setsid`) escapes all
//! of this, as it would escape a shell's job control.
//!
//! Layout: `capture` keeps the output within its limit, `group` signals and
//! measures the process group.

mod capture;
mod group;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use capture::Capture;

/// How often the memory of the process tree is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// How often a group being stopped is checked for survivors.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// How long output may keep arriving after the command exits before
/// whatever still holds its pipes is treated as left behind.
const LINGER: Duration = Duration::from_millis(200);
/// How long to wait for the group to vanish after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// How long to wait for the pipes to close once the group is gone (a
/// process that left the group may hold them open forever).
const DRAIN: Duration = Duration::from_secs(1);

/// What to run, where, and within which limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// The command line, run with `sh -c`.
    pub command: String,
    /// The working directory; it must exist.
    pub cwd: PathBuf,
    /// How long the run may take before it is stopped ([`Ending::TimedOut`]).
    pub timeout: Duration,
    /// How long the process group has between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Environment variables set for the command, on top of the inherited
    /// environment.
    pub env: Vec<(String, String)>,
    /// Bytes of combined stdout and stderr kept. Beyond that the head (half
    /// the limit) and the tail are kept and the middle is cut with a note of
    /// how much went: the tail is where each test binary's `test result:`
    /// line and the `failures:` list are, which parsing needs. Summary lines
    /// from the cut part are kept too, within an eighth of the limit.
    pub output_limit: usize,
}

impl RunSpec {
    /// A spec with the defaults: a 30 minute timeout (the top of the
    /// execution-duration histogram), 5 s of grace, no extra environment, and
    /// 4 MiB of output.
    pub fn new(command: impl Into<String>, cwd: impl Into<PathBuf>) -> Self {
        Self {
            command: command.into(),
            cwd: cwd.into(),
            timeout: Duration::from_secs(30 * 60),
            kill_grace: Duration::from_secs(5),
            env: Vec::new(),
            output_limit: 4 * 1024 * 1024,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The command exited with this code.
    Exited(i32),
    /// The command was killed by this signal, not sent by the runner.
    Signalled(i32),
    /// The run hit its timeout and its process group was stopped.
    TimedOut,
    /// The run was cancelled and its process group was stopped.
    Cancelled,
    /// The command could not be started, for this reason.
    FailedToStart(String),
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// How the run ended.
    pub ending: Ending,
    /// Combined stdout and stderr in arrival order, lossily decoded as UTF-8
    /// and cut to the spec's output limit.
    pub output: String,
    /// From just before the start until the group was gone.
    pub duration: Duration,
    /// The largest sum of resident memory over the process group seen in the
    /// samples taken every 50 ms; 0 when not on Linux or when the run was
    /// too short to sample.
    pub peak_rss_bytes: u64,
}

/// Runs `spec`: `sh -c <command>` in a new process group, stdin from
/// `/dev/null`, stdout and stderr captured together, the group's memory
/// sampled. Ends when the command has exited and nothing it started is left
/// in its group; on timeout or when `cancel` fires, stops the whole group
/// (SIGTERM, then SIGKILL after [`RunSpec::kill_grace`]) first. Never fails:
/// a command that cannot start is [`Ending::FailedToStart`].
pub async fn run(spec: &RunSpec, cancel: CancellationToken) -> RunOutcome {
    let started = Instant::now();
    let ended = |ending| RunOutcome {
        ending,
        output: String::new(),
        duration: started.elapsed(),
        peak_rss_bytes: 0,
    };
    if cancel.is_cancelled() {
        return ended(Ending::Cancelled);
    }
    if !spec.cwd.is_dir() {
        return ended(Ending::FailedToStart(format!(
            "working directory {} does not exist or is not a directory",
            spec.cwd.display()
        )));
    }
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(&spec.command)
        .current_dir(&spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            // The working directory was checked above: it is `sh` that is
            // missing, as in an image without a shell (distroless).
            return ended(Ending::FailedToStart(format!(
                "no `sh` on PATH ({error}); \
                 the test-watcher runs TEST_COMMAND with `sh -c`, so it needs \
                 an image with a shell and the project's toolchain"
            )));
        }
        Err(error) => {
            return ended(Ending::FailedToStart(format!(
                "cannot start `sh -c` in {}: {error}",
                spec.cwd.display()
            )));
        }
    };
    let Some(pgid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
        return ended(Ending::FailedToStart(
            "the started process has no usable id".to_owned(),
        ));
    };
    // Declared after `child`, so dropped before it: the group is signalled
    // while the unreaped leader still pins its id.
    let mut guard = GroupGuard { pgid, armed: true };
    tracing::debug!(pgid, command = %spec.command, "test command started");

    let capture = Mutex::new(Capture::new(spec.output_limit));
    let streams = [CancellationToken::new(), CancellationToken::new()];
    let stop_reading = CancellationToken::new();
    let stop_sampling = CancellationToken::new();
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (ending, (), (), peak_rss_bytes) = tokio::join!(
        async {
            let ending = supervise(&mut child, pgid, spec, &cancel, &streams).await;
            stop_reading.cancel();
            stop_sampling.cancel();
            ending
        },
        pump(stdout, &capture, &stop_reading, &streams[0]),
        pump(stderr, &capture, &stop_reading, &streams[1]),
        sample_peak(pgid, &stop_sampling),
    );
    guard.armed = group::is_alive(pgid).await;
    drop(guard);

    RunOutcome {
        ending,
        output: capture
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .into_string(),
        duration: started.elapsed(),
        peak_rss_bytes,
    }
}

/// Why the wait for the command ended.
enum Stop {
    Exited(std::io::Result<ExitStatus>),
    TimedOut,
    Cancelled,
}

/// Waits for the command, stops the group when needed, lets the output
/// drain, and says how the run ended.
async fn supervise(
    child: &mut Child,
    pgid: i32,
    spec: &RunSpec,
    cancel: &CancellationToken,
    streams: &[CancellationToken; 2],
) -> Ending {
    let streams_closed = || async {
        streams[0].cancelled().await;
        streams[1].cancelled().await;
    };
    let stop = tokio::select! {
        biased;
        status = child.wait() => Stop::Exited(status),
        () = cancel.cancelled() => Stop::Cancelled,
        () = tokio::time::sleep(spec.timeout) => Stop::TimedOut,
    };
    let ending = match stop {
        Stop::Exited(status) => {
            // Output written just before the exit may still be in the pipes.
            let _ = tokio::time::timeout(LINGER, streams_closed()).await;
            if group::is_alive(pgid).await {
                tracing::debug!(
                    pgid,
                    "the test command left processes behind; stopping them"
                );
                terminate(pgid, spec.kill_grace, None).await;
            }
            match status {
                Ok(status) => ending_of(status),
                Err(error) => {
                    Ending::FailedToStart(format!("lost track of the test process: {error}"))
                }
            }
        }
        Stop::TimedOut => {
            tracing::info!(pgid, timeout = ?spec.timeout, "test run timed out; stopping it");
            terminate(pgid, spec.kill_grace, Some(child)).await;
            Ending::TimedOut
        }
        Stop::Cancelled => {
            tracing::info!(pgid, "test run cancelled; stopping it");
            terminate(pgid, spec.kill_grace, Some(child)).await;
            Ending::Cancelled
        }
    };
    let _ = tokio::time::timeout(DRAIN, streams_closed()).await;
    ending
}

/// SIGTERM to the group, then SIGKILL if anything is left after `grace`.
async fn terminate(pgid: i32, grace: Duration, mut leader: Option<&mut Child>) {
    group::signal(pgid, Signal::SIGTERM);
    if tokio::time::timeout(grace, gone(pgid, leader.as_deref_mut()))
        .await
        .is_ok()
    {
        return;
    }
    tracing::warn!(
        pgid,
        ?grace,
        "test processes outlived SIGTERM; sending SIGKILL"
    );
    group::signal(pgid, Signal::SIGKILL);
    if tokio::time::timeout(KILL_WAIT, gone(pgid, leader))
        .await
        .is_err()
    {
        tracing::warn!(pgid, "test processes still alive after SIGKILL");
    }
}

/// Returns once nothing in the group is alive, reaping the leader on the way.
async fn gone(pgid: i32, mut leader: Option<&mut Child>) {
    loop {
        if let Some(leader) = leader.as_mut() {
            // Reaps it once it has exited; errors leave it to the final drop.
            let _ = leader.try_wait();
        }
        if !group::is_alive(pgid).await {
            return;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn ending_of(status: ExitStatus) -> Ending {
    match (status.code(), status.signal()) {
        (Some(code), _) => Ending::Exited(code),
        (None, Some(signal)) => Ending::Signalled(signal),
        (None, None) => Ending::Exited(status.into_raw()),
    }
}

/// Copies one stream into the capture until it closes or `stop` fires, then
/// marks itself `done`.
async fn pump(
    stream: Option<impl AsyncRead + Unpin>,
    capture: &Mutex<Capture>,
    stop: &CancellationToken,
    done: &CancellationToken,
) {
    if let Some(mut stream) = stream {
        let mut buf = vec![0; 16 * 1024];
        loop {
            let read = tokio::select! {
                read = stream.read(&mut buf) => read,
                () = stop.cancelled() => break,
            };
            match read {
                Ok(0) => break,
                Ok(n) => capture
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(buf.get(..n).unwrap_or_default()),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::debug!(%error, "reading test output failed");
                    break;
                }
            }
        }
    }
    done.cancel();
}

/// Samples the group's resident memory until `stop` fires; returns the peak.
async fn sample_peak(pgid: i32, stop: &CancellationToken) -> u64 {
    let mut peak = 0;
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return peak,
            _ = ticks.tick() => {}
        }
        if let Some(stats) = group::stats(pgid).await {
            peak = peak.max(stats.rss_bytes);
        }
    }
}

/// SIGKILLs the group when dropped armed: when the [`run`] future is dropped
/// mid-run, or when the group survived every signal.
struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            group::signal(self.pgid, Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_map_to_endings() {
        assert_eq!(ending_of(ExitStatus::from_raw(3 << 8)), Ending::Exited(3));
        assert_eq!(ending_of(ExitStatus::from_raw(9)), Ending::Signalled(9));
    }

    #[test]
    fn defaults_run_locally() {
        let spec = RunSpec::new("cargo test", ".");
        assert_eq!(spec.command, "cargo test");
        assert_eq!(spec.timeout, Duration::from_secs(1800));
        assert!(spec.kill_grace < spec.timeout);
        assert!(spec.output_limit >= 1024 * 1024);
    }
}
