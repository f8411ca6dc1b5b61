//! The engine: turns watch events into debounced batches, batches and
//! manual triggers into runs (one at a time, `--on-busy` deciding what a
//! request during a run does), and runs into results that are published,
//! streamed and reported.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use automation_async_bridge::Bridge;
use automation_proto::v1::{self, RunSummary, WatcherPhase, WatcherStatus, event::Payload};
use automation_telemetry::reporter::Reporter;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::debounce::Debouncer;
use crate::explain::{self, Excerpt, Explanations};
use crate::results::{self, TestCounts};
use crate::runner::{self, Ending, RunOutcome, RunSpec};
use crate::watch::{WatchEvent, WatchSlot};

/// What a change or trigger does while a run is in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnBusy {
    /// One rerun after the current run (requests merge into it).
    Queue,
    /// Kill the current run and start again.
    Restart,
    /// Drop the request.
    Ignore,
}

/// How the engine runs the tests.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The watched root, where the command runs.
    pub root: PathBuf,
    /// The test command, run with `sh -c`.
    pub command: String,
    /// The quiet window before a batch of changes is released.
    pub debounce: Duration,
    /// What a request during a run does.
    pub on_busy: OnBusy,
    /// A run is stopped (SIGTERM, then SIGKILL) after this long.
    pub timeout: Duration,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Read results from this JUnit XML file (cargo-nextest) instead of the output.
    pub junit: Option<PathBuf>,
    /// Output kept per run.
    pub output_limit: usize,
}

/// Changed paths listed in a run summary, at most.
const MAX_LISTED_PATHS: usize = 100;
/// Output kept in a run summary.
const TAIL_BYTES: usize = 4096;

/// A request for a run.
#[derive(Debug, Clone, Default)]
struct Request {
    trigger: String,
    paths: Vec<String>,
}

impl Request {
    fn merge(&mut self, other: Request) {
        if self.trigger != other.trigger {
            self.trigger = format!("{}+{}", self.trigger, other.trigger);
        }
        for path in other.paths {
            if !self.paths.contains(&path) && self.paths.len() < MAX_LISTED_PATHS {
                self.paths.push(path);
            }
        }
    }
}

enum Command {
    Trigger {
        reason: String,
        reply: oneshot::Sender<v1::TriggerRunResponse>,
    },
}

/// The engine's handle for the gRPC service and the reporter's live state.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<WatcherStatus>,
    runs: broadcast::Sender<RunSummary>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl EngineHandle {
    /// The current status.
    pub fn status(&self) -> WatcherStatus {
        self.status.borrow().clone()
    }

    /// Asks for a run now.
    pub async fn trigger(&self, reason: &str) -> Option<v1::TriggerRunResponse> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Trigger {
                reason: reason.to_owned(),
                reply,
            })
            .await
            .ok()?;
        answer.await.ok()
    }

    /// Run results as they finish.
    pub fn subscribe(&self) -> broadcast::Receiver<RunSummary> {
        self.runs.subscribe()
    }

    /// Status changes.
    pub fn watch_status(&self) -> watch::Receiver<WatcherStatus> {
        self.status.clone()
    }
}

struct Running {
    cancel: CancellationToken,
}

/// A finished run, and for a failure to explain the end of its output.
struct Finished {
    summary: RunSummary,
    output: Option<Excerpt>,
}

struct Engine {
    config: EngineConfig,
    bridge: Bridge,
    reporter: Option<Reporter>,
    watch: Arc<WatchSlot>,
    rescans: mpsc::Sender<WatchEvent>,
    debouncer: Debouncer,
    running: Option<Running>,
    queued: Option<Request>,
    next_id: u64,
    finished: u64,
    last: Option<RunSummary>,
    status: watch::Sender<WatcherStatus>,
    runs: broadcast::Sender<RunSummary>,
    done: mpsc::Sender<Finished>,
    explanations: Option<Explanations>,
}

/// Starts the engine; it stops when `shutdown` is cancelled, killing a run
/// in progress. With a `gateway`, failed runs are explained (see
/// [`explain`]).
pub fn spawn(
    config: EngineConfig,
    watch: Arc<WatchSlot>,
    events: (mpsc::Sender<WatchEvent>, mpsc::Receiver<WatchEvent>),
    bridge: Bridge,
    reporter: Option<Reporter>,
    gateway: Option<explain::Client>,
    shutdown: CancellationToken,
) -> (EngineHandle, tokio::task::JoinHandle<()>) {
    let (commands, command_rx) = mpsc::channel(16);
    let initial = WatcherStatus {
        phase: WatcherPhase::Idle as i32,
        watch_root: config.root.display().to_string(),
        command: config.command.clone(),
        ..WatcherStatus::default()
    };
    let (status, status_rx) = watch::channel(initial);
    let (runs, _) = broadcast::channel(64);
    let (done, done_rx) = mpsc::channel(4);
    let (explanations, explained) = match gateway {
        Some(client) => {
            let (explanations, explained) =
                Explanations::new(client, config.command.clone(), reporter.clone());
            (Some(explanations), explained)
        }
        // No sender: the engine's branch for explanations never fires.
        None => (None, mpsc::channel(1).1),
    };
    let engine = Engine {
        debouncer: Debouncer::new(config.debounce),
        config,
        bridge,
        reporter,
        watch,
        rescans: events.0,
        running: None,
        queued: None,
        next_id: 0,
        finished: 0,
        last: None,
        status,
        runs: runs.clone(),
        done,
        explanations,
    };
    let task = tokio::spawn(engine.run(events.1, command_rx, done_rx, explained, shutdown));
    (
        EngineHandle {
            commands,
            status: status_rx,
            runs,
        },
        task,
    )
}

impl Engine {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<WatchEvent>,
        mut commands: mpsc::Receiver<Command>,
        mut done: mpsc::Receiver<Finished>,
        mut explained: mpsc::Receiver<RunSummary>,
        shutdown: CancellationToken,
    ) {
        loop {
            let due = self.debouncer.due();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(event) = events.recv() => self.on_watch(event),
                _ = sleep_until(due), if due.is_some() => self.on_due(),
                Some(command) = commands.recv() => match command {
                    Command::Trigger { reason, reply } => {
                        let reason = if reason.is_empty() { "manual".to_owned() } else { reason };
                        let answer = self.request(Request { trigger: reason, paths: Vec::new() });
                        let _ = reply.send(answer);
                    }
                },
                Some(finished) = done.recv() => self.on_done(finished),
                Some(update) = explained.recv() => self.on_explained(update),
            }
            self.publish();
        }
        // No new explanation is asked for while shutting down.
        if let Some(mut explanations) = self.explanations.take() {
            explanations.stop();
        }
        if let Some(running) = self.running.take() {
            running.cancel.cancel();
            // Let the run's process group be killed before going away.
            let grace = self.config.kill_grace + Duration::from_secs(1);
            if let Ok(Some(summary)) = tokio::time::timeout(grace, done.recv()).await {
                self.on_done(summary);
            }
        }
    }

    fn on_watch(&mut self, event: WatchEvent) {
        match event {
            WatchEvent::Changes {
                paths,
                new_dirs,
                processing,
            } => {
                let was_empty = self.debouncer.pending() == 0;
                self.debouncer.add(paths, processing, Instant::now());
                if was_empty && self.debouncer.pending() > 0 {
                    self.report(Payload::FileChanges(v1::FileChanges {
                        changed_files_pending: self.debouncer.pending() as u64,
                        ..v1::FileChanges::default()
                    }));
                }
                let Some(watch) = self.watch.get() else {
                    return;
                };
                for dir in new_dirs {
                    let watch = Arc::clone(&watch);
                    let reporter = self.reporter.clone();
                    let rescans = self.rescans.clone();
                    tokio::task::spawn_blocking(move || {
                        let started = Instant::now();
                        match watch.add_tree(&dir) {
                            Ok(files) if !files.is_empty() => {
                                let _ = rescans.blocking_send(WatchEvent::Changes {
                                    paths: files,
                                    new_dirs: Vec::new(),
                                    processing: started.elapsed(),
                                });
                            }
                            Ok(_) => {}
                            Err(error) => {
                                tracing::error!(%error, "cannot watch a new directory");
                                if let Some(reporter) = reporter {
                                    reporter.report(error_event("watch", &error.to_string()));
                                }
                            }
                        }
                    });
                }
            }
            WatchEvent::Error(message) => {
                tracing::warn!(%message, "watcher error");
                self.report(error_event("watch", &message));
            }
        }
    }

    fn on_due(&mut self) {
        let Some(batch) = self.debouncer.release(Instant::now()) else {
            return;
        };
        self.report(Payload::FileChanges(v1::FileChanges {
            files_processed: batch.paths.len() as u64,
            debounce_seconds: Some(batch.waited.as_secs_f64()),
            processing_seconds: Some(batch.processing.as_secs_f64()),
            changed_files_pending: self.debouncer.pending() as u64,
        }));
        let paths = batch
            .paths
            .iter()
            .take(MAX_LISTED_PATHS)
            .map(|p| relative(&self.config.root, p))
            .collect();
        self.request(Request {
            trigger: "change".to_owned(),
            paths,
        });
    }

    fn request(&mut self, request: Request) -> v1::TriggerRunResponse {
        let Some(running) = &self.running else {
            self.start(request);
            return answer(true, "started");
        };
        match self.config.on_busy {
            OnBusy::Ignore => answer(
                false,
                "a run is in progress; --on-busy=ignore dropped the request",
            ),
            OnBusy::Queue => {
                self.queue(request);
                answer(true, "queued after the current run")
            }
            OnBusy::Restart => {
                running.cancel.cancel();
                self.queue(request);
                answer(true, "restarting: the current run is being stopped")
            }
        }
    }

    fn queue(&mut self, request: Request) {
        match &mut self.queued {
            Some(queued) => queued.merge(request),
            None => self.queued = Some(request),
        }
    }

    fn start(&mut self, request: Request) {
        self.next_id += 1;
        let id = self.next_id;
        let cancel = CancellationToken::new();
        let spec = RunSpec {
            command: self.config.command.clone(),
            cwd: self.config.root.clone(),
            timeout: self.config.timeout,
            kill_grace: self.config.kill_grace,
            env: Vec::new(),
            output_limit: self.config.output_limit,
        };
        let junit = self.config.junit.clone();
        let explain_output = self.explanations.as_ref().map(Explanations::max_output);
        let bridge = self.bridge.clone();
        let done = self.done.clone();
        let token = cancel.clone();
        tracing::info!(run = id, trigger = %request.trigger, "run starting");
        let span = if automation_telemetry::trace::enabled() {
            tracing::info_span!(
                "test.run",
                run = id,
                trigger = %request.trigger,
                result = tracing::field::Empty,
                tests.passed = tracing::field::Empty,
                tests.failed = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        tokio::spawn(
            async move {
                let started_at = SystemTime::now();
                if let Some(junit) = &junit {
                    // A stale report from an earlier run must not pass for this one.
                    let _ = std::fs::remove_file(junit);
                }
                let outcome = runner::run(&spec, token).await;
                let summary = summarize(id, &request, &outcome, junit, started_at, &bridge).await;
                let span = tracing::Span::current();
                let result = v1::RunResult::try_from(summary.result).unwrap_or_default();
                span.record("result", result.as_str_name());
                span.record("tests.passed", summary.tests_passed);
                span.record("tests.failed", summary.tests_failed);
                // A failure to explain keeps the end of its output for the request.
                let output = explain_output
                    .filter(|_| explain::wants(&summary))
                    .and_then(|max| (max > 0).then(|| Excerpt::of(&outcome.output, max)));
                let _ = done.send(Finished { summary, output }).await;
            }
            .instrument(span),
        );
        self.running = Some(Running { cancel });
    }

    fn on_done(&mut self, finished: Finished) {
        let Finished { summary, output } = finished;
        self.running = None;
        self.finished += 1;
        tracing::info!(
            run = summary.run_id,
            result = ?v1::RunResult::try_from(summary.result).unwrap_or_default(),
            passed = summary.tests_passed,
            failed = summary.tests_failed,
            "run finished"
        );
        self.report(Payload::TestRun(v1::TestRun {
            result: summary.result,
            tests_passed: summary.tests_passed,
            tests_failed: summary.tests_failed,
            tests_ignored: summary.tests_ignored,
            duration_seconds: summary.duration_seconds,
            peak_rss_bytes: summary.peak_rss_bytes,
            failed_tests: summary.failed_tests.clone(),
        }));
        let _ = self.runs.send(summary.clone());
        let skipped = self
            .explanations
            .as_mut()
            .and_then(|explanations| explanations.on_run(&summary, output));
        self.last = Some(summary);
        if let Some(skipped) = skipped {
            let _ = self.runs.send(skipped);
        }
        if let Some(next) = self.queued.take() {
            self.start(next);
        }
    }

    /// A run's explanation (or why there is none) arrived: the run is
    /// published again, and replaces the last run only if it still is the
    /// last run.
    fn on_explained(&mut self, update: RunSummary) {
        if let Some(explanations) = &mut self.explanations {
            explanations.on_update();
        }
        if self
            .last
            .as_ref()
            .is_some_and(|last| last.run_id == update.run_id)
        {
            self.last = Some(update.clone());
            // GetStatus shows it before WatchRuns readers hear of it.
            self.publish();
        }
        let _ = self.runs.send(update);
    }

    fn publish(&self) {
        let phase = if self.running.is_some() {
            WatcherPhase::Running
        } else if self.debouncer.pending() > 0 {
            WatcherPhase::Debouncing
        } else {
            WatcherPhase::Idle
        };
        let queued = self.queued.as_ref().map_or(0, |q| q.paths.len());
        self.status.send_modify(|status| {
            status.phase = phase as i32;
            status.pending_changes = (self.debouncer.pending() + queued) as u64;
            status.last_run = self.last.clone();
            status.runs_finished = self.finished;
            status.rerun_queued = self.queued.is_some();
        });
    }

    fn report(&self, payload: Payload) {
        if let Some(reporter) = &self.reporter {
            reporter.report(payload);
        }
    }
}

fn answer(accepted: bool, message: &str) -> v1::TriggerRunResponse {
    v1::TriggerRunResponse {
        accepted,
        message: message.to_owned(),
    }
}

fn error_event(kind: &str, message: &str) -> Payload {
    Payload::Error(v1::ComponentError {
        kind: kind.to_owned(),
        message: message.to_owned(),
        model: String::new(),
    })
}

async fn sleep_until(due: Option<Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
    }
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

/// The end of `output`, at most `TAIL_BYTES`, cut at a character boundary.
fn tail(output: &str) -> String {
    let mut start = output.len().saturating_sub(TAIL_BYTES);
    while !output.is_char_boundary(start) {
        start += 1;
    }
    output[start..].to_owned()
}

/// The result of a finished run: passed, failed (a test failed or the
/// command failed), error (could not start, or no results to read),
/// cancelled, or timeout.
async fn summarize(
    id: u64,
    request: &Request,
    outcome: &RunOutcome,
    junit: Option<PathBuf>,
    started_at: SystemTime,
    bridge: &Bridge,
) -> RunSummary {
    let mut summary = RunSummary {
        run_id: id,
        trigger: request.trigger.clone(),
        changed_paths: request.paths.clone(),
        duration_seconds: outcome.duration.as_secs_f64(),
        started_at: Some(timestamp(started_at)),
        finished_at: Some(timestamp(SystemTime::now())),
        peak_rss_bytes: outcome.peak_rss_bytes,
        output_tail: tail(&outcome.output),
        ..RunSummary::default()
    };
    let code = match &outcome.ending {
        Ending::FailedToStart(reason) => {
            summary.result = v1::RunResult::Error as i32;
            summary.error = format!("the test command could not start: {reason}");
            return summary;
        }
        Ending::TimedOut => {
            summary.result = v1::RunResult::Timeout as i32;
            summary.error = format!("stopped after {:.0?}", outcome.duration);
            return summary;
        }
        Ending::Cancelled => {
            summary.result = v1::RunResult::Cancelled as i32;
            summary.error = "cancelled".to_owned();
            return summary;
        }
        Ending::Exited(code) => {
            summary.exit_code = Some(*code);
            Some(*code)
        }
        Ending::Signalled(signal) => {
            summary.error = format!("the test command was killed by signal {signal}");
            None
        }
    };
    // Parsing reads files and scans large outputs: off the async workers.
    let output = outcome.output.clone();
    let parsed: Result<TestCounts, String> = bridge
        .run_blocking(Duration::from_secs(60), move || match junit {
            Some(path) => results::parse_junit_file(&path).map_err(|e| e.to_string()),
            None => results::parse_libtest(&output)
                .ok_or_else(|| "no test results in the output".to_owned()),
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    match parsed {
        Ok(counts) => {
            summary.tests_passed = counts.passed;
            summary.tests_failed = counts.failed;
            summary.tests_ignored = counts.ignored;
            summary.failed_tests = counts.failed_tests;
            summary.result = if counts.failed == 0 && code == Some(0) {
                v1::RunResult::Passed as i32
            } else {
                v1::RunResult::Failed as i32
            };
        }
        Err(problem) => {
            summary.result = v1::RunResult::Error as i32;
            let exit = code.map_or_else(|| "killed".to_owned(), |c| format!("exit code {c}"));
            summary.error = if summary.error.is_empty() {
                format!("{problem} ({exit})")
            } else {
                format!("{}; {problem}", summary.error)
            };
        }
    }
    summary
}
