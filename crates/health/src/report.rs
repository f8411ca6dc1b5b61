//! The health report served by `/ready`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::component::ComponentReport;

/// The overall state of a service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Ready, and every component passed its last check.
    Ready,
    /// Ready, but a dependency fails.
    Degraded,
    /// Not ready: startup still running, or a required component fails or is not yet checked.
    NotReady,
    /// Shutdown has begun; never ready again.
    Stopping,
}

/// The cached health of a service, as served by `GET /ready`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HealthReport {
    /// The service's name, e.g. `"collector"`.
    pub service: String,
    /// The overall status.
    pub status: Status,
    /// Whether the service takes traffic (`"ready"` or `"degraded"`).
    pub ready: bool,
    /// What startup still waits for: the startup guards still alive.
    pub starting: Vec<String>,
    /// Every component by name.
    pub components: BTreeMap<String, ComponentReport>,
}
