//! `automationctl watcher`: a manual run seen live by `watch`, and the status.

use std::time::Duration;

use crate::services;
use crate::support::{Live, automationctl};

const SCRIPT: &str = "echo 'test a ... ok'\n\
    echo 'test b ... FAILED'\n\
    echo 'test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s'\n\
    exit 101\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_triggered_run_is_watched_live_and_shows_in_the_status() {
    let root = tempfile::tempdir().unwrap();
    let control = tempfile::tempdir().unwrap();
    let script = control.path().join("tests.sh");
    std::fs::write(&script, SCRIPT).unwrap();
    let watcher = services::test_watcher(root.path(), &format!("sh '{}'", script.display())).await;

    // With --include-last the run is seen whether the watch opens before or
    // after it finishes.
    let mut watch = Live::spawn(&[
        "watcher",
        "watch",
        "--include-last",
        "--watcher",
        &watcher.endpoint,
        "-o",
        "json",
    ]);
    let out = automationctl(&[
        "watcher",
        "run",
        "--reason",
        "cli",
        "--watcher",
        &watcher.endpoint,
    ])
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.starts_with("accepted"), "{out:?}");
    let line = watch
        .read_until(Duration::from_secs(30), |s| s.contains('\n'))
        .await;
    let run: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(run["trigger"], "cli");
    assert_eq!(run["result"], "failed");
    assert_eq!(run["tests_passed"], 1);
    assert_eq!(run["failed_tests"], serde_json::json!(["b"]));
    assert_eq!(run["exit_code"], 101);
    assert!(watch.running(), "watch keeps following");

    let out = automationctl(&["watcher", "status", "--watcher", &watcher.endpoint]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("runs finished    1"), "{}", out.stdout);
    assert!(out.stdout.contains("  failed: b"), "{}", out.stdout);
    let last = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("last run"))
        .unwrap()
        .trim();
    assert!(
        last.contains("run 1  failed  1 passed, 1 failed, 0 ignored") && last.ends_with("cli"),
        "{last}"
    );

    // Ctrl-C ends the watch quietly.
    let pid = watch.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::task::block_in_place(|| watch.child.wait()).unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}
