//! Shutdown: readiness goes and stays gone, liveness stays.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use automation_health::HealthChecker;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{NEVER, PROMPTLY, TestApp, next_status, within};

#[tokio::test]
async fn begin_shutdown_stops_readiness_but_not_liveness() {
    within(async {
        let checker = HealthChecker::builder("collector")
            .interval(NEVER)
            .required("storage", || async { Ok(()) })
            .build();
        let app = TestApp::spawn(&checker).await;
        checker.check_now().await;
        app.grpc_becomes("", ServingStatus::Serving, PROMPTLY).await;
        let mut server = app.grpc_watch("").await;
        assert_eq!(
            next_status(&mut server, PROMPTLY).await,
            ServingStatus::Serving
        );

        checker.begin_shutdown();

        assert_eq!(
            next_status(&mut server, PROMPTLY).await,
            ServingStatus::NotServing
        );
        assert_eq!(
            app.grpc_status("readiness").await,
            ServingStatus::NotServing
        );
        assert_eq!(app.grpc_status("liveness").await, ServingStatus::Serving);
        let ready = app.get("/ready").await;
        assert_eq!(ready.code, 503, "{ready:?}");
        assert_eq!(ready.body["status"], "stopping");
        assert_eq!(ready.body["ready"], false);
        let live = app.get("/health").await;
        assert_eq!(live.code, 200);
        assert_eq!(live.body, json!({"status": "ok", "service": "collector"}));

        // Passing checks do not bring a stopping service back.
        checker.check_now().await;
        assert_eq!(app.get("/ready").await.body["status"], "stopping");
        assert_eq!(app.grpc_status("").await, ServingStatus::NotServing);
    })
    .await;
}

#[tokio::test]
async fn spawned_checks_run_at_once_and_stop_with_the_token() {
    within(async {
        let rounds = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&rounds);
        let checker = HealthChecker::builder("audit-agent")
            .interval(NEVER)
            .required("repository", move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            })
            .build();
        let app = TestApp::spawn(&checker).await;
        let shutdown = CancellationToken::new();
        let checks = checker.spawn(shutdown.clone());

        tokio::time::timeout(PROMPTLY, checker.wait_ready())
            .await
            .expect("the first round runs at once, not after the interval");
        assert_eq!(rounds.load(Ordering::SeqCst), 1);
        assert_eq!(app.get("/ready").await.code, 200);

        shutdown.cancel();
        tokio::time::timeout(PROMPTLY, checks)
            .await
            .expect("checks stop when the token is cancelled")
            .expect("checks did not panic");
        let ready = app.get("/ready").await;
        assert_eq!(ready.code, 503);
        assert_eq!(ready.body["status"], "stopping");
        assert_eq!(app.get("/health").await.code, 200);
    })
    .await;
}
