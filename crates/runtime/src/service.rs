//! The start-up sequence every service shares, in one place: the reporter
//! (with the service's live values in its heartbeat), the async bridge
//! reporting its calls, the health checker watching the collector, serving,
//! and at the end the service's own drain, then the reporter's goodbye.
//!
//! A service's `start(config, listeners, shutdown)` builds what is its own
//! between [`Runtime::start`] and [`Runtime::serve`], and hands back a
//! [`Running`] service: its handles and addresses at once, its end through
//! [`Running::wait`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use automation_async_bridge::{Bridge, BridgeBuilder, BuildError};
use automation_health::{HealthBuilder, HealthChecker};
use automation_telemetry::bridge::ReportingObserver;
use automation_telemetry::reporter::{LiveState, Reporter, ReporterError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::config::ServiceConfig;
use crate::serve::{Extra, Listeners, ServeError, Serving};

/// How long the goodbye may take to reach the collector.
const GOODBYE: Duration = Duration::from_secs(5);

/// How long the goodbye of a service that refused to start may take.
const ABANDON: Duration = Duration::from_secs(2);

/// A service being started: its reporter, and the token its background
/// tasks stop on.
#[derive(Debug)]
pub struct Runtime {
    name: &'static str,
    config: ServiceConfig,
    reporter: Option<Reporter>,
    background: CancellationToken,
}

impl Runtime {
    /// Starts `name`'s reporter, when `config` has one, with `live` filling
    /// its heartbeat. Call inside a Tokio runtime.
    pub fn start(
        name: &'static str,
        config: &ServiceConfig,
        live: Arc<dyn LiveState>,
    ) -> Result<Self, ReporterError> {
        let reporter = config
            .reporter
            .clone()
            .map(|rc| Reporter::start(rc, live))
            .transpose()?;
        Ok(Self {
            name,
            config: config.clone(),
            reporter,
            background: CancellationToken::new(),
        })
    }

    /// A service that reports nothing (the collector), whatever `config`
    /// says of a reporter.
    pub fn unreported(name: &'static str, config: &ServiceConfig) -> Self {
        Self {
            name,
            config: config.clone(),
            reporter: None,
            background: CancellationToken::new(),
        }
    }

    /// The reporter, when the service reports.
    pub fn reporter(&self) -> Option<&Reporter> {
        self.reporter.as_ref()
    }

    /// Cancelled once the service has stopped serving: background tasks
    /// (checks, upkeep) end on it.
    pub fn background(&self) -> CancellationToken {
        self.background.clone()
    }

    /// Builds the async bridge, its calls reported as events.
    pub fn bridge(&self, builder: BridgeBuilder) -> Result<Bridge, BuildError> {
        let observer = ReportingObserver::unattached();
        if let Some(reporter) = &self.reporter {
            let _ = observer.attach(reporter.clone());
        }
        builder.observer(observer).build()
    }

    /// Builds the health checker, the collector among its dependencies when
    /// the service reports, and runs its checks until the service stops.
    pub fn health(&self, builder: HealthBuilder) -> HealthChecker {
        let health = Reporter::watched_by(self.reporter.as_ref(), builder).build();
        health.spawn(self.background.clone());
        health
    }

    /// Gives up before serving: background tasks stop, and the collector
    /// is told why (`reason`) within a short deadline.
    pub async fn abandon(self, reason: &str) {
        self.background.cancel();
        if let Some(reporter) = self.reporter {
            reporter.shutdown(reason, ABANDON).await;
        }
    }

    /// Serves `routes` and `admin` on `listeners` (and `extra`) until
    /// `shutdown` is cancelled; the returned [`Running`] holds `handles`.
    /// At the end, after the servers drained: `drain` (the service's own
    /// work in progress), background tasks stopped, goodbye said.
    #[allow(clippy::too_many_arguments)]
    pub fn serve<H, E>(
        self,
        health: &HealthChecker,
        routes: Routes,
        admin: axum::Router,
        listeners: Listeners,
        extra: Extra,
        shutdown: CancellationToken,
        handles: H,
        drain: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Running<H, E>, E>
    where
        E: From<ServeError> + Send + 'static,
    {
        let (grpc, http) = listeners.addresses();
        let serving = match Serving::start(
            self.name,
            &self.config,
            health,
            routes,
            admin,
            listeners,
            extra,
        ) {
            Ok(serving) => serving,
            Err(error) => {
                self.background.cancel();
                return Err(error.into());
            }
        };
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let served = serving.wait(stop).await;
            drain.await;
            self.background.cancel();
            if let Some(reporter) = self.reporter {
                reporter.shutdown("shutdown", GOODBYE).await;
            }
            tracing::info!(service = self.name, "stopped");
            Ok(served?)
        });
        Ok(Running {
            handles,
            grpc,
            http,
            shutdown,
            task: Some(task),
        })
    }
}

/// A service serving until its shutdown token is cancelled (or it is
/// dropped).
#[derive(Debug)]
pub struct Running<H, E> {
    /// What the service hands out: its engine, state, health checker.
    pub handles: H,
    /// The gRPC address.
    pub grpc: SocketAddr,
    /// The HTTP address (admin, and the doors some services open there).
    pub http: SocketAddr,
    /// Cancelling it shuts the service down gracefully.
    pub shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), E>>>,
}

impl<H, E> Running<H, E> {
    /// `http://<gRPC address>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Resolves when the service has stopped, after its shutdown token was
    /// cancelled or on an error of its own; how it ended. A panic of the
    /// service is passed on. Once it has resolved, it never resolves again.
    pub async fn ended(&mut self) -> Result<(), E> {
        let Some(task) = self.task.as_mut() else {
            return std::future::pending().await;
        };
        let ended = task.await;
        self.task = None;
        match ended {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => panic!("the service's task was cancelled: {error}"),
        }
    }

    /// Waits until the service has stopped; how it ended.
    pub async fn wait(mut self) -> Result<(), E> {
        self.ended().await
    }

    /// Shuts the service down gracefully and waits until it has stopped.
    pub async fn stop(self) -> Result<(), E> {
        self.shutdown.cancel();
        self.wait().await
    }
}

impl<H, E> Drop for Running<H, E> {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
