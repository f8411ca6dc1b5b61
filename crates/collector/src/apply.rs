//! From events to metrics: each payload is checked on its own, then applied
//! to its instance's series. An event with an impossible value is rejected
//! whole, so nothing of it is applied.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use automation_proto::v1::{self, event::Payload};

use crate::catalog::{self, id, limits};
use crate::instance::{Instance, Presence};

/// Why an event was rejected: the `reason` of `collector_events_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// The event carries no payload (or one this collector does not know).
    NoPayload,
    /// A duration is negative, NaN, infinite or over [`limits::DURATION_SECONDS`].
    InvalidDuration,
    /// Another value is impossible (NaN cost, coverage over 100, …).
    InvalidValue,
    /// A label value is longer than the limit.
    LabelTooLong,
    /// A value is over its maximum in [`catalog::limits`].
    ValueTooLarge,
    /// The event time is malformed or too far in the future.
    InvalidTime,
    /// An OTLP metric of a kind the collector does not take (exponential
    /// histograms, summaries).
    UnsupportedMetric,
    /// An OTLP metric whose name is the platform's own, or in use with
    /// another type.
    MetricConflict,
}

impl Reject {
    /// The index of the reason in [`catalog::REJECT_REASONS`].
    pub fn index(self) -> usize {
        match self {
            Reject::NoPayload => 0,
            Reject::InvalidDuration => 1,
            Reject::InvalidValue => 2,
            Reject::LabelTooLong => 3,
            Reject::ValueTooLarge => 4,
            Reject::InvalidTime => 5,
            Reject::UnsupportedMetric => 6,
            Reject::MetricConflict => 7,
        }
    }
}

/// The index of a payload in [`catalog::EVENTS`].
pub fn event_index(payload: &Payload) -> usize {
    match payload {
        Payload::Heartbeat(_) => 0,
        Payload::FileChanges(_) => 1,
        Payload::TestRun(_) => 2,
        Payload::AuditRun(_) => 3,
        Payload::ApiCall(_) => 4,
        Payload::BridgeCall(_) => 5,
        Payload::Error(_) => 6,
        Payload::Goodbye(_) => 7,
        Payload::GatewayRequest(_) => 8,
    }
}

fn duration(v: f64) -> Result<(), Reject> {
    if v.is_finite() && (0.0..=limits::DURATION_SECONDS).contains(&v) {
        Ok(())
    } else {
        Err(Reject::InvalidDuration)
    }
}

fn opt_duration(v: Option<f64>) -> Result<(), Reject> {
    v.map_or(Ok(()), duration)
}

fn value(ok: bool) -> Result<(), Reject> {
    if ok {
        Ok(())
    } else {
        Err(Reject::InvalidValue)
    }
}

/// `v` is a number (not NaN or infinite) of at least `min`, and at most `max`.
fn number(v: f64, min: f64, max: f64) -> Result<(), Reject> {
    value(v.is_finite() && v >= min)?;
    at_most(v <= max)
}

fn at_most(ok: bool) -> Result<(), Reject> {
    if ok {
        Ok(())
    } else {
        Err(Reject::ValueTooLarge)
    }
}

fn counts(values: &[u64], max: u64) -> Result<(), Reject> {
    at_most(values.iter().all(|v| *v <= max))
}

fn label(v: &str, max: usize) -> Result<(), Reject> {
    if v.len() <= max {
        Ok(())
    } else {
        Err(Reject::LabelTooLong)
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Checks an event without applying anything.
pub fn validate(event: &v1::Event, max_label: usize) -> Result<&Payload, Reject> {
    let payload = event.payload.as_ref().ok_or(Reject::NoPayload)?;
    let latest = unix_now() + limits::FUTURE_SECONDS;
    if let Some(t) = &event.time
        && (t.seconds < 0 || !(0..1_000_000_000).contains(&t.nanos) || t.seconds as f64 > latest)
    {
        return Err(Reject::InvalidTime);
    }
    match payload {
        Payload::Heartbeat(h) => {
            number(
                h.interval_seconds,
                f64::MIN_POSITIVE,
                limits::HEARTBEAT_INTERVAL_SECONDS,
            )?;
            counts(
                &[h.events_dropped_total, h.spans_dropped_total],
                limits::CUMULATIVE_COUNT,
            )?;
            if let Some(p) = &h.process {
                number(p.cpu_seconds_total, 0.0, limits::CPU_SECONDS)?;
                number(p.start_time_seconds, 0.0, latest)?;
                counts(&[p.resident_memory_bytes], limits::BYTES)?;
                counts(&[p.open_fds], limits::COUNT)?;
            }
            if let Some(s) = &h.system {
                counts(
                    &[
                        s.memory_used_bytes,
                        s.memory_total_bytes,
                        s.disk_available_bytes,
                        s.disk_total_bytes,
                    ],
                    limits::BYTES,
                )?;
                if let Some(ratio) = s.cpu_usage_ratio {
                    number(ratio, 0.0, 1.0)?;
                }
            }
            if let Some(b) = &h.bridge {
                counts(&[b.pending_tasks, b.active_loops], limits::COUNT)?;
            }
            if let Some(w) = &h.watcher {
                counts(&[w.changed_files_pending], limits::COUNT)?;
            }
            if let Some(g) = &h.gateway {
                counts(&[g.in_flight_requests], limits::COUNT)?;
                for b in &g.balances {
                    label(&b.currency, max_label)?;
                    number(b.amount.abs(), 0.0, limits::BALANCE)?;
                }
            }
        }
        Payload::FileChanges(f) => {
            opt_duration(f.debounce_seconds)?;
            opt_duration(f.processing_seconds)?;
            counts(&[f.files_processed, f.changed_files_pending], limits::COUNT)?;
        }
        Payload::TestRun(t) => {
            duration(t.duration_seconds)?;
            counts(
                &[t.tests_passed, t.tests_failed, t.tests_ignored],
                limits::COUNT,
            )?;
            counts(&[t.peak_rss_bytes], limits::BYTES)?;
        }
        Payload::AuditRun(a) => {
            duration(a.duration_seconds)?;
            for t in &a.analyses {
                duration(t.duration_seconds)?;
            }
            if let Some(c) = a.coverage_percent {
                value((0.0..=100.0).contains(&c))?;
            }
            counts(
                &[
                    a.new_commits,
                    a.tasks_done,
                    a.tasks_in_progress,
                    a.tasks_planned,
                ],
                limits::COUNT,
            )?;
            for found in &a.newly_completed {
                counts(&[found.count], limits::COUNT)?;
            }
        }
        Payload::ApiCall(c) => {
            label(&c.model, max_label)?;
            label(&c.error_kind, max_label)?;
            duration(c.duration_seconds)?;
            opt_duration(c.time_to_first_token_seconds)?;
            if let Some(cost) = c.cost_usd {
                number(cost, 0.0, limits::COST_USD)?;
            }
            counts(
                &[
                    c.input_cache_hit_tokens,
                    c.input_cache_miss_tokens,
                    c.output_tokens,
                    c.in_flight_requests,
                ],
                limits::COUNT,
            )?;
            value(c.reasoning_tokens <= c.output_tokens)?;
        }
        Payload::BridgeCall(b) => {
            duration(b.duration_seconds)?;
            counts(&[b.pending_tasks, b.active_loops], limits::COUNT)?;
        }
        Payload::Error(e) => {
            label(&e.kind, max_label)?;
            label(&e.model, max_label)?;
        }
        Payload::GatewayRequest(g) => duration(g.duration_seconds)?,
        Payload::Goodbye(_) => {}
    }
    Ok(payload)
}

/// Unix seconds of the event (checked by [`validate`]), or now when it carries no time.
fn event_time(event: &v1::Event) -> f64 {
    event
        .time
        .as_ref()
        .filter(|t| t.seconds > 0)
        .map(|t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
        .unwrap_or_else(unix_now)
}

fn non_empty(v: &str) -> &str {
    if v.is_empty() { "unknown" } else { v }
}

/// Positions of the `outcome` values of `test_watcher_tests_run_total`
/// ([`catalog::TEST_OUTCOMES`]).
mod outcome {
    pub const PASSED: usize = 0;
    pub const FAILED: usize = 1;
    pub const IGNORED: usize = 2;
}

/// Positions of the `state` values of `audit_agent_tasks`
/// ([`catalog::TASK_STATES`]).
mod task_state {
    pub const DONE: usize = 0;
    pub const IN_PROGRESS: usize = 1;
    pub const PLANNED: usize = 2;
}

/// Positions of the `type` values of `deepseek_api_tokens_used_total`
/// ([`catalog::TOKEN_TYPES`]).
mod token_type {
    pub const INPUT_CACHE_HIT: usize = 0;
    pub const INPUT_CACHE_MISS: usize = 1;
    pub const OUTPUT: usize = 2;
}

/// Applies a valid event of `incarnation` to `inst`.
pub fn apply(
    inst: &Instance,
    incarnation: u64,
    event: &v1::Event,
    payload: &Payload,
    now: Instant,
) {
    match payload {
        Payload::Heartbeat(h) => apply_heartbeat(inst, incarnation, h, now),
        Payload::FileChanges(f) => apply_file_changes(inst, f),
        Payload::TestRun(t) => apply_test_run(inst, event, t),
        Payload::GatewayRequest(g) => apply_gateway_request(inst, g),
        Payload::AuditRun(a) => apply_audit_run(inst, event, a),
        Payload::ApiCall(call) => apply_api_call(inst, call),
        Payload::BridgeCall(b) => apply_bridge_call(inst, b),
        Payload::Error(e) => apply_error(inst, e),
        Payload::Goodbye(_) => apply_goodbye(inst, now),
    }
}

fn apply_heartbeat(inst: &Instance, incarnation: u64, h: &v1::Heartbeat, now: Instant) {
    let s = &inst.series;
    {
        let mut live = inst.liveness();
        live.interval = std::time::Duration::from_secs_f64(h.interval_seconds);
    }
    let c = inst.process();
    let mut incarnations = inst.incarnations();
    let state = incarnations.entry(incarnation).or_default();
    state.last_seen = Some(now);
    if let Some(p) = &h.process {
        c.rss.set(p.resident_memory_bytes as f64);
        c.fds.set(p.open_fds as f64);
        c.start_time.set(p.start_time_seconds);
        let whole = p.cpu_seconds_total.floor() as u64;
        c.cpu
            .increment(whole.saturating_sub(state.cpu_whole_seconds));
        state.cpu_whole_seconds = state.cpu_whole_seconds.max(whole);
    }
    c.dropped
        .increment(h.events_dropped_total.saturating_sub(state.dropped_events));
    state.dropped_events = state.dropped_events.max(h.events_dropped_total);
    c.spans_dropped
        .increment(h.spans_dropped_total.saturating_sub(state.dropped_spans));
    state.dropped_spans = state.dropped_spans.max(h.spans_dropped_total);
    drop(incarnations);
    if let Some(sys) = &h.system {
        c.mem_used.set(sys.memory_used_bytes as f64);
        c.mem_total.set(sys.memory_total_bytes as f64);
        c.disk_available.set(sys.disk_available_bytes as f64);
        c.disk_total.set(sys.disk_total_bytes as f64);
        if let Some(ratio) = sys.cpu_usage_ratio {
            c.cpu_usage.set(ratio);
        }
    }
    if let Some(b) = &h.bridge {
        c.bridge_pending.set(b.pending_tasks as f64);
        c.bridge_loops.set(b.active_loops as f64);
    }
    if let Some(w) = &h.watcher {
        inst.watcher()
            .changed_files
            .set(w.changed_files_pending as f64);
    }
    if let Some(g) = &h.gateway {
        let gw = inst.gateway();
        gw.in_flight.set(g.in_flight_requests as f64);
        gw.circuit_open.set(if g.circuit_open { 1.0 } else { 0.0 });
        for b in &g.balances {
            let currency = non_empty(&b.currency);
            gw.balance
                .get(s, currency, |cur| {
                    s.register(id::API_BALANCE, &[("currency", cur)])
                })
                .set(b.amount);
        }
    }
}

fn apply_file_changes(inst: &Instance, f: &v1::FileChanges) {
    let w = inst.watcher();
    w.files_processed.increment(f.files_processed);
    if let Some(d) = f.debounce_seconds {
        w.debounce_duration.record(d);
    }
    if let Some(d) = f.processing_seconds {
        w.processing_duration.record(d);
    }
    w.changed_files.set(f.changed_files_pending as f64);
}

fn apply_test_run(inst: &Instance, event: &v1::Event, t: &v1::TestRun) {
    let s = &inst.series;
    let w = inst.watcher();
    w.runs.at(s, t.result).increment(1);
    w.tests_run.nth(outcome::PASSED).increment(t.tests_passed);
    w.tests_run.nth(outcome::FAILED).increment(t.tests_failed);
    w.tests_run.nth(outcome::IGNORED).increment(t.tests_ignored);
    w.execution_duration.record(t.duration_seconds);
    w.memory.set(t.peak_rss_bytes as f64);
    w.last_run.set(event_time(event));
}

fn apply_gateway_request(inst: &Instance, g: &v1::GatewayRequest) {
    inst.watcher()
        .api_calls
        .at(&inst.series, g.outcome)
        .increment(1);
}

fn apply_audit_run(inst: &Instance, event: &v1::Event, a: &v1::AuditRun) {
    let s = &inst.series;
    let m = inst.audit();
    m.runs.at(s, a.result).increment(1);
    m.run_duration.record(a.duration_seconds);
    for t in &a.analyses {
        m.analysis_duration
            .at(s, t.analysis)
            .record(t.duration_seconds);
    }
    m.commits.increment(a.new_commits);
    if a.history_rewritten {
        m.rewrites.increment(1);
    }
    for found in &a.newly_completed {
        m.markers_found.at(s, found.marker).increment(found.count);
    }
    // Absent while unknown: hidden rather than left at a stale value.
    let coverage = catalog::METRICS[id::AA_COVERAGE].name;
    match a.coverage_percent {
        Some(pct) => {
            m.coverage
                .get_or_init(|| s.register(id::AA_COVERAGE, &[]))
                .set(pct);
            inst.show(coverage);
        }
        None => inst.hide(coverage),
    }
    m.tasks.nth(task_state::DONE).set(a.tasks_done as f64);
    m.tasks
        .nth(task_state::IN_PROGRESS)
        .set(a.tasks_in_progress as f64);
    m.tasks.nth(task_state::PLANNED).set(a.tasks_planned as f64);
    m.active_tasks.set(a.tasks_in_progress as f64);
    m.last_run.set(event_time(event));
}

fn apply_api_call(inst: &Instance, call: &v1::ApiCall) {
    let s = &inst.series;
    let gw = inst.gateway();
    let model = gw.model(s, non_empty(&call.model));
    model.calls.at(s, call.status).increment(1);
    model.duration.record(call.duration_seconds);
    model.response_time.set(call.duration_seconds);
    if let Some(ttft) = call.time_to_first_token_seconds {
        model.ttft.record(ttft);
    }
    model
        .tokens
        .nth(token_type::INPUT_CACHE_HIT)
        .increment(call.input_cache_hit_tokens);
    model
        .tokens
        .nth(token_type::INPUT_CACHE_MISS)
        .increment(call.input_cache_miss_tokens);
    model
        .tokens
        .nth(token_type::OUTPUT)
        .increment(call.output_tokens);
    model.reasoning_tokens.increment(call.reasoning_tokens);
    for reason in &call.retries {
        model.retries.at(s, *reason).increment(1);
    }
    model
        .rate_limits
        .increment(u64::from(call.rate_limited_responses));
    if let Some(cost) = call.cost_usd {
        model.cost.record(cost);
    }
    if !call.error_kind.is_empty() {
        gateway_error(inst, &model.name, &call.error_kind);
    }
    gw.in_flight.set(call.in_flight_requests as f64);
}

fn apply_bridge_call(inst: &Instance, b: &v1::BridgeCall) {
    let s = &inst.series;
    let c = inst.process();
    c.bridge_calls.at(s, b.direction).increment(1);
    match v1::BridgeOutcome::try_from(b.outcome) {
        Ok(v1::BridgeOutcome::Error | v1::BridgeOutcome::Panic) => {
            c.bridge_errors.at(s, b.direction).increment(1);
        }
        Ok(v1::BridgeOutcome::Timeout) => {
            c.bridge_timeouts.at(s, b.direction).increment(1);
        }
        _ => {}
    }
    c.bridge_duration
        .at(s, b.direction)
        .record(b.duration_seconds);
    c.bridge_pending.set(b.pending_tasks as f64);
    c.bridge_loops.set(b.active_loops as f64);
}

fn apply_error(inst: &Instance, e: &v1::ComponentError) {
    let kind = non_empty(&e.kind);
    match inst.component.as_str() {
        "test-watcher" => count_kind(inst, &inst.watcher().errors, id::TW_ERRORS, kind),
        "audit-agent" => count_kind(inst, &inst.audit().errors, id::AA_ERRORS, kind),
        "api-gateway" => {
            let model = inst.gateway().model(&inst.series, non_empty(&e.model));
            gateway_error(inst, &model.name, kind);
        }
        // Components without an error metric: the event is counted
        // as received and logged, which is all there is to do.
        _ => {
            tracing::debug!(component = %inst.component, instance = %inst.name, kind, "component error")
        }
    }
}

fn apply_goodbye(inst: &Instance, now: Instant) {
    let mut live = inst.liveness();
    live.presence = Presence::Stopped { since: now };
    inst.common.up.set(0.0);
    inst.common.stopped.set(1.0);
}

fn count_kind(
    inst: &Instance,
    family: &crate::instance::Free<metrics::Counter>,
    metric: usize,
    kind: &str,
) {
    family
        .get(&inst.series, kind, |k| {
            inst.series.register(metric, &[("kind", k)])
        })
        .increment(1);
}

fn gateway_error(inst: &Instance, model: &str, kind: &str) {
    let s = &inst.series;
    let model = if model.is_empty() {
        catalog::OTHER
    } else {
        model
    };
    // One free value per (model, kind) pair, guarded as one label set.
    let pair = format!("{model}\u{1f}{kind}");
    inst.gateway()
        .errors
        .get(s, &pair, |p| {
            let (m, k) = p
                .split_once('\u{1f}')
                .unwrap_or((catalog::OTHER, catalog::OTHER));
            s.register(id::API_ERRORS, &[("model", m), ("kind", k)])
        })
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_positions_name_the_catalog_values() {
        let positions = [
            (catalog::TEST_OUTCOMES, outcome::PASSED, "passed"),
            (catalog::TEST_OUTCOMES, outcome::FAILED, "failed"),
            (catalog::TEST_OUTCOMES, outcome::IGNORED, "ignored"),
            (catalog::TASK_STATES, task_state::DONE, "done"),
            (catalog::TASK_STATES, task_state::IN_PROGRESS, "in_progress"),
            (catalog::TASK_STATES, task_state::PLANNED, "planned"),
            (
                catalog::TOKEN_TYPES,
                token_type::INPUT_CACHE_HIT,
                "input_cache_hit",
            ),
            (
                catalog::TOKEN_TYPES,
                token_type::INPUT_CACHE_MISS,
                "input_cache_miss",
            ),
            (catalog::TOKEN_TYPES, token_type::OUTPUT, "output"),
        ];
        for (values, position, name) in positions {
            assert_eq!(values[position], name);
        }
    }
}
