//! Bearer-token authentication for gRPC servers.
//!
//! Tokens live in a file, one per line (blank lines and `#` comments are
//! skipped), the way a Kubernetes Secret mounts them: a [`SecretFile`] looked
//! at once a second, so a rotated secret takes effect without a restart.
//!
//! A line may bind its token to an identity: `<token> <component>
//! [<instance pattern>]`, the pattern with `*` wildcards. The collector lets
//! such a token push only as that component (and an instance the pattern
//! matches); a token alone on its line may push as anyone. Other servers
//! accept the token and ignore the binding.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::secret::SecretFile;

/// How often a token file's metadata is looked at, at most.
pub(crate) const RECHECK: Duration = Duration::from_secs(1);

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
    /// A line is not `<token> [<component> [<instance pattern>]]`.
    #[error("token file {path}, line {line}: {problem}")]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong (never the token itself).
        problem: String,
    },
}

/// Who a token may act as.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The component (`source.service`) it may push as.
    pub component: String,
    /// The pattern its instance names must match, when it has one.
    pub instance: Option<String>,
    matcher: Option<globset::GlobMatcher>,
}

impl Binding {
    /// Whether a push from `component`/`instance` is allowed.
    pub fn allows(&self, component: &str, instance: &str) -> bool {
        self.component == component
            && self
                .matcher
                .as_ref()
                .is_none_or(|pattern| pattern.is_match(instance))
    }
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.instance {
            Some(pattern) => write!(f, "{} instances {pattern}", self.component),
            None => write!(f, "{}", self.component),
        }
    }
}

/// One accepted token and what it is bound to.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The token.
    pub token: String,
    /// Its identity, when the line gives one.
    pub binding: Option<Binding>,
}

/// A file of accepted tokens, re-read when it changes. `Debug` never shows
/// a token.
#[derive(Debug)]
pub struct TokenFile {
    file: SecretFile<Vec<Entry>>,
}

impl TokenFile {
    /// Reads the file; it must exist and hold at least one token.
    pub fn open(path: &Path) -> Result<Self, AuthError> {
        let file = SecretFile::new(
            path.to_path_buf(),
            |path| read_tokens(path).map_err(|e| e.to_string()),
            RECHECK,
        );
        file.load(read_tokens)?;
        Ok(Self { file })
    }

    /// The path the tokens come from.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The current tokens. A file that became unreadable or empty keeps the
    /// previous tokens (the log says so, once) rather than locking everyone
    /// out.
    pub fn tokens(&self) -> Arc<Vec<Entry>> {
        self.file.last_good().unwrap_or_default()
    }

    /// The first token, for clients that send one.
    pub fn first(&self) -> String {
        self.tokens()
            .first()
            .map(|entry| entry.token.clone())
            .unwrap_or_default()
    }
}

pub(crate) fn read_tokens(path: &Path) -> Result<Vec<Entry>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut tokens = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let problem = |problem: String| AuthError::Line {
            path: path.to_path_buf(),
            line: number + 1,
            problem,
        };
        let mut fields = line.split_whitespace();
        let token = fields.next().unwrap_or_default().to_owned();
        let component = fields.next();
        let instance = fields.next();
        if fields.next().is_some() {
            return Err(problem(
                "more than three fields (write: token [component [instance pattern]])".into(),
            ));
        }
        let binding = match component {
            None => None,
            Some(component) => {
                let matcher = instance
                    .map(|pattern| {
                        globset::GlobBuilder::new(pattern)
                            .literal_separator(false)
                            .build()
                            .map(|glob| glob.compile_matcher())
                            .map_err(|e| problem(format!("instance pattern {pattern:?}: {e}")))
                    })
                    .transpose()?;
                Some(Binding {
                    component: component.to_owned(),
                    instance: instance.map(str::to_owned),
                    matcher,
                })
            }
        };
        if tokens.iter().any(|entry: &Entry| entry.token == token) {
            return Err(problem(
                "the token of an earlier line again (one line per token, so its binding is one)"
                    .into(),
            ));
        }
        tokens.push(Entry { token, binding });
    }
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
        self.identify(metadata).map(drop)
    }

    /// Like [`BearerAuth::check`], and the identity the token is bound to,
    /// if any.
    #[allow(clippy::result_large_err)]
    pub fn identify(&self, metadata: &MetadataMap) -> Result<Option<Binding>, Status> {
        let Some(file) = &self.tokens else {
            return Ok(None);
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
        let mut accepted = None;
        for entry in tokens.iter() {
            if constant_time_eq(entry.token.as_bytes(), presented.as_bytes()) {
                accepted = Some(entry);
            }
        }
        match accepted {
            Some(entry) => Ok(entry.binding.clone()),
            None => Err(Status::unauthenticated("bearer token not accepted")),
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
        // Emptied or removed: the tokens read last still count.
        std::fs::write(&path, "\n").unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        assert!(auth.check(&metadata("Bearer new-token")).is_ok());
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        assert!(auth.check(&metadata("Bearer new-token")).is_ok());
        let shown = format!("{auth:?}");
        assert!(!shown.contains("new-token"), "{shown}");
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
    fn a_line_can_bind_its_token_to_a_component_and_instances() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(
            &path,
            "anyone\nwatcher test-watcher\naudits audit-agent audit-agent-*\n",
        )
        .unwrap();
        let auth = BearerAuth::from_file(Some(&path)).unwrap();
        assert!(auth.identify(&metadata("Bearer anyone")).unwrap().is_none());
        let watcher = auth.identify(&metadata("Bearer watcher")).unwrap().unwrap();
        assert!(watcher.allows("test-watcher", "any-pod"));
        assert!(!watcher.allows("api-gateway", "any-pod"));
        let audits = auth.identify(&metadata("Bearer audits")).unwrap().unwrap();
        assert!(audits.allows("audit-agent", "audit-agent-7f9c"));
        assert!(!audits.allows("audit-agent", "gateway-1"));
        assert_eq!(audits.to_string(), "audit-agent instances audit-agent-*");
        assert_eq!(TokenFile::open(&path).unwrap().first(), "anyone");

        std::fs::write(&path, "secret-value a b c\n").unwrap();
        let error = BearerAuth::from_file(Some(&path)).unwrap_err().to_string();
        assert!(error.contains("line 1: more than three fields"), "{error}");
        assert!(!error.contains("secret-value"), "{error}");
        // The same token bound and then not: refused, not quietly unbound.
        std::fs::write(&path, "secret-value test-watcher\nsecret-value\n").unwrap();
        let error = BearerAuth::from_file(Some(&path)).unwrap_err().to_string();
        assert!(
            error.contains("line 2: the token of an earlier line"),
            "{error}"
        );
        assert!(!error.contains("secret-value"), "{error}");
    }

    #[test]
    fn disabled_lets_everyone_in() {
        assert!(BearerAuth::disabled().check(&MetadataMap::new()).is_ok());
    }
}
