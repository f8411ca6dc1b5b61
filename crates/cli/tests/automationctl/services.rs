//! The platform's services started in-process, the way their own tests do.

use std::path::Path;
use std::time::Duration;

use automation_api_gateway::upstream::ApiKey;
use automation_telemetry::auth::BearerAuth;
use automation_testkit::service::start;
use automation_testkit::upstream::FakeUpstream;
use automation_testkit::within;

use crate::support::Running;

/// An audit-agent on `repo` that audits on request only.
pub async fn audit_agent(repo: &Path, database: &Path, auth: BearerAuth) -> Running {
    let mut config =
        automation_audit_agent::Config::new("aa-cli", repo.to_path_buf(), database.to_path_buf());
    config.interval = None;
    config.audit_on_start = false;
    config.service.shutdown_delay = Duration::ZERO;
    config.service.auth = auth;
    let service =
        start(|listeners, shutdown| automation_audit_agent::start(config, listeners, shutdown))
            .await
            .expect("the audit-agent starts");
    within("audit-agent ready", service.handles.health.wait_ready()).await;
    Running::of(service)
}

/// An api-gateway in front of `upstream`.
pub async fn gateway(upstream: &FakeUpstream) -> Running {
    let mut config = automation_api_gateway::Config::new(
        "gw-cli",
        &upstream.base_url(),
        ApiKey::value("sk-cli-test-0123456789".to_owned()),
    );
    config.service.shutdown_delay = Duration::ZERO;
    config.client_rate = None;
    let service =
        start(|listeners, shutdown| automation_api_gateway::start(config, listeners, shutdown))
            .await
            .expect("the gateway starts");
    within("api-gateway ready", service.handles.health.wait_ready()).await;
    Running::of(service)
}

/// A test-watcher on `root` whose test command is `command`.
pub async fn test_watcher(root: &Path, command: &str) -> Running {
    let mut config = automation_test_watcher::Config::new("tw-cli", root.to_path_buf());
    config.engine.command = command.to_owned();
    config.service.shutdown_delay = Duration::ZERO;
    config.engine.kill_grace = Duration::from_millis(200);
    let service =
        start(|listeners, shutdown| automation_test_watcher::start(config, listeners, shutdown))
            .await
            .expect("the test-watcher starts");
    within("test-watcher ready", service.handles.health.wait_ready()).await;
    Running::of(service)
}
