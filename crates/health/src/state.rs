//! What the checker caches, and how readiness follows from it.

use std::collections::BTreeMap;

use crate::component::{ComponentReport, ComponentStatus, Importance, Outcome};
use crate::report::{HealthReport, Status};

/// The cached state; probes read it, checks and guards change it.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Startup guards still alive, by id, with what each waits for.
    guards: BTreeMap<u64, String>,
    next_guard: u64,
    components: BTreeMap<String, ComponentReport>,
    stopping: bool,
}

impl State {
    pub(crate) fn new(components: impl IntoIterator<Item = (String, Importance)>) -> Self {
        Self {
            components: components
                .into_iter()
                .map(|(name, importance)| (name, ComponentReport::unknown(importance)))
                .collect(),
            ..Self::default()
        }
    }

    /// Ready: startup done, not stopping, every required component passed its last check.
    pub(crate) fn is_ready(&self) -> bool {
        !self.stopping
            && self.guards.is_empty()
            && self.components.values().all(|component| {
                component.importance == Importance::Dependency
                    || component.status == ComponentStatus::Ok
            })
    }

    pub(crate) fn status(&self) -> Status {
        if self.stopping {
            Status::Stopping
        } else if !self.is_ready() {
            Status::NotReady
        } else if self
            .components
            .values()
            .any(|component| component.status == ComponentStatus::Degraded)
        {
            Status::Degraded
        } else {
            Status::Ready
        }
    }

    pub(crate) fn report(&self, service: &str) -> HealthReport {
        HealthReport {
            service: service.to_owned(),
            status: self.status(),
            ready: self.is_ready(),
            starting: self.guards.values().cloned().collect(),
            components: self.components.clone(),
        }
    }

    /// Registers a startup guard; returns its id.
    pub(crate) fn add_guard(&mut self, what: &str) -> u64 {
        let id = self.next_guard;
        self.next_guard += 1;
        self.guards.insert(id, what.to_owned());
        id
    }

    pub(crate) fn remove_guard(&mut self, id: u64) {
        self.guards.remove(&id);
    }

    pub(crate) fn begin_shutdown(&mut self) {
        self.stopping = true;
    }

    pub(crate) fn record(&mut self, name: &str, outcome: Outcome) {
        if let Some(component) = self.components.get_mut(name) {
            component.record(name, outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn state() -> State {
        State::new([
            ("database".to_owned(), Importance::Required),
            ("collector".to_owned(), Importance::Dependency),
        ])
    }

    fn pass(state: &mut State, name: &str) {
        state.record(name, Outcome::new(Ok(()), Instant::now()));
    }

    fn fail(state: &mut State, name: &str) {
        state.record(name, Outcome::new(Err("down".to_owned()), Instant::now()));
    }

    #[test]
    fn a_required_component_not_yet_checked_keeps_the_service_unready() {
        let mut state = state();
        assert_eq!(state.status(), Status::NotReady);
        pass(&mut state, "database");
        assert_eq!(state.status(), Status::Ready);
    }

    #[test]
    fn a_failing_dependency_degrades_but_keeps_readiness() {
        let mut state = state();
        pass(&mut state, "database");
        fail(&mut state, "collector");
        assert!(state.is_ready());
        assert_eq!(state.status(), Status::Degraded);
    }

    #[test]
    fn stopping_wins_over_everything() {
        let mut state = state();
        pass(&mut state, "database");
        state.begin_shutdown();
        pass(&mut state, "database");
        assert!(!state.is_ready());
        assert_eq!(state.status(), Status::Stopping);
    }

    #[test]
    fn failures_are_counted_until_a_check_passes() {
        let mut state = state();
        fail(&mut state, "database");
        fail(&mut state, "database");
        let report = state.report("audit-agent");
        assert_eq!(report.components["database"].consecutive_failures, 2);
        assert_eq!(
            report.components["database"].status,
            ComponentStatus::Failing
        );
        pass(&mut state, "database");
        let report = state.report("audit-agent");
        assert_eq!(report.components["database"].consecutive_failures, 0);
        assert_eq!(
            report.components["database"].last_error.as_deref(),
            Some("down")
        );
    }
}
