//! The monitoring, end to end, with the real programs.
//!
//! The four services run as separate processes (the workspace's binaries)
//! over a temporary git repository, the gateway pointed at the testkit's fake
//! DeepSeek; a real Prometheus loads monitoring/prometheus/ (an overlay
//! shortens the intervals and every `for:`) and a real Alertmanager
//! monitoring/alertmanager/config.yml's routing tree, whose receivers all
//! post to a webhook this test serves. Then:
//!
//! * every Grafana panel query returns data;
//! * Watchdog arrives at the dead-man receiver;
//! * killing a service (SIGKILL) makes ComponentDown fire in Prometheus and
//!   arrive, routed to the critical (PagerDuty) receiver, with its labels and
//!   runbook_url;
//! * restarting the service resolves it.
//!
//! Skipped (it passes, saying so) when `prometheus` or `alertmanager`
//! (`prometheus-alertmanager` in Debian) is not on PATH:
//! scripts/install-test-tools.sh installs both. The other binaries must be
//! built: `cargo test --workspace` builds them before any test runs.

mod common;

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use automation_testkit::try_http_get;
use automation_testkit::upstream::{FakeUpstream, Reply, Sse, answer};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::routing::post;
use common::services::{Guarded, Service, listen_port};
use common::{binary, repository, until};
use serde_json::{Value, json};

/// The services' heartbeat: ComponentDown follows a kill within a few.
const HEARTBEAT: &str = "500ms";
/// Grafana's interval macros, as the panel queries are sent.
const WINDOW: &str = "15s";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panels_show_data_and_alerts_are_routed() {
    let Some(prometheus) = on_path(&["prometheus"]) else {
        skip("`prometheus` is not on PATH");
        return;
    };
    let Some(alertmanager) = on_path(&["alertmanager", "prometheus-alertmanager"]) else {
        skip("neither `alertmanager` nor `prometheus-alertmanager` is on PATH");
        return;
    };
    let started = Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let monitoring = root.join("monitoring");

    // Dropped last (locals drop in reverse), so every child is gone first;
    // kept, with the logs, when the test fails.
    let work = Work::new();
    let logs = work.path().join("logs");
    std::fs::create_dir(&logs).unwrap();

    let repo = repository();
    // A plan that is not UTF-8: the audit's markdown error, for the error
    // panels.
    repo.write("BROKEN.md", b"- [x] done \xff\xfe\n");
    repo.commit_all("a plan that is not UTF-8");

    let upstream = FakeUpstream::start().await;
    upstream.set_default(explanation());
    upstream.set_models(json!({
        "object": "list",
        "data": [{ "id": "deepseek-chat", "object": "model", "owned_by": "deepseek" }],
    }));
    upstream.set_balance(json!({
        "is_available": true,
        "balance_infos": [{
            "currency": "USD",
            "total_balance": "42.00",
            "granted_balance": "0",
            "topped_up_balance": "42.00",
        }],
    }));
    let webhook = Webhook::start().await;

    // The platform.
    let heartbeat = ("HEARTBEAT_INTERVAL", HEARTBEAT.to_owned());
    let mut collector = Service::new(
        "collector",
        "e2e",
        &logs,
        &[heartbeat.clone(), ("SWEEP_INTERVAL", "100ms".into())],
    );
    let reporting = ("COLLECTOR_ENDPOINT", collector.endpoint());
    let mut gateway = Service::new(
        "api-gateway",
        "e2e",
        &logs,
        &[
            heartbeat.clone(),
            reporting.clone(),
            ("DEEPSEEK_BASE_URL", upstream.base_url()),
            ("DEEPSEEK_API_KEY", "sk-e2e".into()),
            ("BALANCE_INTERVAL", "1s".into()),
            ("UPSTREAM_CHECK_INTERVAL", "1s".into()),
        ],
    );
    let mut watcher = Service::new(
        "test-watcher",
        "e2e",
        &logs,
        &[
            heartbeat.clone(),
            reporting.clone(),
            ("WATCH_ROOT", repo.path().display().to_string()),
            ("RUN_ON_START", "true".into()),
            ("TEST_COMMAND", "sh run-tests.sh".into()),
            ("GATEWAY_ENDPOINT", gateway.endpoint()),
        ],
    );
    let mut audit = Service::new(
        "audit-agent",
        "e2e",
        &logs,
        &[
            heartbeat,
            reporting,
            ("REPO_PATH", repo.path().display().to_string()),
            ("AUDIT_INTERVAL", "2s".into()),
            (
                "DATABASE_PATH",
                work.path().join("audit.db").display().to_string(),
            ),
        ],
    );
    for service in [&mut collector, &mut gateway, &mut watcher, &mut audit] {
        service.start();
    }

    // Prometheus and Alertmanager.
    let prom_port = listen_port();
    let am_port = listen_port();
    let prom_config =
        prometheus_overlay(&monitoring, work.path(), collector.http, prom_port, am_port);
    let am_config = alertmanager_overlay(&monitoring, work.path(), webhook.addr.port());
    let mut am = run_tool(
        &alertmanager,
        &am_config,
        ("--storage.path", &work.path().join("am")),
        am_port,
        &["--cluster.listen-address="],
        &logs,
    );
    // Alerts that fire before Prometheus has discovered Alertmanager (its
    // discovery reports at most every 5 s) are dropped and sent again only
    // after the resend delay (1 m by default): Watchdog, which fires from
    // the first evaluations, would arrive a minute late.
    let mut prom = run_tool(
        &prometheus,
        &prom_config,
        ("--storage.tsdb.path", &work.path().join("tsdb")),
        prom_port,
        &["--rules.alert.resend-delay=1s"],
        &logs,
    );
    let prom_addr: SocketAddr = ([127, 0, 0, 1], prom_port).into();
    let am_addr: SocketAddr = ([127, 0, 0, 1], am_port).into();
    let _ = until(
        "Prometheus and Alertmanager ready (GET /-/ready answering 200)",
        Duration::from_secs(60),
        async || {
            assert_running(&mut prom);
            assert_running(&mut am);
            let prom_ready = get(prom_addr, "/-/ready").await.map(|(status, _)| status);
            let am_ready = get(am_addr, "/-/ready").await.map(|(status, _)| status);
            let ready = prom_ready == Ok(200) && am_ready == Ok(200);
            (
                ready,
                (("prometheus", prom_ready), ("alertmanager", am_ready)),
            )
        },
    )
    .await;
    let api = Prometheus { addr: prom_addr };
    let mut services = [&mut collector, &mut gateway, &mut watcher, &mut audit];

    let _ = until(
        "Prometheus scraping the collector (up{job=\"collector\"} == 1)",
        Duration::from_secs(60),
        async || {
            assert_running(&mut prom);
            assert_all_running(&mut services);
            let result = api.query(r#"up{job="collector"}"#).await;
            let ok = result
                .as_ref()
                .is_ok_and(|r| r.iter().any(|s| s["value"][1] == "1"));
            (ok, result)
        },
    )
    .await;
    let _ = until(
        "all four components up (automation_component_up == 1 for 4 series)",
        Duration::from_secs(60),
        async || {
            assert_all_running(&mut services);
            let result = api.query("automation_component_up == 1").await;
            let ok = result.as_ref().is_ok_and(|r| r.len() >= 4);
            (ok, result)
        },
    )
    .await;

    // The watcher explains its failed run once, at start; once that call
    // is over (whatever its outcome) the fake's FIFO script is ours alone.
    let _ = until(
        "the test-watcher's explanation call counted (test_watcher_api_calls_total)",
        Duration::from_secs(60),
        async || {
            let result = api.query("sum(test_watcher_api_calls_total) > 0").await;
            (result.as_ref().is_ok_and(|r| !r.is_empty()), result)
        },
    )
    .await;

    // Some gateway traffic, through the real client: two answers, then the
    // upstream's 402 (no balance left).
    for (prompt, reply) in [
        ("Why does parser::empty fail?", None),
        ("And now?", None),
        ("When we are out of money?", Some(out_of_money())),
    ] {
        if let Some(reply) = reply {
            upstream.push(reply);
        }
        let status = chat(&gateway.endpoint(), prompt, &logs).await;
        println!(
            "monitoring: [{:.1?}] automationctl chat {prompt:?}: {status}",
            started.elapsed()
        );
    }

    // Every panel query returns data.
    let panels = panel_queries(&monitoring.join("grafana").join("dashboards"));
    assert!(
        !panels.is_empty(),
        "expected panel queries in monitoring/grafana/dashboards/*.json, found none"
    );
    until(
        "every dashboard panel returning data (these did not)",
        Duration::from_secs(90),
        async || {
            let mut missing = Vec::new();
            for panel in &panels {
                let mut seen = Vec::new();
                let mut any = false;
                for expr in &panel.exprs {
                    match api.query(&concrete(expr, WINDOW)).await {
                        Ok(result) if !result.is_empty() => any = true,
                        Ok(_) => seen.push(format!("no data for {expr}")),
                        Err(e) => seen.push(format!("{expr}: {e}")),
                    }
                    if any {
                        break;
                    }
                }
                if !any {
                    missing.push(format!(
                        "{} / {}: {}",
                        panel.board,
                        panel.title,
                        seen.join(" | ")
                    ));
                }
            }
            if !missing.is_empty() {
                // A round is ~100 queries: every 2 s is often enough.
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            (missing.is_empty(), Lines(missing))
        },
    )
    .await;
    println!(
        "monitoring: [{:.1?}] ok: all {} panels show data",
        started.elapsed(),
        panels.len()
    );

    until(
        "Watchdog at the dead-man receiver",
        Duration::from_secs(60),
        async || {
            let found = webhook.notified(
                0,
                &Filter {
                    alertname: Some("Watchdog"),
                    ..Filter::default()
                },
            );
            let ok = found.iter().any(|(receiver, _)| receiver.contains("dead"));
            (ok, webhook.received_summary())
        },
    )
    .await;
    println!(
        "monitoring: [{:.1?}] ok: Watchdog arrives at the dead-man receiver",
        started.elapsed()
    );

    // Down: SIGKILL says no goodbye. The components were down while they
    // started, so only what arrives from now on counts.
    let killed = webhook.count();
    audit.kill();
    let _ = until(
        "ComponentDown{component=\"audit-agent\"} firing in Prometheus (GET /api/v1/alerts)",
        Duration::from_secs(60),
        async || {
            assert_running(&mut prom);
            let alerts = api.alerts().await;
            let firing = alerts.as_ref().is_ok_and(|alerts| {
                alerts.iter().any(|a| {
                    a["labels"]["alertname"] == "ComponentDown"
                        && a["labels"]["component"] == "audit-agent"
                        && a["state"] == "firing"
                })
            });
            (firing, alerts)
        },
    )
    .await;
    println!(
        "monitoring: [{:.1?}] ok: ComponentDown fires in Prometheus",
        started.elapsed()
    );

    let down = Filter {
        alertname: Some("ComponentDown"),
        status: Some("firing"),
        component: Some("audit-agent"),
    };
    let arrived = until(
        "ComponentDown{component=\"audit-agent\"} firing at the webhook",
        Duration::from_secs(60),
        async || {
            assert_running(&mut am);
            let found = webhook.notified(killed, &down);
            (!found.is_empty(), (found, webhook.received_summary()))
        },
    )
    .await;
    let (receiver, alert) = &arrived.0[0];
    let mut problems = Vec::new();
    if alert["labels"]["severity"] != "critical" {
        problems.push(format!(
            "severity: expected \"critical\", saw {}",
            alert["labels"]["severity"]
        ));
    }
    if !receiver.contains("pagerduty") {
        problems.push(format!(
            "receiver: expected the PagerDuty receiver, saw {receiver:?}"
        ));
    }
    // runbook_url is '{{ $externalLabels.runbook_base }}<page>.md': the base
    // is the external label of the configuration Prometheus runs with
    // (prometheus.yml's, kept by the overlay).
    let runbook = alert["annotations"]["runbook_url"].as_str().unwrap_or("");
    match read_yaml(&prom_config)["global"]["external_labels"]["runbook_base"].as_str() {
        None | Some("") => problems.push(format!(
            "the Prometheus configuration {} has no external label runbook_base",
            prom_config.display()
        )),
        Some(base) if runbook != format!("{base}component-down.md") => problems.push(format!(
            "runbook_url: expected {:?}, saw {runbook:?}",
            format!("{base}component-down.md")
        )),
        Some(_) => {}
    }
    let page = root.join("docs/runbooks/component-down.md");
    if !page.is_file() {
        problems.push(format!("the runbook {} does not exist", page.display()));
    }
    assert!(
        problems.is_empty(),
        "ComponentDown as it arrived at {receiver:?}:\n  - {}\nthe alert: {alert:#}",
        problems.join("\n  - ")
    );
    println!(
        "monitoring: [{:.1?}] ok: ComponentDown arrives at {receiver} with severity, component and runbook_url",
        started.elapsed()
    );

    // Restarted: resolved.
    let restarted = webhook.count();
    audit.start();
    until(
        "ComponentDown{component=\"audit-agent\"} resolved at the webhook after the restart",
        Duration::from_secs(90),
        async || {
            assert_running(&mut am);
            assert_running(&mut prom);
            assert_all_running(&mut [&mut audit]);
            let found = webhook.notified(
                restarted,
                &Filter {
                    status: Some("resolved"),
                    ..down
                },
            );
            (!found.is_empty(), webhook.received_summary())
        },
    )
    .await;
    println!(
        "monitoring: [{:.1?}] ok: restarting the service resolves ComponentDown",
        started.elapsed()
    );
}

/// Prometheus or Alertmanager (`program`) with `config`, its storage flag
/// and folder, on loopback `port`, with `extra` flags; its output in
/// `<logs>/<program name>.log`.
fn run_tool(
    program: &Path,
    config: &Path,
    (storage_flag, storage): (&str, &Path),
    port: u16,
    extra: &[&str],
    logs: &Path,
) -> Guarded {
    let name = program.file_name().map_or_else(
        || "tool".to_owned(),
        |name| name.to_string_lossy().into_owned(),
    );
    Guarded::spawn(
        &name,
        Command::new(program)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("{storage_flag}={}", storage.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra),
        &logs.join(format!("{name}.log")),
    )
}

/// Says the test is skipped, past libtest's capture, so `cargo test` shows
/// it.
fn skip(why: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "monitoring: skipped: {why} (scripts/install-test-tools.sh installs prometheus and prometheus-alertmanager)"
    );
}

/// The first of `names` that is an executable file in a PATH folder.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| {
                p.metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    })
}

/// The temporary folder of the run (configurations, storage, logs), removed
/// at the end, kept (and named) when the test fails.
struct Work(Option<tempfile::TempDir>);

impl Work {
    fn new() -> Self {
        Self(Some(
            tempfile::Builder::new()
                .prefix("monitoring-e2e-")
                .tempdir()
                .unwrap(),
        ))
    }

    fn path(&self) -> &Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            let _ = writeln!(
                std::io::stderr(),
                "monitoring: the logs and configurations are kept in {}",
                dir.keep().display()
            );
        }
    }
}

/// Panics, with its log's end, when `process` has exited.
fn assert_running(process: &mut Guarded) {
    if let Some(status) = process.exited() {
        panic!(
            "expected {} (pid {}) to keep running; it exited ({status}); its log ends:\n{}",
            process.name(),
            process.id(),
            process.log_tail(30)
        );
    }
}

/// Panics, with its log's end, when a started service has exited.
fn assert_all_running(services: &mut [&mut Service]) {
    for service in services {
        if let Some(status) = service.exited() {
            panic!(
                "expected {} to keep running; it exited ({status}); its log ends:\n{}",
                service.name,
                service.log_tail(30)
            );
        }
    }
}

// --- the fake DeepSeek's answers ------------------------------------------------

/// A keep-alive, then a streamed answer with usage: 10 cache-hit and 20
/// cache-miss prompt tokens, 9 completion tokens.
fn explanation() -> Reply {
    let Reply::Stream(mut items) = answer("Because the parser drops empty input.", 10, 20, 9)
    else {
        unreachable!("answer() is a stream");
    };
    items.insert(0, Sse::KeepAlive);
    Reply::Stream(items)
}

/// DeepSeek's 402: no balance left.
fn out_of_money() -> Reply {
    Reply::Status {
        status: 402,
        retry_after: None,
        body: r#"{"error":{"message":"Insufficient Balance"}}"#.to_owned(),
    }
}

/// `automationctl chat <prompt>` against the gateway, for at most 30 s; how
/// it ended (its output goes to `<logs>/automationctl.log`).
async fn chat(gateway: &str, prompt: &str, logs: &Path) -> String {
    let mut process = Guarded::spawn(
        "automationctl",
        Command::new(binary("automationctl"))
            .env_remove("AUTOMATION_TOKEN")
            .arg(format!("--gateway={gateway}"))
            .args(["chat", prompt]),
        &logs.join("automationctl.log"),
    );
    until(
        &format!("automationctl chat {prompt:?} to end"),
        Duration::from_secs(30),
        async || {
            let status = process.exited();
            (status.is_some(), status)
        },
    )
    .await
    .map_or_else(|| "running".to_owned(), |s| s.to_string())
}

// --- HTTP: Prometheus' API --------------------------------------------------------

/// A GET with a 10 s bound: the status and body, or why there is none.
async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    tokio::time::timeout(Duration::from_secs(10), try_http_get(addr, path))
        .await
        .map_err(|_| format!("GET http://{addr}{path}: no answer within 10 s"))?
}

/// A GET whose answer is Prometheus API JSON with status "success": its
/// `data`.
async fn get_data(addr: SocketAddr, path: &str) -> Result<Value, String> {
    let (status, body) = get(addr, path).await?;
    let short = || body.chars().take(300).collect::<String>();
    if status != 200 {
        return Err(format!("GET {path}: HTTP {status}: {}", short()));
    }
    let value: Value =
        serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}: {}", short()))?;
    if value["status"] != "success" {
        return Err(format!("GET {path}: {}", short()));
    }
    Ok(value["data"].clone())
}

struct Prometheus {
    addr: SocketAddr,
}

impl Prometheus {
    /// The instant vector (or other result) of `expr`, evaluated now.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", expr)
            .finish();
        let data = get_data(self.addr, &format!("/api/v1/query?{query}")).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The alerts pending or firing.
    async fn alerts(&self) -> Result<Vec<Value>, String> {
        let data = get_data(self.addr, "/api/v1/alerts").await?;
        Ok(data["alerts"].as_array().cloned().unwrap_or_default())
    }
}

// --- the webhook every receiver posts to ------------------------------------------

/// Serves `POST /<receiver>` on loopback and keeps every notification.
struct Webhook {
    addr: SocketAddr,
    received: Received,
}

/// Every notification so far: the receiver (the URL path) and the body.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

#[derive(Clone, Copy, Default)]
struct Filter {
    alertname: Option<&'static str>,
    status: Option<&'static str>,
    component: Option<&'static str>,
}

impl Webhook {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let router = Router::new()
            .route("/{receiver}", post(receive))
            .with_state(received.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, received }
    }

    fn received(&self) -> Vec<(String, Value)> {
        self.received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// How many notifications have arrived so far.
    fn count(&self) -> usize {
        self.received().len()
    }

    /// The alerts that match `filter`, with their receiver, of the
    /// notifications received after the first `since`.
    fn notified(&self, since: usize, filter: &Filter) -> Vec<(String, Value)> {
        let mut found = Vec::new();
        for (receiver, body) in self.received().into_iter().skip(since) {
            for alert in body["alerts"].as_array().into_iter().flatten() {
                let labels = &alert["labels"];
                if filter.alertname.is_some_and(|n| labels["alertname"] != n)
                    || filter.component.is_some_and(|c| labels["component"] != c)
                    || filter.status.is_some_and(|s| alert["status"] != s)
                {
                    continue;
                }
                found.push((receiver.clone(), alert.clone()));
            }
        }
        found
    }

    /// What has arrived so far, one line per alert: receiver, status,
    /// alertname and component.
    fn received_summary(&self) -> Lines {
        let mut lines = Vec::new();
        for (receiver, body) in self.received() {
            for alert in body["alerts"].as_array().into_iter().flatten() {
                lines.push(format!(
                    "{receiver}: {} {} component={}",
                    alert["status"], alert["labels"]["alertname"], alert["labels"]["component"]
                ));
            }
        }
        if lines.is_empty() {
            lines.push("(no notification yet)".to_owned());
        }
        Lines(lines)
    }
}

async fn receive(
    State(received): State<Received>,
    UrlPath(receiver): UrlPath<String>,
    body: Bytes,
) {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    received
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((receiver, body));
}

/// Lines shown one per line in a failure message.
struct Lines(Vec<String>);

impl fmt::Debug for Lines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.0 {
            write!(f, "\n  - {line}")?;
        }
        Ok(())
    }
}

// --- overlays ------------------------------------------------------------------------

fn read_yaml(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// Written as JSON, which YAML readers (Prometheus', Alertmanager's) take.
fn write_yaml(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The `*.yml` files of `dir`, sorted.
fn yml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
}

/// monitoring/prometheus/ with every interval 1 s and every alert's `for:`
/// 2 s; the collector job scraping `collector_http`, the prometheus job
/// Prometheus itself on `prom_port`, alerts sent to `am_port`; the rules
/// copied (so changed) to `<work>/rules/`.
fn prometheus_overlay(
    monitoring: &Path,
    work: &Path,
    collector_http: u16,
    prom_port: u16,
    am_port: u16,
) -> PathBuf {
    let prometheus = monitoring.join("prometheus");
    let mut config = read_yaml(&prometheus.join("prometheus.yml"));
    for key in ["scrape_interval", "scrape_timeout", "evaluation_interval"] {
        config["global"][key] = "1s".into();
    }
    for job in config["scrape_configs"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        job["scrape_interval"] = "1s".into();
        let port = if job["job_name"] == "collector" {
            collector_http
        } else {
            prom_port
        };
        job["static_configs"] = json!([{ "targets": [format!("127.0.0.1:{port}")] }]);
        if let Some(job) = job.as_object_mut() {
            job.remove("scrape_timeout");
            job.remove("kubernetes_sd_configs");
        }
    }
    config["alerting"] = json!({ "alertmanagers": [{ "static_configs": [{ "targets": [format!("127.0.0.1:{am_port}")] }] }] });
    let rules_dir = work.join("rules");
    std::fs::create_dir(&rules_dir).unwrap();
    let rule_files = yml_files(&prometheus.join("rules"));
    assert!(
        !rule_files.is_empty(),
        "expected rule files in {}",
        prometheus.join("rules").display()
    );
    for path in rule_files {
        let mut rules = read_yaml(&path);
        for group in rules["groups"].as_array_mut().into_iter().flatten() {
            group["interval"] = "1s".into();
            for rule in group["rules"].as_array_mut().into_iter().flatten() {
                if rule.get("alert").is_some() && rule.get("for").is_some() {
                    rule["for"] = "2s".into();
                }
            }
        }
        write_yaml(&rules_dir.join(path.file_name().unwrap()), &rules);
    }
    config["rule_files"] = json!([rules_dir.join("*.yml").display().to_string()]);
    let out = work.join("prometheus.yml");
    write_yaml(&out, &config);
    out
}

/// monitoring/alertmanager/config.yml's routing tree with every receiver
/// a webhook to `http://127.0.0.1:<webhook_port>/<receiver>` (resolved
/// alerts too), group_wait and group_interval 1 s, repeat_interval 1 m, and
/// no secret files.
fn alertmanager_overlay(monitoring: &Path, work: &Path, webhook_port: u16) -> PathBuf {
    let mut config = read_yaml(&monitoring.join("alertmanager").join("config.yml"));
    config["global"] = json!({ "resolve_timeout": "5m" });
    for receiver in config["receivers"].as_array_mut().into_iter().flatten() {
        let name = receiver["name"].as_str().unwrap_or_default().to_owned();
        if let Some(receiver) = receiver.as_object_mut() {
            receiver.retain(|key, _| !key.ends_with("_configs"));
        }
        receiver["webhook_configs"] = json!([{
            "url": format!("http://127.0.0.1:{webhook_port}/{name}"),
            "send_resolved": true,
        }]);
    }
    fn quick(route: &mut Value, top: bool) {
        for (key, value) in [
            ("group_wait", "1s"),
            ("group_interval", "1s"),
            ("repeat_interval", "1m"),
        ] {
            if top || route.get(key).is_some() {
                route[key] = value.into();
            }
        }
        for child in route["routes"].as_array_mut().into_iter().flatten() {
            quick(child, false);
        }
    }
    quick(&mut config["route"], true);
    if let Some(config) = config.as_object_mut() {
        config.remove("templates");
    }
    let out = work.join("alertmanager.yml");
    write_yaml(&out, &config);
    out
}

// --- dashboards ------------------------------------------------------------------------

/// A dashboard panel with queries. A panel that breaks a figure down
/// (errors by kind) next to its total (with `or vector(0)`) shows data when
/// any of its queries has some.
struct Panel {
    board: String,
    title: String,
    exprs: Vec<String>,
}

/// Every panel with queries, rows' panels included, of the dashboards
/// (`*.json`) in `dir`.
fn panel_queries(dir: &Path) -> Vec<Panel> {
    fn walk(board: &str, panels: &Value, found: &mut Vec<Panel>) {
        for panel in panels.as_array().into_iter().flatten() {
            walk(board, &panel["panels"], found);
            let exprs: Vec<String> = panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["expr"].as_str())
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect();
            if !exprs.is_empty() {
                found.push(Panel {
                    board: board.to_owned(),
                    title: panel["title"].as_str().unwrap_or("?").to_owned(),
                    exprs,
                });
            }
        }
    }
    let mut boards: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    boards.sort();
    let mut found = Vec::new();
    for path in boards {
        let text = std::fs::read_to_string(&path).unwrap();
        let board: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
        let name = path.file_name().unwrap().to_string_lossy();
        walk(&name, &board["panels"], &mut found);
    }
    found
}

/// A panel expression as Prometheus takes it: Grafana's interval macros
/// become `window` (`$__range` 1h), template variables (`$var`, `${var}`,
/// `${var:format}`) match everything.
fn concrete(expr: &str, window: &str) -> String {
    let expr = expr
        .replace("$__rate_interval", window)
        .replace("$__interval", window)
        .replace("$__range", "1h");
    let chars: Vec<char> = expr.chars().collect();
    let at = |i: usize, test: fn(&char) -> bool| chars.get(i).is_some_and(test);
    let mut out = String::with_capacity(expr.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '$' {
            let mut j = i + 1;
            if at(j, |c| *c == '{') {
                j += 1;
            }
            if at(j, |c| c.is_ascii_alphabetic() || *c == '_') {
                j += 1;
                while at(j, |c| c.is_ascii_alphanumeric() || *c == '_') {
                    j += 1;
                }
                if at(j, |c| *c == ':') && at(j + 1, char::is_ascii_lowercase) {
                    j += 2;
                    while at(j, char::is_ascii_lowercase) {
                        j += 1;
                    }
                }
                if at(j, |c| *c == '}') {
                    j += 1;
                }
                out.push_str(".*");
                i = j;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

#[test]
fn concrete_expressions() {
    assert_eq!(
        concrete(
            r#"sum(rate(x{component=~"$component",i=~"${instance:regex}"}[$__rate_interval]))"#,
            "15s"
        ),
        r#"sum(rate(x{component=~".*",i=~".*"}[15s]))"#
    );
    assert_eq!(
        concrete("increase(y[$__range]) / $__interval", "1m"),
        "increase(y[1h]) / 1m"
    );
    assert_eq!(concrete("a{b=\"$\"} ${ $1", "1m"), "a{b=\"$\"} ${ $1");
    assert_eq!(concrete("$x:1 $y}", "1m"), ".*:1 .*");
}
