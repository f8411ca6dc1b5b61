//! One audit: read the baseline, run the three analyses side by side on
//! the blocking pool (through the async bridge), work out what is new,
//! and store it all in one transaction with its events for the collector
//! (the outbox, see [`crate::outbox`]) — so a fact is counted once, when it
//! is stored, and never again, even across a crash.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use automation_async_bridge::{Bridge, BridgeError};
use automation_proto::v1::{
    self, AnalysisTiming, AuditProblem, AuditReport, CoverageSummary, DocumentSummary, MarkerCount,
    TaskCounts,
};
use automation_telemetry::reporter::Reporter;
use tracing::Instrument;

use crate::coverage::{self, Coverage, Format};
use crate::git::{self, GitFacts};
use crate::markers::{self, MarkdownConfig, Scan};
use crate::model::{MarkerKind, TaskState};
use crate::outbox::{self, Outbox};
use crate::store::{Baseline, Commit, DocumentItems, Store};

/// What an audit looks at and how.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The repository (its working tree).
    pub root: PathBuf,
    /// Which Markdown files hold plan items.
    pub markdown: MarkdownConfig,
    /// A coverage report (relative to `root`), or `None` to look for one.
    pub coverage_path: Option<PathBuf>,
    /// Its format, or `None` to tell from the contents.
    pub coverage_format: Option<Format>,
    /// The longest any one analysis may take.
    pub analysis_timeout: Duration,
    /// Reports kept in the database (0: all).
    pub keep_reports: u64,
}

impl AuditConfig {
    /// Defaults for `root`: all Markdown files, coverage found by itself.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            markdown: MarkdownConfig::default(),
            coverage_path: None,
            coverage_format: None,
            analysis_timeout: Duration::from_secs(300),
            keep_reports: 10_000,
        }
    }
}

/// Runs audits; one at a time is the caller's business (see `engine`).
#[derive(Debug)]
pub struct Auditor {
    config: AuditConfig,
    store: Arc<Store>,
    bridge: Bridge,
    reporter: Option<Reporter>,
    outbox: Option<Outbox>,
}

/// The longest a database step may take before it counts as failed.
const STORE_TIMEOUT: Duration = Duration::from_secs(60);

impl Auditor {
    /// An auditor writing to `store`, reporting to `reporter`: a stored
    /// audit through the outbox, one that could not be stored directly.
    pub fn new(
        config: AuditConfig,
        store: Arc<Store>,
        bridge: Bridge,
        reporter: Option<Reporter>,
    ) -> Self {
        Self {
            config,
            store,
            bridge,
            outbox: reporter.clone().map(Outbox::new),
            reporter,
        }
    }

    /// The outbox stored audits are reported through, when reporting.
    pub fn outbox(&self) -> Option<&Outbox> {
        self.outbox.as_ref()
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The bridge blocking work goes through.
    pub fn bridge(&self) -> &Bridge {
        &self.bridge
    }

    /// Audits once. Never fails as a whole: what could not be read is a
    /// problem in the report, and the rest goes on.
    pub async fn audit(&self, reason: &str) -> AuditReport {
        let span = if automation_telemetry::trace::enabled() {
            tracing::info_span!("audit", reason)
        } else {
            tracing::Span::none()
        };
        self.audit_once(reason).instrument(span).await
    }

    async fn audit_once(&self, reason: &str) -> AuditReport {
        let started_at = SystemTime::now();
        let clock = Instant::now();
        let mut problems = Vec::new();
        // One audit reads one checkout, even if a sync swaps the root's link
        // to a new one meanwhile.
        let root =
            std::fs::canonicalize(&self.config.root).unwrap_or_else(|_| self.config.root.clone());
        let timeout = self.config.analysis_timeout;

        let store = Arc::clone(&self.store);
        let baseline = blocking(&self.bridge, STORE_TIMEOUT, move || store.baseline()).await;
        let baseline = match baseline {
            Ok(b) => Some(b),
            Err(message) => {
                problems.push(problem("database", "", message));
                None
            }
        };
        let previous = baseline.as_ref().and_then(|b| b.head.clone());

        let git = {
            let root = root.clone();
            let previous = previous.clone();
            timed(&self.bridge, "git", timeout, move || {
                git::inspect(&root, previous.as_deref())
            })
        };
        let scan = {
            let (root, markdown) = (root.clone(), self.config.markdown.clone());
            timed(&self.bridge, "markers", timeout, move || {
                markers::scan(&root, &markdown)
            })
        };
        let cover = {
            let (root, path, format) = (
                root.clone(),
                self.config.coverage_path.clone(),
                self.config.coverage_format,
            );
            timed(&self.bridge, "coverage", timeout, move || {
                coverage::load(&root, path.as_deref(), format)
            })
        };
        let ((git, git_secs), (scan, scan_secs), (cover, cover_secs)) =
            tokio::join!(git, scan, cover);
        let analyses = vec![
            timing(v1::Analysis::Git, git_secs),
            timing(v1::Analysis::Markers, scan_secs),
            timing(v1::Analysis::Coverage, cover_secs),
        ];

        let git = git.map_err(|m| problems.push(problem("git", "", m))).ok();
        if let Some(note) = git.as_ref().and_then(|g| g.note.clone()) {
            problems.push(problem("git", "", note));
        }
        let scan = scan
            .map_err(|m| problems.push(problem("markdown", "", m)))
            .ok();
        if let Some(scan) = &scan {
            for p in &scan.problems {
                problems.push(problem("markdown", &p.path, p.message.clone()));
            }
        }
        let cover = match cover {
            Ok(c) => c,
            Err(m) => {
                problems.push(problem("coverage", "", m));
                None
            }
        };

        let empty = Baseline::default();
        let plan = Plan::new(scan.as_ref(), baseline.as_ref().unwrap_or(&empty));
        let failed = git.is_none() && scan.is_none();
        let mut report = AuditReport {
            id: 0,
            started_at: Some(started_at.into()),
            duration_seconds: 0.0,
            result: v1::AuditResult::Ok as i32,
            reason: reason.to_owned(),
            repository: self.config.root.display().to_string(),
            head: git
                .as_ref()
                .and_then(|g| g.head.clone())
                .unwrap_or_default(),
            previous_head: previous.clone().unwrap_or_default(),
            branch: git
                .as_ref()
                .and_then(|g| g.branch.clone())
                .unwrap_or_default(),
            new_commits: git.as_ref().map_or(0, |g| g.new_commits),
            history_rewritten: git.as_ref().is_some_and(|g| g.history_rewritten),
            analyses,
            tasks: Some(plan.totals),
            newly_completed: plan.newly_completed(),
            coverage: cover.as_ref().map(|c| summary(c, &root)),
            problems: Vec::new(),
            documents_scanned: scan.as_ref().map_or(0, |s| s.documents.len() as u64),
            documents: Vec::new(),
        };

        // Store, then count: what is not stored is not counted, and will be
        // counted by the audit that stores it. What is stored is counted
        // through the outbox written with it.
        let mut reported = false;
        match baseline {
            Some(baseline) => {
                let stored = {
                    let mut stored = report.clone();
                    stored.result = outcome(failed, &problems) as i32;
                    stored.problems = problems.clone();
                    stored.duration_seconds = clock.elapsed().as_secs_f64();
                    stored
                };
                let commit = Commit {
                    expected_head: baseline.head.clone(),
                    new_head: git.as_ref().map(|g: &GitFacts| g.head.clone()),
                    documents: plan.changed,
                    removed: plan.removed,
                    outbox: self
                        .outbox
                        .as_ref()
                        .map(|o| o.batches(events(&stored)))
                        .unwrap_or_default(),
                    keep_outbox: outbox::MAX_BATCHES,
                    report: stored,
                    keep_reports: self.config.keep_reports,
                };
                let store = Arc::clone(&self.store);
                let stored =
                    blocking(&self.bridge, STORE_TIMEOUT, move || store.commit(&commit)).await;
                match stored {
                    Ok(stored) => {
                        report.id = stored.id;
                        if let Some(outbox) = &self.outbox {
                            if stored.dropped_events > 0 {
                                tracing::warn!(
                                    events = stored.dropped_events,
                                    kept = outbox::MAX_BATCHES,
                                    "the outbox is full: its oldest undelivered events were dropped"
                                );
                                outbox.dropped(stored.dropped_events);
                            }
                            outbox.wake();
                            reported = true;
                        }
                    }
                    Err(message) => {
                        uncount(&mut report);
                        problems.push(problem(
                            "database",
                            "",
                            format!(
                                "{message}; nothing of this audit was counted, the next \
                                 audit that can write will count it"
                            ),
                        ));
                    }
                }
            }
            None => uncount(&mut report),
        }
        report.result = outcome(failed, &problems) as i32;
        report.problems = problems;
        report.documents = plan.documents;
        report.duration_seconds = clock.elapsed().as_secs_f64();
        if !reported && let Some(reporter) = &self.reporter {
            for event in events(&report) {
                reporter.report(event);
            }
        }
        tracing::info!(
            id = report.id,
            result = ?v1::AuditResult::try_from(report.result).unwrap_or_default(),
            new_commits = report.new_commits,
            problems = report.problems.len(),
            seconds = report.duration_seconds,
            "audit finished"
        );
        report
    }
}

/// The events of an audit: one error per problem, then the run.
fn events(report: &AuditReport) -> Vec<v1::event::Payload> {
    let mut events: Vec<_> = report
        .problems
        .iter()
        .map(|p| {
            let message = if p.path.is_empty() {
                p.message.clone()
            } else {
                format!("{}: {}", p.path, p.message)
            };
            v1::event::Payload::Error(v1::ComponentError {
                kind: p.kind.clone(),
                message,
                model: String::new(),
            })
        })
        .collect();
    let tasks = report.tasks.unwrap_or_default();
    events.push(v1::event::Payload::AuditRun(v1::AuditRun {
        result: report.result,
        duration_seconds: report.duration_seconds,
        analyses: report.analyses.clone(),
        new_commits: report.new_commits,
        history_rewritten: report.history_rewritten,
        newly_completed: report.newly_completed.clone(),
        coverage_percent: report.coverage.as_ref().and_then(|c| c.percent),
        tasks_done: tasks.done,
        tasks_in_progress: tasks.in_progress,
        tasks_planned: tasks.planned,
    }));
    events
}

/// The plan items of this audit against the stored ones.
struct Plan {
    /// Documents whose items changed: written.
    changed: Vec<(String, DocumentItems)>,
    /// Documents that are gone: their items deleted.
    removed: Vec<String>,
    /// Items newly done, by marker.
    newly: BTreeMap<MarkerKind, u64>,
    /// Current items by state.
    totals: TaskCounts,
    /// Per document.
    documents: Vec<DocumentSummary>,
}

impl Plan {
    /// Compares `scan` (when the scan ran) with `baseline`. A document the
    /// scan could not read keeps its stored items and counts with them;
    /// when the scan did not run at all nothing is changed or removed.
    fn new(scan: Option<&Scan>, baseline: &Baseline) -> Self {
        let mut plan = Self {
            changed: Vec::new(),
            removed: Vec::new(),
            newly: BTreeMap::new(),
            totals: TaskCounts::default(),
            documents: Vec::new(),
        };
        let Some(scan) = scan else {
            let mut kept: Vec<_> = baseline.documents.iter().collect();
            kept.sort_by(|a, b| a.0.cmp(b.0));
            for (path, items) in kept {
                plan.add(path, items.values().copied());
            }
            return plan;
        };
        let unreadable: HashSet<&str> = scan.problems.iter().map(|p| p.path.as_str()).collect();
        let mut seen = HashSet::new();
        for doc in &scan.documents {
            seen.insert(doc.path.as_str());
            let before = baseline.documents.get(&doc.path);
            let mut items: DocumentItems = HashMap::with_capacity(doc.items.len());
            for item in &doc.items {
                items.insert((item.marker, item.key.clone()), item.state);
                let was = before.and_then(|b| b.get(&(item.marker, item.key.clone())));
                if item.state == TaskState::Done && was != Some(&TaskState::Done) {
                    *plan.newly.entry(item.marker).or_default() += 1;
                }
            }
            plan.add(&doc.path, doc.items.iter().map(|i| i.state));
            if before != Some(&items) && !(before.is_none() && items.is_empty()) {
                plan.changed.push((doc.path.clone(), items));
            }
        }
        let mut kept: Vec<_> = baseline
            .documents
            .iter()
            .filter(|(path, _)| !seen.contains(path.as_str()))
            .collect();
        kept.sort_by(|a, b| a.0.cmp(b.0));
        for (path, items) in kept {
            if unreadable.contains(path.as_str()) {
                plan.add(path, items.values().copied());
            } else {
                plan.removed.push(path.clone());
            }
        }
        plan.documents.sort_by(|a, b| a.path.cmp(&b.path));
        plan
    }

    fn add(&mut self, path: &str, states: impl Iterator<Item = TaskState>) {
        let mut counts = TaskCounts::default();
        for state in states {
            match state {
                TaskState::Done => counts.done += 1,
                TaskState::InProgress => counts.in_progress += 1,
                TaskState::Planned => counts.planned += 1,
            }
        }
        self.totals.done += counts.done;
        self.totals.in_progress += counts.in_progress;
        self.totals.planned += counts.planned;
        self.documents.push(DocumentSummary {
            path: path.to_owned(),
            tasks: Some(counts),
        });
    }

    fn newly_completed(&self) -> Vec<MarkerCount> {
        self.newly
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(marker, count)| MarkerCount {
                marker: marker_enum(*marker) as i32,
                count: *count,
            })
            .collect()
    }
}

fn marker_enum(marker: MarkerKind) -> v1::Marker {
    match marker {
        MarkerKind::Checkbox => v1::Marker::Checkbox,
        MarkerKind::DoneEmoji => v1::Marker::DoneEmoji,
        MarkerKind::StatusLine => v1::Marker::StatusLine,
    }
}

/// Runs `work` (the analysis named `analysis`) on the blocking pool within
/// `timeout`, in its own span, returning its result (errors as text) and how
/// long it took.
async fn timed<T, E>(
    bridge: &Bridge,
    analysis: &'static str,
    timeout: Duration,
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> (Result<T, String>, f64)
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let span = if automation_telemetry::trace::enabled() {
        tracing::info_span!("analysis", analysis, error = tracing::field::Empty)
    } else {
        tracing::Span::none()
    };
    let outcome = bridge
        .run_blocking(timeout, move || {
            let clock = Instant::now();
            let result = work().map_err(|e| e.to_string());
            (result, clock.elapsed().as_secs_f64())
        })
        .instrument(span.clone())
        .await;
    let (result, secs) = match outcome {
        Ok((result, secs)) => (result, secs),
        Err(e @ BridgeError::Timeout(limit)) => (Err(e.to_string()), limit.as_secs_f64()),
        Err(e) => (Err(e.to_string()), 0.0),
    };
    if let Err(error) = &result {
        span.record("error", error.as_str());
    }
    (result, secs)
}

/// Runs fallible blocking `work` through the bridge within `timeout`: its
/// value, or its own error or the bridge's (a timeout, a panic) as text.
pub(crate) async fn blocking<T, E>(
    bridge: &Bridge,
    timeout: Duration,
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, String>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    match bridge.run_blocking(timeout, work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn timing(analysis: v1::Analysis, duration_seconds: f64) -> AnalysisTiming {
    AnalysisTiming {
        analysis: analysis as i32,
        duration_seconds,
    }
}

fn problem(kind: &str, path: &str, message: String) -> AuditProblem {
    AuditProblem {
        kind: kind.to_owned(),
        path: path.to_owned(),
        message,
    }
}

/// Facts that were not stored are not reported as counted.
fn uncount(report: &mut AuditReport) {
    report.new_commits = 0;
    report.history_rewritten = false;
    report.newly_completed.clear();
}

fn outcome(failed: bool, problems: &[AuditProblem]) -> v1::AuditResult {
    if failed {
        v1::AuditResult::Failed
    } else if problems.is_empty() {
        v1::AuditResult::Ok
    } else {
        v1::AuditResult::Partial
    }
}

fn summary(c: &Coverage, root: &std::path::Path) -> CoverageSummary {
    let path = c.path.strip_prefix(root).unwrap_or(&c.path);
    CoverageSummary {
        path: path.display().to_string(),
        format: c.format.as_str().to_owned(),
        lines_covered: c.lines_covered,
        lines_valid: c.lines_valid,
        percent: c.percent(),
    }
}
