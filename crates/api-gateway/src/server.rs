//! `automation.v1.ApiGateway` over gRPC: the limits in front of the
//! upstream, the error mapping, and one `ApiCall` event per request.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use automation_proto::v1::api_gateway_server::ApiGateway;
use automation_proto::v1::{
    self, ApiStatus, BalanceInfo, ChatChunk, ChatRequest, ChatResponse, GetBalanceRequest,
    GetBalanceResponse, ListModelsRequest, ListModelsResponse, ModelInfo, Usage,
};
use automation_telemetry::reporter::Reporter;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status};

use crate::circuit::{CircuitBreaker, Ticket};
use crate::limits::{ClientLimits, Concurrency, Slot, client_key, peer_key};
use crate::pricing::Models;
use crate::upstream::{
    Attempts, ChatStream, Failure, FailureKind, TokenUsage, Upstream, UpstreamBalance,
};

mod oversized;

pub use oversized::{MAX_REQUEST_BYTES, SizeLimited};

/// Longest accepted model name and message count.
const MAX_MODEL_LEN: usize = 64;
const MAX_MESSAGES: usize = 10_000;

/// Everything a request goes through, shared by the gRPC service, the
/// health checks and the heartbeat.
#[derive(Debug)]
pub struct Gateway {
    /// The upstream client.
    pub upstream: Upstream,
    /// Configured models and prices.
    pub models: Models,
    /// Per-client rate limits.
    pub clients: ClientLimits,
    /// Client tokens are verified (`AUTH_TOKEN_FILE` is set): rate limits
    /// apply per token; otherwise per peer address.
    pub tokens_verified: bool,
    /// At most this many upstream calls at once.
    pub concurrency: Concurrency,
    /// Fails fast while the upstream is failing.
    pub circuit: CircuitBreaker,
    /// Where `ApiCall` events go.
    pub reporter: Option<Reporter>,
    /// The last balance read and when, for the heartbeat and `GetBalance`.
    pub balance: Mutex<Option<(Instant, UpstreamBalance)>>,
}

/// `GetBalance` answers from a balance read this recently.
const BALANCE_FRESH: Duration = Duration::from_secs(30);

impl Gateway {
    /// The last balance read.
    pub fn last_balance(&self) -> Option<UpstreamBalance> {
        self.balance
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(_, b)| b.clone())
    }

    /// Reads the balance now and keeps it for the heartbeat.
    pub async fn refresh_balance(&self) -> Result<UpstreamBalance, Failure> {
        let balance = self.upstream.balance().await?;
        *self.balance.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), balance.clone()));
        Ok(balance)
    }

    /// The balance, read anew unless the last read is recent.
    async fn balance_now(&self) -> Result<UpstreamBalance, Failure> {
        let fresh = self
            .balance
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(at, _)| at.elapsed() < BALANCE_FRESH)
            .map(|(_, b)| b.clone());
        match fresh {
            Some(balance) => Ok(balance),
            None => self.refresh_balance().await,
        }
    }
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct ApiGatewayService {
    gateway: Arc<Gateway>,
}

impl ApiGatewayService {
    /// The service over `gateway`.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

/// One request's facts, reported when it ends.
struct Call {
    gateway: Arc<Gateway>,
    model: String,
    started: Instant,
    ttft: Option<Duration>,
    usage: TokenUsage,
    attempts: Attempts,
    reported: bool,
    /// Holds a concurrency slot: not counted in the in-flight figure it
    /// reports, since it is finishing.
    holds_slot: bool,
}

impl Call {
    fn new(gateway: &Arc<Gateway>, model: &str) -> Self {
        Self {
            gateway: Arc::clone(gateway),
            model: model.to_owned(),
            started: Instant::now(),
            ttft: None,
            usage: TokenUsage::default(),
            attempts: Attempts::default(),
            reported: false,
            holds_slot: false,
        }
    }

    /// The cost, once the upstream sent usage (a call that failed before
    /// it has no cost to report, rather than a cost of zero).
    fn cost(&self) -> Option<f64> {
        if self.usage == TokenUsage::default() {
            return None;
        }
        self.gateway.models.cost(
            &self.model,
            self.usage.input_cache_hit,
            self.usage.input_cache_miss,
            self.usage.output,
        )
    }

    fn usage(&self) -> Usage {
        Usage {
            input_cache_hit_tokens: self.usage.input_cache_hit,
            input_cache_miss_tokens: self.usage.input_cache_miss,
            output_tokens: self.usage.output,
            reasoning_tokens: self.usage.reasoning,
            cost_usd: self.cost(),
        }
    }

    /// Reports the call once, with its final status.
    fn finish(&mut self, status: ApiStatus, error_kind: &str) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        let Some(reporter) = &self.gateway.reporter else {
            return;
        };
        reporter.report(v1::event::Payload::ApiCall(v1::ApiCall {
            model: self.gateway.models.label(&self.model).to_owned(),
            status: status as i32,
            duration_seconds: self.started.elapsed().as_secs_f64(),
            time_to_first_token_seconds: self.ttft.map(|d| d.as_secs_f64()),
            input_cache_hit_tokens: self.usage.input_cache_hit,
            input_cache_miss_tokens: self.usage.input_cache_miss,
            output_tokens: self.usage.output,
            reasoning_tokens: self.usage.reasoning,
            retries: self.attempts.retries.iter().map(|r| *r as i32).collect(),
            rate_limited_responses: self.attempts.rate_limited,
            cost_usd: self.cost(),
            error_kind: error_kind.to_owned(),
            in_flight_requests: self
                .gateway
                .concurrency
                .in_flight()
                .saturating_sub(u64::from(self.holds_slot)),
        }));
    }

    /// Reports a refusal and returns it.
    fn refuse(&mut self, status: ApiStatus, kind: &str, error: Status) -> Status {
        self.finish(status, kind);
        error
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // Ended without an outcome: the client went away.
        self.finish(ApiStatus::Cancelled, "cancelled");
    }
}

/// A status with a retry hint in the metadata (`retry-after-ms`, and
/// `retry-after` in whole seconds).
fn with_retry_hint(code: Code, message: String, wait: Duration) -> Status {
    let mut metadata = MetadataMap::new();
    let ms = wait.as_millis().max(1);
    if let Ok(v) = MetadataValue::try_from(ms.to_string()) {
        metadata.insert("retry-after-ms", v);
    }
    if let Ok(v) = MetadataValue::try_from(ms.div_ceil(1000).to_string()) {
        metadata.insert("retry-after", v);
    }
    Status::with_metadata(code, message, metadata)
}

/// The status for a request over [`MAX_REQUEST_BYTES`]; `detail` is tonic's
/// account of the sizes.
/// The most text (content and reasoning) one unary answer gathers: what a
/// gRPC client decodes by default (4 MiB), so the gateway never holds more
/// for one call than its client could take.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

fn request_too_large(detail: &str) -> Status {
    let detail = detail.strip_prefix("Error, ").unwrap_or(detail);
    Status::resource_exhausted(format!(
        "the request is over the gateway's size limit of {MAX_REQUEST_BYTES} bytes ({detail}); \
         send a shorter prompt"
    ))
}

/// The status a client sees for an upstream failure, the status reported,
/// and whether it says the upstream is unhealthy.
fn map_failure(failure: &Failure) -> (Status, ApiStatus, Option<bool>) {
    let message = failure.message.clone();
    match failure.kind {
        FailureKind::BadRequest => (Status::invalid_argument(message), ApiStatus::Invalid, None),
        FailureKind::Unauthorized => (
            Status::permission_denied(format!(
                "DeepSeek rejected the gateway's API key (401); check DEEPSEEK_API_KEY: {message}"
            )),
            ApiStatus::Unauthorized,
            None,
        ),
        FailureKind::PaymentRequired => (
            Status::failed_precondition(format!(
                "the DeepSeek account has no balance left (402); top it up: {message}"
            )),
            ApiStatus::PaymentRequired,
            None,
        ),
        FailureKind::RateLimited => (
            with_retry_hint(
                Code::ResourceExhausted,
                format!("DeepSeek is rate limiting the gateway (429) after retries: {message}"),
                failure.retry_after.unwrap_or(Duration::from_secs(1)),
            ),
            ApiStatus::RateLimited,
            None,
        ),
        FailureKind::Server | FailureKind::Protocol | FailureKind::EventTooLarge => (
            Status::unavailable(message),
            ApiStatus::ServerError,
            Some(false),
        ),
        FailureKind::Connection => (
            Status::unavailable(message),
            ApiStatus::Unavailable,
            Some(false),
        ),
        FailureKind::Timeout => (
            Status::deadline_exceeded(message),
            ApiStatus::Timeout,
            Some(false),
        ),
        FailureKind::NoKey => (
            Status::failed_precondition(message),
            ApiStatus::Unavailable,
            None,
        ),
    }
}

/// Settles the circuit ticket for a failure.
fn settle(ticket: Ticket, healthy: Option<bool>) {
    match healthy {
        Some(true) => ticket.success(),
        Some(false) => ticket.failure(),
        None => drop(ticket),
    }
}

/// Checks the request and turns it into the upstream's JSON body.
fn request_body(
    models: &Models,
    request: &ChatRequest,
) -> Result<(String, serde_json::Value), Status> {
    let model = if request.model.is_empty() {
        models.default_model().to_owned()
    } else {
        request.model.clone()
    };
    if model.len() > MAX_MODEL_LEN {
        return Err(Status::invalid_argument(format!(
            "model name is longer than {MAX_MODEL_LEN} bytes"
        )));
    }
    if request.messages.is_empty() {
        return Err(Status::invalid_argument(
            "messages is empty: send at least one",
        ));
    }
    if request.messages.len() > MAX_MESSAGES {
        return Err(Status::invalid_argument(format!(
            "more than {MAX_MESSAGES} messages"
        )));
    }
    let mut messages = Vec::with_capacity(request.messages.len());
    for (i, m) in request.messages.iter().enumerate() {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool") {
            return Err(Status::invalid_argument(format!(
                "messages[{i}].role {:?} is not one of system, user, assistant, tool",
                m.role.chars().take(32).collect::<String>()
            )));
        }
        let mut message = serde_json::json!({ "role": m.role, "content": m.content });
        if !m.name.is_empty() {
            message["name"] = m.name.clone().into();
        }
        messages.push(message);
    }
    let mut body = serde_json::json!({ "model": model, "messages": messages });
    let mut set = |key: &str, value: serde_json::Value| {
        body[key] = value;
    };
    if let Some(t) = request.temperature {
        set("temperature", t.into());
    }
    if let Some(p) = request.top_p {
        set("top_p", p.into());
    }
    if let Some(n) = request.max_tokens {
        set("max_tokens", n.into());
    }
    if !request.stop.is_empty() {
        set("stop", request.stop.clone().into());
    }
    if let Some(p) = request.presence_penalty {
        set("presence_penalty", p.into());
    }
    if let Some(p) = request.frequency_penalty {
        set("frequency_penalty", p.into());
    }
    if request.json_output {
        set(
            "response_format",
            serde_json::json!({ "type": "json_object" }),
        );
    }
    Ok((model, body))
}

fn bearer(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
}

/// What a chat call holds while it talks to the upstream.
struct Admitted {
    call: Call,
    slot: Slot,
    stream: ChatStream,
}

impl ApiGatewayService {
    /// Whom the rate limit of `request` applies to: its token when tokens
    /// are verified, else its peer (a token anyone can make up is no client).
    fn client<T>(&self, request: &Request<T>) -> String {
        if self.gateway.tokens_verified {
            client_key(bearer(request.metadata()))
        } else {
            peer_key(request.remote_addr().map(|addr| addr.ip()))
        }
    }

    /// The per-client rate limit, for calls that report no `ApiCall`.
    fn limit_client<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.gateway
            .clients
            .check(&self.client(request))
            .map_err(|wait| {
                with_retry_hint(
                    Code::ResourceExhausted,
                    "this client is over its request rate limit".to_owned(),
                    wait,
                )
            })
    }

    /// Limits, validation, circuit, concurrency, then the upstream until
    /// its first chunk. The circuit is settled here: the first chunk proves
    /// the upstream healthy (so a recovered upstream is open to all at once,
    /// not after a long probe generation ends); a stall or break later on
    /// is the client's error to see, not a reason to fail everyone fast.
    async fn open(
        &self,
        request: Request<ChatRequest>,
        streaming: bool,
    ) -> Result<Admitted, Status> {
        let gateway = &self.gateway;
        let client = self.client(&request);
        let request = request.into_inner();
        let model_hint = if request.model.is_empty() {
            gateway.models.default_model().to_owned()
        } else {
            request.model.clone()
        };
        let mut call = Call::new(gateway, &model_hint);
        if let Err(wait) = gateway.clients.check(&client) {
            return Err(call.refuse(
                ApiStatus::RateLimited,
                "client_rate_limit",
                with_retry_hint(
                    Code::ResourceExhausted,
                    "this client is over its request rate limit".to_owned(),
                    wait,
                ),
            ));
        }
        let (model, body) = match request_body(&gateway.models, &request) {
            Ok(v) => v,
            Err(e) => return Err(call.refuse(ApiStatus::Invalid, "invalid_request", e)),
        };
        call.model = model;
        let ticket = match gateway.circuit.admit() {
            Ok(ticket) => ticket,
            Err(wait) => {
                return Err(call.refuse(
                    ApiStatus::Unavailable,
                    "circuit_open",
                    with_retry_hint(
                        Code::Unavailable,
                        "the upstream is failing; the gateway fails fast until it recovers"
                            .to_owned(),
                        wait,
                    ),
                ));
            }
        };
        let slot = match gateway.concurrency.acquire().await {
            Ok(slot) => slot,
            Err(wait) => {
                drop(ticket);
                return Err(call.refuse(
                    ApiStatus::RateLimited,
                    "concurrency_limit",
                    with_retry_hint(
                        Code::ResourceExhausted,
                        "the gateway is at its concurrency limit".to_owned(),
                        wait,
                    ),
                ));
            }
        };
        call.holds_slot = true;
        let opened = if streaming {
            gateway.upstream.stream(body).await
        } else {
            gateway.upstream.chat(body, None).await
        };
        match opened {
            Ok(stream) => {
                ticket.success();
                call.attempts = stream.attempts().clone();
                call.ttft = Some(stream.time_to_first_token());
                Ok(Admitted { call, slot, stream })
            }
            Err(failure) => {
                call.attempts = failure.attempts.clone();
                let (status, api, healthy) = map_failure(&failure);
                settle(ticket, healthy);
                Err(call.refuse(api, failure.kind.as_str(), status))
            }
        }
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, Status>> + Send>>;

#[tonic::async_trait]
impl ApiGateway for ApiGatewayService {
    async fn chat_completion(
        &self,
        request: Request<ChatRequest>,
    ) -> Result<Response<ChatResponse>, Status> {
        let Admitted {
            mut call,
            slot,
            mut stream,
        } = self.open(request, false).await?;
        let mut response = ChatResponse {
            attempts: call.attempts.attempts,
            ..ChatResponse::default()
        };
        loop {
            match stream.next().await {
                Ok(Some(delta)) => {
                    if response.id.is_empty() {
                        response.id = delta.id;
                    }
                    if response.model.is_empty() {
                        response.model = delta.model;
                    }
                    let size = response.content.len()
                        + response.reasoning_content.len()
                        + delta.content.len()
                        + delta.reasoning_content.len();
                    if size > MAX_ANSWER_BYTES {
                        drop(slot);
                        call.holds_slot = false;
                        return Err(call.refuse(
                            ApiStatus::Invalid,
                            "answer_too_large",
                            Status::resource_exhausted(format!(
                                "the answer is over {MAX_ANSWER_BYTES} bytes, the most one \
                                 ChatCompletion returns; use StreamChatCompletion or a lower max_tokens"
                            )),
                        ));
                    }
                    response.content.push_str(&delta.content);
                    response
                        .reasoning_content
                        .push_str(&delta.reasoning_content);
                    if let Some(reason) = delta.finish_reason {
                        response.finish_reason = reason;
                    }
                    if let Some(usage) = delta.usage {
                        call.usage = usage;
                    }
                }
                Ok(None) => break,
                Err(failure) => {
                    let (status, api, _) = map_failure(&failure);
                    drop(slot);
                    call.holds_slot = false;
                    return Err(call.refuse(api, failure.kind.as_str(), status));
                }
            }
        }
        drop(slot);
        call.holds_slot = false;
        response.usage = Some(call.usage());
        call.finish(ApiStatus::Ok, "");
        Ok(Response::new(response))
    }

    type StreamChatCompletionStream = ChunkStream;

    async fn stream_chat_completion(
        &self,
        request: Request<ChatRequest>,
    ) -> Result<Response<Self::StreamChatCompletionStream>, Status> {
        let Admitted {
            mut call,
            slot,
            mut stream,
        } = self.open(request, true).await?;
        let (tx, rx) = mpsc::channel(32);
        // A client that stops reading is dropped after this long, like an
        // upstream that stops sending.
        let send_limit = self.gateway.upstream.config().idle_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let send = |chunk| {
                let tx = tx.clone();
                async move {
                    matches!(
                        tokio::time::timeout(send_limit, tx.send(chunk)).await,
                        Ok(Ok(()))
                    )
                }
            };
            let (mut id, mut model, mut finish) = (String::new(), String::new(), String::new());
            loop {
                // A client that goes away ends the call at once (reported
                // as cancelled when `call` drops), not at the next chunk.
                let next = tokio::select! {
                    biased;
                    () = tx.closed() => return,
                    next = stream.next() => next,
                };
                match next {
                    Ok(Some(delta)) => {
                        if id.is_empty() {
                            id.clone_from(&delta.id);
                            model.clone_from(&delta.model);
                        }
                        if let Some(reason) = delta.finish_reason {
                            finish = reason;
                        }
                        if let Some(usage) = delta.usage {
                            call.usage = usage;
                        }
                        if delta.content.is_empty() && delta.reasoning_content.is_empty() {
                            continue;
                        }
                        let chunk = ChatChunk {
                            content: delta.content,
                            reasoning_content: delta.reasoning_content,
                            id: id.clone(),
                            model: model.clone(),
                            ..ChatChunk::default()
                        };
                        if !send(Ok(chunk)).await {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(failure) => {
                        let (status, api, _) = map_failure(&failure);
                        let status = call.refuse(api, failure.kind.as_str(), status);
                        let _ = send(Err(status)).await;
                        return;
                    }
                }
            }
            let last = ChatChunk {
                finish_reason: finish,
                usage: Some(call.usage()),
                id,
                model,
                ..ChatChunk::default()
            };
            if send(Ok(last)).await {
                call.finish(ApiStatus::Ok, "");
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_models(
        &self,
        request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        self.limit_client(&request)?;
        let listed = self
            .gateway
            .upstream
            .models()
            .await
            .map_err(|f| map_failure(&f).0)?;
        let models = &self.gateway.models;
        let models = listed
            .into_iter()
            .map(|m| {
                let price = models.price(&m.id);
                ModelInfo {
                    configured: models.is_configured(&m.id),
                    price_input_cache_hit: price.map(|p| p.input_cache_hit),
                    price_input_cache_miss: price.map(|p| p.input_cache_miss),
                    price_output: price.map(|p| p.output),
                    id: m.id,
                    owned_by: m.owned_by,
                }
            })
            .collect();
        Ok(Response::new(ListModelsResponse { models }))
    }

    async fn get_balance(
        &self,
        request: Request<GetBalanceRequest>,
    ) -> Result<Response<GetBalanceResponse>, Status> {
        self.limit_client(&request)?;
        let balance = self
            .gateway
            .balance_now()
            .await
            .map_err(|f| map_failure(&f).0)?;
        Ok(Response::new(GetBalanceResponse {
            is_available: balance.is_available,
            balances: balance
                .balances
                .iter()
                .map(|b| BalanceInfo {
                    currency: b.currency.clone(),
                    total: b.total,
                    granted: b.granted,
                    topped_up: b.topped_up,
                })
                .collect(),
        }))
    }
}
