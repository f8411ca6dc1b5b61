//! `GET /health` (liveness) and `GET /ready` (readiness) for the admin port.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::checker::HealthChecker;
use crate::report::HealthReport;

/// The body of `GET /health`.
#[derive(Serialize)]
struct Liveness {
    status: &'static str,
    service: String,
}

impl HealthChecker {
    /// `GET /health` and `GET /ready`, ready to merge into a service's admin router.
    ///
    /// `/health` answers 200 `{"status":"ok","service":…}` as long as the
    /// process does; `/ready` answers the cached [`HealthReport`] with 200
    /// when ready and 503 otherwise. Neither waits on a check.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/health", get(liveness))
            .route("/ready", get(readiness))
            .with_state(self.clone())
    }
}

async fn liveness(State(checker): State<HealthChecker>) -> Json<Liveness> {
    Json(Liveness {
        status: "ok",
        service: checker.inner().service().to_owned(),
    })
}

async fn readiness(State(checker): State<HealthChecker>) -> (StatusCode, Json<HealthReport>) {
    let report = checker.report();
    let code = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(report))
}
