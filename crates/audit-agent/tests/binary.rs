//! The `audit-agent` binary as an operator runs it: bad configuration, and
//! the database backup and restore commands.

use std::path::Path;
use std::process::{Command, Output};

use automation_audit_agent::{Config, run};
use automation_proto::v1::audit_agent_client::AuditAgentClient;
use automation_proto::v1::{self, AuditReport};
use automation_telemetry::serve::Listeners;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
        let out = Command::new(BIN)
            .env(var, value)
            .env("GRPC_LISTEN", "127.0.0.1:0")
            .env("HTTP_LISTEN", "127.0.0.1:0")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(64),
            "{var}={value}: {}",
            stderr(&out)
        );
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "{var}: {err}");
        assert!(err.contains(mentions), "{var}: {err}");
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
    config.shutdown_delay = std::time::Duration::ZERO;
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(
        config,
        Listeners { grpc, http },
        shutdown.clone(),
        None,
    ));
    let mut client = loop {
        match AuditAgentClient::connect(format!("http://{addr}")).await {
            Ok(client) => break client,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
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
    shutdown.cancel();
    task.await.unwrap().unwrap();
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
    let out = agent(&["restore", "--from", bk, "--database-path", db]);
    assert!(out.status.success(), "{}", stderr(&out));
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
