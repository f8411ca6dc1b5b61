//! What the bridge tells about each call: [`CallRecord`], given to an
//! [`Observer`] once per call.

use std::sync::Arc;
use std::time::Duration;

/// Which way a call crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sync code ran a future ([`Bridge::run_async`](crate::Bridge::run_async)).
    ToAsync,
    /// Async code ran blocking work ([`Bridge::run_blocking`](crate::Bridge::run_blocking)).
    ToBlocking,
}

impl Direction {
    /// The metric label value: `to_async` or `to_blocking`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ToAsync => "to_async",
            Self::ToBlocking => "to_blocking",
        }
    }
}

/// How a call ended. Every call ends in exactly one outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The work finished and gave its value.
    Ok,
    /// The work returned its own error, or could not be run at all (no
    /// runtime, a runtime shut down, the bridge's runtime failed to start).
    Error,
    /// The work panicked.
    Panic,
    /// The work did not finish within the call's timeout.
    Timeout,
    /// The caller stopped waiting: the future returned by
    /// [`run_blocking`](crate::Bridge::run_blocking) was dropped before the
    /// work finished. The work is detached, like timed-out blocking work.
    Cancelled,
}

impl Outcome {
    /// A short name: `ok`, `error`, `panic`, `timeout`, `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Panic => "panic",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One finished call through the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallRecord {
    /// Which way it crossed.
    pub direction: Direction,
    /// How it ended.
    pub outcome: Outcome,
    /// From the call until its outcome was known, queueing included.
    pub duration: Duration,
    /// Work started through the bridge and not yet ended, right after this
    /// call (timed-out blocking work that still runs is counted).
    pub pending: u64,
    /// Runtimes the bridge drives, right after this call.
    pub active_loops: u64,
}

/// Watches the bridge: told about every call once, when its outcome is known.
///
/// Called on the caller's thread (for [`Outcome::Cancelled`], wherever the
/// call's future is dropped), possibly from inside an async task: keep it
/// quick and never block or panic in it.
pub trait Observer: Send + Sync + 'static {
    /// One call has ended.
    fn on_call(&self, call: &CallRecord);
}

/// Watches nothing.
impl Observer for () {
    fn on_call(&self, _call: &CallRecord) {}
}

/// A shared observer, so its owner can keep a handle to it.
impl<O: Observer + ?Sized> Observer for Arc<O> {
    fn on_call(&self, call: &CallRecord) {
        (**self).on_call(call);
    }
}
