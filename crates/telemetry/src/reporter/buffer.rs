//! Reported events waiting to be sent, oldest first, bounded in number, and
//! how the next batch is taken from them: by count and by encoded size.
//!
//! Batches are formed one at a time, when the sender is ready to push one, so
//! every event the reporter keeps is either waiting here or in the one batch
//! being sent, and the bound covers both: while a batch of `n` events is being
//! sent, `max_events - n` may wait (at least one, the newest).

use std::collections::VecDeque;

use automation_proto::v1::Event;
use prost::Message;
use tokio::time::Instant;

/// One waiting event and the bytes it adds to an encoded `EventBatch`.
pub(super) struct Waiting {
    event: Event,
    size: usize,
}

impl Waiting {
    /// Measures `event`; meant to run before the queue's lock is taken.
    pub(super) fn new(event: Event) -> Self {
        let size = size_in_batch(&event);
        Self { event, size }
    }
}

/// The bytes `event` adds to an encoded `EventBatch`: the key of field 3
/// (one byte), the length, the event.
pub(super) fn size_in_batch(event: &Event) -> usize {
    let len = event.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

pub(super) struct EventQueue {
    events: VecDeque<Waiting>,
    /// The sum of the waiting events' sizes.
    bytes: usize,
    max_events: usize,
    /// When the oldest waiting event started to wait for its batch, or, for
    /// events left over when a full batch was taken, when the batch before
    /// started to: they are due at once.
    since: Option<Instant>,
}

impl EventQueue {
    pub(super) fn new(max_events: usize) -> Self {
        Self {
            events: VecDeque::new(),
            bytes: 0,
            max_events: max_events.max(1),
            since: None,
        }
    }

    /// Queues `waiting` beside a batch of `sending` events being sent; when
    /// the bound is reached, the oldest waiting events make room (the batch
    /// being sent may have been applied already, so it never does). Returns
    /// the events dropped.
    pub(super) fn push(&mut self, waiting: Waiting, sending: usize, now: Instant) -> usize {
        let room = self.max_events.saturating_sub(sending).max(1);
        let mut dropped = 0;
        while self.events.len() >= room {
            if let Some(oldest) = self.events.pop_front() {
                self.bytes -= oldest.size;
                dropped += 1;
            }
        }
        self.since.get_or_insert(now);
        self.bytes += waiting.size;
        self.events.push_back(waiting);
        dropped
    }

    /// Takes the oldest events for one batch whose own fields (source,
    /// sequence) take `base` bytes: at most `max_events`, and no more than fit
    /// in `max_bytes` in all. The first event is always taken, however large.
    pub(super) fn take(&mut self, max_events: usize, max_bytes: usize, base: usize) -> Vec<Event> {
        let mut taken = Vec::new();
        let mut bytes = base;
        while let Some(next) = self.events.front() {
            let fits = bytes.saturating_add(next.size) <= max_bytes;
            if !taken.is_empty() && (taken.len() >= max_events || !fits) {
                break;
            }
            let Some(Waiting { event, size }) = self.events.pop_front() else {
                break;
            };
            bytes += size;
            self.bytes -= size;
            taken.push(event);
        }
        if self.events.is_empty() {
            self.since = None;
        }
        taken
    }

    /// Removes every waiting event; returns how many there were.
    pub(super) fn clear(&mut self) -> usize {
        self.bytes = 0;
        self.since = None;
        std::mem::take(&mut self.events).len()
    }

    pub(super) fn len(&self) -> usize {
        self.events.len()
    }

    /// The waiting events' share of an encoded batch, in bytes.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// When the oldest waiting event started to wait; `None` when none waits.
    pub(super) fn since(&self) -> Option<Instant> {
        self.since
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use automation_proto::v1::{ComponentError, EventBatch, Source, event::Payload};

    use super::*;

    fn event(n: usize, padding: usize) -> Waiting {
        Waiting::new(Event {
            time: None,
            payload: Some(Payload::Error(ComponentError {
                kind: "test".to_owned(),
                message: format!("{n} {}", "x".repeat(padding)),
                model: String::new(),
            })),
        })
    }

    fn number(event: &Event) -> usize {
        match &event.payload {
            Some(Payload::Error(error)) => {
                error.message.split(' ').next().unwrap().parse().unwrap()
            }
            _ => unreachable!(),
        }
    }

    fn queue(max_events: usize, count: usize, padding: usize) -> EventQueue {
        let mut queue = EventQueue::new(max_events);
        let now = Instant::now();
        for n in 0..count {
            queue.push(event(n, padding), 0, now);
        }
        queue
    }

    fn batch(sequence: u64) -> EventBatch {
        EventBatch {
            source: Some(Source {
                service: "test-watcher".to_owned(),
                instance: "pod-1".to_owned(),
                version: "1.0".to_owned(),
                incarnation: 0x1234_5678_9abc_def0,
            }),
            sequence,
            events: Vec::new(),
        }
    }

    #[test]
    fn a_batch_is_measured_exactly() {
        let mut queue = queue(100, 30, 300);
        let waiting = queue.bytes();
        let mut batch = batch(1 << 40);
        let base = batch.encoded_len();
        batch.events = queue.take(usize::MAX, usize::MAX, base);
        assert_eq!(batch.events.len(), 30);
        assert_eq!(batch.encoded_len(), base + waiting);
        assert_eq!((queue.len(), queue.bytes(), queue.since()), (0, 0, None));
    }

    #[test]
    fn a_batch_closes_when_the_next_event_would_not_fit() {
        let limit = 10_000;
        let mut queue = queue(1000, 100, 1000);
        let mut sizes = Vec::new();
        let mut numbers = Vec::new();
        let mut sequence = 1;
        while queue.len() > 0 {
            let mut batch = batch(sequence);
            let base = batch.encoded_len();
            let next = queue.events.front().unwrap().size;
            batch.events = queue.take(500, limit, base);
            let len = batch.encoded_len();
            assert!(len <= limit, "{len}");
            if queue.len() > 0 {
                let next_size = queue.events.front().unwrap().size;
                assert!(len + next_size > limit, "closed early: {len} + {next_size}");
            }
            assert!(len >= base + next);
            sizes.push(batch.events.len());
            numbers.extend(batch.events.iter().map(number));
            sequence += 1;
        }
        assert!(sizes.len() >= 10, "{sizes:?}");
        assert_eq!(numbers, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_batch_is_bounded_in_events_too() {
        let mut queue = queue(100, 10, 0);
        let sizes: Vec<usize> = (0..3).map(|_| queue.take(4, usize::MAX, 0).len()).collect();
        assert_eq!(sizes, [4, 4, 2]);
    }

    #[test]
    fn an_event_larger_than_the_limit_goes_alone() {
        let mut queue = queue(100, 3, 5000);
        for _ in 0..3 {
            assert_eq!(queue.take(500, 1000, 50).len(), 1);
        }
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn a_full_queue_drops_the_oldest_one_at_a_time() {
        let mut queue = EventQueue::new(3);
        let now = Instant::now();
        let dropped: usize = (0..5).map(|n| queue.push(event(n, 10), 0, now)).sum();
        assert_eq!(dropped, 2);
        assert_eq!(queue.len(), 3);
        let expected: usize = (2..5).map(|n| event(n, 10).size).sum();
        assert_eq!(queue.bytes(), expected);
        let numbers: Vec<usize> = queue.take(10, usize::MAX, 0).iter().map(number).collect();
        assert_eq!(numbers, [2, 3, 4]);
    }

    #[test]
    fn the_batch_being_sent_counts_against_the_bound() {
        let now = Instant::now();
        let mut queue = EventQueue::new(5);
        let dropped: usize = (0..5).map(|n| queue.push(event(n, 0), 3, now)).sum();
        assert_eq!((queue.len(), dropped), (2, 3));
        let numbers: Vec<usize> = queue.take(10, usize::MAX, 0).iter().map(number).collect();
        assert_eq!(numbers, [3, 4], "the newest stayed");
        // A batch that fills the bound alone: the newest event still waits.
        let dropped: usize = (5..8).map(|n| queue.push(event(n, 0), 5, now)).sum();
        assert_eq!((queue.len(), dropped), (1, 2));
    }

    #[test]
    fn leftovers_keep_the_time_the_oldest_started_waiting() {
        let start = Instant::now();
        let mut queue = EventQueue::new(10);
        queue.push(event(0, 0), 0, start);
        queue.push(event(1, 0), 0, start + Duration::from_secs(1));
        assert_eq!(queue.since(), Some(start));
        queue.take(1, usize::MAX, 0);
        assert_eq!(queue.since(), Some(start), "the leftover is due");
        queue.take(1, usize::MAX, 0);
        assert_eq!(queue.since(), None);
        queue.push(event(2, 0), 0, start + Duration::from_secs(2));
        assert_eq!(queue.since(), Some(start + Duration::from_secs(2)));
        assert_eq!(queue.clear(), 1);
        assert_eq!((queue.len(), queue.bytes(), queue.since()), (0, 0, None));
    }
}
