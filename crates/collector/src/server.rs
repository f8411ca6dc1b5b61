//! The collector's network faces: the gRPC `automation.v1.Collector` service
//! and the HTTP admin router (`/metrics`, `/health`, `/ready`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use automation_proto::v1::collector_server::{Collector, CollectorServer};
use automation_proto::v1::{EventBatch, PushResponse};
use automation_telemetry::auth::BearerAuth;
use axum::extract::State as AxumState;
use axum::http::header;
use axum::response::IntoResponse;
use tokio::sync::Semaphore;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::catalog::PushCode;
use crate::render;
use crate::state::{Outcome, State};

/// `automation.v1.Collector`.
#[derive(Debug, Clone)]
pub struct CollectorService {
    state: Arc<State>,
}

impl CollectorService {
    /// The service over `state`.
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl Collector for CollectorService {
    async fn push(&self, request: Request<EventBatch>) -> Result<Response<PushResponse>, Status> {
        let started = Instant::now();
        let outcome = self.state.push(request.get_ref());
        self.state.observe_push(started.elapsed().as_secs_f64());
        match outcome {
            Outcome::Applied(response) => Ok(Response::new(response)),
            Outcome::Invalid(problem) => Err(Status::invalid_argument(problem)),
        }
    }
}

/// A bearer-token check that counts refusals in `collector_pushes_total{code="unauthenticated"}`.
#[derive(Debug, Clone)]
pub struct CountingAuth {
    auth: BearerAuth,
    state: Arc<State>,
}

impl tonic::service::Interceptor for CountingAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if let Err(status) = self.auth.check(request.metadata()) {
            self.state.count_push(PushCode::Unauthenticated);
            return Err(status);
        }
        Ok(request)
    }
}

/// Admission control: at most `permits` pushes are decoded and applied at
/// once; past that a push is answered `RESOURCE_EXHAUSTED` at once, before
/// its body is read, so a saturated collector pushes back instead of
/// piling decoded batches up in memory. Reporters retry with backoff.
#[derive(Debug, Clone)]
pub struct Admission<S> {
    inner: S,
    permits: Arc<Semaphore>,
    state: Arc<State>,
}

impl<S, B> tower::Service<http::Request<B>> for Admission<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => {
                let response = self.inner.call(request);
                Box::pin(async move {
                    let response = response.await;
                    drop(permit);
                    response
                })
            }
            Err(_) => {
                self.state.count_push(PushCode::Exhausted);
                let status = Status::resource_exhausted("collector saturated: retry with backoff");
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

impl<S: NamedService> NamedService for Admission<S> {
    const NAME: &'static str = S::NAME;
}

/// The service as served: `auth`, admission control, then decoding of
/// messages up to `max_decoding` bytes (the batch size limit itself is
/// checked in [`State::push`], so an oversized batch below this ceiling gets
/// `INVALID_ARGUMENT` naming the problem).
pub fn grpc_service(
    state: Arc<State>,
    auth: BearerAuth,
    max_decoding: usize,
    max_concurrent: usize,
) -> InterceptedService<Admission<CollectorServer<CollectorService>>, CountingAuth> {
    let admission = Admission {
        inner: CollectorServer::new(CollectorService::new(Arc::clone(&state)))
            .max_decoding_message_size(max_decoding),
        permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
        state: Arc::clone(&state),
    };
    InterceptedService::new(admission, CountingAuth { auth, state })
}

/// `/metrics`, rendered on a blocking thread so scrapes never stall the gRPC workers.
pub fn metrics_router(state: Arc<State>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .with_state(state)
}

async fn metrics(AxumState(state): AxumState<Arc<State>>) -> axum::response::Response {
    match tokio::task::spawn_blocking(move || render::render(&state)).await {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "rendering /metrics failed");
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "rendering failed",
            )
                .into_response()
        }
    }
}
