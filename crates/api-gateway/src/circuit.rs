//! A circuit breaker in front of the upstream API.
//!
//! Consecutive upstream failures open the circuit: calls fail fast for the
//! cooldown; then one probe is let through (half-open); its success closes the
//! circuit, its failure opens it again for another cooldown.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The smallest retry hint handed out, so that a hint is never zero.
const MIN_HINT: Duration = Duration::from_millis(1);

/// The externally visible state of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through; consecutive failures are being counted.
    Closed,
    /// Calls fail fast until the cooldown has passed.
    Open,
    /// The cooldown has passed: one probe call decides whether the circuit closes.
    HalfOpen,
}

/// Consecutive upstream failures open the circuit: calls fail fast for
/// `cooldown`; then one probe is let through (half-open); its success closes
/// the circuit, its failure opens it again for another cooldown.
///
/// Cheap to share: it is `Send + Sync` and holds one small mutex. Time is read
/// from [`tokio::time::Instant`], so a paused tokio clock applies.
#[derive(Debug)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// Bumped on every state transition, so that tickets issued before it
    /// cannot change the state afterwards.
    generation: u64,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_out: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Normal,
    Probe,
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Success,
    Failure,
    Dropped,
}

impl CircuitBreaker {
    /// A closed breaker that opens after `threshold` consecutive failures
    /// (a threshold of 0 is treated as 1) and stays open for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                threshold: threshold.max(1),
                cooldown,
                inner: Mutex::new(Inner {
                    phase: Phase::Closed { failures: 0 },
                    generation: 0,
                }),
            }),
        }
    }

    /// Asks to make an upstream call.
    ///
    /// Returns a normal ticket while closed, the probe ticket once the
    /// cooldown has passed, or `Err(retry_after)` while open or while a probe
    /// is out. The retry hint is never zero and never longer than the
    /// cooldown (unless the cooldown is under a millisecond).
    pub fn admit(&self) -> Result<Ticket, Duration> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Result<Ticket, Duration> {
        let mut inner = self.shared.lock();
        let kind = match inner.phase {
            Phase::Closed { .. } => Kind::Normal,
            Phase::Open { until } if now < until => {
                return Err((until - now).max(MIN_HINT));
            }
            Phase::Open { .. } | Phase::HalfOpen { probe_out: false } => {
                inner.transition(Phase::HalfOpen { probe_out: true });
                tracing::info!("circuit half-open: letting one probe through");
                Kind::Probe
            }
            Phase::HalfOpen { probe_out: true } => {
                return Err(self.shared.cooldown.max(MIN_HINT));
            }
        };
        Ok(Ticket {
            shared: Arc::clone(&self.shared),
            kind,
            generation: inner.generation,
            done: false,
        })
    }

    /// Whether calls are being refused now: open, or half-open with the probe
    /// out. For the circuit gauge.
    pub fn is_open(&self) -> bool {
        matches!(
            self.shared.lock().phase,
            Phase::Open { .. } | Phase::HalfOpen { probe_out: true }
        )
    }

    /// The current state. An open circuit whose cooldown has passed stays
    /// [`CircuitState::Open`] until the next [`admit`](Self::admit) sends the probe.
    pub fn state(&self) -> CircuitState {
        match self.shared.lock().phase {
            Phase::Closed { .. } => CircuitState::Closed,
            Phase::Open { .. } => CircuitState::Open,
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn finish(&self, kind: Kind, generation: u64, outcome: Outcome, now: Instant) {
        let mut inner = self.lock();
        if inner.generation != generation {
            // Issued before the last transition: says nothing about now.
            return;
        }
        match (inner.phase, kind, outcome) {
            (Phase::Closed { .. }, Kind::Normal, Outcome::Success) => {
                inner.phase = Phase::Closed { failures: 0 };
            }
            (Phase::Closed { failures }, Kind::Normal, Outcome::Failure) => {
                let failures = failures.saturating_add(1);
                if failures >= self.threshold {
                    inner.transition(Phase::Open {
                        until: now + self.cooldown,
                    });
                    tracing::warn!(
                        failures,
                        cooldown_ms = u64::try_from(self.cooldown.as_millis()).unwrap_or(u64::MAX),
                        "circuit opened after consecutive upstream failures"
                    );
                } else {
                    inner.phase = Phase::Closed { failures };
                }
            }
            (Phase::HalfOpen { probe_out: true }, Kind::Probe, Outcome::Success) => {
                inner.transition(Phase::Closed { failures: 0 });
                tracing::info!("circuit closed: probe succeeded");
            }
            (Phase::HalfOpen { probe_out: true }, Kind::Probe, Outcome::Failure) => {
                inner.transition(Phase::Open {
                    until: now + self.cooldown,
                });
                tracing::warn!("circuit reopened: probe failed");
            }
            (Phase::HalfOpen { probe_out: true }, Kind::Probe, Outcome::Dropped) => {
                // Free the slot (same generation: a late outcome of this ticket
                // cannot happen, it is consumed).
                inner.phase = Phase::HalfOpen { probe_out: false };
            }
            _ => {}
        }
    }
}

impl Inner {
    fn transition(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation = self.generation.wrapping_add(1);
    }
}

/// Permission for one upstream call, from [`CircuitBreaker::admit`].
///
/// Report the call's outcome with [`success`](Self::success) or
/// [`failure`](Self::failure). Dropping a ticket without either counts as
/// neither (e.g. the client cancelled, or a 4xx that says nothing about
/// upstream health); a dropped probe ticket frees the half-open slot so that
/// another probe may go.
#[derive(Debug)]
pub struct Ticket {
    shared: Arc<Shared>,
    kind: Kind,
    generation: u64,
    done: bool,
}

impl Ticket {
    /// Whether this ticket is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.kind == Kind::Probe
    }

    /// The upstream call succeeded: resets the failure count, or closes the
    /// circuit if this was the probe.
    pub fn success(self) {
        self.finish_at(Outcome::Success, Instant::now());
    }

    /// The upstream call failed: counts towards opening the circuit, or
    /// reopens it if this was the probe.
    pub fn failure(self) {
        self.finish_at(Outcome::Failure, Instant::now());
    }

    fn finish_at(mut self, outcome: Outcome, now: Instant) {
        self.done = true;
        self.shared.finish(self.kind, self.generation, outcome, now);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            self.shared
                .finish(self.kind, self.generation, Outcome::Dropped, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(10);

    fn fail(b: &CircuitBreaker, now: Instant) {
        b.admit_at(now)
            .expect("admitted")
            .finish_at(Outcome::Failure, now);
    }

    fn succeed(b: &CircuitBreaker, now: Instant) {
        b.admit_at(now)
            .expect("admitted")
            .finish_at(Outcome::Success, now);
    }

    /// A breaker opened at `t0`.
    fn opened(t0: Instant) -> CircuitBreaker {
        let b = CircuitBreaker::new(2, COOLDOWN);
        fail(&b, t0);
        fail(&b, t0);
        assert_eq!(b.state(), CircuitState::Open);
        b
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new(3, COOLDOWN);
        assert_eq!(b.state(), CircuitState::Closed);
        fail(&b, t0);
        fail(&b, t0);
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(!b.is_open());
        fail(&b, t0);
        assert_eq!(b.state(), CircuitState::Open);
        assert!(b.is_open());
    }

    #[test]
    fn success_in_between_resets_the_count() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new(3, COOLDOWN);
        fail(&b, t0);
        fail(&b, t0);
        succeed(&b, t0);
        fail(&b, t0);
        fail(&b, t0);
        assert_eq!(b.state(), CircuitState::Closed);
        fail(&b, t0);
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn dropped_normal_tickets_count_as_neither() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new(2, COOLDOWN);
        fail(&b, t0);
        drop(b.admit_at(t0).expect("admitted"));
        assert_eq!(b.state(), CircuitState::Closed);
        fail(&b, t0);
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn threshold_zero_means_one() {
        let b = CircuitBreaker::new(0, COOLDOWN);
        fail(&b, Instant::now());
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn open_fails_fast_with_a_hint_within_the_cooldown() {
        let t0 = Instant::now();
        let b = opened(t0);
        let hint = b.admit_at(t0).expect_err("open");
        assert!(hint > Duration::ZERO && hint <= COOLDOWN, "{hint:?}");
        let hint = b.admit_at(t0 + Duration::from_secs(4)).expect_err("open");
        assert_eq!(hint, Duration::from_secs(6));
        let hint = b
            .admit_at(t0 + COOLDOWN - Duration::from_nanos(1))
            .expect_err("still open");
        assert!(hint > Duration::ZERO && hint <= COOLDOWN, "{hint:?}");
    }

    #[test]
    fn exactly_one_probe_after_the_cooldown() {
        let t0 = Instant::now();
        let b = opened(t0);
        let t1 = t0 + COOLDOWN;
        let probe = b.admit_at(t1).expect("probe");
        assert!(probe.is_probe());
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert!(b.is_open());
        let hint = b.admit_at(t1).expect_err("probe is out");
        assert!(hint > Duration::ZERO && hint <= COOLDOWN, "{hint:?}");
        let hint = b
            .admit_at(t1 + Duration::from_secs(100))
            .expect_err("probe is still out");
        assert!(hint <= COOLDOWN);
        drop(probe);
    }

    #[test]
    fn probe_success_closes() {
        let t0 = Instant::now();
        let b = opened(t0);
        let t1 = t0 + COOLDOWN;
        b.admit_at(t1)
            .expect("probe")
            .finish_at(Outcome::Success, t1);
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(!b.is_open());
        let ticket = b.admit_at(t1).expect("closed");
        assert!(!ticket.is_probe());
        // The failure count starts from zero again.
        ticket.finish_at(Outcome::Failure, t1);
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn probe_failure_reopens_for_another_cooldown() {
        let t0 = Instant::now();
        let b = opened(t0);
        let t1 = t0 + COOLDOWN + Duration::from_secs(5);
        b.admit_at(t1)
            .expect("probe")
            .finish_at(Outcome::Failure, t1);
        assert_eq!(b.state(), CircuitState::Open);
        let hint = b.admit_at(t1).expect_err("reopened");
        assert_eq!(hint, COOLDOWN);
        let hint = b
            .admit_at(t1 + COOLDOWN - Duration::from_secs(1))
            .expect_err("reopened");
        assert_eq!(hint, Duration::from_secs(1));
        let probe = b.admit_at(t1 + COOLDOWN).expect("second probe");
        assert!(probe.is_probe());
    }

    #[test]
    fn dropped_probe_frees_the_slot() {
        let t0 = Instant::now();
        let b = opened(t0);
        let t1 = t0 + COOLDOWN;
        let probe = b.admit_at(t1).expect("probe");
        assert!(b.admit_at(t1).is_err());
        drop(probe);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert!(!b.is_open());
        let probe = b.admit_at(t1).expect("another probe");
        assert!(probe.is_probe());
        assert!(b.admit_at(t1).is_err());
        probe.finish_at(Outcome::Success, t1);
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn stale_tickets_do_not_decide() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new(1, COOLDOWN);
        let stale = b.admit_at(t0).expect("closed");
        fail(&b, t0);
        assert_eq!(b.state(), CircuitState::Open);
        // A normal ticket from before the outage cannot close the circuit.
        stale.finish_at(Outcome::Success, t0);
        assert_eq!(b.state(), CircuitState::Open);
        let t1 = t0 + COOLDOWN;
        let probe = b.admit_at(t1).expect("probe");
        probe.finish_at(Outcome::Success, t1);
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn public_api_uses_the_clock() {
        let b = CircuitBreaker::new(1, Duration::ZERO);
        b.admit().expect("closed").failure();
        assert_eq!(b.state(), CircuitState::Open);
        let probe = b.admit().expect("zero cooldown: probe at once");
        assert!(probe.is_probe());
        assert!(b.admit().expect_err("probe out") > Duration::ZERO);
        probe.success();
        assert_eq!(b.state(), CircuitState::Closed);
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CircuitBreaker>();
        assert_send_sync::<Ticket>();
    }
}
