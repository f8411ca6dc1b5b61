//! Sync code runs a future: [`Bridge::run_async`], [`Bridge::try_run_async`].

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::panic::{self, AssertUnwindSafe};
use std::pin::pin;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::task::Poll;
use std::time::Duration;

use super::{Bridge, Call, Inner};
use crate::error::{BridgeError, panic_message};
use crate::observer::Direction;
use crate::runtime::wait_blocking;

impl Bridge {
    /// Runs `future` on the bridge's runtime and waits, at most `timeout`,
    /// for its output. For futures that give a `Result` whose error should
    /// count as a failed call, see [`try_run_async`](Self::try_run_async).
    ///
    /// Safe from any thread, never a deadlock and never a panic:
    /// * a plain thread (a file-watcher callback, a blocking pool thread)
    ///   simply waits;
    /// * a multi-thread runtime's worker hands its other tasks to another
    ///   thread before it waits (`block_in_place`), so even a bridge on that
    ///   same runtime, with every worker waiting in a call, makes progress;
    /// * a current-thread runtime's thread waits, and that runtime with it,
    ///   while the future runs on the bridge's runtime, never on the blocked
    ///   one. The one unavoidable caveat: a future that needs the blocked
    ///   runtime itself (an I/O resource or a timer created on it, a channel
    ///   fed by one of its tasks) cannot progress before the call returns,
    ///   so it times out.
    ///
    /// Other futures of the calling task (siblings in a `join!` or
    /// `select!`) wait too: the task is blocked for the call's duration.
    ///
    /// On timeout the future is cancelled: its task is aborted and the future
    /// dropped at its next `.await` (a future that never yields runs on
    /// until it does), and it stays counted as pending until then. A panic in
    /// the future becomes [`BridgeError::Panicked`].
    pub fn run_async<F>(&self, timeout: Duration, future: F) -> Result<F::Output, BridgeError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.try_run_async(timeout, async move { Ok::<_, Infallible>(future.await) })
    }

    /// Like [`run_async`](Self::run_async) for a future that gives a
    /// `Result`: its error becomes [`BridgeError::Failed`] and the call
    /// counts as an error.
    pub fn try_run_async<F, T, E>(&self, timeout: Duration, future: F) -> Result<T, BridgeError<E>>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let call = Call::start(&self.inner, Direction::ToAsync);
        let result = run(&self.inner, timeout, future);
        call.end(result)
    }
}

fn run<F, T, E>(inner: &Inner, timeout: Duration, future: F) -> Result<T, BridgeError<E>>
where
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let counters = inner.gauges.counters();
    let runtime = inner
        .executor
        .handle(counters)
        .map_err(BridgeError::Runtime)?;
    let pending = counters.start_pending();
    let (sender, receiver) = mpsc::sync_channel(1);
    let task = runtime.spawn(async move {
        let output = catch_unwind(future).await;
        // Down before the caller hears, so its record shows the count after.
        drop(pending);
        // The caller may have stopped waiting (timed out): nothing to tell.
        let _ = sender.send(output);
    });
    // A task dropped unfinished (its runtime shut down) drops the sender.
    match wait_blocking(|| receiver.recv_timeout(timeout)) {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(error))) => Err(BridgeError::Failed(error)),
        Ok(Err(message)) => Err(BridgeError::Panicked(message)),
        Err(RecvTimeoutError::Timeout) => {
            task.abort();
            Err(BridgeError::Timeout(timeout))
        }
        Err(RecvTimeoutError::Disconnected) => Err(BridgeError::Shutdown),
    }
}

/// Polls `future`, turning a panic in it into the panic's message. The
/// future is dropped (before this returns) and never polled after a panic.
async fn catch_unwind<F: Future>(future: F) -> Result<F::Output, String> {
    let mut future = pin!(future);
    poll_fn(
        |cx| match panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(&*payload))),
        },
    )
    .await
}
