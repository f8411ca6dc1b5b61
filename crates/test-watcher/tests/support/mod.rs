//! What the test-watcher's service tests share: a watcher started on free
//! ports, ready, with a client and its stream of finished runs.

use automation_proto::v1::test_watcher_client::TestWatcherClient;
use automation_proto::v1::{self, RunSummary};
use automation_test_watcher::{Config, Error, Handles, start};
use automation_testkit::service::{self, Service};
use automation_testkit::within;
use tonic::Streaming;
use tonic::transport::Channel;

/// A started watcher: the service, a client, and the runs as they finish.
pub struct Served {
    pub service: Service<Handles, Error>,
    pub client: TestWatcherClient<Channel>,
    pub runs: Streaming<RunSummary>,
}

/// Starts a watcher with `config` and waits until it is ready.
pub async fn serve(config: Config) -> Served {
    let service = service::start(|listeners, shutdown| start(config, listeners, shutdown))
        .await
        .expect("the test-watcher starts");
    within("ready", service.handles.health.wait_ready()).await;
    let mut client = TestWatcherClient::connect(service.endpoint())
        .await
        .expect("connect to the test-watcher");
    let runs = client
        .watch_runs(v1::WatchRunsRequest {
            include_last: false,
        })
        .await
        .expect("WatchRuns")
        .into_inner();
    Served {
        service,
        client,
        runs,
    }
}
