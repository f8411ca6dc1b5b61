//! The audit history in an embedded SQLite file: every report, the last
//! audited HEAD and the state of every plan item, so that a restart never
//! counts a commit or a completion twice.
//!
//! The schema carries a version (`PRAGMA user_version`) and an application
//! id. Migrations run at start, each in its own transaction. A database
//! written by a newer binary is refused with a clear message, never altered,
//! so rolling back a deployment is safe. The version moves only for changes
//! an older binary could not live with: tables only newer binaries use (the
//! outbox) are [`ADDITIONS`], made at every open if missing, and an older
//! binary of the same version runs on beside them. A file that is not ours (another
//! application's database, a corrupt file) is never written to.
//!
//! Every open runs SQLite's quick integrity check before anything is
//! written; a file that fails it is refused, with the reason, until the file
//! changes (a restored backup), so the agent stays unready rather than fail
//! every audit "malformed". Any error drops the connection, so a file
//! damaged while the agent runs is checked at the next use.
//!
//! Each audit's events are written to an outbox in the transaction that
//! stores the audit, and deleted once the collector acknowledged them (see
//! [`crate::outbox`]): a crash between the two loses nothing and, as every
//! batch keeps its identity (the database's own outbox incarnation and the
//! row's id as its sequence), counts nothing twice.
//!
//! Background work (health checks, the outbox) never waits for the
//! connection while an audit uses it, and waits at most
//! [`BRIEF_BUSY_TIMEOUT`] for another process's lock: an audit waits for a
//! locked database one busy timeout, not one more for every probe queued
//! before it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, SystemTime};

use automation_proto::v1::{AuditReport, DocumentSummary, EventBatch, TaskCounts};
use prost::Message;
use rusqlite::backup::NO_PROGRESS;
use rusqlite::{Connection, MAIN_DB, OpenFlags, OptionalExtension, params};

use crate::model::{MarkerKind, TaskState};

/// The newest schema this binary knows.
pub const SCHEMA_VERSION: i64 = 1;

/// The longest background work (health checks, the outbox) waits for
/// another process's lock on the database.
pub const BRIEF_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// `PRAGMA application_id`: "AUDA".
const APPLICATION_ID: i64 = 0x4155_4441;

/// Migration `n` takes the schema from version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: reports, the audited head, plan items.
    "CREATE TABLE reports (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         started_at_ms INTEGER NOT NULL,
         result INTEGER NOT NULL,
         report BLOB NOT NULL
     );
     CREATE TABLE audited_head (
         id INTEGER PRIMARY KEY CHECK (id = 1),
         head TEXT
     );
     CREATE TABLE items (
         path TEXT NOT NULL,
         marker TEXT NOT NULL,
         key TEXT NOT NULL,
         state TEXT NOT NULL,
         PRIMARY KEY (path, marker, key)
     ) WITHOUT ROWID;",
];

/// Tables older binaries of [`SCHEMA_VERSION`] ignore, made if missing.
///
/// The outbox. AUTOINCREMENT: an id is never used again, even once every
/// row is deleted, because it is the batch's sequence. The incarnation is
/// random once per database (non-zero, as the collector wants), so a batch
/// sent again after a restart is a replay. An older binary running on this
/// database (a rollback) stores its audits without outbox rows and reports
/// them directly; rows it leaves are sent by the next newer binary.
const ADDITIONS: &str = "CREATE TABLE IF NOT EXISTS outbox (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         events INTEGER NOT NULL,
         batch BLOB NOT NULL
     );
     CREATE TABLE IF NOT EXISTS outbox_source (
         id INTEGER PRIMARY KEY CHECK (id = 1),
         incarnation INTEGER NOT NULL CHECK (incarnation > 0)
     );
     INSERT OR IGNORE INTO outbox_source (id, incarnation)
         VALUES (1, (random() & 0x7fffffffffffffff) | 1);";

/// A database problem, with the file and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Written by a newer audit-agent: refused, left untouched.
    #[error(
        "database {path} has schema version {found}, newer than this audit-agent supports \
         ({supported}); run the newer audit-agent, or restore a backup made by this version"
    )]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// Ours.
        supported: i64,
    },
    /// Background work found the connection in use (by an audit or a read)
    /// and did not wait for it.
    #[error("database {path}: in use; not waiting")]
    InUse {
        /// The file.
        path: PathBuf,
    },
    /// Some other application's database.
    #[error("{path} is not an audit-agent database ({reason}); it was left untouched")]
    NotOurs {
        /// The file.
        path: PathBuf,
        /// What gave it away.
        reason: String,
    },
    /// The file failed SQLite's integrity check: refused, left untouched.
    #[error(
        "database {path} is damaged (integrity check failed: {reason}); it was left \
         untouched: restore a backup (audit-agent restore --from <backup>)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the check found.
        reason: String,
    },
    /// SQLite said no: locked, corrupt, not a database, disk full …
    #[error("database {path}: {action}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A file-system problem around the database.
    #[error("database {path}: {action}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The stored head moved while an audit ran: another writer.
    #[error(
        "database {path}: the audited head changed during the audit (is another audit-agent \
         using the same database?); nothing was written"
    )]
    Conflict {
        /// The file.
        path: PathBuf,
    },
    /// A stored report could not be decoded.
    #[error("database {path}: report {id} is unreadable: {reason}")]
    BadReport {
        /// The file.
        path: PathBuf,
        /// The report.
        id: u64,
        /// The decoder's words.
        reason: String,
    },
}

impl StoreError {
    /// A refusal that must stop the agent rather than be retried.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::TooNew { .. } | Self::NotOurs { .. })
    }
}

/// Item states of one document: (marker, key) → state.
pub type DocumentItems = HashMap<(MarkerKind, String), TaskState>;

/// What the previous audits left: the head and every item's state.
#[derive(Debug, Default, Clone)]
pub struct Baseline {
    /// The last audited HEAD.
    pub head: Option<String>,
    /// Path → items.
    pub documents: HashMap<String, DocumentItems>,
}

/// What one audit writes, in one transaction.
#[derive(Debug, Default)]
pub struct Commit {
    /// The head read in [`Store::baseline`]; the write is refused if the
    /// stored head differs by then.
    pub expected_head: Option<String>,
    /// The new head; `None` leaves the stored one (git could not be read).
    pub new_head: Option<Option<String>>,
    /// Documents whose items are replaced.
    pub documents: Vec<(String, DocumentItems)>,
    /// Documents that are gone.
    pub removed: Vec<String>,
    /// The report (its `id` is assigned here).
    pub report: AuditReport,
    /// Keep at most this many reports (0: all).
    pub keep_reports: u64,
    /// The audit's events for the outbox, in batches, identity unset.
    pub outbox: Vec<EventBatch>,
    /// Keep at most this many outbox batches; older ones are dropped (0: all).
    pub keep_outbox: u64,
}

/// What [`Store::commit`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The report's id.
    pub id: u64,
    /// Events of unsent outbox batches dropped to keep `keep_outbox`.
    pub dropped_events: u64,
}

/// An outbox batch waiting for the collector's acknowledgement.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The row: delete it with [`Store::outbox_sent`] once acknowledged.
    pub id: u64,
    /// Events in it.
    pub events: u64,
    /// The batch with its identity set (the database's outbox incarnation,
    /// the row's id as sequence), or why it cannot be decoded.
    pub batch: Result<EventBatch, String>,
}

/// The database, opened lazily and reopened after a failure.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    busy_timeout: Duration,
    conn: Mutex<Option<Connection>>,
    /// What the operations found; never held during I/O.
    state: Mutex<State>,
}

/// What the store's operations found.
#[derive(Debug, Default)]
struct State {
    /// The last operation's error; `None` once one succeeds.
    last_error: Option<String>,
    /// The file failed the integrity check: its fingerprint then, and why.
    corrupt: Option<(Option<Fingerprint>, String)>,
}

/// Which file, and which version of it: a restore or a replacement changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    device: u64,
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl Fingerprint {
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            device: meta.dev(),
            inode: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

impl Store {
    /// A store at `path`; nothing is opened until first use or
    /// [`Store::connect`].
    pub fn new(path: PathBuf, busy_timeout: Duration) -> Self {
        Self {
            path,
            busy_timeout,
            conn: Mutex::new(None),
            state: Mutex::new(State::default()),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (creating and migrating as needed) unless already open.
    pub fn connect(&self) -> Result<(), StoreError> {
        self.with(|_| Ok(()))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the open connection, waiting for it and for the lock as
    /// long as it takes (up to the busy timeout).
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let slot = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        self.run(slot, self.busy_timeout, f)
    }

    /// Runs `f` unless the connection is in use ([`StoreError::InUse`]),
    /// waiting at most [`BRIEF_BUSY_TIMEOUT`] for another process's lock.
    fn with_brief<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let slot = match self.conn.try_lock() {
            Ok(slot) => slot,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::InUse {
                    path: self.path.clone(),
                });
            }
        };
        self.run(slot, self.busy_timeout.min(BRIEF_BUSY_TIMEOUT), f)
    }

    /// Opens the file unless open (a file that failed the integrity check
    /// only once it changed), runs `f` waiting up to `busy` for a lock, and
    /// records the outcome; on an error the connection is dropped, so the
    /// next call opens afresh.
    fn run<T>(
        &self,
        mut slot: MutexGuard<'_, Option<Connection>>,
        busy: Duration,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = self.open_slot(&mut slot, busy).and_then(|conn| {
            conn.busy_timeout(busy)
                .map_err(self.err("setting the busy timeout"))?;
            f(conn)
        });
        let mut state = self.state();
        match &result {
            Ok(_) => state.last_error = None,
            Err(e) => {
                *slot = None;
                state.last_error = Some(e.to_string());
            }
        }
        result
    }

    fn open_slot<'a>(
        &self,
        slot: &'a mut Option<Connection>,
        busy: Duration,
    ) -> Result<&'a mut Connection, StoreError> {
        if slot.is_none() {
            let fingerprint = Fingerprint::of(&self.path);
            if let Some((seen, reason)) = &self.state().corrupt
                && *seen == fingerprint
            {
                return Err(StoreError::Corrupt {
                    path: self.path.clone(),
                    reason: reason.clone(),
                });
            }
            match open(&self.path, busy) {
                Ok(conn) => {
                    self.state().corrupt = None;
                    *slot = Some(conn);
                }
                Err(e) => {
                    if let StoreError::Corrupt { reason, .. } = &e {
                        self.state().corrupt = Some((fingerprint, reason.clone()));
                    }
                    return Err(e);
                }
            }
        }
        Ok(slot.as_mut().expect("opened above"))
    }

    fn err(&self, action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite {
            path: self.path.clone(),
            action,
            source,
        }
    }

    /// For the readiness check: that the database can be written now (takes
    /// and releases the write lock). While an audit uses the connection this
    /// does not wait for it: the last operation's outcome stands.
    pub fn check_writable(&self) -> Result<(), String> {
        let checked = self.with_brief(|conn| {
            conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
                .map_err(self.err("taking the write lock"))
        });
        match checked {
            Err(StoreError::InUse { .. }) => self.state().last_error.clone().map_or(Ok(()), Err),
            result => result.map_err(|e| e.to_string()),
        }
    }

    /// The last audited head and every item's state.
    pub fn baseline(&self) -> Result<Baseline, StoreError> {
        self.with(|conn| {
            let head: Option<String> = conn
                .query_row("SELECT head FROM audited_head WHERE id = 1", [], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(self.err("reading the audited head"))?
                .flatten();
            let mut documents: HashMap<String, DocumentItems> = HashMap::new();
            let mut stmt = conn
                .prepare_cached("SELECT path, marker, key, state FROM items")
                .map_err(self.err("reading plan items"))?;
            let mut rows = stmt.query([]).map_err(self.err("reading plan items"))?;
            while let Some(row) = rows.next().map_err(self.err("reading plan items"))? {
                let read = |i| row.get::<_, String>(i);
                let (path, marker, key, state) = (read(0), read(1), read(2), read(3));
                let (Ok(path), Ok(marker), Ok(key), Ok(state)) = (path, marker, key, state) else {
                    continue;
                };
                // Rows a newer minor version might add with other names are
                // skipped rather than misread.
                let (Some(marker), Some(state)) =
                    (MarkerKind::parse(&marker), TaskState::parse(&state))
                else {
                    continue;
                };
                documents
                    .entry(path)
                    .or_default()
                    .insert((marker, key), state);
            }
            Ok(Baseline { head, documents })
        })
    }

    /// Writes one audit: the report, the new head, the changed items and
    /// its events for the outbox, all or nothing.
    pub fn commit(&self, commit: &Commit) -> Result<Stored, StoreError> {
        self.with(|conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(self.err("starting the audit transaction"))?;
            let head: Option<String> = tx
                .query_row("SELECT head FROM audited_head WHERE id = 1", [], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(self.err("reading the audited head"))?
                .flatten();
            if head != commit.expected_head {
                return Err(StoreError::Conflict {
                    path: self.path.clone(),
                });
            }
            if let Some(new_head) = &commit.new_head {
                tx.execute(
                    "INSERT INTO audited_head (id, head) VALUES (1, ?1)
                     ON CONFLICT (id) DO UPDATE SET head = excluded.head",
                    params![new_head],
                )
                .map_err(self.err("writing the audited head"))?;
            }
            {
                let mut delete = tx
                    .prepare_cached("DELETE FROM items WHERE path = ?1")
                    .map_err(self.err("writing plan items"))?;
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO items (path, marker, key, state) VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(self.err("writing plan items"))?;
                for path in &commit.removed {
                    delete
                        .execute(params![path])
                        .map_err(self.err("writing plan items"))?;
                }
                for (path, items) in &commit.documents {
                    delete
                        .execute(params![path])
                        .map_err(self.err("writing plan items"))?;
                    for ((marker, key), state) in items {
                        insert
                            .execute(params![path, marker.as_str(), key, state.as_str()])
                            .map_err(self.err("writing plan items"))?;
                    }
                }
            }
            let started_ms = commit
                .report
                .started_at
                .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
                .unwrap_or_default();
            tx.execute(
                "INSERT INTO reports (started_at_ms, result, report) VALUES (?1, ?2, ?3)",
                params![
                    started_ms,
                    commit.report.result,
                    commit.report.encode_to_vec()
                ],
            )
            .map_err(self.err("writing the report"))?;
            let id = tx.last_insert_rowid();
            if commit.keep_reports > 0 {
                tx.execute(
                    "DELETE FROM reports WHERE id <= ?1",
                    params![
                        id.saturating_sub(i64::try_from(commit.keep_reports).unwrap_or(i64::MAX))
                    ],
                )
                .map_err(self.err("trimming old reports"))?;
            }
            let dropped_events = add_to_outbox(&tx, &commit.outbox, commit.keep_outbox)
                .map_err(self.err("writing the outbox"))?;
            tx.commit().map_err(self.err("committing the audit"))?;
            Ok(Stored {
                id: u64::try_from(id).unwrap_or_default(),
                dropped_events,
            })
        })
    }

    /// Up to `limit` outbox batches, oldest first, each with the identity it
    /// is sent under. Background work: does not wait for an audit.
    pub fn outbox_pending(&self, limit: u32) -> Result<Vec<Outgoing>, StoreError> {
        self.with_brief(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT o.id, o.events, o.batch, s.incarnation
                     FROM outbox o, outbox_source s ORDER BY o.id LIMIT ?1",
                )
                .map_err(self.err("reading the outbox"))?;
            let rows = stmt
                .query_map(params![limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(self.err("reading the outbox"))?;
            let mut pending = Vec::new();
            for row in rows {
                let (id, events, blob, incarnation) =
                    row.map_err(self.err("reading the outbox"))?;
                let id = u64::try_from(id).unwrap_or_default();
                let batch = EventBatch::decode(blob.as_slice())
                    .map_err(|e| e.to_string())
                    .and_then(|mut batch| {
                        let source = batch.source.as_mut().ok_or("no source")?;
                        source.incarnation = incarnation.cast_unsigned();
                        batch.sequence = id;
                        Ok(batch)
                    });
                pending.push(Outgoing {
                    id,
                    events: u64::try_from(events).unwrap_or_default(),
                    batch,
                });
            }
            Ok(pending)
        })
    }

    /// Deletes an outbox batch the collector acknowledged (or refused for
    /// good). Background work: does not wait for an audit.
    pub fn outbox_sent(&self, id: u64) -> Result<(), StoreError> {
        self.with_brief(|conn| {
            conn.execute(
                "DELETE FROM outbox WHERE id = ?1",
                params![i64::try_from(id).unwrap_or(i64::MAX)],
            )
            .map(drop)
            .map_err(self.err("deleting a sent outbox batch"))
        })
    }

    /// One report: `id` 0 is the latest. `None` when there is none.
    pub fn report(&self, id: u64) -> Result<Option<AuditReport>, StoreError> {
        self.with(|conn| {
            let row: Option<(i64, Vec<u8>)> = if id == 0 {
                conn.query_row(
                    "SELECT id, report FROM reports ORDER BY id DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            } else {
                conn.query_row(
                    "SELECT id, report FROM reports WHERE id = ?1",
                    params![i64::try_from(id).unwrap_or(i64::MAX)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            }
            .optional()
            .map_err(self.err("reading a report"))?;
            row.map(|(id, blob)| self.decode(id, &blob)).transpose()
        })
    }

    /// The id of the latest report, if any.
    pub fn latest_id(&self) -> Result<Option<u64>, StoreError> {
        self.with(|conn| {
            let id: Option<i64> = conn
                .query_row("SELECT max(id) FROM reports", [], |r| r.get(0))
                .map_err(self.err("reading the latest report id"))?;
            Ok(id.and_then(|id| u64::try_from(id).ok()))
        })
    }

    /// Up to `limit` reports with ids below `before` (all when `None`),
    /// newest first, and how many are stored in all.
    pub fn list(
        &self,
        before: Option<u64>,
        limit: u32,
    ) -> Result<(Vec<AuditReport>, u64), StoreError> {
        self.with(|conn| {
            let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, report FROM reports WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
                )
                .map_err(self.err("listing reports"))?;
            let rows = stmt
                .query_map(params![before, limit], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .map_err(self.err("listing reports"))?;
            let mut reports = Vec::new();
            for row in rows {
                let (id, blob) = row.map_err(self.err("listing reports"))?;
                reports.push(self.decode(id, &blob)?);
            }
            let total: i64 = conn
                .query_row("SELECT count(*) FROM reports", [], |r| r.get(0))
                .map_err(self.err("counting reports"))?;
            Ok((reports, u64::try_from(total).unwrap_or_default()))
        })
    }

    /// Current items per document, from the stored item states.
    pub fn documents(&self) -> Result<Vec<DocumentSummary>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT path, state, count(*) FROM items GROUP BY path, state ORDER BY path",
                )
                .map_err(self.err("reading plan items"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(self.err("reading plan items"))?;
            let mut out: Vec<DocumentSummary> = Vec::new();
            for row in rows {
                let (path, state, n) = row.map_err(self.err("reading plan items"))?;
                if out.last().is_none_or(|d| d.path != path) {
                    out.push(DocumentSummary {
                        path,
                        tasks: Some(TaskCounts::default()),
                    });
                }
                let tasks = out
                    .last_mut()
                    .and_then(|d| d.tasks.as_mut())
                    .expect("pushed");
                let n = u64::try_from(n).unwrap_or_default();
                match TaskState::parse(&state) {
                    Some(TaskState::Done) => tasks.done += n,
                    Some(TaskState::InProgress) => tasks.in_progress += n,
                    Some(TaskState::Planned) => tasks.planned += n,
                    None => {}
                }
            }
            Ok(out)
        })
    }

    fn decode(&self, id: i64, blob: &[u8]) -> Result<AuditReport, StoreError> {
        let id = u64::try_from(id).unwrap_or_default();
        let mut report = AuditReport::decode(blob).map_err(|e| StoreError::BadReport {
            path: self.path.clone(),
            id,
            reason: e.to_string(),
        })?;
        report.id = id;
        Ok(report)
    }
}

/// Adds `batches` to the outbox and drops the oldest beyond `keep` (0: no
/// bound); returns the events dropped.
fn add_to_outbox(
    tx: &rusqlite::Transaction<'_>,
    batches: &[EventBatch],
    keep: u64,
) -> Result<u64, rusqlite::Error> {
    let mut insert = tx.prepare_cached("INSERT INTO outbox (events, batch) VALUES (?1, ?2)")?;
    for batch in batches {
        insert.execute(params![batch.events.len() as i64, batch.encode_to_vec()])?;
    }
    if keep == 0 || batches.is_empty() {
        return Ok(0);
    }
    let last = tx.last_insert_rowid();
    let below = last.saturating_sub(i64::try_from(keep).unwrap_or(i64::MAX));
    let dropped: i64 = tx.query_row(
        "SELECT coalesce(sum(events), 0) FROM outbox WHERE id <= ?1",
        params![below],
        |r| r.get(0),
    )?;
    tx.execute("DELETE FROM outbox WHERE id <= ?1", params![below])?;
    Ok(u64::try_from(dropped).unwrap_or_default())
}

/// Opens `path` read-write, creating it (and its folder) if missing, and
/// brings the schema up to [`SCHEMA_VERSION`].
fn open(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: path.to_owned(),
            action: "creating its folder",
            source,
        })?;
    }
    let sqlite = |action| {
        move |source| StoreError::Sqlite {
            path: path.to_owned(),
            action,
            source,
        }
    };
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )
    .map_err(sqlite("opening"))?;
    conn.busy_timeout(busy_timeout)
        .map_err(sqlite("setting the busy timeout"))?;
    let version = identify(&conn, path)?;
    if version > 0 {
        quick_check(&conn, path)?;
    }
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sqlite("switching to WAL"))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sqlite("setting synchronous"))?;
    for (n, migration) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        let tx = conn.transaction().map_err(sqlite("starting a migration"))?;
        tx.execute_batch(migration)
            .map_err(sqlite("migrating the schema"))?;
        tx.pragma_update(None, "user_version", n as i64 + 1)
            .map_err(sqlite("migrating the schema"))?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(sqlite("migrating the schema"))?;
        tx.commit().map_err(sqlite("migrating the schema"))?;
        tracing::info!(path = %path.display(), version = n + 1, "database schema migrated");
    }
    conn.execute_batch(ADDITIONS)
        .map_err(sqlite("adding the outbox"))?;
    Ok(conn)
}

/// Rows of the integrity check's findings kept in the error.
const CHECK_FINDINGS: usize = 3;

/// SQLite's quick integrity check (the b-trees, not the indexes' contents:
/// linear in the file's size); a damaged file is [`StoreError::Corrupt`].
fn quick_check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let findings = conn
        .prepare(&format!("PRAGMA quick_check({CHECK_FINDINGS})"))
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        });
    match findings {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => Ok(()),
        Ok(rows) => Err(corrupt(rows.join("; "))),
        // The check itself may stop at the damage.
        Err(e)
            if matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
            ) =>
        {
            Err(corrupt(e.to_string()))
        }
        Err(source) => Err(StoreError::Sqlite {
            path: path.to_owned(),
            action: "checking integrity",
            source,
        }),
    }
}

/// Reads the schema version, refusing a newer schema or someone else's file.
fn identify(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    let sqlite = |source| StoreError::Sqlite {
        path: path.to_owned(),
        action: "reading the schema version",
        source,
    };
    let application_id: i64 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(sqlite)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sqlite)?;
    if application_id != 0 && application_id != APPLICATION_ID {
        return Err(StoreError::NotOurs {
            path: path.to_owned(),
            reason: format!("application id {application_id:#x}"),
        });
    }
    if application_id == 0 {
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .map_err(sqlite)?;
        if tables > 0 || version != 0 {
            return Err(StoreError::NotOurs {
                path: path.to_owned(),
                reason: format!("it already holds {tables} tables of another schema"),
            });
        }
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(version)
}

/// What a backup or restore copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// The schema version of the copy.
    pub schema_version: i64,
    /// Reports in it.
    pub reports: u64,
}

/// Checks that `path` is a sound audit-agent database this binary can use.
fn verify(path: &Path) -> Result<Copied, StoreError> {
    let sqlite = |action| {
        move |source| StoreError::Sqlite {
            path: path.to_owned(),
            action,
            source,
        }
    };
    if !path.is_file() {
        return Err(StoreError::Io {
            path: path.to_owned(),
            action: "opening",
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite("opening"))?;
    let schema_version = identify(&conn, path)?;
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(sqlite("checking integrity"))?;
    if check != "ok" {
        return Err(StoreError::NotOurs {
            path: path.to_owned(),
            reason: format!("integrity check failed: {check}"),
        });
    }
    let reports = if schema_version == 0 {
        0
    } else {
        conn.query_row("SELECT count(*) FROM reports", [], |r| r.get::<_, i64>(0))
            .map_err(sqlite("counting reports"))?
    };
    Ok(Copied {
        schema_version,
        reports: u64::try_from(reports).unwrap_or_default(),
    })
}

/// Copies the database at `database` to a new file `to`, consistently even
/// while the agent is writing (SQLite's online backup). `to` must not exist.
pub fn backup(database: &Path, to: &Path) -> Result<Copied, StoreError> {
    if to.exists() {
        return Err(StoreError::Io {
            path: to.to_owned(),
            action: "writing the backup",
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the file exists; remove it or choose another name",
            ),
        });
    }
    verify(database)?;
    let partial = to.with_file_name(format!(
        ".{}.partial",
        to.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let source = Connection::open_with_flags(database, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(
        |source| StoreError::Sqlite {
            path: database.to_owned(),
            action: "opening",
            source,
        },
    )?;
    let copied = source
        .backup(MAIN_DB, &partial, NO_PROGRESS)
        .map_err(|source| StoreError::Sqlite {
            path: to.to_owned(),
            action: "writing the backup",
            source,
        })
        .and_then(|()| verify(&partial))
        .and_then(|copied| {
            std::fs::rename(&partial, to).map_err(|source| StoreError::Io {
                path: to.to_owned(),
                action: "writing the backup",
                source,
            })?;
            Ok(copied)
        });
    if copied.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    copied
}

/// Replaces the contents of `database` with the backup `from`, after
/// checking that the backup is sound and of a schema this binary supports.
/// The database being replaced, if readable, is first copied to
/// `<database>.before-restore` (overwriting an older such copy). Stop the
/// agent first: a running agent would keep counting from its own state.
pub fn restore(from: &Path, database: &Path) -> Result<Copied, StoreError> {
    let copied = verify(from)?;
    if database.exists() && verify(database).is_ok() {
        let keep = database.with_file_name(format!(
            "{}.before-restore",
            database
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let _ = std::fs::remove_file(&keep);
        backup(database, &keep)?;
    }
    let mut target = Connection::open(database).map_err(|source| StoreError::Sqlite {
        path: database.to_owned(),
        action: "opening",
        source,
    })?;
    target
        .busy_timeout(Duration::from_secs(10))
        .and_then(|()| target.restore(MAIN_DB, from, NO_PROGRESS))
        .map_err(|source| StoreError::Sqlite {
            path: database.to_owned(),
            action: "restoring",
            source,
        })?;
    // Batches written after the backup was made may have been sent under
    // sequences the restored outbox will use again: a new incarnation keeps
    // its batches from being taken for those replays. (A restore counts
    // again what happened since the backup, as it does the commits.)
    target
        .execute_batch(ADDITIONS)
        .and_then(|()| {
            target.execute(
                "UPDATE outbox_source SET incarnation = (random() & 0x7fffffffffffffff) | 1",
                [],
            )
        })
        .map_err(|source| StoreError::Sqlite {
            path: database.to_owned(),
            action: "renewing the outbox incarnation",
            source,
        })?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use automation_proto::v1::{Event, Source};

    use super::*;

    fn batch(events: usize) -> EventBatch {
        EventBatch {
            source: Some(Source {
                service: "audit-agent".to_owned(),
                instance: "pod-1".to_owned(),
                version: "1".to_owned(),
                incarnation: 0,
            }),
            sequence: 0,
            events: vec![Event::default(); events],
        }
    }

    fn audit(store: &Store, head: &str, outbox: Vec<EventBatch>, keep_outbox: u64) -> Stored {
        let expected_head = store.baseline().unwrap().head;
        store
            .commit(&Commit {
                expected_head,
                new_head: Some(Some(head.to_owned())),
                outbox,
                keep_outbox,
                ..Commit::default()
            })
            .unwrap()
    }

    #[test]
    fn outbox_batches_keep_their_identity_and_ids_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("a.db"), Duration::from_secs(1));
        assert_eq!(
            audit(&store, "a", vec![batch(2), batch(1)], 3).dropped_events,
            0
        );
        let first = store.outbox_pending(10).unwrap();
        let ids: Vec<u64> = first.iter().map(|o| o.id).collect();
        assert_eq!(ids, [1, 2]);
        let incarnation = first[0]
            .batch
            .as_ref()
            .unwrap()
            .source
            .as_ref()
            .unwrap()
            .incarnation;
        assert_ne!(incarnation, 0);
        for o in &first {
            let batch = o.batch.as_ref().unwrap();
            assert_eq!(batch.sequence, o.id);
            assert_eq!(batch.source.as_ref().unwrap().incarnation, incarnation);
            assert_eq!(batch.source.as_ref().unwrap().instance, "pod-1");
            assert_eq!(o.events, batch.events.len() as u64);
        }

        // Everything delivered: the next batch still gets a new sequence,
        // or the collector would take it for a replay of the first.
        for o in &first {
            store.outbox_sent(o.id).unwrap();
        }
        assert!(store.outbox_pending(10).unwrap().is_empty());
        audit(&store, "b", vec![batch(1)], 3);
        let next = store.outbox_pending(10).unwrap();
        assert_eq!(next.iter().map(|o| o.id).collect::<Vec<_>>(), [3]);

        // Beyond the bound the oldest go, counted; a reopened store keeps
        // the incarnation.
        let stored = audit(&store, "c", vec![batch(4), batch(5), batch(6)], 3);
        assert_eq!(stored.dropped_events, 1, "batch 3 made room");
        drop(store);
        let store = Store::new(dir.path().join("a.db"), Duration::from_secs(1));
        let left = store.outbox_pending(10).unwrap();
        assert_eq!(left.iter().map(|o| o.id).collect::<Vec<_>>(), [4, 5, 6]);
        assert_eq!(
            left[0]
                .batch
                .as_ref()
                .unwrap()
                .source
                .as_ref()
                .unwrap()
                .incarnation,
            incarnation
        );
    }

    #[test]
    fn a_database_of_an_earlier_binary_gets_its_outbox_and_keeps_its_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.pragma_update(None, "application_id", APPLICATION_ID)
                .unwrap();
            conn.execute("INSERT INTO audited_head (id, head) VALUES (1, 'abc')", [])
                .unwrap();
        }
        let store = Store::new(path.clone(), Duration::from_secs(1));
        assert_eq!(store.baseline().unwrap().head.as_deref(), Some("abc"));
        assert!(store.outbox_pending(10).unwrap().is_empty());
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let incarnation: i64 = conn
            .query_row("SELECT incarnation FROM outbox_source", [], |r| r.get(0))
            .unwrap();
        assert!(incarnation > 0);
    }
}
