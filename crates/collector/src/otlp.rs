//! OTLP metrics in: the OpenTelemetry `MetricsService/Export` over gRPC
//! (OTLP/gRPC, port 4317) and `POST /v1/metrics` with a protobuf body
//! (OTLP/HTTP, port 4318), so any OpenTelemetry SDK can send its metrics
//! here under the same auth, admission, limits and accounting as the
//! platform's own reporters.
//!
//! * [`export`]: a resource's `service.name` is the `component`, its
//!   `service.instance.id` (else `host.name`) the `component_instance`;
//!   sums, gauges and explicit-bucket histograms become series of that
//!   instance; exponential histograms and summaries are refused per point.
//! * [`names`]: OpenTelemetry names as Prometheus names.
//! * [`store`]: an instance's OTLP series and the guard on them.

pub mod export;
pub mod names;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use automation_telemetry::auth::{BearerAuth, Binding};
use axum::body::Body;
use axum::extract::{ConnectInfo, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::service::interceptor::InterceptedService;
use tonic::{Code, Request, Status};

use crate::catalog::PushCode;
use crate::server::{Admission, CountingAuth, Gate, RpcStatus, guarded};
use crate::state::State;
use export::Exported;

/// `opentelemetry.proto.collector.metrics.v1.MetricsService`.
#[derive(Debug, Clone)]
pub struct OtlpService {
    state: Arc<State>,
}

#[tonic::async_trait]
impl MetricsService for OtlpService {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, Status> {
        let binding = request.extensions().get::<Binding>().cloned();
        answer(&self.state, request.get_ref(), binding.as_ref())
            .map(tonic::Response::new)
            .map_err(|refused| Status::permission_denied(refused.to_string()))
    }
}

/// Applies an export and times it as a push.
fn answer(
    state: &State,
    request: &ExportMetricsServiceRequest,
    binding: Option<&Binding>,
) -> Result<ExportMetricsServiceResponse, export::ExportError> {
    let started = Instant::now();
    let outcome = state.export(request, binding);
    state.observe_push(started.elapsed().as_secs_f64());
    outcome.map(
        |Exported {
             rejected, message, ..
         }| ExportMetricsServiceResponse {
            partial_success: (rejected > 0).then(|| ExportMetricsPartialSuccess {
                rejected_data_points: i64::try_from(rejected).unwrap_or(i64::MAX),
                error_message: message,
            }),
        },
    )
}

/// OTLP/gRPC as served: the collector's auth and admission, messages up to
/// `max_decoding` bytes.
pub fn grpc_service(
    state: Arc<State>,
    auth: BearerAuth,
    max_decoding: usize,
    gate: Arc<Gate>,
) -> InterceptedService<Admission<MetricsServiceServer<OtlpService>>, CountingAuth> {
    let service = MetricsServiceServer::new(OtlpService {
        state: Arc::clone(&state),
    })
    .max_decoding_message_size(max_decoding);
    guarded(service, state, auth, gate)
}

/// What the OTLP/HTTP door needs.
#[derive(Debug, Clone)]
struct HttpDoor {
    state: Arc<State>,
    auth: BearerAuth,
    gate: Arc<Gate>,
    max_body: usize,
    body_timeout: Duration,
}

/// OTLP/HTTP: `POST /v1/metrics` with a protobuf body of at most `max_body`
/// bytes, arriving within `body_timeout`, under the collector's auth and
/// admission. Served with the peer's address (`ConnectInfo`).
pub fn http_router(
    state: Arc<State>,
    auth: BearerAuth,
    gate: Arc<Gate>,
    max_body: usize,
    body_timeout: Duration,
) -> axum::Router {
    axum::Router::new()
        .route("/v1/metrics", axum::routing::post(export_http))
        .with_state(HttpDoor {
            state,
            auth,
            gate,
            max_body,
            body_timeout,
        })
}

/// The OTLP/HTTP answer for a refusal: its HTTP status and a protobuf
/// `google.rpc.Status` body, as the OTLP specification asks.
fn refusal(status: StatusCode, code: Code, message: String) -> Response {
    let body = RpcStatus {
        code: code as i32,
        message,
        details: Vec::new(),
    }
    .encode_to_vec();
    let mut response = (status, [(header::CONTENT_TYPE, PROTOBUF)], body).into_response();
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

const PROTOBUF: &str = "application/x-protobuf";

async fn export_http(
    AxumState(door): AxumState<HttpDoor>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let state = &door.state;
    let binding = match door
        .auth
        .identify(&MetadataMap::from_headers(headers.clone()))
    {
        Ok(binding) => binding,
        Err(status) => {
            state.count_push(PushCode::Unauthenticated);
            return refusal(
                StatusCode::UNAUTHORIZED,
                status.code(),
                status.message().to_owned(),
            );
        }
    };
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    if !header(header::CONTENT_TYPE).starts_with(PROTOBUF) {
        state.count_push(PushCode::Invalid);
        return refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::InvalidArgument,
            format!("send {PROTOBUF} (OTLP/HTTP protobuf); JSON is not taken"),
        );
    }
    if !matches!(header(header::CONTENT_ENCODING), "" | "identity") {
        state.count_push(PushCode::Invalid);
        return refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::InvalidArgument,
            "send the body uncompressed (no Content-Encoding)".to_owned(),
        );
    }
    let _ticket = match door.gate.admit(Some(peer)) {
        Ok(ticket) => ticket,
        Err(status) => {
            state.count_push(PushCode::Exhausted);
            return refusal(
                StatusCode::TOO_MANY_REQUESTS,
                status.code(),
                status.message().to_owned(),
            );
        }
    };
    let read = tokio::time::timeout(door.body_timeout, axum::body::to_bytes(body, door.max_body));
    let bytes = match read.await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) if !too_large(&error) => {
            state.count_push(PushCode::Invalid);
            return refusal(
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                format!("the body could not be read: {error}"),
            );
        }
        Ok(Err(_)) => {
            state.count_push(PushCode::TooLarge);
            return refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::ResourceExhausted,
                format!("the body is over the limit of {} bytes", door.max_body),
            );
        }
        Err(_) => {
            state.count_push(PushCode::Timeout);
            return refusal(
                StatusCode::REQUEST_TIMEOUT,
                Code::DeadlineExceeded,
                format!(
                    "the body did not arrive within {}",
                    humantime::format_duration(door.body_timeout)
                ),
            );
        }
    };
    let request = match ExportMetricsServiceRequest::decode(bytes) {
        Ok(request) => request,
        Err(error) => {
            state.count_push(PushCode::Invalid);
            return refusal(
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                format!("undecodable ExportMetricsServiceRequest: {error}"),
            );
        }
    };
    match answer(state, &request, binding.as_ref()) {
        Ok(response) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, PROTOBUF)],
            response.encode_to_vec(),
        )
            .into_response(),
        Err(refused) => refusal(
            StatusCode::FORBIDDEN,
            Code::PermissionDenied,
            refused.to_string(),
        ),
    }
}

/// Whether reading a body failed for its length (not a broken connection).
fn too_large(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}
