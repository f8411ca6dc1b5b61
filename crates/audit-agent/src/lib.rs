//! The audit-agent: audits a git repository on a schedule and on demand —
//! new commits, plan items in Markdown, line coverage — keeps the history in
//! SQLite so nothing is counted twice, and reports every audit.
//!
//! Layout:
//! * [`git`]: commits since the last audited head, history rewrites (libgit2).
//! * [`markers`]: plan items in Markdown (pulldown-cmark), code blocks skipped.
//! * [`coverage`]: LCOV, Cobertura XML, llvm-cov JSON.
//! * [`store`]: the SQLite history, schema versions, backup and restore.
//! * [`audit`]: one audit, stored then reported; [`engine`]: one at a time,
//!   on a schedule and on request.
//! * [`outbox`]: each stored audit's events, sent from the database until
//!   the collector acknowledged them, so a crash loses and doubles nothing.
//! * [`server`]: `automation.v1.AuditAgent`; [`config`]: the command line.
//!
//! Run it with `cargo run -p automation-audit-agent --bin audit-agent`; it
//! listens on gRPC :50053 and HTTP :9402 (`/health`, `/ready`).

pub mod audit;
pub mod config;
pub mod coverage;
pub mod engine;
pub mod git;
pub mod markers;
pub mod model;
pub mod outbox;
pub mod server;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use automation_async_bridge::Bridge;
use automation_health::HealthChecker;
use automation_proto::v1::audit_agent_server::AuditAgentServer;
use automation_runtime::binary::ServiceError;
use automation_runtime::config::{ServiceConfig, usable_directory};
use automation_runtime::serve::{Extra, Listeners, ServeError};
use automation_runtime::service::{Running, Runtime};
use automation_telemetry::bridge::BridgeLiveState;
use automation_telemetry::reporter::ReporterError;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;

pub use crate::audit::{AuditConfig, Auditor};
use crate::engine::EngineHandle;
use crate::store::{Store, StoreError};

/// Everything [`start`] needs besides its listeners.
#[derive(Debug, Clone)]
pub struct Config {
    /// What every service's configuration holds.
    pub service: ServiceConfig,
    /// What an audit looks at.
    pub audit: AuditConfig,
    /// The SQLite file.
    pub database: PathBuf,
    /// How long to wait for a database another process has locked.
    pub database_busy_timeout: Duration,
    /// Audit this often (`None`: on request only).
    pub interval: Option<Duration>,
    /// Audit once at start.
    pub audit_on_start: bool,
}

impl Config {
    /// Defaults: audit `repo` every 5 minutes and at start, history in `database`.
    pub fn new(instance: &str, repo: PathBuf, database: PathBuf) -> Self {
        Self {
            service: ServiceConfig::new(instance),
            audit: AuditConfig::new(repo),
            database,
            database_busy_timeout: Duration::from_secs(5),
            interval: Some(Duration::from_secs(300)),
            audit_on_start: true,
        }
    }
}

/// The audit-agent's name, in logs and its reports.
pub const NAME: &str = "audit-agent";

/// A running audit-agent.
pub type AuditAgent = Running<Handles, Error>;

/// What stops the audit-agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The repository path is not a readable directory.
    #[error("REPO_PATH {path}: {reason}")]
    Repository {
        /// The configured path.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// The database belongs to a newer version or to someone else.
    #[error(transparent)]
    Database(#[from] StoreError),
    /// The reporter could not start.
    #[error("reporter: {0}")]
    Reporter(#[from] ReporterError),
    /// The async bridge could not be built.
    #[error("async bridge: {0}")]
    Bridge(#[from] automation_async_bridge::BuildError),
    /// A server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

impl ServiceError for Error {
    /// Whether this is bad configuration (DESIGN §3, §7: exit code 64): a
    /// repository path that cannot be used, a database of a newer version
    /// or of another application, a reporter that cannot be set up.
    fn is_configuration(&self) -> bool {
        match self {
            Self::Repository { .. } => true,
            Self::Database(e) => e.is_fatal(),
            Self::Reporter(e) => !matches!(e, ReporterError::NoRuntime),
            Self::Bridge(_) | Self::Serve(_) => false,
        }
    }
}

/// A running audit-agent's handles, for the stack and tests.
#[derive(Debug, Clone)]
pub struct Handles {
    /// Runs audits.
    pub engine: EngineHandle,
    /// The health checker.
    pub health: HealthChecker,
}

/// How long a health check of the repository or the database may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// At shutdown, how long the outbox may take to deliver what is left
/// before the goodbye; what it cannot is sent at the next start.
const OUTBOX_FLUSH: Duration = Duration::from_secs(5);

/// Starts auditing and serving on `listeners`, until `shutdown` is
/// cancelled; then it shuts down gracefully: unready, requests drained, the
/// audit in progress finished, the outbox flushed, goodbye said.
pub async fn start(
    mut config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<AuditAgent, Error> {
    // Absolute, but with symbolic links kept: each audit follows a root that
    // is a link (git-sync publishes each checkout by swapping one) to
    // whatever it leads to then.
    let root = usable_directory(&config.audit.root).map_err(|reason| Error::Repository {
        path: config.audit.root.clone(),
        reason,
    })?;
    config.audit.root = root.clone();

    let builder = Bridge::builder().thread_name("audit-agent-bridge");
    let live = Arc::new(BridgeLiveState::new(builder.gauges()));
    let runtime = Runtime::start(NAME, &config.service, live)?;
    let bridge = runtime.bridge(builder)?;

    // A newer or foreign database stops us here, untouched; a locked or
    // corrupt one leaves us running, unready, retrying at every audit.
    let store = Arc::new(Store::new(
        config.database.clone(),
        config.database_busy_timeout,
    ));
    let connected = {
        let store = Arc::clone(&store);
        bridge
            .run_blocking(CHECK_TIMEOUT * 6, move || store.connect())
            .await
    };
    match connected {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.is_fatal() => {
            runtime.abandon("refused the database").await;
            return Err(Error::Database(e));
        }
        Ok(Err(e)) => tracing::error!(error = %e, "the database cannot be used yet"),
        Err(e) => tracing::error!(error = %e, "opening the database"),
    }

    let health = runtime.health(
        HealthChecker::builder(NAME)
            .required("repository", {
                let (bridge, root) = (bridge.clone(), root.clone());
                move || {
                    let (bridge, root) = (bridge.clone(), root.clone());
                    async move {
                        audit::blocking(&bridge, CHECK_TIMEOUT, move || git::open(&root).map(drop))
                            .await
                    }
                }
            })
            .required("database", {
                let (bridge, store) = (bridge.clone(), Arc::clone(&store));
                move || {
                    let (bridge, store) = (bridge.clone(), Arc::clone(&store));
                    async move {
                        audit::blocking(&bridge, CHECK_TIMEOUT, move || store.check_writable())
                            .await
                    }
                }
            }),
    );

    let auditor = Arc::new(Auditor::new(
        config.audit.clone(),
        Arc::clone(&store),
        bridge.clone(),
        runtime.reporter().cloned(),
    ));
    // At once: batches a previous run left (killed before they were
    // acknowledged) are sent before any new audit's.
    let outbox_stop = CancellationToken::new();
    let outbox_task = auditor.outbox().map(|outbox| {
        tokio::spawn(
            outbox
                .clone()
                .run(Arc::clone(&store), bridge.clone(), outbox_stop.clone()),
        )
    });
    let engine_stop = CancellationToken::new();
    let (engine, engine_task) = engine::spawn(
        Arc::clone(&auditor),
        config.interval,
        config.audit_on_start,
        engine_stop.clone(),
    );

    let routes = Routes::new(InterceptedService::new(
        AuditAgentServer::new(server::AuditAgentService::new(engine.clone(), auditor)),
        config.service.auth.clone(),
    ))
    .prepare();
    let handles = Handles {
        engine,
        health: health.clone(),
    };
    let grace = config.service.shutdown_grace;
    let drain = async move {
        engine_stop.cancel();
        if tokio::time::timeout(grace, engine_task).await.is_err() {
            tracing::warn!("the audit in progress did not finish within the grace period");
        }
        // Before the goodbye: a batch after it would make the instance look
        // alive again.
        outbox_stop.cancel();
        if let Some(task) = outbox_task {
            let abort = task.abort_handle();
            if tokio::time::timeout(OUTBOX_FLUSH, task).await.is_err() {
                abort.abort();
                tracing::info!("outbox batches left for the next start");
            }
        }
    };
    runtime.serve(
        &health,
        routes,
        axum::Router::new(),
        listeners,
        Extra::default(),
        shutdown,
        handles,
        drain,
    )
}
