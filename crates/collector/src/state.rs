//! The collector's state: the instances it knows, what it does with a batch,
//! and the upkeep that marks silent instances down and forgets idle ones.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use automation_proto::v1::{self, EventBatch, PushResponse};
use prost::Message;

use crate::apply::{self, Reject};
use crate::catalog::{self, COMPONENTS, METRICS, OTHER, PushCode, id};
use crate::guard::Guard;
use crate::instance::{Instance, Presence};

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

type Instances = RwLock<HashMap<String, Arc<Instance>>>;

/// The collector's state, shared by the gRPC service, `/metrics` and upkeep.
pub struct State {
    limits: Limits,
    guard: Arc<Guard>,
    /// One map per component in [`COMPONENTS`] order, then `other`.
    instances: Vec<Instances>,
    own: Arc<Instance>,
    limited: Limited,
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

impl State {
    /// A collector named `instance` (its own `component_instance`).
    pub fn new(limits: Limits, instance: &str, version: &str) -> Arc<Self> {
        let guard = Arc::new(Guard::new(limits.max_series_per_metric));
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
                Arc::clone(&guard),
                Arc::clone(&limited),
                Instant::now(),
            ));
            own.set_version(version);
            State {
                limits,
                guard,
                instances: (0..=COMPONENTS.len()).map(|_| RwLock::default()).collect(),
                own,
                limited,
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
    /// 0) on first sight.
    fn instance(&self, source: &v1::Source, now: Instant) -> Arc<Instance> {
        let index = component_index(&source.service);
        let map = &self.instances[index];
        if let Some(found) = map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&source.instance)
        {
            return Arc::clone(found);
        }
        let mut write = map.write().unwrap_or_else(PoisonError::into_inner);
        let name =
            if write.contains_key(&source.instance) || write.len() < self.limits.max_instances {
                source.instance.as_str()
            } else {
                self.count_limited(id::UP);
                OTHER
            };
        let instance = write.entry(name.to_owned()).or_insert_with(|| {
            tracing::info!(
                component = component_name(index),
                instance = name,
                "new instance"
            );
            Arc::new(Instance::new(
                component_name(index),
                name,
                Arc::clone(&self.guard),
                Arc::clone(&self.limited),
                now,
            ))
        });
        Arc::clone(instance)
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
        self.alive(&inst, now);
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
        for map in &self.instances {
            let mut forget = Vec::new();
            for (name, inst) in map.read().unwrap_or_else(PoisonError::into_inner).iter() {
                let mut live = inst.liveness();
                let silent = now.saturating_duration_since(live.last_seen);
                match live.presence {
                    Presence::Up if silent > live.interval * 3 => {
                        tracing::warn!(component = inst.component, instance = %name, ?silent, "instance down");
                        live.presence = Presence::Down { since: now };
                        inst.common.up.set(0.0);
                    }
                    Presence::Down { .. } if silent > self.limits.idle_timeout => {
                        forget.push(name.clone())
                    }
                    Presence::Stopped { since }
                        if now.saturating_duration_since(since) > self.limits.stopped_linger =>
                    {
                        forget.push(name.clone());
                    }
                    _ => {}
                }
                drop(live);
                inst.incarnations().retain(|_, inc| {
                    inc.last_seen.is_some_and(|seen| {
                        now.saturating_duration_since(seen) <= self.limits.idle_timeout
                    })
                });
            }
            if !forget.is_empty() {
                let mut write = map.write().unwrap_or_else(PoisonError::into_inner);
                for name in forget {
                    // A batch may have revived it since the read pass.
                    let still_gone = write.get(&name).is_some_and(|inst| {
                        let live = inst.liveness();
                        live.presence != Presence::Up
                    });
                    if still_gone {
                        tracing::info!(instance = %name, "forgetting idle instance and its series");
                        write.remove(&name);
                    }
                }
            }
        }
    }

    /// Every instance, the collector's own first.
    pub fn instances(&self) -> Vec<Arc<Instance>> {
        let mut all = vec![Arc::clone(&self.own)];
        for map in &self.instances {
            all.extend(
                map.read()
                    .unwrap_or_else(PoisonError::into_inner)
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

    /// Label sets of metric `metric` across instances (for tests and the bench).
    pub fn series_count(&self, metric: usize) -> usize {
        self.guard.count(metric)
    }
}
