//! One reporting instance: its own Prometheus recorder (so its series go away
//! exactly when it does), the handles of its series, its liveness and its
//! replay windows.
//!
//! Every series of an instance lives in the instance's recorder, whose global
//! labels are `component` and `component_instance`. Known label sets are
//! registered (at 0) when the instance appears; free label values (kinds,
//! models, currencies) when first seen, within the cardinality guard.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::catalog::{self, Kind, METRICS, OTHER, id};
use crate::dedup::Window;
use crate::guard::Guard;
use crate::otlp::store::{OtlpGuard, OtlpSeries};
use crate::render::{instance_labels, label_value};

static METADATA: Metadata<'static> = Metadata::new("collector", Level::INFO, None);

/// A metric handle that can be registered with a recorder.
pub trait Handle: Clone {
    /// Registers (or finds) the series `key`.
    fn register(recorder: &PrometheusRecorder, key: &Key) -> Self;
}

impl Handle for Counter {
    fn register(recorder: &PrometheusRecorder, key: &Key) -> Self {
        recorder.register_counter(key, &METADATA)
    }
}

impl Handle for Gauge {
    fn register(recorder: &PrometheusRecorder, key: &Key) -> Self {
        recorder.register_gauge(key, &METADATA)
    }
}

impl Handle for Histogram {
    fn register(recorder: &PrometheusRecorder, key: &Key) -> Self {
        recorder.register_histogram(key, &METADATA)
    }
}

/// An instance's recorder, and the label sets it holds per metric.
pub struct Series {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    guard: Arc<Guard>,
    counts: Vec<AtomicUsize>,
    limited: Arc<dyn Fn(usize) + Send + Sync>,
}

impl std::fmt::Debug for Series {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Series").finish_non_exhaustive()
    }
}

impl Series {
    fn new(
        component: &str,
        instance: &str,
        guard: Arc<Guard>,
        limited: Arc<dyn Fn(usize) + Send + Sync>,
    ) -> Self {
        let mut builder = PrometheusBuilder::new()
            .add_global_label("component", exposable(component))
            .add_global_label("component_instance", exposable(instance));
        for m in METRICS.iter().filter(|m| m.kind == Kind::Histogram) {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(m.name.to_owned()), m.buckets)
                .expect("catalog histograms have buckets");
        }
        let recorder = builder.build_recorder();
        for m in METRICS {
            let (name, help) = (metrics::KeyName::from(m.name), m.help.into());
            match m.kind {
                Kind::Counter => recorder.describe_counter(name, None, help),
                Kind::Gauge => recorder.describe_gauge(name, None, help),
                Kind::Histogram => recorder.describe_histogram(name, None, help),
            }
        }
        let handle = recorder.handle();
        Self {
            recorder,
            handle,
            guard,
            counts: METRICS.iter().map(|_| AtomicUsize::new(0)).collect(),
            limited,
        }
    }

    /// Registers one series of metric `id` with `labels` (besides the common
    /// ones). Each caller registers a label set once and keeps the handle.
    pub fn register<H: Handle>(&self, id: usize, labels: &[(&'static str, &str)]) -> H {
        self.counts[id].fetch_add(1, Ordering::Relaxed);
        self.guard.add(id, 1);
        let labels: Vec<Label> = labels
            .iter()
            .map(|(k, v)| Label::new(*k, exposable(v)))
            .collect();
        H::register(&self.recorder, &Key::from_parts(METRICS[id].name, labels))
    }

    /// Whether `n` new label sets of metric `id` fit; counts the refusal when not.
    fn admits(&self, id: usize, n: usize) -> bool {
        let fits = self.guard.admits(id, n);
        if !fits {
            (self.limited)(id);
        }
        fits
    }

    /// The recorder's handle, for rendering and upkeep.
    pub fn handle(&self) -> &PrometheusHandle {
        &self.handle
    }
}

impl Drop for Series {
    fn drop(&mut self) {
        for (id, count) in self.counts.iter().enumerate() {
            self.guard.remove(id, count.load(Ordering::Relaxed));
        }
    }
}

/// A label value as the exporter must be given it to write it correctly.
///
/// The exporter escapes `"` and line feeds, but takes a backslash followed
/// by another character as an escape already made, so `pod\"1` and `pod"1`
/// would both come out as `pod\"1` and Prometheus would see one series for
/// two instances. Doubling every backslash first makes its output exact.
pub fn exposable(value: &str) -> String {
    value.replace('\\', "\\\\")
}

/// The series of one metric with one fixed label, known values registered up
/// front and `other` on first need. `extra` labels (a model) come first.
#[derive(Debug)]
pub struct Fixed<H> {
    id: usize,
    extra: Vec<(&'static str, String)>,
    handles: Vec<H>,
    other: OnceLock<H>,
}

impl<H: Handle> Fixed<H> {
    fn new(series: &Series, id: usize, extra: &[(&'static str, &str)]) -> Self {
        let label = fixed_label(id);
        let values = label.values.expect("a fixed label");
        let handles = values
            .iter()
            .map(|value| {
                let mut labels = extra.to_vec();
                labels.push((label.name, value));
                series.register(id, &labels)
            })
            .collect();
        Self {
            id,
            extra: extra.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            handles,
            other: OnceLock::new(),
        }
    }

    /// The series for the proto enum value `n` (`other` when unknown).
    pub fn at(&self, series: &Series, n: i32) -> &H {
        let index = usize::try_from(n).ok().and_then(|n| n.checked_sub(1));
        match index.and_then(|i| self.handles.get(i)) {
            Some(handle) => handle,
            None => self.other(series),
        }
    }

    /// The series for the `index`th allowed value.
    pub fn nth(&self, index: usize) -> &H {
        &self.handles[index]
    }

    fn other(&self, series: &Series) -> &H {
        self.other.get_or_init(|| {
            let mut labels: Vec<(&'static str, &str)> =
                self.extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
            labels.push((fixed_label(self.id).name, OTHER));
            series.register(self.id, &labels)
        })
    }
}

fn fixed_label(id: usize) -> &'static catalog::Label {
    METRICS[id]
        .labels
        .iter()
        .find(|l| l.values.is_some())
        .expect("metric has a fixed label")
}

/// Values keyed by a free label value, folded into `other` past the guard.
#[derive(Debug)]
pub struct Free<V> {
    id: usize,
    width: usize,
    by_value: Mutex<HashMap<String, V>>,
    folded: AtomicUsize,
}

/// Refused values remembered per family and instance, at most.
const MAX_FOLDED_VALUES: usize = 10_000;

impl<V: Clone> Free<V> {
    /// For metric `id`, where one new value adds `width` label sets.
    fn new(id: usize, width: usize) -> Self {
        Self {
            id,
            width,
            by_value: Mutex::new(HashMap::new()),
            folded: AtomicUsize::new(0),
        }
    }

    /// The entry for `value`, made by `make` on first sight (or `other`'s).
    pub fn get(&self, series: &Series, value: &str, make: impl Fn(&str) -> V) -> V {
        let mut map = self.by_value.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = map.get(value) {
            return v.clone();
        }
        if value == OTHER || series.admits(self.id, self.width) {
            let made = make(value);
            map.insert(value.to_owned(), made.clone());
            return made;
        }
        let other = match map.get(OTHER) {
            Some(v) => v.clone(),
            None => {
                let made = make(OTHER);
                map.insert(OTHER.to_owned(), made.clone());
                made
            }
        };
        // Remember the refusal, so each refused value is counted once.
        if self.folded.fetch_add(1, Ordering::Relaxed) < MAX_FOLDED_VALUES {
            map.insert(value.to_owned(), other.clone());
        }
        other
    }
}

/// Series every instance has: whether it is heard from.
#[derive(Debug)]
pub struct CommonMetrics {
    pub up: Gauge,
    pub stopped: Gauge,
}

impl CommonMetrics {
    fn new(s: &Series) -> Self {
        Self {
            up: s.register(id::UP, &[]),
            stopped: s.register(id::STOPPED, &[]),
        }
    }
}

/// Series of the platform's reporters: process and system figures from
/// heartbeats, async-bridge calls. An OTLP sender does not get them.
#[derive(Debug)]
pub struct ProcessMetrics {
    pub rss: Gauge,
    pub cpu: Counter,
    pub fds: Gauge,
    pub start_time: Gauge,
    pub mem_used: Gauge,
    pub mem_total: Gauge,
    pub disk_available: Gauge,
    pub disk_total: Gauge,
    pub cpu_usage: Gauge,
    pub dropped: Counter,
    pub spans_dropped: Counter,
    pub bridge_calls: Fixed<Counter>,
    pub bridge_errors: Fixed<Counter>,
    pub bridge_timeouts: Fixed<Counter>,
    pub bridge_pending: Gauge,
    pub bridge_loops: Gauge,
    pub bridge_duration: Fixed<Histogram>,
}

impl ProcessMetrics {
    fn new(s: &Series) -> Self {
        Self {
            rss: s.register(id::PROC_RSS, &[]),
            cpu: s.register(id::PROC_CPU, &[]),
            fds: s.register(id::PROC_FDS, &[]),
            start_time: s.register(id::PROC_START, &[]),
            mem_used: s.register(id::SYS_MEM_USED, &[]),
            mem_total: s.register(id::SYS_MEM_TOTAL, &[]),
            disk_available: s.register(id::SYS_DISK_AVAILABLE, &[]),
            disk_total: s.register(id::SYS_DISK_TOTAL, &[]),
            cpu_usage: s.register(id::SYS_CPU, &[]),
            dropped: s.register(id::REPORTER_DROPPED, &[]),
            spans_dropped: s.register(id::TRACE_DROPPED, &[]),
            bridge_calls: Fixed::new(s, id::BR_CALLS, &[]),
            bridge_errors: Fixed::new(s, id::BR_ERRORS, &[]),
            bridge_timeouts: Fixed::new(s, id::BR_TIMEOUTS, &[]),
            bridge_pending: s.register(id::BR_PENDING, &[]),
            bridge_loops: s.register(id::BR_LOOPS, &[]),
            bridge_duration: Fixed::new(s, id::BR_DURATION, &[]),
        }
    }
}

/// test-watcher series.
#[derive(Debug)]
pub struct WatcherMetrics {
    pub files_processed: Counter,
    pub tests_run: Fixed<Counter>,
    pub runs: Fixed<Counter>,
    pub api_calls: Fixed<Counter>,
    pub errors: Free<Counter>,
    pub changed_files: Gauge,
    pub processing_duration: Histogram,
    pub memory: Gauge,
    pub debounce_duration: Histogram,
    pub execution_duration: Histogram,
    pub last_run: Gauge,
}

impl WatcherMetrics {
    fn new(s: &Series) -> Self {
        Self {
            files_processed: s.register(id::TW_FILES_PROCESSED, &[]),
            tests_run: Fixed::new(s, id::TW_TESTS_RUN, &[]),
            runs: Fixed::new(s, id::TW_RUNS, &[]),
            api_calls: Fixed::new(s, id::TW_API_CALLS, &[]),
            errors: Free::new(id::TW_ERRORS, 1),
            changed_files: s.register(id::TW_CHANGED_FILES, &[]),
            processing_duration: s.register(id::TW_PROCESSING_DURATION, &[]),
            memory: s.register(id::TW_MEMORY, &[]),
            debounce_duration: s.register(id::TW_DEBOUNCE_DURATION, &[]),
            execution_duration: s.register(id::TW_EXECUTION_DURATION, &[]),
            last_run: s.register(id::TW_LAST_RUN, &[]),
        }
    }
}

/// audit-agent series. Coverage is registered only once known.
#[derive(Debug)]
pub struct AuditMetrics {
    pub runs: Fixed<Counter>,
    pub markers_found: Fixed<Counter>,
    pub commits: Counter,
    pub rewrites: Counter,
    pub errors: Free<Counter>,
    pub coverage: OnceLock<Gauge>,
    pub last_run: Gauge,
    pub active_tasks: Gauge,
    pub tasks: Fixed<Gauge>,
    pub run_duration: Histogram,
    pub analysis_duration: Fixed<Histogram>,
}

impl AuditMetrics {
    fn new(s: &Series) -> Self {
        Self {
            runs: Fixed::new(s, id::AA_RUNS, &[]),
            markers_found: Fixed::new(s, id::AA_MARKERS_FOUND, &[]),
            commits: s.register(id::AA_COMMITS, &[]),
            rewrites: s.register(id::AA_REWRITES, &[]),
            errors: Free::new(id::AA_ERRORS, 1),
            coverage: OnceLock::new(),
            last_run: s.register(id::AA_LAST_RUN, &[]),
            active_tasks: s.register(id::AA_ACTIVE_TASKS, &[]),
            tasks: Fixed::new(s, id::AA_TASKS, &[]),
            run_duration: s.register(id::AA_RUN_DURATION, &[]),
            analysis_duration: Fixed::new(s, id::AA_ANALYSIS_DURATION, &[]),
        }
    }
}

/// api-gateway series of one model.
#[derive(Debug)]
pub struct ModelMetrics {
    /// The `model` label (the model, or `other` past the guard).
    pub name: String,
    pub calls: Fixed<Counter>,
    pub rate_limits: Counter,
    pub retries: Fixed<Counter>,
    pub response_time: Gauge,
    pub tokens: Fixed<Counter>,
    pub reasoning_tokens: Counter,
    pub cost: Histogram,
    pub duration: Histogram,
    pub ttft: Histogram,
}

impl ModelMetrics {
    fn new(s: &Series, model: &str) -> Self {
        let m = [("model", model)];
        Self {
            name: model.to_owned(),
            calls: Fixed::new(s, id::API_CALLS, &m),
            rate_limits: s.register(id::API_RATE_LIMITS, &m),
            retries: Fixed::new(s, id::API_RETRIES, &m),
            response_time: s.register(id::API_RESPONSE_TIME, &m),
            tokens: Fixed::new(s, id::API_TOKENS, &m),
            reasoning_tokens: s.register(id::API_REASONING_TOKENS, &m),
            cost: s.register(id::API_COST, &m),
            duration: s.register(id::API_DURATION, &m),
            ttft: s.register(id::API_TTFT, &m),
        }
    }
}

/// api-gateway series.
#[derive(Debug)]
pub struct GatewayMetrics {
    pub models: Free<Arc<ModelMetrics>>,
    pub errors: Free<Counter>,
    pub in_flight: Gauge,
    pub balance: Free<Gauge>,
    pub circuit_open: Gauge,
}

impl GatewayMetrics {
    fn new(s: &Series) -> Self {
        Self {
            models: Free::new(id::API_CALLS, catalog::API_STATUSES.len()),
            errors: Free::new(id::API_ERRORS, 1),
            in_flight: s.register(id::API_IN_FLIGHT, &[]),
            balance: Free::new(id::API_BALANCE, 1),
            circuit_open: s.register(id::API_CIRCUIT_OPEN, &[]),
        }
    }

    /// The series of `model` (or `other` past the guard).
    pub fn model(&self, s: &Series, model: &str) -> Arc<ModelMetrics> {
        self.models
            .get(s, model, |m| Arc::new(ModelMetrics::new(s, m)))
    }
}

/// The collector's own series.
#[derive(Debug)]
pub struct CollectorMetrics {
    pub pushes: Fixed<Counter>,
    pub received: Fixed<Counter>,
    pub rejected: Fixed<Counter>,
    pub limited: Vec<OnceLock<Counter>>,
    pub otlp_limited: OnceLock<Counter>,
    pub push_duration: Histogram,
    pub windows_evicted: Counter,
    pub instances_evicted: Counter,
}

impl CollectorMetrics {
    fn new(s: &Series) -> Self {
        Self {
            pushes: Fixed::new(s, id::COL_PUSHES, &[]),
            received: Fixed::new(s, id::COL_RECEIVED, &[]),
            rejected: Fixed::new(s, id::COL_REJECTED, &[]),
            limited: METRICS.iter().map(|_| OnceLock::new()).collect(),
            otlp_limited: OnceLock::new(),
            push_duration: s.register(id::COL_PUSH_DURATION, &[]),
            windows_evicted: s.register(id::COL_WINDOWS_EVICTED, &[]),
            instances_evicted: s.register(id::COL_INSTANCES_EVICTED, &[]),
        }
    }
}

/// Whether an instance is heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Batches arrive.
    Up,
    /// Three heartbeat intervals passed without a batch.
    Down {
        /// When it was marked down.
        since: Instant,
    },
    /// It said goodbye.
    Stopped {
        /// When.
        since: Instant,
    },
}

/// Liveness of an instance.
#[derive(Debug)]
pub struct Liveness {
    pub presence: Presence,
    pub last_seen: Instant,
    pub interval: Duration,
    pub version: String,
}

/// Per-incarnation state: its replay window and the last cumulative figures
/// of its heartbeats, turned into counter increments.
#[derive(Debug, Default)]
pub struct Incarnation {
    pub window: Window,
    pub cpu_whole_seconds: u64,
    pub dropped_events: u64,
    pub dropped_spans: u64,
    pub last_seen: Option<Instant>,
}

/// A reporting instance.
#[derive(Debug)]
pub struct Instance {
    pub component: String,
    pub name: String,
    pub series: Series,
    pub common: CommonMetrics,
    process: OnceLock<ProcessMetrics>,
    watcher: OnceLock<WatcherMetrics>,
    audit: OnceLock<AuditMetrics>,
    gateway: OnceLock<GatewayMetrics>,
    collector: OnceLock<CollectorMetrics>,
    otlp: OnceLock<OtlpSeries>,
    pub liveness: Mutex<Liveness>,
    pub incarnations: Mutex<HashMap<u64, Incarnation>>,
    /// Metrics left out of `/metrics` (the exporter cannot delete a series).
    hidden: Mutex<Vec<&'static str>>,
}

/// The heartbeat interval assumed until an instance's first heartbeat says
/// its own: generous, so an instance whose first batch after a collector
/// restart carries no heartbeat is not marked down before its heartbeat comes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

impl Instance {
    /// A new instance with its known label sets at 0, marked up. A
    /// `platform` instance (one of the platform's reporters, not an OTLP
    /// sender) has its process, system, bridge and component series too.
    pub fn new(
        component: &str,
        name: &str,
        platform: bool,
        guard: Arc<Guard>,
        limited: Arc<dyn Fn(usize) + Send + Sync>,
        now: Instant,
    ) -> Self {
        let series = Series::new(component, name, guard, limited);
        let common = CommonMetrics::new(&series);
        common.up.set(1.0);
        let instance = Self {
            component: component.to_owned(),
            name: name.to_owned(),
            series,
            common,
            process: OnceLock::new(),
            watcher: OnceLock::new(),
            audit: OnceLock::new(),
            gateway: OnceLock::new(),
            collector: OnceLock::new(),
            otlp: OnceLock::new(),
            liveness: Mutex::new(Liveness {
                presence: Presence::Up,
                last_seen: now,
                interval: DEFAULT_INTERVAL,
                version: String::new(),
            }),
            incarnations: Mutex::new(HashMap::new()),
            hidden: Mutex::new(Vec::new()),
        };
        if !platform {
            return instance;
        }
        instance.process();
        match component {
            "test-watcher" => {
                instance.watcher();
            }
            "audit-agent" => {
                instance.audit();
            }
            "api-gateway" => {
                instance.gateway();
            }
            "collector" => {
                instance.collector();
            }
            _ => {}
        }
        instance
    }

    /// Process, system and bridge series, registered on first use.
    pub fn process(&self) -> &ProcessMetrics {
        self.process
            .get_or_init(|| ProcessMetrics::new(&self.series))
    }

    /// test-watcher series, registered on first use.
    pub fn watcher(&self) -> &WatcherMetrics {
        self.watcher
            .get_or_init(|| WatcherMetrics::new(&self.series))
    }

    /// audit-agent series, registered on first use.
    pub fn audit(&self) -> &AuditMetrics {
        self.audit.get_or_init(|| AuditMetrics::new(&self.series))
    }

    /// api-gateway series, registered on first use.
    pub fn gateway(&self) -> &GatewayMetrics {
        self.gateway
            .get_or_init(|| GatewayMetrics::new(&self.series))
    }

    /// The collector's own series, registered on first use.
    pub fn collector(&self) -> &CollectorMetrics {
        self.collector
            .get_or_init(|| CollectorMetrics::new(&self.series))
    }

    /// Its OTLP series, made on first use under `guard`.
    pub fn otlp(&self, guard: &Arc<OtlpGuard>) -> &OtlpSeries {
        self.otlp.get_or_init(|| OtlpSeries::new(Arc::clone(guard)))
    }

    /// The liveness, locked.
    pub fn liveness(&self) -> std::sync::MutexGuard<'_, Liveness> {
        self.liveness.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The incarnations, locked.
    pub fn incarnations(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Incarnation>> {
        self.incarnations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Leaves the series of `metric` out of `/metrics` until shown again.
    pub fn hide(&self, metric: &'static str) {
        let mut hidden = self.hidden.lock().unwrap_or_else(PoisonError::into_inner);
        if !hidden.contains(&metric) {
            hidden.push(metric);
        }
    }

    /// Undoes [`Instance::hide`].
    pub fn show(&self, metric: &'static str) {
        let mut hidden = self.hidden.lock().unwrap_or_else(PoisonError::into_inner);
        hidden.retain(|m| *m != metric);
    }

    /// This instance's exposition text, without its hidden series, and
    /// its `automation_component_info` series for the current version.
    pub fn render(&self) -> String {
        let mut text = self.series.handle().render();
        let hidden = self
            .hidden
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if !hidden.is_empty() {
            let mut kept = String::with_capacity(text.len());
            for line in text.split_inclusive('\n') {
                let drop = hidden.iter().any(|metric| {
                    line.strip_prefix(metric)
                        .is_some_and(|rest| rest.starts_with(['{', ' ']))
                });
                if !drop {
                    kept.push_str(line);
                }
            }
            text = kept;
        }
        let labels = instance_labels(&self.component, &self.name);
        self.render_info(&labels, &mut text);
        if let Some(otlp) = self.otlp.get() {
            otlp.render(&labels, &mut text);
        }
        text
    }

    /// `automation_component_info` is written here rather than kept in the
    /// recorder: the exporter cannot delete a series, so every version an
    /// instance ever reported would stay in memory and in each render.
    fn render_info(&self, labels: &str, out: &mut String) {
        let version = self.liveness().version.clone();
        if version.is_empty() {
            return;
        }
        let info = &METRICS[id::INFO];
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels},version=\"{version}\"}} 1\n\n",
            name = info.name,
            help = info.help,
            version = label_value(&version),
        ));
    }

    /// Records `version` in `automation_component_info`.
    pub fn set_version(&self, version: &str) {
        let mut live = self.liveness();
        if live.version != version {
            live.version = version.to_owned();
        }
    }
}
