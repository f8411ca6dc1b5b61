//! The [`Bridge`] handle, how it is built, and the accounting every call
//! goes through. The two directions live in `bridge/to_async.rs` and
//! `bridge/to_blocking.rs`.

mod to_async;
mod to_blocking;

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use tokio::runtime::{Handle, RuntimeFlavor};

use crate::error::{BridgeError, BuildError};
use crate::observer::{CallRecord, Direction, Observer, Outcome};
use crate::runtime::{Executor, OwnRuntime};
use crate::stats::{Gauges, Stats};

/// The safe crossing between sync and async code. Cheap to clone; clones
/// share the runtime, the counters and the observer.
///
/// * [`run_async`](Self::run_async) / [`try_run_async`](Self::try_run_async):
///   sync code runs a future and waits for it, at most a timeout.
/// * [`run_blocking`](Self::run_blocking) / [`try_run_blocking`](Self::try_run_blocking):
///   async code runs blocking work on the blocking pool, at most a timeout.
///
/// When the last clone is dropped, the bridge's own runtime (if it started
/// one) is shut down in the background; futures still on it are dropped.
#[derive(Clone)]
pub struct Bridge {
    inner: Arc<Inner>,
}

struct Inner {
    executor: Executor,
    gauges: Gauges,
    observer: Arc<dyn Observer>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.executor.stop(self.gauges.counters());
    }
}

impl Bridge {
    /// A bridge on its own runtime (started on first use), watched by no one.
    pub fn new() -> Self {
        let builder = Self::builder();
        let executor = builder.own_runtime();
        builder.assemble(executor)
    }

    /// A bridge that runs futures on `handle`'s runtime, watched by no one.
    ///
    /// The runtime must be multi-thread: a current-thread handle is refused.
    /// It may be the very runtime the callers run on, all of its workers
    /// waiting in bridge calls included: a waiting worker hands its other
    /// tasks to a fresh thread first.
    pub fn with_handle(handle: Handle) -> Result<Self, BuildError> {
        Self::builder().handle(handle).build()
    }

    /// Configures a bridge.
    pub fn builder() -> BridgeBuilder {
        BridgeBuilder::default()
    }

    /// Work started through the bridge and not yet ended (timed-out blocking
    /// work that still runs included).
    pub fn pending(&self) -> u64 {
        self.inner.gauges.pending()
    }

    /// Runtimes the bridge drives: 1 once its own runtime has started, 0
    /// before and for a bridge on a given handle.
    pub fn active_loops(&self) -> u64 {
        self.inner.gauges.active_loops()
    }

    /// A snapshot of the bridge's counters.
    pub fn stats(&self) -> Stats {
        self.inner.gauges.stats()
    }

    /// The live values, as a handle that does not keep the bridge alive.
    pub fn gauges(&self) -> Gauges {
        self.inner.gauges.clone()
    }
}

impl Default for Bridge {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Bridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bridge")
            .field("executor", &self.inner.executor)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Configures a [`Bridge`].
pub struct BridgeBuilder {
    handle: Option<Handle>,
    observer: Arc<dyn Observer>,
    gauges: Gauges,
    worker_threads: usize,
    thread_name: String,
}

impl Default for BridgeBuilder {
    fn default() -> Self {
        Self {
            handle: None,
            observer: Arc::new(()),
            gauges: Gauges::default(),
            worker_threads: 2,
            thread_name: "async-bridge".to_owned(),
        }
    }
}

impl BridgeBuilder {
    /// Runs futures on `handle`'s runtime (multi-thread only) instead of a
    /// runtime of the bridge's own.
    pub fn handle(mut self, handle: Handle) -> Self {
        self.handle = Some(handle);
        self
    }

    /// Tells `observer` about every call.
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.observer = Arc::new(observer);
        self
    }

    /// Worker threads of the bridge's own runtime (default 2, at least 1).
    pub fn worker_threads(mut self, threads: usize) -> Self {
        self.worker_threads = threads;
        self
    }

    /// The name of the bridge's own runtime's threads (default `async-bridge`).
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self
    }

    /// The live values of the bridge about to be built, for whatever must
    /// exist before it (a heartbeat source that an observer depends on).
    pub fn gauges(&self) -> Gauges {
        self.gauges.clone()
    }

    /// Builds the bridge. Its own runtime, if it needs one, starts on first use.
    pub fn build(self) -> Result<Bridge, BuildError> {
        let executor = match &self.handle {
            Some(handle) => match handle.runtime_flavor() {
                RuntimeFlavor::MultiThread => Executor::Given(handle.clone()),
                other => return Err(BuildError::NotMultiThread(other)),
            },
            None => self.own_runtime(),
        };
        Ok(self.assemble(executor))
    }

    fn own_runtime(&self) -> Executor {
        Executor::Own(OwnRuntime::new(
            self.worker_threads,
            self.thread_name.clone(),
        ))
    }

    fn assemble(self, executor: Executor) -> Bridge {
        Bridge {
            inner: Arc::new(Inner {
                executor,
                gauges: self.gauges,
                observer: self.observer,
            }),
        }
    }
}

impl fmt::Debug for BridgeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeBuilder")
            .field("handle", &self.handle)
            .field("worker_threads", &self.worker_threads)
            .field("thread_name", &self.thread_name)
            .finish_non_exhaustive()
    }
}

/// One call being made: counted and reported exactly once, when it ends or,
/// if its caller stops waiting first, when it is dropped.
struct Call<'a> {
    inner: &'a Inner,
    direction: Direction,
    started: Instant,
    ended: bool,
}

impl<'a> Call<'a> {
    fn start(inner: &'a Inner, direction: Direction) -> Self {
        Self {
            inner,
            direction,
            started: Instant::now(),
            ended: false,
        }
    }

    fn end<T, E>(mut self, result: Result<T, BridgeError<E>>) -> Result<T, BridgeError<E>> {
        self.ended = true;
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(error) => {
                self.log(error);
                error.outcome()
            }
        };
        self.record(outcome);
        result
    }

    fn log<E>(&self, error: &BridgeError<E>) {
        let direction = self.direction.as_str();
        match error {
            BridgeError::Timeout(timeout) => {
                tracing::warn!(direction, ?timeout, "async bridge call timed out");
            }
            BridgeError::Panicked(message) => {
                tracing::warn!(direction, message, "async bridge work panicked");
            }
            BridgeError::Runtime(source) => {
                tracing::error!(direction, %source, "async bridge could not start its runtime");
            }
            BridgeError::Failed(_) | BridgeError::NoRuntime | BridgeError::Shutdown => {}
        }
    }

    fn record(&self, outcome: Outcome) {
        let duration = self.started.elapsed();
        let inner = self.inner;
        inner
            .gauges
            .counters()
            .record(self.direction, outcome, duration);
        inner.observer.on_call(&CallRecord {
            direction: self.direction,
            outcome,
            duration,
            pending: inner.gauges.pending(),
            active_loops: inner.gauges.active_loops(),
        });
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.record(Outcome::Cancelled);
        }
    }
}
