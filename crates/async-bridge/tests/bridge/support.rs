//! What the tests share: a deadline for each test body, runtimes, a
//! recording observer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use automation_async_bridge::{Bridge, CallRecord, Direction, Observer, Outcome};
use tokio::runtime::Runtime;

/// How long a test body may take before it counts as hung.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// The timeout of calls meant to succeed: far longer than they take.
pub const LONG: Duration = Duration::from_secs(10);
/// The timeout of calls meant to time out.
pub const SHORT: Duration = Duration::from_millis(100);

/// Runs `body` on a thread of its own and returns its value; a body still
/// running after [`DEADLINE`] (a deadlock) fails the test, and a body that
/// panics fails it with its own panic.
pub fn within<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = sender.send(body());
    });
    match receiver.recv_timeout(DEADLINE) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the body ended without a value or a panic"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("hung: the test body did not finish within {DEADLINE:?}")
        }
    }
}

/// Polls `check` until it holds; fails the test after [`DEADLINE`].
pub fn until(what: &str, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < DEADLINE, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime")
}

pub fn multi_thread(workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("multi-thread runtime")
}

/// Keeps every call record.
#[derive(Default)]
pub struct Recording(Mutex<Vec<CallRecord>>);

impl Observer for Recording {
    fn on_call(&self, call: &CallRecord) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(*call);
    }
}

impl Recording {
    pub fn records(&self) -> Vec<CallRecord> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn outcomes(&self) -> Vec<(Direction, Outcome)> {
        self.records()
            .iter()
            .map(|r| (r.direction, r.outcome))
            .collect()
    }
}

/// A bridge on its own runtime, and what it records.
pub fn recorded() -> (Bridge, Arc<Recording>) {
    let recording = Arc::new(Recording::default());
    let bridge = Bridge::builder()
        .observer(Arc::clone(&recording))
        .build()
        .expect("bridge");
    (bridge, recording)
}

/// Set when the value holding it is dropped: shows that cancelled work is gone.
#[derive(Clone, Default)]
pub struct DropFlag(Arc<AtomicBool>);

impl DropFlag {
    pub fn dropped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// A value that sets the flag when dropped.
    pub fn guard(&self) -> impl Send + 'static {
        struct SetOnDrop(Arc<AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        SetOnDrop(Arc::clone(&self.0))
    }
}

/// Blocking work that runs until the test opens the gate.
pub struct Gate {
    open: mpsc::Sender<()>,
    wait: Option<mpsc::Receiver<()>>,
}

impl Gate {
    pub fn new() -> Self {
        let (open, wait) = mpsc::channel();
        Self {
            open,
            wait: Some(wait),
        }
    }

    /// The work: waits (at most [`DEADLINE`]) for the gate; true when it opened.
    pub fn work(&mut self) -> impl FnOnce() -> bool + Send + 'static {
        let wait = self.wait.take().expect("one piece of work per gate");
        move || wait.recv_timeout(DEADLINE).is_ok()
    }

    pub fn open(&self) {
        self.open.send(()).expect("the work still waits");
    }
}
