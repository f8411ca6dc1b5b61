//! The platform as separate processes, as on Kubernetes: each service its
//! own binary, reporting over gRPC. Killing one (SIGKILL) turns its
//! `automation_component_up` to 0 within three heartbeats while the others
//! stay 1; stopping one with SIGTERM marks it stopped, not down.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use automation_testkit::{Samples, try_http_get};
use common::services::Service;
use common::{repository, until};

const HEARTBEAT: Duration = Duration::from_millis(300);

fn up(m: &Samples, component: &str) -> Option<f64> {
    m.get("automation_component_up", &[("component", component)])
}

fn stopped(m: &Samples, component: &str) -> Option<f64> {
    m.get("automation_component_stopped", &[("component", component)])
}

/// The collector's samples; none while it does not answer yet.
async fn metrics(addr: SocketAddr) -> Samples {
    let text = try_http_get(addr, "/metrics").await.map(|(_, text)| text);
    Samples::parse(&text.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_is_down_and_terminated_is_stopped() {
    let repo = repository();
    let logs = tempfile::tempdir().unwrap();
    let root = repo.path().display().to_string();
    let heartbeat = ("HEARTBEAT_INTERVAL", format!("{}ms", HEARTBEAT.as_millis()));
    let mut collector = Service::new(
        "collector",
        "1",
        logs.path(),
        &[("SWEEP_INTERVAL", "100ms".into())],
    );
    let collector_http: SocketAddr = ([127, 0, 0, 1], collector.http).into();
    let reporting = |extra: &[(&'static str, String)]| {
        let mut env = vec![
            heartbeat.clone(),
            ("COLLECTOR_ENDPOINT", collector.endpoint()),
        ];
        env.extend_from_slice(extra);
        env
    };
    let mut watcher = Service::new(
        "test-watcher",
        "1",
        logs.path(),
        &reporting(&[
            ("WATCH_ROOT", root.clone()),
            ("TEST_COMMAND", "sh run-tests.sh".into()),
        ]),
    );
    let mut audit = Service::new(
        "audit-agent",
        "1",
        logs.path(),
        &reporting(&[
            ("REPO_PATH", root.clone()),
            ("DATABASE_PATH", format!("{root}/.automation/audit.db")),
        ]),
    );
    let mut gateway = Service::new("api-gateway", "1", logs.path(), &reporting(&[]));
    for service in [&mut collector, &mut watcher, &mut audit, &mut gateway] {
        service.start();
    }
    let components = ["test-watcher", "audit-agent", "api-gateway", "collector"];

    until("all four up", Duration::from_secs(60), async || {
        let m = metrics(collector_http).await;
        let ups: Vec<_> = components.iter().map(|c| up(&m, c)).collect();
        (ups.iter().all(|u| *u == Some(1.0)), ups)
    })
    .await;

    // SIGKILL: no goodbye, so down within three heartbeats (plus a sweep).
    audit.kill();
    let killed = Instant::now();
    let m = until(
        "the killed audit-agent down",
        Duration::from_secs(10),
        async || {
            let m = metrics(collector_http).await;
            (up(&m, "audit-agent") == Some(0.0), m)
        },
    )
    .await;
    let took = killed.elapsed();
    assert!(
        took <= HEARTBEAT * 3 + Duration::from_millis(1_500),
        "down after {took:?}"
    );
    assert_eq!(
        stopped(&m, "audit-agent"),
        Some(0.0),
        "killed is down, not stopped"
    );
    for component in ["test-watcher", "api-gateway", "collector"] {
        assert_eq!(up(&m, component), Some(1.0), "{component} stays up");
    }

    // SIGTERM: a goodbye, so stopped rather than down.
    let status = watcher.terminate();
    assert_eq!(status.code(), Some(0), "test-watcher exits 0 after SIGTERM");
    let m = until(
        "the terminated test-watcher stopped",
        Duration::from_secs(30),
        async || {
            let m = metrics(collector_http).await;
            (stopped(&m, "test-watcher") == Some(1.0), m)
        },
    )
    .await;
    assert_eq!(up(&m, "test-watcher"), Some(0.0));
    assert_eq!(up(&m, "api-gateway"), Some(1.0));
}
