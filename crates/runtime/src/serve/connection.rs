//! Connection hygiene for every gRPC listener, so that no client can hold
//! the server's resources by saying nothing:
//!
//! * a connection that sends nothing (no HTTP/2 preface, no TLS hello) within
//!   [`ConnectionLimits::handshake_timeout`] of being accepted is closed;
//! * a connection with no request in flight for
//!   [`ConnectionLimits::idle_timeout`] is closed (pings do not count: only
//!   requests keep a connection);
//! * a request body must arrive whole within
//!   [`ConnectionLimits::request_body_timeout`], or the request ends
//!   `DEADLINE_EXCEEDED` and frees what it held;
//! * each connection has at most [`ConnectionLimits::max_concurrent_streams`]
//!   requests open at once (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`), and
//!   HTTP/2 keep-alive pings close connections whose peer is gone.
//!
//! The accepted socket is wrapped in a [`TrackedStream`] that owns the
//! connection's deadline; a tower layer ([`TrackingLayer`]) tells it when
//! requests start and end. They meet in a [`Registry`] keyed by the peer's
//! address, which tonic hands every request as its connect info.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

/// Per-connection limits of a gRPC listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Requests open at once on one connection.
    pub max_concurrent_streams: u32,
    /// How long a new connection may stay silent.
    pub handshake_timeout: Duration,
    /// How long a connection may go without a request in flight.
    pub idle_timeout: Duration,
    /// How long a request body may take to arrive whole.
    pub request_body_timeout: Duration,
    /// How often an HTTP/2 ping checks the peer of a connection.
    pub keepalive_interval: Duration,
    /// How long the ping's answer may take before the connection is closed.
    pub keepalive_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 100,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5 * 60),
            request_body_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// Bytes a connection must send before the handshake deadline: the HTTP/2
/// preface (a TLS hello is longer), so dribbling a partial one does not buy
/// the idle timeout.
const SPOKE: usize = 24;

/// What one connection is doing, shared by its socket and its requests.
#[derive(Debug)]
struct Activity {
    accepted: Instant,
    /// Bytes received, counted up to [`SPOKE`].
    received: AtomicUsize,
    in_flight: AtomicUsize,
    /// When the last request ended (the accept time before the first).
    last_end: Mutex<Instant>,
}

impl Activity {
    /// When the connection is to be closed, or `None` while requests are in flight.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if self.received.load(Ordering::Acquire) < SPOKE {
            return Some(self.accepted + limits.handshake_timeout);
        }
        let last_end = *self.last_end.lock().unwrap_or_else(PoisonError::into_inner);
        Some(last_end + limits.idle_timeout)
    }
}

/// The open connections of a listener, by peer address.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    connections: Arc<Mutex<HashMap<SocketAddr, Arc<Activity>>>>,
}

impl Registry {
    fn find(&self, peer: SocketAddr) -> Option<Arc<Activity>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&peer)
            .cloned()
    }
}

/// An accepted TCP connection that closes itself past its deadline.
#[derive(Debug)]
pub struct TrackedStream {
    inner: TcpStream,
    peer: Option<SocketAddr>,
    activity: Arc<Activity>,
    limits: ConnectionLimits,
    registry: Registry,
    timer: Pin<Box<Sleep>>,
}

impl TrackedStream {
    /// Tracks `stream` in `registry` under `limits`.
    pub fn new(stream: TcpStream, limits: ConnectionLimits, registry: Registry) -> Self {
        let now = Instant::now();
        let activity = Arc::new(Activity {
            accepted: now,
            received: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            last_end: Mutex::new(now),
        });
        let peer = stream.peer_addr().ok();
        if let Some(peer) = peer {
            registry
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(peer, Arc::clone(&activity));
        }
        Self {
            inner: stream,
            peer,
            activity,
            limits,
            registry,
            timer: Box::pin(tokio::time::sleep_until(now + limits.handshake_timeout)),
        }
    }

    /// `Ready(error)` once the connection is past its deadline; otherwise
    /// the timer is armed for the next look.
    fn expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let now = Instant::now();
            match self.activity.deadline(&self.limits) {
                Some(deadline) if deadline <= now => {
                    let what = if self.activity.received.load(Ordering::Acquire) >= SPOKE {
                        "no request"
                    } else {
                        "no handshake"
                    };
                    tracing::debug!(peer = ?self.peer, what, "closing an idle connection");
                    return Poll::Ready(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connection closed: {what} in time"),
                    ));
                }
                Some(deadline) => self.timer.as_mut().reset(deadline),
                // Busy: look again after an idle period; the request's end
                // does not wake the socket, so the timer is what does.
                None => self.timer.as_mut().reset(now + self.limits.idle_timeout),
            }
            ready!(self.timer.as_mut().poll(cx));
        }
    }
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        if let Some(peer) = self.peer {
            let mut map = self
                .registry
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if map
                .get(&peer)
                .is_some_and(|a| Arc::ptr_eq(a, &self.activity))
            {
                map.remove(&peer);
            }
        }
    }
}

impl Connected for TrackedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        if let Poll::Ready(result) = Pin::new(&mut self.inner).poll_read(cx, buf) {
            let read = buf.filled().len() - before;
            if read > 0 && self.activity.received.load(Ordering::Relaxed) < SPOKE {
                self.activity.received.fetch_add(read, Ordering::AcqRel);
            }
            return Poll::Ready(result);
        }
        match self.expired(cx) {
            Poll::Ready(error) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The peer of a request, from the connect info tonic attaches.
pub fn peer_of<B>(request: &http::Request<B>) -> Option<SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .map(TlsConnectInfo::get_ref)
        })
        .and_then(TcpConnectInfo::remote_addr)
}

/// Counts a connection's requests in flight and bounds how long each
/// request body may take.
#[derive(Debug, Clone)]
pub struct TrackingLayer {
    registry: Registry,
    body_timeout: Duration,
}

impl TrackingLayer {
    /// Over the connections of `registry`.
    pub fn new(registry: Registry, body_timeout: Duration) -> Self {
        Self {
            registry,
            body_timeout,
        }
    }
}

impl<S> tower::Layer<S> for TrackingLayer {
    type Service = Tracking<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Tracking {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`TrackingLayer`] makes.
#[derive(Debug, Clone)]
pub struct Tracking<S> {
    inner: S,
    layer: TrackingLayer,
}

/// A request in flight: its end marks the connection's last activity.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self
            .0
            .last_end
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S> tower::Service<http::Request<Body>> for Tracking<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let in_flight = peer_of(&request)
            .and_then(|peer| self.layer.registry.find(peer))
            .map(InFlight::begin);
        let timeout = self.layer.body_timeout;
        let request = request.map(|body| Body::new(Deadline::new(body, timeout)));
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Body::new(Tracked { body, in_flight })))
        })
    }
}

/// A request body that must end before its deadline.
struct Deadline {
    body: Body,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    done: bool,
}

impl Deadline {
    fn new(body: Body, timeout: Duration) -> Self {
        Self {
            body,
            timeout,
            timer: Box::pin(tokio::time::sleep(timeout)),
            done: false,
        }
    }
}

impl http_body::Body for Deadline {
    type Data = tonic::codegen::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.done {
            return Pin::new(&mut self.body).poll_frame(cx);
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            if frame.is_none() || self.body.is_end_stream() {
                self.done = true;
            }
            return Poll::Ready(frame);
        }
        ready!(self.timer.as_mut().poll(cx));
        self.done = true;
        Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
            "the request body did not arrive within {}",
            humantime::format_duration(self.timeout)
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A response body that keeps its request counted until it is done.
struct Tracked {
    body: Body,
    in_flight: Option<InFlight>,
}

impl http_body::Body for Tracked {
    type Data = tonic::codegen::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        if frame.is_none() {
            self.in_flight = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
