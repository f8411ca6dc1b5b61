//! Requests over the size limit. tonic refuses them while decoding, before
//! any handler runs, with `OUT_OF_RANGE`; gRPC's convention for a message
//! over a configured limit is `RESOURCE_EXHAUSTED`, which is what clients
//! expect and what the gateway answers for its other limits. This wrapper
//! turns the refusal into `RESOURCE_EXHAUSTED` naming the limit, and reports
//! it as an invalid call.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::{Code, Status};

use super::{Gateway, request_too_large};
use crate::chat::Call;

/// The largest request message accepted, in bytes: 4 MiB, far above any
/// prompt the upstream's context window takes.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The gRPC service `S` (decoding at most [`MAX_REQUEST_BYTES`]) with its
/// size refusals answered as `RESOURCE_EXHAUSTED` and counted.
#[derive(Debug, Clone)]
pub struct SizeLimited<S> {
    inner: S,
    gateway: Arc<Gateway>,
}

impl<S> SizeLimited<S> {
    /// Wraps `inner`, reporting refusals through `gateway`.
    pub fn new(inner: S, gateway: Arc<Gateway>) -> Self {
        Self { inner, gateway }
    }
}

impl<S: NamedService> NamedService for SizeLimited<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for SizeLimited<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let answer = self.inner.call(request);
        let gateway = Arc::clone(&self.gateway);
        Box::pin(async move {
            let response = answer.await?;
            // The handlers never answer OUT_OF_RANGE: here it is always
            // tonic's decoding limit, answered before any handler ran.
            let Some(refused) = Status::from_header_map(response.headers())
                .filter(|s| s.code() == Code::OutOfRange)
            else {
                return Ok(response);
            };
            let detail = refused.message();
            let refusal = request_too_large(detail.strip_prefix("Error, ").unwrap_or(detail));
            Ok(Status::from(Call::new(&gateway, "").refuse(refusal)).into_http())
        })
    }
}
