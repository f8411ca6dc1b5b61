//! Watching the tree with `notify`: one non-recursive watch per directory
//! that is not ignored (so `target/` and other ignored trees cost no
//! inotify watch), new directories added as they appear. The notify
//! callback thread hands each filtered change to async code through the
//! async bridge.
//!
//! A watch belongs to one directory, told by its [`Identity`]: when the
//! root leads to another one (a link swapped, the root deleted and made
//! again) or the root's own watch reports it removed, the watch is stale;
//! readiness says so and the service watches the root afresh.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

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

/// Which directory a path leads to: device, inode and, where the file
/// system records it, birth time. Device and inode alone cannot tell a
/// root deleted and made again: ext4 gives the new directory the inode the
/// old one just freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    device: u64,
    inode: u64,
    born: Option<SystemTime>,
}

impl Identity {
    /// The identity of the directory `path` leads to (links followed).
    pub fn of(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        Ok(Self {
            device: meta.dev(),
            inode: meta.ino(),
            born: meta.created().ok(),
        })
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

    /// No watch is current any more (a new one could not be established):
    /// the previous one stops watching once the last user drops it.
    pub fn clear(&self) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// A running watch of one root.
pub struct Watch {
    watcher: Mutex<Box<dyn Watcher + Send>>,
    filter: Arc<Mutex<Filter>>,
    watched: AtomicUsize,
    root: PathBuf,
    /// The directory the root led to when the watch began.
    identity: Identity,
    /// Set when the root's own watch reports the directory removed.
    lost: Arc<AtomicBool>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("root", &self.root)
            .field("identity", &self.identity)
            .field("watched", &self.watched())
            .field("lost", &self.is_lost())
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
        let identity = Identity::of(&root).map_err(|e| WatchError::Other {
            path: root.clone(),
            reason: e.to_string(),
        })?;
        let filter = Arc::new(Mutex::new(filter));
        let lost = Arc::new(AtomicBool::new(false));
        let handler = {
            let (filter, lost, root) = (Arc::clone(&filter), Arc::clone(&lost), root.clone());
            move |result: notify::Result<Event>| {
                let started = Instant::now();
                if let Ok(event) = &result
                    && matches!(event.kind, EventKind::Remove(_))
                    && event.paths.contains(&root)
                {
                    lost.store(true, Ordering::Relaxed);
                }
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
            root: root.clone(),
            identity,
            lost,
        });
        watch.add_tree(&root)?;
        Ok(watch)
    }

    /// Directories watched.
    pub fn watched(&self) -> usize {
        self.watched.load(Ordering::Relaxed)
    }

    /// The directory the root led to when the watch began.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// Whether the root's own watch reported the directory removed.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// For readiness: whether this watch still watches what the root leads
    /// to now, with at least one directory watched. Blocking (a `stat`).
    pub fn check(&self) -> Result<(), String> {
        let root = self.root.display();
        if self.is_lost() {
            return Err(format!(
                "{root} was removed; it is watched again once it is back"
            ));
        }
        match Identity::of(&self.root) {
            Err(e) => Err(format!("{root}: {e}")),
            Ok(now) if now != self.identity => Err(format!(
                "{root} leads to another directory than the one watched; watching it afresh"
            )),
            Ok(_) if self.watched() == 0 => Err(format!("no directory of {root} is watched")),
            Ok(_) => Ok(()),
        }
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
    fn a_directory_made_again_at_the_same_path_is_another_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let before = Identity::of(&root).unwrap();
        std::fs::write(root.join("file"), "x").unwrap();
        assert_eq!(
            Identity::of(&root).unwrap(),
            before,
            "contents do not matter"
        );
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::create_dir(&root).unwrap();
        let after = Identity::of(&root).unwrap();
        // Where the file system records no birth time, only a new inode
        // tells them apart (and the watch's removal event covers the rest).
        if before.born.is_some() || before.inode != after.inode {
            assert_ne!(after, before);
        }
        assert!(Identity::of(&dir.path().join("missing")).is_err());
    }

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
