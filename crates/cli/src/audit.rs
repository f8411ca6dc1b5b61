//! `automationctl audit run|report|history`: the audit-agent's `RunAudit`,
//! `GetReport` and `ListReports`.

use automation_proto::v1::audit_agent_client::AuditAgentClient;
use automation_proto::v1::{
    Analysis, AuditReport, AuditResult, GetReportRequest, ListReportsRequest, ListReportsResponse,
    Marker, RunAuditRequest, TaskCounts,
};
use serde_json::{Value, json};

use crate::Io;
use crate::cli::{AuditCommand, Format, Global};
use crate::connect::{Connector, Target};
use crate::error::Failure;
use crate::format::{self, enum_name};
use crate::table::Table;

/// Runs one `audit` command.
pub async fn run(
    global: &Global,
    connector: &Connector,
    command: AuditCommand,
    io: &mut Io<'_>,
) -> Result<u8, Failure> {
    let target = Target::audit(global);
    let mut client = AuditAgentClient::new(connector.connect(&target).await?);
    match command {
        AuditCommand::Run { reason } => {
            let request = connector.request(RunAuditRequest {
                reason: reason.unwrap_or_default(),
            });
            let report = connector.call(&target, client.run_audit(request)).await?;
            write_report(&report, io)?;
        }
        AuditCommand::Report { id, documents } => {
            let request = connector.request(GetReportRequest {
                id,
                include_documents: documents,
            });
            let report = connector.call(&target, client.get_report(request)).await?;
            write_report(&report, io)?;
        }
        AuditCommand::History { limit, page_token } => {
            let request = connector.request(ListReportsRequest {
                page_size: limit,
                page_token: page_token.unwrap_or_default(),
            });
            let page = connector
                .call(&target, client.list_reports(request))
                .await?;
            write_history(&page, io)?;
        }
    }
    Ok(0)
}

fn result(value: i32) -> String {
    enum_name::<AuditResult>(value, AuditResult::as_str_name, "AUDIT_RESULT_")
}

fn marker(value: i32) -> String {
    enum_name::<Marker>(value, Marker::as_str_name, "MARKER_")
}

fn analysis(value: i32) -> String {
    enum_name::<Analysis>(value, Analysis::as_str_name, "ANALYSIS_")
}

fn coverage(report: &AuditReport) -> String {
    match &report.coverage {
        Some(c) => match c.percent {
            Some(percent) => format!("{percent:.1}%"),
            None => "unknown".to_owned(),
        },
        None => "-".to_owned(),
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn write_report(report: &AuditReport, io: &mut Io<'_>) -> std::io::Result<()> {
    if io.format == Format::Json {
        return io.json(&report_json(report));
    }
    let tasks = report.tasks.unwrap_or_default();
    let mut table = Table::plain();
    let id = match report.id {
        0 => "not stored".to_owned(),
        id => id.to_string(),
    };
    table.row(["report", &id]);
    table.row([
        "started",
        &format!(
            "{} (took {})",
            format::time(report.started_at.as_ref()),
            format::seconds(report.duration_seconds)
        ),
    ]);
    table.row(["reason", &report.reason]);
    table.row(["result", &result(report.result)]);
    table.row(["repository", &report.repository]);
    if !report.branch.is_empty() {
        table.row(["branch", &report.branch]);
    }
    let head = match (report.head.as_str(), report.previous_head.as_str()) {
        ("", _) => "no commits".to_owned(),
        (head, "") => short(head).to_owned(),
        (head, previous) => format!("{} (previous {})", short(head), short(previous)),
    };
    table.row(["head", &head]);
    table.row(["new commits", &report.new_commits.to_string()]);
    if report.history_rewritten {
        table.row(["history", "rewritten since the previous audit"]);
    }
    table.row([
        "tasks",
        &format!(
            "{} done, {} in progress, {} planned",
            tasks.done, tasks.in_progress, tasks.planned
        ),
    ]);
    let newly: Vec<String> = report
        .newly_completed
        .iter()
        .filter(|m| m.count > 0)
        .map(|m| format!("{} {}", m.count, marker(m.marker)))
        .collect();
    if !newly.is_empty() {
        table.row(["newly done", &newly.join(", ")]);
    }
    let coverage_line = match &report.coverage {
        Some(c) => format!(
            "{} ({} of {} lines, {} {})",
            coverage(report),
            c.lines_covered,
            c.lines_valid,
            c.format,
            c.path
        ),
        None => "no report found".to_owned(),
    };
    table.row(["coverage", &coverage_line]);
    table.row([
        "documents",
        &format!("{} scanned", report.documents_scanned),
    ]);
    let analyses: Vec<String> = report
        .analyses
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                analysis(a.analysis),
                format::seconds(a.duration_seconds)
            )
        })
        .collect();
    if !analyses.is_empty() {
        table.row(["analyses", &analyses.join(", ")]);
    }
    table.row(["problems", &report.problems.len().to_string()]);
    table.write(io.out)?;
    for problem in &report.problems {
        let place = if problem.path.is_empty() {
            String::new()
        } else {
            format!(" {}", problem.path)
        };
        writeln!(io.out, "  {}{place}: {}", problem.kind, problem.message)?;
    }
    if !report.documents.is_empty() {
        writeln!(io.out)?;
        let mut docs = Table::new(&["DOCUMENT", "DONE", "IN PROGRESS", "PLANNED"]);
        for doc in &report.documents {
            let t = doc.tasks.unwrap_or_default();
            docs.row([
                doc.path.clone(),
                t.done.to_string(),
                t.in_progress.to_string(),
                t.planned.to_string(),
            ]);
        }
        docs.write(io.out)?;
    }
    io.out.flush()
}

fn write_history(page: &ListReportsResponse, io: &mut Io<'_>) -> std::io::Result<()> {
    if io.format == Format::Json {
        return io.json(&json!({
            "reports": page.reports.iter().map(report_json).collect::<Vec<_>>(),
            "next_page_token": page.next_page_token,
            "total": page.total,
        }));
    }
    let mut table = Table::new(&[
        "ID",
        "STARTED",
        "RESULT",
        "NEW COMMITS",
        "DONE",
        "IN PROGRESS",
        "PLANNED",
        "COVERAGE",
        "PROBLEMS",
    ]);
    for report in &page.reports {
        let tasks = report.tasks.unwrap_or_default();
        table.row([
            report.id.to_string(),
            format::time(report.started_at.as_ref()),
            result(report.result),
            report.new_commits.to_string(),
            tasks.done.to_string(),
            tasks.in_progress.to_string(),
            tasks.planned.to_string(),
            coverage(report),
            report.problems.len().to_string(),
        ]);
    }
    table.write(io.out)?;
    writeln!(io.out, "{} of {} reports", page.reports.len(), page.total)?;
    if !page.next_page_token.is_empty() {
        writeln!(io.out, "next page: --page-token {}", page.next_page_token)?;
    }
    io.out.flush()
}

fn tasks_json(tasks: Option<&TaskCounts>) -> Value {
    let t = tasks.copied().unwrap_or_default();
    json!({ "done": t.done, "in_progress": t.in_progress, "planned": t.planned })
}

fn report_json(report: &AuditReport) -> Value {
    json!({
        "id": report.id,
        "started_at": format::time_json(report.started_at.as_ref()),
        "duration_seconds": report.duration_seconds,
        "result": result(report.result),
        "reason": report.reason,
        "repository": report.repository,
        "head": report.head,
        "previous_head": report.previous_head,
        "branch": report.branch,
        "new_commits": report.new_commits,
        "history_rewritten": report.history_rewritten,
        "analyses": report.analyses.iter().map(|a| json!({
            "analysis": analysis(a.analysis),
            "duration_seconds": a.duration_seconds,
        })).collect::<Vec<_>>(),
        "tasks": tasks_json(report.tasks.as_ref()),
        "newly_completed": report.newly_completed.iter().map(|m| json!({
            "marker": marker(m.marker),
            "count": m.count,
        })).collect::<Vec<_>>(),
        "coverage": report.coverage.as_ref().map(|c| json!({
            "path": c.path,
            "format": c.format,
            "lines_covered": c.lines_covered,
            "lines_valid": c.lines_valid,
            "percent": c.percent,
        })),
        "problems": report.problems.iter().map(|p| json!({
            "kind": p.kind,
            "path": p.path,
            "message": p.message,
        })).collect::<Vec<_>>(),
        "documents_scanned": report.documents_scanned,
        "documents": report.documents.iter().map(|d| json!({
            "path": d.path,
            "tasks": tasks_json(d.tasks.as_ref()),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use automation_proto::v1::{AuditProblem, CoverageSummary};

    use super::*;

    fn report() -> AuditReport {
        AuditReport {
            id: 3,
            result: AuditResult::Partial as i32,
            reason: "request".into(),
            head: "0123456789abcdef0123".into(),
            new_commits: 2,
            tasks: Some(TaskCounts {
                done: 4,
                in_progress: 1,
                planned: 2,
            }),
            coverage: Some(CoverageSummary {
                path: "lcov.info".into(),
                format: "lcov".into(),
                lines_covered: 3,
                lines_valid: 4,
                percent: Some(75.0),
            }),
            problems: vec![AuditProblem {
                kind: "markdown".into(),
                path: "PLAN.md".into(),
                message: "not UTF-8".into(),
            }],
            ..AuditReport::default()
        }
    }

    fn render(format: Format, write: impl FnOnce(&mut Io<'_>)) -> String {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut io = Io {
            out: &mut out,
            err: &mut err,
            format,
            color: false,
        };
        write(&mut io);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_report_for_people() {
        let text = render(Format::Table, |io| write_report(&report(), io).unwrap());
        for expected in [
            "result       partial",
            "head         0123456789ab",
            "tasks        4 done, 1 in progress, 2 planned",
            "coverage     75.0% (3 of 4 lines, lcov lcov.info)",
            "  markdown PLAN.md: not UTF-8",
        ] {
            assert!(text.contains(expected), "{expected:?} in\n{text}");
        }
    }

    #[test]
    fn history_names_the_next_page() {
        let page = ListReportsResponse {
            reports: vec![report()],
            next_page_token: "abc".into(),
            total: 9,
        };
        let text = render(Format::Table, |io| write_history(&page, io).unwrap());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID  STARTED  RESULT"), "{text}");
        assert!(lines[1].starts_with("3   -        partial  2"), "{text}");
        assert!(lines[1].ends_with("75.0%     1"), "{text}");
        assert_eq!(lines[2], "1 of 9 reports");
        assert_eq!(lines[3], "next page: --page-token abc");
        let json = render(Format::Json, |io| write_history(&page, io).unwrap());
        let value: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["next_page_token"], "abc");
        assert_eq!(value["reports"][0]["tasks"]["in_progress"], 1);
        assert_eq!(value["reports"][0]["coverage"]["percent"], 75.0);
    }
}
