//! The test-watcher over real sockets and a real file system: files are
//! written in a temporary tree, the test command is a small script the test
//! writes (printing libtest output), results come back over `WatchRuns`, and
//! a real collector shows the metrics.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use automation_proto::v1::test_watcher_client::TestWatcherClient;
use automation_proto::v1::{self, RunResult, RunSummary};
use automation_telemetry::reporter::ReporterConfig;
use automation_test_watcher::engine::OnBusy;
use automation_test_watcher::{Config, Handles, start};
use automation_testkit::service::{self, Service};
use automation_testkit::{TestCollector, within};
use support::{Served, serve};
use tonic::Streaming;
use tonic::transport::Channel;

const SCRIPT: &str = r#"#!/bin/sh
echo run >> "$CONTROL/runs"
mode=$(cat "$CONTROL/mode")
case "$mode" in
  pass)
    echo "running 4 tests"
    echo "test a ... ok"
    echo "test b ... ok"
    echo "test c ... ok"
    echo "test d ... ignored"
    echo "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s"
    exit 0 ;;
  fail)
    echo "running 3 tests"
    echo "test parser::handles_empty ... FAILED"
    echo "test parser::ok ... ok"
    echo "test net::timeouts ... FAILED"
    echo "failures:"
    echo "    net::timeouts"
    echo "    parser::handles_empty"
    echo "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.02s"
    exit 101 ;;
  slow)
    sleep 2
    echo "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 2.00s"
    exit 0 ;;
  hang)
    sleep 1000 ;;
esac
"#;

struct Watcher {
    root: tempfile::TempDir,
    control: tempfile::TempDir,
    client: TestWatcherClient<Channel>,
    runs: Streaming<RunSummary>,
    health: automation_health::HealthChecker,
    service: Service<Handles, automation_test_watcher::Error>,
}

impl Watcher {
    async fn start(collector: Option<&TestCollector>, tune: impl FnOnce(&mut Config)) -> Self {
        let root = tempfile::tempdir().unwrap();
        let control = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("src")).unwrap();
        std::fs::write(root.path().join(".gitignore"), "*.log\n").unwrap();
        std::fs::write(control.path().join("script.sh"), SCRIPT).unwrap();
        std::fs::write(control.path().join("mode"), "pass").unwrap();
        let mut config = Config::new("tw-test", root.path().to_path_buf());
        config.engine.command =
            format!("CONTROL='{0}' sh '{0}/script.sh'", control.path().display());
        config.service.shutdown_delay = Duration::ZERO;
        config.engine.kill_grace = Duration::from_millis(200);
        config.service.reporter = collector.map(|c| c.reporter("test-watcher", "tw-test"));
        tune(&mut config);
        let Served {
            service,
            client,
            runs,
        } = serve(config).await;
        Self {
            root,
            control,
            client,
            runs,
            health: service.handles.health.clone(),
            service,
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.path().join(relative)
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn mode(&self, mode: &str) {
        std::fs::write(self.control.path().join("mode"), mode).unwrap();
    }

    fn started_runs(&self) -> usize {
        std::fs::read_to_string(self.control.path().join("runs"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// Asks for a run over gRPC.
    async fn trigger(&mut self, reason: &str) -> v1::TriggerRunResponse {
        self.client
            .trigger_run(v1::TriggerRunRequest {
                reason: reason.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits until the command has started `n` times.
    async fn wait_started(&self, n: usize) {
        within("run started", async {
            while self.started_runs() < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    async fn next_run(&mut self) -> RunSummary {
        within("a run result", self.runs.message())
            .await
            .unwrap()
            .expect("the run stream stays open")
    }

    /// No run result arrives within `quiet`.
    async fn no_run_within(&mut self, quiet: Duration) {
        if let Ok(result) = tokio::time::timeout(quiet, self.runs.message()).await {
            panic!("unexpected run: {result:?}");
        }
    }

    async fn stop(self) {
        self.service
            .stop()
            .await
            .expect("the test-watcher stops cleanly");
    }
}

fn relative_paths(summary: &RunSummary) -> Vec<&str> {
    summary.changed_paths.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn one_save_makes_one_run_and_a_burst_makes_one_more() {
    let mut w = Watcher::start(None, |_| {}).await;
    w.write("src/lib.rs", "pub fn a() {}");
    let run = w.next_run().await;
    assert_eq!(run.result, RunResult::Passed as i32);
    assert_eq!(
        (run.tests_passed, run.tests_failed, run.tests_ignored),
        (3, 0, 1)
    );
    assert_eq!(run.trigger, "change");
    assert_eq!(relative_paths(&run), vec!["src/lib.rs"]);
    assert_eq!(run.exit_code, Some(0));
    w.no_run_within(Duration::from_millis(700)).await;

    for i in 0..5 {
        w.write(&format!("src/m{i}.rs"), "// burst");
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let run = w.next_run().await;
    assert_eq!(run.changed_paths.len(), 5, "{:?}", run.changed_paths);
    w.no_run_within(Duration::from_millis(700)).await;
    assert_eq!(w.started_runs(), 2);

    let status = w
        .client
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.runs_finished, 2);
    assert_eq!(status.phase, v1::WatcherPhase::Idle as i32);
    assert_eq!(status.last_run.unwrap().run_id, run.run_id);
    w.stop().await;
}

#[tokio::test]
async fn ignored_paths_never_trigger_a_run() {
    let mut w = Watcher::start(None, |_| {}).await;
    w.write("target/debug/build.rs", "x");
    w.write(".automation/audit-agent.db", "x");
    w.write("debug.log", "x");
    w.write("sub/target/out", "x");
    w.no_run_within(Duration::from_millis(800)).await;
    assert_eq!(w.started_runs(), 0);
    // The watch is alive: a file that matters still triggers.
    w.write("src/new_dir/mod.rs", "x");
    let run = w.next_run().await;
    assert!(
        relative_paths(&run).contains(&"src/new_dir/mod.rs"),
        "{:?}",
        run.changed_paths
    );
    w.stop().await;
}

#[tokio::test]
async fn failures_timeouts_and_unstartable_commands_are_told_apart() {
    let mut w = Watcher::start(None, |c| c.engine.timeout = Duration::from_millis(500)).await;
    w.mode("fail");
    w.write("src/lib.rs", "1");
    let run = w.next_run().await;
    assert_eq!(run.result, RunResult::Failed as i32);
    assert_eq!((run.tests_passed, run.tests_failed), (1, 2));
    assert_eq!(
        run.failed_tests,
        vec!["parser::handles_empty", "net::timeouts"]
    );
    assert_eq!(run.exit_code, Some(101));

    w.mode("hang");
    w.write("src/lib.rs", "2");
    let run = w.next_run().await;
    assert_eq!(run.result, RunResult::Timeout as i32);
    assert!(run.duration_seconds < 5.0, "{}", run.duration_seconds);
    w.stop().await;

    let mut w = Watcher::start(None, |c| {
        c.engine.command = "/nonexistent/test-runner".into()
    })
    .await;
    w.write("src/lib.rs", "3");
    let run = w.next_run().await;
    assert_eq!(run.result, RunResult::Error as i32);
    assert!(!run.error.is_empty());
    w.stop().await;
}

#[tokio::test]
async fn on_busy_restart_cancels_and_queue_reruns_once() {
    let mut w = Watcher::start(None, |c| c.engine.on_busy = OnBusy::Restart).await;
    w.mode("hang");
    let started = w.trigger("first").await;
    assert!(started.accepted);
    w.wait_started(1).await;
    w.mode("pass");
    let restart = w.trigger("second").await;
    assert!(restart.accepted, "{}", restart.message);
    let first = w.next_run().await;
    assert_eq!(first.result, RunResult::Cancelled as i32);
    assert_eq!(first.trigger, "first");
    let second = w.next_run().await;
    assert_eq!(second.result, RunResult::Passed as i32);
    assert_eq!(second.trigger, "second");
    w.stop().await;

    let mut w = Watcher::start(None, |c| c.engine.on_busy = OnBusy::Queue).await;
    w.mode("slow");
    w.trigger("").await;
    w.wait_started(1).await;
    w.mode("pass");
    w.write("src/a.rs", "a");
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.write("src/b.rs", "b");
    let status = within("queued", async {
        loop {
            let s = w
                .client
                .get_status(v1::GetStatusRequest {})
                .await
                .unwrap()
                .into_inner();
            if s.rerun_queued {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(status.phase, v1::WatcherPhase::Running as i32);
    let first = w.next_run().await;
    assert_eq!(first.result, RunResult::Passed as i32);
    let rerun = w.next_run().await;
    assert_eq!(
        rerun.changed_paths.len(),
        2,
        "both changes in one rerun: {:?}",
        rerun.changed_paths
    );
    w.no_run_within(Duration::from_millis(600)).await;
    assert_eq!(w.started_runs(), 2);
    w.stop().await;
}

#[tokio::test]
async fn junit_results_are_read_when_configured() {
    let control = tempfile::tempdir().unwrap();
    let junit = control.path().join("junit.xml");
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="3" failures="1" errors="0" uuid="1" timestamp="2026-11-27T00:00:00Z" time="0.1">
  <testsuite name="demo" tests="3" disabled="0" errors="0" failures="1">
    <testcase name="tests::good" classname="demo" timestamp="2026-11-27T00:00:00Z" time="0.01"/>
    <testcase name="tests::bad" classname="demo" timestamp="2026-11-27T00:00:00Z" time="0.01"><failure type="test failure">boom</failure></testcase>
    <testcase name="tests::later" classname="demo" timestamp="2026-11-27T00:00:00Z" time="0.0"><skipped/></testcase>
  </testsuite>
</testsuites>"#;
    std::fs::write(control.path().join("junit.src"), xml).unwrap();
    let command = format!(
        "cp '{0}/junit.src' '{0}/junit.xml'; exit 100",
        control.path().display()
    );
    let mut w = Watcher::start(None, |c| {
        c.engine.command = command;
        c.engine.junit = Some(junit.clone());
    })
    .await;
    w.write("src/lib.rs", "x");
    let run = w.next_run().await;
    assert_eq!(run.result, RunResult::Failed as i32);
    assert_eq!(
        (run.tests_passed, run.tests_failed, run.tests_ignored),
        (1, 1, 1)
    );
    assert_eq!(run.failed_tests.len(), 1);
    assert!(
        run.failed_tests[0].contains("tests::bad"),
        "{:?}",
        run.failed_tests
    );
    w.stop().await;
}

#[tokio::test]
async fn the_collector_shows_the_runs() {
    let collector = TestCollector::start(automation_collector::Config::new("c")).await;
    let mut w = Watcher::start(Some(&collector), |_| {}).await;
    w.write("src/lib.rs", "1");
    w.next_run().await;
    w.mode("fail");
    w.write("src/lib.rs", "2");
    w.next_run().await;
    let tw = |extra: (&'static str, &'static str)| {
        vec![
            ("component", "test-watcher"),
            ("component_instance", "tw-test"),
            extra,
        ]
    };
    let m = within("metrics", async {
        loop {
            let m = collector.metrics().await;
            if m.get("test_watcher_runs_total", &tw(("result", "failed"))) == Some(1.0) {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(
        m.value("test_watcher_runs_total", &tw(("result", "passed"))),
        1.0
    );
    assert_eq!(
        m.value("test_watcher_tests_run_total", &tw(("outcome", "passed"))),
        4.0
    );
    assert_eq!(
        m.value("test_watcher_tests_run_total", &tw(("outcome", "failed"))),
        2.0
    );
    assert_eq!(
        m.value("test_watcher_tests_run_total", &tw(("outcome", "ignored"))),
        1.0
    );
    assert_eq!(
        m.value(
            "test_watcher_test_execution_duration_seconds_count",
            &tw(("component", "test-watcher"))
        ),
        2.0
    );
    assert_eq!(
        m.value(
            "test_watcher_files_processed_total",
            &tw(("component", "test-watcher"))
        ),
        2.0
    );
    assert_eq!(
        m.value(
            "test_watcher_debounce_duration_seconds_count",
            &tw(("component", "test-watcher"))
        ),
        2.0
    );
    assert!(
        m.value(
            "test_watcher_last_run_timestamp_seconds",
            &tw(("component", "test-watcher"))
        ) > 1.7e9
    );
    assert_eq!(
        m.value(
            "automation_component_up",
            &tw(("component", "test-watcher"))
        ),
        1.0
    );
    // The watch callback crossed the async bridge for each change.
    assert!(
        m.value(
            "safe_async_bridge_calls_total",
            &tw(("direction", "to_async"))
        ) >= 2.0
    );
    w.stop().await;
    let m = collector.metrics().await;
    assert_eq!(
        m.value(
            "automation_component_stopped",
            &tw(("component", "test-watcher"))
        ),
        1.0
    );
}

#[tokio::test]
async fn a_real_cargo_test_on_a_tiny_crate() {
    let target = tempfile::tempdir().unwrap();
    let target_dir = target.path().to_path_buf();
    let mut w = Watcher::start(None, |c| {
        let root = &c.engine.root;
        std::fs::write(
            root.join("Cargo.toml"),
            "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
        )
        .unwrap();
        std::fs::write(
            root.join("src/lib.rs"),
            "pub fn add(a: u32, b: u32) -> u32 { a + b }\n\
             #[cfg(test)]\nmod tests {\n\
             #[test] fn adds() { assert_eq!(super::add(2, 2), 4); }\n\
             #[test] fn wrong() { assert_eq!(super::add(2, 2), 5); }\n\
             #[test] #[ignore] fn slow() {}\n}\n",
        )
        .unwrap();
        c.engine.command = format!(
            "CARGO_TARGET_DIR='{}' cargo test --offline",
            target_dir.display()
        );
        c.engine.timeout = Duration::from_secs(240);
    })
    .await;
    let answer = w.trigger("").await;
    assert!(answer.accepted);
    let run = tokio::time::timeout(Duration::from_secs(300), w.runs.message())
        .await
        .expect("cargo test finishes")
        .unwrap()
        .unwrap();
    assert_eq!(run.trigger, "manual");
    assert_eq!(run.result, RunResult::Failed as i32, "{}", run.output_tail);
    assert_eq!(
        (run.tests_passed, run.tests_failed, run.tests_ignored),
        (1, 1, 1),
        "{}",
        run.output_tail
    );
    assert_eq!(run.failed_tests, vec!["tests::wrong"]);
    assert!(run.peak_rss_bytes > 0);
    w.stop().await;
}

#[tokio::test]
async fn the_polling_watcher_sees_changes_too() {
    let mut w = Watcher::start(None, |c| c.poll = Some(Duration::from_millis(100))).await;
    w.write("src/lib.rs", "polled");
    let run = w.next_run().await;
    assert_eq!(relative_paths(&run), vec!["src/lib.rs"]);
    w.no_run_within(Duration::from_millis(500)).await;
    w.stop().await;
}

#[tokio::test]
async fn a_missing_collector_shows_as_degraded_not_unready() {
    // A port nothing listens on (port 1: privileged and unused, never
    // taken meanwhile by another test's server).
    let dead = "127.0.0.1:1";
    let root = tempfile::tempdir().unwrap();
    let mut config = Config::new("tw-degraded", root.path().to_path_buf());
    config.service.shutdown_delay = Duration::ZERO;
    let mut rc = ReporterConfig::new(format!("http://{dead}"), "test-watcher", "tw-degraded", "1");
    rc.heartbeat_interval = Duration::from_millis(100);
    config.service.reporter = Some(rc);
    let service = service::start(|listeners, shutdown| start(config, listeners, shutdown))
        .await
        .expect("the test-watcher starts");
    let (handles, admin) = (&service.handles, service.http);
    within("ready", handles.health.wait_ready()).await;
    let body = within("degraded", async {
        loop {
            handles.health.check_now().await;
            let (status, body) = automation_testkit::http_get(admin, "/ready").await;
            assert_eq!(
                status, 200,
                "a dead collector must not make the watcher unready: {body}"
            );
            if body.contains("\"degraded\"") {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["components"]["collector"]["status"], "degraded");
    assert!(report["components"]["collector"]["last_error"].is_string());
    assert_eq!(report["components"]["watch"]["status"], "ok");
    service::stop(service).await.unwrap();
}

#[tokio::test]
async fn a_root_that_is_not_a_directory_is_an_error() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let config = Config::new("tw", file.path().to_path_buf());
    let error = service::start(|listeners, shutdown| start(config, listeners, shutdown))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not a directory"), "{error}");
}

#[tokio::test]
async fn on_busy_ignore_drops_requests_during_a_run() {
    let mut w = Watcher::start(None, |c| c.engine.on_busy = OnBusy::Ignore).await;
    w.mode("slow");
    w.trigger("").await;
    w.wait_started(1).await;
    let dropped = w.trigger("").await;
    assert!(!dropped.accepted, "{}", dropped.message);
    w.write("src/during.rs", "x");
    let run = w.next_run().await;
    assert_eq!(run.result, RunResult::Passed as i32);
    w.no_run_within(Duration::from_millis(800)).await;
    assert_eq!(w.started_runs(), 1);
    w.stop().await;
}

/// git-sync publishes each checkout by swapping a symbolic link to it and
/// deleting the previous one: the watcher follows the link, watching and
/// running the tests in whatever checkout it leads to.
#[tokio::test]
async fn a_checkout_swapped_under_a_linked_root_is_followed() {
    follow_a_checkout_swap(None).await;
}

/// The same with the polling watcher, as the Kubernetes manifests run it.
#[tokio::test]
async fn a_checkout_swap_is_followed_when_polling_too() {
    follow_a_checkout_swap(Some(Duration::from_millis(100))).await;
}

async fn follow_a_checkout_swap(poll: Option<Duration>) {
    let sync = tempfile::tempdir().unwrap();
    let seen = tempfile::tempdir().unwrap();
    let cwds = seen.path().join("cwds");
    let checkout = |name: &str| {
        let dir = sync.path().join(".worktrees").join(name);
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("src/lib.rs"), name).unwrap();
        dir
    };
    let link = sync.path().join("repo");
    std::os::unix::fs::symlink(checkout("one"), &link).unwrap();
    let mut w = Watcher::start(None, |c| {
        c.engine.root = link.clone();
        c.poll = poll;
        c.engine.command = format!("pwd -P >> '{}'; {}", cwds.display(), c.engine.command);
    })
    .await;
    let last_cwd = || {
        let text = std::fs::read_to_string(&cwds).unwrap_or_default();
        text.lines().last().unwrap_or_default().to_owned()
    };

    // New files, not edits: the polling watcher compares modification
    // times in whole seconds, so an edit within the second it last looked
    // would go unseen. A file at the top shows the root itself is watched.
    std::fs::write(link.join("top.rs"), "one").unwrap();
    let run = w.next_run().await;
    assert_eq!(relative_paths(&run), vec!["top.rs"]);
    assert!(last_cwd().ends_with(".worktrees/one"), "{}", last_cwd());

    // The swap as git-sync does it: a new link renamed over the old one,
    // then the old checkout deleted.
    let two = checkout("two");
    let swapping = sync.path().join("repo.tmp");
    std::os::unix::fs::symlink(&two, &swapping).unwrap();
    std::fs::rename(&swapping, &link).unwrap();
    std::fs::remove_dir_all(sync.path().join(".worktrees/one")).unwrap();

    let mut triggers = Vec::new();
    while !triggers.contains(&"checkout".to_owned()) {
        let run = w.next_run().await;
        assert_eq!(run.result, RunResult::Passed as i32, "{run:?}");
        triggers.push(run.trigger);
    }
    assert!(last_cwd().ends_with(".worktrees/two"), "{}", last_cwd());

    // The new checkout is watched: a change there makes a run, named
    // relative to the root as configured.
    std::fs::write(link.join("src/new.rs"), "two").unwrap();
    std::fs::write(link.join("top.rs"), "two").unwrap();
    let mut changed = Vec::new();
    while !(changed.contains(&"src/new.rs".to_owned()) && changed.contains(&"top.rs".to_owned())) {
        let run = w.next_run().await;
        assert_eq!(run.result, RunResult::Passed as i32, "{run:?}");
        if run.trigger == "change" {
            changed.extend(run.changed_paths);
        }
    }
    assert!(last_cwd().ends_with(".worktrees/two"), "{}", last_cwd());
    let status = w
        .client
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.watch_root, link.display().to_string());
    w.stop().await;
}

/// WATCH_ROOT deleted and made again at the same path (a volume filled
/// again, a checkout cloned again in place; ext4 even gives the new
/// directory the old one's inode): the watch follows the new directory, and
/// the service is never ready while nothing is watched.
#[tokio::test]
async fn a_root_deleted_and_made_again_is_watched_again() {
    root_made_again(None).await;
}

/// The same with the polling watcher, as the Kubernetes manifests run it.
#[tokio::test]
async fn a_root_made_again_is_watched_again_when_polling_too() {
    root_made_again(Some(Duration::from_millis(100))).await;
}

async fn root_made_again(poll: Option<Duration>) {
    let mut w = Watcher::start(None, |c| c.poll = poll).await;
    w.write("src/a.rs", "1");
    let run = w.next_run().await;
    assert_eq!(relative_paths(&run), vec!["src/a.rs"]);

    std::fs::remove_dir_all(w.root.path()).unwrap();
    w.health.check_now().await;
    assert!(!w.health.is_ready(), "{:?}", w.health.report());
    std::fs::create_dir_all(w.path("src")).unwrap();

    // Ready again only once the new directory is watched, so a save made
    // as soon as it is ready runs the tests.
    within("ready again", async {
        loop {
            w.health.check_now().await;
            if w.health.is_ready() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    w.write("src/b.rs", "2");
    loop {
        let run = w.next_run().await;
        assert_eq!(run.result, RunResult::Passed as i32, "{run:?}");
        if run.trigger == "change" && relative_paths(&run).contains(&"src/b.rs") {
            break;
        }
    }
    w.stop().await;
}
