//! The OpenAI-compatible door: `POST /v1/chat/completions` (unary, or
//! server-sent events with `"stream": true`), `GET /v1/models` and
//! `GET /v1/models/{id}`, served on the gateway's HTTP port beside
//! `/health` and `/ready`, so that OpenAI SDKs, LangChain or curl can use
//! the gateway with `base_url = http://<gateway>:9403/v1`.
//!
//! The door only translates: it reads the JSON into the gRPC door's
//! `ChatRequest` and hands it to the same call path (client rate limit,
//! checks, circuit, concurrency limit, upstream retries and deadlines,
//! accounting and the `ApiCall` event), then writes the `ChatResponse` or
//! the `ChatChunk`s in OpenAI's shapes. `Authorization: Bearer <token>` is
//! the client's token, checked against `AUTH_TOKEN_FILE` like gRPC's; the
//! DeepSeek key is the gateway's own and never comes from the client.
//!
//! Bounds: a body of at most `MAX_REQUEST_BYTES` (413), arriving whole
//! within the request body time limit (408); JSON nested at most 128 deep;
//! a unary answer of at most `MAX_ANSWER_BYTES`; a stream's client that
//! stops reading is dropped after the upstream's idle limit.
//!
//! Layout: `request` (JSON to `ChatRequest`), `response` (answers to JSON
//! and events), `error` (every error to a status and OpenAI's error JSON).

mod error;
mod request;
mod response;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use automation_telemetry::auth::BearerAuth;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Path, Request, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use tonic::metadata::MetadataMap;

use crate::chat::{Call, Refusal};
use crate::limits::{client_key, peer_key};
use crate::server::{Gateway, MAX_REQUEST_BYTES, request_too_large};
use error::Error;

/// What the door's handlers share.
struct Door {
    gateway: Arc<Gateway>,
    auth: BearerAuth,
    /// How long a request body may take to arrive whole.
    body_timeout: Duration,
}

/// The door's routes under `/v1`, for the gateway's HTTP listener:
/// `auth` checks client tokens; a request body must arrive whole within
/// `body_timeout`.
pub fn router(gateway: Arc<Gateway>, auth: BearerAuth, body_timeout: Duration) -> Router {
    let door = Arc::new(Door {
        gateway,
        auth,
        body_timeout,
    });
    let v1 = Router::new()
        .route("/chat/completions", post(chat_completions))
        .route("/models", get(list_models))
        .route("/models/{id}", get(get_model))
        .fallback(|| async { Error::NotFound })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .with_state(door);
    Router::new().nest("/v1", v1)
}

impl Door {
    /// Checks the client's token when tokens are configured.
    fn authenticate(&self, headers: &HeaderMap) -> Result<(), Error> {
        if !self.auth.enabled() {
            return Ok(());
        }
        let mut only_auth = HeaderMap::new();
        if let Some(value) = headers.get(AUTHORIZATION) {
            only_auth.insert(AUTHORIZATION, value.clone());
        }
        self.auth
            .check(&MetadataMap::from_headers(only_auth))
            .map_err(|status| Error::Unauthenticated(status.message().to_owned()))
    }

    /// Whom the rate limit applies to: the verified token, else the peer
    /// (when the listener tells it) — as on the gRPC door.
    fn client(&self, parts: &Parts) -> String {
        if self.gateway.tokens_verified {
            client_key(bearer(&parts.headers))
        } else {
            let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>();
            peer_key(peer.map(|ConnectInfo(addr)| addr.ip()))
        }
    }

    /// Reports a refusal of the request before it reached the call path.
    fn refuse(&self, refusal: Refusal, param: Option<String>) -> Error {
        let refusal = Call::new(&self.gateway, "").refuse(refusal);
        Error::Refused { refusal, param }
    }

    /// The body, whole, within the size and time limits.
    async fn body(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, Error> {
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let too_large = |size: String| self.refuse(request_too_large(&size), None);
        if let Some(size) = declared.filter(|&n| n > MAX_REQUEST_BYTES as u64) {
            return Err(too_large(format!("Content-Length {size}")));
        }
        let deadline = tokio::time::Instant::now() + self.body_timeout;
        let capacity = declared.map_or(0, |n| usize::try_from(n).unwrap_or(0));
        let mut bytes = Vec::with_capacity(capacity);
        let mut frames = body.into_data_stream();
        loop {
            match tokio::time::timeout_at(deadline, frames.next()).await {
                Err(_) => return Err(Error::BodyTimeout(self.body_timeout)),
                Ok(None) => return Ok(bytes.into()),
                Ok(Some(Err(e))) => return Err(Error::Body(e.to_string())),
                Ok(Some(Ok(frame))) => {
                    if bytes.len() + frame.len() > MAX_REQUEST_BYTES {
                        return Err(too_large(format!(
                            "more than {MAX_REQUEST_BYTES} bytes sent"
                        )));
                    }
                    bytes.extend_from_slice(&frame);
                }
            }
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
}

/// Now, in Unix seconds: a completion's `created`.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn chat_completions(State(door): State<Arc<Door>>, request: Request) -> Response {
    chat(&door, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn chat(door: &Door, request: Request) -> Result<Response, Error> {
    let (parts, body) = request.into_parts();
    door.authenticate(&parts.headers)?;
    let client = door.client(&parts);
    let body = door.body(&parts.headers, body).await?;
    let (request, delivery) = request::parse(&body)
        .map_err(|invalid| door.refuse(Refusal::invalid(invalid.message), invalid.param))?;
    drop(body);
    let created = unix_now();
    let admitted = door
        .gateway
        .admit(&client, &request, delivery.stream)
        .await?;
    if !delivery.stream {
        let answer = admitted.answer().await?;
        return Ok(json_response(&response::completion(&answer, created)));
    }
    let mut events = response::Events::new(created, delivery.include_usage);
    let chunks = admitted.pump(move |item| {
        Ok::<_, Infallible>(match item {
            Ok(chunk) => events.render(&chunk),
            Err(refusal) => {
                let mut out = Vec::new();
                response::event(&mut out, &Error::from(refusal).body());
                out.into()
            }
        })
    });
    let mut response = Response::new(Body::from_stream(chunks));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies such as nginx would otherwise hold events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

fn json_response(value: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(value.to_string()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn list_models(State(door): State<Arc<Door>>, request: Request) -> Response {
    models(&door, &request.into_parts().0)
        .await
        .map_or_else(IntoResponse::into_response, |list| {
            json_response(&response::models(&list))
        })
}

async fn get_model(
    State(door): State<Arc<Door>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let found = models(&door, &request.into_parts().0)
        .await
        .and_then(|list| {
            list.models
                .iter()
                .find(|m| m.id == id)
                .map(response::model)
                .ok_or(Error::UnknownModel(id))
        });
    found.map_or_else(IntoResponse::into_response, |model| json_response(&model))
}

async fn models(
    door: &Door,
    parts: &Parts,
) -> Result<automation_proto::v1::ListModelsResponse, Error> {
    door.authenticate(&parts.headers)?;
    door.gateway.check_rate(&door.client(parts))?;
    Ok(door.gateway.list_models().await?)
}
