//! The event reporter: the client each service embeds to send its events to
//! the collector (DESIGN §4, §7).
//!
//! [`Reporter::report`] never blocks and never fails: it bounds the event's
//! free text, stamps the event and queues it. One task per reporter forms
//! batches (by count, by encoded size and by time), gives each the reporter's
//! [`Source`](automation_proto::v1::Source) and the next `sequence`, and pushes
//! them in order, one at a time, retrying with jittered exponential backoff
//! ([`crate::backoff`]) until the collector acknowledges them. A replay carries the same sequence,
//! so the collector applies it once. A batch the collector refuses for good
//! (`INVALID_ARGUMENT`, `OUT_OF_RANGE`) is dropped, so it never blocks the
//! batches behind it. Waiting events are kept up to a bound; beyond it the
//! oldest are dropped one by one (see
//! [`ReporterConfig::buffer_max_events`]). Every drop is counted, and the
//! count travels in every heartbeat.
//!
//! A service that keeps events durably itself (an outbox in its database,
//! so that a crash loses nothing it stored) sends them with
//! [`Reporter::push`]: one batch as it is, under an identity of its own that
//! stays the same when it is sent again, so the collector answers a resend
//! as a duplicate.
//!
//! # Layout
//!
//! * `reporter/shared.rs` — what the handles and the tasks share: the queue of
//!   reported events, the counters, the connection status.
//! * `reporter/buffer.rs` — the waiting events, bounded, and how a batch is
//!   taken from them by count and by encoded size.
//! * `reporter/limits.rs` — the bounds on an event's free text.
//! * `reporter/sender.rs` — the task that forms, pushes and retries batches.
//! * `reporter/heartbeat.rs` — the task that reports a heartbeat every interval.
//! * `reporter/connection.rs` — the gRPC channel, TLS and the bearer token.

mod buffer;
mod connection;
mod heartbeat;
mod limits;
mod sender;
mod shared;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use automation_proto::v1::{
    Event, EventBatch, Goodbye, Heartbeat, PushResponse, Source, event::Payload,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::shared::Shared;

/// The shortest heartbeat interval a reporter accepts. The collector wants
/// an interval above zero, and a shorter one would only load it.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// How a [`Reporter`] reaches the collector and how much it keeps.
#[derive(Debug, Clone)]
pub struct ReporterConfig {
    /// The collector's gRPC endpoint, `http://host:port`, or `https://` for TLS.
    pub endpoint: String,
    /// The reporting service (`test-watcher`, `audit-agent`, `api-gateway`).
    pub service: String,
    /// This instance's name (`INSTANCE`, the pod name in Kubernetes).
    pub instance: String,
    /// The service's version.
    pub version: String,
    /// A file holding the bearer token (one line), re-read when it changes.
    pub token_file: Option<PathBuf>,
    /// The CA certificate (PEM) for `https://` endpoints; system roots when `None`.
    pub tls_ca_file: Option<PathBuf>,
    /// How often a heartbeat is reported (default 10 s); at least
    /// [`MIN_HEARTBEAT_INTERVAL`], or [`Reporter::start`] refuses it.
    pub heartbeat_interval: Duration,
    /// Events per batch at most (default 500; at most `buffer_max_events`).
    pub batch_max_events: usize,
    /// A batch's encoded size (protobuf) at most, in bytes (default 1 MiB).
    /// A batch closes when the next event would take it over; an event larger
    /// than this on its own (which [`Reporter::report`]'s bounds on free text
    /// make unlikely) goes in a batch alone. Keep it well under the
    /// collector's `MAX_BATCH_BYTES` (default 4 MiB), which refuses larger
    /// batches whole.
    pub batch_max_bytes: usize,
    /// How long an event waits at most before its batch is formed (default
    /// 200 ms), unless a batch is being sent: batches go one at a time.
    pub batch_max_delay: Duration,
    /// Events kept at most, unacknowledged and waiting together (default
    /// 50 000).
    ///
    /// Reported events wait in one queue; the sender forms a batch from the
    /// oldest of them only when it is free to send it, and keeps that one
    /// batch until the collector acknowledges it or refuses it for good. The
    /// batch being sent counts against this bound: while it holds `n` events,
    /// `buffer_max_events - n` may wait. When an event is reported and that
    /// many wait already, the oldest waiting event is dropped to make room
    /// (single events, never whole batches) and counted in
    /// [`ReporterStats::dropped_events`] and in the heartbeat. The batch being
    /// sent is never dropped for room, as the collector may have applied it
    /// already; so in the one case where it alone fills the bound
    /// (`batch_max_events` equal to `buffer_max_events`), the newest event
    /// still waits beside it, one over the bound.
    pub buffer_max_events: usize,
    /// The scale of retry delays (default 100 ms): the first retry after a
    /// failure waits a random time between half and twice this, and each
    /// retry in a row after it up to twice as long as the one before could
    /// (from half this), never more than `retry_max`.
    pub retry_min: Duration,
    /// The longest retry delay (default 10 s).
    pub retry_max: Duration,
    /// How long one push attempt may take, connecting included (default 5 s).
    pub push_timeout: Duration,
    /// How long establishing a connection may take (default 3 s).
    pub connect_timeout: Duration,
    /// Whether the heartbeat carries the process's count of dropped trace
    /// spans (default true). Where one process runs several reporters (the
    /// stack), one of them does, so the count is not multiplied.
    pub reports_spans_dropped: bool,
}

impl ReporterConfig {
    /// A configuration with the default limits and intervals.
    pub fn new(
        endpoint: impl Into<String>,
        service: impl Into<String>,
        instance: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            service: service.into(),
            instance: instance.into(),
            version: version.into(),
            token_file: None,
            tls_ca_file: None,
            heartbeat_interval: Duration::from_secs(10),
            batch_max_events: 500,
            batch_max_bytes: 1 << 20,
            batch_max_delay: Duration::from_millis(200),
            buffer_max_events: 50_000,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            push_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            reports_spans_dropped: true,
        }
    }
}

/// A reporter could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ReporterError {
    /// The collector client cannot be set up: its endpoint, token file or
    /// CA file.
    #[error("{setting}: {0}", setting = .0.setting("COLLECTOR_ENDPOINT", "COLLECTOR_TOKEN_FILE"))]
    Client(#[from] crate::client::ClientError),
    /// The service or instance name is empty; the collector would refuse every batch.
    #[error("the reporter's {0} name is empty")]
    EmptyName(&'static str),
    /// The heartbeat interval is below [`MIN_HEARTBEAT_INTERVAL`]; the
    /// collector refuses a heartbeat whose interval is zero.
    #[error(
        "the heartbeat interval {} is too short: it must be at least {}",
        humantime::format_duration(*.0),
        humantime::format_duration(MIN_HEARTBEAT_INTERVAL)
    )]
    HeartbeatInterval(Duration),
    /// [`Reporter::start`] was called outside a Tokio runtime.
    #[error("the reporter must be started inside a Tokio runtime")]
    NoRuntime,
}

/// A batch sent with [`Reporter::push`] was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The collector refused it for good (invalid, or larger than it
    /// decodes): sending it again cannot succeed.
    #[error("the collector refused the batch: {0}")]
    Refused(String),
    /// It did not get through, or its answer did not: it may have been
    /// applied. Send it again unchanged; a replay is answered as a duplicate.
    #[error("the batch was not acknowledged: {0}")]
    Failed(String),
}

/// What a service adds to each heartbeat: its live values (pending bridge
/// tasks, changed files waiting, requests in flight) that events cannot rebuild.
///
/// Called once per heartbeat on a blocking thread; keep it quick.
pub trait LiveState: Send + Sync + 'static {
    /// Sets the service's fields (`bridge`, `watcher`, `gateway`) of `heartbeat`.
    fn fill(&self, heartbeat: &mut Heartbeat);
}

/// No live values.
impl LiveState for () {
    fn fill(&self, _heartbeat: &mut Heartbeat) {}
}

/// A reporter's counters and connection status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReporterStats {
    /// Batches the collector acknowledged (duplicates included).
    pub sent_batches: u64,
    /// Events in acknowledged batches.
    pub acked_events: u64,
    /// Events given up on: the buffer was full, the collector refused their
    /// batch for good (invalid or too large), or shutdown's deadline passed
    /// before they were acknowledged.
    pub dropped_events: u64,
    /// Events reported and not yet acknowledged: waiting, or in the batch
    /// being sent. At most [`ReporterConfig::buffer_max_events`].
    pub buffered_events: u64,
    /// The most recent push failure, kept after the collector answers again.
    pub last_error: Option<String>,
    /// Whether the collector answered the last push.
    pub connected: bool,
}

/// The handle services hold: cheap to clone, usable from async code and from
/// plain threads.
#[derive(Clone)]
pub struct Reporter {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// The reporter's own source, for [`Reporter::source`].
    source: Source,
    /// For [`Reporter::push`], beside the sender's batches.
    connection: connection::Connection,
    /// Stops both tasks at once, without flushing, when the last handle goes.
    stop: CancellationToken,
    tasks: Mutex<Option<Tasks>>,
}

struct Tasks {
    sender: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Reporter {
    /// Starts the reporter's tasks on the current Tokio runtime.
    ///
    /// A malformed endpoint, an unusable token or CA file, an empty service or
    /// instance name, or a heartbeat interval under [`MIN_HEARTBEAT_INTERVAL`]
    /// is an error; a collector that is not up is not: the reporter connects
    /// lazily and retries, keeping what is reported meanwhile.
    pub fn start(
        config: ReporterConfig,
        live: Arc<dyn LiveState>,
    ) -> Result<Reporter, ReporterError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| ReporterError::NoRuntime)?;
        if config.service.is_empty() {
            return Err(ReporterError::EmptyName("service"));
        }
        if config.instance.is_empty() {
            return Err(ReporterError::EmptyName("instance"));
        }
        if config.heartbeat_interval < MIN_HEARTBEAT_INTERVAL {
            return Err(ReporterError::HeartbeatInterval(config.heartbeat_interval));
        }
        let connection = connection::Connection::new(&config)?;
        let incarnation = loop {
            let candidate = rand::random::<u64>();
            if candidate != 0 {
                break candidate;
            }
        };
        let shared = Arc::new(Shared::new(&config, incarnation));
        let stop = CancellationToken::new();
        let sender = runtime.spawn(
            sender::Sender::new(&config, Arc::clone(&shared), connection.clone()).run(stop.clone()),
        );
        let heartbeat = runtime.spawn(heartbeat::run(
            config.heartbeat_interval,
            config.reports_spans_dropped,
            Arc::clone(&shared),
            live,
            stop.clone(),
        ));
        tracing::info!(
            endpoint = %config.endpoint,
            service = %config.service,
            instance = %config.instance,
            incarnation,
            "event reporter started"
        );
        Ok(Reporter {
            inner: Arc::new(Inner {
                shared,
                source: Source {
                    service: config.service.clone(),
                    instance: config.instance.clone(),
                    version: config.version.clone(),
                    incarnation,
                },
                connection,
                stop,
                tasks: Mutex::new(Some(Tasks { sender, heartbeat })),
            }),
        })
    }

    /// Queues one event, stamped with the current time. Never blocks, never
    /// fails: when the buffer is full the oldest waiting event makes room and
    /// is counted as dropped (see [`ReporterConfig::buffer_max_events`]);
    /// after [`shutdown`](Self::shutdown) events are dropped and counted.
    ///
    /// Free text is bounded first, so that no event is too large to send:
    /// `ComponentError.message` and `Goodbye.reason` to 4 KiB, and
    /// `TestRun.failed_tests` to 200 names of at most 512 bytes each
    /// (`tests_failed` keeps the count). A cut text ends with `…(truncated)`,
    /// cut at a character boundary. Label-like fields (`kind`, `model`,
    /// `error_kind`, `currency`) are cut at 1 KiB, far above what the
    /// collector accepts as a label, so such an event is still rejected as
    /// before, only without its megabytes.
    pub fn report(&self, payload: Payload) {
        self.inner.shared.report(payload);
    }

    /// The reporter's incarnation: random, non-zero, fixed for its lifetime.
    pub fn incarnation(&self) -> u64 {
        self.inner.shared.incarnation()
    }

    /// The source the reporter's batches carry: service, instance, version
    /// and incarnation.
    pub fn source(&self) -> Source {
        self.inner.source.clone()
    }

    /// `payload` as [`report`](Self::report) would queue it: free text
    /// bounded, stamped with the current time. For events a service keeps
    /// itself and sends later with [`push`](Self::push).
    pub fn event(mut payload: Payload) -> Event {
        limits::bound(&mut payload);
        Event {
            time: Some(std::time::SystemTime::now().into()),
            payload: Some(payload),
        }
    }

    /// Pushes `batch` as it is, its source and sequence included, once,
    /// over the reporter's connection (TLS, bearer token) and within its push
    /// timeout, beside the reporter's own batches. For events a service keeps
    /// durably itself: under an incarnation and sequences of its own that
    /// stay the same when it sends a batch again, a resend after a crash is
    /// answered as a duplicate. Retrying, and keeping the batch until it is
    /// acknowledged, are the caller's business.
    pub async fn push(&self, batch: EventBatch) -> Result<PushResponse, PushError> {
        self.inner.connection.push(batch).await.map_err(|status| {
            let error = sender::describe(&status);
            if sender::is_final(status.code()) {
                PushError::Refused(error)
            } else {
                PushError::Failed(error)
            }
        })
    }

    /// Counts `events` the caller gave up on (trimmed from its own outbox
    /// for room, say) as dropped: in [`ReporterStats::dropped_events`] and in
    /// the heartbeat.
    pub fn count_dropped(&self, events: u64) {
        self.inner.shared.add_dropped(events);
    }

    /// The counters and the connection status.
    pub fn stats(&self) -> ReporterStats {
        self.inner.shared.stats()
    }

    /// For the health checker: `Ok` while the collector acknowledges pushes,
    /// the last error otherwise. Reads cached state only.
    pub async fn check(&self) -> Result<(), String> {
        self.inner.shared.check()
    }

    /// Adds the collector, as seen by `reporter`, to `health` as a
    /// dependency: `degraded` with its last error while pushes fail, never
    /// unready (DESIGN §6). Without a reporter, `health` is unchanged.
    pub fn watched_by(
        reporter: Option<&Reporter>,
        health: automation_health::HealthBuilder,
    ) -> automation_health::HealthBuilder {
        let Some(reporter) = reporter.cloned() else {
            return health;
        };
        health.dependency("collector", move || {
            let reporter = reporter.clone();
            async move { reporter.check().await }
        })
    }

    /// Says goodbye and flushes: reports a [`Goodbye`] with `reason`, then keeps
    /// pushing until everything is acknowledged or `deadline` has passed, and
    /// stops the reporter's tasks. What could not be delivered is counted as
    /// dropped in the returned figures.
    pub async fn shutdown(self, reason: &str, deadline: Duration) -> ReporterStats {
        let tasks = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(Tasks { sender, heartbeat }) = tasks else {
            return self.stats();
        };
        // No heartbeat may follow the goodbye: the instance would look alive again.
        heartbeat.abort();
        let _ = heartbeat.await;
        let shared = &self.inner.shared;
        shared.close(Payload::Goodbye(Goodbye {
            reason: reason.to_owned(),
        }));
        shared.begin_flush(shared::after(deadline));
        // The sender honours the deadline itself; this only guards against a
        // sender that cannot run (a runtime shutting down).
        let grace = deadline.saturating_add(Duration::from_secs(1));
        if tokio::time::timeout(grace, sender).await.is_err() {
            self.inner.stop.cancel();
            shared.drop_everything();
        }
        let stats = self.stats();
        tracing::info!(
            acked_events = stats.acked_events,
            dropped_events = stats.dropped_events,
            "event reporter stopped"
        );
        stats
    }
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("incarnation", &self.incarnation())
            .field("stats", &self.stats())
            .finish()
    }
}
