//! The task that forms batches and pushes them, in order, one at a time.
//!
//! One task owns the formed batches, so they need no lock: it waits on
//! whichever comes first of the push in flight, the retry timer, the batch
//! delay, a wake-up from `report()`, shutdown's deadline, and the stop signal.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use automation_proto::v1::{Event, PushResponse, Source};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use super::ReporterConfig;
use super::backoff::Backoff;
use super::buffer::BatchBuffer;
use super::connection::{Attempt, Connection, append_causes};
use super::shared::{Shared, after};

/// Failures after the first are logged at warn once per this period.
const WARN_EVERY: Duration = Duration::from_secs(30);

pub(super) struct Sender {
    shared: Arc<Shared>,
    connection: Connection,
    buffer: BatchBuffer,
    backoff: Backoff,
    batch_delay: Duration,
    /// The queue swapped in for `report()` when batches are formed; it keeps
    /// its capacity, so a steady stream of events allocates no queue.
    spare: VecDeque<Event>,
    form_at: Option<Instant>,
    retry_at: Option<Instant>,
    in_flight: Option<Attempt>,
    flush_by: Option<Instant>,
    failures: FailureLog,
}

impl Sender {
    pub(super) fn new(
        config: &ReporterConfig,
        shared: Arc<Shared>,
        connection: Connection,
    ) -> Self {
        let source = Source {
            service: config.service.clone(),
            instance: config.instance.clone(),
            version: config.version.clone(),
            incarnation: shared.incarnation(),
        };
        let buffer = BatchBuffer::new(source, shared.batch_max(), config.buffer_max_events);
        Self {
            shared,
            connection,
            buffer,
            backoff: Backoff::new(config.retry_min, config.retry_max),
            batch_delay: config.batch_max_delay,
            spare: VecDeque::new(),
            form_at: None,
            retry_at: None,
            in_flight: None,
            flush_by: None,
            failures: FailureLog::default(),
        }
    }

    pub(super) async fn run(mut self, stop: CancellationToken) {
        loop {
            if self.in_flight.is_none()
                && self.retry_at.is_none()
                && let Some(batch) = self.buffer.front()
            {
                self.in_flight = Some(self.connection.push(batch.clone()));
            }
            if self.flush_by.is_some() && self.in_flight.is_none() && self.buffer.is_empty() {
                return;
            }
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                result = outcome(&mut self.in_flight) => self.settle(result),
                () = sleep_until_some(self.flush_by) => {
                    self.give_up();
                    return;
                }
                () = sleep_until_some(self.retry_at) => self.retry_at = None,
                () = sleep_until_some(self.form_at) => self.form(),
                () = self.shared.wake.notified() => self.woken(),
            }
        }
    }

    /// `report()` queued a first event (its delay starts now), filled a batch,
    /// or shutdown began.
    fn woken(&mut self) {
        let (queued, flush_by) = {
            let pending = self.shared.pending();
            (pending.events.len(), pending.flush_by)
        };
        if flush_by.is_some() {
            self.flush_by = flush_by;
        }
        if queued == 0 {
            return;
        }
        if self.flush_by.is_some() || queued >= self.shared.batch_max() {
            self.form();
        } else if self.form_at.is_none() {
            self.form_at = Some(after(self.batch_delay));
        }
    }

    fn form(&mut self) {
        self.form_at = None;
        std::mem::swap(&mut self.shared.pending().events, &mut self.spare);
        let dropped = self.buffer.form(&mut self.spare, self.in_flight.is_some());
        if dropped > 0 {
            self.shared.add_dropped(dropped as u64);
            tracing::debug!(dropped, "event buffer full; dropped the oldest batches");
        }
        self.shared.set_batched(self.buffer.events());
    }

    fn settle(&mut self, result: Result<PushResponse, Status>) {
        self.in_flight = None;
        let sequence = self.buffer.front().map_or(0, |batch| batch.sequence);
        match result {
            Ok(response) => {
                let events = self.buffer.pop_front();
                self.shared.acknowledged(events);
                self.backoff.reset();
                self.failures.recovered();
                if response.sequence != sequence {
                    tracing::debug!(
                        sent = sequence,
                        answered = response.sequence,
                        "the collector answered for another sequence"
                    );
                }
            }
            Err(status) if status.code() == Code::InvalidArgument => {
                // The collector will never take this batch; retrying would
                // block every batch behind it.
                let events = self.buffer.pop_front();
                self.shared.add_dropped(events as u64);
                let error = describe(&status);
                tracing::error!(sequence, events, %error, "the collector refused a batch; dropped it");
                self.shared.refused(error);
                self.backoff.reset();
            }
            Err(status) => {
                let error = describe(&status);
                self.failures.failed(&error);
                self.shared.failed(error);
                self.retry_at = Some(after(self.backoff.next_delay()));
            }
        }
        self.shared.set_batched(self.buffer.events());
    }

    /// Shutdown's deadline passed: what is left will not be delivered.
    fn give_up(&mut self) {
        self.in_flight = None;
        let waiting = std::mem::take(&mut self.shared.pending().events).len();
        let left = self.buffer.clear() + waiting;
        self.shared.add_dropped(left as u64);
        self.shared.set_batched(0);
        if left > 0 {
            tracing::warn!(
                events = left,
                "shutdown deadline passed; undelivered events dropped"
            );
        }
    }
}

async fn outcome(attempt: &mut Option<Attempt>) -> Result<PushResponse, Status> {
    match attempt {
        Some(attempt) => attempt.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `Unavailable: tcp connect error: ... Connection refused`: the code, the
/// message and the causes, without `Status`'s debug rendering.
fn describe(status: &Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    append_causes(&mut text, std::error::Error::source(status));
    text
}

/// Logs push failures without flooding: the first at warn, then one warn per
/// [`WARN_EVERY`] with the count, the rest at debug.
#[derive(Default)]
struct FailureLog {
    failures: u64,
    since: Option<Instant>,
    last_warn: Option<Instant>,
}

impl FailureLog {
    fn failed(&mut self, error: &str) {
        self.failures += 1;
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        match self.last_warn {
            Some(at) if now.duration_since(at) < WARN_EVERY => {
                tracing::debug!(%error, "push to the collector failed; retrying");
            }
            Some(_) => {
                tracing::warn!(
                    %error,
                    failures = self.failures,
                    failing_for_s = now.duration_since(since).as_secs(),
                    "still cannot push events to the collector; retrying"
                );
                self.last_warn = Some(now);
            }
            None => {
                tracing::warn!(%error, "cannot push events to the collector; retrying");
                self.last_warn = Some(now);
            }
        }
    }

    fn recovered(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                failures = self.failures,
                "the collector acknowledges events again"
            );
        }
        *self = Self::default();
    }
}
