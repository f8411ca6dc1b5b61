//! The one task that runs audits: on a schedule and on request, one at a
//! time. Requests that arrive while an audit runs wait for the next one and
//! share it, so a burst of `RunAudit` calls costs two audits, not one each.

use std::sync::Arc;
use std::time::Duration;

use automation_proto::v1::AuditReport;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::audit::Auditor;

/// A request for an audit.
struct Job {
    reason: String,
    reply: oneshot::Sender<Arc<AuditReport>>,
}

/// Asks the engine for audits; cheap to clone.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    jobs: mpsc::Sender<Job>,
    latest: watch::Receiver<Option<Arc<AuditReport>>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("reason", &self.reason).finish()
    }
}

impl EngineHandle {
    /// Audits (or joins the next audit) and returns its report; `None`
    /// when the engine has stopped.
    pub async fn run(&self, reason: &str) -> Option<Arc<AuditReport>> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                reason: reason.to_owned(),
                reply,
            })
            .await
            .ok()?;
        answer.await.ok()
    }

    /// The report of the last audit this process ran, if any.
    pub fn latest(&self) -> Option<Arc<AuditReport>> {
        self.latest.borrow().clone()
    }

    /// Follows finished audits.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<AuditReport>>> {
        self.latest.clone()
    }
}

/// Starts the engine: an audit at once when `on_start`, then every
/// `interval` (none: on request only), until `stop`; the audit in progress
/// then finishes (it is bounded by the analysis timeout).
pub fn spawn(
    auditor: Arc<Auditor>,
    interval: Option<Duration>,
    on_start: bool,
    stop: CancellationToken,
) -> (EngineHandle, JoinHandle<()>) {
    let (jobs, mut queue) = mpsc::channel::<Job>(256);
    let (latest_tx, latest) = watch::channel(None);
    let task = tokio::spawn(async move {
        let mut ticker = interval.map(|every| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            t
        });
        let mut first = on_start;
        loop {
            let (reason, mut waiting) = if first {
                first = false;
                ("startup".to_owned(), Vec::new())
            } else {
                tokio::select! {
                    biased;
                    () = stop.cancelled() => break,
                    job = queue.recv() => match job {
                        Some(job) => (job.reason.clone(), vec![job]),
                        None => break,
                    },
                    _ = async {
                        match ticker.as_mut() {
                            Some(t) => t.tick().await,
                            None => std::future::pending().await,
                        }
                    } => ("schedule".to_owned(), Vec::new()),
                }
            };
            // Everyone already waiting shares this audit.
            while let Ok(job) = queue.try_recv() {
                waiting.push(job);
            }
            let report = Arc::new(auditor.audit(&reason).await);
            latest_tx.send_replace(Some(Arc::clone(&report)));
            for job in waiting {
                let _ = job.reply.send(Arc::clone(&report));
            }
        }
    });
    (EngineHandle { jobs, latest }, task)
}
