//! TLS on the collector's gRPC listener, with a certificate made by the test:
//! a client trusting it gets in, a plain-text client does not, and the
//! reporter delivers over `https://` with `TLS_CA_FILE`.

use std::sync::Arc;
use std::time::Duration;

use automation_collector::Config;
use automation_proto::v1::{self, collector_client::CollectorClient, event::Payload};
use automation_telemetry::reporter::{Reporter, ReporterConfig};
use automation_testkit::TestCollector;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

fn heartbeat_batch() -> v1::EventBatch {
    v1::EventBatch {
        source: Some(v1::Source {
            service: "audit-agent".into(),
            instance: "tls-client".into(),
            version: "1".into(),
            incarnation: 9,
        }),
        sequence: 1,
        events: vec![v1::Event {
            time: None,
            payload: Some(Payload::Heartbeat(v1::Heartbeat {
                interval_seconds: 10.0,
                ..Default::default()
            })),
        }],
    }
}

#[tokio::test]
async fn tls_clients_get_in_plain_text_does_not_and_the_reporter_delivers() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path, ca_path) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("ca.crt"),
    );
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    std::fs::write(&ca_path, cert.cert.pem()).unwrap();

    let mut config = Config::new("tls-collector");
    config.service.tls =
        Some(automation_telemetry::tls::server_config(&cert_path, &key_path).unwrap());
    let collector = TestCollector::start(config).await;
    let port = collector.grpc.port();

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(cert.cert.pem()))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let answer = CollectorClient::new(channel)
        .push(heartbeat_batch())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.accepted, 1);

    let plain = tokio::time::timeout(Duration::from_secs(5), async {
        let mut client = CollectorClient::connect(format!("http://127.0.0.1:{port}")).await?;
        client.push(heartbeat_batch()).await.map_err(Into::into)
    })
    .await;
    assert!(
        !matches!(
            plain,
            Ok(Ok::<_, Box<dyn std::error::Error + Send + Sync>>(_))
        ),
        "a plain-text push must not be accepted"
    );

    let mut reporter_config = ReporterConfig::new(
        format!("https://localhost:{port}"),
        "test-watcher",
        "tls-reporter",
        "1",
    );
    reporter_config.tls_ca_file = Some(ca_path);
    let reporter = Reporter::start(reporter_config, Arc::new(())).unwrap();
    reporter.report(Payload::FileChanges(v1::FileChanges {
        files_processed: 3,
        ..Default::default()
    }));
    let labels = [("component_instance", "tls-reporter")];
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let m = collector.metrics().await;
            if m.get("test_watcher_files_processed_total", &labels) == Some(3.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the reporter delivers over TLS");
    reporter.shutdown("done", Duration::from_secs(5)).await;
}
