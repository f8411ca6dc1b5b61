//! The collector's state: the instances it knows, what it does with a batch,
//! and the upkeep that marks silent instances down and forgets idle ones.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use automation_proto::v1::{self, EventBatch, PushResponse};
use prost::Message;

use crate::apply::{self, Reject};
use crate::catalog::{self, COMPONENTS, METRICS, OTHER, PushCode, id};
use crate::guard::Guard;
use crate::instance::{Incarnation, Instance, Presence};
use crate::otlp::store::OtlpGuard;

/// Limits and timings of a collector.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Label sets per metric before new free values fold into `other`.
    pub max_series_per_metric: usize,
    /// Instances per component before new ones fold into `other`.
    pub max_instances: usize,
    /// Events per batch.
    pub max_batch_events: usize,
    /// Encoded bytes per batch.
    pub max_batch_bytes: usize,
    /// Bytes of a label value (instance, version, kind, model, currency).
    pub max_label_length: usize,
    /// How long a silent instance's series stay.
    pub idle_timeout: Duration,
    /// How long a stopped instance's series stay after its goodbye.
    pub stopped_linger: Duration,
    /// How long replay windows are kept after their incarnation was last
    /// heard from, even once the instance's series are gone: a reporter
    /// cut off for longer than the idle timeout still must not have its
    /// replays counted twice.
    pub dedup_memory: Duration,
    /// The longest an instance counts as up without being heard from,
    /// whatever heartbeat interval it claims (it is down after three
    /// intervals, or this, whichever is sooner).
    pub max_silence: Duration,
    /// OTLP metric names held at once, across instances.
    pub max_otlp_metrics: usize,
    /// OTLP label sets held at once, across instances and names.
    pub max_otlp_series: usize,
    /// Replay windows kept per instance: its newest incarnations (a
    /// restart makes a new one; only the last few can still be retrying).
    pub max_incarnations: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_series_per_metric: 10_000,
            max_instances: 1_000,
            max_batch_events: 10_000,
            max_batch_bytes: 4 << 20,
            max_label_length: 128,
            idle_timeout: Duration::from_secs(15 * 60),
            stopped_linger: Duration::from_secs(5 * 60),
            dedup_memory: Duration::from_secs(6 * 60 * 60),
            max_incarnations: 8,
            max_otlp_metrics: 1_000,
            max_otlp_series: 100_000,
            max_silence: Duration::from_secs(10 * 60),
        }
    }
}

/// What a push came to.
#[derive(Debug)]
pub enum Outcome {
    /// Applied (or recognised as a replay).
    Applied(PushResponse),
    /// Refused whole: the message names the problem.
    Invalid(String),
}

/// The instances of one component, and the names folded into `other`
/// because the component had `max_instances` already, all of them up.
#[derive(Debug, Default)]
struct Component {
    instances: HashMap<String, Arc<Instance>>,
    folded: HashSet<String>,
    /// Set when the component was found full of live instances; cleared by
    /// the sweep once one of them is down or stopped, so folded names look
    /// for room again only when there may be some.
    full: AtomicBool,
}

type Instances = RwLock<Component>;

/// Replay windows of forgotten instances, by (component index, name).
type Retired = HashMap<(usize, String), (Instant, HashMap<u64, Incarnation>)>;

/// Drops the least recently seen incarnations until `keep` are left;
/// returns how many went.
fn keep_newest(incarnations: &mut HashMap<u64, Incarnation>, keep: usize) -> u64 {
    let mut evicted = 0;
    while incarnations.len() > keep {
        let oldest = incarnations
            .iter()
            .min_by_key(|(_, inc)| inc.last_seen)
            .map(|(id, _)| *id);
        match oldest {
            Some(id) => {
                incarnations.remove(&id);
                evicted += 1;
            }
            None => break,
        }
    }
    evicted
}

/// Drops the longest-retired entries until at most `max` are left; returns
/// how many replay windows went with them.
fn cap_retired(retired: &mut Retired, max: usize) -> u64 {
    if retired.len() <= max {
        return 0;
    }
    let mut by_age: Vec<(Instant, (usize, String))> = retired
        .iter()
        .map(|(key, (since, _))| (*since, key.clone()))
        .collect();
    by_age.sort_unstable_by_key(|(since, _)| *since);
    let excess = retired.len() - max;
    by_age
        .into_iter()
        .take(excess)
        .filter_map(|(_, key)| retired.remove(&key))
        .map(|(_, windows)| windows.len() as u64)
        .sum()
}

/// Names folded into `other` remembered per component, at most.
const MAX_FOLDED: usize = 100_000;

/// The collector's state, shared by the gRPC service, `/metrics` and upkeep.
pub struct State {
    limits: Limits,
    guard: Arc<Guard>,
    /// One map per component in [`COMPONENTS`] order, then `other`, then
    /// OTLP services that are no component ([`OTLP_MAP`]).
    instances: Vec<Instances>,
    own: Arc<Instance>,
    limited: Limited,
    retired: Mutex<Retired>,
    renders: AtomicU64,
    otlp_guard: Arc<OtlpGuard>,
}

type Limited = Arc<dyn Fn(usize) + Send + Sync>;

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("limits", &self.limits)
            .field("instance", &self.own.name)
            .finish_non_exhaustive()
    }
}

fn component_index(service: &str) -> usize {
    COMPONENTS
        .iter()
        .position(|c| *c == service)
        .unwrap_or(COMPONENTS.len())
}

fn component_name(index: usize) -> &'static str {
    COMPONENTS.get(index).copied().unwrap_or(OTHER)
}

/// The map of instances reporting over OTLP as services that are not
/// platform components (after one map per component and one for `other`).
const OTLP_MAP: usize = COMPONENTS.len() + 1;

/// The `component` and `component_instance` labels of a new instance.
#[derive(Debug, Clone, Copy)]
struct Labels<'a> {
    component: &'a str,
    instance: &'a str,
}

impl State {
    /// A collector named `instance` (its own `component_instance`).
    pub fn new(limits: Limits, instance: &str, version: &str) -> Arc<Self> {
        let guard = Arc::new(Guard::new(limits.max_series_per_metric));
        let otlp_guard = Arc::new(OtlpGuard::new(
            limits.max_otlp_metrics,
            limits.max_series_per_metric,
            limits.max_otlp_series,
        ));
        Arc::new_cyclic(|weak: &std::sync::Weak<State>| {
            let weak = weak.clone();
            let limited: Limited = Arc::new(move |metric| {
                if let Some(state) = weak.upgrade() {
                    state.count_limited(metric);
                }
            });
            let own = Arc::new(Instance::new(
                "collector",
                instance,
                true,
                Arc::clone(&guard),
                Arc::clone(&limited),
                Instant::now(),
            ));
            own.set_version(version);
            State {
                limits,
                guard,
                instances: (0..=OTLP_MAP).map(|_| RwLock::default()).collect(),
                own,
                limited,
                retired: Mutex::default(),
                renders: AtomicU64::new(0),
                otlp_guard,
            }
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The collector's own instance.
    pub fn own(&self) -> &Arc<Instance> {
        &self.own
    }

    fn count_limited(&self, metric: usize) {
        let own = self.own.collector();
        own.limited[metric]
            .get_or_init(|| {
                self.own
                    .series
                    .register(id::COL_LIMITED, &[("metric", METRICS[metric].name)])
            })
            .increment(1);
    }

    /// The bounds on OTLP series.
    pub fn otlp_guard(&self) -> &Arc<OtlpGuard> {
        &self.otlp_guard
    }

    /// Counts OTLP points the guard refused.
    pub(crate) fn count_limited_otlp(&self, n: u64) {
        let own = self.own.collector();
        own.otlp_limited
            .get_or_init(|| {
                self.own
                    .series
                    .register(id::COL_LIMITED, &[("metric", catalog::OTLP_LIMITED)])
            })
            .increment(n);
    }

    /// Counts a push refused before it reached [`State::push`].
    pub fn count_push(&self, code: PushCode) {
        self.own.collector().pushes.nth(code as usize).increment(1);
    }

    /// Records how long a push took.
    pub fn observe_push(&self, seconds: f64) {
        self.own.collector().push_duration.record(seconds);
    }

    fn check_batch(&self, batch: &EventBatch) -> Result<(), String> {
        let limits = &self.limits;
        let source = batch.source.as_ref().ok_or("batch has no source")?;
        if source.service.is_empty() {
            return Err("source.service is empty".into());
        }
        if source.service == "collector" {
            return Err("source.service \"collector\" is reserved for the collector itself".into());
        }
        if source.instance.is_empty() {
            return Err("source.instance is empty".into());
        }
        for (field, value) in [
            ("service", &source.service),
            ("instance", &source.instance),
            ("version", &source.version),
        ] {
            if value.len() > limits.max_label_length {
                return Err(format!(
                    "source.{field} is {} bytes, over the limit of {}",
                    value.len(),
                    limits.max_label_length
                ));
            }
        }
        if source.incarnation == 0 {
            return Err("source.incarnation is 0 (it must be random per process start)".into());
        }
        if batch.sequence == 0 {
            return Err("sequence is 0 (sequences start at 1)".into());
        }
        if batch.events.len() > limits.max_batch_events {
            return Err(format!(
                "batch has {} events, over the limit of {}",
                batch.events.len(),
                limits.max_batch_events
            ));
        }
        let size = batch.encoded_len();
        if size > limits.max_batch_bytes {
            return Err(format!(
                "batch is {size} bytes, over the limit of {}",
                limits.max_batch_bytes
            ));
        }
        Ok(())
    }

    /// The instance a source reports as, created (with its known series at
    /// 0) on first sight, and marked alive while the component's map is
    /// locked, so a concurrent sweep cannot forget it between lookup and use.
    /// When the component has `max_instances` already, the longest-silent of
    /// those that are down or stopped makes room; when all are up, the new
    /// name is folded into `other` until there is room again.
    fn instance(&self, source: &v1::Source, now: Instant) -> Arc<Instance> {
        let index = component_index(&source.service);
        self.find_or_add(
            index,
            &source.instance,
            Labels {
                component: component_name(index),
                instance: &source.instance,
            },
            now,
        )
    }

    /// The instance an OTLP resource reports as: in its own map, keyed by
    /// service and instance together (an OTLP service is any name, not one
    /// of the platform's components), under the same limits.
    pub(crate) fn otlp_instance(
        &self,
        service: &str,
        instance: &str,
        now: Instant,
    ) -> Arc<Instance> {
        let index = component_index(service);
        if index < COMPONENTS.len() {
            // A platform component sending OTLP too: the same instance as
            // its own reporter's.
            return self.find_or_add(
                index,
                instance,
                Labels {
                    component: component_name(index),
                    instance,
                },
                now,
            );
        }
        let key = format!("{service}\u{1f}{instance}");
        self.find_or_add(
            OTLP_MAP,
            &key,
            Labels {
                component: service,
                instance,
            },
            now,
        )
    }

    /// The instance under `key` in map `index`, created labelled `labels`
    /// (see [`State::instance`]).
    fn find_or_add(
        &self,
        index: usize,
        key: &str,
        labels: Labels<'_>,
        now: Instant,
    ) -> Arc<Instance> {
        let map = &self.instances[index];
        {
            let read = map.read().unwrap_or_else(PoisonError::into_inner);
            let found = read.instances.get(key).or_else(|| {
                let waiting = read.full.load(Ordering::Acquire) && read.folded.contains(key);
                waiting.then(|| read.instances.get(OTHER)).flatten()
            });
            if let Some(found) = found {
                self.alive(found, now);
                return Arc::clone(found);
            }
        }
        let mut write = map.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = write.instances.get(key) {
            self.alive(found, now);
            return Arc::clone(found);
        }
        let room =
            write.instances.len() < self.limits.max_instances || self.evict(&mut write, index, now);
        let (key, labels) = if room {
            write.folded.remove(key);
            (key, labels)
        } else {
            write.full.store(true, Ordering::Release);
            let counted = write.folded.contains(key);
            if !counted {
                self.count_limited(id::UP);
                if write.folded.len() < MAX_FOLDED {
                    write.folded.insert(key.to_owned());
                }
            }
            // Folded OTLP senders get a component no reporter or OTLP
            // sender can have, so their series never meet another's.
            let component = if index == OTLP_MAP {
                crate::otlp::export::OTLP_FOLDED
            } else {
                labels.component
            };
            (
                OTHER,
                Labels {
                    component,
                    instance: OTHER,
                },
            )
        };
        let component = &mut *write;
        let instance = component
            .instances
            .entry(key.to_owned())
            .or_insert_with(|| {
                tracing::info!(
                    component = labels.component,
                    instance = labels.instance,
                    "new instance"
                );
                let instance = Instance::new(
                    labels.component,
                    labels.instance,
                    index != OTLP_MAP,
                    Arc::clone(&self.guard),
                    Arc::clone(&self.limited),
                    now,
                );
                let retired = self
                    .retired
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&(index, key.to_owned()));
                if let Some((_, incarnations)) = retired {
                    *instance.incarnations() = incarnations;
                }
                Arc::new(instance)
            });
        self.alive(instance, now);
        Arc::clone(instance)
    }

    /// Forgets the longest-silent instance of `component` that is down or
    /// stopped, keeping its replay windows; `false` when every one is up.
    fn evict(&self, component: &mut Component, index: usize, now: Instant) -> bool {
        let victim = component
            .instances
            .iter()
            .filter_map(|(name, inst)| {
                let live = inst.liveness();
                (live.presence != Presence::Up).then(|| (live.last_seen, name.clone()))
            })
            .min();
        let Some((_, name)) = victim else {
            return false;
        };
        if let Some(inst) = component.instances.remove(&name) {
            tracing::info!(instance = %name, "forgetting a silent instance to make room for a new one");
            self.retire(index, name, &inst, now);
            self.own.collector().instances_evicted.increment(1);
        }
        true
    }

    /// Keeps the replay windows of a forgotten instance.
    fn retire(&self, index: usize, name: String, inst: &Instance, now: Instant) {
        let incarnations = std::mem::take(&mut *inst.incarnations());
        if !incarnations.is_empty() {
            self.retired
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert((index, name), (now, incarnations));
        }
    }

    /// Applies a batch: refused whole when malformed, answered as a duplicate
    /// when replayed, otherwise each event applied or rejected on its own.
    pub fn push(&self, batch: &EventBatch) -> Outcome {
        let own = self.own.collector();
        if let Err(problem) = self.check_batch(batch) {
            own.pushes.nth(PushCode::Invalid as usize).increment(1);
            return Outcome::Invalid(problem);
        }
        let source = batch.source.as_ref().expect("checked");
        let now = Instant::now();
        let inst = self.instance(source, now);
        {
            let mut incarnations = inst.incarnations();
            if !incarnations.contains_key(&source.incarnation) {
                let room = self.limits.max_incarnations.max(1) - 1;
                let evicted = keep_newest(&mut incarnations, room);
                if evicted > 0 {
                    own.windows_evicted.increment(evicted);
                }
            }
            let state = incarnations.entry(source.incarnation).or_default();
            state.last_seen = Some(now);
            if !state.window.check_and_mark(batch.sequence) {
                own.pushes.nth(PushCode::Duplicate as usize).increment(1);
                return Outcome::Applied(PushResponse {
                    sequence: batch.sequence,
                    accepted: 0,
                    rejected: 0,
                    duplicate: true,
                });
            }
        }
        inst.set_version(&source.version);

        let mut received = [0u64; catalog::EVENTS.len()];
        let mut rejected = [0u64; catalog::REJECT_REASONS.len()];
        let (mut accepted, mut refused) = (0u32, 0u32);
        for event in &batch.events {
            match apply::validate(event, self.limits.max_label_length) {
                Ok(payload) => {
                    received[apply::event_index(payload)] += 1;
                    apply::apply(&inst, source.incarnation, event, payload, now);
                    accepted += 1;
                }
                Err(reason) => {
                    rejected[reason.index()] += 1;
                    refused += 1;
                    if reason != Reject::NoPayload {
                        received[event.payload.as_ref().map_or(0, apply::event_index)] += 1;
                    }
                }
            }
        }
        for (i, n) in received.iter().enumerate().filter(|(_, n)| **n > 0) {
            own.received.nth(i).increment(*n);
        }
        for (i, n) in rejected.iter().enumerate().filter(|(_, n)| **n > 0) {
            own.rejected.nth(i).increment(*n);
        }
        own.pushes.nth(PushCode::Ok as usize).increment(1);
        Outcome::Applied(PushResponse {
            sequence: batch.sequence,
            accepted,
            rejected: refused,
            duplicate: false,
        })
    }

    /// A batch arrived: the instance is up (again).
    fn alive(&self, inst: &Instance, now: Instant) {
        let mut live = inst.liveness();
        live.last_seen = now;
        if live.presence != Presence::Up {
            live.presence = Presence::Up;
            inst.common.up.set(1.0);
            inst.common.stopped.set(0.0);
        }
    }

    /// Marks instances silent for three heartbeat intervals down, forgets
    /// those idle past the timeout (or stopped past the linger), and forgets
    /// replay windows of incarnations idle past the timeout.
    pub fn sweep(&self, now: Instant) {
        let memory = self.limits.dedup_memory;
        let fresh = |inc: &Incarnation| {
            inc.last_seen
                .is_some_and(|seen| now.saturating_duration_since(seen) <= memory)
        };
        for (index, map) in self.instances.iter().enumerate() {
            let mut forget = Vec::new();
            let read = map.read().unwrap_or_else(PoisonError::into_inner);
            for (name, inst) in read.instances.iter() {
                let mut live = inst.liveness();
                let silent = now.saturating_duration_since(live.last_seen);
                match live.presence {
                    Presence::Up if silent > (live.interval * 3).min(self.limits.max_silence) => {
                        tracing::warn!(component = %inst.component, instance = %name, ?silent, "instance down");
                        live.presence = Presence::Down { since: now };
                        inst.common.up.set(0.0);
                    }
                    Presence::Down { .. } if silent > self.limits.idle_timeout => {
                        forget.push(name.clone());
                    }
                    Presence::Stopped { since }
                        if now.saturating_duration_since(since) > self.limits.stopped_linger =>
                    {
                        forget.push(name.clone());
                    }
                    _ => {}
                }
                if live.presence != Presence::Up {
                    read.full.store(false, Ordering::Release);
                }
                drop(live);
                inst.incarnations().retain(|_, inc| fresh(inc));
            }
            drop(read);
            if !forget.is_empty() {
                let mut write = map.write().unwrap_or_else(PoisonError::into_inner);
                for name in forget {
                    // A batch may have revived it since the read pass.
                    let still_gone = write
                        .instances
                        .get(&name)
                        .is_some_and(|inst| inst.liveness().presence != Presence::Up);
                    if still_gone && let Some(inst) = write.instances.remove(&name) {
                        tracing::info!(instance = %name, "forgetting idle instance and its series");
                        self.retire(index, name, &inst, now);
                    }
                }
            }
        }
        let mut retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        retired.retain(|_, (_, incarnations)| {
            incarnations.retain(|_, inc| fresh(inc));
            !incarnations.is_empty()
        });
        let evicted = cap_retired(&mut retired, self.max_retired());
        if evicted > 0 {
            self.own.collector().windows_evicted.increment(evicted);
        }
    }

    /// Forgotten instances whose replay windows are kept, at most.
    fn max_retired(&self) -> usize {
        self.limits
            .max_instances
            .saturating_mul(COMPONENTS.len() + 1)
    }

    /// Every instance, the collector's own first.
    pub fn instances(&self) -> Vec<Arc<Instance>> {
        let mut all = vec![Arc::clone(&self.own)];
        for map in &self.instances {
            all.extend(
                map.read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .instances
                    .values()
                    .cloned(),
            );
        }
        all
    }

    /// Drains histogram samples into their buckets, so memory does not grow
    /// between scrapes.
    pub fn upkeep(&self) {
        for inst in self.instances() {
            inst.series.handle().run_upkeep();
        }
    }

    /// A render of `/metrics` began.
    pub fn count_render(&self) {
        self.renders.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders of `/metrics` so far.
    pub fn renders(&self) -> u64 {
        self.renders.load(Ordering::Relaxed)
    }

    /// Label sets of metric `metric` across instances (for tests and the bench).
    pub fn series_count(&self, metric: usize) -> usize {
        self.guard.count(metric)
    }
}
