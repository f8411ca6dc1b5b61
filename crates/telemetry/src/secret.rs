//! A secret held in a file, the way a Kubernetes Secret mounts it: read
//! again when it changes, so a rotated secret takes effect without a
//! restart. The one way the platform reads its secrets: the token files of
//! servers and clients and the DeepSeek key.
//!
//! A change is a new modification time, length or inode (a Secret volume
//! swaps a symbolic link to a new file), looked for at most once per
//! `recheck`; only then is the file read and parsed again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Ok(Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
        })
    }
}

/// How to read a secret file: its parsed value, or why it cannot be used.
pub type Reader<T> = fn(&Path) -> Result<T, String>;

struct Loaded<T> {
    stamp: Option<Stamp>,
    checked: Option<Instant>,
    value: Result<Arc<T>, String>,
    /// The value last read well, kept when the file breaks.
    good: Option<Arc<T>>,
}

impl<T> Loaded<T> {
    /// Records what a read of the file (with `stamp` before it) gave, and
    /// says so in the log: a new value when there was one before, a problem
    /// once until it changes.
    fn record(&mut self, path: &Path, stamp: Option<Stamp>, value: Result<Arc<T>, String>) {
        match &value {
            Ok(fresh) => {
                if self.good.is_some() {
                    tracing::info!(path = %path.display(), "secret file re-read");
                }
                self.good = Some(Arc::clone(fresh));
                self.stamp = stamp;
            }
            Err(error) => {
                if self.value.as_ref().err() != Some(error) {
                    tracing::warn!(path = %path.display(), %error, "the secret file cannot be used");
                }
                self.stamp = None;
            }
        }
        self.value = value;
    }
}

/// A secret file and what it held when last read. `Debug` shows the path
/// and whether it could be used, never what it holds.
pub struct SecretFile<T> {
    path: PathBuf,
    read: Reader<T>,
    recheck: Duration,
    loaded: Mutex<Loaded<T>>,
}

impl<T> SecretFile<T> {
    /// `path`, read with `read` when first asked for (or [`Self::load`]ed)
    /// and again when it has changed, looked at no more often than every
    /// `recheck`.
    pub fn new(path: PathBuf, read: Reader<T>, recheck: Duration) -> Self {
        Self {
            path,
            read,
            recheck,
            loaded: Mutex::new(Loaded {
                stamp: None,
                checked: None,
                value: Err("not read yet".to_owned()),
                good: None,
            }),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file now with `read`, whose own error is returned as it
    /// is (and not logged): for a start that refuses an unusable file,
    /// saying exactly why.
    pub fn load<E: std::fmt::Display>(
        &self,
        read: impl FnOnce(&Path) -> Result<T, E>,
    ) -> Result<Arc<T>, E> {
        let mut loaded = self.lock();
        loaded.checked = Some(Instant::now());
        let stamp = Stamp::of(&self.path).ok();
        match read(&self.path) {
            Ok(value) => {
                let value = Arc::new(value);
                loaded.record(&self.path, stamp, Ok(Arc::clone(&value)));
                Ok(value)
            }
            Err(error) => {
                // The caller reports it: no second word in the log.
                loaded.stamp = None;
                loaded.value = Err(error.to_string());
                Err(error)
            }
        }
    }

    /// What the file holds now: its value (the same `Arc` until the file
    /// changes), or why it cannot be used (missing, unreadable, refused by
    /// the reader).
    pub fn current(&self) -> Result<Arc<T>, String> {
        self.refreshed().value.clone()
    }

    /// The value last read well, even if the file has broken since (a
    /// server keeps accepting the tokens it had rather than lock everyone
    /// out); `None` before any good read.
    pub fn last_good(&self) -> Option<Arc<T>> {
        self.refreshed().good.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Loaded<T>> {
        self.loaded.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state, the file looked at first when `recheck` has passed, and
    /// read again when it changed.
    fn refreshed(&self) -> MutexGuard<'_, Loaded<T>> {
        let mut loaded = self.lock();
        if loaded
            .checked
            .is_some_and(|checked| checked.elapsed() < self.recheck)
        {
            return loaded;
        }
        loaded.checked = Some(Instant::now());
        match Stamp::of(&self.path) {
            Err(error) => loaded.record(&self.path, None, Err(error.to_string())),
            Ok(stamp) if loaded.stamp != Some(stamp) => {
                let value = (self.read)(&self.path).map(Arc::new);
                loaded.record(&self.path, Some(stamp), value);
            }
            Ok(_) => {}
        }
        loaded
    }
}

impl<T> std::fmt::Debug for SecretFile<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let loaded = self.lock();
        f.debug_struct("SecretFile")
            .field("path", &self.path)
            .field("usable", &loaded.value.is_ok())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(path: &Path) -> Result<Vec<String>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        if words.is_empty() {
            return Err("empty".to_owned());
        }
        Ok(words)
    }

    #[test]
    fn a_change_is_read_and_an_unchanged_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let file = SecretFile::new(path.clone(), words, Duration::ZERO);
        assert!(file.current().unwrap_err().contains("No such file"));
        std::fs::write(&path, "one").unwrap();
        let first = file.current().unwrap();
        assert_eq!(*first, ["one"]);
        assert!(
            Arc::ptr_eq(&first, &file.current().unwrap()),
            "not read again"
        );
        std::fs::write(&path, "two three").unwrap();
        assert_eq!(*file.current().unwrap(), ["two", "three"]);
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(file.current().unwrap_err(), "empty");
        std::fs::remove_file(&path).unwrap();
        assert!(file.current().is_err());
        std::fs::write(&path, "four").unwrap();
        assert_eq!(*file.current().unwrap(), ["four"]);
    }

    #[test]
    fn a_swapped_link_is_a_change_even_with_the_same_size_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, link) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("link"),
        );
        std::fs::write(&a, "aaa").unwrap();
        std::fs::write(&b, "bbb").unwrap();
        let time = std::fs::metadata(&a).unwrap().modified().unwrap();
        std::fs::File::options()
            .write(true)
            .open(&b)
            .unwrap()
            .set_modified(time)
            .unwrap();
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let file = SecretFile::new(link.clone(), words, Duration::ZERO);
        assert_eq!(*file.current().unwrap(), ["aaa"]);
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&b, &link).unwrap();
        assert_eq!(*file.current().unwrap(), ["bbb"]);
    }

    #[test]
    fn the_last_good_value_outlives_a_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let file = SecretFile::new(path.clone(), words, Duration::ZERO);
        let refused = file
            .load(|_: &Path| Err::<Vec<String>, _>("no file yet"))
            .unwrap_err();
        assert_eq!(refused, "no file yet", "load gives the reader's own error");
        assert_eq!(file.last_good(), None);
        std::fs::write(&path, "one").unwrap();
        assert_eq!(*file.load(words).unwrap(), ["one"]);
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(file.current().unwrap_err(), "empty");
        assert_eq!(*file.last_good().unwrap(), ["one"]);
        std::fs::remove_file(&path).unwrap();
        assert!(file.current().is_err());
        assert_eq!(*file.last_good().unwrap(), ["one"]);
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "sk-very-secret").unwrap();
        let file = SecretFile::new(path, words, Duration::ZERO);
        file.current().unwrap();
        let shown = format!("{file:?}");
        assert!(
            !shown.contains("sk-very-secret") && shown.contains("usable: true"),
            "{shown}"
        );
    }

    #[test]
    fn the_file_is_looked_at_once_per_recheck() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "one").unwrap();
        let file = SecretFile::new(path.clone(), words, Duration::from_secs(3600));
        assert_eq!(*file.current().unwrap(), ["one"]);
        std::fs::write(&path, "two").unwrap();
        assert_eq!(*file.current().unwrap(), ["one"], "within the recheck");
    }
}
