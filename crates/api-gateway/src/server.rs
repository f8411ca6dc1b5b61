//! `automation.v1.ApiGateway` over gRPC, and the [`Gateway`] core every
//! door shares. A chat call goes through the door-neutral `chat` module;
//! this door adds the client's identity and maps refusals to statuses.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use automation_proto::v1::api_gateway_server::ApiGateway;
use automation_proto::v1::{
    ApiStatus, BalanceInfo, ChatChunk, ChatRequest, ChatResponse, GetBalanceRequest,
    GetBalanceResponse, ListModelsRequest, ListModelsResponse, ModelInfo,
};
use automation_telemetry::reporter::Reporter;
use futures_util::Stream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status};

use crate::chat::{Class, Refusal, map_failure};
use crate::circuit::CircuitBreaker;
use crate::limits::{ClientLimits, Concurrency, client_key, peer_key};
use crate::pricing::Models;
use crate::upstream::{Failure, Upstream, UpstreamBalance};

mod oversized;

pub use crate::chat::MAX_ANSWER_BYTES;
pub use oversized::{MAX_REQUEST_BYTES, SizeLimited};

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
    pub(crate) async fn balance_now(&self) -> Result<UpstreamBalance, Failure> {
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
    /// The upstream's models, with which are configured and their prices.
    pub(crate) async fn list_models(&self) -> Result<ListModelsResponse, Refusal> {
        let listed = self
            .upstream
            .models()
            .await
            .map_err(|f| map_failure(&f).0)?;
        let models = listed
            .into_iter()
            .map(|m| {
                let price = self.models.price(&m.id);
                ModelInfo {
                    configured: self.models.is_configured(&m.id),
                    price_input_cache_hit: price.map(|p| p.input_cache_hit),
                    price_input_cache_miss: price.map(|p| p.input_cache_miss),
                    price_output: price.map(|p| p.output),
                    id: m.id,
                    owned_by: m.owned_by,
                }
            })
            .collect();
        Ok(ListModelsResponse { models })
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

/// The gRPC status for a refusal: the one place the gRPC door maps errors.
impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Self {
        let code = match refusal.class {
            Class::Invalid => Code::InvalidArgument,
            Class::RequestTooLarge | Class::AnswerTooLarge | Class::RateLimited => {
                Code::ResourceExhausted
            }
            Class::KeyRejected => Code::PermissionDenied,
            Class::PaymentRequired | Class::NotConfigured => Code::FailedPrecondition,
            Class::CircuitOpen | Class::Upstream => Code::Unavailable,
            Class::Timeout => Code::DeadlineExceeded,
        };
        match refusal.retry_after {
            Some(wait) => with_retry_hint(code, refusal.message, wait),
            None => Status::new(code, refusal.message),
        }
    }
}

/// The refusal for a request over [`MAX_REQUEST_BYTES`]; `detail` is the
/// door's account of the sizes.
pub(crate) fn request_too_large(detail: &str) -> Refusal {
    Refusal {
        class: Class::RequestTooLarge,
        message: format!(
            "the request is over the gateway's size limit of {MAX_REQUEST_BYTES} bytes ({detail}); \
             send a shorter prompt"
        ),
        retry_after: None,
        status: ApiStatus::Invalid,
        kind: "request_too_large",
    }
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
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, Status>> + Send>>;

#[tonic::async_trait]
impl ApiGateway for ApiGatewayService {
    async fn chat_completion(
        &self,
        request: Request<ChatRequest>,
    ) -> Result<Response<ChatResponse>, Status> {
        let client = self.client(&request);
        let admitted = self
            .gateway
            .admit(&client, request.get_ref(), false)
            .await
            .map_err(Status::from)?;
        admitted
            .answer()
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    type StreamChatCompletionStream = ChunkStream;

    async fn stream_chat_completion(
        &self,
        request: Request<ChatRequest>,
    ) -> Result<Response<Self::StreamChatCompletionStream>, Status> {
        let client = self.client(&request);
        let admitted = self
            .gateway
            .admit(&client, request.get_ref(), true)
            .await
            .map_err(Status::from)?;
        let chunks = admitted.pump(|item| item.map_err(Status::from));
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn list_models(
        &self,
        request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        self.gateway
            .check_rate(&self.client(&request))
            .map_err(Status::from)?;
        let models = self.gateway.list_models().await.map_err(Status::from)?;
        Ok(Response::new(models))
    }

    async fn get_balance(
        &self,
        request: Request<GetBalanceRequest>,
    ) -> Result<Response<GetBalanceResponse>, Status> {
        self.gateway
            .check_rate(&self.client(&request))
            .map_err(Status::from)?;
        let balance = self
            .gateway
            .balance_now()
            .await
            .map_err(|f| Status::from(map_failure(&f).0))?;
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
