//! What every service of the platform shares.
//!
//! * [`backoff`]: the one jittered exponential backoff, for every retry.
//! * [`reporter`]: the event reporter, the client each service embeds to send
//!   its events to the collector (batched, retried, deduplicated by sequence).
//! * [`sampler`]: process and system figures for the reporter's heartbeat.
//! * [`bridge`]: the async bridge's calls as events, its live values in the
//!   heartbeat.
//! * [`logging`]: logging setup, text or JSON, and the span export.
//! * [`trace`]: distributed tracing: OTLP export, W3C trace context on
//!   every hop, a span per request served.
//! * [`secret`]: a secret in a file, re-read when it changes.
//! * [`auth`]: bearer tokens from such a file.
//! * [`tls`]: TLS for gRPC listeners and clients.
//!
//! How a service starts, is configured and serves is `automation-runtime`'s.

pub mod auth;
pub mod backoff;
pub mod bridge;
pub mod client;
pub mod logging;
pub mod reporter;
pub mod sampler;
pub mod secret;
pub mod tls;
pub mod trace;
