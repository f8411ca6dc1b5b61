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
use tonic::transport::{Server, ServerTlsConfig};

use crate::auth::BearerAuth;
use crate::trace::ServerSpanLayer;
use connection::{ConnectionLimits, Registry, TrackedStream, TrackingLayer};

/// How a service is served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The service's name, for logs.
    pub service: String,
    /// Bearer tokens for reflection (the service's own routes carry theirs).
    pub auth: BearerAuth,
    /// TLS for the gRPC listener.
    pub tls: Option<ServerTlsConfig>,
    /// After shutdown begins, how long to keep serving unready.
    pub shutdown_delay: Duration,
    /// Then how long in-flight work may take.
    pub shutdown_grace: Duration,
    /// What one gRPC connection may hold, and for how long.
    pub connections: ConnectionLimits,
}

impl ServeOptions {
    /// Plain text, no auth, the default delays.
    pub fn new(service: &str) -> Self {
        Self {
            service: service.to_owned(),
            auth: BearerAuth::disabled(),
            tls: None,
            shutdown_delay: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(20),
            connections: ConnectionLimits::default(),
        }
    }
}

/// The bound listeners of a service.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// HTTP admin.
    pub http: TcpListener,
}

impl Listeners {
    /// Binds both addresses; a failure prints one line naming the address
    /// and exits 1.
    pub async fn bind_or_exit(program: &str, grpc: SocketAddr, http: SocketAddr) -> Self {
        let bind = |what: &'static str, addr: SocketAddr| async move {
            listen(what, addr).await.unwrap_or_else(|error| {
                eprintln!("{program}: {error}");
                std::process::exit(1);
            })
        };
        let listeners = Self {
            grpc: bind("gRPC", grpc).await,
            http: bind("HTTP", http).await,
        };
        tracing::info!(%grpc, %http, "listening");
        listeners
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

/// Serves until `shutdown` is cancelled, then shuts down gracefully and
/// returns once drained (or the grace period is over). `serving` is called
/// once both listeners serve.
pub async fn serve(
    options: ServeOptions,
    health: &HealthChecker,
    routes: Routes,
    admin: axum::Router,
    listeners: Listeners,
    shutdown: CancellationToken,
    serving: impl FnOnce(),
) -> Result<(), ServeError> {
    serve_with(
        options,
        health,
        routes,
        admin,
        listeners,
        Extra::default(),
        shutdown,
        serving,
    )
    .await
}

type Served = tokio::task::JoinHandle<Result<(), ServeError>>;

/// [`serve`], with `extra` listeners beside the service's own two.
#[allow(clippy::too_many_arguments)]
pub async fn serve_with(
    options: ServeOptions,
    health: &HealthChecker,
    routes: Routes,
    admin: axum::Router,
    listeners: Listeners,
    extra: Extra,
    shutdown: CancellationToken,
    serving: impl FnOnce(),
) -> Result<(), ServeError> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(automation_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let routes = routes
        .add_service(health.grpc_service())
        .add_service(InterceptedService::new(reflection, options.auth.clone()));
    let limits = options.connections;
    let mut builder = Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout));
    if let Some(tls) = options.tls.clone() {
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
    serving();
    tracing::info!(service = %options.service, "serving");

    shutdown.cancelled().await;
    health.begin_shutdown();
    tracing::info!(delay = ?options.shutdown_delay, "shutting down: unready, then draining");
    tokio::time::sleep(options.shutdown_delay).await;
    stop.cancel();
    let drained = tokio::time::timeout(options.shutdown_grace, async {
        let mut results = Vec::new();
        for task in tasks {
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
