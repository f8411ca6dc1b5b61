//! One component check: what it is, how it runs, what it last said.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::CheckResult;
use crate::rfc3339;

/// How much a component matters to readiness.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Importance {
    /// The service cannot do its job without it: failing means not ready.
    Required,
    /// Another service this one uses: failing means `"degraded"`, still ready.
    Dependency,
}

/// What a component's last check said.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ComponentStatus {
    /// The last check passed.
    Ok,
    /// The last check of a [`Importance::Required`] component failed.
    Failing,
    /// The last check of a [`Importance::Dependency`] failed.
    Degraded,
    /// Not checked yet.
    Unknown,
}

/// One component in the [`HealthReport`](crate::HealthReport).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ComponentReport {
    /// Whether it decides readiness.
    pub importance: Importance,
    /// What its last check said.
    pub status: ComponentStatus,
    /// How long its last check took, in milliseconds.
    pub latency_ms: Option<f64>,
    /// The most recent error; kept after the component recovers, so people
    /// can see what went wrong last (`consecutive_failures` tells whether it still does).
    pub last_error: Option<String>,
    /// When its last check finished, RFC 3339 in UTC.
    pub checked_at: Option<String>,
    /// How many checks in a row have failed; 0 once one passes.
    pub consecutive_failures: u32,
}

impl ComponentReport {
    pub(crate) fn unknown(importance: Importance) -> Self {
        Self {
            importance,
            status: ComponentStatus::Unknown,
            latency_ms: None,
            last_error: None,
            checked_at: None,
            consecutive_failures: 0,
        }
    }

    /// Takes in the outcome of one check of the component called `name`.
    pub(crate) fn record(&mut self, name: &str, outcome: Outcome) {
        let was_ok = matches!(self.status, ComponentStatus::Ok | ComponentStatus::Unknown);
        self.latency_ms = Some(outcome.latency.as_secs_f64() * 1000.0);
        self.checked_at = Some(rfc3339::format(outcome.finished));
        match outcome.result {
            Ok(()) => {
                if !was_ok {
                    tracing::info!(component = name, "health check passes again");
                }
                self.status = ComponentStatus::Ok;
                self.consecutive_failures = 0;
            }
            Err(error) => {
                if was_ok {
                    tracing::warn!(component = name, importance = ?self.importance, %error, "health check fails");
                }
                self.status = match self.importance {
                    Importance::Required => ComponentStatus::Failing,
                    Importance::Dependency => ComponentStatus::Degraded,
                };
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.last_error = Some(error);
            }
        }
    }
}

type CheckFuture = Pin<Box<dyn Future<Output = CheckResult> + Send>>;
type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// A named check, as declared on the [`HealthBuilder`](crate::HealthBuilder).
pub(crate) struct Check {
    pub(crate) name: String,
    pub(crate) importance: Importance,
    run: CheckFn,
}

impl Check {
    pub(crate) fn new<F, Fut>(name: &str, importance: Importance, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CheckResult> + Send + 'static,
    {
        Self {
            name: name.to_owned(),
            importance,
            run: Arc::new(move || Box::pin(check())),
        }
    }

    /// One run of the check under `timeout`, ready to be spawned.
    pub(crate) fn run(&self, timeout: Duration) -> impl Future<Output = Outcome> + Send + 'static {
        let run = Arc::clone(&self.run);
        async move {
            let started = Instant::now();
            let result = match tokio::time::timeout(timeout, run()).await {
                Ok(result) => result,
                Err(_) => Err(format!("timed out after {timeout:?}")),
            };
            Outcome::new(result, started)
        }
    }
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Check")
            .field("name", &self.name)
            .field("importance", &self.importance)
            .finish_non_exhaustive()
    }
}

/// What one run of a check came to.
#[derive(Debug)]
pub(crate) struct Outcome {
    result: CheckResult,
    latency: Duration,
    finished: SystemTime,
}

impl Outcome {
    /// The outcome of a check started at `started` that just finished.
    pub(crate) fn new(result: CheckResult, started: Instant) -> Self {
        Self {
            result,
            latency: started.elapsed(),
            finished: SystemTime::now(),
        }
    }
}
