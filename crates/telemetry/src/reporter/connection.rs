//! The gRPC channel to the collector and the bearer token it sends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use automation_proto::v1::collector_client::CollectorClient;
use automation_proto::v1::{EventBatch, PushResponse};
use tonic::transport::Channel;
use tonic::{Request, Status};
use tracing::Instrument;

use super::{ReporterConfig, ReporterError};
use crate::client::BearerToken;

/// One push attempt, owning everything it needs so the sender can hold it
/// across its other work.
pub(super) type Attempt = Pin<Box<dyn Future<Output = Result<PushResponse, Status>> + Send>>;

/// Cheap to clone: clones share the channel and the token.
#[derive(Clone)]
pub(super) struct Connection {
    client: CollectorClient<Channel>,
    authorization: Option<Arc<BearerToken>>,
    push_timeout: Duration,
}

impl Connection {
    /// Checks the endpoint and prepares a lazy channel: nothing is dialled
    /// until the first push, so a collector that is not up yet is no error.
    pub(super) fn new(config: &ReporterConfig) -> Result<Self, ReporterError> {
        let endpoint = crate::client::endpoint(
            &config.endpoint,
            config.tls_ca_file.as_deref(),
            config.connect_timeout,
        )?;
        let authorization = config
            .token_file
            .as_deref()
            .map(BearerToken::open)
            .transpose()?
            .map(Arc::new);
        Ok(Self {
            client: CollectorClient::new(endpoint.connect_lazy()),
            authorization,
            push_timeout: config.push_timeout,
        })
    }

    /// Starts pushing `batch`; the attempt gives up after the push timeout.
    pub(super) fn push(&self, batch: EventBatch) -> Attempt {
        let span = if crate::trace::enabled() {
            tracing::info_span!(
                "reporter.push",
                otel.kind = "client",
                events = batch.events.len(),
                otel.status_code = tracing::field::Empty,
                error = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        let mut request = Request::new(batch);
        request.set_timeout(self.push_timeout);
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.value());
        }
        span.in_scope(|| crate::trace::inject_metadata(request.metadata_mut()));
        let mut client = self.client.clone();
        let timeout = self.push_timeout;
        Box::pin(
            async move {
                let answer = match tokio::time::timeout(timeout, client.push(request)).await {
                    Ok(answer) => answer.map(tonic::Response::into_inner),
                    Err(_) => Err(Status::deadline_exceeded(format!(
                        "no answer within {} ms",
                        timeout.as_millis()
                    ))),
                };
                if let Err(status) = &answer {
                    let span = tracing::Span::current();
                    span.record("otel.status_code", "ERROR");
                    span.record("error", status.message());
                }
                answer
            }
            .instrument(span),
        )
    }
}
