//! Watching the tree with `notify`: one non-recursive watch per directory
//! that is not ignored (so `target/` and other ignored trees cost no
//! inotify watch), new directories added as they appear. The notify
//! callback thread hands each filtered change to async code through the
//! async bridge.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use automation_async_bridge::Bridge;
use notify::{Event, EventKind, PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::filter::{ALWAYS_IGNORED, Filter};

/// What the watcher tells the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// Files changed (already filtered), and directories that appeared.
    Changes {
        /// Changed files that matter.
        paths: Vec<PathBuf>,
        /// New directories to watch.
        new_dirs: Vec<PathBuf>,
        /// Time spent on the raw event.
        processing: Duration,
    },
    /// The watcher reported an error.
    Error(String),
}

/// The watch could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The OS limit on watches was reached.
    #[error(
        "cannot watch {path}: the inotify watch limit is reached; raise it \
         (sysctl fs.inotify.max_user_watches=524288, and fs.inotify.max_user_instances) \
         or run with --poll"
    )]
    Limit {
        /// Where it failed.
        path: PathBuf,
    },
    /// Any other watcher error.
    #[error("cannot watch {path}: {reason}")]
    Other {
        /// Where it failed.
        path: PathBuf,
        /// The watcher's error.
        reason: String,
    },
}

fn classify(path: &Path, error: &notify::Error) -> WatchError {
    let limit = match &error.kind {
        notify::ErrorKind::MaxFilesWatch => true,
        notify::ErrorKind::Io(io) => matches!(io.raw_os_error(), Some(24 | 28)),
        _ => false,
    };
    if limit {
        WatchError::Limit {
            path: path.to_path_buf(),
        }
    } else {
        WatchError::Other {
            path: path.to_path_buf(),
            reason: error.to_string(),
        }
    }
}

/// The current watch, if one is established. It is replaced when the root
/// leads to a new checkout (a symbolic link swapped by git-sync).
#[derive(Debug, Default)]
pub struct WatchSlot(RwLock<Option<Arc<Watch>>>);

impl WatchSlot {
    /// The current watch.
    pub fn get(&self) -> Option<Arc<Watch>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes `watch` the current one; the one it replaces stops watching
    /// once the last user drops it.
    pub fn set(&self, watch: Arc<Watch>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(watch);
    }
}

/// A running watch of one root.
pub struct Watch {
    watcher: Mutex<Box<dyn Watcher + Send>>,
    filter: Arc<Mutex<Filter>>,
    watched: AtomicUsize,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("watched", &self.watched())
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// Watches `filter`'s root; events go to `tx`. `poll` selects the polling
    /// watcher (for file systems without native events) at that interval.
    pub fn start(
        filter: Filter,
        poll: Option<Duration>,
        bridge: Bridge,
        tx: mpsc::Sender<WatchEvent>,
    ) -> Result<Arc<Self>, WatchError> {
        let root = filter.root().to_path_buf();
        let filter = Arc::new(Mutex::new(filter));
        let handler = {
            let filter = Arc::clone(&filter);
            move |result: notify::Result<Event>| {
                let started = Instant::now();
                let message = match result {
                    Ok(event) => match filter_event(&filter, event, started) {
                        Some(message) => message,
                        None => return,
                    },
                    Err(error) => WatchEvent::Error(error.to_string()),
                };
                let tx = tx.clone();
                // The callback thread is plain sync code; the engine is async.
                if let Err(error) =
                    bridge.run_async(
                        Duration::from_secs(10),
                        async move { tx.send(message).await },
                    )
                {
                    tracing::warn!(%error, "a file change could not reach the engine");
                }
            }
        };
        let watcher: Box<dyn Watcher + Send> = match poll {
            Some(interval) => Box::new(
                PollWatcher::new(
                    handler,
                    notify::Config::default().with_poll_interval(interval),
                )
                .map_err(|e| classify(&root, &e))?,
            ),
            None => Box::new(
                RecommendedWatcher::new(handler, notify::Config::default())
                    .map_err(|e| classify(&root, &e))?,
            ),
        };
        let watch = Arc::new(Self {
            watcher: Mutex::new(watcher),
            filter,
            watched: AtomicUsize::new(0),
        });
        watch.add_tree(&root)?;
        Ok(watch)
    }

    /// Directories watched.
    pub fn watched(&self) -> usize {
        self.watched.load(Ordering::Relaxed)
    }

    /// Watches `dir` and every directory below it that is not ignored, and
    /// loads their ignore rules. Blocking (walks the tree). Returns the
    /// files found that matter: for a directory that just appeared, files
    /// written into it before its watch existed are changes too.
    pub fn add_tree(&self, dir: &Path) -> Result<Vec<PathBuf>, WatchError> {
        let walk = ignore::WalkBuilder::new(dir)
            .hidden(false)
            .parents(true)
            .require_git(false)
            .filter_entry(|entry| {
                !entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| ALWAYS_IGNORED.contains(&n))
            })
            .build();
        let (mut added, mut files) = (0, Vec::new());
        for entry in walk.flatten() {
            let path = entry.path();
            // The walk follows a root that is a symbolic link but names its
            // type as a link: the root is a directory all the same.
            let is_dir = entry.file_type().is_some_and(|t| t.is_dir())
                || (entry.depth() == 0 && path.is_dir());
            if !is_dir {
                let filter = self.filter.lock().unwrap_or_else(PoisonError::into_inner);
                if !filter.ignores(path, false) {
                    files.push(path.to_path_buf());
                }
                continue;
            }
            {
                let mut filter = self.filter.lock().unwrap_or_else(PoisonError::into_inner);
                if path != filter.root() && filter.skips_dir(path) {
                    continue;
                }
                filter.load_dir(path);
            }
            let mut watcher = self.watcher.lock().unwrap_or_else(PoisonError::into_inner);
            match watcher.watch(path, RecursiveMode::NonRecursive) {
                Ok(()) => added += 1,
                // Gone between the walk and the watch: nothing to watch.
                Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => {}
                Err(e) => return Err(classify(path, &e)),
            }
        }
        self.watched.fetch_add(added, Ordering::Relaxed);
        Ok(files)
    }
}

/// The changes of one raw event that matter, if any.
fn filter_event(filter: &Mutex<Filter>, event: Event, started: Instant) -> Option<WatchEvent> {
    if matches!(event.kind, EventKind::Access(_)) {
        return None;
    }
    let mut filter = filter.lock().unwrap_or_else(PoisonError::into_inner);
    let (mut paths, mut new_dirs) = (Vec::new(), Vec::new());
    for path in event.paths {
        if filter.is_ignore_file(&path)
            && let Some(dir) = path.parent()
        {
            let dir = if path.ends_with(".git/info/exclude") {
                filter.root().to_path_buf()
            } else {
                dir.to_path_buf()
            };
            filter.load_dir(&dir);
        }
        let is_dir = path.is_dir();
        if is_dir {
            if matches!(event.kind, EventKind::Create(_)) && !filter.skips_dir(&path) {
                new_dirs.push(path);
            }
            continue;
        }
        if !filter.ignores(&path, false) {
            paths.push(path);
        }
    }
    if paths.is_empty() && new_dirs.is_empty() {
        return None;
    }
    Some(WatchEvent::Changes {
        paths,
        new_dirs,
        processing: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_limit_names_the_setting_to_raise() {
        let enospc = notify::Error::io(std::io::Error::from_raw_os_error(28));
        let message = classify(Path::new("/src"), &enospc).to_string();
        assert!(message.contains("fs.inotify.max_user_watches"), "{message}");
        assert!(message.contains("--poll"), "{message}");
        let limit = notify::Error::new(notify::ErrorKind::MaxFilesWatch);
        assert!(matches!(
            classify(Path::new("/src"), &limit),
            WatchError::Limit { .. }
        ));
        let other = notify::Error::generic("odd");
        assert!(matches!(
            classify(Path::new("/src"), &other),
            WatchError::Other { .. }
        ));
    }
}
