//! Child processes that never outlive a test: [`Guarded`] kills its child
//! when dropped (a failed assertion included), and [`Service`] is one of the
//! workspace's service binaries on its own free loopback ports, its output
//! in a log file, that can be killed and started again on the same ports.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;

use super::{binary, free_port};

/// A free loopback port for a child to listen on, below the kernel's
/// ephemeral range when there is room there: a port picked by binding port
/// 0 is one the kernel may hand to an outgoing connection (the services
/// connect to each other as they start) before the child binds it, and one
/// below the range is never handed out that way. Checked free by binding it,
/// and never the same twice in one test binary; [`free_port`] after 200
/// taken tries.
pub fn listen_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOW: u16 = 10_000;
    if ephemeral_low <= LOW + 1_000 {
        return free_port();
    }
    for _ in 0..200 {
        let port = rand::random_range(LOW..ephemeral_low);
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && GIVEN
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(port)
        {
            return port;
        }
    }
    free_port()
}

/// A child process whose standard output and error go to a log file,
/// killed (SIGKILL) and reaped when dropped.
pub struct Guarded {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Guarded {
    /// Spawns `command` as `name`, appending its output to `log`.
    ///
    /// # Panics
    ///
    /// When the log cannot be opened or the program cannot be started.
    pub fn spawn(name: &str, command: &mut Command, log: &Path) -> Self {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let err = out.try_clone().expect("a second handle on the log");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({command:?}): {e}"));
        Self {
            name: name.to_owned(),
            child,
            log: log.to_path_buf(),
        }
    }

    /// Its name, as given to [`Self::spawn`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// How it ended, once it has; `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Asks it to stop (SIGTERM), as Kubernetes does.
    pub fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("a pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    }

    /// Waits until it has ended; how it did.
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("wait for the child")
    }

    /// Ends it with SIGKILL (no goodbye) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of the file at `path` (empty when unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A service binary of the workspace (`collector`, `test-watcher`,
/// `audit-agent`, `api-gateway`) as a child process: gRPC and HTTP on free
/// loopback ports picked once ([`listen_port`]; a restart binds the same
/// ones), the
/// collector's OTLP ports on any free port, instance `<name>-<instance>`, no
/// shutdown delay, an environment of `PATH` and these only, plus `env`. Its
/// output is appended to `<logs>/<name>.log`.
pub struct Service {
    pub name: &'static str,
    pub grpc: u16,
    pub http: u16,
    instance: String,
    env: Vec<(String, String)>,
    log: PathBuf,
    process: Option<Guarded>,
}

impl Service {
    /// The service, not started yet (see [`Self::start`]).
    pub fn new(name: &'static str, instance: &str, logs: &Path, env: &[(&str, String)]) -> Self {
        Self {
            name,
            grpc: listen_port(),
            http: listen_port(),
            instance: format!("{name}-{instance}"),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            log: logs.join(format!("{name}.log")),
            process: None,
        }
    }

    /// `http://127.0.0.1:<grpc port>`, what its clients are given.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    /// Starts it (again, after [`Self::kill`]).
    ///
    /// # Panics
    ///
    /// When it is running already, or its binary is missing.
    pub fn start(&mut self) {
        assert!(
            self.process.is_none(),
            "{} is started twice without being killed",
            self.name
        );
        let mut command = Command::new(binary(self.name));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GRPC_LISTEN", format!("127.0.0.1:{}", self.grpc))
            .env("HTTP_LISTEN", format!("127.0.0.1:{}", self.http))
            .env("OTLP_GRPC_LISTEN", "127.0.0.1:0")
            .env("OTLP_HTTP_LISTEN", "127.0.0.1:0")
            .env("INSTANCE", &self.instance)
            .env("SHUTDOWN_DELAY", "0s")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        self.process = Some(Guarded::spawn(self.name, &mut command, &self.log));
    }

    /// Kills it with SIGKILL: no goodbye to the collector.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Asks it to stop (SIGTERM), then waits until it has; how it ended.
    ///
    /// # Panics
    ///
    /// When it is not running.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut process = self.process.take().expect("a started service");
        process.terminate();
        process.wait()
    }

    /// How it ended, when it was started and has ended by itself.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.process.as_mut().and_then(Guarded::exited)
    }

    /// The last `lines` lines of its log (over every start).
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}
