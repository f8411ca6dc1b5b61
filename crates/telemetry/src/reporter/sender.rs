//! The task that forms batches and pushes them, in order, one at a time.
//!
//! A batch is formed when the sender is free to push it: from the oldest
//! waiting events, once a batch's worth waits (by count or by size), the
//! oldest has waited the batch delay, or shutdown began. It stays the batch
//! being sent, retried under the same sequence, until the collector
//! acknowledges it or refuses it for good. One task owns it, so it needs no
//! lock: the task waits on whichever comes first of the push in flight, the
//! retry timer, the batch delay, a wake-up from `report()`, shutdown's
//! deadline, and the stop signal.

use std::sync::Arc;
use std::time::Duration;

use automation_proto::v1::{EventBatch, PushResponse, Source};
use prost::Message;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use super::ReporterConfig;
use super::connection::{Attempt, Connection};
use super::shared::{Shared, after, after_from};
use crate::backoff::Backoff;
use crate::client::append_causes;

/// Failures after the first are logged at warn once per this period.
const WARN_EVERY: Duration = Duration::from_secs(30);

pub(super) struct Sender {
    shared: Arc<Shared>,
    connection: Connection,
    source: Source,
    next_sequence: u64,
    backoff: Backoff,
    batch_delay: Duration,
    /// The batch being sent: formed, not yet acknowledged or given up.
    current: Option<EventBatch>,
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
        Self {
            shared,
            connection,
            source,
            next_sequence: 1,
            backoff: Backoff::new(config.retry_min, config.retry_max),
            batch_delay: config.batch_max_delay,
            current: None,
            retry_at: None,
            in_flight: None,
            flush_by: None,
            failures: FailureLog::default(),
        }
    }

    pub(super) async fn run(mut self, stop: CancellationToken) {
        loop {
            let form_at = self.form();
            if self.in_flight.is_none()
                && self.retry_at.is_none()
                && let Some(batch) = &self.current
            {
                self.in_flight = Some(self.connection.push(batch.clone()));
            }
            // Flushing forms a batch whenever an event waits, so no batch
            // means nothing is left.
            if self.flush_by.is_some() && self.current.is_none() {
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
                // The loop forms the batch once it is due.
                () = sleep_until_some(form_at) => {}
                () = self.shared.wake.notified() => {}
            }
        }
    }

    /// Notes whether shutdown began, and forms the next batch if none is
    /// being sent and one is due. Returns when one will be due (`None`: a
    /// batch is being sent, or nothing waits).
    fn form(&mut self) -> Option<Instant> {
        let mut queue = self.shared.queue();
        if let Some(deadline) = queue.flush_by {
            self.flush_by = Some(deadline);
        }
        if self.current.is_some() {
            return None;
        }
        let since = queue.waiting.since()?;
        let due_at = after_from(since, self.batch_delay);
        let due = self.flush_by.is_some()
            || queue.waiting.len() >= self.shared.batch_max_events()
            || queue.waiting.bytes() >= self.shared.batch_max_bytes()
            || Instant::now() >= due_at;
        if !due {
            return Some(due_at);
        }
        let mut batch = EventBatch {
            source: Some(self.source.clone()),
            sequence: self.next_sequence,
            events: Vec::new(),
        };
        let base = batch.encoded_len();
        batch.events = queue.waiting.take(
            self.shared.batch_max_events(),
            self.shared.batch_max_bytes(),
            base,
        );
        queue.sending = batch.events.len();
        drop(queue);
        self.next_sequence += 1;
        self.current = Some(batch);
        None
    }

    fn settle(&mut self, result: Result<PushResponse, Status>) {
        self.in_flight = None;
        let (sequence, events) = self
            .current
            .as_ref()
            .map_or((0, 0), |batch| (batch.sequence, batch.events.len()));
        match result {
            Ok(response) => {
                self.shared.acknowledged(events);
                self.finished();
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
            Err(status) if is_final(status.code()) => {
                // The collector will never take this batch (invalid, or
                // larger than it decodes); retrying would block every batch
                // behind it.
                self.shared.add_dropped(events as u64);
                self.finished();
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
    }

    /// The batch being sent was acknowledged or given up for good.
    fn finished(&mut self) {
        self.current = None;
        self.shared.queue().sending = 0;
    }

    /// Shutdown's deadline passed: what is left will not be delivered.
    fn give_up(&mut self) {
        self.in_flight = None;
        self.current = None;
        let left = {
            let mut queue = self.shared.queue();
            let left = queue.waiting.clear() + std::mem::take(&mut queue.sending);
            self.shared.add_dropped(left as u64);
            left
        };
        if left > 0 {
            tracing::warn!(
                events = left,
                "shutdown deadline passed; undelivered events dropped"
            );
        }
    }
}

/// Answers that no retry can change: the batch is refused for good.
/// `OUT_OF_RANGE` is what tonic answers for a message over its decoding limit.
pub(super) fn is_final(code: Code) -> bool {
    matches!(code, Code::InvalidArgument | Code::OutOfRange)
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
pub(super) fn describe(status: &Status) -> String {
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
