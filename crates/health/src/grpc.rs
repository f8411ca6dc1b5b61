//! `grpc.health.v1`: `""` and `"readiness"` follow readiness, `"liveness"` is always up.

use std::pin::pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Waker};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::task::coop::unconstrained;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::{HealthReporter, HealthService};

use crate::checker::HealthChecker;

/// The whole server, as Kubernetes' gRPC probe asks by default.
const SERVER: &str = "";
const READINESS: &str = "readiness";
const LIVENESS: &str = "liveness";

/// The statuses tonic-health serves, and whether they follow readiness yet.
pub(crate) struct GrpcStatus {
    reporter: HealthReporter,
    /// Readiness as published at build time, if that could be done at once.
    published: Option<bool>,
    /// The task that forwards readiness to `reporter`, once there is one.
    forwarder: Mutex<Option<JoinHandle<()>>>,
}

impl GrpcStatus {
    /// A reporter that already tells the truth: tonic-health starts `""` as
    /// `SERVING`, which would let traffic in before startup is done.
    pub(crate) fn new(ready: bool) -> Self {
        let reporter = HealthReporter::new();
        let published = publish_at_once(&reporter, ready).then_some(ready);
        Self {
            reporter,
            published,
            forwarder: Mutex::new(None),
        }
    }
}

impl HealthChecker {
    /// The `grpc.health.v1` service, to add to the service's tonic server.
    ///
    /// `""` and `"readiness"` answer `SERVING` only while ready;
    /// `"liveness"` answers `SERVING` always, during shutdown too.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime: the first call spawns the task that carries
    /// readiness changes to the gRPC statuses as they happen (and spawns it
    /// again if the runtime it ran on is gone).
    pub fn grpc_service(&self) -> HealthServer<impl Health> {
        let inner = self.inner();
        let grpc = inner.grpc();
        let mut forwarder = grpc
            .forwarder
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if forwarder.as_ref().is_none_or(JoinHandle::is_finished) {
            // What a former forwarder published is unknown: publish everything again.
            let published = forwarder.is_none().then_some(grpc.published).flatten();
            *forwarder = Some(tokio::spawn(forward(
                grpc.reporter.clone(),
                published,
                inner.subscribe_ready(),
            )));
        }
        HealthServer::new(HealthService::from_health_reporter(grpc.reporter.clone()))
    }
}

/// Publishes every readiness change; ends when the checker is gone.
async fn forward(
    reporter: HealthReporter,
    mut published: Option<bool>,
    mut ready: watch::Receiver<bool>,
) {
    loop {
        let now = *ready.borrow_and_update();
        if published != Some(now) {
            publish(&reporter, now, published.is_none()).await;
            published = Some(now);
        }
        if ready.changed().await.is_err() {
            return;
        }
    }
}

async fn publish(reporter: &HealthReporter, ready: bool, with_liveness: bool) {
    let status = if ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status(SERVER, status).await;
    reporter.set_service_status(READINESS, status).await;
    if with_liveness {
        reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
    }
}

/// Publishes without a runtime (`build()` has none), so the statuses are
/// right before the first request. tonic-health's setters only take its
/// lock, which nobody else holds on a reporter just made, so one poll ends
/// them; `unconstrained` stops Tokio's co-operative budget from turning that
/// poll into `Pending` when `build()` runs inside a task. Returns whether it
/// is done; if not, the forwarding task publishes everything when it starts.
fn publish_at_once(reporter: &HealthReporter, ready: bool) -> bool {
    let mut publishing = pin!(unconstrained(publish(reporter, ready, true)));
    publishing
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_ready()
}

#[cfg(test)]
mod tests {
    use tonic::Request;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus as Wire;

    use super::*;

    async fn status(service: &HealthService, name: &str) -> Wire {
        let request = Request::new(HealthCheckRequest {
            service: name.to_owned(),
        });
        let answer = service.check(request).await.expect("registered");
        Wire::try_from(answer.get_ref().status).expect("known status")
    }

    #[test]
    fn statuses_are_right_from_build_without_a_runtime_or_a_forwarder() {
        let checker = HealthChecker::builder("collector").build();
        let unready = HealthChecker::builder("collector")
            .required("storage", || async { Ok(()) })
            .build();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let ready =
                HealthService::from_health_reporter(checker.inner().grpc().reporter.clone());
            assert_eq!(status(&ready, SERVER).await, Wire::Serving);
            assert_eq!(status(&ready, READINESS).await, Wire::Serving);
            assert_eq!(status(&ready, LIVENESS).await, Wire::Serving);
            let unready =
                HealthService::from_health_reporter(unready.inner().grpc().reporter.clone());
            assert_eq!(status(&unready, SERVER).await, Wire::NotServing);
            assert_eq!(status(&unready, READINESS).await, Wire::NotServing);
            assert_eq!(status(&unready, LIVENESS).await, Wire::Serving);
        });
    }
}
