//! A span for every request served, gRPC or HTTP, child of the caller's
//! trace when the request carries one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tower::{Layer, Service};
use tracing::Span;
use tracing::field::Empty;

/// Paths probed all day long (health, readiness, scrapes): never traced.
const QUIET: [&str; 5] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
    "/health",
    "/ready",
    "/metrics",
];

/// The gRPC services served here, whose methods name their spans.
const KNOWN_GRPC: [&str; 2] = ["/automation.v1.", "/opentelemetry.proto.collector."];

const STANDARD_METHODS: [http::Method; 9] = [
    http::Method::GET,
    http::Method::HEAD,
    http::Method::POST,
    http::Method::PUT,
    http::Method::DELETE,
    http::Method::CONNECT,
    http::Method::OPTIONS,
    http::Method::TRACE,
    http::Method::PATCH,
];

/// The longest path recorded on a span; a client chooses it.
const MAX_PATH: usize = 256;

/// Wraps a service with [`ServerSpan`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerSpanLayer;

impl<S> Layer<S> for ServerSpanLayer {
    type Service = ServerSpan<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerSpan { inner }
    }
}

/// Serves each request inside a `request` span (gRPC: named after the
/// method; HTTP: after the verb, with the path as an attribute) that
/// records the status; while tracing is off, requests pass straight
/// through.
#[derive(Debug, Clone)]
pub struct ServerSpan<S> {
    inner: S,
}

impl<S> ServerSpan<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B, R> Service<http::Request<B>> for ServerSpan<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Traced<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let span = span_for(&request);
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Traced { inner, span }
    }
}

fn span_for<B>(request: &http::Request<B>) -> Span {
    let path = request.uri().path();
    if !super::enabled() || QUIET.iter().any(|quiet| path.starts_with(quiet)) {
        return Span::none();
    }
    let path = cut(path, MAX_PATH);
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let span = if grpc {
        // A known service's method names its span; any other path (a
        // client chooses it) is one name, so the backend's list of
        // operations stays short.
        let name = if KNOWN_GRPC.iter().any(|known| path.starts_with(known)) {
            path.trim_start_matches('/')
        } else {
            "grpc unknown method"
        };
        tracing::info_span!(
            "request",
            otel.name = name,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = path,
            rpc.grpc.status_code = Empty,
            http.response.status_code = Empty,
            otel.status_code = Empty,
        )
    } else {
        // A method outside the standard ones is `_OTHER` (as OpenTelemetry's
        // conventions say): hyper accepts any token a client makes up.
        let method = request.method();
        let method = if STANDARD_METHODS.contains(method) {
            method.as_str()
        } else {
            "_OTHER"
        };
        tracing::info_span!(
            "request",
            otel.name = method,
            otel.kind = "server",
            http.request.method = method,
            url.path = path,
            http.response.status_code = Empty,
            otel.status_code = Empty,
        )
    };
    super::set_parent(&span, request.headers());
    span
}

/// `text`, at most `max` bytes, cut at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

pin_project_lite::pin_project! {
    /// A request's answer, polled inside its span.
    pub struct Traced<F> {
        #[pin]
        inner: F,
        span: Span,
    }
}

impl<F, R, E> Future for Traced<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let output = ready!(this.inner.poll(cx));
        if let Ok(response) = &output
            && !this.span.is_none()
        {
            let status = response.status();
            this.span
                .record("http.response.status_code", status.as_u16());
            if status.is_server_error() {
                this.span.record("otel.status_code", "ERROR");
            }
            // A gRPC failure answered at once carries its status in the
            // headers; a streamed one in trailers, which are not seen here.
            if let Some(code) = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i64>().ok())
            {
                this.span.record("rpc.grpc.status_code", code);
                if code != 0 {
                    this.span.record("otel.status_code", "ERROR");
                }
            }
        }
        Poll::Ready(output)
    }
}
