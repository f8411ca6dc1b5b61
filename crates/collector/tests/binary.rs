//! The `collector` binary as an operator runs it: configuration errors,
//! the printed catalog, readiness, and a graceful SIGTERM.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use automation_testkit::http_get;

const BIN: &str = env!("CARGO_BIN_EXE_collector");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_bad_configuration_prints_one_line_and_exits_64() {
    let out = Command::new(BIN)
        .env("MAX_BATCH_EVENTS", "many")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("many"), "{stderr}");

    let out = Command::new(BIN)
        .env("AUTH_TOKEN_FILE", "/nonexistent/tokens")
        .env("GRPC_LISTEN", "127.0.0.1:0")
        .env("HTTP_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tokens"));
}

#[test]
fn the_catalog_subcommand_prints_every_metric() {
    let out = Command::new(BIN).arg("catalog").output().unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let metrics = json["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), automation_collector::catalog::METRICS.len());
    let up = metrics
        .iter()
        .find(|m| m["name"] == "test_watcher_runs_total")
        .unwrap();
    assert_eq!(up["type"], "counter");
    assert_eq!(up["labels"][0]["name"], "result");
}

#[tokio::test]
async fn sigterm_turns_unready_then_exits_zero() {
    let (grpc, http) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .env("GRPC_LISTEN", format!("127.0.0.1:{grpc}"))
        .env("HTTP_LISTEN", format!("127.0.0.1:{http}"))
        .env("OTLP_GRPC_LISTEN", "127.0.0.1:0")
        .env("OTLP_HTTP_LISTEN", "127.0.0.1:0")
        .env("SHUTDOWN_DELAY", "1s")
        .env("INSTANCE", "sigterm-test")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let admin = format!("127.0.0.1:{http}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(admin).await.is_ok()
            && http_get(admin, "/ready").await.0 == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "collector never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // During the shutdown delay it still answers, unready.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ready, body) = http_get(admin, "/ready").await;
    assert_eq!(ready, 503, "{body}");
    assert!(body.contains("stopping"), "{body}");
    assert_eq!(http_get(admin, "/health").await.0, 200);

    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}
