//! The metric catalog (DESIGN §5): every metric the collector serves, defined
//! once. Registration, the printed catalog (`collector catalog`) and the
//! checks on dashboards and alerts all read this table.

use serde::Serialize;

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A whole-number counter.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A Prometheus histogram with the metric's buckets.
    Histogram,
}

/// A label besides `component` and `component_instance`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Label {
    /// The label name.
    pub name: &'static str,
    /// The allowed values; anything else becomes `other`. `None`: free
    /// values, bounded by the cardinality guard and the label length limit.
    pub values: Option<&'static [&'static str]>,
}

/// One metric of the catalog.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MetricDef {
    /// The Prometheus name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// The base unit, when it has one.
    pub unit: &'static str,
    /// The HELP text.
    pub help: &'static str,
    /// Labels besides `component` and `component_instance`.
    pub labels: &'static [Label],
    /// Histogram bucket upper bounds.
    #[serde(skip_serializing_if = "<[f64]>::is_empty")]
    pub buckets: &'static [f64],
}

/// The labels every series from a service carries.
pub const COMMON_LABELS: [&str; 2] = ["component", "component_instance"];

/// The components; a reporter naming another service is labelled `other`.
pub const COMPONENTS: &[&str] = &["test-watcher", "audit-agent", "api-gateway", "collector"];

/// The value a label takes outside its allowed set, or over the cardinality limit.
pub const OTHER: &str = "other";

/// `test_watcher_tests_run_total{outcome}`.
pub const TEST_OUTCOMES: &[&str] = &["passed", "failed", "ignored"];
/// `test_watcher_runs_total{result}`, in `RunResult` order from 1.
pub const RUN_RESULTS: &[&str] = &["passed", "failed", "error", "cancelled", "timeout"];
/// Call outcomes, in `CallOutcome` order from 1.
pub const CALL_OUTCOMES: &[&str] = &["ok", "error"];
/// `audit_agent_runs_total{result}`, in `AuditResult` order from 1.
pub const AUDIT_RESULTS: &[&str] = &["ok", "partial", "failed"];
/// `audit_agent_completion_markers_found_total{marker}`, in `Marker` order from 1.
pub const MARKERS: &[&str] = &["checkbox", "done_emoji", "status_line"];
/// `audit_agent_tasks{state}`.
pub const TASK_STATES: &[&str] = &["done", "in_progress", "planned"];
/// `audit_agent_analysis_duration_seconds{analysis}`, in `Analysis` order from 1.
pub const ANALYSES: &[&str] = &["git", "markers", "coverage"];
/// Bridge directions, in `BridgeDirection` order from 1.
pub const DIRECTIONS: &[&str] = &["to_async", "to_blocking"];
/// `deepseek_api_calls_total{status}`, in `ApiStatus` order from 1.
pub const API_STATUSES: &[&str] = &[
    "ok",
    "invalid",
    "unauthorized",
    "payment_required",
    "rate_limited",
    "server_error",
    "timeout",
    "unavailable",
    "cancelled",
];
/// `deepseek_api_retries_total{reason}`, in `RetryReason` order from 1.
pub const RETRY_REASONS: &[&str] = &["rate_limited", "server_error", "timeout", "connection"];
/// `deepseek_api_tokens_used_total{type}`.
pub const TOKEN_TYPES: &[&str] = &["input_cache_hit", "input_cache_miss", "output"];
/// The answer to a push: the `code` of `collector_pushes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushCode {
    /// Applied.
    Ok = 0,
    /// Refused whole with `INVALID_ARGUMENT`.
    Invalid = 1,
    /// No or a wrong bearer token.
    Unauthenticated = 2,
    /// Saturated: `RESOURCE_EXHAUSTED`.
    Exhausted = 3,
    /// A replay, not applied again.
    Duplicate = 4,
    /// Over the decoding ceiling: `RESOURCE_EXHAUSTED` before being decoded.
    TooLarge = 5,
    /// The token may not push as the batch's source: `PERMISSION_DENIED`.
    PermissionDenied = 6,
    /// The body did not arrive in time: `DEADLINE_EXCEEDED`.
    Timeout = 7,
}

/// `collector_pushes_total{code}`, in [`PushCode`] order.
pub const PUSH_CODES: &[&str] = &[
    "ok",
    "invalid",
    "unauthenticated",
    "exhausted",
    "duplicate",
    "too_large",
    "permission_denied",
    "timeout",
];
/// `collector_events_received_total{event}`, in `event::Payload` order.
pub const EVENTS: &[&str] = &[
    "heartbeat",
    "file_changes",
    "test_run",
    "audit_run",
    "api_call",
    "bridge_call",
    "error",
    "goodbye",
    "gateway_request",
    "otlp_data_point",
];
/// The index of OTLP data points in [`EVENTS`].
pub const EVENT_OTLP: usize = 9;
/// `collector_series_limited_total{metric}` of OTLP series refused by the guard.
pub const OTLP_LIMITED: &str = "otlp";
/// `collector_events_rejected_total{reason}`.
pub const REJECT_REASONS: &[&str] = &[
    "no_payload",
    "invalid_duration",
    "invalid_value",
    "label_too_long",
    "value_too_large",
    "invalid_time",
    "unsupported_metric",
    "metric_conflict",
];

/// The largest values one event may carry. Nothing real comes near them;
/// an event over one is rejected (`value_too_large`, or `invalid_time` for
/// a time in the future) rather than wrapping a counter or skewing a sum.
pub mod limits {
    /// Any duration (seconds): one week.
    pub const DURATION_SECONDS: f64 = 7.0 * 86_400.0;
    /// A heartbeat's own interval (seconds): one hour.
    pub const HEARTBEAT_INTERVAL_SECONDS: f64 = 3_600.0;
    /// A count carried by one event (tests, files, commits, markers, tasks,
    /// tokens) or a current count (open files, pending tasks, requests).
    pub const COUNT: u64 = 1_000_000_000;
    /// A cumulative count a heartbeat carries (events dropped).
    pub const CUMULATIVE_COUNT: u64 = 1_000_000_000_000_000;
    /// Bytes (memory, disk): 1 PiB.
    pub const BYTES: u64 = 1 << 50;
    /// A process's CPU time (seconds): about 3,000 core-years.
    pub const CPU_SECONDS: f64 = 1e11;
    /// The cost of one API request (USD).
    pub const COST_USD: f64 = 10_000.0;
    /// An account balance, either sign.
    pub const BALANCE: f64 = 1e12;
    /// How far in the future an event time or a start time may be (seconds).
    pub const FUTURE_SECONDS: f64 = 86_400.0;
    /// Attributes of one OTLP data point.
    pub const OTLP_ATTRIBUTES: usize = 32;
    /// Bucket bounds of one OTLP histogram point.
    pub const HISTOGRAM_BOUNDS: usize = 128;
}

/// One entry of the printed limits.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ValueLimit {
    /// The fields it bounds.
    pub applies_to: &'static str,
    /// The largest accepted value.
    pub max: f64,
}

/// [`limits`], as `collector catalog` prints them.
pub const VALUE_LIMITS: &[ValueLimit] = &[
    ValueLimit {
        applies_to: "every duration (seconds)",
        max: limits::DURATION_SECONDS,
    },
    ValueLimit {
        applies_to: "heartbeat interval_seconds",
        max: limits::HEARTBEAT_INTERVAL_SECONDS,
    },
    ValueLimit {
        applies_to: "counts in one event and current counts",
        max: limits::COUNT as f64,
    },
    ValueLimit {
        applies_to: "heartbeat events_dropped_total, spans_dropped_total",
        max: limits::CUMULATIVE_COUNT as f64,
    },
    ValueLimit {
        applies_to: "heartbeat cpu_usage_ratio",
        max: 1.0,
    },
    ValueLimit {
        applies_to: "bytes (memory, disk)",
        max: limits::BYTES as f64,
    },
    ValueLimit {
        applies_to: "process cpu_seconds_total",
        max: limits::CPU_SECONDS,
    },
    ValueLimit {
        applies_to: "api call cost_usd",
        max: limits::COST_USD,
    },
    ValueLimit {
        applies_to: "balance amount (absolute)",
        max: limits::BALANCE,
    },
    ValueLimit {
        applies_to: "event time and process start time, seconds past now",
        max: limits::FUTURE_SECONDS,
    },
    ValueLimit {
        applies_to: "attributes of an OTLP data point",
        max: limits::OTLP_ATTRIBUTES as f64,
    },
    ValueLimit {
        applies_to: "bucket bounds of an OTLP histogram point",
        max: limits::HISTOGRAM_BOUNDS as f64,
    },
];

const fn fixed(name: &'static str, values: &'static [&'static str]) -> Label {
    Label {
        name,
        values: Some(values),
    }
}

const fn free(name: &'static str) -> Label {
    Label { name, values: None }
}

const NONE: &[Label] = &[];
const MODEL: &[Label] = &[free("model")];

const B_1MS_10S: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const B_10MS_10S: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const B_500MS_1800S: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
];
const B_10MS_600S: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
const B_1MS_300S: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];
const B_10US_60S: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const B_USD: &[f64] = &[
    0.000001, 0.00001, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
];
const B_5MS_1800S: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1200.0, 1800.0,
];
const B_5MS_600S: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
const B_50US_1S: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

const fn counter(name: &'static str, help: &'static str, labels: &'static [Label]) -> MetricDef {
    MetricDef {
        name,
        kind: Kind::Counter,
        unit: "",
        help,
        labels,
        buckets: &[],
    }
}

const fn gauge(
    name: &'static str,
    unit: &'static str,
    help: &'static str,
    labels: &'static [Label],
) -> MetricDef {
    MetricDef {
        name,
        kind: Kind::Gauge,
        unit,
        help,
        labels,
        buckets: &[],
    }
}

const fn histogram(
    name: &'static str,
    unit: &'static str,
    help: &'static str,
    labels: &'static [Label],
    buckets: &'static [f64],
) -> MetricDef {
    MetricDef {
        name,
        kind: Kind::Histogram,
        unit,
        help,
        labels,
        buckets,
    }
}

/// Indexes into [`METRICS`], one per metric, in catalog order.
#[allow(missing_docs)]
pub mod id {
    pub const TW_FILES_PROCESSED: usize = 0;
    pub const TW_TESTS_RUN: usize = 1;
    pub const TW_RUNS: usize = 2;
    pub const TW_API_CALLS: usize = 3;
    pub const TW_ERRORS: usize = 4;
    pub const TW_CHANGED_FILES: usize = 5;
    pub const TW_PROCESSING_DURATION: usize = 6;
    pub const TW_MEMORY: usize = 7;
    pub const TW_DEBOUNCE_DURATION: usize = 8;
    pub const TW_EXECUTION_DURATION: usize = 9;
    pub const TW_LAST_RUN: usize = 10;
    pub const AA_RUNS: usize = 11;
    pub const AA_MARKERS_FOUND: usize = 12;
    pub const AA_COMMITS: usize = 13;
    pub const AA_REWRITES: usize = 14;
    pub const AA_ERRORS: usize = 15;
    pub const AA_COVERAGE: usize = 16;
    pub const AA_LAST_RUN: usize = 17;
    pub const AA_ACTIVE_TASKS: usize = 18;
    pub const AA_TASKS: usize = 19;
    pub const AA_RUN_DURATION: usize = 20;
    pub const AA_ANALYSIS_DURATION: usize = 21;
    pub const BR_CALLS: usize = 22;
    pub const BR_ERRORS: usize = 23;
    pub const BR_TIMEOUTS: usize = 24;
    pub const BR_PENDING: usize = 25;
    pub const BR_LOOPS: usize = 26;
    pub const BR_DURATION: usize = 27;
    pub const API_CALLS: usize = 28;
    pub const API_ERRORS: usize = 29;
    pub const API_RATE_LIMITS: usize = 30;
    pub const API_RETRIES: usize = 31;
    pub const API_RESPONSE_TIME: usize = 32;
    pub const API_TOKENS: usize = 33;
    pub const API_REASONING_TOKENS: usize = 34;
    pub const API_COST: usize = 35;
    pub const API_DURATION: usize = 36;
    pub const API_TTFT: usize = 37;
    pub const API_IN_FLIGHT: usize = 38;
    pub const API_BALANCE: usize = 39;
    pub const API_CIRCUIT_OPEN: usize = 40;
    pub const PROC_RSS: usize = 41;
    pub const PROC_CPU: usize = 42;
    pub const PROC_FDS: usize = 43;
    pub const PROC_START: usize = 44;
    pub const SYS_MEM_USED: usize = 45;
    pub const SYS_MEM_TOTAL: usize = 46;
    pub const SYS_DISK_AVAILABLE: usize = 47;
    pub const REPORTER_DROPPED: usize = 48;
    pub const UP: usize = 49;
    pub const STOPPED: usize = 50;
    pub const INFO: usize = 51;
    pub const COL_PUSHES: usize = 52;
    pub const COL_RECEIVED: usize = 53;
    pub const COL_REJECTED: usize = 54;
    pub const COL_LIMITED: usize = 55;
    pub const COL_PUSH_DURATION: usize = 56;
    pub const COL_WINDOWS_EVICTED: usize = 57;
    pub const COL_INSTANCES_EVICTED: usize = 58;
    pub const TRACE_DROPPED: usize = 59;
    pub const SYS_CPU: usize = 60;
    pub const SYS_DISK_TOTAL: usize = 61;
}

/// Every metric, in the order of [`id`].
pub static METRICS: &[MetricDef] = &[
    counter(
        "test_watcher_files_processed_total",
        "Changed files released to a test run by the debouncer.",
        NONE,
    ),
    counter(
        "test_watcher_tests_run_total",
        "Tests executed, by outcome.",
        &[fixed("outcome", TEST_OUTCOMES)],
    ),
    counter(
        "test_watcher_runs_total",
        "Test runs, by result.",
        &[fixed("result", RUN_RESULTS)],
    ),
    counter(
        "test_watcher_api_calls_total",
        "Calls to the api-gateway to explain a failure, by outcome.",
        &[fixed("outcome", CALL_OUTCOMES)],
    ),
    counter(
        "test_watcher_errors_total",
        "Errors inside the test-watcher, by kind.",
        &[free("kind")],
    ),
    gauge(
        "test_watcher_changed_files_current",
        "",
        "Changed files waiting for the debounce window to close.",
        NONE,
    ),
    histogram(
        "test_watcher_processing_duration_seconds",
        "seconds",
        "Time spent processing a batch of file-system events.",
        NONE,
        B_1MS_10S,
    ),
    gauge(
        "test_watcher_memory_usage_bytes",
        "bytes",
        "Peak resident memory of the last test run's process tree.",
        NONE,
    ),
    histogram(
        "test_watcher_debounce_duration_seconds",
        "seconds",
        "Time from the first change of a batch to its release.",
        NONE,
        B_10MS_10S,
    ),
    histogram(
        "test_watcher_test_execution_duration_seconds",
        "seconds",
        "Duration of test runs.",
        NONE,
        B_500MS_1800S,
    ),
    gauge(
        "test_watcher_last_run_timestamp_seconds",
        "seconds",
        "Unix time the last test run finished.",
        NONE,
    ),
    counter(
        "audit_agent_runs_total",
        "Audits, by result.",
        &[fixed("result", AUDIT_RESULTS)],
    ),
    counter(
        "audit_agent_completion_markers_found_total",
        "Plan items newly done since the previous audit, by marker kind.",
        &[fixed("marker", MARKERS)],
    ),
    counter(
        "audit_agent_git_commits_detected_total",
        "New commits found by audits, never recounted.",
        NONE,
    ),
    counter(
        "audit_agent_history_rewrites_total",
        "Audits that found the previously audited head no longer an ancestor.",
        NONE,
    ),
    counter(
        "audit_agent_errors_total",
        "Errors inside the audit-agent, by kind.",
        &[free("kind")],
    ),
    gauge(
        "audit_agent_coverage_percent",
        "percent",
        "Line coverage of the last audit, 0 to 100; absent while unknown.",
        NONE,
    ),
    gauge(
        "audit_agent_last_run_timestamp_seconds",
        "seconds",
        "Unix time the last audit finished.",
        NONE,
    ),
    gauge(
        "audit_agent_active_tasks",
        "",
        "Plan items in progress.",
        NONE,
    ),
    gauge(
        "audit_agent_tasks",
        "",
        "Plan items, by state.",
        &[fixed("state", TASK_STATES)],
    ),
    histogram(
        "audit_agent_run_duration_seconds",
        "seconds",
        "Duration of audits.",
        NONE,
        B_10MS_600S,
    ),
    histogram(
        "audit_agent_analysis_duration_seconds",
        "seconds",
        "Duration of each analysis of an audit.",
        &[fixed("analysis", ANALYSES)],
        B_1MS_300S,
    ),
    counter(
        "safe_async_bridge_calls_total",
        "Calls through the async bridge, by direction.",
        &[fixed("direction", DIRECTIONS)],
    ),
    counter(
        "safe_async_bridge_errors_total",
        "Bridge calls that failed or panicked, by direction.",
        &[fixed("direction", DIRECTIONS)],
    ),
    counter(
        "safe_async_bridge_timeouts_total",
        "Bridge calls that timed out, by direction.",
        &[fixed("direction", DIRECTIONS)],
    ),
    gauge(
        "safe_async_bridge_pending_tasks",
        "",
        "Bridge work started and not yet finished.",
        NONE,
    ),
    gauge(
        "safe_async_bridge_active_loops",
        "",
        "Runtimes the bridge is driving.",
        NONE,
    ),
    histogram(
        "safe_async_bridge_execution_duration_seconds",
        "seconds",
        "Duration of bridge calls, by direction.",
        &[fixed("direction", DIRECTIONS)],
        B_10US_60S,
    ),
    counter(
        "deepseek_api_calls_total",
        "Client requests through the api-gateway, by model and final status.",
        &[free("model"), fixed("status", API_STATUSES)],
    ),
    counter(
        "deepseek_api_errors_total",
        "Failed requests and gateway errors, by model and kind.",
        &[free("model"), free("kind")],
    ),
    counter(
        "deepseek_api_rate_limits_total",
        "Upstream 429 answers, per attempt.",
        MODEL,
    ),
    counter(
        "deepseek_api_retries_total",
        "Upstream attempts retried, by reason.",
        &[free("model"), fixed("reason", RETRY_REASONS)],
    ),
    gauge(
        "deepseek_api_response_time_seconds",
        "seconds",
        "Duration of the last response.",
        MODEL,
    ),
    counter(
        "deepseek_api_tokens_used_total",
        "Tokens used, by disjoint type; their sum is the total.",
        &[free("model"), fixed("type", TOKEN_TYPES)],
    ),
    counter(
        "deepseek_api_reasoning_tokens_total",
        "Reasoning tokens, part of the output tokens.",
        MODEL,
    ),
    histogram(
        "deepseek_api_request_cost_usd",
        "usd",
        "Cost of each request in USD; the _sum is the spend.",
        MODEL,
        B_USD,
    ),
    histogram(
        "deepseek_api_request_duration_seconds",
        "seconds",
        "Duration of client requests.",
        MODEL,
        B_5MS_1800S,
    ),
    histogram(
        "deepseek_api_time_to_first_token_seconds",
        "seconds",
        "Time from a streaming request to its first token.",
        MODEL,
        B_5MS_600S,
    ),
    gauge(
        "deepseek_api_in_flight_requests",
        "",
        "Client requests in flight.",
        NONE,
    ),
    gauge(
        "deepseek_api_balance",
        "",
        "Account balance, by currency.",
        &[free("currency")],
    ),
    gauge(
        "deepseek_api_circuit_open",
        "",
        "1 while the circuit breaker fails requests fast, else 0.",
        NONE,
    ),
    gauge(
        "automation_process_resident_memory_bytes",
        "bytes",
        "Resident memory of the service process.",
        NONE,
    ),
    counter(
        "automation_process_cpu_seconds_total",
        "CPU time of the service process, whole seconds.",
        NONE,
    ),
    gauge(
        "automation_process_open_fds",
        "",
        "Open file descriptors of the service process.",
        NONE,
    ),
    gauge(
        "automation_process_start_time_seconds",
        "seconds",
        "Unix time the service process started.",
        NONE,
    ),
    gauge(
        "automation_system_memory_used_bytes",
        "bytes",
        "Memory in use on the service's machine.",
        NONE,
    ),
    gauge(
        "automation_system_memory_total_bytes",
        "bytes",
        "Memory of the service's machine.",
        NONE,
    ),
    gauge(
        "automation_system_disk_available_bytes",
        "bytes",
        "Space available on the disk of the service's working directory.",
        NONE,
    ),
    counter(
        "automation_reporter_events_dropped_total",
        "Events the service's reporter dropped because its buffer was full.",
        NONE,
    ),
    gauge(
        "automation_component_up",
        "",
        "1 while the instance's heartbeats arrive, 0 once three intervals are missed or it said goodbye.",
        NONE,
    ),
    gauge(
        "automation_component_stopped",
        "",
        "1 once the instance said goodbye (stopped on purpose, not down), else 0.",
        NONE,
    ),
    gauge(
        "automation_component_info",
        "",
        "Always 1; the version of the instance.",
        &[free("version")],
    ),
    counter(
        "collector_pushes_total",
        "Event batches pushed to the collector, by answer.",
        &[fixed("code", PUSH_CODES)],
    ),
    counter(
        "collector_events_received_total",
        "Events received in accepted batches (and OTLP data points), by payload type.",
        &[fixed("event", EVENTS)],
    ),
    counter(
        "collector_events_rejected_total",
        "Events and OTLP data points rejected, by reason.",
        &[fixed("reason", REJECT_REASONS)],
    ),
    counter(
        "collector_series_limited_total",
        "New series refused by the cardinality guard, by metric: folded into other, or for OTLP series (metric=\"otlp\") refused.",
        &[free("metric")],
    ),
    histogram(
        "collector_push_duration_seconds",
        "seconds",
        "Time the collector spent on a push.",
        NONE,
        B_50US_1S,
    ),
    counter(
        "collector_replay_windows_evicted_total",
        "Replay windows of old reporter incarnations forgotten to keep the newest few per instance.",
        NONE,
    ),
    counter(
        "collector_instances_evicted_total",
        "Silent instances forgotten early to make room for a new one under the instance limit.",
        NONE,
    ),
    counter(
        "automation_trace_spans_dropped_total",
        "Trace spans the service dropped: its export queue was full or an export failed.",
        NONE,
    ),
    gauge(
        "automation_system_cpu_usage_ratio",
        "ratio",
        "Share of the service's machine's CPU time in use between its last two heartbeats (0 to 1).",
        NONE,
    ),
    gauge(
        "automation_system_disk_total_bytes",
        "bytes",
        "Size of the disk of the service's working directory.",
        NONE,
    ),
];

/// The catalog as pretty JSON, for `collector catalog`.
pub fn to_json() -> String {
    #[derive(Serialize)]
    struct Catalog {
        common_labels: [&'static str; 2],
        components: &'static [&'static str],
        metrics: &'static [MetricDef],
        event_limits: &'static [ValueLimit],
    }
    serde_json::to_string_pretty(&Catalog {
        common_labels: COMMON_LABELS,
        components: COMPONENTS,
        metrics: METRICS,
        event_limits: VALUE_LIMITS,
    })
    .expect("the catalog is plain data")
}

/// The value of a fixed label for a proto enum value: `values[n - 1]`, or
/// `other` for 0 (unspecified) and values this collector does not know.
pub fn enum_label(values: &'static [&'static str], n: i32) -> &'static str {
    usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| values.get(i).copied())
        .unwrap_or(OTHER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_names() {
        let expect = [
            (id::TW_FILES_PROCESSED, "test_watcher_files_processed_total"),
            (id::TW_LAST_RUN, "test_watcher_last_run_timestamp_seconds"),
            (id::AA_RUNS, "audit_agent_runs_total"),
            (
                id::AA_ANALYSIS_DURATION,
                "audit_agent_analysis_duration_seconds",
            ),
            (id::BR_CALLS, "safe_async_bridge_calls_total"),
            (
                id::BR_DURATION,
                "safe_async_bridge_execution_duration_seconds",
            ),
            (id::API_CALLS, "deepseek_api_calls_total"),
            (id::API_CIRCUIT_OPEN, "deepseek_api_circuit_open"),
            (id::PROC_RSS, "automation_process_resident_memory_bytes"),
            (id::UP, "automation_component_up"),
            (id::INFO, "automation_component_info"),
            (id::COL_PUSH_DURATION, "collector_push_duration_seconds"),
            (
                id::COL_INSTANCES_EVICTED,
                "collector_instances_evicted_total",
            ),
            (id::TRACE_DROPPED, "automation_trace_spans_dropped_total"),
            (id::SYS_CPU, "automation_system_cpu_usage_ratio"),
            (id::SYS_DISK_TOTAL, "automation_system_disk_total_bytes"),
        ];
        for (i, name) in expect {
            assert_eq!(METRICS[i].name, name);
        }
        assert_eq!(METRICS.len(), id::SYS_DISK_TOTAL + 1);
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for m in METRICS {
            assert!(seen.insert(m.name), "{} twice", m.name);
            match m.kind {
                Kind::Counter => assert!(m.name.ends_with("_total"), "{}", m.name),
                Kind::Gauge => assert!(!m.name.ends_with("_total"), "{}", m.name),
                Kind::Histogram => {
                    assert!(!m.buckets.is_empty(), "{} has no buckets", m.name);
                    assert!(m.buckets.windows(2).all(|w| w[0] < w[1]), "{}", m.name);
                }
            }
            if m.unit == "seconds" || m.unit == "bytes" {
                assert!(m.name.contains(m.unit), "{} lacks its unit", m.name);
            }
        }
    }

    #[test]
    fn unknown_enum_values_are_other() {
        assert_eq!(enum_label(RUN_RESULTS, 1), "passed");
        assert_eq!(enum_label(RUN_RESULTS, 5), "timeout");
        assert_eq!(enum_label(RUN_RESULTS, 0), OTHER);
        assert_eq!(enum_label(RUN_RESULTS, 42), OTHER);
        assert_eq!(enum_label(RUN_RESULTS, -3), OTHER);
    }
}
