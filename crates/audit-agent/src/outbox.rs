//! Durable reporting of stored audits (DESIGN §7: nothing lost, nothing
//! counted twice).
//!
//! An audit's events (its `AuditRun` and one `ComponentError` per problem)
//! are written to the database's outbox in the transaction that stores the
//! audit, so a fact is stored and queued for the collector at once or not
//! at all. One task sends the batches, oldest first, one at a time, each as
//! its own `EventBatch` through the reporter's connection, and deletes a
//! batch only once the collector acknowledged it. After a crash, whatever
//! is left is sent at the next start.
//!
//! A batch keeps its identity across sends: the source it was written under
//! (service, instance, version), the database's own outbox incarnation
//! (random once per database) and the row's id as its sequence. A batch
//! that reached the collector before a crash, but was not yet deleted, is
//! then a replay the collector answers as a duplicate without counting it
//! again (within its replay memory, 6 hours by default).

use std::sync::Arc;
use std::time::Duration;

use automation_async_bridge::Bridge;
use automation_proto::v1::{EventBatch, Source, event::Payload};
use automation_telemetry::backoff::Backoff;
use automation_telemetry::reporter::{PushError, Reporter};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::{Outgoing, Store, StoreError};

/// Events per outbox batch at most: with the reporter's bounds on free text
/// (a few KiB an event) a batch stays far under the collector's 4 MiB limit.
pub const MAX_BATCH_EVENTS: usize = 200;

/// Outbox batches kept at most (about 35 days of audits every 5 minutes
/// while the collector cannot be reached); beyond it the oldest are dropped
/// and counted in `automation_reporter_events_dropped_total`.
pub const MAX_BATCHES: u64 = 10_000;

/// Batches read from the database at a time.
const PAGE: u32 = 64;
/// The longest one database step of the sender may take.
const STORE_TIMEOUT: Duration = Duration::from_secs(30);
/// About the first retry after a failure, doubling up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Makes outbox batches for the auditor and sends them; cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    reporter: Reporter,
    wake: Arc<Notify>,
}

impl Outbox {
    /// An outbox sending through `reporter`.
    pub fn new(reporter: Reporter) -> Self {
        Self {
            reporter,
            wake: Arc::new(Notify::new()),
        }
    }

    /// One audit's events as outbox batches of at most [`MAX_BATCH_EVENTS`],
    /// bounded and stamped as the reporter does, under the reporter's
    /// source; the incarnation and sequence are set when sent.
    pub fn batches(&self, payloads: Vec<Payload>) -> Vec<EventBatch> {
        let source = Source {
            incarnation: 0,
            ..self.reporter.source()
        };
        let events: Vec<_> = payloads.into_iter().map(Reporter::event).collect();
        events
            .chunks(MAX_BATCH_EVENTS)
            .map(|chunk| EventBatch {
                source: Some(source.clone()),
                sequence: 0,
                events: chunk.to_vec(),
            })
            .collect()
    }

    /// Events of unsent batches that were dropped for room.
    pub fn dropped(&self, events: u64) {
        self.reporter.count_dropped(events);
    }

    /// New batches were stored: send them.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Sends the stored batches until `stop`, then makes one more pass,
    /// giving up at its first failure: what is left stays stored for the
    /// next start.
    pub async fn run(self, store: Arc<Store>, bridge: Bridge, stop: CancellationToken) {
        let mut retry = Backoff::new(RETRY_MIN, RETRY_MAX);
        let mut failing = false;
        loop {
            let last_pass = stop.is_cancelled();
            let wait = match self.send_page(&store, &bridge).await {
                Ok(true) => {
                    if failing {
                        tracing::info!("the outbox is being delivered again");
                        failing = false;
                    }
                    retry.reset();
                    continue;
                }
                Ok(false) if last_pass => return,
                Ok(false) => None,
                // Busy for a moment (an audit storing its batches, a read).
                Err(Failure::InUse) => Some(RETRY_MIN),
                Err(Failure::Failed(error)) if last_pass => {
                    tracing::info!(%error, "outbox batches left for the next start");
                    return;
                }
                Err(Failure::Failed(error)) => {
                    if failing {
                        tracing::debug!(%error, "outbox: retrying");
                    } else {
                        tracing::warn!(%error, "outbox batches cannot be delivered yet; retrying");
                        failing = true;
                    }
                    Some(retry.next_delay())
                }
            };
            match wait {
                Some(delay) if !last_pass => tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(delay) => {}
                },
                Some(delay) => tokio::time::sleep(delay).await,
                None => tokio::select! {
                    () = stop.cancelled() => {}
                    () = self.wake.notified() => {}
                },
            }
        }
    }

    /// Sends one page of stored batches, in order. `Ok(false)`: none waits.
    async fn send_page(&self, store: &Arc<Store>, bridge: &Bridge) -> Result<bool, Failure> {
        let pending = {
            let store = Arc::clone(store);
            on_store(bridge, move || store.outbox_pending(PAGE)).await?
        };
        if pending.is_empty() {
            return Ok(false);
        }
        for Outgoing { id, events, batch } in pending {
            let outcome = match batch {
                Ok(batch) => self.reporter.push(batch).await,
                Err(reason) => Err(PushError::Refused(format!(
                    "it cannot be decoded: {reason}"
                ))),
            };
            match outcome {
                Ok(_) => {}
                // Kept, it would block every batch behind it for ever.
                Err(PushError::Refused(error)) => {
                    tracing::error!(id, events, %error, "an outbox batch was refused for good; dropped it");
                    self.dropped(events);
                }
                Err(error @ PushError::Failed(_)) => {
                    return Err(Failure::Failed(error.to_string()));
                }
            }
            // Not deleted (busy, locked): sent again later, as a duplicate.
            let store = Arc::clone(store);
            on_store(bridge, move || store.outbox_sent(id)).await?;
        }
        Ok(true)
    }
}

/// Why a pass of the sender stopped short.
enum Failure {
    /// The store's connection was in use; try again in a moment.
    InUse,
    /// The collector or the database failed.
    Failed(String),
}

/// Runs a store step of the sender on the blocking pool.
async fn on_store<T: Send + 'static>(
    bridge: &Bridge,
    step: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Failure> {
    match bridge.run_blocking(STORE_TIMEOUT, step).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(StoreError::InUse { .. })) => Err(Failure::InUse),
        Ok(Err(e)) => Err(Failure::Failed(e.to_string())),
        Err(e) => Err(Failure::Failed(e.to_string())),
    }
}
