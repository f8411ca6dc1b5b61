//! How every service of the platform runs.
//!
//! * [`config`]: the flags every service takes (clap, each with `env =`),
//!   their conversion into the [`ServiceConfig`](config::ServiceConfig)
//!   every service's configuration holds, and the exit code 64 for a bad
//!   configuration.
//! * [`service`]: the start-up sequence every service shares (reporter,
//!   bridge, health, serving, goodbye) and the [`Running`](service::Running)
//!   service it hands back.
//! * [`serve`]: gRPC + admin HTTP serving with health, reflection and the
//!   graceful shutdown of DESIGN §7, every connection under limits.
//! * [`binary`]: a service binary's life, from command line to exit code.
//! * [`shutdown`]: SIGTERM / Ctrl-C as a cancellation token.

pub mod binary;
pub mod config;
pub mod serve;
pub mod service;
pub mod shutdown;
