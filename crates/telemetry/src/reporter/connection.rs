//! The gRPC channel to the collector, its TLS, and the bearer token.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use automation_proto::v1::collector_client::CollectorClient;
use automation_proto::v1::{EventBatch, PushResponse};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use super::{ReporterConfig, ReporterError};
use crate::auth::TokenFile;

/// One push attempt, owning everything it needs so the sender can hold it
/// across its other work.
pub(super) type Attempt = Pin<Box<dyn Future<Output = Result<PushResponse, Status>> + Send>>;

pub(super) struct Connection {
    client: CollectorClient<Channel>,
    authorization: Option<Authorization>,
    push_timeout: Duration,
}

impl Connection {
    /// Checks the endpoint and prepares a lazy channel: nothing is dialled
    /// until the first push, so a collector that is not up yet is no error.
    pub(super) fn new(config: &ReporterConfig) -> Result<Self, ReporterError> {
        let invalid = |reason: String| ReporterError::Endpoint {
            endpoint: config.endpoint.clone(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|error| invalid(error_chain(&error)))?;
        let uri = endpoint.uri();
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(invalid("the scheme must be http:// or https://".to_owned())),
        };
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("no host".to_owned()));
        }
        if tls {
            let tls_config = crate::tls::client_config(config.tls_ca_file.as_deref())?;
            endpoint = endpoint
                .tls_config(tls_config)
                .map_err(|source| ReporterError::Tls {
                    endpoint: config.endpoint.clone(),
                    source,
                })?;
        }
        let endpoint = endpoint
            .connect_timeout(config.connect_timeout)
            .tcp_keepalive(Some(Duration::from_secs(30)))
            // A collector that vanished without closing the connection (a
            // node lost) is noticed by the pings instead of by a push timeout.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        let authorization = config
            .token_file
            .as_deref()
            .map(Authorization::open)
            .transpose()?;
        Ok(Self {
            client: CollectorClient::new(endpoint.connect_lazy()),
            authorization,
            push_timeout: config.push_timeout,
        })
    }

    /// Starts pushing `batch`; the attempt gives up after the push timeout.
    pub(super) fn push(&mut self, batch: EventBatch) -> Attempt {
        let mut request = Request::new(batch);
        request.set_timeout(self.push_timeout);
        if let Some(authorization) = &mut self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.value());
        }
        let mut client = self.client.clone();
        let timeout = self.push_timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, client.push(request)).await {
                Ok(answer) => answer.map(tonic::Response::into_inner),
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                ))),
            }
        })
    }
}

/// The `authorization` header, rebuilt only when the token file changed.
struct Authorization {
    file: TokenFile,
    tokens: Arc<Vec<String>>,
    value: MetadataValue<Ascii>,
}

impl Authorization {
    fn open(path: &std::path::Path) -> Result<Self, ReporterError> {
        let file = TokenFile::open(path)?;
        let tokens = file.tokens();
        let value = bearer(&tokens).ok_or_else(|| ReporterError::TokenValue(path.to_path_buf()))?;
        Ok(Self {
            file,
            tokens,
            value,
        })
    }

    fn value(&mut self) -> MetadataValue<Ascii> {
        let tokens = self.file.tokens();
        if !Arc::ptr_eq(&tokens, &self.tokens) {
            match bearer(&tokens) {
                Some(value) => self.value = value,
                None => tracing::warn!(
                    path = %self.file.path().display(),
                    "the new token cannot be sent as a header; keeping the previous one"
                ),
            }
            self.tokens = tokens;
        }
        self.value.clone()
    }
}

/// `Bearer <first token>`, marked sensitive so it never shows in debug output.
fn bearer(tokens: &[String]) -> Option<MetadataValue<Ascii>> {
    let token = tokens.first()?;
    let mut value = MetadataValue::try_from(format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// An error and its causes on one line: tonic's own messages ("transport
/// error") say little without the cause ("Connection refused").
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    append_causes(&mut text, error.source());
    text
}

/// Appends `cause` and its own causes to `text`, skipping any already said.
pub(super) fn append_causes(text: &mut String, mut cause: Option<&dyn std::error::Error>) {
    while let Some(error) = cause {
        let said = error.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = error.source();
    }
}
