//! The audit-agent over real sockets, real git repositories (made with the
//! git CLI) and real SQLite files: facts counted once across audits and
//! restarts, history rewrites, plan markers, coverage, every kind of bad
//! input, and the figures on a real collector's `/metrics`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use automation_audit_agent::{Config, Handles, start};
use automation_proto::v1::audit_agent_client::AuditAgentClient;
use automation_proto::v1::{self, AuditReport, AuditResult, Marker};
use automation_telemetry::reporter::ReporterConfig;
use automation_testkit::git::Repo;
use automation_testkit::service::{self, Service};
use automation_testkit::{Samples, TestCollector, http_get, within};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// A running audit-agent and a client.
struct Agent {
    client: AuditAgentClient<Channel>,
    handles: Handles,
    http: SocketAddr,
    service: Service<Handles, automation_audit_agent::Error>,
}

fn config(repo: &Path, database: &Path) -> Config {
    let mut config = Config::new("aa-test", repo.to_path_buf(), database.to_path_buf());
    config.interval = None;
    config.audit_on_start = false;
    config.service.shutdown_delay = Duration::ZERO;
    config.database_busy_timeout = Duration::from_millis(200);
    config
}

fn reporting(config: &mut Config, endpoint: String) {
    let mut rc = ReporterConfig::new(endpoint, "audit-agent", "aa-test", "1.0");
    rc.heartbeat_interval = Duration::from_millis(200);
    rc.batch_max_delay = Duration::from_millis(20);
    config.service.reporter = Some(rc);
}

impl Agent {
    async fn start(config: Config) -> Self {
        Self::try_start(config).await.expect("the agent starts")
    }

    /// Starts the agent; the error if it refuses to.
    async fn try_start(config: Config) -> Result<Self, automation_audit_agent::Error> {
        let service =
            service::start(|listeners, shutdown| start(config, listeners, shutdown)).await?;
        let client = AuditAgentClient::connect(service.endpoint()).await.unwrap();
        Ok(Self {
            client,
            handles: service.handles.clone(),
            http: service.http,
            service,
        })
    }

    async fn audit(&mut self) -> AuditReport {
        within(
            "an audit",
            self.client.run_audit(v1::RunAuditRequest {
                reason: "test".to_owned(),
            }),
        )
        .await
        .expect("RunAudit answers")
        .into_inner()
    }

    async fn list(&mut self, page_size: u32, page_token: &str) -> v1::ListReportsResponse {
        self.client
            .list_reports(v1::ListReportsRequest {
                page_size,
                page_token: page_token.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn ready(&self) -> (u16, serde_json::Value) {
        self.handles.health.check_now().await;
        let (status, body) = http_get(self.http, "/ready").await;
        (status, serde_json::from_str(&body).unwrap())
    }

    async fn stop(self) {
        service::stop(self.service).await.unwrap();
    }
}

fn newly(report: &AuditReport, marker: Marker) -> u64 {
    report
        .newly_completed
        .iter()
        .filter(|m| m.marker == marker as i32)
        .map(|m| m.count)
        .sum()
}

fn tasks(report: &AuditReport) -> (u64, u64, u64) {
    let t = report.tasks.unwrap_or_default();
    (t.done, t.in_progress, t.planned)
}

fn kinds(report: &AuditReport) -> Vec<&str> {
    report.problems.iter().map(|p| p.kind.as_str()).collect()
}

#[tokio::test]
async fn commits_are_counted_once_across_audits_and_restarts() {
    let mut repo = Repo::new();
    repo.commit(3);
    let db = tempfile::tempdir().unwrap();
    let database = db.path().join("state/audit.db");

    let mut agent = Agent::start(config(repo.path(), &database)).await;
    let first = agent.audit().await;
    assert_eq!(first.result, AuditResult::Ok as i32, "{:?}", first.problems);
    assert_eq!(first.new_commits, 3, "the first audit counts the history");
    assert_eq!(first.head, repo.git(&["rev-parse", "HEAD"]));
    assert_eq!(first.branch, "main");
    assert!(first.previous_head.is_empty());
    assert_eq!(first.id, 1);
    assert_eq!(agent.audit().await.new_commits, 0, "nothing new");
    repo.commit(2);
    let third = agent.audit().await;
    assert_eq!(third.new_commits, 2);
    assert_eq!(third.previous_head, first.head);
    agent.stop().await;

    // A restart reads the audited head from the database.
    repo.commit(1);
    let mut agent = Agent::start(config(repo.path(), &database)).await;
    let after = agent.audit().await;
    assert_eq!(after.new_commits, 1, "a restart never recounts");
    assert!(!after.history_rewritten);

    // History, newest first, in pages.
    let page = agent.list(3, "").await;
    assert_eq!(page.total, 4);
    let ids: Vec<u64> = page.reports.iter().map(|r| r.id).collect();
    assert_eq!(ids, [4, 3, 2]);
    let rest = agent.list(3, &page.next_page_token).await;
    assert_eq!(rest.reports.iter().map(|r| r.id).collect::<Vec<_>>(), [1]);
    assert!(rest.next_page_token.is_empty());
    assert_eq!(rest.reports[0].new_commits, 3);
    let bad = agent
        .client
        .list_reports(v1::ListReportsRequest {
            page_size: 3,
            page_token: "zz".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let latest = agent
        .client
        .get_report(v1::GetReportRequest {
            id: 0,
            include_documents: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((latest.id, latest.new_commits), (4, 1));
    let missing = agent
        .client
        .get_report(v1::GetReportRequest {
            id: 99,
            include_documents: false,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    agent.stop().await;
}

#[tokio::test]
async fn a_force_push_is_reported_not_miscounted() {
    let mut repo = Repo::new();
    repo.commit(4);
    let db = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(config(repo.path(), &db.path().join("a.db"))).await;
    assert_eq!(agent.audit().await.new_commits, 4);

    // Rewrite the last two commits into three others.
    repo.git(&["reset", "-q", "--hard", "HEAD~2"]);
    repo.commit(3);
    let rewritten = agent.audit().await;
    assert!(rewritten.history_rewritten);
    assert_eq!(rewritten.new_commits, 3, "only the commits not seen before");
    assert_eq!(rewritten.result, AuditResult::Ok as i32);

    let next = agent.audit().await;
    assert!(!next.history_rewritten, "a rewrite is reported once");
    assert_eq!(next.new_commits, 0);
    agent.stop().await;
}

const PLAN: &str = r#"# Plan

## Phase 1 ✅

- [x] Storage layer
- [x] Parser
- [ ] Exporter ⏳
- [ ] Dashboards

```markdown
- [x] not a task: inside a fenced block
✅ not an item either
```

    - [x] indented code, not a task

`- [x] inline code` is text.

## Phase 2

Status: IN PROGRESS

| Step     | State |
|----------|-------|
| Design   | ✅    |
| Rollout  | 🔜    |
"#;

#[tokio::test]
async fn plan_markers_are_counted_with_code_blocks_ignored() {
    let mut repo = Repo::new();
    repo.write("docs/PLAN.md", PLAN);
    repo.write("target/ignored.md", "- [x] build output\n");
    repo.write(".gitignore", "scratch/\n");
    repo.write("scratch/notes.md", "- [x] ignored by git\n");
    repo.commit(1);
    let db = tempfile::tempdir().unwrap();
    let database = db.path().join("a.db");
    let mut agent = Agent::start(config(repo.path(), &database)).await;

    let first = agent.audit().await;
    // Done: 2 checkboxes, the "Phase 1 ✅" heading, the Design row.
    // In progress: the Exporter checkbox, the Phase 2 status line.
    // Planned: the Dashboards checkbox, the Rollout row.
    assert_eq!(tasks(&first), (4, 2, 2), "{:#?}", first.documents);
    assert_eq!(newly(&first, Marker::Checkbox), 2);
    assert_eq!(newly(&first, Marker::DoneEmoji), 2);
    assert_eq!(first.documents.len(), 1, "{:?}", first.documents);
    assert_eq!(first.documents[0].path, "docs/PLAN.md");

    // Two items done, one line added above them: only those two are new.
    let edited = PLAN
        .replace("# Plan\n", "# Plan\n\nA line of introduction.\n")
        .replace("- [ ] Exporter ⏳", "- [x] Exporter")
        .replace("Status: IN PROGRESS", "**Status:** Complete");
    repo.write("docs/PLAN.md", &edited);
    let second = agent.audit().await;
    assert_eq!(newly(&second, Marker::Checkbox), 1);
    assert_eq!(newly(&second, Marker::StatusLine), 1);
    assert_eq!(newly(&second, Marker::DoneEmoji), 0);
    assert_eq!(tasks(&second), (6, 0, 2));
    agent.stop().await;

    // Across a restart nothing is counted again.
    let mut agent = Agent::start(config(repo.path(), &database)).await;
    let third = agent.audit().await;
    assert!(
        third.newly_completed.is_empty(),
        "{:?}",
        third.newly_completed
    );
    assert_eq!(tasks(&third), (6, 0, 2));
    let latest = agent
        .client
        .get_report(v1::GetReportRequest {
            id: 0,
            include_documents: true,
        })
        .await
        .unwrap()
        .into_inner();
    let doc = &latest.documents[0];
    assert_eq!(doc.path, "docs/PLAN.md");
    assert_eq!(doc.tasks.unwrap().done, 6);
    agent.stop().await;
}

/// git-sync publishes each checkout by swapping a symbolic link to it and
/// deleting the previous one: every audit follows the link to the checkout
/// it leads to then.
#[tokio::test]
async fn a_checkout_swapped_under_a_linked_root_is_audited() {
    let mut origin = Repo::new();
    origin.write("PLAN.md", "- [x] one\n- [ ] two\n");
    origin.commit(2);
    let sync = tempfile::tempdir().unwrap();
    let upstream = origin.path().to_path_buf();
    let checkout = |name: &str| {
        let dir = sync.path().join(".worktrees").join(name);
        let out = Command::new("git")
            .args(["clone", "-q"])
            .arg(&upstream)
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    };
    let link = sync.path().join("repo");
    std::os::unix::fs::symlink(checkout("one"), &link).unwrap();
    let db = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(config(&link, &db.path().join("a.db"))).await;
    let first = agent.audit().await;
    assert_eq!(first.result, AuditResult::Ok as i32, "{:?}", first.problems);
    assert_eq!((first.new_commits, tasks(&first)), (2, (1, 0, 1)));
    assert_eq!(first.repository, link.display().to_string());

    // A new commit upstream, synced the way git-sync does it: a new
    // checkout, a new link renamed over the old one, the old one deleted.
    origin.write("PLAN.md", "- [x] one\n- [x] two\n");
    origin.commit(1);
    let swapping = sync.path().join("repo.tmp");
    std::os::unix::fs::symlink(checkout("two"), &swapping).unwrap();
    std::fs::rename(&swapping, &link).unwrap();
    std::fs::remove_dir_all(sync.path().join(".worktrees/one")).unwrap();

    let (status, ready) = agent.ready().await;
    assert_eq!(status, 200, "{ready}");
    let second = agent.audit().await;
    assert_eq!(
        second.result,
        AuditResult::Ok as i32,
        "{:?}",
        second.problems
    );
    assert!(second.problems.is_empty(), "{:?}", second.problems);
    assert_eq!(second.new_commits, 1);
    assert_eq!(second.previous_head, first.head);
    assert_eq!(second.head, origin.git(&["rev-parse", "HEAD"]));
    assert_eq!(tasks(&second), (2, 0, 0));
    assert_eq!(newly(&second, Marker::Checkbox), 1);
    agent.stop().await;
}

#[tokio::test]
async fn coverage_in_each_format_matches_a_hand_computed_figure() {
    let mut repo = Repo::new();
    // LCOV, one file under two test names: lines 1, 2 covered by the first,
    // 3 by the second, 4 by neither → 3 of 4 = 75 %.
    repo.write(
        "coverage/lcov.info",
        "TN:unit\nSF:src/lib.rs\nDA:1,1\nDA:2,4\nDA:3,0\nDA:4,0\nLF:4\nLH:2\nend_of_record\n\
         TN:integration\nSF:src/lib.rs\nDA:1,0\nDA:3,2\nDA:4,0\nLF:3\nLH:1\nend_of_record\n",
    );
    repo.commit(1);
    let db = tempfile::tempdir().unwrap();
    let database = db.path().join("a.db");
    let mut agent = Agent::start(config(repo.path(), &database)).await;
    let lcov = agent.audit().await.coverage.expect("found by itself");
    assert_eq!(
        (lcov.format.as_str(), lcov.path.as_str()),
        ("lcov", "coverage/lcov.info")
    );
    assert_eq!((lcov.lines_covered, lcov.lines_valid), (3, 4));
    assert_eq!(lcov.percent, Some(75.0));
    agent.stop().await;

    // Cobertura, configured: 173 of 200 lines = 86.5 %.
    repo.write(
        "reports/cov.xml",
        r#"<?xml version="1.0" ?>
<!DOCTYPE coverage SYSTEM "http://cobertura.sourceforge.net/xml/coverage-04.dtd">
<coverage lines-covered="173" lines-valid="200" line-rate="0.865" version="1.9" timestamp="1">
  <packages/>
</coverage>"#,
    );
    let mut c = config(repo.path(), &database);
    c.audit.coverage_path = Some(PathBuf::from("reports/cov.xml"));
    let mut agent = Agent::start(c).await;
    let cobertura = agent.audit().await.coverage.unwrap();
    assert_eq!(cobertura.format, "cobertura");
    assert_eq!(cobertura.percent, Some(86.5));
    agent.stop().await;

    // llvm-cov JSON export, two data entries: (30 + 10) of (40 + 10) = 80 %.
    repo.write(
        "reports/llvm.json",
        r#"{"type":"llvm.coverage.json.export","version":"2.0.1","data":[
            {"files":[],"totals":{"lines":{"count":40,"covered":30,"percent":75.0}}},
            {"files":[],"totals":{"lines":{"count":10,"covered":10,"percent":100.0}}}]}"#,
    );
    let mut c = config(repo.path(), &database);
    c.audit.coverage_path = Some(PathBuf::from("reports/llvm.json"));
    let mut agent = Agent::start(c).await;
    let llvm = agent.audit().await.coverage.unwrap();
    assert_eq!(llvm.format, "llvm-cov-json");
    assert_eq!((llvm.lines_covered, llvm.lines_valid), (40, 50));
    assert_eq!(llvm.percent, Some(80.0));

    // 0 of 0 lines: known to be unknown, not NaN.
    repo.write(
        "reports/llvm.json",
        r#"{"type":"llvm.coverage.json.export","version":"2.0.1","data":[
            {"files":[],"totals":{"lines":{"count":0,"covered":0,"percent":0.0}}}]}"#,
    );
    let empty = agent.audit().await.coverage.unwrap();
    assert_eq!(empty.lines_valid, 0);
    assert_eq!(empty.percent, None);
    agent.stop().await;
}

#[tokio::test]
async fn a_folder_that_is_not_a_repository_still_gets_its_plan_audited() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("PLAN.md"), "- [x] one\n- [ ] two\n").unwrap();
    let db = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(config(folder.path(), &db.path().join("a.db"))).await;
    let report = agent.audit().await;
    assert_eq!(report.result, AuditResult::Partial as i32);
    assert_eq!(kinds(&report), ["git"]);
    assert!(
        report.problems[0]
            .message
            .contains("is not a git repository"),
        "{}",
        report.problems[0].message
    );
    assert_eq!(tasks(&report), (1, 0, 1), "the rest of the audit ran");
    assert_eq!(report.new_commits, 0);
    let (status, body) = agent.ready().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["components"]["repository"]["status"], "failing");
    assert_eq!(body["components"]["database"]["status"], "ok");
    agent.stop().await;
}

#[tokio::test]
async fn unreadable_coverage_and_markdown_are_problems_and_lose_nothing() {
    let mut repo = Repo::new();
    repo.write("PLAN.md", "- [x] a\n- [x] b\n- [ ] c\n");
    repo.write("NOTES.md", "- [x] note\n");
    repo.commit(2);
    let db = tempfile::tempdir().unwrap();
    let database = db.path().join("a.db");
    let mut agent = Agent::start(config(repo.path(), &database)).await;
    let good = agent.audit().await;
    assert_eq!(tasks(&good), (3, 0, 1));
    assert_eq!(good.new_commits, 2);

    // A corrupt coverage report and a plan that is not UTF-8.
    repo.write("lcov.info", "SF:src/lib.rs\nDA:abc,1\nend_of_record\n");
    repo.write(
        "PLAN.md",
        b"- [x] a\n- [x] b\n- [x] c \xff\xfe\n".as_slice(),
    );
    repo.commit(1);
    let bad = agent.audit().await;
    assert_eq!(bad.result, AuditResult::Partial as i32);
    let mut found = kinds(&bad);
    found.sort_unstable();
    assert_eq!(found, ["coverage", "markdown"], "{:?}", bad.problems);
    let markdown = bad.problems.iter().find(|p| p.kind == "markdown").unwrap();
    assert_eq!(markdown.path, "PLAN.md");
    assert!(markdown.message.contains("UTF-8"), "{}", markdown.message);
    let coverage = bad.problems.iter().find(|p| p.kind == "coverage").unwrap();
    assert!(
        coverage.message.contains("lcov.info"),
        "{}",
        coverage.message
    );
    assert!(bad.coverage.is_none());
    assert_eq!(bad.new_commits, 1, "git still counted");
    assert_eq!(
        tasks(&bad),
        (3, 0, 1),
        "the unreadable plan keeps its items"
    );

    // Fixed: the item done while the file was unreadable is counted once.
    repo.write("PLAN.md", "- [x] a\n- [x] b\n- [x] c\n");
    let fixed = agent.audit().await;
    assert_eq!(
        fixed.result,
        AuditResult::Partial as i32,
        "lcov.info is still bad"
    );
    assert_eq!(newly(&fixed, Marker::Checkbox), 1);
    assert_eq!(tasks(&fixed), (4, 0, 0));
    agent.stop().await;
}

#[tokio::test]
async fn a_corrupt_database_is_reported_and_left_untouched() {
    let mut repo = Repo::new();
    repo.commit(2);
    let db = tempfile::tempdir().unwrap();
    let database = db.path().join("a.db");
    let garbage = b"this is not a database, but it is someone's file\n".repeat(200);
    std::fs::write(&database, &garbage).unwrap();

    let mut agent = Agent::start(config(repo.path(), &database)).await;
    let report = agent.audit().await;
    assert_eq!(report.result, AuditResult::Partial as i32);
    assert_eq!(kinds(&report), ["database"]);
    assert!(
        report.problems[0].message.contains("not a database"),
        "{}",
        report.problems[0].message
    );
    assert_eq!(report.new_commits, 0, "not stored, so not counted");
    assert_eq!(report.id, 0);
    let (status, body) = agent.ready().await;
    assert_eq!(status, 503);
    assert_eq!(body["components"]["database"]["status"], "failing");
    agent.stop().await;
    assert_eq!(std::fs::read(&database).unwrap(), garbage, "left as it was");
}

#[tokio::test]
async fn a_locked_database_delays_counting_without_losing_anything() {
    let mut repo = Repo::new();
    repo.commit(2);
    let db = tempfile::tempdir().unwrap();
    let database = db.path().join("a.db");
    let mut agent = Agent::start(config(repo.path(), &database)).await;
    assert_eq!(agent.audit().await.new_commits, 2);

    repo.commit(3);
    let holder = rusqlite::Connection::open(&database).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    let locked = agent.audit().await;
    assert_eq!(kinds(&locked), ["database"]);
    assert!(
        locked.problems[0].message.contains("locked"),
        "{}",
        locked.problems[0].message
    );
    assert_eq!(locked.new_commits, 0);
    let (status, _) = agent.ready().await;
    assert_eq!(status, 503, "a database it cannot write makes it unready");

    holder.execute_batch("ROLLBACK;").unwrap();
    drop(holder);
    let after = agent.audit().await;
    assert_eq!(after.result, AuditResult::Ok as i32, "{:?}", after.problems);
    assert_eq!(after.new_commits, 3, "counted once the database is back");
    let (status, _) = agent.ready().await;
    assert_eq!(status, 200);
    agent.stop().await;
}

#[tokio::test]
async fn a_newer_schema_is_refused_with_a_clear_message() {
    let repo = Repo::new();
    let db = tempfile::tempdir().unwrap();
    let database = db.path().join("a.db");
    // A database from a future version: ours, schema 99.
    {
        let agent = Agent::start(config(repo.path(), &database)).await;
        agent.stop().await;
        let conn = rusqlite::Connection::open(&database).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        // Into the main file now: the stopped agent's last connection may
        // close after this one and would checkpoint it later.
        conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")
            .unwrap();
    }
    let before = std::fs::read(&database).unwrap();
    let error = Agent::try_start(config(repo.path(), &database))
        .await
        .err()
        .expect("refused");
    let message = error.to_string();
    assert!(message.contains("schema version 99"), "{message}");
    assert!(
        message.contains("newer than this audit-agent supports"),
        "{message}"
    );
    assert!(
        std::fs::read(&database).unwrap() == before,
        "the newer database was altered"
    );
}

#[tokio::test]
async fn concurrent_audit_requests_never_overlap() {
    let mut repo = Repo::new();
    repo.commit(5);
    let db = tempfile::tempdir().unwrap();
    let agent = Agent::start(config(repo.path(), &db.path().join("a.db"))).await;
    let calls = (0..8).map(|_| {
        let mut client = agent.client.clone();
        tokio::spawn(async move {
            client
                .run_audit(v1::RunAuditRequest::default())
                .await
                .unwrap()
                .into_inner()
        })
    });
    let mut reports = Vec::new();
    for call in calls {
        reports.push(within("concurrent audits", call).await.unwrap());
    }
    // Audits never overlapped: each began after the one before had ended.
    let mut audits: Vec<(f64, f64, u64)> = reports
        .iter()
        .map(|r| {
            let t = r.started_at.unwrap();
            (
                t.seconds as f64 + f64::from(t.nanos) / 1e9,
                r.duration_seconds,
                r.id,
            )
        })
        .collect();
    audits.sort_by(|a, b| a.0.total_cmp(&b.0));
    audits.dedup_by_key(|a| a.2);
    assert!(audits.len() <= 8);
    for pair in audits.windows(2) {
        assert!(
            pair[1].0 >= pair[0].0 + pair[0].1 - 1e-3,
            "audit {} began before audit {} ended",
            pair[1].2,
            pair[0].2
        );
    }
    let mut agent = agent;
    let total_counted: u64 = agent
        .list(100, "")
        .await
        .reports
        .iter()
        .map(|r| r.new_commits)
        .sum();
    assert_eq!(total_counted, 5, "the five commits were counted once");
    agent.stop().await;
}

fn labels(extra: (&'static str, &'static str)) -> Vec<(&'static str, &'static str)> {
    automation_testkit::series("audit-agent", "aa-test", &[extra])
}

#[tokio::test]
async fn the_collector_shows_the_audits() {
    let collector = TestCollector::start(automation_collector::Config::new("c")).await;
    let mut repo = Repo::new();
    repo.write("PLAN.md", "- [x] a\n- [x] b\n- [ ] c ⏳\n- [ ] d\n");
    repo.write(
        "lcov.info",
        "SF:a.rs\nDA:1,1\nDA:2,0\nDA:3,1\nDA:4,1\nend_of_record\n",
    );
    repo.commit(3);
    let db = tempfile::tempdir().unwrap();
    let mut c = config(repo.path(), &db.path().join("a.db"));
    reporting(&mut c, collector.endpoint());
    let mut agent = Agent::start(c).await;
    agent.audit().await;
    repo.write("cobertura.xml", "<coverage lines-covered=\"5\"");
    repo.write("lcov.info", "garbage\n");
    repo.commit(2);
    agent.audit().await;

    let m: Samples = collector
        .eventually("two audits", |m| {
            m.get("audit_agent_runs_total", &labels(("result", "partial"))) == Some(1.0)
        })
        .await;
    let one = |name: &str| m.value(name, &labels(("component", "audit-agent")));
    assert_eq!(
        m.value("audit_agent_runs_total", &labels(("result", "ok"))),
        1.0
    );
    assert_eq!(one("audit_agent_git_commits_detected_total"), 5.0);
    assert_eq!(
        m.value(
            "audit_agent_completion_markers_found_total",
            &labels(("marker", "checkbox"))
        ),
        2.0
    );
    assert_eq!(
        m.value("audit_agent_tasks", &labels(("state", "done"))),
        2.0
    );
    assert_eq!(
        m.value("audit_agent_tasks", &labels(("state", "in_progress"))),
        1.0
    );
    assert_eq!(
        m.value("audit_agent_tasks", &labels(("state", "planned"))),
        1.0
    );
    assert_eq!(one("audit_agent_active_tasks"), 1.0);
    assert_eq!(
        m.value("audit_agent_errors_total", &labels(("kind", "coverage"))),
        1.0
    );
    // The second audit could not read coverage: the gauge is absent, not 0.
    assert!(!m.has(
        "audit_agent_coverage_percent",
        &labels(("component", "audit-agent"))
    ));
    assert_eq!(one("audit_agent_run_duration_seconds_count"), 2.0);
    for analysis in ["git", "markers", "coverage"] {
        assert_eq!(
            m.value(
                "audit_agent_analysis_duration_seconds_count",
                &labels(("analysis", analysis))
            ),
            2.0,
            "{analysis}"
        );
    }
    assert!(one("audit_agent_last_run_timestamp_seconds") > 1.7e9);
    assert_eq!(one("automation_component_up"), 1.0);
    // Blocking work went through the bridge.
    assert!(
        m.value(
            "safe_async_bridge_calls_total",
            &labels(("direction", "to_blocking"))
        ) >= 8.0
    );
    agent.stop().await;
    collector.stop().await;
}

#[tokio::test]
async fn the_collector_not_answering_shows_as_degraded() {
    let repo = Repo::new();
    let db = tempfile::tempdir().unwrap();
    // Port 1: nothing listens, and no other test's server can take it.
    let endpoint = "http://127.0.0.1:1".to_owned();
    let mut c = config(repo.path(), &db.path().join("a.db"));
    reporting(&mut c, endpoint);
    let agent = Agent::start(c).await;
    within("ready", agent.handles.health.wait_ready()).await;
    let body = within("degraded", async {
        loop {
            let (status, body) = agent.ready().await;
            assert_eq!(
                status, 200,
                "a dead collector must not make it unready: {body}"
            );
            if body["components"]["collector"]["status"] == "degraded" {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(body["components"]["repository"]["status"], "ok");
    assert_eq!(body["components"]["database"]["status"], "ok");
    agent.stop().await;
}

/// A locked database costs an audit one busy timeout, not one per database
/// step plus the health checks' waits: readiness is checked every few
/// seconds, and a check waiting for the lock must not make the audit wait
/// behind it.
#[tokio::test]
async fn a_locked_database_costs_an_audit_one_busy_timeout() {
    let mut repo = Repo::new();
    repo.commit(2);
    let db = tempfile::tempdir().unwrap();
    let database = db.path().join("a.db");
    let mut c = config(repo.path(), &database);
    c.database_busy_timeout = Duration::from_secs(1);
    let mut agent = Agent::start(c).await;
    assert_eq!(agent.audit().await.new_commits, 2);

    repo.commit(1);
    let holder = rusqlite::Connection::open(&database).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    // Probes as a kubelet and a load balancer make them, back to back.
    let probing = CancellationToken::new();
    let probes = tokio::spawn({
        let (health, probing) = (agent.handles.health.clone(), probing.clone());
        async move {
            while !probing.is_cancelled() {
                health.check_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    for _ in 0..3 {
        let clock = std::time::Instant::now();
        let locked = agent.audit().await;
        let took = clock.elapsed();
        assert_eq!(kinds(&locked), ["database"], "{:?}", locked.problems);
        assert!(
            locked.problems[0].message.contains("locked"),
            "{}",
            locked.problems[0].message
        );
        // One busy timeout is 1 s; today's two or three would be 2-3 s.
        assert!(
            took < Duration::from_millis(1800),
            "an audit over a locked database took {took:?}, more than one busy timeout (1 s)"
        );
    }
    let (status, body) = agent.ready().await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["components"]["database"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("locked")),
        "{body}"
    );
    probing.cancel();
    probes.await.unwrap();
    holder.execute_batch("ROLLBACK;").unwrap();
    drop(holder);
    assert_eq!(agent.audit().await.new_commits, 1, "counted once unlocked");
    agent.stop().await;
}

/// Overwrites the first page of `table`'s b-tree with garbage, the way a
/// torn write or a bad disk leaves a database: the header, the schema and
/// the other tables still read fine.
fn corrupt_table(database: &Path, table: &str) {
    let (root, page_size): (i64, i64) = {
        let conn = rusqlite::Connection::open(database).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let root = conn
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = ?1",
                [table],
                |r| r.get(0),
            )
            .unwrap();
        let size = conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .unwrap();
        (root, size)
    };
    use std::io::{Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(database)
        .unwrap();
    file.seek(SeekFrom::Start(((root - 1) * page_size) as u64))
        .unwrap();
    file.write_all(&vec![0xAB; page_size as usize]).unwrap();
    file.sync_all().unwrap();
}

/// A database whose pages are damaged but whose header still reads would
/// take the write lock happily while every audit fails "malformed": the
/// integrity check at start makes the agent unready with the reason, it
/// writes nothing to the file, and a restored backup makes it ready again.
#[tokio::test]
async fn a_corrupt_database_makes_the_agent_unready_until_restored() {
    let mut repo = Repo::new();
    repo.commit(2);
    let db = tempfile::tempdir().unwrap();
    let database = db.path().join("a.db");
    let good = db.path().join("good.db");
    let mut agent = Agent::start(config(repo.path(), &database)).await;
    assert_eq!(agent.audit().await.new_commits, 2);
    agent.stop().await;
    automation_audit_agent::store::backup(&database, &good).unwrap();
    corrupt_table(&database, "reports");
    let damaged = std::fs::read(&database).unwrap();

    repo.commit(1);
    let mut agent = Agent::start(config(repo.path(), &database)).await;
    let (status, body) = agent.ready().await;
    assert_eq!(status, 503, "{body}");
    let error = body["components"]["database"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("integrity check failed") && error.contains("restore"),
        "{body}"
    );
    let report = agent.audit().await;
    assert_eq!(kinds(&report), ["database"], "{:?}", report.problems);
    assert_eq!(report.new_commits, 0, "not stored, so not counted");
    let (status, _) = agent.ready().await;
    assert_eq!(status, 503, "still unready after the audit");
    assert_eq!(
        std::fs::read(&database).unwrap(),
        damaged,
        "nothing written"
    );

    // The operator restores the backup: ready again, and the commit made
    // meanwhile is counted once.
    automation_audit_agent::store::restore(&good, &database).unwrap();
    let (status, body) = agent.ready().await;
    assert_eq!(status, 200, "{body}");
    let after = agent.audit().await;
    assert_eq!(after.result, AuditResult::Ok as i32, "{:?}", after.problems);
    assert_eq!(after.new_commits, 1);
    agent.stop().await;
}
