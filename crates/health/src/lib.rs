//! The health checker every service of the platform embeds.
//!
//! A service declares its component checks once, [`spawns`](HealthChecker::spawn)
//! the checker, and serves what it has cached: a probe never waits on a slow
//! dependency (DESIGN §6).
//!
//! * `GET /health` — liveness: answers 200 whenever the process and its
//!   runtime do. It never looks at checks, and stays 200 during shutdown.
//! * `GET /ready` — readiness: 200 with a JSON [`HealthReport`] when ready
//!   (`"ready"`, or `"degraded"` when only a [`Importance::Dependency`] fails),
//!   503 with the same report otherwise: a [`Importance::Required`] check
//!   failing or not yet run, a [`StartupGuard`] alive, or shutdown begun
//!   (`"stopping"`).
//! * gRPC `grpc.health.v1` for Kubernetes' native probes: `""` and
//!   `"readiness"` are `SERVING` only while ready, `"liveness"` always.
//!
//! # Layout
//!
//! * `builder.rs` — [`HealthBuilder`]: service name, interval, timeout, checks.
//! * `checker.rs` — [`HealthChecker`]: running checks, the cached state, readiness.
//! * `component.rs` — one check, its [`Importance`] and its [`ComponentReport`].
//! * `state.rs` — what the cache holds and how readiness follows from it.
//! * `report.rs` — [`HealthReport`] and the overall [`Status`].
//! * `startup.rs` — [`StartupGuard`], the readiness latch.
//! * `http.rs` — the axum router for `/health` and `/ready`.
//! * `grpc.rs` — the `grpc.health.v1` service and how readiness reaches it.
//! * `rfc3339.rs` — timestamps for people (humantime).
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use automation_health::HealthChecker;
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn run(admin: tokio::net::TcpListener) -> std::io::Result<()> {
//! let health = HealthChecker::builder("audit-agent")
//!     .interval(Duration::from_secs(5))
//!     .timeout(Duration::from_secs(2))
//!     .required("database", || async { Ok(()) })
//!     .dependency("collector", || async { Err("connection refused".to_string()) })
//!     .build();
//!
//! let startup = health.startup_guard("first audit");
//! let shutdown = CancellationToken::new();
//! health.spawn(shutdown.clone());
//! // Also add `health.grpc_service()` to the service's tonic server.
//! tokio::spawn(axum::serve(admin, health.router()).into_future());
//!
//! drop(startup); // the first audit is done
//! health.wait_ready().await; // "degraded": the collector is away, the database is fine
//!
//! health.begin_shutdown(); // on SIGTERM: /ready answers 503 "stopping" from now on
//! shutdown.cancel();
//! # Ok(()) }
//! ```

mod builder;
mod checker;
mod component;
mod grpc;
mod http;
mod report;
mod rfc3339;
mod startup;
mod state;

pub use builder::HealthBuilder;
pub use checker::HealthChecker;
pub use component::{ComponentReport, ComponentStatus, Importance};
pub use report::{HealthReport, Status};
pub use startup::StartupGuard;

/// What a check returns: `Err` carries the error, written for people; it is
/// shown as the component's `last_error`.
pub type CheckResult = Result<(), String>;
