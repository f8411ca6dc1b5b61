//! The health checker: runs the checks, caches what they said, knows readiness.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::builder::HealthBuilder;
use crate::component::{Check, Outcome};
use crate::grpc::GrpcStatus;
use crate::report::HealthReport;
use crate::startup::StartupGuard;
use crate::state::State;

/// A service's health: its checks, their cached results and its readiness.
///
/// Cheap to clone; every clone shares the same state.
#[derive(Clone)]
pub struct HealthChecker {
    inner: Arc<Inner>,
}

/// What the clones of a [`HealthChecker`] (and its startup guards) share.
pub(crate) struct Inner {
    service: String,
    interval: Duration,
    timeout: Duration,
    checks: Vec<Check>,
    state: Mutex<State>,
    /// Readiness as last computed; the gRPC status and `wait_ready` follow it.
    ready: watch::Sender<bool>,
    grpc: GrpcStatus,
}

impl HealthChecker {
    /// Starts declaring the checks of the service called `service` (e.g. `"collector"`).
    pub fn builder(service: &str) -> HealthBuilder {
        HealthBuilder::new(service)
    }

    pub(crate) fn new(
        service: String,
        interval: Duration,
        timeout: Duration,
        checks: Vec<Check>,
    ) -> Self {
        let state = State::new(
            checks
                .iter()
                .map(|check| (check.name.clone(), check.importance)),
        );
        let (ready, _) = watch::channel(state.is_ready());
        let grpc = GrpcStatus::new(state.is_ready());
        Self {
            inner: Arc::new(Inner {
                service,
                interval,
                timeout,
                checks,
                state: Mutex::new(state),
                ready,
                grpc,
            }),
        }
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Holds readiness back until the returned guard is dropped; the report
    /// names `what` under `starting` meanwhile.
    pub fn startup_guard(&self, what: &str) -> StartupGuard {
        StartupGuard::new(Arc::clone(&self.inner), what)
    }

    /// Runs the checks in the background: a first round at once, then one
    /// every interval, until `shutdown` is cancelled. Cancelling also begins
    /// shutdown (see [`HealthChecker::begin_shutdown`]): results nobody
    /// refreshes any more must not keep the service ready.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn spawn(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        let checker = self.clone();
        tokio::spawn(async move {
            let mut rounds = tokio::time::interval(checker.inner.interval);
            rounds.set_missed_tick_behavior(MissedTickBehavior::Delay);
            shutdown
                .run_until_cancelled(async {
                    loop {
                        rounds.tick().await;
                        checker.check_now().await;
                    }
                })
                .await;
            checker.begin_shutdown();
        })
    }

    /// Runs every check once, concurrently, each under the timeout, and
    /// caches each result as it comes in.
    pub async fn check_now(&self) {
        let mut round = JoinSet::new();
        let mut names = HashMap::new();
        let started = Instant::now();
        for check in &self.inner.checks {
            let task = round.spawn(check.run(self.inner.timeout));
            names.insert(task.id(), check.name.as_str());
        }
        while let Some(joined) = round.join_next_with_id().await {
            let (id, outcome) = match joined {
                Ok((id, outcome)) => (id, outcome),
                // A check that panics is a failing check, not a dead checker.
                Err(error) => {
                    let why = if error.is_panic() {
                        "check panicked"
                    } else {
                        "check was cancelled"
                    };
                    (error.id(), Outcome::new(Err(why.to_owned()), started))
                }
            };
            if let Some(name) = names.get(&id) {
                self.inner.update(|state| state.record(name, outcome));
            }
        }
    }

    /// Begins shutdown: not ready from now on, whatever the checks say
    /// (`/ready` answers 503 `"stopping"`, gRPC `NOT_SERVING`). Liveness stays up.
    pub fn begin_shutdown(&self) {
        self.inner.update(State::begin_shutdown);
    }

    /// Whether the service is ready to take traffic.
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// The cached health; never waits on a check.
    pub fn report(&self) -> HealthReport {
        self.inner.lock().report(&self.inner.service)
    }

    /// Resolves once the service is ready (at once if it is). Never resolves
    /// after [`HealthChecker::begin_shutdown`].
    pub async fn wait_ready(&self) {
        let mut ready = self.inner.ready.subscribe();
        // `self` keeps the sender alive, so the wait cannot fail.
        let _ = ready.wait_for(|ready| *ready).await;
    }
}

impl fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthChecker")
            .field("service", &self.inner.service)
            .field("interval", &self.inner.interval)
            .field("timeout", &self.inner.timeout)
            .field("checks", &self.inner.checks)
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl Inner {
    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    pub(crate) fn grpc(&self) -> &GrpcStatus {
        &self.grpc
    }

    pub(crate) fn subscribe_ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Changes the state and publishes the readiness that follows, in one
    /// critical section so updates can never be published out of order.
    pub(crate) fn update<R>(&self, change: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self.lock();
        let changed = change(&mut state);
        let ready = state.is_ready();
        if self
            .ready
            .send_if_modified(|current| std::mem::replace(current, ready) != ready)
        {
            tracing::info!(service = %self.service, ready, status = ?state.status(), "readiness changed");
        }
        changed
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change leaves the state consistent, so a panic elsewhere does not spoil it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
