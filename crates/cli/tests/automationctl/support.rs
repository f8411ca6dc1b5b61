//! Running the real `automationctl` binary, and real services in-process on
//! loopback ports chosen by the OS.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use automation_testkit::git::Repo;
use automation_testkit::service::Service;

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

/// A service started for a test, stopped when dropped.
pub struct Running {
    pub endpoint: String,
    pub addr: SocketAddr,
    _service: Box<dyn std::any::Any + Send>,
}

impl Running {
    /// Keeps `service` running as long as this lives.
    pub fn of<H: Send + 'static, E: std::fmt::Debug + Send + 'static>(
        service: Service<H, E>,
    ) -> Self {
        Self {
            endpoint: service.endpoint(),
            addr: service.grpc,
            _service: Box::new(service),
        }
    }
}
