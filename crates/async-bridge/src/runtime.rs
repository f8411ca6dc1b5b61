//! Where the bridge runs futures (a given multi-thread runtime, or its own,
//! started on first use), and how a sync caller waits for them without
//! stalling the runtime it may itself be on.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock, PoisonError};

use tokio::runtime::{Handle, Runtime, RuntimeFlavor};

use crate::stats::Counters;

/// The runtime futures run on.
#[derive(Debug)]
pub(crate) enum Executor {
    /// A multi-thread runtime someone else drives.
    Given(Handle),
    /// The bridge's own runtime, the one "active loop" it drives.
    Own(OwnRuntime),
}

#[derive(Debug)]
pub(crate) struct OwnRuntime {
    runtime: OnceLock<Runtime>,
    /// Held while starting, so two first calls start one runtime.
    starting: Mutex<()>,
    worker_threads: usize,
    thread_name: String,
}

impl OwnRuntime {
    pub(crate) fn new(worker_threads: usize, thread_name: String) -> Self {
        Self {
            runtime: OnceLock::new(),
            starting: Mutex::new(()),
            worker_threads: worker_threads.max(1),
            thread_name,
        }
    }
}

impl Executor {
    /// The handle to spawn on; starts the bridge's own runtime on first use.
    pub(crate) fn handle(&self, counters: &Counters) -> std::io::Result<&Handle> {
        let own = match self {
            Self::Given(handle) => return Ok(handle),
            Self::Own(own) => own,
        };
        if let Some(runtime) = own.runtime.get() {
            return Ok(runtime.handle());
        }
        let _starting = own.starting.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(runtime) = own.runtime.get() {
            return Ok(runtime.handle());
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(own.worker_threads)
            .thread_name(own.thread_name.clone())
            .enable_all()
            .build()?;
        counters.loop_started();
        tracing::debug!(
            worker_threads = own.worker_threads,
            "async bridge started its runtime"
        );
        Ok(own.runtime.get_or_init(|| runtime).handle())
    }

    /// Stops the bridge's own runtime, if it started one. Never blocks, so
    /// the last bridge may be dropped anywhere, async tasks included (dropping
    /// a runtime there would panic). Work still on it is dropped.
    pub(crate) fn stop(&mut self, counters: &Counters) {
        if let Self::Own(own) = self
            && let Some(runtime) = own.runtime.take()
        {
            runtime.shutdown_background();
            counters.loop_stopped();
        }
    }
}

/// Runs `wait`, a blocking wait for work running elsewhere, without stalling
/// a runtime: on a multi-thread runtime's worker the worker's other tasks are
/// handed to another thread first (`block_in_place`). On a current-thread
/// runtime nothing can be handed over: its thread waits, and the runtime
/// with it.
pub(crate) fn wait_blocking<R>(wait: impl Fn() -> R) -> R {
    let on_multi_thread =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if !on_multi_thread {
        return wait();
    }
    // `block_in_place` refuses (panics, before running anything) in one
    // case the flavour does not show: a multi-thread runtime entered with
    // `Handle::enter` from inside a current-thread runtime's `block_on`.
    // Blocking plainly is then the only way, as on a current-thread runtime.
    let waited = Cell::new(false);
    let attempt = panic::catch_unwind(AssertUnwindSafe(|| {
        tokio::task::block_in_place(|| {
            waited.set(true);
            wait()
        })
    }));
    match attempt {
        Ok(value) => value,
        Err(payload) if waited.get() => panic::resume_unwind(payload),
        Err(_) => wait(),
    }
}
