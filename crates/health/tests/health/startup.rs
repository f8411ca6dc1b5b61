//! Readiness waits for startup: guards and required checks not yet run.

use automation_health::HealthChecker;
use serde_json::json;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{NEVER, PROMPTLY, TestApp, next_status, within};

#[tokio::test]
async fn not_ready_while_a_startup_guard_lives_and_ready_once_it_is_dropped() {
    within(async {
        let checker = HealthChecker::builder("collector")
            .interval(NEVER)
            .required("storage", || async { Ok(()) })
            .build();
        let startup = checker.startup_guard("listeners bound");
        let app = TestApp::spawn(&checker).await;
        checker.check_now().await;

        let ready = app.get("/ready").await;
        assert_eq!(ready.code, 503, "{ready:?}");
        assert_eq!(ready.body["status"], "not_ready");
        assert_eq!(ready.body["ready"], false);
        assert_eq!(ready.body["starting"], json!(["listeners bound"]));
        assert_eq!(ready.body["components"]["storage"]["status"], "ok");
        let live = app.get("/health").await;
        assert_eq!(live.code, 200);
        assert_eq!(live.body, json!({"status": "ok", "service": "collector"}));
        assert_eq!(app.grpc_status("").await, ServingStatus::NotServing);
        assert_eq!(
            app.grpc_status("readiness").await,
            ServingStatus::NotServing
        );
        assert_eq!(app.grpc_status("liveness").await, ServingStatus::Serving);

        let mut readiness = app.grpc_watch("readiness").await;
        assert_eq!(
            next_status(&mut readiness, PROMPTLY).await,
            ServingStatus::NotServing
        );
        drop(startup);
        assert_eq!(
            next_status(&mut readiness, PROMPTLY).await,
            ServingStatus::Serving
        );
        app.grpc_becomes("", ServingStatus::Serving, PROMPTLY).await;
        assert_eq!(app.grpc_status("liveness").await, ServingStatus::Serving);

        let ready = app.get("/ready").await;
        assert_eq!(ready.code, 200, "{ready:?}");
        assert_eq!(ready.body["status"], "ready");
        assert_eq!(ready.body["service"], "collector");
        assert_eq!(ready.body["starting"], json!([]));
        assert!(checker.is_ready());
    })
    .await;
}

#[tokio::test]
async fn the_server_status_is_not_serving_before_the_first_check() {
    within(async {
        // tonic-health starts "" as SERVING; a probe must not see that.
        let checker = HealthChecker::builder("audit-agent")
            .interval(NEVER)
            .required("database", || async { Ok(()) })
            .build();
        let app = TestApp::spawn(&checker).await;

        assert_eq!(app.grpc_status("").await, ServingStatus::NotServing);
        assert_eq!(
            app.grpc_status("readiness").await,
            ServingStatus::NotServing
        );
        let ready = app.get("/ready").await;
        assert_eq!(ready.code, 503);
        assert_eq!(ready.body["components"]["database"]["status"], "unknown");
        assert_eq!(
            ready.body["components"]["database"]["checked_at"],
            json!(null)
        );

        checker.check_now().await;
        app.grpc_becomes("", ServingStatus::Serving, PROMPTLY).await;
        assert_eq!(app.get("/ready").await.code, 200);
    })
    .await;
}

#[tokio::test]
async fn every_startup_step_is_waited_for() {
    within(async {
        let checker = HealthChecker::builder("test-watcher")
            .interval(NEVER)
            .build();
        let watch = checker.startup_guard("watch established");
        let tools = checker.startup_guard("toolchain found");
        let app = TestApp::spawn(&checker).await;

        drop(watch);
        let ready = app.get("/ready").await;
        assert_eq!(ready.code, 503);
        assert_eq!(ready.body["starting"], json!(["toolchain found"]));

        drop(tools);
        tokio::time::timeout(PROMPTLY, checker.wait_ready())
            .await
            .expect("ready once every guard is dropped");
        assert_eq!(app.get("/ready").await.code, 200);
    })
    .await;
}
