//! Async code runs blocking work: [`Bridge::run_blocking`],
//! [`Bridge::try_run_blocking`].

use std::convert::Infallible;
use std::time::Duration;

use tokio::runtime::Handle;

use super::{Bridge, Call, Inner};
use crate::error::{BridgeError, panic_message};
use crate::observer::Direction;

impl Bridge {
    /// Runs `work` on the current runtime's blocking pool and waits, at most
    /// `timeout`, for its value, leaving the runtime's workers free
    /// meanwhile. For work that gives a `Result` whose error should count as
    /// a failed call, see [`try_run_blocking`](Self::try_run_blocking).
    ///
    /// Must be awaited inside a Tokio runtime ([`BridgeError::NoRuntime`]
    /// otherwise) whose time driver is on, as `#[tokio::main]` and
    /// `Builder::enable_all` have it: the timeout is a Tokio timer.
    ///
    /// Blocking work cannot be stopped. On timeout it is detached: it runs to
    /// its end, its value is dropped, and it stays counted as pending until
    /// it ends. The same holds when the returned future is dropped before the
    /// work ends (the call is then counted as
    /// [`Cancelled`](crate::Outcome::Cancelled)). A panic in the work becomes
    /// [`BridgeError::Panicked`].
    pub async fn run_blocking<F, T>(&self, timeout: Duration, work: F) -> Result<T, BridgeError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.try_run_blocking(timeout, move || Ok::<_, Infallible>(work()))
            .await
    }

    /// Like [`run_blocking`](Self::run_blocking) for work that gives a
    /// `Result`: its error becomes [`BridgeError::Failed`] and the call
    /// counts as an error.
    pub async fn try_run_blocking<F, T, E>(
        &self,
        timeout: Duration,
        work: F,
    ) -> Result<T, BridgeError<E>>
    where
        F: FnOnce() -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let call = Call::start(&self.inner, Direction::ToBlocking);
        let result = run(&self.inner, timeout, work).await;
        call.end(result)
    }
}

async fn run<F, T, E>(inner: &Inner, timeout: Duration, work: F) -> Result<T, BridgeError<E>>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let Ok(runtime) = Handle::try_current() else {
        return Err(BridgeError::NoRuntime);
    };
    let pending = inner.gauges.counters().start_pending();
    let task = runtime.spawn_blocking(move || {
        // Moved in, so the count comes down however the work ends, panics
        // included, and even when it never runs (a runtime shutting down).
        let _pending = pending;
        work()
    });
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(error))) => Err(BridgeError::Failed(error)),
        Ok(Err(join)) if join.is_panic() => {
            Err(BridgeError::Panicked(panic_message(&*join.into_panic())))
        }
        Ok(Err(_cancelled)) => Err(BridgeError::Shutdown),
        // Dropping the join handle detaches the work.
        Err(_elapsed) => Err(BridgeError::Timeout(timeout)),
    }
}
