//! The test-watcher: watches a source tree, debounces changes, runs the
//! tests in a killable process group, parses the results and reports every
//! step to the collector.
//!
//! Layout:
//! * [`filter`]: which paths matter (git ignore rules, always-ignored dirs, extensions).
//! * [`watch`]: notify watches, handed to async code through the async bridge.
//! * [`debounce`]: changes gather until the tree is quiet.
//! * [`runner`]: the test command in its own process group, with a timeout.
//! * [`results`]: libtest output and JUnit XML.
//! * [`engine`]: batches and triggers into runs (`--on-busy`), results out.
//! * [`explain`]: failed runs explained by the api-gateway (`GATEWAY_ENDPOINT`).
//! * [`server`]: `automation.v1.TestWatcher`; [`config`]: the command line.
//!
//! Run it with `cargo run -p automation-test-watcher --bin test-watcher`;
//! it listens on gRPC :50052 and HTTP :9401 (`/health`, `/ready`).

pub mod config;
pub mod debounce;
pub mod engine;
pub mod explain;
pub mod filter;
pub mod results;
pub mod runner;
pub mod server;
pub mod watch;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use automation_async_bridge::Bridge;
use automation_health::{HealthChecker, StartupGuard};
use automation_proto::v1::{self, WatcherStatus, test_watcher_server::TestWatcherServer};
use automation_runtime::binary::ServiceError;
use automation_runtime::config::{ServiceConfig, usable_directory};
use automation_runtime::serve::{Extra, Listeners, ServeError};
use automation_runtime::service::{Running, Runtime};
use automation_telemetry::bridge::BridgeLiveState;
use automation_telemetry::reporter::{LiveState, Reporter, ReporterError};
use tokio::sync::{mpsc, watch as status_watch};
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;

use crate::engine::{EngineConfig, EngineHandle};
use crate::explain::GatewayConfig;
use crate::filter::Filter;
use crate::watch::{Identity, Watch, WatchEvent, WatchSlot};

/// Everything [`start`] needs besides its listeners.
#[derive(Debug, Clone)]
pub struct Config {
    /// What every service's configuration holds.
    pub service: ServiceConfig,
    /// What runs and how.
    pub engine: EngineConfig,
    /// File extensions that count (empty: all).
    pub extensions: Vec<String>,
    /// Poll at this interval instead of native events.
    pub poll: Option<Duration>,
    /// Run once at start.
    pub run_on_start: bool,
    /// The api-gateway that explains failed runs; `None`: no explanations.
    pub gateway: Option<GatewayConfig>,
}

impl Config {
    /// Defaults: `cargo test` in `root`, 100 ms debounce, queue on busy.
    pub fn new(instance: &str, root: PathBuf) -> Self {
        Self {
            service: ServiceConfig::new(instance),
            engine: EngineConfig {
                root,
                command: "cargo test".to_owned(),
                debounce: Duration::from_millis(100),
                on_busy: engine::OnBusy::Queue,
                timeout: Duration::from_secs(30 * 60),
                kill_grace: Duration::from_secs(5),
                junit: None,
                output_limit: 4 << 20,
            },
            extensions: Vec::new(),
            poll: None,
            run_on_start: false,
            gateway: None,
        }
    }
}

/// The test-watcher's name, in logs and its reports.
pub const NAME: &str = "test-watcher";

/// A running test-watcher.
pub type TestWatcher = Running<Handles, Error>;

/// What stops the test-watcher.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The watch root is not a readable directory.
    #[error("WATCH_ROOT {path}: {reason}")]
    Root {
        /// The configured root.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// The reporter could not start.
    #[error("reporter: {0}")]
    Reporter(#[from] ReporterError),
    /// The api-gateway client could not be configured.
    #[error(transparent)]
    Gateway(#[from] explain::GatewayError),
    /// The async bridge could not be built.
    #[error("async bridge: {0}")]
    Bridge(#[from] automation_async_bridge::BuildError),
    /// A server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

impl ServiceError for Error {}

/// A running test-watcher's handles, for the stack and tests.
#[derive(Debug, Clone)]
pub struct Handles {
    /// The engine.
    pub engine: EngineHandle,
    /// The health checker.
    pub health: HealthChecker,
}

/// The heartbeat's live values: changed files waiting, bridge gauges.
struct Live {
    status: Mutex<Option<status_watch::Receiver<WatcherStatus>>>,
    bridge: BridgeLiveState,
}

impl LiveState for Live {
    fn fill(&self, heartbeat: &mut v1::Heartbeat) {
        self.bridge.fill(heartbeat);
        if let Some(status) = &*self.status.lock().unwrap_or_else(PoisonError::into_inner) {
            heartbeat.watcher = Some(v1::WatcherState {
                changed_files_pending: status.borrow().pending_changes,
            });
        }
    }
}

/// Starts watching, running and serving on `listeners`, until `shutdown`
/// is cancelled; then it shuts down gracefully: unready, drained, the run
/// in progress killed, goodbye said.
pub async fn start(
    mut config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<TestWatcher, Error> {
    // Absolute, but with symbolic links kept: a root that is a link (git-sync
    // publishes each checkout by swapping one) is followed to whatever it
    // leads to, for the watch and for every run.
    let root = usable_directory(&config.engine.root).map_err(|reason| Error::Root {
        path: config.engine.root.clone(),
        reason,
    })?;
    config.engine.root = root.clone();

    let builder = Bridge::builder().thread_name("test-watcher-bridge");
    let live = Arc::new(Live {
        status: Mutex::new(None),
        bridge: BridgeLiveState::new(builder.gauges()),
    });
    let runtime = Runtime::start(
        NAME,
        &config.service,
        Arc::clone(&live) as Arc<dyn LiveState>,
    )?;
    let bridge = runtime.bridge(builder)?;
    let reporter = runtime.reporter().cloned();
    let gateway = config
        .gateway
        .as_ref()
        .map(explain::Client::new)
        .transpose()?;
    if let Some(gateway) = &config.gateway {
        tracing::info!(endpoint = %gateway.endpoint, "failed runs are explained by the api-gateway");
    }

    let watch_error: Arc<Mutex<Option<String>>> = Arc::default();
    let watch_slot: Arc<WatchSlot> = Arc::default();
    // Never ready while nothing is watched: the watch must be established,
    // and still be on the directory the root leads to.
    let health = HealthChecker::builder(NAME).required("watch", {
        let (error, slot, bridge) = (
            Arc::clone(&watch_error),
            Arc::clone(&watch_slot),
            bridge.clone(),
        );
        move || {
            let error = error.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let (watch, bridge) = (slot.get(), bridge.clone());
            async move {
                match (error, watch) {
                    (Some(error), _) => Err(error),
                    (None, None) => Err("no watch is established".to_owned()),
                    (None, Some(watch)) => bridge
                        .run_blocking(Duration::from_secs(10), move || watch.check())
                        .await
                        .unwrap_or_else(|e| Err(e.to_string())),
                }
            }
        }
    });
    let health = runtime.health(health);
    let starting = health.startup_guard("watch");

    let (events_tx, events_rx) = mpsc::channel(1024);
    let engine_stop = CancellationToken::new();
    let (engine, engine_task) = engine::spawn(
        config.engine.clone(),
        Arc::clone(&watch_slot),
        (events_tx.clone(), events_rx),
        bridge.clone(),
        reporter.clone(),
        gateway,
        engine_stop.clone(),
    );
    *live.status.lock().unwrap_or_else(PoisonError::into_inner) = Some(engine.watch_status());

    let watching = Watching {
        root: root.clone(),
        extensions: config.extensions.clone(),
        poll: config.poll,
        bridge: bridge.clone(),
        events: events_tx,
        slot: watch_slot,
        error: watch_error,
        reporter,
    };
    tokio::spawn(watching.follow(
        engine.clone(),
        health.clone(),
        starting,
        config.run_on_start,
        runtime.background(),
    ));

    let routes = Routes::new(InterceptedService::new(
        TestWatcherServer::new(server::TestWatcherService::new(
            engine.clone(),
            shutdown.clone(),
        )),
        config.service.auth.clone(),
    ))
    .prepare();
    let handles = Handles {
        engine,
        health: health.clone(),
    };
    let drain = async move {
        engine_stop.cancel();
        let _ = engine_task.await;
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

/// How often the root is resolved again, to notice that it leads to a new
/// checkout (git-sync swaps a symbolic link to each new one and deletes the
/// old one) or to another directory at the same path (deleted and made
/// again).
const CHECKOUT_CHECK: Duration = Duration::from_secs(1);

/// What establishes the watch, and re-establishes it on a new checkout.
struct Watching {
    root: PathBuf,
    extensions: Vec<String>,
    poll: Option<Duration>,
    bridge: Bridge,
    events: mpsc::Sender<WatchEvent>,
    slot: Arc<WatchSlot>,
    error: Arc<Mutex<Option<String>>>,
    reporter: Option<Reporter>,
}

impl Watching {
    /// Establishes the watch, then follows the root to each new checkout
    /// until `stop`: the watch is rebuilt there and a run is asked for. A
    /// new checkout is another path or another directory (its [`Identity`])
    /// the root leads to, or the watched one reported removed.
    async fn follow(
        self,
        engine: EngineHandle,
        health: HealthChecker,
        starting: StartupGuard,
        run_on_start: bool,
        stop: CancellationToken,
    ) {
        let mut current = self.resolve().await;
        let established = self.establish().await;
        drop(starting);
        if established && run_on_start {
            engine.trigger("startup").await;
        }
        // The required check reads the error; show it at once.
        health.check_now().await;

        let mut ticks = tokio::time::interval(CHECKOUT_CHECK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            // Mid-swap or gone: the health check says so; look again later.
            let Some(now) = self.resolve().await else {
                continue;
            };
            let lost = self.slot.get().is_some_and(|watch| watch.is_lost());
            if current.as_ref() == Some(&now) && !lost {
                continue;
            }
            tracing::info!(checkout = %now.0.display(), "the root leads to a new checkout");
            current = Some(now);
            // A failure is kept until the next checkout, not retried each tick.
            if self.establish().await {
                engine.trigger("checkout").await;
            }
            health.check_now().await;
        }
    }

    /// The folder the root leads to now, and which directory that is.
    async fn resolve(&self) -> Option<(PathBuf, Identity)> {
        let root = self.root.clone();
        self.bridge
            .run_blocking(Duration::from_secs(10), move || {
                Ok::<_, std::io::Error>((std::fs::canonicalize(&root)?, Identity::of(&root)?))
            })
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Watches the root as it is now (walking the tree is blocking work,
    /// through the bridge), replacing the previous watch. False if it failed;
    /// the failure is reported and makes the service unready, and the
    /// previous watch, of a directory the root no longer leads to, is dropped.
    async fn establish(&self) -> bool {
        let (filter, poll) = (Filter::new(&self.root, &self.extensions), self.poll);
        let (inner, events) = (self.bridge.clone(), self.events.clone());
        let result = self
            .bridge
            .run_blocking(Duration::from_secs(600), move || {
                Watch::start(filter, poll, inner, events)
            })
            .await;
        let message = match result {
            Ok(Ok(watch)) => {
                tracing::info!(directories = watch.watched(), "watching");
                self.slot.set(watch);
                *self.error.lock().unwrap_or_else(PoisonError::into_inner) = None;
                return true;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("setting up the watch: {e}"),
        };
        tracing::error!(%message, "the watch could not be established");
        self.slot.clear();
        if let Some(reporter) = &self.reporter {
            reporter.report(v1::event::Payload::Error(v1::ComponentError {
                kind: "watch".to_owned(),
                message: message.clone(),
                model: String::new(),
            }));
        }
        *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(message);
        false
    }
}
