//! `automationctl status`: readiness of every service, a stopped one named
//! with its address, TLS with `--ca-file`.

use automation_collector::Config;
use automation_telemetry::auth::BearerAuth;
use automation_testkit::TestCollector;
use automation_testkit::upstream::FakeUpstream;

use crate::services;
use crate::support::{Repo, automationctl, closed_port};

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_service_is_named_with_its_address_and_fails_the_status() {
    let collector = TestCollector::start(Config::new("cli-status")).await;
    within_ready(&collector).await;
    let (watcher, audit, gateway) = (closed_port(), closed_port(), closed_port());
    let (watcher_url, audit_url, gateway_url) = (
        format!("http://{watcher}"),
        format!("http://{audit}"),
        format!("http://{gateway}"),
    );
    let args = [
        "status",
        "--collector",
        &collector.endpoint(),
        "--watcher",
        &watcher_url,
        "--audit",
        &audit_url,
        "--gateway",
        &gateway_url,
    ];
    let out = automationctl(&args).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["SERVICE", "ENDPOINT", "LIVENESS", "READINESS"]
    );
    let row = |service: &str| -> Vec<String> {
        let line = lines
            .iter()
            .find(|l| l.starts_with(service))
            .unwrap_or_else(|| panic!("no row for {service}: {out:?}"));
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        row("collector"),
        ["collector", &collector.endpoint(), "SERVING", "SERVING"]
    );
    assert_eq!(
        row("test-watcher"),
        [
            "test-watcher",
            &watcher_url,
            "connection refused",
            "connection refused"
        ]
    );
    for (service, addr) in [
        ("test-watcher", watcher),
        ("audit-agent", audit),
        ("api-gateway", gateway),
    ] {
        let expected = format!("automationctl: {service} at {addr}: connection refused");
        assert!(
            out.stderr.lines().any(|l| l == expected),
            "{expected:?} in {:?}",
            out.stderr
        );
    }
    assert!(!out.stderr.contains("collector"), "{:?}", out.stderr);

    let mut json_args = args.to_vec();
    json_args.extend(["--output", "json"]);
    let out = automationctl(&json_args).await;
    assert_eq!(out.code, Some(1));
    let value = out.json();
    assert_eq!(value["ready"], false);
    assert_eq!(value["services"][0]["service"], "collector");
    assert_eq!(value["services"][0]["readiness"], "SERVING");
    assert_eq!(value["services"][0]["ready"], true);
    assert_eq!(value["services"][3]["service"], "api-gateway");
    assert_eq!(value["services"][3]["readiness"], "connection refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn all_four_ready_exits_zero() {
    let collector = TestCollector::start(Config::new("cli-status")).await;
    within_ready(&collector).await;
    let watch_root = tempfile::tempdir().unwrap();
    let watcher = services::test_watcher(watch_root.path(), "true").await;
    let repo = Repo::new();
    let db = tempfile::tempdir().unwrap();
    let audit = services::audit_agent(
        repo.path(),
        &db.path().join("audit.db"),
        BearerAuth::disabled(),
    )
    .await;
    let upstream = FakeUpstream::start().await;
    let gateway = services::gateway(&upstream).await;

    let out = automationctl(&[
        "--collector",
        &collector.endpoint(),
        "--watcher",
        &watcher.endpoint,
        "--audit",
        &audit.endpoint,
        "--gateway",
        &gateway.endpoint,
        "status",
    ])
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let serving = out
        .stdout
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().skip(2).eq(["SERVING", "SERVING"]))
        .count();
    assert_eq!(serving, 4, "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn https_endpoints_are_trusted_through_the_ca_file() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let mut config = Config::new("cli-tls");
    config.service.tls =
        Some(automation_telemetry::tls::server_config(&cert_path, &key_path).unwrap());
    let collector = TestCollector::start(config).await;
    within_ready(&collector).await;
    let url = format!("https://localhost:{}", collector.grpc.port());
    let ca = cert_path.to_str().unwrap();

    let json = |out: &crate::support::Outcome| out.json()["services"][0].clone();
    let trusted =
        automationctl(&["status", "-o", "json", "--collector", &url, "--ca-file", ca]).await;
    assert_eq!(json(&trusted)["readiness"], "SERVING", "{trusted:?}");

    // Without the CA the system roots do not know the certificate.
    let untrusted = automationctl(&["status", "-o", "json", "--collector", &url]).await;
    let readiness = json(&untrusted)["readiness"].as_str().unwrap().to_owned();
    assert!(readiness.starts_with("TLS: "), "{untrusted:?}");
    assert!(
        untrusted.stderr.contains(&format!(
            "automationctl: collector at localhost:{}: TLS: ",
            collector.grpc.port()
        )),
        "{untrusted:?}"
    );
}

/// The collector's readiness is set just after it starts serving.
async fn within_ready(collector: &TestCollector) {
    automation_testkit::within("collector ready", collector.handles.health.wait_ready()).await;
}
