//! What the handles and the tasks share.
//!
//! Reported events wait in a plain `std` mutex-guarded queue, so `report()`
//! works the same from a thread and from a task and never awaits. The lock is
//! held to queue one event or to take one batch, never for I/O; events are
//! stamped, bounded and measured before it is taken.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use automation_proto::v1::event::Payload;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::buffer::{EventQueue, Waiting};
use super::{ReporterConfig, ReporterStats};

/// Every event the reporter keeps: waiting, or in the batch being sent.
pub(super) struct Queue {
    /// Reported events not yet in a batch: with the batch being sent, at most
    /// `buffer_max_events`.
    pub(super) waiting: EventQueue,
    /// Events in the batch being sent: formed, not yet acknowledged or given up.
    pub(super) sending: usize,
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
    queue: Mutex<Queue>,
    /// Wakes the sender: a first event waits (its delay starts), a batch's
    /// worth of events waits, or shutdown began.
    pub(super) wake: Notify,
    incarnation: u64,
    batch_max_events: usize,
    batch_max_bytes: usize,
    /// After this long without an acknowledgement, `check` reports a problem:
    /// a healthy reporter pushes at least one heartbeat per interval.
    stale_after: Duration,
    dropped: AtomicU64,
    acked: AtomicU64,
    sent_batches: AtomicU64,
    status: Mutex<Status>,
}

impl Shared {
    pub(super) fn new(config: &ReporterConfig, incarnation: u64) -> Self {
        let buffer_max = config.buffer_max_events.max(1);
        Self {
            queue: Mutex::new(Queue {
                waiting: EventQueue::new(buffer_max),
                sending: 0,
                closed: false,
                flush_by: None,
            }),
            wake: Notify::new(),
            incarnation,
            batch_max_events: config.batch_max_events.clamp(1, buffer_max),
            batch_max_bytes: config.batch_max_bytes,
            stale_after: config
                .heartbeat_interval
                .saturating_mul(3)
                .saturating_add(config.push_timeout),
            dropped: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            sent_batches: AtomicU64::new(0),
            status: Mutex::new(Status::default()),
        }
    }

    pub(super) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Events per batch, at most the buffer's bound.
    pub(super) fn batch_max_events(&self) -> usize {
        self.batch_max_events
    }

    /// A batch's encoded size at most, unless one event alone is larger.
    pub(super) fn batch_max_bytes(&self) -> usize {
        self.batch_max_bytes
    }

    pub(super) fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn report(&self, payload: Payload) {
        let waiting = prepare(payload);
        let (dropped, wake) = {
            let mut queue = self.queue();
            if queue.closed {
                drop(queue);
                self.add_dropped(1);
                return;
            }
            let bytes_before = queue.waiting.bytes();
            let sending = queue.sending;
            let dropped = queue.waiting.push(waiting, sending, Instant::now());
            let (count, bytes) = (queue.waiting.len(), queue.waiting.bytes());
            let wake = count == 1
                || count == self.batch_max_events
                || (bytes_before < self.batch_max_bytes && bytes >= self.batch_max_bytes);
            (dropped, wake)
        };
        self.add_dropped(dropped as u64);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Queues the last event and refuses any after it.
    pub(super) fn close(&self, payload: Payload) {
        let waiting = prepare(payload);
        let dropped = {
            let mut queue = self.queue();
            queue.closed = true;
            let sending = queue.sending;
            queue.waiting.push(waiting, sending, Instant::now())
        };
        self.add_dropped(dropped as u64);
    }

    pub(super) fn begin_flush(&self, deadline: Instant) {
        self.queue().flush_by = Some(deadline);
        self.wake.notify_one();
    }

    /// Counts everything not yet acknowledged as dropped; for when the sender
    /// cannot finish.
    pub(super) fn drop_everything(&self) {
        let mut queue = self.queue();
        let left = queue.waiting.clear() + std::mem::take(&mut queue.sending);
        self.add_dropped(left as u64);
    }

    pub(super) fn add_dropped(&self, events: u64) {
        if events > 0 {
            self.dropped.fetch_add(events, Ordering::Relaxed);
        }
    }

    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
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
        let buffered = {
            let queue = self.queue();
            (queue.waiting.len() + queue.sending) as u64
        };
        let status = self.status();
        ReporterStats {
            sent_batches: self.sent_batches.load(Ordering::Relaxed),
            acked_events: self.acked.load(Ordering::Relaxed),
            dropped_events: self.dropped(),
            buffered_events: buffered,
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
    after_from(Instant::now(), delay)
}

/// `delay` after `start`, or far ahead when that cannot be represented.
pub(super) fn after_from(start: Instant, delay: Duration) -> Instant {
    start
        .checked_add(delay)
        .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 86_400))
}

/// Bounds, stamps and measures an event, before any lock is taken.
fn prepare(payload: Payload) -> Waiting {
    Waiting::new(super::Reporter::event(payload))
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
        // The goodbye too makes room rather than exceed the bound.
        shared.close(goodbye());
        assert_eq!(shared.stats().buffered_events, 2);
        assert_eq!(shared.dropped(), 4);
        shared.report(goodbye());
        assert_eq!(shared.dropped(), 5);
        shared.drop_everything();
        assert_eq!(shared.stats().buffered_events, 0);
        assert_eq!(shared.dropped(), 7);
    }

    #[test]
    fn the_bound_holds_beside_the_batch_being_sent() {
        let shared = shared(4);
        (0..4).for_each(|_| shared.report(goodbye()));
        {
            // What the sender does when it forms a batch.
            let mut queue = shared.queue();
            let batch = queue.waiting.take(3, usize::MAX, 0);
            queue.sending = batch.len();
        }
        assert_eq!(shared.stats().buffered_events, 4);
        (0..10).for_each(|_| shared.report(goodbye()));
        let stats = shared.stats();
        assert_eq!(stats.buffered_events, 4, "the batch being sent counts");
        assert_eq!(stats.dropped_events, 14 - 4, "the oldest waiting made room");
        shared.drop_everything();
        assert_eq!(shared.dropped(), 14);
    }
}
