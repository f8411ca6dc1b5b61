//! The platform's services started in-process, the way their own tests do.

use std::path::Path;
use std::time::Duration;

use automation_api_gateway::testing::FakeUpstream;
use automation_api_gateway::upstream::ApiKey;
use automation_collector::testing::within;
use automation_telemetry::auth::BearerAuth;
use tokio_util::sync::CancellationToken;

use crate::support::{Running, listeners};

/// An audit-agent on `repo` that audits on request only.
pub async fn audit_agent(repo: &Path, database: &Path, auth: BearerAuth) -> Running {
    let mut config =
        automation_audit_agent::Config::new("aa-cli", repo.to_path_buf(), database.to_path_buf());
    config.interval = None;
    config.audit_on_start = false;
    config.shutdown_delay = Duration::ZERO;
    config.auth = auth;
    let (listeners, addr) = listeners().await;
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(automation_audit_agent::run(
        config,
        listeners,
        shutdown.clone(),
        Some(tx),
    ));
    let handles = rx.await.expect("the audit-agent starts");
    within("audit-agent ready", handles.health.wait_ready()).await;
    Running::new(addr, shutdown)
}

/// An api-gateway in front of `upstream`.
pub async fn gateway(upstream: &FakeUpstream) -> Running {
    let mut config = automation_api_gateway::Config::new(
        "gw-cli",
        &upstream.base_url(),
        ApiKey::value("sk-cli-test-0123456789".to_owned()),
    );
    config.shutdown_delay = Duration::ZERO;
    config.client_rate = None;
    let (listeners, addr) = listeners().await;
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(automation_api_gateway::run(
        config,
        listeners,
        shutdown.clone(),
        Some(tx),
    ));
    let handles = rx.await.expect("the gateway starts");
    within("api-gateway ready", handles.health.wait_ready()).await;
    Running::new(addr, shutdown)
}

/// A test-watcher on `root` whose test command is `command`.
pub async fn test_watcher(root: &Path, command: &str) -> Running {
    let mut config = automation_test_watcher::Config::new("tw-cli", root.to_path_buf());
    config.engine.command = command.to_owned();
    config.shutdown_delay = Duration::ZERO;
    config.engine.kill_grace = Duration::from_millis(200);
    let (listeners, addr) = listeners().await;
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(automation_test_watcher::run(
        config,
        listeners,
        shutdown.clone(),
        Some(tx),
    ));
    let handles = rx.await.expect("the test-watcher starts");
    within("test-watcher ready", handles.health.wait_ready()).await;
    Running::new(addr, shutdown)
}
