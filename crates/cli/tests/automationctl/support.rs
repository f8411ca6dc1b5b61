//! Running the real `automationctl` binary, and real services in-process on
//! loopback ports chosen by the OS.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use automation_telemetry::serve::Listeners;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The longest any one run of the binary may take in a test.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// What a finished run printed, and its exit code.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {self:?}"))
    }
}

/// The binary, with a clean environment: no endpoint, token or format
/// variable of the person running the tests leaks in.
pub fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_automationctl"));
    for var in [
        "COLLECTOR_ENDPOINT",
        "COLLECTOR_METRICS_URL",
        "WATCHER_ENDPOINT",
        "AUDIT_ENDPOINT",
        "GATEWAY_ENDPOINT",
        "AUTOMATION_TOKEN",
        "AUTOMATIONCTL_TIMEOUT",
        "AUTOMATIONCTL_OUTPUT",
        "TLS_CA_FILE",
    ] {
        command.env_remove(var);
    }
    command.args(args).stdin(Stdio::null());
    command
}

/// Runs `command` to its end (killed after a minute), off the async workers
/// so in-process servers keep serving.
pub async fn run(mut command: Command) -> Outcome {
    tokio::task::spawn_blocking(move || {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("automationctl starts");
        let started = Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if started.elapsed() > RUN_LIMIT {
                let _ = child.kill();
                panic!("automationctl ran for over {RUN_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let output = child.wait_with_output().expect("output");
        Outcome {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    })
    .await
    .expect("the runner thread")
}

/// Runs the binary with `args`.
pub async fn automationctl(args: &[&str]) -> Outcome {
    run(command(args)).await
}

/// A running binary whose stdout is read line by line as it is written.
pub struct Live {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Live {
    pub fn spawn(args: &[&str]) -> Self {
        let mut child = command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("automationctl starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                // Partial lines count too: a streamed answer may not end one yet.
                let mut chunk = Vec::new();
                let available = match reader.fill_buf() {
                    Ok([]) | Err(_) => return,
                    Ok(bytes) => bytes.len(),
                };
                chunk.extend_from_slice(&reader.buffer()[..available]);
                reader.consume(available);
                if tx
                    .send(String::from_utf8_lossy(&chunk).into_owned())
                    .is_err()
                {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// Output until `until` holds for all of it (panics after `limit`).
    pub async fn read_until(&mut self, limit: Duration, until: impl Fn(&str) -> bool) -> String {
        let mut seen = String::new();
        let deadline = Instant::now() + limit;
        while !until(&seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            let received = tokio::task::block_in_place(|| self.lines.recv_timeout(left));
            match received {
                Ok(text) => seen.push_str(&text),
                Err(_) => panic!("no matching output within {limit:?}; so far: {seen:?}"),
            }
        }
        seen
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An address nothing listens on: port 1 (tcpmux) is privileged and
/// unused, where a port picked free and released may be taken meanwhile by
/// another test's server.
pub fn closed_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1))
}

/// Two fresh loopback listeners for a service.
pub async fn listeners() -> (Listeners, SocketAddr) {
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind gRPC");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP");
    let addr = grpc.local_addr().expect("addr");
    (Listeners { grpc, http }, addr)
}

/// A service task and the token that stops it.
pub struct Running {
    pub endpoint: String,
    pub addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Running {
    pub fn new(addr: SocketAddr, shutdown: CancellationToken) -> Self {
        Self {
            endpoint: format!("http://{addr}"),
            addr,
            shutdown,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A git repository in a temporary folder, made with the git CLI.
pub struct Repo {
    pub dir: tempfile::TempDir,
    commits: u32,
}

impl Repo {
    pub fn new() -> Self {
        let repo = Self {
            dir: tempfile::tempdir().expect("tempdir"),
            commits: 0,
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["config", "user.email", "cli@example.test"]);
        repo.git(&["config", "user.name", "CLI Test"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn git(&self, args: &[&str]) {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn write(&self, relative: &str, text: &str) {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    /// Adds `n` commits.
    pub fn commit(&mut self, n: u32) {
        for _ in 0..n {
            self.commits += 1;
            self.write("log.txt", &format!("change {}\n", self.commits));
            self.git(&["add", "-A"]);
            self.git(&["commit", "-q", "-m", &format!("change {}", self.commits)]);
        }
    }
}
