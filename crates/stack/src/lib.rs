//! The whole platform in one process: the collector, the test-watcher, the
//! audit-agent and the api-gateway, each on its own ports and talking to the
//! others over loopback gRPC exactly as in production — the reporters push to
//! the collector's gRPC port, the test-watcher calls the gateway's.
//!
//! [`start`] binds every listener first (so a port in use is reported before
//! anything runs), starts the collector, then the three services reporting
//! to it. [`config`] turns the command line into a [`StackConfig`], reusing
//! each service's own flags. [`Stack::stop`] stops the three first, so their goodbyes reach the
//! collector, and the collector last.

pub mod config;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use automation_health::{HealthChecker, HealthReport};
use automation_runtime::serve::Listeners;
use automation_runtime::service::Running;
use automation_telemetry::reporter::ReporterConfig;
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
    /// A service could not bind its ports, failed to start, or stopped
    /// with an error.
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
    Listeners::bind(addresses.grpc, addresses.http)
        .await
        .map_err(|error| Error::Service {
            service,
            message: error.to_string(),
        })
}

/// One service's start, awaited: its [`Service`] (its end watched by a
/// task of its own) and its handles.
async fn launch<H, E>(
    name: &'static str,
    started: impl Future<Output = Result<Running<H, E>, E>>,
    health: impl FnOnce(&H) -> HealthChecker,
) -> Result<(Service, H), Error>
where
    H: Clone + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let running = started.await.map_err(|e| Error::Service {
        service: name,
        message: e.to_string(),
    })?;
    let addresses = Addresses {
        grpc: running.grpc,
        http: running.http,
    };
    let handles = running.handles.clone();
    let stop = running.shutdown.clone();
    let task = tokio::spawn(async move { running.wait().await.map_err(|e| e.to_string()) });
    let service = Service {
        name,
        addresses,
        health: health(&handles),
        stop,
        task: Some(task),
    };
    Ok((service, handles))
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
    let endpoint = format!("http://{}", collector_listeners.addresses().0);
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
    let (collector, collector_handles) = launch(
        "collector",
        automation_collector::start(
            config.collector.clone(),
            collector_listeners,
            CancellationToken::new(),
        ),
        |h: &automation_collector::Handles| h.health.clone(),
    )
    .await?;

    let watcher_listeners = next();
    let (audit_listeners, gateway_listeners) = (next(), next());
    let gateway_endpoint = format!("http://{}", gateway_listeners.addresses().0);

    let gateway_config = &mut config.gateway.service;
    gateway_config.reporter = Some(reporter("api-gateway", &gateway_config.instance));
    let (gateway, _) = launch(
        "api-gateway",
        automation_api_gateway::start(
            config.gateway.clone(),
            gateway_listeners,
            CancellationToken::new(),
        ),
        |h: &automation_api_gateway::Handles| h.health.clone(),
    )
    .await?;

    let watcher_config = &mut config.watcher.service;
    watcher_config.reporter = Some(reporter("test-watcher", &watcher_config.instance));
    if config.watcher.gateway.is_none() {
        let mut g = automation_test_watcher::explain::GatewayConfig::new(gateway_endpoint);
        g.token_file.clone_from(&config.token_file);
        config.watcher.gateway = Some(g);
    }
    let (watcher, watcher_handles) = launch(
        "test-watcher",
        automation_test_watcher::start(
            config.watcher.clone(),
            watcher_listeners,
            CancellationToken::new(),
        ),
        |h: &automation_test_watcher::Handles| h.health.clone(),
    )
    .await?;

    let audit_config = &mut config.audit.service;
    audit_config.reporter = Some(reporter("audit-agent", &audit_config.instance));
    let (audit, audit_handles) = launch(
        "audit-agent",
        automation_audit_agent::start(
            config.audit.clone(),
            audit_listeners,
            CancellationToken::new(),
        ),
        |h: &automation_audit_agent::Handles| h.health.clone(),
    )
    .await?;

    Ok(Stack {
        services: vec![collector, watcher, audit, gateway],
        watcher: watcher_handles,
        audit: audit_handles,
        otlp_grpc: collector_handles.otlp_grpc,
        otlp_http: collector_handles.otlp_http,
    })
}

/// Starts the platform, prints where everything is once every service
/// has settled (or `ready_timeout` has passed), serves until `stop` is
/// cancelled or a service fails, then stops every service gracefully.
pub async fn run(
    config: StackConfig,
    ready_timeout: Duration,
    stop: CancellationToken,
) -> Result<(), Error> {
    let mut stack = start(config).await?;
    tokio::select! {
        () = stack.settle(ready_timeout) => {}
        () = stop.cancelled() => {}
    }
    println!("\n{}", stack.table());
    println!("Check again with `automationctl status`; stop with Ctrl-C.");
    let failed = tokio::select! {
        () = stop.cancelled() => None,
        error = stack.failed() => Some(error),
    };
    if let Some(error) = &failed {
        eprintln!("{}: {error}; stopping the others", config::NAME);
    }
    println!("{}: stopping", config::NAME);
    let stopped = stack.stop().await;
    failed.map_or(stopped, Err)
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
