//! The async bridge, watched: its calls go to the collector as `BridgeCall`
//! events and its live values ride in every heartbeat (DESIGN §5,
//! `safe_async_bridge_*`).
//!
//! The reporter needs its [`LiveState`] when it starts and the bridge needs
//! its observer when it is built; neither holds the other, so there is no
//! cycle. The live state reads the bridge's [`Gauges`], which exist before
//! the bridge does:
//!
//! ```no_run
//! # fn wire(config: automation_telemetry::reporter::ReporterConfig)
//! #     -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//!
//! use automation_async_bridge::Bridge;
//! use automation_telemetry::bridge::{BridgeLiveState, ReportingObserver};
//! use automation_telemetry::reporter::Reporter;
//!
//! let builder = Bridge::builder();
//! let live = BridgeLiveState::new(builder.gauges());
//! let reporter = Reporter::start(config, Arc::new(live))?;
//! let bridge = builder
//!     .observer(ReportingObserver::new(reporter.clone()))
//!     .build()?;
//! # Ok(()) }
//! ```
//!
//! A service whose only runtime is the bridge's own (so it must build the
//! bridge before it can start the reporter) builds it with
//! [`ReportingObserver::unattached`] and [`attaches`](ReportingObserver::attach)
//! the reporter once started. A service with more live values than the
//! bridge's fills the heartbeat with [`bridge_state`] from its own
//! [`LiveState`].

use std::sync::OnceLock;

use automation_async_bridge::{CallRecord, Direction, Gauges, Observer, Outcome};
use automation_proto::v1::{self, event::Payload};

use crate::reporter::{LiveState, Reporter};

/// Reports every bridge call as a `BridgeCall` event. Never blocks:
/// [`Reporter::report`] only queues.
#[derive(Debug, Default)]
pub struct ReportingObserver {
    reporter: OnceLock<Reporter>,
}

impl ReportingObserver {
    /// Reports to `reporter`.
    pub fn new(reporter: Reporter) -> Self {
        Self {
            reporter: OnceLock::from(reporter),
        }
    }

    /// Reports nothing until [`attach`](Self::attach) is called: calls made
    /// before are counted by the bridge ([`Bridge::stats`]) but not reported.
    ///
    /// [`Bridge::stats`]: automation_async_bridge::Bridge::stats
    pub fn unattached() -> Self {
        Self::default()
    }

    /// Reports to `reporter` from now on. A reporter can be attached once:
    /// a second one is given back.
    pub fn attach(&self, reporter: Reporter) -> Result<(), Reporter> {
        self.reporter.set(reporter)
    }
}

impl Observer for ReportingObserver {
    fn on_call(&self, call: &CallRecord) {
        if let Some(reporter) = self.reporter.get() {
            reporter.report(Payload::BridgeCall(bridge_call(call)));
        }
    }
}

/// The event for one bridge call. A call its caller stopped waiting for
/// ([`Outcome::Cancelled`]) counts as a call, neither an error nor a timeout.
pub fn bridge_call(call: &CallRecord) -> v1::BridgeCall {
    let direction = match call.direction {
        Direction::ToAsync => v1::BridgeDirection::ToAsync,
        Direction::ToBlocking => v1::BridgeDirection::ToBlocking,
    };
    let outcome = match call.outcome {
        Outcome::Ok => v1::BridgeOutcome::Ok,
        Outcome::Error => v1::BridgeOutcome::Error,
        Outcome::Panic => v1::BridgeOutcome::Panic,
        Outcome::Timeout => v1::BridgeOutcome::Timeout,
        Outcome::Cancelled => v1::BridgeOutcome::Cancelled,
    };
    v1::BridgeCall {
        direction: direction.into(),
        outcome: outcome.into(),
        duration_seconds: call.duration.as_secs_f64(),
        pending_tasks: call.pending,
        active_loops: call.active_loops,
    }
}

/// The bridge's live values for a heartbeat.
pub fn bridge_state(gauges: &Gauges) -> v1::BridgeState {
    v1::BridgeState {
        pending_tasks: gauges.pending(),
        active_loops: gauges.active_loops(),
    }
}

/// Puts the bridge's live values into every heartbeat. Holds the bridge's
/// [`Gauges`], not the bridge: the reporter does not keep the bridge (and
/// its runtime) alive.
#[derive(Debug, Clone)]
pub struct BridgeLiveState {
    gauges: Gauges,
}

impl BridgeLiveState {
    /// The live state of the bridge `gauges` belong to.
    pub fn new(gauges: Gauges) -> Self {
        Self { gauges }
    }
}

impl LiveState for BridgeLiveState {
    fn fill(&self, heartbeat: &mut v1::Heartbeat) {
        heartbeat.bridge = Some(bridge_state(&self.gauges));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_outcome_maps_to_the_wire() {
        let cases = [
            (Outcome::Ok, v1::BridgeOutcome::Ok),
            (Outcome::Error, v1::BridgeOutcome::Error),
            (Outcome::Panic, v1::BridgeOutcome::Panic),
            (Outcome::Timeout, v1::BridgeOutcome::Timeout),
            (Outcome::Cancelled, v1::BridgeOutcome::Cancelled),
        ];
        for (outcome, wire) in cases {
            let call = bridge_call(&CallRecord {
                direction: Direction::ToBlocking,
                outcome,
                duration: Duration::from_millis(1500),
                pending: 3,
                active_loops: 1,
            });
            assert_eq!(
                call,
                v1::BridgeCall {
                    direction: v1::BridgeDirection::ToBlocking.into(),
                    outcome: wire.into(),
                    duration_seconds: 1.5,
                    pending_tasks: 3,
                    active_loops: 1,
                }
            );
        }
    }

    #[test]
    fn the_live_state_fills_the_bridge_fields() {
        let gauges = automation_async_bridge::Bridge::builder().gauges();
        let mut heartbeat = v1::Heartbeat::default();
        BridgeLiveState::new(gauges).fill(&mut heartbeat);
        assert_eq!(
            heartbeat.bridge,
            Some(v1::BridgeState {
                pending_tasks: 0,
                active_loops: 0
            })
        );
    }
}
