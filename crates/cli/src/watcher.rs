//! `automationctl watcher status|run|watch`: the test-watcher's
//! `GetStatus`, `TriggerRun` and `WatchRuns`.

use std::io::Write;

use automation_proto::v1::test_watcher_client::TestWatcherClient;
use automation_proto::v1::{
    GetStatusRequest, RunResult, RunSummary, TriggerRunRequest, TriggerRunResponse,
    WatchRunsRequest, WatcherPhase, WatcherStatus,
};
use serde_json::{Value, json};

use crate::Io;
use crate::cli::{Format, Global, WatcherCommand};
use crate::connect::{Connector, Target};
use crate::error::Failure;
use crate::format::{self, enum_name};
use crate::table::Table;

/// Runs one `watcher` command.
pub async fn run(
    global: &Global,
    connector: &Connector,
    command: WatcherCommand,
    io: &mut Io<'_>,
) -> Result<u8, Failure> {
    let target = Target::watcher(global);
    let mut client = TestWatcherClient::new(connector.connect(&target).await?);
    match command {
        WatcherCommand::Status => {
            let request = connector.request(GetStatusRequest {});
            let status = connector.call(&target, client.get_status(request)).await?;
            write_status(&status, io)?;
            Ok(0)
        }
        WatcherCommand::Run { reason } => {
            let request = connector.request(TriggerRunRequest {
                reason: reason.unwrap_or_default(),
            });
            let answer = connector.call(&target, client.trigger_run(request)).await?;
            write_trigger(&answer, io)?;
            if answer.accepted {
                Ok(0)
            } else {
                Err(target.fail(format!("run not accepted: {}", answer.message)))
            }
        }
        WatcherCommand::Watch { include_last } => {
            let request = WatchRunsRequest { include_last };
            // Only opening the stream is limited; runs may be hours apart.
            let mut runs = connector.call(&target, client.watch_runs(request)).await?;
            let interrupted = tokio::signal::ctrl_c();
            tokio::pin!(interrupted);
            loop {
                tokio::select! {
                    _ = &mut interrupted => return Ok(0),
                    next = runs.message() => match next {
                        Ok(Some(run)) => write_run(&run, io)?,
                        Ok(None) => return Err(target.fail("the stream of runs ended")),
                        Err(status) => return Err(target.status(&status)),
                    },
                }
            }
        }
    }
}

fn result(value: i32) -> String {
    enum_name::<RunResult>(value, RunResult::as_str_name, "RUN_RESULT_")
}

fn phase(value: i32) -> String {
    enum_name::<WatcherPhase>(value, WatcherPhase::as_str_name, "WATCHER_PHASE_")
}

fn write_status(status: &WatcherStatus, io: &mut Io<'_>) -> std::io::Result<()> {
    if io.format == Format::Json {
        return io.json(&json!({
            "phase": phase(status.phase),
            "pending_changes": status.pending_changes,
            "rerun_queued": status.rerun_queued,
            "runs_finished": status.runs_finished,
            "watch_root": status.watch_root,
            "command": status.command,
            "last_run": status.last_run.as_ref().map(run_json),
        }));
    }
    let mut table = Table::plain();
    table.row(["phase", &phase(status.phase)]);
    table.row(["watch root", &status.watch_root]);
    table.row(["command", &status.command]);
    table.row(["pending changes", &status.pending_changes.to_string()]);
    if status.rerun_queued {
        table.row(["rerun queued", "yes"]);
    }
    table.row(["runs finished", &status.runs_finished.to_string()]);
    match &status.last_run {
        Some(run) => table.row(["last run", &run_line(run)]),
        None => table.row(["last run", "none yet"]),
    }
    table.write(io.out)?;
    if let Some(run) = &status.last_run {
        write_details(run, io.out)?;
    }
    io.out.flush()
}

fn write_trigger(answer: &TriggerRunResponse, io: &mut Io<'_>) -> std::io::Result<()> {
    if io.format == Format::Json {
        return io.json(&json!({ "accepted": answer.accepted, "message": answer.message }));
    }
    let verdict = if answer.accepted {
        "accepted"
    } else {
        "not accepted"
    };
    match answer.message.as_str() {
        "" => writeln!(io.out, "{verdict}")?,
        message => writeln!(io.out, "{verdict}: {message}")?,
    }
    io.out.flush()
}

/// One run: a line (plus indented details) for people, one JSON object per
/// line for scripts.
fn write_run(run: &RunSummary, io: &mut Io<'_>) -> std::io::Result<()> {
    if io.format == Format::Json {
        return io.json(&run_json(run));
    }
    writeln!(io.out, "{}", run_line(run))?;
    write_details(run, io.out)?;
    io.out.flush()
}

/// `2026-03-01T12:00:00Z  run 7  failed  1 passed, 2 failed, 0 ignored  1.20s  change`
fn run_line(run: &RunSummary) -> String {
    format!(
        "{}  run {}  {}  {} passed, {} failed, {} ignored  {}  {}",
        format::time(run.finished_at.as_ref()),
        run.run_id,
        result(run.result),
        run.tests_passed,
        run.tests_failed,
        run.tests_ignored,
        format::seconds(run.duration_seconds),
        if run.trigger.is_empty() {
            "-"
        } else {
            &run.trigger
        },
    )
}

fn write_details(run: &RunSummary, out: &mut dyn Write) -> std::io::Result<()> {
    if !run.failed_tests.is_empty() {
        writeln!(out, "  failed: {}", run.failed_tests.join(", "))?;
    }
    if !run.error.is_empty() {
        writeln!(out, "  error: {}", run.error)?;
    }
    if !run.explanation.is_empty() {
        writeln!(out, "  explanation:")?;
        for line in run.explanation.lines() {
            writeln!(out, "    {line}")?;
        }
    }
    if !run.explanation_error.is_empty() {
        writeln!(out, "  no explanation: {}", run.explanation_error)?;
    }
    Ok(())
}

fn run_json(run: &RunSummary) -> Value {
    json!({
        "run_id": run.run_id,
        "result": result(run.result),
        "tests_passed": run.tests_passed,
        "tests_failed": run.tests_failed,
        "tests_ignored": run.tests_ignored,
        "failed_tests": run.failed_tests,
        "duration_seconds": run.duration_seconds,
        "started_at": format::time_json(run.started_at.as_ref()),
        "finished_at": format::time_json(run.finished_at.as_ref()),
        "peak_rss_bytes": run.peak_rss_bytes,
        "trigger": run.trigger,
        "changed_paths": run.changed_paths,
        "exit_code": run.exit_code,
        "error": run.error,
        "output_tail": run.output_tail,
        "explanation": run.explanation,
        "explanation_error": run.explanation_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_run() -> RunSummary {
        RunSummary {
            run_id: 7,
            result: RunResult::Failed as i32,
            tests_passed: 1,
            tests_failed: 2,
            failed_tests: vec!["a::b".into(), "c".into()],
            duration_seconds: 1.2,
            finished_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            trigger: "change".into(),
            explanation: "The parser drops\nempty input.".into(),
            ..RunSummary::default()
        }
    }

    #[test]
    fn a_run_reads_as_a_line_and_details() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut io = Io {
            out: &mut out,
            err: &mut err,
            format: Format::Table,
            color: false,
        };
        write_run(&failed_run(), &mut io).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2023-11-14T22:13:20Z  run 7  failed  1 passed, 2 failed, 0 ignored  1.20s  change\n  \
             failed: a::b, c\n  explanation:\n    The parser drops\n    empty input.\n"
        );
    }

    #[test]
    fn a_run_in_json_is_one_line() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut io = Io {
            out: &mut out,
            err: &mut err,
            format: Format::Json,
            color: false,
        };
        write_run(&failed_run(), &mut io).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["result"], "failed");
        assert_eq!(value["finished_at"], "2023-11-14T22:13:20Z");
        assert_eq!(value["exit_code"], Value::Null);
    }
}
