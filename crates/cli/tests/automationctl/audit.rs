//! `automationctl audit`: audits of a real git repository (git CLI) by an
//! in-process audit-agent, the stored history, and bearer-token auth.

use automation_telemetry::auth::BearerAuth;

use crate::services;
use crate::support::{Repo, automationctl, command, run};

const PLAN: &str = "# Plan\n\n- [x] parser\n- [x] lexer\n- [ ] printer\n";

#[tokio::test(flavor = "multi_thread")]
async fn an_audit_run_and_the_history_as_json() {
    let mut repo = Repo::new();
    repo.write("PLAN.md", PLAN);
    repo.commit(3);
    let db = tempfile::tempdir().unwrap();
    let agent = services::audit_agent(
        repo.path(),
        &db.path().join("audit.db"),
        BearerAuth::disabled(),
    )
    .await;

    let out = automationctl(&[
        "audit",
        "run",
        "--reason",
        "cli",
        "--audit",
        &agent.endpoint,
    ])
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let field = |name: &str| -> String {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {name:?} in\n{}", out.stdout))
    };
    assert_eq!(field("report "), "1");
    assert_eq!(field("result "), "ok");
    assert_eq!(field("reason "), "cli");
    assert_eq!(field("branch "), "main");
    assert_eq!(field("new commits "), "3");
    assert_eq!(field("tasks "), "2 done, 0 in progress, 1 planned");

    repo.commit(2);
    let second = automationctl(&["audit", "run", "--audit", &agent.endpoint]).await;
    assert_eq!(second.code, Some(0), "{second:?}");

    let out = automationctl(&["audit", "history", "--audit", &agent.endpoint, "-o", "json"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let history = out.json();
    assert_eq!(history["total"], 2);
    assert_eq!(history["next_page_token"], "");
    let reports = history["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["id"], 2, "newest first");
    assert_eq!(reports[0]["new_commits"], 2);
    assert_eq!(reports[1]["new_commits"], 3);
    assert_eq!(reports[1]["reason"], "cli");
    assert_eq!(reports[1]["result"], "ok");
    assert_eq!(reports[1]["tasks"]["done"], 2);
    assert_eq!(reports[1]["tasks"]["planned"], 1);
    assert!(reports[1]["started_at"].as_str().unwrap().ends_with('Z'));

    // One per page: the token leads to the older report.
    let out = automationctl(&[
        "audit",
        "history",
        "--limit",
        "1",
        "--audit",
        &agent.endpoint,
    ])
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let token = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("next page: --page-token "))
        .unwrap_or_else(|| panic!("no next page in\n{}", out.stdout))
        .to_owned();
    assert!(out.stdout.contains("1 of 2 reports"), "{}", out.stdout);
    let out = automationctl(&[
        "audit",
        "history",
        "--limit",
        "1",
        "--page-token",
        &token,
        "--audit",
        &agent.endpoint,
        "-o",
        "json",
    ])
    .await;
    assert_eq!(out.json()["reports"][0]["id"], 1, "{out:?}");

    // The latest report with its documents.
    let out = automationctl(&["audit", "report", "--documents", "--audit", &agent.endpoint]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.starts_with("report       2\n"), "{}", out.stdout);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["PLAN.md", "2", "0", "1"]),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_token_is_unauthenticated_and_a_good_one_from_the_environment_gets_in() {
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "right-token\n").unwrap();
    let auth = BearerAuth::from_file(Some(&tokens)).unwrap();
    let agent = services::audit_agent(repo.path(), &dir.path().join("audit.db"), auth).await;

    let out = automationctl(&[
        "--token",
        "wrong-token",
        "--audit",
        &agent.endpoint,
        "audit",
        "history",
    ])
    .await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(
        out.stderr,
        format!(
            "automationctl: audit-agent at {}: Unauthenticated: bearer token not accepted\n",
            agent.addr
        )
    );
    assert!(out.stdout.is_empty(), "{out:?}");

    let out = automationctl(&["--audit", &agent.endpoint, "audit", "history"]).await;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .ends_with("Unauthenticated: missing bearer token\n"),
        "{out:?}"
    );

    let mut with_env = command(&["--audit", &agent.endpoint, "audit", "history", "-o", "json"]);
    with_env.env("AUTOMATION_TOKEN", "right-token");
    let out = run(with_env).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.json()["total"], 0);

    // Health is never behind auth: status works without the token.
    let out = automationctl(&["--audit", &agent.endpoint, "status", "-o", "json"]).await;
    assert_eq!(out.json()["services"][2]["readiness"], "SERVING", "{out:?}");
}
