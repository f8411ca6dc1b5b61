//! The platform as separate processes, as on Kubernetes: each service its
//! own binary, reporting over gRPC. Killing one (SIGKILL) turns its
//! `automation_component_up` to 0 within three heartbeats while the others
//! stay 1; stopping one with SIGTERM marks it stopped, not down.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use automation_testkit::{Samples, http_get};
use common::{binary, free_port, repository, until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const HEARTBEAT: Duration = Duration::from_millis(300);

struct Process {
    name: &'static str,
    child: Child,
}

impl Process {
    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &'static str, grpc: u16, http: u16, env: &[(&str, String)]) -> Process {
    let child = Command::new(binary(name))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GRPC_LISTEN", format!("127.0.0.1:{grpc}"))
        .env("HTTP_LISTEN", format!("127.0.0.1:{http}"))
        // The collector's OTLP ports on any free port, so tests never collide.
        .env("OTLP_GRPC_LISTEN", "127.0.0.1:0")
        .env("OTLP_HTTP_LISTEN", "127.0.0.1:0")
        .env("INSTANCE", format!("{name}-1"))
        .env("HEARTBEAT_INTERVAL", format!("{}ms", HEARTBEAT.as_millis()))
        .env("SHUTDOWN_DELAY", "0s")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Process { name, child }
}

fn up(m: &Samples, component: &str) -> Option<f64> {
    m.get("automation_component_up", &[("component", component)])
}

fn stopped(m: &Samples, component: &str) -> Option<f64> {
    m.get("automation_component_stopped", &[("component", component)])
}

/// The collector's samples; none while it does not answer yet.
async fn metrics(addr: SocketAddr) -> Samples {
    if tokio::net::TcpStream::connect(addr).await.is_err() {
        return Samples::parse("");
    }
    let (_, text) = http_get(addr, "/metrics").await;
    Samples::parse(&text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_is_down_and_terminated_is_stopped() {
    let repo = repository();
    let ports: Vec<u16> = (0..8).map(|_| free_port()).collect();
    let collector_http: SocketAddr = format!("127.0.0.1:{}", ports[1]).parse().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", ports[0]);
    let root = repo.path().display().to_string();
    let _collector = spawn(
        "collector",
        ports[0],
        ports[1],
        &[("SWEEP_INTERVAL", "100ms".into())],
    );
    let reporting = |extra: &[(&'static str, String)]| {
        let mut env = vec![("COLLECTOR_ENDPOINT", endpoint.clone())];
        env.extend_from_slice(extra);
        env
    };
    let watcher = spawn(
        "test-watcher",
        ports[2],
        ports[3],
        &reporting(&[
            ("WATCH_ROOT", root.clone()),
            ("TEST_COMMAND", "sh run-tests.sh".into()),
        ]),
    );
    let audit = spawn(
        "audit-agent",
        ports[4],
        ports[5],
        &reporting(&[
            ("REPO_PATH", root.clone()),
            ("DATABASE_PATH", format!("{root}/.automation/audit.db")),
        ]),
    );
    let _gateway = spawn("api-gateway", ports[6], ports[7], &reporting(&[]));
    let components = ["test-watcher", "audit-agent", "api-gateway", "collector"];

    until("all four up", Duration::from_secs(60), async || {
        let m = metrics(collector_http).await;
        let ups: Vec<_> = components.iter().map(|c| up(&m, c)).collect();
        (ups.iter().all(|u| *u == Some(1.0)), ups)
    })
    .await;

    // SIGKILL: no goodbye, so down within three heartbeats (plus a sweep).
    audit.signal(Signal::SIGKILL);
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
    watcher.signal(Signal::SIGTERM);
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
    let mut watcher = watcher;
    let status = watcher.child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{} exits 0 after SIGTERM",
        watcher.name
    );
    drop(audit);
}
