//! What can go wrong with a call through the bridge, and with building one.

use std::any::Any;
use std::convert::Infallible;
use std::time::Duration;

use tokio::runtime::RuntimeFlavor;

use crate::observer::Outcome;

/// A call through the bridge did not give the work's value.
///
/// `E` is the work's own error type; it is [`Infallible`] for work that
/// cannot fail ([`run_async`](crate::Bridge::run_async),
/// [`run_blocking`](crate::Bridge::run_blocking)).
#[derive(Debug, thiserror::Error)]
pub enum BridgeError<E = Infallible> {
    /// The work did not finish within the timeout (the duration given). A
    /// future is cancelled: its task is aborted and the future dropped at its
    /// next `.await`. Blocking work cannot be stopped: it is detached, runs to
    /// its end, stays counted as pending until then, and its value is dropped.
    #[error("the bridged work timed out after {0:?}")]
    Timeout(Duration),
    /// The work panicked; the panic message. The panic went no further.
    #[error("the bridged work panicked: {0}")]
    Panicked(String),
    /// The work returned its own error.
    #[error("the bridged work failed: {0}")]
    Failed(E),
    /// [`run_blocking`](crate::Bridge::run_blocking) was awaited outside a
    /// Tokio runtime, so there is no blocking pool to run the work on.
    #[error("run_blocking was awaited outside a Tokio runtime")]
    NoRuntime,
    /// The runtime that was to run the work is shut down (or shutting down):
    /// the work was dropped before it ended.
    #[error("the runtime running the bridged work is shut down")]
    Shutdown,
    /// The bridge could not start its own runtime (no threads left, for one).
    #[error("the bridge could not start its runtime")]
    Runtime(#[source] std::io::Error),
}

impl<E> BridgeError<E> {
    /// The outcome a call ending with this error is counted as.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Timeout(_) => Outcome::Timeout,
            Self::Panicked(_) => Outcome::Panic,
            Self::Failed(_) | Self::NoRuntime | Self::Shutdown | Self::Runtime(_) => Outcome::Error,
        }
    }
}

/// A bridge could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The handle given is not of a multi-thread runtime. A current-thread
    /// runtime runs only while its own thread drives it, and that thread may
    /// be the very caller the bridge blocks: futures given to it could
    /// deadlock.
    #[error("the bridge needs a multi-thread Tokio runtime, the handle is of a {0:?} one")]
    NotMultiThread(RuntimeFlavor),
}

/// The message of a panic payload (`panic!` gives a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_owned()
    }
}
