//! The collector's network faces: the gRPC `automation.v1.Collector` service
//! and the HTTP admin router (`/metrics`, `/health`, `/ready`).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

use automation_proto::v1::collector_server::{Collector, CollectorServer};
use automation_proto::v1::{EventBatch, PushResponse};
use automation_runtime::serve::connection::peer_of;
use automation_telemetry::auth::{BearerAuth, Binding};
use axum::extract::State as AxumState;
use axum::http::header;
use axum::response::IntoResponse;
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::{Code, Request, Response, Status};

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
        if let (Some(binding), Some(source)) = (
            request.extensions().get::<Binding>(),
            request.get_ref().source.as_ref(),
        ) && !binding.allows(&source.service, &source.instance)
        {
            self.state.count_push(PushCode::PermissionDenied);
            return Err(Status::permission_denied(format!(
                "this token may push as {binding}, not as {}/{}",
                source.service, source.instance
            )));
        }
        let started = Instant::now();
        let outcome = self.state.push(request.get_ref());
        self.state.observe_push(started.elapsed().as_secs_f64());
        match outcome {
            Outcome::Applied(response) => Ok(Response::new(response)),
            Outcome::Invalid(problem) => Err(Status::invalid_argument(problem)),
        }
    }
}

/// A bearer-token check that counts refusals in
/// `collector_pushes_total{code="unauthenticated"}`, and hands the identity
/// the token is bound to (if any) to the push, which checks the batch's
/// source against it.
#[derive(Debug, Clone)]
pub struct CountingAuth {
    auth: BearerAuth,
    state: Arc<State>,
}

impl tonic::service::Interceptor for CountingAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match self.auth.identify(request.metadata()) {
            Ok(binding) => {
                if let Some(binding) = binding {
                    request.extensions_mut().insert(binding);
                }
                Ok(request)
            }
            Err(status) => {
                self.state.count_push(PushCode::Unauthenticated);
                Err(status)
            }
        }
    }
}

/// Admission control: at most `permits` pushes are decoded and applied at
/// once, and one connection holds at most its share of them; past either a
/// push is answered `RESOURCE_EXHAUSTED` at once, before its body is read,
/// so a saturated collector pushes back instead of piling decoded batches up
/// in memory, and one client cannot take every slot. Reporters retry with
/// backoff. A push whose body does not arrive within the listener's request
/// body deadline gives its slot back (`DEADLINE_EXCEEDED`).
///
/// Answers tonic gives before the push reaches [`CollectorService`] are
/// made to say what happened and counted: an undecodable body is
/// `INVALID_ARGUMENT`, a body over the decoding ceiling `RESOURCE_EXHAUSTED`.
#[derive(Debug, Clone)]
pub struct Admission<S> {
    inner: S,
    gate: Arc<Gate>,
    state: Arc<State>,
}

/// The permits of [`Admission`]: a ceiling for the collector, a share per
/// connection. One gate serves every door (gRPC pushes, OTLP/gRPC, OTLP/HTTP).
#[derive(Debug)]
pub struct Gate {
    permits: Arc<Semaphore>,
    per_connection: usize,
    /// Pushes in progress per connection (only connections with some).
    held: Mutex<HashMap<SocketAddr, usize>>,
}

/// `google.rpc.Status`: the details of a gRPC status, and the error body of
/// OTLP/HTTP.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    /// The gRPC code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// What went wrong.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Typed details.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<prost_types::Duration>,
}

/// `RESOURCE_EXHAUSTED` with a `google.rpc.RetryInfo` of one second: the
/// OTLP specification (and OpenTelemetry SDKs that follow it) retries an
/// exhausted export only when the status says when.
pub fn exhausted(message: String) -> Status {
    let retry = RetryInfo {
        retry_delay: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
    };
    let details = RpcStatus {
        code: Code::ResourceExhausted as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".to_owned(),
            value: retry.encode_to_vec(),
        }],
    };
    Status::with_details(
        Code::ResourceExhausted,
        message,
        details.encode_to_vec().into(),
    )
}

/// One admitted push; dropping it gives the slot back.
#[derive(Debug)]
pub struct Ticket {
    _permit: OwnedSemaphorePermit,
    gate: Arc<Gate>,
    peer: Option<SocketAddr>,
}

impl Gate {
    /// At most `max_concurrent` pushes at once, `per_connection` of them
    /// from one connection.
    pub fn new(max_concurrent: usize, per_connection: usize) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            per_connection: per_connection.max(1),
            held: Mutex::default(),
        })
    }

    /// A slot for a push from `peer`, or `RESOURCE_EXHAUSTED` saying why not.
    #[allow(clippy::result_large_err)]
    pub fn admit(self: &Arc<Self>, peer: Option<SocketAddr>) -> Result<Ticket, Status> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(peer) = peer
            && held.get(&peer).copied().unwrap_or(0) >= self.per_connection
        {
            return Err(exhausted(format!(
                "this connection has {} pushes in progress, its share of the collector: retry with backoff",
                self.per_connection
            )));
        }
        let permit = Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| exhausted("collector saturated: retry with backoff".to_owned()))?;
        if let Some(peer) = peer {
            *held.entry(peer).or_insert(0) += 1;
        }
        Ok(Ticket {
            _permit: permit,
            gate: Arc::clone(self),
            peer,
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some(peer) = self.peer else { return };
        let mut held = self
            .gate
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = held.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&peer);
            }
        }
    }
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
        match self.gate.admit(peer_of(&request)) {
            Ok(ticket) => {
                let response = self.inner.call(request);
                let state = Arc::clone(&self.state);
                Box::pin(async move {
                    let response = response.await;
                    drop(ticket);
                    response.map(|response| early_answer(&state, response))
                })
            }
            Err(status) => {
                self.state.count_push(PushCode::Exhausted);
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// Answers tonic gave on its own (the service answers only OK and
/// `INVALID_ARGUMENT`, and counts those itself), said plainly and counted.
fn early_answer(
    state: &State,
    response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    match status.code() {
        Code::Internal => {
            state.count_push(PushCode::Invalid);
            Status::invalid_argument(format!("undecodable batch: {}", status.message())).into_http()
        }
        Code::OutOfRange => {
            state.count_push(PushCode::TooLarge);
            Status::resource_exhausted(format!("batch too large: {}", status.message())).into_http()
        }
        Code::DeadlineExceeded => {
            state.count_push(PushCode::Timeout);
            response
        }
        _ => response,
    }
}

impl<S: NamedService> NamedService for Admission<S> {
    const NAME: &'static str = S::NAME;
}

/// A door's gRPC service as served: `auth`, admission through `gate`, then
/// the service (which decodes messages up to its own ceiling).
pub fn guarded<S>(
    service: S,
    state: Arc<State>,
    auth: BearerAuth,
    gate: Arc<Gate>,
) -> InterceptedService<Admission<S>, CountingAuth> {
    let admission = Admission {
        inner: service,
        gate,
        state: Arc::clone(&state),
    };
    InterceptedService::new(admission, CountingAuth { auth, state })
}

/// `automation.v1.Collector` as served, decoding messages up to
/// `max_decoding` bytes (the batch size limit itself is checked in
/// [`State::push`], so an oversized batch below this ceiling gets
/// `INVALID_ARGUMENT` naming the problem).
pub fn grpc_service(
    state: Arc<State>,
    auth: BearerAuth,
    max_decoding: usize,
    gate: Arc<Gate>,
) -> InterceptedService<Admission<CollectorServer<CollectorService>>, CountingAuth> {
    let service = CollectorServer::new(CollectorService::new(Arc::clone(&state)))
        .max_decoding_message_size(max_decoding);
    guarded(service, state, auth, gate)
}

/// `/metrics`, rendered on a blocking thread so scrapes never stall the
/// gRPC workers, one render at a time (see [`Scrapes`]).
pub fn metrics_router(state: Arc<State>) -> axum::Router {
    let scrapes = Arc::new(Scrapes {
        state,
        turn: Arc::new(tokio::sync::Mutex::new(())),
        last: Mutex::new((0, Weak::new())),
    });
    axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .with_state(scrapes)
}

/// Scrapes share renders: one render is in progress at a time, and a
/// scrape that arrives while one is under way waits for it and is answered
/// with its text. Concurrent scrapers cost one render's memory, not one
/// each, and a scraper that leaves does not leave its render running
/// beside the next one.
#[derive(Debug)]
struct Scrapes {
    state: Arc<State>,
    turn: Arc<tokio::sync::Mutex<()>>,
    /// The number of the last render finished, and its text while some
    /// scrape still holds it.
    last: Mutex<(u64, Weak<String>)>,
}

impl Scrapes {
    async fn text(self: Arc<Self>) -> Result<Arc<String>, tokio::task::JoinError> {
        let arrived = self.last.lock().unwrap_or_else(PoisonError::into_inner).0;
        let turn = Arc::clone(&self.turn).lock_owned().await;
        {
            let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            if last.0 > arrived
                && let Some(text) = last.1.upgrade()
            {
                return Ok(text);
            }
        }
        tokio::task::spawn_blocking(move || {
            let text = Arc::new(render::render(&self.state));
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            *last = (last.0 + 1, Arc::downgrade(&text));
            drop(turn);
            text
        })
        .await
    }
}

/// The text of a render, shared with other scrapes while it is sent.
struct SharedText(Arc<String>);

impl AsRef<[u8]> for SharedText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

async fn metrics(AxumState(scrapes): AxumState<Arc<Scrapes>>) -> axum::response::Response {
    match scrapes.text().await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            axum::body::Bytes::from_owner(SharedText(text)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exhausted_answer_says_when_to_retry() {
        let status = exhausted("busy".to_owned());
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = RpcStatus::decode(status.details()).expect("google.rpc.Status");
        assert_eq!(details.code, Code::ResourceExhausted as i32);
        let retry = details
            .details
            .iter()
            .find(|any| any.type_url == "type.googleapis.com/google.rpc.RetryInfo")
            .expect("RetryInfo");
        let delay = RetryInfo::decode(retry.value.as_slice())
            .unwrap()
            .retry_delay
            .unwrap();
        assert_eq!((delay.seconds, delay.nanos), (1, 0));
    }
}
