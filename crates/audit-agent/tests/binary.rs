//! The `audit-agent` binary as an operator runs it: bad configuration, the
//! database backup and restore commands, and `kill -9` at any moment.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use automation_audit_agent::{Config, start};
use automation_proto::v1::audit_agent_client::AuditAgentClient;
use automation_proto::v1::{self, AuditReport};
use automation_testkit::binary::refuses;
use automation_testkit::service;

const BIN: &str = env!("CARGO_BIN_EXE_audit-agent");

fn agent(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("GRPC_LISTEN", "127.0.0.1:0")
        .env("HTTP_LISTEN", "127.0.0.1:0")
        .env("COLLECTOR_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bad_configuration_prints_one_line_and_exits_64() {
    for (var, value, mentions) in [
        ("REPO_PATH", "/nonexistent/repo", "/nonexistent/repo"),
        ("AUDIT_INTERVAL", "often", "often"),
        ("MARKDOWN_GLOBS", "docs/{a", "docs/{a"),
        ("COVERAGE_FORMAT", "gcov", "gcov"),
    ] {
        refuses(BIN, &[(var, value)], mentions);
    }
}

/// A database written by a newer audit-agent, or some other application's,
/// is bad configuration for this one (DESIGN §7): one line, exit 64, and
/// the file is left as it was.
#[test]
fn a_newer_or_foreign_database_exits_64_untouched() {
    let repo = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let newer = dir.path().join("newer.db");
    {
        let conn = rusqlite::Connection::open(&newer).unwrap();
        conn.execute_batch(
            "PRAGMA application_id = 1096107073; PRAGMA user_version = 99;
             CREATE TABLE reports (id INTEGER PRIMARY KEY);",
        )
        .unwrap();
    }
    let foreign = dir.path().join("foreign.db");
    {
        let conn = rusqlite::Connection::open(&foreign).unwrap();
        conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL);")
            .unwrap();
    }
    for (database, mentions) in [
        (&newer, "schema version 99"),
        (&foreign, "not an audit-agent database"),
    ] {
        let before = std::fs::read(database).unwrap();
        let out = Command::new(BIN)
            .env("REPO_PATH", repo.path())
            .env("DATABASE_PATH", database)
            .env("GRPC_LISTEN", "127.0.0.1:0")
            .env("HTTP_LISTEN", "127.0.0.1:0")
            .env("COLLECTOR_ENDPOINT", "http://127.0.0.1:9")
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(64), "{}: {err}", database.display());
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(mentions), "{err}");
        assert!(err.contains(&*database.to_string_lossy()), "{err}");
        assert_eq!(std::fs::read(database).unwrap(), before, "left untouched");
    }
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.test")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.test")
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

fn commit(dir: &Path, n: u32) {
    for i in 0..n {
        std::fs::write(
            dir.join("f.txt"),
            format!("{i} {:?}", std::time::Instant::now()),
        )
        .unwrap();
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-q", "-m", "c"]);
    }
}

/// Runs `audits` audits (committing before each) with an in-process agent.
async fn audit(repo: &Path, database: &Path, commits: &[u32]) -> Vec<AuditReport> {
    let mut config = Config::new("bin-test", repo.to_path_buf(), database.to_path_buf());
    config.interval = None;
    config.audit_on_start = false;
    config.service.shutdown_delay = std::time::Duration::ZERO;
    let agent = service::start(|listeners, shutdown| start(config, listeners, shutdown))
        .await
        .expect("the audit-agent starts");
    let mut client = AuditAgentClient::connect(agent.endpoint()).await.unwrap();
    let mut reports = Vec::new();
    for n in commits {
        commit(repo, *n);
        reports.push(
            client
                .run_audit(v1::RunAuditRequest::default())
                .await
                .unwrap()
                .into_inner(),
        );
    }
    service::stop(agent).await.unwrap();
    reports
}

#[tokio::test]
async fn backup_and_restore_round_trip() {
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q"]);
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("audit.db");
    let db = database.to_str().unwrap();
    let backup = dir.path().join("backup.db");
    let bk = backup.to_str().unwrap();

    let first = audit(repo.path(), &database, &[3, 1]).await;
    assert_eq!(first[0].new_commits, 3);

    let out = agent(&["backup", "--database-path", db, "--to", bk]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("2 reports"), "{said}");
    let again = agent(&["backup", "--database-path", db, "--to", bk]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));

    // More audits after the backup, then back to the backup.
    audit(repo.path(), &database, &[2]).await;
    let incarnation = |path: &Path| -> i64 {
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row("SELECT incarnation FROM outbox_source", [], |r| r.get(0))
            .unwrap()
    };
    let backed_up = incarnation(&backup);
    let out = agent(&["restore", "--from", bk, "--database-path", db]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(
        incarnation(&database),
        backed_up,
        "a restored outbox sends under a new incarnation: its sequences may have been used"
    );
    assert!(
        dir.path().join("audit.db.before-restore").is_file(),
        "the replaced database is kept"
    );
    let reports = audit(repo.path(), &database, &[0]).await;
    assert_eq!(reports[0].id, 3, "two reports restored, this is the third");
    assert_eq!(
        reports[0].new_commits, 2,
        "counting resumes from the backup's head"
    );

    // A file that is not a backup is refused and changes nothing.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"no database here".repeat(100)).unwrap();
    let before = std::fs::read(&database).unwrap();
    let out = agent(&[
        "restore",
        "--from",
        junk.to_str().unwrap(),
        "--database-path",
        db,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("junk.db"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&database).unwrap(), before);
    let missing = agent(&[
        "restore",
        "--from",
        "/nonexistent.db",
        "--database-path",
        db,
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("/nonexistent.db"));
}

/// Reports stored in `database` and the commits they counted; zeros while
/// the file or its tables do not exist yet.
fn stored(database: &Path) -> (u64, u64) {
    use prost::Message;
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return (0, 0);
    };
    let Ok(mut stmt) = conn.prepare("SELECT report FROM reports") else {
        return (0, 0);
    };
    let blobs: Vec<Vec<u8>> = match stmt.query_map([], |r| r.get(0)) {
        Ok(rows) => rows.map(Result::unwrap).collect(),
        Err(_) => return (0, 0),
    };
    let commits = blobs
        .iter()
        .map(|b| AuditReport::decode(b.as_slice()).unwrap().new_commits)
        .sum();
    (blobs.len() as u64, commits)
}

/// The real binary, reporting to `collector`, auditing at start and every
/// 150 ms.
fn spawn_agent(repo: &Path, database: &Path, collector: &str, instance: &str) -> Child {
    Command::new(BIN)
        .env("REPO_PATH", repo)
        .env("DATABASE_PATH", database)
        .env("GRPC_LISTEN", "127.0.0.1:0")
        .env("HTTP_LISTEN", "127.0.0.1:0")
        .env("COLLECTOR_ENDPOINT", collector)
        .env("INSTANCE", instance)
        .env("AUDIT_INTERVAL", "150ms")
        .env("HEARTBEAT_INTERVAL", "200ms")
        .env("SHUTDOWN_DELAY", "0s")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Waits until `database` holds more than `reports` reports.
async fn stored_more_than(database: &Path, reports: u64) {
    automation_testkit::within("an audit stored", async {
        while stored(database).0 <= reports {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}

/// Sums `name` over every audit-agent instance.
fn total(m: &automation_testkit::Samples, name: &str) -> f64 {
    m.matching(name, &[("component", "audit-agent")])
        .map(|(_, v)| v)
        .sum()
}

/// `kill -9` right after an audit is stored, between audits and while one
/// runs, over many commits and two instance names (a replaced pod): what
/// the database holds is what the collector counts, each fact once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_any_moment_loses_and_doubles_nothing_stored() {
    let collector =
        automation_testkit::TestCollector::start(automation_collector::Config::new("c")).await;
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q"]);
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("audit.db");
    let mut made = 0;
    // Milliseconds between the newest audit being stored and the kill.
    for (round, delay) in [0, 0, 2, 0, 10, 0, 40, 0, 140, 0, 160, 300]
        .into_iter()
        .enumerate()
    {
        let n = 1 + round as u32 % 3;
        commit(repo.path(), n);
        made += u64::from(n);
        let instance = if round % 4 == 3 { "crash-b" } else { "crash-a" };
        let (reports, _) = stored(&database);
        let mut agent = spawn_agent(repo.path(), &database, &collector.endpoint(), instance);
        stored_more_than(&database, reports).await;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        agent.kill().unwrap();
        agent.wait().unwrap();
    }

    // One last run, stopped the way Kubernetes stops a pod.
    commit(repo.path(), 2);
    made += 2;
    let (reports, _) = stored(&database);
    let agent = spawn_agent(repo.path(), &database, &collector.endpoint(), "crash-a");
    stored_more_than(&database, reports).await;
    let term = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let exit = agent.wait_with_output().unwrap();
    assert_eq!(exit.status.code(), Some(0));

    let (reports, commits) = stored(&database);
    assert_eq!(commits, made, "the database counted every commit once");
    let counted = |m: &automation_testkit::Samples| {
        (
            total(m, "audit_agent_runs_total") as u64,
            total(m, "audit_agent_git_commits_detected_total") as u64,
            total(m, "audit_agent_run_duration_seconds_count") as u64,
        )
    };
    let want = (reports, commits, reports);
    let mut seen = counted(&collector.metrics().await);
    let patience = std::time::Instant::now() + Duration::from_secs(30);
    while seen != want && std::time::Instant::now() < patience {
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = counted(&collector.metrics().await);
    }
    assert_eq!(
        seen, want,
        "the collector's (runs, commits, durations) against the database's"
    );
    collector.stop().await;
}

/// The outbox batches waiting in `database`, as the agent sends them: the
/// database's outbox incarnation and the row id as the sequence.
fn outbox(database: &Path) -> Vec<v1::EventBatch> {
    use prost::Message;
    let conn =
        rusqlite::Connection::open_with_flags(database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let incarnation: i64 = conn
        .query_row("SELECT incarnation FROM outbox_source", [], |r| r.get(0))
        .unwrap();
    let mut stmt = conn
        .prepare("SELECT id, batch FROM outbox ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .unwrap()
        .map(|row| {
            let (id, blob) = row.unwrap();
            let mut batch = v1::EventBatch::decode(blob.as_slice()).unwrap();
            batch.source.as_mut().unwrap().incarnation = incarnation as u64;
            batch.sequence = id as u64;
            batch
        })
        .collect()
}

/// The worst moment for a crash: the collector applied a batch, and the
/// agent died before deleting it. The restarted agent (a new process, so a
/// new reporter incarnation) sends it again under the identity it was
/// stored with, and the collector answers a duplicate: counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_applied_before_the_crash_is_not_counted_again() {
    let collector =
        automation_testkit::TestCollector::start(automation_collector::Config::new("c")).await;
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q"]);
    commit(repo.path(), 4);
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("audit.db");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);

    // Stored while the collector cannot be reached, then killed.
    let mut agent = spawn_agent(repo.path(), &database, &nowhere, "crash-a");
    stored_more_than(&database, 0).await;
    agent.kill().unwrap();
    agent.wait().unwrap();
    let waiting = outbox(&database);
    assert!(!waiting.is_empty());

    // What the agent's push did just before it died.
    let mut client = collector.client().await;
    for batch in &waiting {
        let answer = client.push(batch.clone()).await.unwrap().into_inner();
        assert!(!answer.duplicate);
    }

    let agent = spawn_agent(repo.path(), &database, &collector.endpoint(), "crash-a");
    automation_testkit::within("the outbox resent", async {
        while outbox(&database)
            .first()
            .is_some_and(|b| b.sequence <= waiting.last().unwrap().sequence)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let term = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert_eq!(agent.wait_with_output().unwrap().status.code(), Some(0));

    let (reports, commits) = stored(&database);
    assert_eq!(commits, 4);
    let m = collector
        .eventually("every stored audit counted", |m| {
            total(m, "audit_agent_runs_total") as u64 == reports
        })
        .await;
    assert_eq!(total(&m, "audit_agent_git_commits_detected_total"), 4.0);
    assert!(
        m.value("collector_pushes_total", &[("code", "duplicate")]) >= waiting.len() as f64,
        "the resend was answered as a replay"
    );
    assert!(outbox(&database).is_empty(), "delivered and deleted");
    collector.stop().await;
}
