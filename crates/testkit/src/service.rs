//! Any of the platform's services started in-process on free loopback
//! ports, the way every service test needs one: bind, start, wait for its
//! handles, stop.

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;

use automation_telemetry::serve::Listeners;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::wait::within;

/// A service serving on loopback until stopped (or dropped).
#[derive(Debug)]
pub struct Service<H, E> {
    /// The gRPC address.
    pub grpc: SocketAddr,
    /// The HTTP address (admin, and the gateway's OpenAI door).
    pub http: SocketAddr,
    /// What the service handed out once it served.
    pub handles: H,
    /// Cancelling it shuts the service down.
    pub shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), E>>>,
}

/// Binds two free loopback ports.
pub async fn listeners() -> Listeners {
    Listeners {
        grpc: TcpListener::bind("127.0.0.1:0").await.expect("bind gRPC"),
        http: TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP"),
    }
}

/// Starts a service: `run` gets the listeners, the shutdown token and the
/// sender of its handles (a service's `run(config, listeners, shutdown,
/// Some(tx))`). Its error when it stops before it serves.
pub async fn start<H, E, F, Fut>(run: F) -> Result<Service<H, E>, E>
where
    F: FnOnce(Listeners, CancellationToken, oneshot::Sender<H>) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    H: Send + 'static,
    E: Debug + Send + 'static,
{
    start_on(listeners().await, run).await
}

/// [`start`] on `listeners` bound by the caller (a port of its choice).
pub async fn start_on<H, E, F, Fut>(listeners: Listeners, run: F) -> Result<Service<H, E>, E>
where
    F: FnOnce(Listeners, CancellationToken, oneshot::Sender<H>) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    H: Send + 'static,
    E: Debug + Send + 'static,
{
    let grpc = listeners.grpc.local_addr().expect("gRPC address");
    let http = listeners.http.local_addr().expect("HTTP address");
    let shutdown = CancellationToken::new();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(run(listeners, shutdown.clone(), tx));
    match within("the service starts", rx).await {
        Ok(handles) => Ok(Service {
            grpc,
            http,
            handles,
            shutdown,
            task: Some(task),
        }),
        Err(_) => match within("the service stops", task).await {
            Ok(Err(error)) => Err(error),
            ended => panic!("the service ended without starting: {ended:?}"),
        },
    }
}

impl<H, E: Debug> Service<H, E> {
    /// `http://127.0.0.1:<grpc port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Shuts it down gracefully; how it ended.
    pub async fn stop(mut self) -> Result<(), E> {
        self.shutdown.cancel();
        let task = self.task.take().expect("not stopped yet");
        within("the service stops", task)
            .await
            .expect("the service's task")
    }
}

impl<H, E> Drop for Service<H, E> {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
