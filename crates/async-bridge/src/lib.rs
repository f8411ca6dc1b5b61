//! The platform's SafeAsyncBridge: the one safe, watched crossing between
//! sync code (a file-watcher callback thread, a blocking git scan, a test
//! process reader) and async code (gRPC servers, the event reporter).
//!
//! The classic crossings deadlock (`block_on` inside a runtime worker), hide
//! panics, or leak work that never ends. Through a [`Bridge`]:
//!
//! * sync code runs a future and waits for it, at most a timeout
//!   ([`Bridge::run_async`]), from a plain thread, from inside a
//!   current-thread runtime, or from a multi-thread runtime's worker;
//! * async code runs blocking work on the blocking pool, at most a timeout
//!   ([`Bridge::run_blocking`]), and the runtime stays responsive;
//! * a panic in the work comes back as [`BridgeError::Panicked`], never as a
//!   crash of the caller; a call that takes too long comes back as
//!   [`BridgeError::Timeout`]; work that returns `Err(e)`
//!   ([`Bridge::try_run_async`], [`Bridge::try_run_blocking`]) comes back as
//!   [`BridgeError::Failed`];
//! * every call is counted once, by direction and outcome, and told to an
//!   [`Observer`] as a [`CallRecord`] (the platform's observer, in
//!   `automation-telemetry`, reports it to the collector); [`Bridge::pending`]
//!   and [`Bridge::active_loops`] (also through [`Gauges`], which does not
//!   keep the bridge alive) feed live gauges.
//!
//! # How it works
//!
//! Futures run on a multi-thread runtime the bridge can rely on: one given
//! to it ([`Bridge::with_handle`]; a current-thread handle is refused) or
//! its own small one, started on first use (its "active loop"). The caller
//! waits on a channel with a timeout; on a multi-thread runtime's worker
//! that wait is wrapped in `block_in_place`, so the worker's other tasks move
//! to another thread. Blocking work goes to the current runtime's
//! `spawn_blocking` pool under a Tokio timeout.
//!
//! # What happens to work that times out
//!
//! * A future is cancelled: its task is aborted and the future dropped at its
//!   next `.await`; it counts as pending until then.
//! * Blocking work cannot be stopped: it is detached, runs to its end (its
//!   value dropped) and counts as pending until then. The same holds when an
//!   awaiting caller drops the `run_blocking` future
//!   ([`Outcome::Cancelled`]).
//!
//! # Caveats
//!
//! * A sync call made on a current-thread runtime's thread blocks that
//!   runtime for the call's duration. The future itself runs on the bridge's
//!   runtime, but one that needs the blocked runtime (an I/O resource or a
//!   timer created on it, a channel fed by one of its tasks) cannot progress
//!   before the call returns: it times out.
//! * A sync call blocks the calling task as a whole: its other futures
//!   (siblings in a `join!` or `select!`) wait too.
//! * `run_blocking` needs a Tokio runtime with its time driver on (as
//!   `#[tokio::main]` has it); outside any runtime it is
//!   [`BridgeError::NoRuntime`].
//! * Detached blocking work holds up the shutdown of the runtime whose pool
//!   runs it: dropping a runtime waits for its blocking threads
//!   (`Runtime::shutdown_timeout` bounds the wait).
//! * Observers are called on the caller's thread: they must be quick.
//!
//! # Layout
//!
//! * `bridge.rs` — [`Bridge`], [`BridgeBuilder`], the accounting of a call;
//!   `bridge/to_async.rs` (sync → future) and `bridge/to_blocking.rs`
//!   (async → blocking work).
//! * `runtime.rs` — the runtime futures run on, and waiting without
//!   stalling a runtime.
//! * `observer.rs` — [`Observer`], [`CallRecord`], [`Direction`], [`Outcome`].
//! * `stats.rs` — the counters: [`Stats`], [`Gauges`].
//! * `error.rs` — [`BridgeError`], [`BuildError`].
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use automation_async_bridge::{Bridge, BridgeError};
//!
//! let bridge = Bridge::new();
//! let timeout = Duration::from_secs(5);
//!
//! // Sync code runs a future.
//! let answer = bridge.run_async(timeout, async { 6 * 7 });
//! assert_eq!(answer.unwrap(), 42);
//!
//! // A panic is an error value.
//! let panicked = bridge.run_async(timeout, async { panic!("boom") });
//! assert!(matches!(panicked, Err(BridgeError::Panicked(m)) if m == "boom"));
//!
//! // Async code runs blocking work (here from a future the bridge runs).
//! let inner = bridge.clone();
//! let read = bridge.run_async(timeout, async move {
//!     inner
//!         .try_run_blocking(timeout, || std::fs::read_to_string("/no/such/file"))
//!         .await
//! });
//! assert!(matches!(read, Ok(Err(BridgeError::Failed(_)))));
//!
//! let stats = bridge.stats();
//! assert_eq!((stats.to_async.calls, stats.to_async.errors), (3, 1));
//! assert_eq!((stats.to_blocking.calls, stats.to_blocking.errors), (1, 1));
//! assert_eq!(bridge.pending(), 0);
//! ```

mod bridge;
mod error;
mod observer;
mod runtime;
mod stats;

pub use bridge::{Bridge, BridgeBuilder};
pub use error::{BridgeError, BuildError};
pub use observer::{CallRecord, Direction, Observer, Outcome};
pub use stats::{DirectionStats, Gauges, Stats};
