//! The collector's network faces: the gRPC `automation.v1.Collector` service
//! and the HTTP admin router (`/metrics`, `/health`, `/ready`).

use std::sync::Arc;
use std::time::Instant;

use automation_proto::v1::collector_server::{Collector, CollectorServer};
use automation_proto::v1::{EventBatch, PushResponse};
use automation_telemetry::auth::BearerAuth;
use axum::extract::State as AxumState;
use axum::http::header;
use axum::response::IntoResponse;
use tokio::sync::Semaphore;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::catalog::PushCode;
use crate::render;
use crate::state::{Outcome, State};

/// `automation.v1.Collector`.
#[derive(Debug, Clone)]
pub struct CollectorService {
    state: Arc<State>,
    permits: Arc<Semaphore>,
}

impl CollectorService {
    /// The service over `state`, processing at most `max_concurrent` pushes at once.
    pub fn new(state: Arc<State>, max_concurrent: usize) -> Self {
        Self {
            state,
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
        }
    }
}

#[tonic::async_trait]
impl Collector for CollectorService {
    async fn push(&self, request: Request<EventBatch>) -> Result<Response<PushResponse>, Status> {
        let started = Instant::now();
        let Ok(_permit) = self.permits.try_acquire() else {
            self.state.count_push(PushCode::Exhausted);
            return Err(Status::resource_exhausted(
                "collector saturated: retry with backoff",
            ));
        };
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

/// The gRPC service behind `auth`, accepting messages up to `max_decoding`
/// bytes (the batch size limit itself is checked in [`State::push`], so an
/// oversized batch gets `INVALID_ARGUMENT` naming the problem).
pub fn grpc_service(
    service: CollectorService,
    auth: BearerAuth,
    max_decoding: usize,
) -> InterceptedService<CollectorServer<CollectorService>, CountingAuth> {
    let state = Arc::clone(&service.state);
    InterceptedService::new(
        CollectorServer::new(service).max_decoding_message_size(max_decoding),
        CountingAuth { auth, state },
    )
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
