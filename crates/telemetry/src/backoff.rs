//! The one exponential backoff of the platform, jittered, so clients that
//! failed together (reporters that lost the collector, gateways that lost
//! the upstream, outboxes) do not come back together.
//!
//! The wait before the n-th retry in a row (n = 1, 2, …) is drawn uniformly
//! from `[min / 2, min * 2^n]`, the ceiling capped at the maximum: the first
//! from `[min / 2, 2 * min]`, then twice as wide each time. Even the first
//! retry is spread over a range, so a fleet that failed at once retries over a
//! window instead of all at `min`.

use std::time::Duration;

/// Retry waits: [`Backoff::next_delay`] counts the failures in a row,
/// [`Backoff::delay`] serves callers that count their own.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// Waits from about `min` up to `max` (a zero `min` counts as 1 ms, a
    /// `max` below `min` as `min`).
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// The range the wait before retry `retry` (from 0) is drawn from.
    fn range(&self, retry: u32) -> (Duration, Duration) {
        let ceiling = self.min.saturating_mul(2u32 << retry.min(30)).min(self.max);
        let floor = (self.min / 2).min(ceiling);
        (floor, ceiling)
    }

    /// The wait before retry `retry` (from 0), for callers that count
    /// their own retries.
    pub fn delay(&self, retry: u32) -> Duration {
        let (floor, ceiling) = self.range(retry);
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::random_range(nanos(floor)..=nanos(ceiling)))
    }

    /// The wait before the next attempt, one more failure counted.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// After a success: the next failure waits the least again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(1);

    #[test]
    fn the_first_delay_is_drawn_from_a_real_range() {
        let delays: Vec<Duration> = (0..1000)
            .map(|_| Backoff::new(MIN, MAX).next_delay())
            .collect();
        assert!(
            delays.iter().all(|d| (MIN / 2..=MIN * 2).contains(d)),
            "{delays:?}"
        );
        let distinct: HashSet<&Duration> = delays.iter().collect();
        assert!(distinct.len() > 900, "{} distinct", distinct.len());
        // Both sides of `min`: the range does not collapse onto it.
        assert!(delays.iter().any(|d| *d < MIN) && delays.iter().any(|d| *d > MIN));
    }

    #[test]
    fn delays_grow_up_to_the_maximum_and_reset() {
        let mut backoff = Backoff::new(MIN, MAX);
        let mut highest = Duration::ZERO;
        for failure in 1..40u32 {
            let ceiling = (MIN * 2u32.saturating_pow(failure.min(20))).min(MAX);
            let delay = backoff.next_delay();
            assert!(delay >= MIN / 2 && delay <= ceiling, "{failure}: {delay:?}");
            highest = highest.max(delay);
        }
        assert!(highest > MAX / 2, "the range widened: {highest:?}");
        backoff.reset();
        let delay = backoff.next_delay();
        assert!((MIN / 2..=MIN * 2).contains(&delay), "{delay:?}");
    }

    #[test]
    fn the_maximum_caps_the_first_range_too() {
        let mut backoff = Backoff::new(MIN, MIN);
        for _ in 0..100 {
            let delay = backoff.next_delay();
            assert!((MIN / 2..=MIN).contains(&delay), "{delay:?}");
        }
        // A maximum below the minimum is raised to it; a zero minimum to 1 ms.
        let mut backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        let delay = backoff.next_delay();
        assert!(delay <= Duration::from_millis(1), "{delay:?}");
    }
}
