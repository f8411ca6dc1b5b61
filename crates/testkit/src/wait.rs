//! Waiting in tests without hanging: a bound on every wait, and polling
//! until a condition holds.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

/// `fut`'s output, or a panic naming `what` after 30 s: a test that would
/// hang fails instead.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Polls `check` every 100 ms until it passes or `limit` ends (then panics
/// with `what` and the last value it saw).
pub async fn until<T: Debug>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> (bool, T),
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (ok, value) = check().await;
        if ok {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{what}: still not true after {limit:?}; last: {value:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `check` every 10 ms until it returns something (panics naming
/// `what` after 30 s).
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    within(what, async {
        loop {
            if let Some(value) = check() {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}
