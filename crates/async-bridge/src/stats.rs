//! The bridge's counters: per direction totals, and the live values (pending
//! work, active loops) behind the gauges.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::observer::{Direction, Outcome};

/// Totals of one direction since the bridge was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Calls that ended, whatever their outcome.
    pub calls: u64,
    /// Calls whose work gave its value.
    pub ok: u64,
    /// Calls that failed or panicked (panics included, timeouts not).
    pub errors: u64,
    /// Calls whose work panicked (a part of `errors`).
    pub panics: u64,
    /// Calls that timed out.
    pub timeouts: u64,
    /// Calls the caller stopped waiting for.
    pub cancelled: u64,
    /// The calls' durations added up.
    pub busy: Duration,
}

/// A snapshot of a bridge's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Sync code running futures.
    pub to_async: DirectionStats,
    /// Async code running blocking work.
    pub to_blocking: DirectionStats,
    /// Work started and not yet ended.
    pub pending: u64,
    /// Runtimes the bridge drives (its own, once started).
    pub active_loops: u64,
}

impl Stats {
    /// The totals of `direction`.
    pub fn direction(&self, direction: Direction) -> &DirectionStats {
        match direction {
            Direction::ToAsync => &self.to_async,
            Direction::ToBlocking => &self.to_blocking,
        }
    }
}

/// The live values of a bridge, readable without holding the bridge: a
/// heartbeat source can keep one without keeping the bridge (and its
/// runtime) alive. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    counters: Arc<Counters>,
}

impl Gauges {
    /// Work started through the bridge and not yet ended.
    pub fn pending(&self) -> u64 {
        self.counters.pending.load(Ordering::Relaxed)
    }

    /// Runtimes the bridge drives: 1 once its own runtime has started, until
    /// the bridge is dropped; 0 for a bridge on a given handle.
    pub fn active_loops(&self) -> u64 {
        self.counters.active_loops.load(Ordering::Relaxed)
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            to_async: c.directions[0].snapshot(),
            to_blocking: c.directions[1].snapshot(),
            pending: self.pending(),
            active_loops: self.active_loops(),
        }
    }

    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pending: AtomicU64,
    active_loops: AtomicU64,
    directions: [DirectionCounters; 2],
}

#[derive(Debug, Default)]
struct DirectionCounters {
    calls: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
    timeouts: AtomicU64,
    cancelled: AtomicU64,
    busy_nanos: AtomicU64,
}

impl DirectionCounters {
    fn snapshot(&self) -> DirectionStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DirectionStats {
            calls: get(&self.calls),
            ok: get(&self.ok),
            errors: get(&self.errors),
            panics: get(&self.panics),
            timeouts: get(&self.timeouts),
            cancelled: get(&self.cancelled),
            busy: Duration::from_nanos(get(&self.busy_nanos)),
        }
    }
}

impl Counters {
    /// Counts one ended call.
    pub(crate) fn record(&self, direction: Direction, outcome: Outcome, duration: Duration) {
        let d = &self.directions[match direction {
            Direction::ToAsync => 0,
            Direction::ToBlocking => 1,
        }];
        d.calls.fetch_add(1, Ordering::Relaxed);
        let by_outcome = match outcome {
            Outcome::Ok => &d.ok,
            Outcome::Error => &d.errors,
            Outcome::Panic => {
                d.panics.fetch_add(1, Ordering::Relaxed);
                &d.errors
            }
            Outcome::Timeout => &d.timeouts,
            Outcome::Cancelled => &d.cancelled,
        };
        by_outcome.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        d.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Counts one piece of work as pending until the guard is dropped.
    pub(crate) fn start_pending(self: &Arc<Self>) -> PendingGuard {
        self.pending.fetch_add(1, Ordering::Relaxed);
        PendingGuard {
            counters: Arc::clone(self),
        }
    }

    pub(crate) fn loop_started(&self) {
        self.active_loops.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn loop_stopped(&self) {
        self.active_loops.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Keeps one piece of work counted as pending; moves with the work, so
/// whichever way the work ends (finished, panicked, cancelled, dropped with
/// its runtime) the count comes down.
#[derive(Debug)]
pub(crate) struct PendingGuard {
    counters: Arc<Counters>,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.counters.pending.fetch_sub(1, Ordering::Relaxed);
    }
}
