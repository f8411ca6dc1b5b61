//! Formed batches awaiting acknowledgement, oldest first, bounded in events.

use std::collections::VecDeque;

use automation_proto::v1::{Event, EventBatch, Source};

pub(super) struct BatchBuffer {
    source: Source,
    next_sequence: u64,
    batch_max: usize,
    max_events: usize,
    batches: VecDeque<EventBatch>,
    events: usize,
}

impl BatchBuffer {
    pub(super) fn new(source: Source, batch_max: usize, max_events: usize) -> Self {
        Self {
            source,
            next_sequence: 1,
            batch_max: batch_max.max(1),
            max_events: max_events.max(1),
            batches: VecDeque::new(),
            events: 0,
        }
    }

    /// Forms batches of every event in `pending` (emptying it), then drops the
    /// oldest whole batches while more than the bound is kept. The front batch
    /// is spared when `front_in_flight`: it may be applied already, and
    /// counting it as dropped would be a lie. Returns the events dropped.
    pub(super) fn form(&mut self, pending: &mut VecDeque<Event>, front_in_flight: bool) -> usize {
        while !pending.is_empty() {
            let take = pending.len().min(self.batch_max);
            let events: Vec<Event> = pending.drain(..take).collect();
            self.events += events.len();
            self.batches.push_back(EventBatch {
                source: Some(self.source.clone()),
                sequence: self.next_sequence,
                events,
            });
            self.next_sequence += 1;
        }
        let spared = usize::from(front_in_flight);
        let mut dropped = 0;
        while self.events > self.max_events && self.batches.len() > spared + 1 {
            if let Some(batch) = self.batches.remove(spared) {
                self.events -= batch.events.len();
                dropped += batch.events.len();
            }
        }
        dropped
    }

    pub(super) fn front(&self) -> Option<&EventBatch> {
        self.batches.front()
    }

    /// Removes the front batch (acknowledged or refused); returns its events.
    pub(super) fn pop_front(&mut self) -> usize {
        let events = self
            .batches
            .pop_front()
            .map_or(0, |batch| batch.events.len());
        self.events -= events;
        events
    }

    /// Removes every batch; returns their events.
    pub(super) fn clear(&mut self) -> usize {
        self.batches.clear();
        std::mem::take(&mut self.events)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Events in the batches kept.
    pub(super) fn events(&self) -> usize {
        self.events
    }
}

#[cfg(test)]
mod tests {
    use automation_proto::v1::{Goodbye, event::Payload};

    use super::*;

    fn events(count: usize) -> VecDeque<Event> {
        (0..count)
            .map(|i| Event {
                time: None,
                payload: Some(Payload::Goodbye(Goodbye {
                    reason: i.to_string(),
                })),
            })
            .collect()
    }

    fn buffer(batch_max: usize, max_events: usize) -> BatchBuffer {
        let source = Source {
            service: "test".into(),
            incarnation: 7,
            ..Source::default()
        };
        BatchBuffer::new(source, batch_max, max_events)
    }

    fn sequences(buffer: &BatchBuffer) -> Vec<u64> {
        buffer.batches.iter().map(|b| b.sequence).collect()
    }

    #[test]
    fn batches_are_numbered_from_one_and_bounded_in_size() {
        let mut buffer = buffer(4, 100);
        let mut pending = events(10);
        assert_eq!(buffer.form(&mut pending, false), 0);
        assert!(pending.is_empty());
        assert_eq!(sequences(&buffer), [1, 2, 3]);
        let sizes: Vec<usize> = buffer.batches.iter().map(|b| b.events.len()).collect();
        assert_eq!(sizes, [4, 4, 2]);
        assert_eq!(buffer.events(), 10);
        assert_eq!(
            buffer.front().unwrap().source.as_ref().unwrap().incarnation,
            7
        );

        assert_eq!(buffer.pop_front(), 4);
        buffer.form(&mut events(1), false);
        assert_eq!(sequences(&buffer), [2, 3, 4]);
    }

    #[test]
    fn the_oldest_whole_batches_make_room() {
        let mut buffer = buffer(3, 6);
        assert_eq!(buffer.form(&mut events(9), false), 3);
        assert_eq!(sequences(&buffer), [2, 3]);
        assert_eq!(buffer.events(), 6);
    }

    #[test]
    fn a_batch_in_flight_is_spared() {
        let mut buffer = buffer(3, 6);
        buffer.form(&mut events(3), false);
        assert_eq!(buffer.form(&mut events(6), true), 3);
        assert_eq!(sequences(&buffer), [1, 3]);
        // With only the batch in flight and the newest left, nothing more goes.
        assert_eq!(buffer.form(&mut events(3), true), 3);
        assert_eq!(sequences(&buffer), [1, 4]);
        assert_eq!(buffer.clear(), 6);
        assert!(buffer.is_empty());
    }
}
