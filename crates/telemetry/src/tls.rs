//! TLS for gRPC listeners (`TLS_CERT_FILE`, `TLS_KEY_FILE`) and clients
//! (`TLS_CA_FILE`, system roots when unset).

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A TLS file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {what} {path}: {source}")]
pub struct TlsError {
    what: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Server TLS from a PEM certificate chain and its PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerTlsConfig, TlsError> {
    let identity = Identity::from_pem(read("certificate", cert)?, read("private key", key)?);
    Ok(ServerTlsConfig::new().identity(identity))
}

/// Client TLS trusting `ca` (PEM), or the system roots when `None`.
pub fn client_config(ca: Option<&Path>) -> Result<ClientTlsConfig, TlsError> {
    Ok(match ca {
        Some(path) => ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("CA certificate", path)?)),
        None => ClientTlsConfig::new().with_native_roots(),
    })
}
