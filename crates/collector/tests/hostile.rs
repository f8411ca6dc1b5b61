//! Reporters that lie: impossible numbers, label values that only differ in
//! escaping, endless new incarnations, instances and versions. Whatever they
//! send, the collector's memory stays bounded, live instances keep their
//! place, and `/metrics` says only true things.

use std::time::Duration;

use automation_collector::{Config, catalog};
use automation_proto::v1::{self, event::Payload};
use automation_testkit::TestCollector;

fn source(service: &str, instance: &str, incarnation: u64) -> v1::Source {
    v1::Source {
        service: service.into(),
        instance: instance.into(),
        version: "1.0.0".into(),
        incarnation,
    }
}

fn batch(source: v1::Source, sequence: u64, payloads: Vec<Payload>) -> v1::EventBatch {
    v1::EventBatch {
        source: Some(source),
        sequence,
        events: payloads
            .into_iter()
            .map(|payload| v1::Event {
                time: None,
                payload: Some(payload),
            })
            .collect(),
    }
}

fn heartbeat(interval: f64) -> Payload {
    Payload::Heartbeat(v1::Heartbeat {
        interval_seconds: interval,
        ..Default::default()
    })
}

fn config() -> Config {
    let mut config = Config::new("collector-test");
    config.sweep_interval = Duration::from_millis(50);
    config
}

#[tokio::test]
async fn impossible_numbers_are_rejected_with_a_reason_and_counters_never_go_back() {
    let collector = TestCollector::start(config()).await;
    let mut client = collector.client().await;
    let gw = || source("api-gateway", "gw", 1);
    let call = |output_tokens| {
        Payload::ApiCall(v1::ApiCall {
            model: "deepseek-chat".into(),
            status: v1::ApiStatus::Ok as i32,
            duration_seconds: 1.0,
            output_tokens,
            ..Default::default()
        })
    };
    client.push(batch(gw(), 1, vec![call(100)])).await.unwrap();

    let mut far_future = v1::Event {
        time: Some(prost_types::Timestamp {
            seconds: 1 << 62,
            nanos: 0,
        }),
        payload: Some(Payload::TestRun(v1::TestRun {
            result: v1::RunResult::Passed as i32,
            duration_seconds: 1.0,
            ..Default::default()
        })),
    };
    let hostile = vec![
        call(u64::MAX),
        Payload::Heartbeat(v1::Heartbeat {
            interval_seconds: 10.0,
            process: Some(v1::ProcessStats {
                cpu_seconds_total: 1e30,
                ..Default::default()
            }),
            ..Default::default()
        }),
        heartbeat(1e308),
        Payload::BridgeCall(v1::BridgeCall {
            duration_seconds: 1e300,
            ..Default::default()
        }),
    ];
    let mut hostile = batch(gw(), 2, hostile);
    far_future.time.as_mut().unwrap().seconds = 1 << 62;
    hostile.events.push(far_future);
    let answer = client.push(hostile).await.unwrap().into_inner();
    assert_eq!((answer.accepted, answer.rejected), (0, 5));

    let m = collector.metrics().await;
    let gw_labels = [("component", "api-gateway"), ("component_instance", "gw")];
    let output = [
        gw_labels[0],
        gw_labels[1],
        ("model", "deepseek-chat"),
        ("type", "output"),
    ];
    assert_eq!(m.value("deepseek_api_tokens_used_total", &output), 100.0);
    assert_eq!(
        m.value("automation_process_cpu_seconds_total", &gw_labels),
        0.0
    );
    let rejected = |reason| m.value("collector_events_rejected_total", &[("reason", reason)]);
    assert_eq!(rejected("value_too_large"), 3.0, "tokens, cpu, interval");
    assert_eq!(rejected("invalid_duration"), 1.0);
    assert_eq!(rejected("invalid_time"), 1.0);
    assert!(!m.has("test_watcher_last_run_timestamp_seconds", &[]));

    // The maxima are part of the printed catalog.
    let printed: serde_json::Value = serde_json::from_str(&catalog::to_json()).unwrap();
    let limits = printed["event_limits"].as_array().unwrap();
    assert!(
        limits
            .iter()
            .any(|l| l["max"] == catalog::limits::COUNT as f64)
    );
}

/// A real Prometheus (Debian package `prometheus`) scraping one target every 200 ms.
struct Prometheus {
    child: std::process::Child,
    web: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn scraping(target: std::net::SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 200ms\nscrape_configs:\n  - job_name: collector\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let web = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus is needed (Debian package prometheus; `make test` installs it)");
        Self {
            child,
            web,
            _dir: dir,
        }
    }

    /// The result vector of an instant query (empty while Prometheus starts).
    async fn query(&self, query: &str) -> Vec<serde_json::Value> {
        let Ok(mut stream) = tokio::net::TcpStream::connect(self.web).await else {
            return Vec::new();
        };
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let request = format!(
            "GET /api/v1/query?query={query} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.web
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        let _ = stream.read_to_string(&mut raw).await;
        let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn label_values_that_differ_only_in_escaping_stay_apart_in_a_real_prometheus() {
    let collector = TestCollector::start(config()).await;
    let mut client = collector.client().await;
    let names = [
        r#"pod"1"#,
        r#"pod\"1"#,
        r"pod\1",
        r"pod\\1",
        "pod\\n1",
        "pod\n1",
        r"pod1\",
    ];
    for (i, name) in names.iter().enumerate() {
        client
            .push(batch(
                source("test-watcher", name, i as u64 + 1),
                1,
                vec![heartbeat(60.0)],
            ))
            .await
            .unwrap();
    }
    // The collector's own reading of its exposition keeps them apart.
    let m = collector.metrics().await;
    for name in names {
        assert_eq!(
            m.value(
                "automation_component_up",
                &[("component", "test-watcher"), ("component_instance", name)]
            ),
            1.0,
            "{name:?}"
        );
    }

    let prometheus = Prometheus::scraping(collector.http);
    let seen = automation_testkit::within("Prometheus to scrape every instance", async {
        loop {
            let result = prometheus.query("automation_component_up").await;
            let mut instances: Vec<String> = result
                .iter()
                .filter(|s| s["metric"]["component"] == "test-watcher")
                .filter_map(|s| {
                    s["metric"]["component_instance"]
                        .as_str()
                        .map(str::to_owned)
                })
                .collect();
            if !instances.is_empty() {
                instances.sort();
                return instances;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let mut expected: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    expected.sort();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_churn_of_versions_keeps_only_the_current_one() {
    let mut config = config();
    config.limits.max_series_per_metric = 20;
    let collector = TestCollector::start(config).await;
    let mut client = collector.client().await;
    for n in 1..=60u64 {
        let mut source = source("audit-agent", "aa", 1);
        source.version = format!("1.0.{n}");
        client
            .push(batch(source, n, vec![heartbeat(10.0)]))
            .await
            .unwrap();
    }
    let m = collector.metrics().await;
    let versions: Vec<&str> = m
        .matching("automation_component_info", &[("component_instance", "aa")])
        .map(|(labels, _)| labels["version"].as_str())
        .collect();
    assert_eq!(versions, vec!["1.0.60"]);
    assert!(
        !m.has(
            "collector_series_limited_total",
            &[("metric", "automation_component_info")]
        ),
        "old versions took no room"
    );
    assert!(collector.handles.state.series_count(catalog::id::INFO) <= 2);
}

#[tokio::test]
async fn new_incarnations_keep_only_the_newest_replay_windows() {
    let mut config = config();
    config.limits.max_incarnations = 4;
    let collector = TestCollector::start(config).await;
    let mut client = collector.client().await;
    let mut first_batch_of = async |incarnation| {
        client
            .push(batch(
                source("test-watcher", "tw", incarnation),
                1,
                vec![heartbeat(10.0)],
            ))
            .await
            .unwrap()
            .into_inner()
    };
    for incarnation in 1..=100u64 {
        let answer = first_batch_of(incarnation).await;
        assert!(!answer.duplicate, "a new incarnation is never a duplicate");
    }
    let m = collector.metrics().await;
    assert_eq!(
        m.value("collector_replay_windows_evicted_total", &[]),
        96.0,
        "100 incarnations, 4 kept"
    );
    // The newest still recognise their replays.
    for incarnation in 97..=100u64 {
        let replay = first_batch_of(incarnation).await;
        assert!(replay.duplicate, "incarnation {incarnation}");
    }
}

#[tokio::test]
async fn junk_instances_make_way_for_live_ones() {
    let mut config = config();
    config.limits.max_instances = 5;
    config.limits.max_silence = Duration::from_millis(500);
    let collector = TestCollector::start(config).await;
    let mut client = collector.client().await;
    // Junk fills the budget, each claiming an hour between heartbeats.
    for n in 0..5u64 {
        client
            .push(batch(
                source("test-watcher", &format!("junk-{n}"), 1),
                1,
                vec![heartbeat(3_600.0)],
            ))
            .await
            .unwrap();
    }
    let live = |sequence| {
        batch(
            source("test-watcher", "pod-live", 9),
            sequence,
            vec![heartbeat(0.2)],
        )
    };
    client.push(live(1)).await.unwrap();
    let m = collector.metrics().await;
    assert!(
        !m.has(
            "automation_component_up",
            &[("component_instance", "pod-live")]
        ),
        "folded into other while every junk instance counts as up"
    );

    // The junk goes quiet: down after the longest silence allowed, however
    // long its interval, and the live pod, still pushing, gets its own series.
    let m = automation_testkit::within("the live pod's own series", async {
        let mut sequence = 2;
        loop {
            client.push(live(sequence)).await.unwrap();
            sequence += 1;
            let m = collector.metrics().await;
            let own = [("component_instance", "pod-live")];
            if m.get("automation_component_up", &own) == Some(1.0) {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(m.value("collector_instances_evicted_total", &[]) >= 1.0);
    // Every junk instance is down (or gone), not up for its claimed hour.
    collector
        .eventually("the junk to be down", |m| {
            m.matching("automation_component_up", &[("component", "test-watcher")])
                .filter(|(labels, _)| labels["component_instance"].starts_with("junk-"))
                .all(|(_, up)| up == 0.0)
        })
        .await;
}

#[tokio::test]
async fn concurrent_scrapes_share_one_render() {
    let collector = TestCollector::start(config()).await;
    let mut client = collector.client().await;
    for n in 0..400u64 {
        let payloads = (0..20)
            .map(|k| {
                Payload::Error(v1::ComponentError {
                    kind: format!("kind-{k}"),
                    ..Default::default()
                })
            })
            .chain([heartbeat(60.0)])
            .collect();
        client
            .push(batch(
                source("test-watcher", &format!("tw-{n}"), 1),
                1,
                payloads,
            ))
            .await
            .unwrap();
    }
    let state = &collector.handles.state;
    let before = state.renders();
    let scrapes = (0..8).map(|_| automation_testkit::http_get(collector.http, "/metrics"));
    let answers = futures_join_all(scrapes.collect()).await;
    let renders = state.renders() - before;
    let mut texts = std::collections::HashSet::new();
    for (status, body) in &answers {
        assert_eq!(*status, 200);
        assert!(body.contains("\"tw-399\""));
        texts.insert(body.as_str());
    }
    assert!(renders <= 3, "8 concurrent scrapes took {renders} renders");
    assert!(
        texts.len() as u64 <= renders,
        "each scrape got the text of a render it waited for"
    );

    // A later scrape renders afresh.
    client
        .push(batch(
            source("test-watcher", "late", 1),
            1,
            vec![heartbeat(60.0)],
        ))
        .await
        .unwrap();
    assert!(collector.metrics_text().await.contains("\"late\""));
}

/// Runs the futures at once and collects their outputs in order.
async fn futures_join_all<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for task in tasks {
        outputs.push(task.await.unwrap());
    }
    outputs
}

#[tokio::test]
async fn a_token_bound_to_a_component_cannot_push_as_another() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "# token, component, instance pattern\nwatcher-token test-watcher tw-*\ngateway-token api-gateway\n",
    )
    .unwrap();
    let mut config = config();
    config.service.auth = automation_telemetry::auth::BearerAuth::from_file(Some(&tokens)).unwrap();
    let collector = TestCollector::start(config).await;
    let mut client = collector.client().await;
    let push = |token: &str, source: v1::Source, payload: Payload| {
        let mut request = tonic::Request::new(batch(source, 1, vec![payload]));
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    let goodbye = || Payload::Goodbye(v1::Goodbye::default());

    // Its own identity: applied.
    client
        .push(push(
            "watcher-token",
            source("test-watcher", "tw-1", 1),
            heartbeat(10.0),
        ))
        .await
        .unwrap();
    client
        .push(push(
            "gateway-token",
            source("api-gateway", "gw-1", 1),
            heartbeat(10.0),
        ))
        .await
        .unwrap();
    // A fake goodbye for the gateway, a fake instance, a fake component.
    for (token, source) in [
        ("watcher-token", source("api-gateway", "gw-1", 2)),
        ("watcher-token", source("test-watcher", "audit-1", 2)),
        ("gateway-token", source("test-watcher", "tw-1", 2)),
    ] {
        let status = client
            .push(push(token, source, goodbye()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("may push as"), "{status:?}");
        assert!(!status.message().contains(token), "the token never shows");
    }
    let m = collector.metrics().await;
    assert_eq!(
        m.value("collector_pushes_total", &[("code", "permission_denied")]),
        3.0
    );
    for instance in ["tw-1", "gw-1"] {
        assert_eq!(
            m.value(
                "automation_component_up",
                &[("component_instance", instance)]
            ),
            1.0,
            "{instance} was not stopped by someone else's goodbye"
        );
    }
    assert!(!m.has(
        "automation_component_up",
        &[("component_instance", "audit-1")]
    ));
}
