//! `automation.v1.TestWatcher` over gRPC.

use std::pin::Pin;

use automation_proto::v1::test_watcher_server::TestWatcher;
use automation_proto::v1::{
    GetStatusRequest, RunSummary, TriggerRunRequest, TriggerRunResponse, WatchRunsRequest,
    WatcherStatus,
};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::engine::EngineHandle;

/// The gRPC service over the engine.
#[derive(Debug, Clone)]
pub struct TestWatcherService {
    engine: EngineHandle,
    stopping: CancellationToken,
}

impl TestWatcherService {
    /// The service for `engine`; `WatchRuns` streams end when `stopping`
    /// is cancelled, so they do not hold up a graceful shutdown.
    pub fn new(engine: EngineHandle, stopping: CancellationToken) -> Self {
        Self { engine, stopping }
    }
}

type RunStream = Pin<Box<dyn Stream<Item = Result<RunSummary, Status>> + Send>>;

#[tonic::async_trait]
impl TestWatcher for TestWatcherService {
    async fn get_status(
        &self,
        _: Request<GetStatusRequest>,
    ) -> Result<Response<WatcherStatus>, Status> {
        Ok(Response::new(self.engine.status()))
    }

    async fn trigger_run(
        &self,
        request: Request<TriggerRunRequest>,
    ) -> Result<Response<TriggerRunResponse>, Status> {
        let reason = request.into_inner().reason;
        if reason.len() > 64 {
            return Err(Status::invalid_argument("reason is longer than 64 bytes"));
        }
        self.engine
            .trigger(&reason)
            .await
            .map(Response::new)
            .ok_or_else(|| Status::unavailable("the test-watcher is shutting down"))
    }

    type WatchRunsStream = RunStream;

    async fn watch_runs(
        &self,
        request: Request<WatchRunsRequest>,
    ) -> Result<Response<RunStream>, Status> {
        // Subscribe before reading the last run, so none falls in between.
        let live = BroadcastStream::new(self.engine.subscribe()).filter_map(|item| match item {
            Ok(summary) => Some(Ok(summary)),
            // A slow reader misses runs rather than stalling the engine.
            Err(BroadcastStreamRecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "a WatchRuns reader fell behind");
                None
            }
        });
        let last = if request.into_inner().include_last {
            self.engine.status().last_run
        } else {
            None
        };
        let stream = futures_util::StreamExt::take_until(
            tokio_stream::iter(last.map(Ok)).chain(live),
            self.stopping.clone().cancelled_owned(),
        );
        Ok(Response::new(Box::pin(stream)))
    }
}
