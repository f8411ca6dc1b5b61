//! Exponential backoff with full jitter: after the n-th failure in a row the
//! wait is drawn uniformly between the minimum and `min * 2^n` (capped at the
//! maximum), so reporters that lost the collector together do not come back
//! together.

use std::time::Duration;

pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(super) fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// The wait before the next attempt, one more failure counted.
    pub(super) fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .min
            .saturating_mul(1u32 << self.failures.min(30))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::random_range(nanos(self.min)..=nanos(ceiling)))
    }

    pub(super) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_up_to_the_maximum_and_reset() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        let mut backoff = Backoff::new(min, max);
        assert_eq!(backoff.next_delay(), min);
        for failure in 1..40u32 {
            let ceiling = (min * 2u32.saturating_pow(failure.min(20))).min(max);
            let delay = backoff.next_delay();
            assert!(delay >= min && delay <= ceiling, "{failure}: {delay:?}");
        }
        backoff.reset();
        assert_eq!(backoff.next_delay(), min);
    }
}
