//! Serving a service the way every service of the platform does: its gRPC
//! services with `grpc.health.v1` (never behind auth) and server reflection
//! on the gRPC listener, its admin routes with `/health` and `/ready` on the
//! HTTP listener, and the graceful shutdown of DESIGN §7: unready at once,
//! still serving for `shutdown_delay` so load balancers notice, then
//! draining in-flight work within `shutdown_grace`. Every gRPC connection is
//! held to the limits of [`connection`]: silent and idle connections are
//! closed, request bodies have a deadline, streams per connection a ceiling.

pub mod connection;
pub mod http;

use std::net::SocketAddr;
use std::time::Duration;

use automation_health::HealthChecker;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;

use crate::config::ServiceConfig;
use automation_telemetry::trace::ServerSpanLayer;
use connection::{Registry, TrackedStream, TrackingLayer};

/// The bound listeners of a service.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// HTTP admin.
    pub http: TcpListener,
}

impl Listeners {
    /// Binds both addresses, or says which one could not be had.
    pub async fn bind(grpc: SocketAddr, http: SocketAddr) -> Result<Self, ServeError> {
        Ok(Self {
            grpc: listen("gRPC", grpc).await?,
            http: listen("HTTP", http).await?,
        })
    }

    /// Binds both addresses; a failure prints one line naming the address
    /// and exits 1.
    pub async fn bind_or_exit(program: &str, grpc: SocketAddr, http: SocketAddr) -> Self {
        let listeners = Self::bind(grpc, http).await.unwrap_or_else(|error| {
            eprintln!("{program}: {error}");
            std::process::exit(1);
        });
        tracing::info!(%grpc, %http, "listening");
        listeners
    }

    /// The bound addresses (ports resolved): gRPC, then HTTP.
    pub fn addresses(&self) -> (SocketAddr, SocketAddr) {
        let address = |listener: &TcpListener| {
            listener
                .local_addr()
                .expect("a bound listener has an address")
        };
        (address(&self.grpc), address(&self.http))
    }
}

/// A server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server failed (TLS setup, a listener error).
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The HTTP admin server failed.
    #[error("HTTP admin server: {0}")]
    Http(#[from] std::io::Error),
    /// Server reflection could not be set up.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// A listener could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Listen {
        /// What the listener is for.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Binds `addr` for `what`, or says which address could not be had.
pub async fn listen(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { what, addr, source })
}

/// More listeners for a service: gRPC listeners that serve the same routes
/// (an OTLP port, say) and HTTP listeners with their own routers.
#[derive(Debug, Default)]
pub struct Extra {
    /// Each serves the service's gRPC routes, under the same limits.
    pub grpc: Vec<TcpListener>,
    /// Each serves its router (see [`http`]); handlers may read the
    /// peer's address (`ConnectInfo<SocketAddr>`).
    pub http: Vec<(TcpListener, axum::Router)>,
}

type Served = tokio::task::JoinHandle<Result<(), ServeError>>;

/// A service's listeners, serving: the gRPC routes with `grpc.health.v1`
/// and reflection, the admin routes with `/health` and `/ready`, and any
/// [`Extra`] listeners. [`Serving::wait`] shuts them down gracefully.
#[derive(Debug)]
pub struct Serving {
    name: &'static str,
    health: HealthChecker,
    shutdown_delay: Duration,
    shutdown_grace: Duration,
    stop: CancellationToken,
    tasks: Vec<Served>,
}

impl Serving {
    /// Starts serving `listeners` and `extra` as `config` says; an error
    /// before anything serves (TLS, reflection) is returned.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        name: &'static str,
        config: &ServiceConfig,
        health: &HealthChecker,
        routes: Routes,
        admin: axum::Router,
        listeners: Listeners,
        extra: Extra,
    ) -> Result<Self, ServeError> {
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(automation_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let routes = routes
            .add_service(health.grpc_service())
            .add_service(InterceptedService::new(reflection, config.auth.clone()));
        let limits = config.connections;
        let mut builder = Server::builder()
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout));
        if let Some(tls) = config.tls.clone() {
            builder = builder.tls_config(tls)?;
        }
        let stop = CancellationToken::new();
        let mut tasks: Vec<Served> = Vec::new();
        for listener in std::iter::once(listeners.grpc).chain(extra.grpc) {
            let registry = Registry::default();
            let tracking = TrackingLayer::new(registry.clone(), limits.request_body_timeout);
            let incoming = TcpListenerStream::new(listener).map(move |accepted| {
                accepted.map(|stream| {
                    let _ = stream.set_nodelay(true);
                    TrackedStream::new(stream, limits, registry.clone())
                })
            });
            let server = builder
                .clone()
                .layer(tracking)
                .layer(ServerSpanLayer)
                .add_routes(routes.clone())
                .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned());
            tasks.push(tokio::spawn(async move { Ok(server.await?) }));
        }
        let admin = (listeners.http, admin.merge(health.router()));
        for (listener, router) in std::iter::once(admin).chain(extra.http) {
            let served = http::serve_http(listener, router, limits, stop.clone());
            tasks.push(tokio::spawn(async move { Ok(served.await?) }));
        }
        tracing::info!(service = name, "serving");
        Ok(Self {
            name,
            health: health.clone(),
            shutdown_delay: config.shutdown_delay,
            shutdown_grace: config.shutdown_grace,
            stop,
            tasks,
        })
    }

    /// Serves until `shutdown` is cancelled, then shuts down as DESIGN §7
    /// says: unready at once, still serving for the shutdown delay, then
    /// draining within the grace period. A server's error is returned.
    pub async fn wait(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        shutdown.cancelled().await;
        self.health.begin_shutdown();
        tracing::info!(service = self.name, delay = ?self.shutdown_delay, "shutting down: unready, then draining");
        tokio::time::sleep(self.shutdown_delay).await;
        self.stop.cancel();
        let drained = tokio::time::timeout(self.shutdown_grace, async {
            let mut results = Vec::new();
            for task in self.tasks {
                results.push(task.await);
            }
            results
        })
        .await;
        match drained {
            Ok(results) => {
                for result in results.into_iter().flatten() {
                    result?;
                }
            }
            Err(_) => tracing::warn!("grace period over; stopping with work in flight"),
        }
        Ok(())
    }
}
