//! The DeepSeek API key: none, a fixed value, or a file re-read when it
//! changes; it never shows in `Debug` or `Display` output.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use automation_telemetry::secret::SecretFile;

/// The DeepSeek API key: none, a fixed value, or a [`SecretFile`] re-read
/// when it changes (looked at on every [`ApiKey::get`] — one `stat`).
///
/// `Debug` and `Display` never show the key: they print `ApiKey(set)` or
/// `ApiKey(unset)`.
#[derive(Clone)]
pub struct ApiKey {
    source: Arc<KeySource>,
}

enum KeySource {
    None,
    Value(Option<Arc<str>>),
    File(SecretFile<Option<Arc<str>>>),
}

enum KeyState {
    Set(Arc<str>),
    Empty,
    Error(String),
}

/// The key file's key, trimmed; `None` when it holds only whitespace.
fn read_key(path: &Path) -> Result<Option<Arc<str>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let key = text.trim();
    Ok((!key.is_empty()).then(|| Arc::from(key)))
}

impl ApiKey {
    /// No key: every call fails with [`FailureKind::NoKey`](super::FailureKind::NoKey).
    pub fn none() -> Self {
        Self {
            source: Arc::new(KeySource::None),
        }
    }

    /// A fixed key (from `DEEPSEEK_API_KEY`); surrounding whitespace is
    /// trimmed and an empty value counts as no key.
    pub fn value(v: String) -> Self {
        let v = v.trim();
        let key = (!v.is_empty()).then(|| Arc::<str>::from(v));
        Self {
            source: Arc::new(KeySource::Value(key)),
        }
    }

    /// The key as configured: `DEEPSEEK_API_KEY` from the environment
    /// (never a flag, so it shows in no process list) or the file of
    /// `DEEPSEEK_API_KEY_FILE`, not both; neither is no key.
    pub fn configured(file: Option<&Path>) -> Result<Self, String> {
        let from_env = std::env::var("DEEPSEEK_API_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty());
        match (from_env, file) {
            (Some(_), Some(_)) => {
                Err("set DEEPSEEK_API_KEY or DEEPSEEK_API_KEY_FILE, not both".to_owned())
            }
            (Some(value), None) => Ok(Self::value(value)),
            (None, Some(path)) => Ok(Self::file(path.to_path_buf())),
            (None, None) => Ok(Self::none()),
        }
    }

    /// A key read from a file (from `DEEPSEEK_API_KEY_FILE`), re-read when the
    /// file changes; surrounding whitespace is trimmed.
    pub fn file(path: PathBuf) -> Self {
        Self {
            source: Arc::new(KeySource::File(SecretFile::new(
                path,
                read_key,
                Duration::ZERO,
            ))),
        }
    }

    /// The key, trimmed; `None` when unset, empty or unreadable.
    pub fn get(&self) -> Option<Arc<str>> {
        match self.state() {
            KeyState::Set(key) => Some(key),
            KeyState::Empty | KeyState::Error(_) => None,
        }
    }

    /// Where the key comes from and, when there is none, why: e.g.
    /// `DEEPSEEK_API_KEY and DEEPSEEK_API_KEY_FILE are unset`,
    /// `DEEPSEEK_API_KEY_FILE /x: No such file or directory (os error 2)`,
    /// `DEEPSEEK_API_KEY_FILE /x is empty`, `DEEPSEEK_API_KEY is set`.
    pub fn describe(&self) -> String {
        let state = self.state();
        match (&*self.source, state) {
            (KeySource::None, _) => {
                "DEEPSEEK_API_KEY and DEEPSEEK_API_KEY_FILE are unset".to_owned()
            }
            (KeySource::Value(_), KeyState::Set(_)) => "DEEPSEEK_API_KEY is set".to_owned(),
            (KeySource::Value(_), _) => "DEEPSEEK_API_KEY is empty".to_owned(),
            (KeySource::File(file), KeyState::Set(_)) => {
                format!("DEEPSEEK_API_KEY_FILE {} is set", file.path().display())
            }
            (KeySource::File(file), KeyState::Empty) => {
                format!("DEEPSEEK_API_KEY_FILE {} is empty", file.path().display())
            }
            (KeySource::File(file), KeyState::Error(e)) => {
                format!("DEEPSEEK_API_KEY_FILE {}: {e}", file.path().display())
            }
        }
    }

    fn state(&self) -> KeyState {
        match &*self.source {
            KeySource::None => KeyState::Empty,
            KeySource::Value(Some(key)) => KeyState::Set(key.clone()),
            KeySource::Value(None) => KeyState::Empty,
            KeySource::File(file) => match file.current() {
                Ok(key) => match &*key {
                    Some(key) => KeyState::Set(Arc::clone(key)),
                    None => KeyState::Empty,
                },
                Err(error) => KeyState::Error(error),
            },
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.get().is_some() {
            f.write_str("ApiKey(set)")
        } else {
            f.write_str("ApiKey(unset)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_file_is_reread_after_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = ApiKey::file(path.clone());
        assert_eq!(key.get(), None);
        assert!(
            key.describe().starts_with(&format!(
                "DEEPSEEK_API_KEY_FILE {}: No such file",
                path.display()
            )),
            "{}",
            key.describe()
        );
        std::fs::write(&path, "sk-one\n").unwrap();
        assert_eq!(key.get().as_deref(), Some("sk-one"));
        assert_eq!(key.to_string(), "ApiKey(set)");
        std::fs::write(&path, "  sk-two-longer  \n").unwrap();
        assert_eq!(key.get().as_deref(), Some("sk-two-longer"));
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(key.get(), None);
        assert_eq!(
            key.describe(),
            format!("DEEPSEEK_API_KEY_FILE {} is empty", path.display())
        );
        std::fs::write(&path, "sk-three").unwrap();
        assert_eq!(key.clone().get().as_deref(), Some("sk-three"));
        assert_eq!(ApiKey::value("  ".to_owned()).get(), None);
        assert_eq!(ApiKey::value(" k ".to_owned()).get().as_deref(), Some("k"));
        assert_eq!(
            ApiKey::value(String::new()).describe(),
            "DEEPSEEK_API_KEY is empty"
        );
    }
}
