//! The whole platform in one process: the collector, the test-watcher, the
//! audit-agent and the api-gateway, each on its own ports and talking to the
//! others over loopback gRPC exactly as in production — the reporters push to
//! the collector's gRPC port, the test-watcher calls the gateway's.
//!
//! [`start`] binds every listener first (so a port in use is reported before
//! anything runs), starts the collector, then the three services reporting
//! to it. [`Stack::stop`] stops the three first, so their goodbyes reach the
//! collector, and the collector last.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use automation_health::{HealthChecker, HealthReport};
use automation_telemetry::reporter::ReporterConfig;
use automation_telemetry::serve::Listeners;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The four services' names, in start order.
pub const SERVICES: [&str; 4] = ["collector", "test-watcher", "audit-agent", "api-gateway"];

/// A service's two listen addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// gRPC.
    pub grpc: SocketAddr,
    /// HTTP admin (`/health`, `/ready`; the collector's `/metrics`).
    pub http: SocketAddr,
}

impl Addresses {
    /// The design's ports on `host`: 50051–50054 and 9400–9403, in
    /// [`SERVICES`] order.
    pub fn design(host: std::net::IpAddr) -> [Self; 4] {
        std::array::from_fn(|i| Self {
            grpc: SocketAddr::new(host, 50051 + i as u16),
            http: SocketAddr::new(host, 9400 + i as u16),
        })
    }
}

/// The four services' configurations and where they listen. The stack
/// fills in what connects them: the reporters' endpoint and token, and the
/// test-watcher's gateway.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Listen addresses in [`SERVICES`] order.
    pub addresses: [Addresses; 4],
    /// The collector.
    pub collector: automation_collector::Config,
    /// The test-watcher.
    pub watcher: automation_test_watcher::Config,
    /// The audit-agent.
    pub audit: automation_audit_agent::Config,
    /// The api-gateway.
    pub gateway: automation_api_gateway::Config,
    /// The reporters' heartbeat.
    pub heartbeat_interval: Duration,
    /// A bearer token file every gRPC server accepts and every client sends
    /// (`None`: no auth).
    pub token_file: Option<PathBuf>,
}

/// What stops the stack from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A port could not be bound.
    #[error("{service}: cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// The service.
        service: &'static str,
        /// gRPC or HTTP.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// A service failed to start or stopped with an error.
    #[error("{service}: {message}")]
    Service {
        /// The service.
        service: &'static str,
        /// Its error.
        message: String,
    },
}

/// One running service.
#[derive(Debug)]
pub struct Service {
    /// Its name.
    pub name: &'static str,
    /// Where it listens (the bound addresses, ports resolved).
    pub addresses: Addresses,
    /// Its health checker.
    pub health: HealthChecker,
    stop: CancellationToken,
    /// `None` once [`Stack::failed`] has seen it end.
    task: Option<JoinHandle<Result<(), String>>>,
}

/// The running platform.
#[derive(Debug)]
pub struct Stack {
    /// The services in [`SERVICES`] order.
    pub services: Vec<Service>,
    /// The test-watcher's engine, for triggering runs in-process.
    pub watcher: automation_test_watcher::Handles,
    /// The audit-agent's engine.
    pub audit: automation_audit_agent::Handles,
    /// Where the collector takes OTLP/gRPC, when it does.
    pub otlp_grpc: Option<std::net::SocketAddr>,
    /// Where the collector takes OTLP/HTTP, when it does.
    pub otlp_http: Option<std::net::SocketAddr>,
}

async fn bind(service: &'static str, addresses: Addresses) -> Result<Listeners, Error> {
    let listen = |what, addr| async move {
        TcpListener::bind(addr).await.map_err(|source| Error::Bind {
            service,
            what,
            addr,
            source,
        })
    };
    Ok(Listeners {
        grpc: listen("gRPC", addresses.grpc).await?,
        http: listen("HTTP", addresses.http).await?,
    })
}

fn resolved(listeners: &Listeners) -> Addresses {
    Addresses {
        grpc: listeners
            .grpc
            .local_addr()
            .expect("a bound listener has an address"),
        http: listeners
            .http
            .local_addr()
            .expect("a bound listener has an address"),
    }
}

/// Spawns one service's `run` and waits until it serves (its handles
/// arrive) or fails.
async fn spawn<H, E, F>(
    name: &'static str,
    listeners: Listeners,
    run: impl FnOnce(Listeners, CancellationToken, oneshot::Sender<H>) -> F,
    health: impl FnOnce(&H) -> HealthChecker,
) -> Result<(Service, H), Error>
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let addresses = resolved(&listeners);
    let stop = CancellationToken::new();
    let (tx, rx) = oneshot::channel();
    let future = run(listeners, stop.clone(), tx);
    let task = tokio::spawn(async move { future.await.map_err(|e| e.to_string()) });
    match rx.await {
        Ok(handles) => Ok((
            Service {
                name,
                addresses,
                health: health(&handles),
                stop,
                task: Some(task),
            },
            handles,
        )),
        Err(_) => Err(Error::Service {
            service: name,
            message: match task.await {
                Ok(Err(message)) => message,
                Ok(Ok(())) => "stopped before it started".to_owned(),
                Err(e) => format!("panicked: {e}"),
            },
        }),
    }
}

/// Starts the platform.
pub async fn start(mut config: StackConfig) -> Result<Stack, Error> {
    let mut listeners = Vec::with_capacity(4);
    for (name, addresses) in SERVICES.iter().zip(config.addresses) {
        listeners.push(bind(name, addresses).await?);
    }
    let mut listeners = listeners.into_iter();
    let mut next = || listeners.next().expect("four listeners");

    let collector_listeners = next();
    let endpoint = format!("http://{}", resolved(&collector_listeners).grpc);
    let reporter = |service: &str, instance: &str| {
        let mut rc = ReporterConfig::new(
            endpoint.clone(),
            service,
            instance,
            env!("CARGO_PKG_VERSION"),
        );
        rc.heartbeat_interval = config.heartbeat_interval;
        rc.token_file.clone_from(&config.token_file);
        // One process: its dropped spans are the gateway's to report.
        rc.reports_spans_dropped = service == "api-gateway";
        rc
    };
    let (collector, collector_handles) = {
        let c = config.collector.clone();
        spawn(
            "collector",
            collector_listeners,
            move |l, stop, tx| automation_collector::run(c, l, stop, Some(tx)),
            |h: &automation_collector::Handles| h.health.clone(),
        )
        .await?
    };

    let watcher_listeners = next();
    let (audit_listeners, gateway_listeners) = (next(), next());
    let gateway_endpoint = format!("http://{}", resolved(&gateway_listeners).grpc);

    config.gateway.reporter = Some(reporter("api-gateway", &config.gateway.instance));
    let (gateway, _) = {
        let c = config.gateway.clone();
        spawn(
            "api-gateway",
            gateway_listeners,
            move |l, stop, tx| automation_api_gateway::run(c, l, stop, Some(tx)),
            |h: &automation_api_gateway::Handles| h.health.clone(),
        )
        .await?
    };

    config.watcher.reporter = Some(reporter("test-watcher", &config.watcher.instance));
    if config.watcher.gateway.is_none() {
        let mut g = automation_test_watcher::explain::GatewayConfig::new(gateway_endpoint);
        g.token_file.clone_from(&config.token_file);
        config.watcher.gateway = Some(g);
    }
    let (watcher, watcher_handles) = {
        let c = config.watcher.clone();
        spawn(
            "test-watcher",
            watcher_listeners,
            move |l, stop, tx| automation_test_watcher::run(c, l, stop, Some(tx)),
            |h: &automation_test_watcher::Handles| h.health.clone(),
        )
        .await?
    };

    config.audit.reporter = Some(reporter("audit-agent", &config.audit.instance));
    let (audit, audit_handles) = {
        let c = config.audit.clone();
        spawn(
            "audit-agent",
            audit_listeners,
            move |l, stop, tx| automation_audit_agent::run(c, l, stop, Some(tx)),
            |h: &automation_audit_agent::Handles| h.health.clone(),
        )
        .await?
    };

    Ok(Stack {
        services: vec![collector, watcher, audit, gateway],
        watcher: watcher_handles,
        audit: audit_handles,
        otlp_grpc: collector_handles.otlp_grpc,
        otlp_http: collector_handles.otlp_http,
    })
}

impl Stack {
    /// A service by name.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Waits until every service has settled — ready, or not ready for a
    /// reason its checks have found (such as the gateway without a key) —
    /// or `timeout` passes.
    pub async fn settle(&self, timeout: Duration) {
        let settled = |report: &HealthReport| {
            report.ready
                || (report.starting.is_empty()
                    && report.components.values().all(|c| {
                        c.importance != automation_health::Importance::Required
                            || c.status != automation_health::ComponentStatus::Unknown
                    }))
        };
        let all = async {
            loop {
                if self.services.iter().all(|s| settled(&s.health.report())) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let _ = tokio::time::timeout(timeout, all).await;
    }

    /// Each service's readiness: `Ok` or why not.
    pub fn readiness(&self) -> Vec<(&'static str, Result<(), String>)> {
        self.services
            .iter()
            .map(|s| (s.name, why_not(&s.health.report())))
            .collect()
    }

    /// The table printed at start: each service, its addresses, ready or
    /// why not, and where the metrics are.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<14} {:<22} {:<22} {}\n",
            "SERVICE", "GRPC", "HTTP", "STATUS"
        );
        for (s, (_, ready)) in self.services.iter().zip(self.readiness()) {
            let status = match ready {
                Ok(()) => "ready".to_owned(),
                Err(why) => format!("not ready: {why}"),
            };
            out.push_str(&format!(
                "{:<14} {:<22} {:<22} {status}\n",
                s.name,
                s.addresses.grpc.to_string(),
                s.addresses.http.to_string()
            ));
        }
        if let Some(c) = self.service("collector") {
            out.push_str(&format!("\nmetrics: http://{}/metrics\n", c.addresses.http));
        }
        if let Some(addr) = self.otlp_grpc {
            out.push_str(&format!("OTLP/gRPC: http://{addr}\n"));
        }
        if let Some(addr) = self.otlp_http {
            out.push_str(&format!("OTLP/HTTP: http://{addr}/v1/metrics\n"));
        }
        out
    }

    /// Resolves when a service stops by itself (an error), naming it.
    pub async fn failed(&mut self) -> Error {
        let tasks = self.services.iter_mut().map(|s| {
            Box::pin(async move {
                let ended = match s.task.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                };
                s.task = None;
                let message = match ended {
                    Ok(Err(message)) => message,
                    Ok(Ok(())) => "stopped".to_owned(),
                    Err(e) => format!("panicked: {e}"),
                };
                Error::Service {
                    service: s.name,
                    message,
                }
            })
        });
        futures_util::future::select_all(tasks).await.0
    }

    /// Stops the services gracefully: the three reporting ones first (their
    /// goodbyes reach the collector), then the collector.
    pub async fn stop(self) -> Result<(), Error> {
        let mut services = self.services;
        let collector = services.remove(0);
        for s in &services {
            s.stop.cancel();
        }
        let mut first_error = None;
        for s in services.into_iter().chain(std::iter::once(collector)) {
            s.stop.cancel();
            let Some(task) = s.task else { continue };
            let result = match task.await {
                Ok(r) => r,
                Err(e) => Err(format!("panicked: {e}")),
            };
            if let Err(message) = result {
                first_error.get_or_insert(Error::Service {
                    service: s.name,
                    message,
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Why a service is not ready, from its health report.
fn why_not(report: &HealthReport) -> Result<(), String> {
    if report.ready {
        return Ok(());
    }
    if !report.starting.is_empty() {
        return Err(format!("starting ({})", report.starting.join(", ")));
    }
    let reasons: Vec<String> = report
        .components
        .iter()
        .filter(|(_, c)| {
            c.importance == automation_health::Importance::Required
                && c.status != automation_health::ComponentStatus::Ok
        })
        .map(|(name, c)| match &c.last_error {
            Some(e) => format!("{name}: {e}"),
            None => format!("{name}: not checked yet"),
        })
        .collect();
    Err(if reasons.is_empty() {
        format!("{:?}", report.status).to_lowercase()
    } else {
        reasons.join("; ")
    })
}
