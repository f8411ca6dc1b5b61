//! Declaring a service's checks.

use std::time::Duration;

use crate::CheckResult;
use crate::checker::HealthChecker;
use crate::component::{Check, Importance};

/// How often checks run unless [`HealthBuilder::interval`] says otherwise.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// How long one check may take unless [`HealthBuilder::timeout`] says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// The shortest interval: a zero interval would spin.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Declares the checks of a [`HealthChecker`]; made by [`HealthChecker::builder`].
#[derive(Debug)]
pub struct HealthBuilder {
    service: String,
    interval: Duration,
    timeout: Duration,
    checks: Vec<Check>,
}

impl HealthBuilder {
    pub(crate) fn new(service: &str) -> Self {
        Self {
            service: service.to_owned(),
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            checks: Vec::new(),
        }
    }

    /// How often the background task runs every check (default 5 s; at least 1 ms).
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(MIN_INTERVAL);
        self
    }

    /// How long one check may run (default 2 s). A check that takes longer
    /// fails with `timed out after …`.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds a check the service needs to do its job: while it fails (or has
    /// not run yet) the service is not ready. A check of the same name is replaced.
    #[must_use]
    pub fn required<F, Fut>(self, name: &str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CheckResult> + Send + 'static,
    {
        self.with(Check::new(name, Importance::Required, check))
    }

    /// Adds a check of another service the service uses: while it fails the
    /// service reports `"degraded"` but stays ready. A check of the same name
    /// is replaced.
    #[must_use]
    pub fn dependency<F, Fut>(self, name: &str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CheckResult> + Send + 'static,
    {
        self.with(Check::new(name, Importance::Dependency, check))
    }

    fn with(mut self, check: Check) -> Self {
        self.checks.retain(|known| known.name != check.name);
        self.checks.push(check);
        self
    }

    /// Makes the checker. Needs no Tokio runtime: nothing runs until
    /// [`HealthChecker::spawn`] or [`HealthChecker::check_now`].
    pub fn build(self) -> HealthChecker {
        HealthChecker::new(self.service, self.interval, self.timeout, self.checks)
    }
}
