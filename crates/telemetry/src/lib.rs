//! What every service of the platform shares.
//!
//! * [`reporter`]: the event reporter, the client each service embeds to send
//!   its events to the collector (batched, retried, deduplicated by sequence).
//! * [`sampler`]: process and system figures for the reporter's heartbeat.
//! * [`bridge`]: the async bridge's calls as events, its live values in the
//!   heartbeat.
//! * [`config`]: the flags every service takes (clap, each with `env =`), and
//!   the exit code 64 for a bad configuration.
//! * [`logging`]: logging setup, text or JSON, and the span export.
//! * [`trace`]: distributed tracing: OTLP export, W3C trace context on
//!   every hop, a span per request served.
//! * [`shutdown`]: SIGTERM / Ctrl-C as a cancellation token.
//! * [`auth`]: bearer tokens from a file, re-read when it changes.
//! * [`tls`]: TLS for gRPC listeners and clients.
//! * [`serve`]: gRPC + admin HTTP serving with health, reflection and the
//!   graceful shutdown every service shares.

pub mod auth;
pub mod bridge;
pub mod client;
pub mod config;
pub mod logging;
pub mod reporter;
pub mod sampler;
pub mod serve;
pub mod shutdown;
pub mod tls;
pub mod trace;
