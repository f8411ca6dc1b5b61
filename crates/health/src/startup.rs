//! The readiness latch: every startup task holds a guard.

use std::fmt;
use std::sync::Arc;

use crate::checker::Inner;

/// Keeps the service unready while alive; dropping it releases it.
///
/// Made by [`HealthChecker::startup_guard`](crate::HealthChecker::startup_guard).
#[must_use = "the guard holds readiness back only while it is alive"]
pub struct StartupGuard {
    checker: Arc<Inner>,
    id: u64,
    what: String,
}

impl StartupGuard {
    pub(crate) fn new(checker: Arc<Inner>, what: &str) -> Self {
        let id = checker.update(|state| state.add_guard(what));
        Self {
            checker,
            id,
            what: what.to_owned(),
        }
    }
}

impl Drop for StartupGuard {
    fn drop(&mut self) {
        tracing::debug!(service = %self.checker.service(), done = %self.what, "startup step done");
        self.checker.update(|state| state.remove_guard(self.id));
    }
}

impl fmt::Debug for StartupGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartupGuard")
            .field("service", &self.checker.service())
            .field("what", &self.what)
            .finish()
    }
}
