//! Serving an HTTP listener (the admin port, the gateway's OpenAI door, the
//! collector's OTLP/HTTP) under the same connection limits as gRPC:
//!
//! * a connection's first bytes, and each request's headers (the next
//!   request's on a kept-alive HTTP/1 connection too), must arrive within
//!   [`ConnectionLimits::handshake_timeout`], so silent, slow and idle
//!   connections are closed;
//! * HTTP/2 connections have at most
//!   [`ConnectionLimits::max_concurrent_streams`] requests open and are
//!   pinged like gRPC's;
//! * `TCP_NODELAY` on every connection: streamed answers go out in small
//!   writes that Nagle's algorithm would hold for the client's delayed ACK.
//!
//! Handlers can read the peer's address (`ConnectInfo<SocketAddr>`).

use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::connection::ConnectionLimits;
use automation_telemetry::trace::ServerSpan;

/// Serves `router` on `listener` until `stop`, then lets the open
/// connections finish their requests.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(%error, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = ServerSpan::new(router.clone()).map_request(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        );
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            // Until hyper can tell HTTP/1 from HTTP/2 its header timeout
            // has not started: a silent connection, or one that stops
            // inside the HTTP/2 preface, is closed here.
            if tokio::time::timeout(limits.handshake_timeout, version_known(&stream))
                .await
                .is_err()
            {
                return;
            }
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(service),
            );
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, %error, "HTTP connection ended");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The HTTP/2 client preface; hyper reads on while the first bytes match it.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Resolves once the first bytes tell the version: a byte that is not the
/// preface's, or the whole preface (or the peer closed).
async fn version_known(stream: &tokio::net::TcpStream) {
    let mut head = [0u8; PREFACE.len()];
    loop {
        match stream.peek(&mut head).await {
            Ok(0) | Err(_) => return,
            Ok(n) if n == PREFACE.len() || head[..n] != PREFACE[..n] => return,
            // A partial preface: peek answers at once while those bytes
            // wait, so look again a little later.
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
