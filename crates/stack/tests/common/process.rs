//! The `automation-stack` binary as a child process, on free ports, its
//! gateway pointed at a fake DeepSeek: for the tracing tests and benchmark,
//! which need the process-wide tracing setup of a real binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use automation_testkit::http_get;
use automation_testkit::upstream::FakeUpstream;

use super::{free_port, until};

/// The stack binary, killed when dropped.
pub struct StackProcess {
    child: Child,
    /// The DeepSeek key file and the log, outside the watched tree.
    files: tempfile::TempDir,
    pub gateway: SocketAddr,
    pub gateway_http: SocketAddr,
    pub collector: SocketAddr,
    pub collector_http: SocketAddr,
}

impl Drop for StackProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const LISTEN: [&str; 8] = [
    "COLLECTOR_GRPC_LISTEN",
    "COLLECTOR_HTTP_LISTEN",
    "WATCHER_GRPC_LISTEN",
    "WATCHER_HTTP_LISTEN",
    "AUDIT_GRPC_LISTEN",
    "AUDIT_HTTP_LISTEN",
    "GATEWAY_GRPC_LISTEN",
    "GATEWAY_HTTP_LISTEN",
];

impl StackProcess {
    /// Starts `binary` over `root` with `env` (JSON logs, see
    /// [`Self::log`]) and waits until the gateway is ready. The ports are
    /// free when picked but may be taken before the stack binds them (tests
    /// run side by side): a stack that exits while starting is started
    /// again on other ports.
    pub async fn start(
        binary: PathBuf,
        root: &Path,
        upstream: &FakeUpstream,
        env: &[(&str, &str)],
    ) -> Self {
        for _ in 0..3 {
            let mut stack = Self::spawn(&binary, root, upstream, env);
            let ready = stack.gateway_http;
            let started = until(
                "the gateway is ready",
                Duration::from_secs(60),
                async || {
                    if let Ok(Some(status)) = stack.child.try_wait() {
                        return (true, Some(status));
                    }
                    let up = tokio::net::TcpStream::connect(ready).await.is_ok()
                        && http_get(ready, "/ready").await.0 == 200;
                    (up, None)
                },
            )
            .await;
            match started {
                None => return stack,
                Some(status) => {
                    let log = stack.log();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    eprintln!(
                        "the stack exited while starting ({status}); again on other ports: {tail:?}"
                    );
                }
            }
        }
        panic!("the stack did not start in three tries");
    }

    fn spawn(binary: &Path, root: &Path, upstream: &FakeUpstream, env: &[(&str, &str)]) -> Self {
        let files = tempfile::tempdir().unwrap();
        let key = files.path().join("deepseek-key");
        std::fs::write(&key, "sk-stack\n").unwrap();
        let ports: Vec<SocketAddr> = (0..LISTEN.len())
            .map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap())
            .collect();
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("STACK_ROOT", root)
            .env("TEST_COMMAND", "sh run-tests.sh")
            .env("DEEPSEEK_BASE_URL", upstream.base_url())
            .env("DEEPSEEK_API_KEY_FILE", &key)
            .env("COLLECTOR_OTLP_GRPC_LISTEN", "off")
            .env("COLLECTOR_OTLP_HTTP_LISTEN", "off")
            .env("HEARTBEAT_INTERVAL", "200ms")
            .env("SHUTDOWN_DELAY", "0s")
            .env("LOG_FORMAT", "json")
            .envs(
                LISTEN
                    .iter()
                    .zip(&ports)
                    .map(|(name, addr)| (*name, addr.to_string())),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(files.path().join("stack.log")).unwrap());
        Self {
            child: command.spawn().unwrap(),
            files,
            collector: ports[0],
            collector_http: ports[1],
            gateway: ports[6],
            gateway_http: ports[7],
        }
    }

    /// What it has logged so far (stderr: JSON lines).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.files.path().join("stack.log")).unwrap()
    }
}
