//! Dialling a service: plain text or TLS (`--ca-file`, else the system
//! roots), the connect time limit, and the bearer token on every call.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::cli::Global;
use crate::endpoint::GrpcUrl;
use crate::error::{Failure, describe_status, describe_transport};

/// A channel that carries the bearer token.
pub type AuthChannel = InterceptedService<Channel, Auth>;

/// Adds `authorization: Bearer …` to every request, when a token is set,
/// and the trace context of the command's span.
#[derive(Debug, Clone, Default)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        automation_telemetry::trace::inject_metadata(request.metadata_mut());
        Ok(request)
    }
}

/// One service: its name (for messages) and endpoint.
#[derive(Debug, Clone)]
pub struct Target {
    /// `collector`, `test-watcher`, `audit-agent` or `api-gateway`.
    pub service: &'static str,
    /// Where it listens.
    pub url: GrpcUrl,
}

impl Target {
    /// The collector.
    pub fn collector(global: &Global) -> Self {
        Self::new("collector", &global.collector)
    }

    /// The test-watcher.
    pub fn watcher(global: &Global) -> Self {
        Self::new("test-watcher", &global.watcher)
    }

    /// The audit-agent.
    pub fn audit(global: &Global) -> Self {
        Self::new("audit-agent", &global.audit)
    }

    /// The api-gateway.
    pub fn gateway(global: &Global) -> Self {
        Self::new("api-gateway", &global.gateway)
    }

    fn new(service: &'static str, url: &GrpcUrl) -> Self {
        Self {
            service,
            url: url.clone(),
        }
    }

    /// `what` went wrong with this service.
    pub fn fail(&self, what: impl Into<String>) -> Failure {
        Failure::Service {
            service: self.service.to_owned(),
            address: self.url.address().to_owned(),
            what: what.into(),
        }
    }

    /// The service answered `status` (or the call never reached it).
    pub fn status(&self, status: &Status) -> Failure {
        self.fail(describe_status(status))
    }
}

/// Dials services with the global flags' time limit, TLS and token.
#[derive(Debug, Clone)]
pub struct Connector {
    timeout: Duration,
    ca_file: Option<PathBuf>,
    auth: Auth,
}

impl Connector {
    /// From the global flags.
    pub fn new(global: &Global) -> Self {
        Self {
            timeout: global.timeout,
            ca_file: global.ca_file.clone(),
            auth: Auth(global.token.as_ref().map(|t| t.header().clone())),
        }
    }

    /// The time limit of one call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Connects to `target` within the time limit.
    pub async fn connect(&self, target: &Target) -> Result<AuthChannel, Failure> {
        let mut endpoint = Endpoint::from_shared(target.url.url().to_owned())
            .map_err(|e| target.fail(describe_transport(&e)))?
            .connect_timeout(self.timeout)
            .tcp_nodelay(true);
        if target.url.tls() {
            endpoint = endpoint
                .tls_config(self.tls()?)
                .map_err(|e| target.fail(format!("TLS: {}", describe_transport(&e))))?;
        }
        let channel = tokio::time::timeout(self.timeout, endpoint.connect())
            .await
            .map_err(|_| target.fail(self.timed_out("connecting")))?
            .map_err(|e| target.fail(describe_transport(&e)))?;
        Ok(InterceptedService::new(channel, self.auth.clone()))
    }

    /// Runs one unary call within the time limit.
    pub async fn call<T>(
        &self,
        target: &Target,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(target.status(&status)),
            Err(_) => Err(target.fail(self.timed_out("waiting for the answer"))),
        }
    }

    /// A request carrying the time limit to the server too (`grpc-timeout`).
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    fn timed_out(&self, doing: &str) -> String {
        format!(
            "timed out after {} {doing} (--timeout)",
            humantime::format_duration(self.timeout)
        )
    }

    fn tls(&self) -> Result<ClientTlsConfig, Failure> {
        Ok(match &self.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    Failure::Local(format!("cannot read --ca-file {}: {e}", path.display()))
                })?;
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
            }
            None => ClientTlsConfig::new().with_native_roots(),
        })
    }
}
