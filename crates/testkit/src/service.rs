//! Any of the platform's services started in-process on free loopback
//! ports, the way every service test needs one: bind, start, and get its
//! [`Running`] handles; dropping it shuts the service down.

use std::fmt::Debug;
use std::future::Future;

use automation_runtime::serve::Listeners;
pub use automation_runtime::service::Running as Service;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::wait::within;

/// Binds two free loopback ports.
pub async fn listeners() -> Listeners {
    Listeners {
        grpc: TcpListener::bind("127.0.0.1:0").await.expect("bind gRPC"),
        http: TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP"),
    }
}

/// Starts a service on free ports: `start` is the service's
/// `start(config, listeners, shutdown)`. Its error when it refuses to.
pub async fn start<H, E, F, Started>(start: F) -> Result<Service<H, E>, E>
where
    F: FnOnce(Listeners, CancellationToken) -> Started,
    Started: Future<Output = Result<Service<H, E>, E>>,
    E: Debug,
{
    start_on(listeners().await, start).await
}

/// [`start`] on `listeners` bound by the caller (a port of its choice).
pub async fn start_on<H, E, F, Started>(listeners: Listeners, start: F) -> Result<Service<H, E>, E>
where
    F: FnOnce(Listeners, CancellationToken) -> Started,
    Started: Future<Output = Result<Service<H, E>, E>>,
    E: Debug,
{
    within(
        "the service starts",
        start(listeners, CancellationToken::new()),
    )
    .await
}

/// Shuts `service` down gracefully, within the tests' bound; how it ended.
pub async fn stop<H, E>(service: Service<H, E>) -> Result<(), E> {
    within("the service stops", service.stop()).await
}
