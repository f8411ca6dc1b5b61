//! A stream handed to a door's writer (hyper's body, tonic's response),
//! polled by that writer directly — no task or channel between them — and
//! dropped by a watchdog when the writer stops taking what is ready: a
//! client that stops reading then frees what the stream holds (its
//! concurrency slot, its upstream connection) within `limit` instead of
//! never.
//!
//! The watchdog counts only time in which the stream has something for the
//! writer (an item just handed out, or a wake from the inner stream) and is
//! not polled; a stream waiting on its own source (an upstream that takes
//! its time, bounded by the source's own limits) is never dropped by it.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use futures_util::{Stream, StreamExt};
use tokio::sync::oneshot;
use tokio::time::Instant;

type Inner<T> = Pin<Box<dyn Stream<Item = T> + Send>>;

/// A stream dropped once its writer leaves it unpolled for `limit` while it
/// has something ready. Dropping it drops the inner stream at once.
pub(crate) struct Watched<T> {
    shared: Arc<Shared<T>>,
    /// The inner stream's waker: marks the stream ready, then wakes the writer.
    waker: Waker,
    /// Dropped with the stream: ends the watchdog at once.
    _stop: oneshot::Sender<()>,
}

struct Shared<T> {
    inner: Mutex<Option<Inner<T>>>,
    writer: AtomicWaker,
    /// Since when the stream has had something for its writer without
    /// being polled, if it has.
    ready_since: Mutex<Option<Instant>>,
}

impl<T> Shared<T> {
    fn inner(&self) -> MutexGuard<'_, Option<Inner<T>>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ready_since(&self) -> MutexGuard<'_, Option<Instant>> {
        self.ready_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The stream has something for its writer (from now, unless already).
    fn mark_ready(&self) {
        self.ready_since().get_or_insert_with(Instant::now);
    }

    /// Drops the inner stream (and what it holds), outside the lock: its
    /// drop may report the call.
    fn end(&self) {
        let inner = self.inner().take();
        drop(inner);
    }
}

impl<T: Send + 'static> Wake for Shared<T> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.mark_ready();
        self.writer.wake();
    }
}

impl<T: Send + 'static> Watched<T> {
    /// Watches `inner`; needs a Tokio runtime (the watchdog is a task).
    pub(crate) fn new(inner: impl Stream<Item = T> + Send + 'static, limit: Duration) -> Self {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Some(Box::pin(inner))),
            writer: AtomicWaker::new(),
            ready_since: Mutex::new(None),
        });
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(watchdog(Arc::downgrade(&shared), limit, stopped));
        Self {
            waker: Waker::from(Arc::clone(&shared)),
            shared,
            _stop: stop,
        }
    }
}

/// Drops the stream once it has been ready and unpolled for `limit`; ends
/// when the stream is dropped or ends.
async fn watchdog<T>(shared: Weak<Shared<T>>, limit: Duration, mut stopped: oneshot::Receiver<()>) {
    let mut check = Instant::now() + limit;
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep_until(check) => {}
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let ready_since = *shared.ready_since();
        match ready_since {
            Some(since) if since + limit <= Instant::now() => {
                shared.end();
                return;
            }
            Some(since) => check = since + limit,
            None => check = Instant::now() + limit,
        }
    }
}

impl<T> Drop for Watched<T> {
    fn drop(&mut self) {
        // The inner stream's sources hold its waker, and with it `shared`:
        // the stream must not wait for them to let go.
        self.shared.end();
    }
}

impl<T: Send + 'static> Stream for Watched<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        this.shared.writer.register(cx.waker());
        *this.shared.ready_since() = None;
        let mut inner = this.shared.inner();
        let Some(stream) = inner.as_mut() else {
            return Poll::Ready(None);
        };
        match stream.poll_next_unpin(&mut Context::from_waker(&this.waker)) {
            Poll::Ready(Some(item)) => {
                // The writer is expected back for the next one.
                this.shared.mark_ready();
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => {
                drop(inner);
                this.shared.end();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Set when the source holding it is dropped.
    struct DropFlag(Arc<AtomicBool>);

    impl DropFlag {
        fn new() -> (Self, Arc<AtomicBool>) {
            let dropped = Arc::new(AtomicBool::new(false));
            (Self(Arc::clone(&dropped)), dropped)
        }
    }

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// Yields `1..` forever.
    struct Endless(
        u32,
        #[expect(dead_code, reason = "held for its drop")] DropFlag,
    );

    impl Stream for Endless {
        type Item = u32;

        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<u32>> {
            self.0 += 1;
            Poll::Ready(Some(self.0))
        }
    }

    #[tokio::test]
    async fn a_writer_that_stops_polling_loses_the_stream_after_the_limit() {
        let (flag, dropped) = DropFlag::new();
        let limit = Duration::from_millis(300);
        let mut watched = Watched::new(Endless(0, flag), limit);
        // A writer that keeps taking items keeps the stream, however long.
        let mut stopped = std::time::Instant::now();
        for n in 1..=40 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(watched.next().await, Some(n));
            stopped = std::time::Instant::now();
        }
        assert!(!dropped.load(Ordering::SeqCst));
        // One that stops taking them loses it.
        while !dropped.load(Ordering::SeqCst) {
            assert!(stopped.elapsed() < Duration::from_secs(10), "never dropped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(stopped.elapsed() >= limit, "not before the limit");
        assert_eq!(watched.next().await, None, "and ended for the writer");
    }

    #[tokio::test]
    async fn a_stream_waiting_on_its_source_is_left_alone() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(1);
        let source = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut watched = Watched::new(source, Duration::from_millis(50));
        let reader = tokio::spawn(async move { watched.next().await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        tx.send(7).await.unwrap();
        assert_eq!(reader.await.unwrap(), Some(7));
    }

    /// Never ready; keeps the waker it is polled with where the test can
    /// hold it, as an upstream's socket or timer does.
    struct Waiting(
        Arc<Mutex<Option<Waker>>>,
        #[expect(dead_code, reason = "held for its drop")] DropFlag,
    );

    impl Stream for Waiting {
        type Item = u32;

        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<u32>> {
            *self.0.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn dropping_the_stream_drops_its_source_at_once() {
        let (flag, dropped) = DropFlag::new();
        let held = Arc::new(Mutex::new(None));
        let mut watched = Watched::new(Waiting(Arc::clone(&held), flag), Duration::from_secs(60));
        assert!(futures_util::FutureExt::now_or_never(watched.next()).is_none());
        assert!(held.lock().unwrap().is_some(), "the source holds the waker");
        drop(watched);
        assert!(dropped.load(Ordering::SeqCst));
    }
}
