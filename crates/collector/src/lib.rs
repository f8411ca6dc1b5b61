//! The collector: receives every service's events over gRPC, turns them into
//! metrics through the `metrics` facade, and serves them to Prometheus.
//!
//! Layout:
//! * [`catalog`]: every metric, defined once (`collector catalog` prints it).
//! * [`state`]: instances, batch handling, liveness sweep.
//! * [`instance`]: one reporting instance: its own recorder and series.
//! * [`apply`]: event validation and the event → metric mapping.
//! * [`dedup`]: replay windows; [`guard`]: the cardinality guard.
//! * [`render`]: `/metrics` text; [`server`]: gRPC service and HTTP routes.
//! * [`config`]: the command line.
//!
//! Run it with `cargo run -p automation-collector --bin collector`; it listens
//! on gRPC :50051 and HTTP :9400 (`/metrics`, `/health`, `/ready`).

pub mod apply;
pub mod catalog;
pub mod config;
pub mod dedup;
pub mod guard;
pub mod instance;
pub mod otlp;
pub mod render;
pub mod server;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use automation_health::HealthChecker;
use automation_proto::v1::{Event, Heartbeat, event::Payload};
use automation_runtime::config::ServiceConfig;
use automation_runtime::serve::{Extra, Listeners, listen};
use automation_runtime::service::{Running, Runtime};
use automation_telemetry::sampler::Sampler;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

pub use state::{Limits, State};

/// Everything [`start`] needs besides its listeners.
#[derive(Debug, Clone)]
pub struct Config {
    /// What every service's configuration holds.
    pub service: ServiceConfig,
    /// Its version, in `automation_component_info`.
    pub version: String,
    /// Limits and timings.
    pub limits: Limits,
    /// Pushes processed at once before `RESOURCE_EXHAUSTED`.
    pub max_concurrent_pushes: usize,
    /// Of those, how many one connection may hold.
    pub max_pushes_per_connection: usize,
    /// Where OTLP/gRPC is served besides the gRPC port (4317), if anywhere.
    pub otlp_grpc: Option<SocketAddr>,
    /// Where OTLP/HTTP (`POST /v1/metrics`) is served (4318), if anywhere.
    pub otlp_http: Option<SocketAddr>,
    /// How often silent instances are looked for.
    pub sweep_interval: Duration,
    /// How often the collector samples its own process.
    pub self_interval: Duration,
}

impl Config {
    /// Defaults for a collector named `instance`.
    pub fn new(instance: &str) -> Self {
        Self {
            service: ServiceConfig::new(instance),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            limits: Limits::default(),
            max_concurrent_pushes: 1_024,
            max_pushes_per_connection: 16,
            otlp_grpc: None,
            otlp_http: None,
            sweep_interval: Duration::from_secs(1),
            self_interval: Duration::from_secs(10),
        }
    }
}

/// What can stop the collector.
pub type Error = automation_runtime::serve::ServeError;

/// A running collector's handles, for the stack and tests.
#[derive(Debug, Clone)]
pub struct Handles {
    /// The state.
    pub state: Arc<State>,
    /// The health checker.
    pub health: HealthChecker,
    /// The bound OTLP/gRPC address, when served.
    pub otlp_grpc: Option<SocketAddr>,
    /// The bound OTLP/HTTP address, when served.
    pub otlp_http: Option<SocketAddr>,
}

/// The collector's name, in logs and its own series.
pub const NAME: &str = "collector";

/// A running collector.
pub type Collector = Running<Handles, Error>;

/// Starts serving gRPC and HTTP on `listeners`, until `shutdown` is
/// cancelled; then it shuts down gracefully: unready at once, up for the
/// shutdown delay, then drains within the grace period.
pub async fn start(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<Collector, Error> {
    let runtime = Runtime::unreported(NAME, &config.service);
    let state = State::new(
        config.limits.clone(),
        &config.service.instance,
        &config.version,
    );
    let health = runtime.health(HealthChecker::builder(NAME));
    tokio::spawn(maintain(
        Arc::clone(&state),
        config.sweep_interval,
        config.self_interval,
        runtime.background(),
    ));

    // One gate for every door, so pushes over any of them share the slots.
    let gate = server::Gate::new(
        config.max_concurrent_pushes,
        config.max_pushes_per_connection,
    );
    let auth = &config.service.auth;
    let max_decoding = config.limits.max_batch_bytes.saturating_mul(4);
    let routes = Routes::new(server::grpc_service(
        Arc::clone(&state),
        auth.clone(),
        max_decoding,
        Arc::clone(&gate),
    ))
    .add_service(otlp::grpc_service(
        Arc::clone(&state),
        auth.clone(),
        max_decoding,
        Arc::clone(&gate),
    ));
    let mut extra = Extra::default();
    let (mut otlp_grpc, mut otlp_http) = (None, None);
    if let Some(addr) = config.otlp_grpc {
        let listener = listen("OTLP/gRPC", addr).await?;
        otlp_grpc = listener.local_addr().ok();
        extra.grpc.push(listener);
    }
    if let Some(addr) = config.otlp_http {
        let listener = listen("OTLP/HTTP", addr).await?;
        otlp_http = listener.local_addr().ok();
        let router = otlp::http_router(
            Arc::clone(&state),
            auth.clone(),
            gate,
            max_decoding,
            config.service.connections.request_body_timeout,
        );
        extra.http.push((listener, router));
    }
    let handles = Handles {
        state: Arc::clone(&state),
        health: health.clone(),
        otlp_grpc,
        otlp_http,
    };
    runtime.serve(
        &health,
        routes,
        server::metrics_router(state),
        listeners,
        extra,
        shutdown,
        handles,
        async {},
    )
}

/// The collector's own upkeep: liveness sweeps, histogram upkeep and its own
/// heartbeat, all off the async workers where they are CPU work.
async fn maintain(
    state: Arc<State>,
    sweep_every: Duration,
    self_every: Duration,
    stop: CancellationToken,
) {
    let mut sweep = tokio::time::interval(sweep_every);
    let mut own = tokio::time::interval(self_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    own.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sampler = Arc::new(std::sync::Mutex::new(Sampler::new()));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = sweep.tick() => {
                let state = Arc::clone(&state);
                let _ = tokio::task::spawn_blocking(move || {
                    state.sweep(std::time::Instant::now());
                    state.upkeep();
                })
                .await;
            }
            _ = own.tick() => {
                let state = Arc::clone(&state);
                let sampler = Arc::clone(&sampler);
                let _ = tokio::task::spawn_blocking(move || {
                    let (process, system) = sampler
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .sample();
                    let payload = Payload::Heartbeat(Heartbeat {
                        interval_seconds: self_every.as_secs_f64(),
                        process: Some(process),
                        system: Some(system),
                        ..Heartbeat::default()
                    });
                    let event = Event { time: None, payload: Some(payload.clone()) };
                    apply::apply(state.own(), 0, &event, &payload, std::time::Instant::now());
                })
                .await;
            }
        }
    }
}
