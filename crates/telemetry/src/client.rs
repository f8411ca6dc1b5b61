//! What every gRPC client of the platform shares: the endpoint checked and
//! prepared (scheme, host, TLS with `TLS_CA_FILE`, keep-alives), the bearer
//! token read from a file and re-read when it changes, and errors written
//! with their causes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Endpoint;

use crate::auth::{AuthError, Entry, RECHECK, read_tokens};
use crate::secret::SecretFile;
use crate::tls::TlsError;

/// A client configuration that cannot be used. The services wrap it in
/// their own errors, which name the variable concerned.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not an `http://` or `https://` URL with a host.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token file cannot be used.
    #[error(transparent)]
    Token(#[from] AuthError),
    /// The token is not a valid header value (control characters, non-ASCII).
    #[error("the token in {0} cannot be sent as an authorization header")]
    TokenValue(PathBuf),
    /// The CA certificate file cannot be read.
    #[error(transparent)]
    TlsFile(#[from] TlsError),
    /// The TLS configuration was refused (a CA file that is not PEM, for one).
    #[error("invalid TLS configuration for {endpoint}: {source}")]
    Tls {
        /// The endpoint the configuration was for.
        endpoint: String,
        /// Why it was refused.
        source: tonic::transport::Error,
    },
}

/// Checks `url` and prepares an endpoint for a lazy channel: TLS (with the
/// CA of `tls_ca_file`, else the system roots) for `https://`, the connect
/// timeout, and keep-alives, so a peer that vanished without closing the
/// connection (a node lost) is noticed by the pings.
pub fn endpoint(
    url: &str,
    tls_ca_file: Option<&Path>,
    connect_timeout: Duration,
) -> Result<Endpoint, ClientError> {
    let invalid = |reason: String| ClientError::Endpoint {
        endpoint: url.to_owned(),
        reason,
    };
    let mut endpoint =
        Endpoint::from_shared(url.to_owned()).map_err(|error| invalid(error_chain(&error)))?;
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
        endpoint = endpoint
            .tls_config(crate::tls::client_config(tls_ca_file)?)
            .map_err(|source| ClientError::Tls {
                endpoint: url.to_owned(),
                source,
            })?;
    }
    Ok(endpoint
        .connect_timeout(connect_timeout)
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10)))
}

/// The `authorization` header from a token file: `Bearer <first token>`,
/// made again only when the file changed; a new token that cannot be a
/// header value leaves the previous one in use.
#[derive(Debug)]
pub struct BearerToken {
    file: SecretFile<MetadataValue<Ascii>>,
}

impl ClientError {
    /// Which of a client's settings is wrong, named as the service calls
    /// them: its `endpoint` variable (the URL, TLS), its `token` variable,
    /// or `TLS_CA_FILE`.
    pub fn setting(&self, endpoint: &'static str, token: &'static str) -> &'static str {
        match self {
            Self::Endpoint { .. } | Self::Tls { .. } => endpoint,
            Self::Token(_) | Self::TokenValue(_) => token,
            Self::TlsFile(_) => "TLS_CA_FILE",
        }
    }
}

impl BearerToken {
    /// Reads `path`; its first token must be usable as a header value.
    pub fn open(path: &Path) -> Result<Self, ClientError> {
        let file = SecretFile::new(
            path.to_path_buf(),
            |path| read_bearer(path).map_err(|e| e.to_string()),
            RECHECK,
        );
        file.load(read_bearer)?;
        Ok(Self { file })
    }

    /// The header value for the file's current first token.
    pub fn value(&self) -> MetadataValue<Ascii> {
        self.file
            .last_good()
            .map_or_else(|| MetadataValue::from_static(""), |value| (*value).clone())
    }
}

/// The header a token file's first token makes.
fn read_bearer(path: &Path) -> Result<MetadataValue<Ascii>, ClientError> {
    let tokens = read_tokens(path)?;
    bearer(&tokens).ok_or_else(|| ClientError::TokenValue(path.to_path_buf()))
}

/// `Bearer <first token>`, marked sensitive so it never shows in debug output.
fn bearer(tokens: &[Entry]) -> Option<MetadataValue<Ascii>> {
    let token = &tokens.first()?.token;
    let mut value = MetadataValue::try_from(format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// An error and its causes on one line: tonic's own messages ("transport
/// error") say little without the cause ("Connection refused").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    append_causes(&mut text, error.source());
    text
}

/// Appends `cause` and its own causes to `text`, skipping any already said.
pub fn append_causes(text: &mut String, mut cause: Option<&dyn std::error::Error>) {
    while let Some(error) = cause {
        let said = error.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = error.source();
    }
}
