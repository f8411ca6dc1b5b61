//! The api-gateway: the one door to the DeepSeek API. Clients call
//! `automation.v1.ApiGateway` over gRPC, or the same calls in OpenAI's
//! shapes over HTTP (`/v1/chat/completions`, `/v1/models` on the HTTP port,
//! for OpenAI SDKs, LangChain, curl); the gateway calls the upstream with
//! time limits that fit long generations, retries what is worth retrying,
//! limits clients and itself, fails fast while the upstream is failing, and
//! accounts for every token, retry and failure.
//!
//! Layout:
//! * [`upstream`]: the HTTP client (reqwest), SSE, time limits, retries, the key.
//! * `redact`: finds the key in upstream text (raw, JSON-escaped, cut).
//! * `sse`: the upstream's events, parsed in bounded memory and time.
//! * [`limits`]: per-client rate limits and the concurrency limit.
//! * [`circuit`]: the circuit breaker.
//! * [`pricing`]: configured models and their prices.
//! * `chat`: one chat call whichever door it came through: admission,
//!   limits, the upstream call, the answer gathered or pumped, `ApiCall`
//!   events.
//! * `tools`: tool calls passed through, gathered by index.
//! * [`server`]: the gRPC door and its error mapping; the shared [`Gateway`].
//! * [`openai`]: the OpenAI-compatible HTTP door and its error mapping.
//!
//! Run it with `cargo run -p automation-api-gateway --bin api-gateway`; it
//! listens on gRPC :50054 and HTTP :9403 (`/health`, `/ready`, `/v1/…`).

mod chat;
pub mod circuit;
pub mod config;
pub mod limits;
pub mod openai;
pub mod pricing;
mod redact;
pub mod server;
mod sse;
mod tools;
pub mod upstream;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use automation_health::HealthChecker;
use automation_proto::v1::{self, api_gateway_server::ApiGatewayServer};
use automation_runtime::binary::ServiceError;
use automation_runtime::config::ServiceConfig;
use automation_runtime::serve::{Extra, Listeners, ServeError};
use automation_runtime::service::{Running, Runtime};
use automation_telemetry::reporter::{LiveState, ReporterError};
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;

use crate::circuit::CircuitBreaker;
use crate::limits::{ClientLimits, Concurrency};
use crate::pricing::Models;
pub use crate::server::Gateway;
use crate::upstream::{ApiKey, Upstream, UpstreamConfig};

/// Everything [`start`] needs besides its listeners.
#[derive(Debug, Clone)]
pub struct Config {
    /// What every service's configuration holds.
    pub service: ServiceConfig,
    /// The upstream and its time limits and retries.
    pub upstream: UpstreamConfig,
    /// The DeepSeek key.
    pub key: ApiKey,
    /// Configured models and prices.
    pub models: Models,
    /// Upstream calls at once.
    pub max_concurrent: usize,
    /// How long a request waits for a slot.
    pub queue_timeout: Duration,
    /// Requests per second per client (`None`: unlimited) and burst.
    pub client_rate: Option<(f64, u32)>,
    /// Consecutive failures that open the circuit, and how long it stays open.
    pub circuit: (u32, Duration),
    /// How often `/models` is checked.
    pub upstream_check_interval: Duration,
    /// How often the balance is read.
    pub balance_interval: Duration,
}

impl Config {
    /// Defaults for `base_url` with `key`.
    pub fn new(instance: &str, base_url: &str, key: ApiKey) -> Self {
        Self {
            service: ServiceConfig::new(instance),
            upstream: UpstreamConfig {
                base_url: base_url.to_owned(),
                ..UpstreamConfig::default()
            },
            key,
            models: Models::default_models(),
            max_concurrent: 32,
            queue_timeout: Duration::from_secs(5),
            client_rate: Some((10.0, 20)),
            circuit: (5, Duration::from_secs(30)),
            upstream_check_interval: Duration::from_secs(60),
            balance_interval: Duration::from_secs(300),
        }
    }
}

/// The gateway's name, in logs and its reports.
pub const NAME: &str = "api-gateway";

/// A running gateway.
pub type ApiGateway = Running<Handles, Error>;

/// What stops the api-gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The upstream client could not be built (a bad base URL).
    #[error("DEEPSEEK_BASE_URL: {0}")]
    Upstream(#[from] upstream::UpstreamError),
    /// The reporter could not start.
    #[error("reporter: {0}")]
    Reporter(#[from] ReporterError),
    /// A server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

impl ServiceError for Error {}

/// A running gateway's handles, for the stack and tests.
#[derive(Debug, Clone)]
pub struct Handles {
    /// The gateway core.
    pub gateway: Arc<Gateway>,
    /// The health checker.
    pub health: HealthChecker,
}

/// The heartbeat's live values: in-flight requests, the circuit, the balance.
struct Live {
    gateway: Mutex<Option<Arc<Gateway>>>,
}

impl LiveState for Live {
    fn fill(&self, heartbeat: &mut v1::Heartbeat) {
        let Some(gateway) = self
            .gateway
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        else {
            return;
        };
        heartbeat.gateway = Some(v1::GatewayState {
            in_flight_requests: gateway.concurrency.in_flight(),
            circuit_open: gateway.circuit.is_open(),
            balances: gateway
                .last_balance()
                .map(|b| {
                    b.balances
                        .iter()
                        .map(|b| v1::Balance {
                            currency: b.currency.clone(),
                            amount: b.total,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
}

/// Starts serving on `listeners`, until `shutdown` is cancelled; then it
/// shuts down gracefully: unready, in-flight requests drained within the
/// grace period, goodbye said.
pub async fn start(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<ApiGateway, Error> {
    upstream::install_crypto();
    let live = Arc::new(Live {
        gateway: Mutex::new(None),
    });
    let runtime = Runtime::start(
        NAME,
        &config.service,
        Arc::clone(&live) as Arc<dyn LiveState>,
    )?;
    let upstream = Upstream::new(config.upstream.clone(), config.key.clone())?;
    let auth = config.service.auth.clone();
    let gateway = Arc::new(Gateway {
        upstream,
        models: config.models.clone(),
        clients: match config.client_rate {
            Some((rate, burst)) => ClientLimits::new(rate, burst),
            None => ClientLimits::unlimited(),
        },
        tokens_verified: auth.enabled(),
        concurrency: Concurrency::new(config.max_concurrent, config.queue_timeout),
        circuit: CircuitBreaker::new(config.circuit.0, config.circuit.1),
        reporter: runtime.reporter().cloned(),
        balance: Mutex::new(None),
    });
    *live.gateway.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&gateway));

    // The upstream check runs on its own schedule (a real request to the
    // upstream); the health check reads its last result.
    let upstream_state: Arc<Mutex<Result<(), String>>> =
        Arc::new(Mutex::new(Err("not checked yet".to_owned())));
    spawn_upstream_checks(&gateway, &config, &upstream_state, &runtime.background());

    let health = runtime.health(
        HealthChecker::builder(NAME)
            .required("api_key", {
                let key = config.key.clone();
                move || {
                    let key = key.clone();
                    async move {
                        match key.get() {
                            Some(_) => Ok(()),
                            None => Err(key.describe()),
                        }
                    }
                }
            })
            .dependency("upstream", {
                let state = Arc::clone(&upstream_state);
                move || {
                    let result = state.lock().unwrap_or_else(PoisonError::into_inner).clone();
                    async move { result }
                }
            }),
    );
    {
        let gateway = Arc::clone(&gateway);
        let stop = runtime.background();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => gateway.clients.shrink(),
                }
            }
        });
    }

    let service = ApiGatewayServer::new(server::ApiGatewayService::new(Arc::clone(&gateway)))
        .max_decoding_message_size(server::MAX_REQUEST_BYTES);
    let routes = Routes::new(InterceptedService::new(
        server::SizeLimited::new(service, Arc::clone(&gateway)),
        auth.clone(),
    ))
    .prepare();
    let openai = openai::router(
        Arc::clone(&gateway),
        auth,
        config.service.connections.request_body_timeout,
    );
    let handles = Handles {
        gateway,
        health: health.clone(),
    };
    runtime.serve(
        &health,
        routes,
        openai,
        listeners,
        Extra::default(),
        shutdown,
        handles,
        async {},
    )
}

/// Beyond connecting, how long `/models` or the balance may take.
const CHECK_LIMIT: Duration = Duration::from_secs(10);

/// Checks `/models` and reads the balance on their intervals, while a key
/// is configured.
fn spawn_upstream_checks(
    gateway: &Arc<Gateway>,
    config: &Config,
    state: &Arc<Mutex<Result<(), String>>>,
    stop: &CancellationToken,
) {
    let (gateway, state, stop) = (Arc::clone(gateway), Arc::clone(state), stop.clone());
    let (key, check_every, balance_every) = (
        config.key.clone(),
        config.upstream_check_interval,
        config.balance_interval,
    );
    // Two tasks: a slow balance read must not hold up the health check.
    let limit = config.upstream.connect_timeout + CHECK_LIMIT;
    {
        let (gateway, key, stop) = (Arc::clone(&gateway), key.clone(), stop.clone());
        tokio::spawn(async move {
            let mut checks = tokio::time::interval(check_every);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = checks.tick() => {}
                }
                let result = if key.get().is_none() {
                    Err(format!("not checked: {}", key.describe()))
                } else {
                    match tokio::time::timeout(limit, gateway.upstream.models()).await {
                        Ok(r) => r.map(|_| ()).map_err(|f| f.message),
                        Err(_) => Err(format!("GET /models did not answer within {limit:?}")),
                    }
                };
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "the upstream check failed");
                }
                *state.lock().unwrap_or_else(PoisonError::into_inner) = result;
            }
        });
    }
    tokio::spawn(async move {
        let mut balance = tokio::time::interval(balance_every);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = balance.tick() => {}
            }
            if key.get().is_none() {
                continue;
            }
            match tokio::time::timeout(limit, gateway.refresh_balance()).await {
                Ok(Ok(_)) => {}
                Ok(Err(f)) => tracing::warn!(error = %f.message, "reading the balance failed"),
                Err(_) => tracing::warn!("reading the balance did not finish within {limit:?}"),
            }
        }
    });
}
