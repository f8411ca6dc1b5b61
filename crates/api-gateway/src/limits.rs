//! Per-client request rate limits and the upstream concurrency limit.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The smallest retry hint handed out, so that a hint is never zero.
const MIN_HINT: Duration = Duration::from_millis(1);

/// The longest replenish period accepted (a rate below one request a year is
/// treated as one a year).
const MAX_PERIOD: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The key used for requests without a bearer token or a known peer.
pub const ANONYMOUS: &str = "anonymous";

/// governor's clock, read from [`tokio::time::Instant`] (so a paused tokio
/// clock applies) as nanoseconds since the limiter was made.
#[derive(Debug, Clone)]
struct TokioClock {
    start: Instant,
    /// Extra time added in tests.
    #[cfg(test)]
    skew: Arc<AtomicU64>,
}

impl TokioClock {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            #[cfg(test)]
            skew: Arc::default(),
        }
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        let elapsed = self.start.elapsed();
        #[cfg(test)]
        let elapsed = elapsed + Duration::from_nanos(self.skew.load(Ordering::Relaxed));
        Nanos::from(elapsed)
    }
}

type KeyedLimiter =
    RateLimiter<String, HashMapStateStore<String>, TokioClock, NoOpMiddleware<Nanos>>;

/// Per-client request rate limits, keyed by a client key (the gateway passes
/// a hash of the client's verified bearer token, see [`client_key`], or,
/// when tokens are not verified, its address, see [`peer_key`]).
///
/// Each client has its own bucket of `burst` requests that refills at
/// `per_second`.
#[derive(Debug)]
pub struct ClientLimits {
    limiter: Option<KeyedLimiter>,
}

impl ClientLimits {
    /// Limits every client to `per_second` requests a second on average
    /// (may be fractional, e.g. 0.5 is one request every two seconds) with
    /// bursts of up to `burst` requests (0 is treated as 1).
    ///
    /// # Panics
    ///
    /// If `per_second` is not a finite number above zero.
    pub fn new(per_second: f64, burst: u32) -> Self {
        assert!(
            per_second.is_finite() && per_second > 0.0,
            "per-client rate must be a finite number above zero, got {per_second}"
        );
        let period = Duration::try_from_secs_f64(1.0 / per_second)
            .unwrap_or(MAX_PERIOD)
            .clamp(Duration::from_nanos(1), MAX_PERIOD);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| unreachable!("the period is at least 1ns"))
            .allow_burst(burst);
        Self {
            limiter: Some(RateLimiter::hashmap_with_clock(quota, TokioClock::new())),
        }
    }

    /// No limits: every check passes.
    pub fn unlimited() -> Self {
        Self { limiter: None }
    }

    /// `Ok` if `client` may make a request now (which uses up one from its
    /// bucket), or `Err(wait)`: how long until a request would be allowed
    /// (the gateway sends it as a retry hint). The wait is never zero.
    pub fn check(&self, client: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&client.to_owned()).map_err(|not_until| {
            not_until
                .wait_time_from(limiter.clock().now())
                .max(MIN_HINT)
        })
    }

    /// Forgets clients whose bucket has refilled (they are indistinguishable
    /// from new ones), so memory stays bounded. Call it periodically.
    pub fn shrink(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// The number of clients remembered now.
    pub fn clients(&self) -> usize {
        self.limiter.as_ref().map_or(0, KeyedLimiter::len)
    }

    #[cfg(test)]
    fn advance(&self, by: Duration) {
        if let Some(limiter) = &self.limiter {
            let nanos = u64::try_from(by.as_nanos()).expect("small test durations");
            limiter.clock().skew.fetch_add(nanos, Ordering::Relaxed);
        }
    }
}

/// A stable, non-reversible client key from a bearer token: 16 hex digits of
/// a 64-bit keyed hash, or "anonymous" without a (non-blank) token.
///
/// The hash keys are random per process, so keys are stable within a process
/// only (they only live in memory). The token itself is never returned or logged.
pub fn client_key(token: Option<&str>) -> String {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    match token.map(str::trim) {
        Some(token) if !token.is_empty() => {
            let hash = KEYS.get_or_init(RandomState::new).hash_one(token);
            format!("{hash:016x}")
        }
        _ => ANONYMOUS.to_owned(),
    }
}

/// A client key from the peer's address, for when bearer tokens are not
/// verified (an unverified token is whatever the caller makes up, so keying
/// by it would give every made-up token a bucket of its own).
///
/// An IPv6 peer is keyed by its /64, which one host holds whole and can
/// pick addresses from at will; an IPv4-mapped address counts as IPv4.
/// "anonymous" when the address is unknown.
pub fn peer_key(peer: Option<IpAddr>) -> String {
    match peer.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(v4)) => format!("ip {v4}"),
        Some(IpAddr::V6(v6)) => {
            let network = u128::from(v6) & !u128::from(u64::MAX);
            format!("ip {}/64", std::net::Ipv6Addr::from(network))
        }
        None => ANONYMOUS.to_owned(),
    }
}

/// A concurrency limit below the account's: at most `max` upstream calls at
/// once; callers wait up to `queue_timeout` for a slot.
///
/// Cheap to clone; clones share the slots.
#[derive(Debug, Clone)]
pub struct Concurrency {
    semaphore: Arc<Semaphore>,
    in_flight: Arc<AtomicU64>,
    queue_timeout: Duration,
}

impl Concurrency {
    /// At most `max` calls at once (0 is treated as 1; at most
    /// [`Semaphore::MAX_PERMITS`]); a caller waits up to `queue_timeout` for
    /// a slot.
    pub fn new(max: usize, queue_timeout: Duration) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
            in_flight: Arc::default(),
            queue_timeout,
        }
    }

    /// Waits up to the queue timeout for a slot. `Err` carries a suggested
    /// retry hint: the queue timeout, clamped to 1–30 seconds.
    pub async fn acquire(&self) -> Result<Slot, Duration> {
        let permit = match Arc::clone(&self.semaphore).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                match tokio::time::timeout(
                    self.queue_timeout,
                    Arc::clone(&self.semaphore).acquire_owned(),
                )
                .await
                {
                    Ok(Ok(permit)) => permit,
                    // Timed out (the semaphore is never closed).
                    Ok(Err(_)) | Err(_) => return Err(self.retry_hint()),
                }
            }
        };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            _permit: permit,
            in_flight: Arc::clone(&self.in_flight),
        })
    }

    /// The number of slots held now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn retry_hint(&self) -> Duration {
        self.queue_timeout
            .clamp(Duration::from_secs(1), Duration::from_secs(30))
    }
}

/// One upstream call slot from [`Concurrency::acquire`]; released on drop.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    in_flight: Arc<AtomicU64>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_limited_with_a_sensible_hint() {
        let limits = ClientLimits::new(2.0, 3);
        for _ in 0..3 {
            limits.check("a").expect("within burst");
        }
        let wait = limits.check("a").expect_err("burst used up");
        assert!(wait > Duration::ZERO, "{wait:?}");
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        limits.advance(wait);
        limits.check("a").expect("refilled one");
        assert!(limits.check("a").is_err());
    }

    #[test]
    fn clients_are_independent() {
        let limits = ClientLimits::new(1.0, 1);
        limits.check("a").expect("a first");
        assert!(limits.check("a").is_err());
        limits.check("b").expect("b unaffected by a");
        assert!(limits.check("b").is_err());
        limits
            .check(ANONYMOUS)
            .expect("anonymous is its own client");
        assert_eq!(limits.clients(), 3);
    }

    #[test]
    fn fractional_rate() {
        let limits = ClientLimits::new(0.5, 1);
        limits.check("a").expect("first");
        let wait = limits.check("a").expect_err("one every two seconds");
        assert!(wait > Duration::from_millis(1900), "{wait:?}");
        assert!(wait <= Duration::from_secs(2), "{wait:?}");
        limits.advance(Duration::from_secs(1));
        let wait = limits.check("a").expect_err("half way");
        assert!(wait > Duration::from_millis(900), "{wait:?}");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        limits.advance(Duration::from_secs(1));
        limits.check("a").expect("two seconds later");
    }

    #[test]
    fn denied_requests_do_not_use_up_the_bucket() {
        let limits = ClientLimits::new(1.0, 1);
        limits.check("a").expect("first");
        for _ in 0..10 {
            assert!(limits.check("a").is_err());
        }
        limits.advance(Duration::from_secs(1));
        limits.check("a").expect("refilled");
    }

    #[test]
    fn zero_burst_is_one() {
        let limits = ClientLimits::new(1.0, 0);
        limits.check("a").expect("first");
        assert!(limits.check("a").is_err());
    }

    #[test]
    fn extreme_rates_do_not_panic() {
        let fast = ClientLimits::new(1e15, 1);
        fast.check("a").expect("first");
        let slow = ClientLimits::new(1e-30, 1);
        slow.check("a").expect("first");
        assert!(slow.check("a").expect_err("slow") > Duration::from_secs(3600));
    }

    #[test]
    #[should_panic(expected = "finite number above zero")]
    fn zero_rate_panics() {
        let _ = ClientLimits::new(0.0, 1);
    }

    #[test]
    fn unlimited_always_passes() {
        let limits = ClientLimits::unlimited();
        for _ in 0..1000 {
            limits.check("a").expect("unlimited");
        }
        assert_eq!(limits.clients(), 0);
        limits.shrink();
    }

    #[test]
    fn shrink_forgets_idle_clients() {
        let limits = ClientLimits::new(1.0, 2);
        limits.check("idle").expect("ok");
        limits.check("busy").expect("ok");
        assert_eq!(limits.clients(), 2);
        limits.shrink();
        assert_eq!(limits.clients(), 2, "neither bucket has refilled yet");
        limits.advance(Duration::from_secs(5));
        limits.check("busy").expect("ok");
        limits.check("busy").expect("ok");
        limits.shrink();
        assert_eq!(limits.clients(), 1, "only the busy client is kept");
        limits.advance(Duration::from_secs(5));
        limits.shrink();
        assert_eq!(limits.clients(), 0);
    }

    #[test]
    fn client_keys_hide_the_token() {
        let token = "sk-secret-token-value";
        let key = client_key(Some(token));
        assert_eq!(key.len(), 16);
        assert!(key.chars().all(|c| c.is_ascii_hexdigit()), "{key}");
        assert!(!key.contains("secret"));
        assert_eq!(key, client_key(Some(token)), "stable within a process");
        assert_ne!(key, client_key(Some("sk-other-token")));
        assert_eq!(client_key(None), ANONYMOUS);
        assert_eq!(client_key(Some("  ")), ANONYMOUS);
    }

    #[test]
    fn peer_keys_group_an_ipv6_host_and_unmap_ipv4() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(peer_key(ip("10.0.0.7")), "ip 10.0.0.7");
        assert_eq!(peer_key(ip("::ffff:10.0.0.7")), "ip 10.0.0.7");
        assert_eq!(peer_key(ip("2001:db8:1:2:aaaa::1")), "ip 2001:db8:1:2::/64");
        assert_eq!(
            peer_key(ip("2001:db8:1:2:bbbb::9")),
            peer_key(ip("2001:db8:1:2:aaaa::1"))
        );
        assert_ne!(
            peer_key(ip("2001:db8:1:3::1")),
            peer_key(ip("2001:db8:1:2::1"))
        );
        assert_eq!(peer_key(None), ANONYMOUS);
    }

    #[tokio::test]
    async fn concurrency_holds_at_most_max() {
        let c = Concurrency::new(2, Duration::from_millis(20));
        let a = c.acquire().await.expect("first");
        let b = c.acquire().await.expect("second");
        assert_eq!(c.in_flight(), 2);
        let hint = c.acquire().await.expect_err("full");
        assert!(hint >= Duration::from_secs(1), "{hint:?}");
        assert_eq!(c.in_flight(), 2);
        drop(a);
        assert_eq!(c.in_flight(), 1);
        let _c = c.acquire().await.expect("freed");
        assert_eq!(c.in_flight(), 2);
        drop(b);
        assert_eq!(c.in_flight(), 1);
    }

    #[tokio::test]
    async fn waiter_gets_the_slot_when_one_frees() {
        let c = Concurrency::new(1, Duration::from_secs(30));
        let held = c.acquire().await.expect("first");
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move { c.acquire().await.map(|_slot| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "waits while the slot is held");
        drop(held);
        waiter.await.expect("joined").expect("got the slot");
        assert_eq!(c.in_flight(), 0);
    }

    #[tokio::test]
    async fn times_out_with_a_hint() {
        let c = Concurrency::new(1, Duration::from_millis(30));
        let _held = c.acquire().await.expect("first");
        let started = std::time::Instant::now();
        let hint = c.acquire().await.expect_err("times out");
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(hint, Duration::from_secs(1));
        let long = Concurrency::new(1, Duration::from_secs(120));
        assert_eq!(long.retry_hint(), Duration::from_secs(30));
    }

    #[tokio::test]
    async fn zero_max_is_one() {
        let c = Concurrency::new(0, Duration::ZERO);
        let _slot = c.acquire().await.expect("one slot");
        assert!(c.acquire().await.is_err());
    }
}
