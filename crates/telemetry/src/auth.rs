//! Bearer-token authentication for gRPC servers.
//!
//! Tokens live in a file, one per line (blank lines and `#` comments are
//! skipped), the way a Kubernetes Secret mounts them. The file is re-read when
//! its modification time or size changes, checked at most once a second, so a
//! rotated secret takes effect without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tonic::Status;
use tonic::metadata::MetadataMap;

/// How often the token file's metadata is looked at, at most.
const RECHECK: Duration = Duration::from_secs(1);

/// A token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file could not be read.
    #[error("cannot read token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no token, which would lock every client out.
    #[error("token file {0} holds no token")]
    Empty(PathBuf),
}

#[derive(Debug)]
struct Loaded {
    stamp: Option<(SystemTime, u64)>,
    checked: Instant,
    tokens: Arc<Vec<String>>,
}

/// A file of accepted tokens, re-read when it changes.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

impl TokenFile {
    /// Reads the file; it must exist and hold at least one token.
    pub fn open(path: &Path) -> Result<Self, AuthError> {
        let tokens = read_tokens(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            loaded: Mutex::new(Loaded {
                stamp: stamp(path),
                checked: Instant::now(),
                tokens: Arc::new(tokens),
            }),
        })
    }

    /// The path the tokens come from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current tokens. A file that became unreadable or empty keeps the
    /// previous tokens (and says so in the log) rather than locking everyone out.
    pub fn tokens(&self) -> Arc<Vec<String>> {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if loaded.checked.elapsed() >= RECHECK {
            loaded.checked = Instant::now();
            let now = stamp(&self.path);
            if now != loaded.stamp {
                match read_tokens(&self.path) {
                    Ok(tokens) => {
                        tracing::info!(path = %self.path.display(), count = tokens.len(), "token file re-read");
                        loaded.tokens = Arc::new(tokens);
                        loaded.stamp = now;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "keeping the previous tokens");
                    }
                }
            }
        }
        Arc::clone(&loaded.tokens)
    }

    /// The first token, for clients that send one.
    pub fn first(&self) -> String {
        self.tokens().first().cloned().unwrap_or_default()
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read_tokens(path: &Path) -> Result<Vec<String>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if tokens.is_empty() {
        return Err(AuthError::Empty(path.to_path_buf()));
    }
    Ok(tokens)
}

/// Checks `authorization: Bearer <token>` on incoming requests; with no token
/// file configured, everyone gets in.
#[derive(Debug, Clone, Default)]
pub struct BearerAuth {
    tokens: Option<Arc<TokenFile>>,
}

impl BearerAuth {
    /// No authentication.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Accept the tokens in `path` (`AUTH_TOKEN_FILE`), or everyone when `None`.
    pub fn from_file(path: Option<&Path>) -> Result<Self, AuthError> {
        Ok(Self {
            tokens: path.map(TokenFile::open).transpose()?.map(Arc::new),
        })
    }

    /// Whether a token is required.
    pub fn enabled(&self) -> bool {
        self.tokens.is_some()
    }

    /// `Ok` when the metadata carries an accepted token (or auth is off),
    /// `UNAUTHENTICATED` saying what is wrong otherwise.
    #[allow(clippy::result_large_err)]
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(file) = &self.tokens else {
            return Ok(());
        };
        let Some(value) = metadata.get("authorization") else {
            return Err(Status::unauthenticated("missing bearer token"));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| Status::unauthenticated("authorization is not a bearer token"))?;
        let tokens = file.tokens();
        // Compare every token in full so the time taken says nothing about which matched.
        let mut accepted = false;
        for token in tokens.iter() {
            accepted |= constant_time_eq(token.as_bytes(), presented.as_bytes());
        }
        if accepted {
            Ok(())
        } else {
            Err(Status::unauthenticated("bearer token not accepted"))
        }
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        self.check(request.metadata())?;
        Ok(request)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", value.parse().unwrap());
        map
    }

    #[test]
    fn accepts_listed_tokens_and_refuses_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# clients\nalpha\n\n  beta  \n").unwrap();
        let auth = BearerAuth::from_file(Some(&path)).unwrap();
        assert!(auth.check(&metadata("Bearer alpha")).is_ok());
        assert!(auth.check(&metadata("Bearer beta")).is_ok());
        let refused = auth.check(&metadata("Bearer gamma")).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let missing = auth.check(&MetadataMap::new()).unwrap_err();
        assert_eq!(missing.message(), "missing bearer token");
    }

    #[test]
    fn rereads_the_file_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "old\n").unwrap();
        let auth = BearerAuth::from_file(Some(&path)).unwrap();
        assert!(auth.check(&metadata("Bearer old")).is_ok());
        std::fs::write(&path, "new-token\n").unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        assert!(auth.check(&metadata("Bearer new-token")).is_ok());
        assert!(auth.check(&metadata("Bearer old")).is_err());
    }

    #[test]
    fn an_empty_file_is_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "\n# nothing\n").unwrap();
        let error = BearerAuth::from_file(Some(&path)).unwrap_err();
        assert!(error.to_string().contains("holds no token"), "{error}");
    }

    #[test]
    fn disabled_lets_everyone_in() {
        assert!(BearerAuth::disabled().check(&MetadataMap::new()).is_ok());
    }
}
