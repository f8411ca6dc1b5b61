//! What the handles and the tasks share.
//!
//! Reported events wait in a plain `std` mutex-guarded queue, so `report()`
//! works the same from a thread and from a task and never awaits. The sender
//! swaps the whole queue out when it forms batches, so the lock is held for a
//! push or a swap, never for I/O.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use automation_proto::v1::{Event, event::Payload};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{ReporterConfig, ReporterStats};

/// Reported events not yet formed into batches.
pub(super) struct Pending {
    pub(super) events: VecDeque<Event>,
    /// Set once the goodbye is queued: later events are dropped.
    closed: bool,
    /// Set by shutdown: form batches at once and give up at this instant.
    pub(super) flush_by: Option<Instant>,
}

/// The connection as the last push attempt found it.
#[derive(Default)]
struct Status {
    connected: bool,
    last_ok: Option<Instant>,
    last_error: Option<String>,
}

pub(super) struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the sender: a first event waits (its delay starts), a batch is
    /// full, or shutdown began.
    pub(super) wake: Notify,
    incarnation: u64,
    batch_max: usize,
    /// Pending events alone never need to exceed the buffer's bound.
    pending_max: usize,
    /// After this long without an acknowledgement, `check` reports a problem:
    /// a healthy reporter pushes at least one heartbeat per interval.
    stale_after: Duration,
    dropped: AtomicU64,
    acked: AtomicU64,
    sent_batches: AtomicU64,
    /// Events in formed batches, in flight included.
    batched: AtomicU64,
    status: Mutex<Status>,
}

impl Shared {
    pub(super) fn new(config: &ReporterConfig, incarnation: u64) -> Self {
        let pending_max = config.buffer_max_events.max(1);
        Self {
            pending: Mutex::new(Pending {
                events: VecDeque::new(),
                closed: false,
                flush_by: None,
            }),
            wake: Notify::new(),
            incarnation,
            batch_max: config.batch_max_events.clamp(1, pending_max),
            pending_max,
            stale_after: config
                .heartbeat_interval
                .saturating_mul(3)
                .saturating_add(config.push_timeout),
            dropped: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            sent_batches: AtomicU64::new(0),
            batched: AtomicU64::new(0),
            status: Mutex::new(Status::default()),
        }
    }

    pub(super) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Events per batch, at most the buffer's bound so one batch always fits.
    pub(super) fn batch_max(&self) -> usize {
        self.batch_max
    }

    pub(super) fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn report(&self, payload: Payload) {
        let event = stamp(payload);
        let wake = {
            let mut pending = self.pending();
            if pending.closed {
                drop(pending);
                self.add_dropped(1);
                return;
            }
            if pending.events.len() >= self.pending_max {
                pending.events.pop_front();
                self.add_dropped(1);
            }
            pending.events.push_back(event);
            let queued = pending.events.len();
            queued == 1 || queued == self.batch_max
        };
        if wake {
            self.wake.notify_one();
        }
    }

    /// Queues the last event and refuses any after it.
    pub(super) fn close(&self, payload: Payload) {
        let event = stamp(payload);
        let mut pending = self.pending();
        pending.events.push_back(event);
        pending.closed = true;
    }

    pub(super) fn begin_flush(&self, deadline: Instant) {
        self.pending().flush_by = Some(deadline);
        self.wake.notify_one();
    }

    /// Counts everything not yet acknowledged as dropped; for when the sender
    /// cannot finish.
    pub(super) fn drop_everything(&self) {
        let waiting = std::mem::take(&mut self.pending().events).len() as u64;
        let batched = self.batched.swap(0, Ordering::Relaxed);
        self.add_dropped(waiting + batched);
    }

    pub(super) fn add_dropped(&self, events: u64) {
        if events > 0 {
            self.dropped.fetch_add(events, Ordering::Relaxed);
        }
    }

    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub(super) fn set_batched(&self, events: usize) {
        self.batched.store(events as u64, Ordering::Relaxed);
    }

    /// The collector acknowledged a batch of `events`.
    pub(super) fn acknowledged(&self, events: usize) {
        self.acked.fetch_add(events as u64, Ordering::Relaxed);
        self.sent_batches.fetch_add(1, Ordering::Relaxed);
        let mut status = self.status();
        status.connected = true;
        status.last_ok = Some(Instant::now());
    }

    /// The collector answered but refused the batch for good.
    pub(super) fn refused(&self, error: String) {
        let mut status = self.status();
        status.connected = true;
        status.last_ok = Some(Instant::now());
        status.last_error = Some(error);
    }

    /// The push did not get through.
    pub(super) fn failed(&self, error: String) {
        let mut status = self.status();
        status.connected = false;
        status.last_error = Some(error);
    }

    pub(super) fn stats(&self) -> ReporterStats {
        let waiting = self.pending().events.len() as u64;
        let status = self.status();
        ReporterStats {
            sent_batches: self.sent_batches.load(Ordering::Relaxed),
            acked_events: self.acked.load(Ordering::Relaxed),
            dropped_events: self.dropped(),
            buffered_events: waiting + self.batched.load(Ordering::Relaxed),
            last_error: status.last_error.clone(),
            connected: status.connected,
        }
    }

    pub(super) fn check(&self) -> Result<(), String> {
        let status = self.status();
        match status.last_ok {
            Some(at) if status.connected && at.elapsed() <= self.stale_after => Ok(()),
            Some(at) if status.connected => Err(format!(
                "no acknowledgement from the collector for {} s",
                at.elapsed().as_secs()
            )),
            _ => Err(status
                .last_error
                .clone()
                .unwrap_or_else(|| "no push acknowledged yet".to_owned())),
        }
    }
}

/// `delay` from now; a delay too long to represent means "never" (far
/// ahead), not a panic.
pub(super) fn after(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

fn stamp(payload: Payload) -> Event {
    Event {
        time: Some(SystemTime::now().into()),
        payload: Some(payload),
    }
}

#[cfg(test)]
mod tests {
    use automation_proto::v1::Goodbye;

    use super::*;

    fn shared(buffer_max_events: usize) -> Shared {
        let mut config = ReporterConfig::new("http://127.0.0.1:1", "s", "i", "v");
        config.buffer_max_events = buffer_max_events;
        config.batch_max_events = 3;
        Shared::new(&config, 1)
    }

    fn goodbye() -> Payload {
        Payload::Goodbye(Goodbye::default())
    }

    #[test]
    fn health_follows_the_last_push() {
        let shared = shared(10);
        assert_eq!(shared.check(), Err("no push acknowledged yet".to_owned()));
        shared.failed("Unavailable: connection refused".to_owned());
        assert_eq!(
            shared.check(),
            Err("Unavailable: connection refused".to_owned())
        );
        shared.acknowledged(4);
        assert_eq!(shared.check(), Ok(()));
        let stats = shared.stats();
        assert!(stats.connected);
        assert_eq!((stats.sent_batches, stats.acked_events), (1, 4));
        assert_eq!(
            stats.last_error.as_deref(),
            Some("Unavailable: connection refused")
        );
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_a_closed_one_everything() {
        let shared = shared(2);
        (0..5).for_each(|_| shared.report(goodbye()));
        assert_eq!(shared.stats().buffered_events, 2);
        assert_eq!(shared.dropped(), 3);
        shared.close(goodbye());
        shared.report(goodbye());
        assert_eq!(shared.dropped(), 4);
        shared.drop_everything();
        assert_eq!(shared.stats().buffered_events, 0);
        assert_eq!(shared.dropped(), 7);
    }
}
