//! Component checks: required, dependency, hanging, panicking.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use automation_health::{ComponentStatus, HealthChecker};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{NEVER, PROMPTLY, TestApp, report_becomes, within};

#[tokio::test]
async fn a_failing_required_check_makes_the_service_unready_with_its_error() {
    within(async {
        let writable = Arc::new(AtomicBool::new(false));
        let database = Arc::clone(&writable);
        let checker = HealthChecker::builder("audit-agent")
            .interval(NEVER)
            .required("database", move || {
                let writable = database.load(Ordering::SeqCst);
                async move {
                    if writable {
                        Ok(())
                    } else {
                        Err("database is read-only".to_owned())
                    }
                }
            })
            .build();
        let app = TestApp::spawn(&checker).await;
        checker.check_now().await;
        checker.check_now().await;

        let ready = app.get("/ready").await;
        assert_eq!(ready.code, 503, "{ready:?}");
        assert_eq!(ready.body["status"], "not_ready");
        let database = &ready.body["components"]["database"];
        assert_eq!(database["importance"], "required");
        assert_eq!(database["status"], "failing");
        assert_eq!(database["last_error"], "database is read-only");
        assert_eq!(database["consecutive_failures"], 2);
        assert!(database["latency_ms"].is_f64(), "{database}");
        let checked_at = database["checked_at"].as_str().expect("checked_at");
        assert!(
            checked_at.len() == 24
                && checked_at.ends_with('Z')
                && checked_at.as_bytes()[10] == b'T',
            "RFC 3339 UTC: {checked_at}"
        );
        assert_eq!(app.grpc_status("").await, ServingStatus::NotServing);

        writable.store(true, Ordering::SeqCst);
        checker.check_now().await;
        let ready = app.get("/ready").await;
        assert_eq!(ready.code, 200, "{ready:?}");
        assert_eq!(ready.body["components"]["database"]["status"], "ok");
        assert_eq!(
            ready.body["components"]["database"]["consecutive_failures"],
            0
        );
        app.grpc_becomes("", ServingStatus::Serving, PROMPTLY).await;
    })
    .await;
}

#[tokio::test]
async fn a_failing_dependency_degrades_the_service_but_keeps_it_ready() {
    within(async {
        let checker = HealthChecker::builder("api-gateway")
            .interval(NEVER)
            .required("api key", || async { Ok(()) })
            .dependency("collector", || async {
                Err("connection refused".to_owned())
            })
            .build();
        let app = TestApp::spawn(&checker).await;
        checker.check_now().await;

        let ready = app.get("/ready").await;
        assert_eq!(ready.code, 200, "{ready:?}");
        assert_eq!(ready.body["status"], "degraded");
        assert_eq!(ready.body["ready"], true);
        let collector = &ready.body["components"]["collector"];
        assert_eq!(collector["importance"], "dependency");
        assert_eq!(collector["status"], "degraded");
        assert_eq!(collector["last_error"], "connection refused");
        assert_eq!(ready.body["components"]["api key"]["status"], "ok");
        app.grpc_becomes("", ServingStatus::Serving, PROMPTLY).await;
        assert_eq!(app.grpc_status("readiness").await, ServingStatus::Serving);
    })
    .await;
}

#[tokio::test]
async fn a_hanging_check_times_out_while_ready_answers_at_once() {
    within(async {
        const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
        const ANSWER_AT_ONCE: Duration = Duration::from_millis(300);
        let checker = HealthChecker::builder("api-gateway")
            .interval(Duration::from_millis(50))
            .timeout(CHECK_TIMEOUT)
            .required("upstream", std::future::pending)
            .dependency("collector", || async { Ok(()) })
            .build();
        let app = TestApp::spawn(&checker).await;
        let shutdown = CancellationToken::new();
        let checks = checker.spawn(shutdown.clone());

        // The quick check is in while the hanging one still runs.
        report_becomes(&checker, PROMPTLY, |report| {
            report.components["collector"].status == ComponentStatus::Ok
        })
        .await;
        let asked = Instant::now();
        let ready = app.get("/ready").await;
        assert!(
            asked.elapsed() < ANSWER_AT_ONCE,
            "/ready took {:?}",
            asked.elapsed()
        );
        assert_eq!(ready.code, 503, "{ready:?}");
        assert_eq!(ready.body["components"]["upstream"]["status"], "unknown");

        report_becomes(&checker, CHECK_TIMEOUT * 3, |report| {
            report.components["upstream"].status == ComponentStatus::Failing
        })
        .await;
        // The next round hangs again by now; the probe still does not wait on it.
        let asked = Instant::now();
        let ready = app.get("/ready").await;
        assert!(
            asked.elapsed() < ANSWER_AT_ONCE,
            "/ready took {:?}",
            asked.elapsed()
        );
        assert_eq!(ready.code, 503, "{ready:?}");
        let upstream = &ready.body["components"]["upstream"];
        assert_eq!(upstream["status"], "failing");
        assert_eq!(upstream["last_error"], "timed out after 1s");
        assert!(
            upstream["latency_ms"].as_f64().expect("latency") >= 1000.0,
            "{upstream}"
        );

        shutdown.cancel();
        checks.await.expect("checks stop");
    })
    .await;
}

#[tokio::test]
async fn a_panicking_check_fails_without_killing_the_checker() {
    within(async {
        let checker = HealthChecker::builder("test-watcher")
            .interval(NEVER)
            .required("watch", || async { panic!("inotify limit reached") })
            .build();
        let app = TestApp::spawn(&checker).await;
        checker.check_now().await;
        checker.check_now().await;

        let ready = app.get("/ready").await;
        assert_eq!(ready.code, 503, "{ready:?}");
        assert_eq!(ready.body["components"]["watch"]["status"], "failing");
        assert_eq!(
            ready.body["components"]["watch"]["last_error"],
            "check panicked"
        );
        assert_eq!(ready.body["components"]["watch"]["consecutive_failures"], 2);
    })
    .await;
}
