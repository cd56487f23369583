//! The background half of `serve`: every tick it reads the managed Deployments, evaluates the
//! rollouts whose check is due (queries batched across rollouts), runs the pure state
//! machine, persists the new state on the Deployment, then reconciles the cluster (twin,
//! canary Service, routes) to that state. State first, world second: a crash in between is
//! repaired by the next run, which reconciles the world to whatever state was persisted.

pub mod hooks;
mod lists;
mod parsed;
pub mod run;
mod world;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use tracing::Instrument;

use crate::annotations as ann;
use crate::cluster::{Cluster, KubeError};
use crate::gates::{
    self, buckets_by_workload, by_workload, latency_bucket, measured, Batch, BatchResult, Sample,
    WindowData, Workload,
};
use crate::metrics::{Metrics, NameLabels, PhaseLabels, RolloutLabels};
use crate::prom::{PromError, QueryApi};
use crate::rollout::machine::{self, Analysis, Effect, Observation, TwinStatus};
use crate::rollout::state::{Action, Phase, RolloutState};
use crate::rollout::twin::twin_name;
use crate::server::health::Health;
use crate::settings::{Defaults, Settings};

/// How many rollouts are worked on at once (bounds concurrent calls to the API server).
pub const CONCURRENCY: usize = 16;

pub struct Analyzer<C, Q> {
    pub cluster: Arc<C>,
    pub prom: Arc<Q>,
    pub defaults: Defaults,
    pub metrics: Arc<Metrics>,
    /// The state the world was last reconciled to, per rollout. Empty after a restart, so
    /// the first tick reconciles everything once.
    reconciled: Mutex<HashMap<RolloutKey, Reconciled>>,
    /// Rollouts whose last reconciliation failed: (consecutive failures, next attempt). A
    /// struggling API server gets fewer writes, not one per rollout per second.
    retries: Mutex<HashMap<RolloutKey, (u32, Timestamp)>>,
    /// Where `/readyz` learns whether Prometheus answered the last queries.
    health: Option<Arc<Health>>,
    /// Where the dashboard learns what each step saw and decided.
    history: Option<Arc<crate::dashboard::History>>,
    /// Looks between checks at Progressing canaries (every zero: never), all rollouts together.
    peeks: ByTickClock,
    /// The one outbound HTTP client (hooks, notifications); `None` if it could not be built.
    outbound: Option<crate::outbound::Outbound>,
    /// Hook calls in flight and their results (no hooks without an outbound client).
    hook_calls: Option<hooks::HookCalls>,
    /// Chat and webhook notifications of the rollout events (disabled by default).
    notifier: crate::outbound::notify::Notifier,
    /// A look between checks is waiting for Prometheus: the next one waits for it, so that
    /// a slow Prometheus is not sent ever more looks at once (each covers every canary).
    peeking: std::sync::atomic::AtomicBool,
    /// What the last look between checks took, in milliseconds (`look_spacing`).
    look_cost_ms: std::sync::atomic::AtomicU64,
    /// Rollouts a running tick is working on: a later tick, started while that one still
    /// waits for its writes, leaves them alone.
    busy: Mutex<HashMap<RolloutKey, u64>>,
    /// Each rollout's state and settings, parsed once per change of its Deployment.
    parsed: parsed::ParseCache,
    /// The label sweep: the first tick of a leader, then every `LABEL_SWEEP_EVERY`.
    label_sweep: Every,
    /// The orphan sweep over every route: the first tick of a leader, then every `SWEEP_EVERY`.
    orphan_sweep: Every,
    /// Numbers the ticks, so that a tick only ever releases its own claims.
    tick_ids: std::sync::atomic::AtomicU64,
    /// Services and routes per namespace, read once per `--list-max-age` (see `lists`).
    lists: lists::Lists,
    /// New generations of `lists`: how old a list may get before it is read again.
    list_ages: ByTickClock,
}

/// Ticks that may run at once (`run`). A tick waits for its rollouts' writes; when the API
/// server is slow (or thousands of rollouts step in the same second) the next tick starts on
/// schedule anyway and works on the other rollouts. Beyond this many the scheduled tick is
/// skipped and counted.
pub const MAX_TICKS_IN_FLIGHT: usize = 16;

/// The rollouts one tick claimed: each is released when its work is done, the rest when the
/// tick ends, however it ends.
struct Claim<'a> {
    busy: &'a Mutex<HashMap<RolloutKey, u64>>,
    id: u64,
    keys: Vec<RolloutKey>,
}

impl Claim<'_> {
    fn release(&self, key: &RolloutKey) {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if busy.get(key) == Some(&self.id) {
            busy.remove(key);
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        for k in &self.keys {
            self.release(k);
        }
    }
}

/// A look between checks in flight (`Analyzer::peek_is_due`), over when dropped; what it
/// took is kept for spacing the next one (`look_spacing`).
struct Peeking<'a> {
    in_flight: &'a std::sync::atomic::AtomicBool,
    cost_ms: &'a std::sync::atomic::AtomicU64,
    /// `None` once it is known that nothing will be looked at.
    started: Option<std::time::Instant>,
}

impl Peeking<'_> {
    /// No canary to look at: nothing is sent, and the last look's cost still stands (the
    /// rest of the tick, its writes, is no look's cost).
    fn unused(mut self) {
        self.started = None;
    }
}

impl Drop for Peeking<'_> {
    fn drop(&mut self) {
        if let Some(started) = self.started {
            let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.cost_ms.store(ms, std::sync::atomic::Ordering::Release);
        }
        self.in_flight
            .store(false, std::sync::atomic::Ordering::Release);
    }
}

/// Looks between checks may take a fifth of Prometheus's time, no more.
const LOOK_SPACING_FACTOR: u32 = 5;

/// Time from the start of one look between checks to the next: `every`, or five times what
/// the last look took if that is longer. One look covers every Progressing canary; at
/// 10,000 of them it took seconds, and looks back to back kept Prometheus busy until the
/// checks' own queries timed out and half the checks were inconclusive.
fn look_spacing(every: Duration, last_cost: Duration) -> Duration {
    every.max(last_cost.saturating_mul(LOOK_SPACING_FACTOR))
}

/// How long a wake-up from the watch waits for further events before its tick.
const WAKE_SETTLE: Duration = Duration::from_millis(50);

/// Changes the analyzer acts on at once (`run`'s `changed`): a twin with all pods ready (its
/// first traffic step), a promoted stable Deployment that finished rolling out (handover and
/// cleanup). Everything else waits for the tick. Names the rollout: (namespace, stable).
pub fn woken_rollout(d: &Deployment) -> Option<RolloutKey> {
    let meta = &d.metadata;
    let (namespace, name) = (meta.namespace.as_deref()?, meta.name.as_deref()?);
    let managed = meta
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(ann::MANAGED_LABEL));
    if let (true, Some(stable)) = (managed, name.strip_suffix(crate::rollout::twin::SUFFIX)) {
        return (deployment_ready(d) == TwinStatus::Ready)
            .then(|| (namespace.to_string(), stable.to_string()));
    }
    let promoting = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(ann::PHASE))
        .is_some_and(|p| p == Phase::Promoting.as_str());
    (promoting && stable_rolled_out(d)).then(|| (namespace.to_string(), name.to_string()))
}

/// Default of `--peek-interval`: a couple of Prometheus scrapes at a 1 s scrape interval.
pub const PEEK_EVERY: Duration = Duration::from_secs(2);

/// Default of `--list-max-age`: every scheduled tick reads the lists it needs again.
pub const LIST_MAX_AGE: Duration = Duration::from_secs(1);

/// How long to wait after the n-th consecutive failed reconciliation of one rollout: 1 s,
/// doubling, at most a minute.
pub fn retry_delay(failures: u32) -> Duration {
    const MAX: Duration = Duration::from_secs(60);
    Duration::from_secs(1)
        .checked_mul(1u32 << failures.saturating_sub(1).min(6))
        .map_or(MAX, |d| d.min(MAX))
}

/// Time between two cluster-wide looks for routes of deleted Deployments.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Time between two looks (metadata only, paged) for rollouts missing the watch label. The
/// webhook re-labels on every update, so this only catches state from older versions and
/// writes made while the webhook was down: the first tick of a leader, then every 5 minutes
/// (by the clock: watch wake-ups add ticks).
const LABEL_SWEEP_EVERY: Duration = Duration::from_secs(300);

/// Something a tick does now and then, by the clock (watch wake-ups and concurrent ticks make
/// tick counts a poor clock): due at the first look after `reset`, then every `every`. The
/// tick that finds it due does it; concurrent ticks do not.
struct Every {
    every: Duration,
    last: Mutex<Option<std::time::Instant>>,
}

impl Every {
    fn new(every: Duration) -> Self {
        Every {
            every,
            last: Mutex::new(None),
        }
    }

    fn due(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= self.every);
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    }

    fn reset(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Something a tick does every `every` by the ticks' own clock (`now`), so that it follows
/// the schedule in tests with a synthetic clock too: due at the first look after `reset`.
struct ByTickClock {
    every: Duration,
    last: Mutex<Option<Timestamp>>,
}

impl ByTickClock {
    fn new(every: Duration) -> Self {
        ByTickClock {
            every,
            last: Mutex::new(None),
        }
    }

    /// Whether it is due at `now` (and if so, it is recorded as done). Half a tick of slack:
    /// ticks drift by milliseconds, and what is due at 2 s must not slip to 3 s.
    fn due(&self, now: Timestamp) -> bool {
        self.due_after(now, self.every)
    }

    /// `due`, with `every` in place of the usual spacing.
    fn due_after(&self, now: Timestamp, every: Duration) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| {
            now >= t + machine::as_signed(every) - jiff::SignedDuration::from_millis(500)
        });
        if due {
            *last = Some(now);
        }
        due
    }

    fn reset(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// (namespace, name) of a stable Deployment.
type RolloutKey = (String, String);
/// A tick's Deployments by (namespace, name).
type Index<'a> = HashMap<(&'a str, &'a str), &'a Arc<Deployment>>;
/// The rollouts a wake-up names.
type WokenKeys = std::collections::HashSet<RolloutKey>;
/// (phase, weight, canary revision) the world was reconciled to.
type Reconciled = (Phase, u32, String);

/// What the cluster must run for this state: the memo of a reconciliation.
fn reconciled_for(state: &RolloutState) -> Reconciled {
    (state.phase, state.weight, state.canary_revision.clone())
}

/// One rollout being worked on in a tick.
struct Item {
    deployment: Arc<Deployment>,
    namespace: String,
    name: String,
    state: Arc<RolloutState>,
    settings: Arc<Settings>,
    twin: TwinStatus,
    twin_present: bool,
}

impl Item {
    fn key(&self) -> RolloutKey {
        (self.namespace.clone(), self.name.clone())
    }
}

/// What a tick did, for tests and logs.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TickReport {
    pub rollouts: usize,
    /// Rollouts left to the earlier tick still working on them.
    pub busy: usize,
    pub checks: usize,
    /// Rollouts looked at between checks.
    pub peeks: usize,
    pub queries: usize,
    pub transitions: Vec<String>,
    pub errors: Vec<String>,
}

impl<C: Cluster, Q: QueryApi + 'static> Analyzer<C, Q> {
    pub fn new(cluster: Arc<C>, prom: Arc<Q>, defaults: Defaults, metrics: Arc<Metrics>) -> Self {
        let outbound = crate::outbound::Outbound::new(metrics.clone())
            .map_err(|error| {
                tracing::error!(%error, "no outbound HTTP client; hooks and notifications are off")
            })
            .ok();
        Analyzer {
            cluster,
            prom,
            defaults,
            metrics: metrics.clone(),
            reconciled: Mutex::new(HashMap::new()),
            retries: Mutex::new(HashMap::new()),
            health: None,
            history: None,
            peeks: ByTickClock::new(PEEK_EVERY),
            peeking: std::sync::atomic::AtomicBool::new(false),
            look_cost_ms: std::sync::atomic::AtomicU64::new(0),
            outbound: outbound.clone(),
            hook_calls: outbound.map(|o| hooks::HookCalls::new(o, metrics.clone())),
            notifier: crate::outbound::notify::Notifier::disabled(),
            busy: Mutex::default(),
            parsed: parsed::ParseCache::default(),
            tick_ids: std::sync::atomic::AtomicU64::new(0),
            label_sweep: Every::new(LABEL_SWEEP_EVERY),
            orphan_sweep: Every::new(SWEEP_EVERY),
            lists: lists::Lists::default(),
            list_ages: ByTickClock::new(LIST_MAX_AGE),
        }
    }

    /// Send the rollout events to the configured chat and webhook providers (through the
    /// analyzer's one outbound client). Needs a tokio runtime: it starts the delivery task.
    pub fn with_notifications(mut self, config: crate::outbound::notify::NotifyConfig) -> Self {
        if let Some(o) = &self.outbound {
            self.notifier = crate::outbound::notify::Notifier::spawn(o.clone(), config);
        }
        self
    }

    /// How often to look at the evidence between checks; `Duration::ZERO` turns it off.
    pub fn with_peek_every(mut self, every: Duration) -> Self {
        self.peeks.every = every;
        self
    }

    /// Whether this tick takes the look between checks: if so, it is recorded and the look
    /// is in flight until the returned guard is dropped.
    fn peek_is_due(&self, now: Timestamp) -> Option<Peeking<'_>> {
        if self.peeks.every.is_zero()
            || self.peeking.swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return None;
        }
        let last_cost =
            Duration::from_millis(self.look_cost_ms.load(std::sync::atomic::Ordering::Acquire));
        if !self
            .peeks
            .due_after(now, look_spacing(self.peeks.every, last_cost))
        {
            self.peeking
                .store(false, std::sync::atomic::Ordering::Release);
            return None;
        }
        Some(Peeking {
            in_flight: &self.peeking,
            cost_ms: &self.look_cost_ms,
            started: Some(std::time::Instant::now()),
        })
    }

    /// How long a namespace's list of Services or routes may be used before it is read again
    /// (`--list-max-age`): a change by someone else shows within it; the analyzer's own
    /// writes are in the lists at once.
    pub fn with_list_max_age(mut self, age: Duration) -> Self {
        self.list_ages.every = age;
        self
    }

    /// A new generation of lists when the current one is `--list-max-age` old.
    fn age_lists(&self, now: Timestamp) {
        if self.list_ages.due(now) {
            self.lists.renew();
        }
    }

    /// Record every check and decision for the dashboard.
    pub fn with_history(mut self, history: Arc<crate::dashboard::History>) -> Self {
        self.history = Some(history);
        self
    }

    /// Report Prometheus' state on `/readyz`.
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = Some(health);
        self
    }

    /// Forget what was reconciled (a new leader must not trust an old memo).
    pub fn reset(&self) {
        self.label_sweep.reset();
        self.orphan_sweep.reset();
        self.reconciled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.retries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.lists.clear();
        self.list_ages.reset();
    }

    /// Ticks every `every` until the task is dropped. Ticks do not drift: a slow tick is
    /// followed by the next scheduled one, and lateness is measured. `changed` (the watch
    /// saw a twin become ready, or a promoted stable finish rolling out) runs a tick at once,
    /// so that a phase moves on when its condition holds, not up to a tick later; the
    /// interval stays the bake time of each step.
    pub async fn run(
        self: Arc<Self>,
        every: Duration,
        leader: tokio::sync::watch::Receiver<bool>,
        changed: Option<Arc<crate::cluster::Wakes>>,
    ) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut was_leader = false;
        let mut running = tokio::task::JoinSet::new();
        let wake_in_flight = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let woken = || async {
            match &changed {
                Some(w) => w.woken().await,
                None => std::future::pending().await,
            }
        };
        loop {
            let woke = tokio::select! {
                scheduled = ticker.tick() => {
                    let lateness = tokio::time::Instant::now().saturating_duration_since(scheduled);
                    self.metrics.tick_lateness.observe(lateness.as_secs_f64());
                    false
                }
                () = woken() => true,
            };
            while running.try_join_next().is_some() {}
            let is_leader = *leader.borrow();
            if is_leader != was_leader {
                tracing::info!(leader = is_leader, "analyzer leadership changed");
                // A former leader's ticks must not write on: the new leader owns the rollouts.
                running.abort_all();
                while running.join_next().await.is_some() {}
                self.reset();
                was_leader = is_leader;
            }
            if !is_leader {
                continue;
            }
            // One wake-up tick waiting to start at a time: a burst of watch events (a thousand
            // twins turning ready) becomes one tick per settling time, not a thousand.
            if woke && wake_in_flight.swap(true, std::sync::atomic::Ordering::AcqRel) {
                continue;
            }
            if running.len() >= MAX_TICKS_IN_FLIGHT {
                if woke {
                    wake_in_flight.store(false, std::sync::atomic::Ordering::Release);
                    continue;
                }
                // Lists still age by the schedule: the wake-up ticks that run meanwhile
                // must not work on lists from before the skip.
                self.age_lists(Timestamp::now());
                self.metrics.ticks_skipped.inc();
                tracing::warn!(
                    running = running.len(),
                    "analyzer tick skipped: earlier ticks are still writing"
                );
                continue;
            }
            let analyzer = self.clone();
            let wake = woke
                .then(|| changed.clone().map(|w| (wake_in_flight.clone(), w)))
                .flatten();
            running.spawn(
                async move {
                    let mut only = None;
                    if let Some((flag, wakes)) = wake {
                        // Let the burst (a twin's pods turning ready one by one) settle into
                        // this tick; the wait is the tick's, so the schedule is not held up.
                        tokio::time::sleep(WAKE_SETTLE).await;
                        flag.store(false, std::sync::atomic::Ordering::Release);
                        only = Some(wakes.take());
                    }
                    let started = std::time::Instant::now();
                    let report = analyzer.tick_over(Timestamp::now(), only.as_ref()).await;
                    analyzer
                        .metrics
                        .tick_duration
                        .observe(started.elapsed().as_secs_f64());
                    if !report.transitions.is_empty() || !report.errors.is_empty() {
                        tracing::info!(rollouts = report.rollouts, busy = report.busy, checks = report.checks, peeks = report.peeks, queries = report.queries, transitions = ?report.transitions, errors = ?report.errors, "tick");
                    }
                }
                .instrument(tracing::info_span!("tick")),
            );
        }
    }

    pub async fn tick(&self, now: Timestamp) -> TickReport {
        self.tick_over(now, None).await
    }

    /// A tick over every rollout, or (`only`, a wake-up from the watch) over the rollouts
    /// named: those get their step at once; the sweeps, the look between checks and the
    /// phase gauges are the scheduled ticks' (at most a second away).
    async fn tick_over(&self, now: Timestamp, only: Option<&WokenKeys>) -> TickReport {
        let mut report = TickReport::default();
        let full = only.is_none();
        if full {
            self.age_lists(now);
        } else {
            self.lists.renew_reported();
        }
        if full && self.label_sweep.due() {
            self.label_unlabeled(&mut report).await;
        }
        let deployments = match self.cluster.deployments().await {
            Ok(d) => d,
            Err(e) => {
                report.errors.push(format!("list deployments: {e}"));
                return report;
            }
        };
        let index: Index = deployments
            .iter()
            .map(|d| {
                (
                    (
                        d.metadata.namespace.as_deref().unwrap_or_default(),
                        d.metadata.name.as_deref().unwrap_or_default(),
                    ),
                    d,
                )
            })
            .collect();
        if full {
            self.parsed
                .retain(|ns, name| index.contains_key(&(ns, name)));
        }
        let candidates: Vec<&Arc<Deployment>> = match only {
            None => deployments.iter().collect(),
            Some(keys) => keys
                .iter()
                .filter_map(|(ns, name)| index.get(&(ns.as_str(), name.as_str())).copied())
                .collect(),
        };
        // Rollouts an earlier tick is still writing are its own; claim the rest. Items are
        // built for the claimed ones only: a tick in flight holds no more than its own work.
        let mut phases: HashMap<Phase, i64> = HashMap::new();
        let mut items = Vec::new();
        let claim = {
            let id = self
                .tick_ids
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
            let mut keys = Vec::new();
            for d in candidates {
                let Some(phase) = d
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ann::PHASE))
                    .and_then(|p| p.parse::<Phase>().ok())
                else {
                    continue;
                };
                let key = (
                    d.metadata.namespace.clone().unwrap_or_default(),
                    d.metadata.name.clone().unwrap_or_default(),
                );
                if busy.contains_key(&key) {
                    report.busy += 1;
                } else if let Some(item) = self.item(d, &index) {
                    busy.insert(key.clone(), id);
                    keys.push(key);
                    items.push(item);
                } else {
                    continue;
                }
                *phases.entry(phase).or_default() += 1;
            }
            items.shrink_to_fit();
            Claim {
                busy: &self.busy,
                id,
                keys,
            }
        };
        report.rollouts = items.len() + report.busy;
        let lists = &self.lists;
        if full {
            self.export_phases(&phases);
            self.clean_orphans(&deployments, &index, lists, &mut report)
                .await;
        }
        // Let go of the cache's snapshot: this tick may wait long for its writes, and every
        // tick holding all Deployments as they were when it started keeps one generation of
        // the cache alive per tick in flight (tens of MiB at 1,000 rollouts). The items keep
        // their own Deployment.
        drop(index);
        drop(deployments);

        // Analyses of every due rollout, queries batched by window length.
        // Bring the cluster in line with each recorded state it is not known to match (after
        // a restart, a failed write, a hand-deleted twin). Where that had to write, traffic
        // may not have run at the recorded weight: that rollout's next window starts now.
        let waiting = |it: &Item| {
            self.retries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&it.key())
                .is_some_and(|(_, next)| now < *next)
        };
        let out_of_sync: Vec<usize> = (0..items.len())
            .filter(|&i| !self.in_sync(&items[i]) && !waiting(&items[i]))
            .collect();
        let (cluster, items_ref) = (&*self.cluster, &items);
        // Futures made as `buffer_unordered` pulls them, at most CONCURRENCY at a time: one is
        // ~12 KiB, and a Vec of them for 10,000 rollouts out of sync held ~200 MiB per tick.
        let repairs: Vec<(usize, Result<bool, KubeError>)> = futures::stream::iter(out_of_sync)
            .map(|i| async move {
                let it = &items_ref[i];
                (i, world::reconcile(cluster, lists, it, &it.state).await)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut fresh = std::collections::HashSet::new();
        for (i, result) in repairs {
            let it = &items[i];
            let key = it.key();
            let mut retries = self.retries.lock().unwrap_or_else(|p| p.into_inner());
            match result {
                Ok(wrote) => {
                    retries.remove(&key);
                    let memo = reconciled_for(&it.state);
                    self.reconciled
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key, memo);
                    if wrote {
                        fresh.insert(i);
                    }
                }
                Err(e) => {
                    let failures = retries.get(&key).map_or(0, |(n, _)| *n) + 1;
                    let delay = retry_delay(failures);
                    retries.insert(key, (failures, now + machine::as_signed(delay)));
                    report.errors.push(format!(
                        "{}/{}: reconcile: {e} (failure {failures}, next try in {})",
                        it.namespace,
                        it.name,
                        humantime::format_duration(delay)
                    ));
                }
            }
        }

        // A window is only judged when the cluster is known to have run the recorded weight.
        let due: Vec<usize> = (0..items.len())
            .filter(|&i| self.in_sync(&items[i]) && !fresh.contains(&i))
            .filter(|&i| {
                machine::check_due(
                    &items[i].state,
                    &items[i].settings,
                    items[i].twin == TwinStatus::Ready,
                    now,
                )
            })
            .collect();
        // Between checks, a look at the evidence so far for every Progressing canary, at
        // most every `peeks.every` (decisive evidence rolls back at once, see
        // `machine::peek_due`). Peeks are batched like the checks, without the p99
        // (`gates::batch_queries`), and wait for a look still in flight.
        let peeking = full.then(|| self.peek_is_due(now)).flatten();
        let peeks: Vec<usize> = if peeking.is_some() {
            (0..items.len())
                .filter(|&i| self.in_sync(&items[i]) && !fresh.contains(&i))
                .filter(|&i| {
                    machine::peek_due(
                        &items[i].state,
                        &items[i].settings,
                        items[i].twin == TwinStatus::Ready,
                        self.peeks.every,
                        now,
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        // Nothing to look at: that look is over before it began.
        let peeking = match peeking {
            Some(p) if peeks.is_empty() => {
                p.unused();
                None
            }
            p => p,
        };
        let mut analyses: HashMap<usize, Analysis> = HashMap::new();
        let mut peeked: HashMap<usize, Analysis> = HashMap::new();
        let due_set: std::collections::HashSet<usize> = due.iter().copied().collect();
        // Windows of checks and of looks between checks, apart: only checks get the p99.
        let mut groups: [BTreeMap<Duration, Vec<Workload>>; 2] = Default::default();
        let mut measured_items = Vec::new();
        for &i in due.iter().chain(&peeks) {
            let it = &items[i];
            if let Some(w) = machine::analysis_window(&it.state, now) {
                let look = usize::from(!due_set.contains(&i));
                groups[look].entry(w).or_default().extend([
                    Workload {
                        namespace: it.namespace.clone(),
                        workload: twin_name(&it.name),
                    },
                    Workload {
                        namespace: it.namespace.clone(),
                        workload: it.name.clone(),
                    },
                ]);
                measured_items.push((i, w));
            }
        }
        if !measured_items.is_empty() {
            let les: Vec<f64> = measured_items
                .iter()
                .filter_map(|&(i, _)| latency_bucket(items[i].settings.max_p99_ms))
                .collect();
            let [checks, looks] = groups.map(|g| g.into_iter().collect::<Vec<_>>());
            // Checks and looks in queries of their own, at the same time: a look covers every
            // Progressing canary and may take seconds, and a check waiting on it would time
            // out with it (inconclusive) for nothing it needed.
            let checking = async {
                if checks.is_empty() {
                    None
                } else {
                    Some(self.batch(&checks, &[], &les, now).await)
                }
            };
            let looking = async {
                let looked = if looks.is_empty() {
                    None
                } else {
                    Some(self.batch(&[], &looks, &les, now).await)
                };
                // What the look took is its own queries' time (`look_spacing`).
                drop(peeking);
                looked
            };
            let (checked, looked) = futures::join!(checking, looking);
            report.queries += checked.as_ref().map_or(0, |(_, q)| *q);
            report.queries += looked.as_ref().map_or(0, |(_, q)| *q);
            let missing: BatchResult = Err("no query was sent for this window".into());
            for (i, window) in measured_items {
                let it = &items[i];
                let is_check = due_set.contains(&i);
                let batch = if is_check { &checked } else { &looked };
                let data = match batch.as_ref().map_or(&missing, |(b, _)| b) {
                    Err(e) => Err(e.clone()),
                    Ok(b) => {
                        let canary = Workload {
                            namespace: it.namespace.clone(),
                            workload: twin_name(&it.name),
                        };
                        let stable = Workload {
                            namespace: it.namespace.clone(),
                            workload: it.name.clone(),
                        };
                        // Custom gates are one query per rollout: at the checks only.
                        let mut custom = Vec::new();
                        for gate in it.settings.gates.iter().filter(|_| is_check) {
                            report.queries += 1;
                            let q = gate.render(&it.namespace, &canary.workload, window);
                            let value = match self.prom.query(&q, now).await {
                                Ok(s) => s
                                    .first()
                                    .map(|s| s.value)
                                    .filter(|v| v.is_finite())
                                    .ok_or_else(|| "empty or NaN result".to_string()),
                                Err(e) => Err(e.to_string()),
                            };
                            custom.push((gate.clone(), value));
                        }
                        Ok(WindowData {
                            canary: measured(b, &canary, latency_bucket(it.settings.max_p99_ms)),
                            stable: measured(b, &stable, latency_bucket(it.settings.max_p99_ms)),
                            custom,
                        })
                    }
                };
                let analysis =
                    gates::evaluate(&it.settings, it.state.weight, it.state.counts, data);
                if is_check {
                    analyses.insert(i, analysis);
                    report.checks += 1;
                } else {
                    peeked.insert(i, analysis);
                    report.peeks += 1;
                }
            }
        }

        let results: Vec<(Vec<String>, Vec<String>)> = futures::stream::iter(items.into_iter().enumerate())
            .map(|(i, item)| {
                let analysis = analyses.remove(&i);
                let peek = peeked.remove(&i);
                let fresh_window = fresh.contains(&i);
                let span = tracing::info_span!("rollout", namespace = %item.namespace, deployment = %item.name);
                let claim = &claim;
                async move {
                    let key = item.key();
                    let done = self.advance(item, lists, analysis, peek, fresh_window, now).await;
                    claim.release(&key);
                    done
                }
                .instrument(span)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (t, e) in results {
            report.transitions.extend(t);
            report.errors.extend(e);
        }
        drop(claim);
        report
    }

    /// Deployments with rollout state but without the label the watch selects on (state
    /// from before the label existed, or a label dropped while the webhook was down) get
    /// it, so that they are seen from the next tick on.
    async fn label_unlabeled(&self, report: &mut TickReport) {
        let found = match self.cluster.unlabeled_rollouts().await {
            Ok(found) => found,
            Err(e) => {
                report
                    .errors
                    .push(format!("list deployments without the rollout label: {e}"));
                return;
            }
        };
        let results: Vec<_> = futures::stream::iter(found)
            .map(|(ns, name)| async move {
                let result = self.cluster.label_rollout(&ns, &name).await;
                (ns, name, result)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (ns, name, result) in results {
            match result {
                Ok(()) => {
                    tracing::info!(namespace = %ns, deployment = %name, label = ann::ROLLOUT_LABEL, "rollout without the watch label; labelled");
                    report
                        .transitions
                        .push(format!("{ns}/{name}: labelled {}", ann::ROLLOUT_LABEL));
                }
                Err(e) => report
                    .errors
                    .push(format!("{ns}/{name}: label {}: {e}", ann::ROLLOUT_LABEL)),
            }
        }
    }

    /// A stable Deployment deleted mid-rollout leaves routes, a twin and a canary Service
    /// behind (the garbage collector removes owned objects, but not a user's adopted routes).
    /// Found by memory (rollouts this process reconciled), by twins whose owner is gone, and
    /// by a periodic sweep of routes naming an owner that is gone.
    async fn clean_orphans(
        &self,
        deployments: &[Arc<Deployment>],
        index: &Index<'_>,
        lists: &lists::Lists,
        report: &mut TickReport,
    ) {
        // Gone: deleted, or deleted and re-created under the same name (no rollout state).
        let gone = |(ns, name): &RolloutKey| {
            index
                .get(&(ns.as_str(), name.as_str()))
                .is_none_or(|d| self.parsed.get(d, &self.defaults).is_none())
        };
        let mut orphans: Vec<RolloutKey> = self
            .reconciled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .filter(|k| gone(k))
            .cloned()
            .collect();
        for d in deployments {
            let managed = d
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(ann::MANAGED_LABEL));
            let owner = d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ann::OWNER));
            if let (true, Some(owner)) = (managed, owner) {
                let key = (
                    d.metadata.namespace.clone().unwrap_or_default(),
                    owner.clone(),
                );
                if gone(&key) && !orphans.contains(&key) {
                    orphans.push(key);
                }
            }
        }
        // Routes outlive the twin: after the garbage collector removed it and this process
        // restarted, only the routes still name the deleted owner. Look for them on the first
        // tick of a leader and every SWEEP_EVERY after.
        if self.orphan_sweep.due() {
            match self.cluster.virtual_services_everywhere().await {
                Ok(all) => {
                    for vs in all {
                        let ns = vs.metadata.namespace.clone().unwrap_or_default();
                        let owner = vs
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(ann::OWNER))
                            .cloned();
                        if let Some(owner) = owner {
                            let key = (ns, owner);
                            if gone(&key) && !orphans.contains(&key) {
                                orphans.push(key);
                            }
                        }
                    }
                }
                Err(e) => report
                    .errors
                    .push(format!("list virtualservices for orphans: {e}")),
            }
            match self.cluster.http_routes_everywhere().await {
                Ok(all) => {
                    for key in all.iter().filter_map(|r| world::route_owner(&r.metadata)) {
                        if gone(&key) && !orphans.contains(&key) {
                            orphans.push(key);
                        }
                    }
                }
                Err(e) => report
                    .errors
                    .push(format!("list httproutes for orphans: {e}")),
            }
        }
        for (ns, owner) in orphans {
            match world::cleanup(&*self.cluster, lists, &ns, &owner).await {
                Ok(()) => {
                    self.reconciled
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&(ns.clone(), owner.clone()));
                    tracing::info!(namespace = %ns, deployment = %owner, "deployment deleted mid-rollout; canary objects cleaned up");
                    report
                        .transitions
                        .push(format!("{ns}/{owner}: deleted; canary objects cleaned up"));
                }
                Err(e) => report
                    .errors
                    .push(format!("{ns}/{owner}: cleanup after deletion: {e}")),
            }
        }
    }

    /// The built-in measurements of one tick, and how many queries they took.
    async fn batch(
        &self,
        checks: &[(Duration, Vec<Workload>)],
        looks: &[(Duration, Vec<Workload>)],
        les: &[f64],
        now: Timestamp,
    ) -> (BatchResult, usize) {
        let q = gates::batch_queries(checks, looks, les);
        let p99 = async {
            match &q.p99 {
                Some(p99) => self.prom.query(p99, now).await,
                None => Ok(Vec::new()),
            }
        };
        let (a, b, c, d) = futures::join!(
            self.prom.query(&q.requests, now),
            self.prom.query(&q.errors, now),
            p99,
            self.prom.query(&q.buckets, now)
        );
        let queries = 3 + usize::from(q.p99.is_some());
        let batch = assemble([a, b, c, d]);
        if let Some(health) = &self.health {
            match &batch {
                Ok(_) => health.set_prometheus(format!("ok (last queries at {now})")),
                Err(e) => health.set_prometheus(format!("error: {e}")),
            }
        }
        (batch, queries)
    }

    fn item(&self, d: &Arc<Deployment>, index: &Index<'_>) -> Option<Item> {
        let (state, settings) = self.parsed.get(d, &self.defaults)?;
        let namespace = d.metadata.namespace.clone().unwrap_or_default();
        let name = d.metadata.name.clone().unwrap_or_default();
        // A twin of another revision (a newer template was applied mid-rollout) is not this
        // rollout's twin: it is re-applied and must become ready again before any traffic.
        let twin_key = twin_name(&name);
        let twin = index
            .get(&(namespace.as_str(), twin_key.as_str()))
            .filter(|t| world::holds_revision(&t.metadata, &state.canary_revision));
        let twin_status = match twin {
            None => TwinStatus::Missing,
            Some(t) => deployment_ready(t),
        };
        let twin_present = twin.is_some();
        Some(Item {
            deployment: Arc::clone(d),
            namespace,
            name,
            state,
            settings,
            twin: twin_status,
            twin_present,
        })
    }

    /// Is the cluster known to match this rollout's state (reconciled by this process)?
    fn in_sync(&self, item: &Item) -> bool {
        let key = item.key();
        let memo = reconciled_for(&item.state);
        let twin_lost = item.state.phase != Phase::Pending
            && !item.state.phase.is_terminal()
            && !item.twin_present;
        !twin_lost
            && self
                .reconciled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                == Some(&memo)
    }

    fn export_phases(&self, phases: &HashMap<Phase, i64>) {
        for phase in Phase::ALL {
            self.metrics
                .rollouts_by_phase
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str(),
                })
                .set(phases.get(&phase).copied().unwrap_or(0));
        }
    }

    /// Runs the machine for one rollout, persists, reconciles, emits events.
    async fn advance(
        &self,
        item: Item,
        lists: &lists::Lists,
        analysis: Option<Analysis>,
        peek: Option<Analysis>,
        fresh_window: bool,
        now: Timestamp,
    ) -> (Vec<String>, Vec<String>) {
        let mut transitions = Vec::new();
        let mut errors = Vec::new();
        let empty = BTreeMap::new();
        let annotations = item
            .deployment
            .metadata
            .annotations
            .as_ref()
            .unwrap_or(&empty);
        let action = annotations.get(ann::ACTION).and_then(|a| Action::parse(a));
        let raw_action = annotations.contains_key(ann::ACTION);
        let stable_rolled_out = stable_rolled_out(&item.deployment);
        // Only while the canary is being set up: a Service list per rollout per tick would
        // cost the API server ~1,000 lists/s at 1,000 rollouts.
        let setting_up = item.state.phase == Phase::Pending
            || (item.state.phase == Phase::Progressing && item.state.weight == 0);
        let setup_error = if setting_up {
            world::setup_error(&*self.cluster, lists, &item).await
        } else {
            None
        };
        let key = item.key();
        let hook_results = self
            .hook_calls
            .as_ref()
            .map(|h| h.take(&item.namespace, &item.name, &item.state.canary_revision))
            .unwrap_or_default();
        let checked = analysis.is_some();
        let obs = Observation {
            twin: item.twin.clone(),
            stable_rolled_out,
            analysis,
            action,
            action_by: annotations.get(ann::ACTION_BY).cloned(),
            progress_deadline: progress_deadline(&item.deployment),
            setup_error,
            fresh_window,
            peek,
            hooks: hook_results,
        };
        let (next, effects) = machine::step(&item.state, &obs, &item.settings, now);
        if let Some(history) = &self.history {
            let key = (item.namespace.as_str(), item.name.as_str());
            history.record(
                key,
                &item.settings,
                &item.state,
                &next,
                obs.analysis.as_ref(),
                &effects,
                now,
            );
        }
        let clear_action = raw_action;
        let changed = next != *item.state || clear_action;
        if changed {
            let mut patch: BTreeMap<String, Option<String>> = next
                .to_annotations()
                .into_iter()
                .filter(|(k, v)| annotations.get(*k) != v.as_ref())
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            if clear_action {
                patch.insert(ann::ACTION.to_string(), None);
            }
            let paused = desired_paused(&item.deployment, next.phase);
            let rv = item
                .deployment
                .metadata
                .resource_version
                .clone()
                .unwrap_or_default();
            match self
                .cluster
                .patch_deployment(&item.namespace, &item.name, &rv, patch, paused)
                .await
            {
                Ok(()) => {}
                Err(KubeError::Conflict) => {
                    // Someone (a user, the webhook) changed it since we read it: decide again
                    // next tick on fresh data rather than overwrite.
                    return (
                        transitions,
                        vec![format!(
                            "{}/{}: conflict, retrying next tick",
                            item.namespace, item.name
                        )],
                    );
                }
                Err(e) => {
                    return (
                        transitions,
                        vec![format!(
                            "{}/{}: persist state: {e}",
                            item.namespace, item.name
                        )],
                    )
                }
            }
            if next.phase != item.state.phase || next.weight != item.state.weight {
                transitions.push(format!(
                    "{}/{}: {} {}% -> {} {}%",
                    item.namespace,
                    item.name,
                    item.state.phase,
                    item.state.weight,
                    next.phase,
                    next.weight
                ));
            }
        }
        for effect in &effects {
            match effect {
                Effect::Event {
                    kind,
                    reason,
                    message,
                } => {
                    tracing::info!(reason, detail = %message, "rollout event");
                    // After the state is persisted: never sent twice after a restart. The text
                    // is the Event's own.
                    self.notifier.notify(crate::outbound::notify::Notification {
                        namespace: item.namespace.clone(),
                        deployment: item.name.clone(),
                        reason: reason.to_string(),
                        message: message.clone(),
                        phase: next.phase.to_string(),
                        weight: next.weight,
                        channels: crate::outbound::notify::parse_channels(
                            annotations.get(ann::NOTIFY).map(String::as_str),
                        )
                        .unwrap_or_default(),
                    });
                    if let Err(e) = self
                        .cluster
                        .event(&item.deployment, kind.clone(), reason, message)
                        .await
                    {
                        tracing::warn!(error = %e, "could not record event");
                    }
                }
                Effect::Decision(d) => {
                    self.metrics
                        .decisions
                        .get_or_create(&NameLabels { name: d })
                        .inc();
                }
                Effect::Check(c) => {
                    self.metrics
                        .checks
                        .get_or_create(&NameLabels { name: c })
                        .inc();
                }
                Effect::ClearAction => {}
                Effect::CallHooks(kind) => {
                    if let Some(h) = &self.hook_calls {
                        h.fire(&item.namespace, &item.name, &item.settings, &next, *kind);
                    }
                }
            }
        }
        // Hooks due in the state just persisted; their answers come back at a later tick.
        if let Some(h) = &self.hook_calls {
            h.start_due(
                &item.namespace,
                &item.name,
                &item.settings,
                &next,
                item.twin == TwinStatus::Ready,
                checked,
                now,
            );
        }
        let labels = RolloutLabels {
            namespace: item.namespace.clone(),
            deployment: item.name.clone(),
        };
        self.metrics
            .rollout_weight
            .get_or_create(&labels)
            .set(i64::from(next.weight));
        self.metrics
            .rollout_failed_checks
            .get_or_create(&labels)
            .set(i64::from(next.failed_checks));

        // Reconcile the world to the (persisted) new state when it is not known to match.
        let memo = reconciled_for(&next);
        let known = self
            .reconciled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if known.as_ref() != Some(&memo) {
            match world::reconcile(&*self.cluster, lists, &item, &next).await {
                Ok(_) => {
                    self.reconciled
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key, memo);
                }
                Err(e) => errors.push(format!("{}/{}: reconcile: {e}", item.namespace, item.name)),
            }
        }
        (transitions, errors)
    }
}

/// All four answers or the first error: a partial picture is not judged.
fn assemble(answers: [Result<Vec<Sample>, PromError>; 4]) -> BatchResult {
    let [a, b, c, d] = answers;
    Ok(Batch {
        requests: by_workload(&a.map_err(|e| e.to_string())?),
        errors: by_workload(&b.map_err(|e| e.to_string())?),
        p99: by_workload(&c.map_err(|e| e.to_string())?),
        buckets: buckets_by_workload(&d.map_err(|e| e.to_string())?),
    })
}

fn deployment_ready(d: &Deployment) -> TwinStatus {
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as u32;
    let status = d.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0).max(0) as u32;
    let observed = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    if observed && ready >= wanted && status.updated_replicas.unwrap_or(0).max(0) as u32 >= wanted {
        TwinStatus::Ready
    } else {
        TwinStatus::Starting { ready, wanted }
    }
}

/// The stable Deployment, unpaused, finished rolling out its template (the validated canary
/// revision: a newer template would have restarted the rollout at admission) on every replica.
fn stable_rolled_out(d: &Deployment) -> bool {
    let Some(spec) = d.spec.as_ref() else {
        return false;
    };
    !spec.paused.unwrap_or(false) && deployment_ready(d) == TwinStatus::Ready && {
        let s = d.status.clone().unwrap_or_default();
        s.available_replicas.unwrap_or(0) >= spec.replicas.unwrap_or(1)
    }
}

fn progress_deadline(d: &Deployment) -> Duration {
    let secs = d
        .spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .unwrap_or(600)
        .max(1);
    Duration::from_secs(secs as u64)
}

/// The stable is unpaused when its template has been validated (promotion) and stays as it
/// is otherwise (the webhook pauses it at admission; a failed rollout keeps it paused).
fn desired_paused(d: &Deployment, phase: Phase) -> Option<bool> {
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    (matches!(phase, Phase::Promoting | Phase::Succeeded) && paused).then_some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_from_a_second_to_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(60));
        assert_eq!(retry_delay(0), Duration::from_secs(1));
    }

    fn deployment(value: serde_json::Value) -> Deployment {
        serde_json::from_value(value).expect("deployment")
    }

    fn analyzer() -> Analyzer<crate::cluster::memory::MemoryCluster, crate::prom::PromClient> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let metrics = Metrics::new();
        let prom = crate::prom::PromClient::new(
            "http://127.0.0.1:9",
            Duration::from_secs(1),
            metrics.clone(),
        )
        .expect("client");
        Analyzer::new(
            Arc::new(crate::cluster::memory::MemoryCluster::new()),
            Arc::new(prom),
            Defaults::default(),
            metrics,
        )
    }

    #[tokio::test]
    async fn lists_are_read_again_once_per_list_age() {
        for (age, reads) in [(None, 10), (Some(5), 2), (Some(3), 4)] {
            let mut a = analyzer();
            if let Some(age) = age {
                a = a.with_list_max_age(Duration::from_secs(age));
            }
            let t0 = Timestamp::now();
            let fetched = std::sync::atomic::AtomicUsize::new(0);
            // Ten scheduled ticks a second apart, each reading the namespace's Services.
            for s in 0..10 {
                a.age_lists(t0 + jiff::SignedDuration::from_secs(s));
                a.lists
                    .services
                    .get("shop", || async {
                        fetched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Ok(Vec::new())
                    })
                    .await
                    .expect("list");
            }
            assert_eq!(
                fetched.load(std::sync::atomic::Ordering::Relaxed),
                reads,
                "list age {age:?}"
            );
        }
    }

    #[test]
    fn a_look_between_checks_waits_for_the_one_in_flight() {
        let a = analyzer();
        let t0 = Timestamp::now();
        let at = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
        let first = a.peek_is_due(t0).expect("the first look is due");
        assert!(a.peek_is_due(at(1)).is_none(), "not due yet");
        assert!(
            a.peek_is_due(at(2)).is_none(),
            "due, but the last look still waits for Prometheus"
        );
        drop(first);
        let second = a
            .peek_is_due(at(3))
            .expect("due once the last look is back");
        drop(second);
        assert!(
            a.peek_is_due(at(4)).is_none(),
            "2 s after the last look taken"
        );
        assert!(a.peek_is_due(at(5)).is_some());
    }

    #[test]
    fn a_slow_look_between_checks_spaces_the_next_ones() {
        let a = analyzer();
        let t0 = Timestamp::now();
        let at = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
        drop(a.peek_is_due(t0).expect("the first look is due"));
        // The look just dropped took no time: the usual 2 s.
        assert!(a.peek_is_due(at(1)).is_none());
        let second = a.peek_is_due(at(2)).expect("2 s later");
        drop(second);
        // As if that look had waited 3 s for Prometheus: the next one 15 s after its start.
        a.look_cost_ms
            .store(3_000, std::sync::atomic::Ordering::Release);
        assert!(a.peek_is_due(at(16)).is_none(), "14 s after the slow look");
        let third = a.peek_is_due(at(17)).expect("15 s after it");
        // Nothing to look at this time: the slow look's cost still spaces the next.
        third.unused();
        assert!(
            a.peek_is_due(at(31)).is_none(),
            "14 s after the unused look"
        );
        assert!(a.peek_is_due(at(32)).is_some(), "15 s after it");
        assert_eq!(
            look_spacing(Duration::from_secs(2), Duration::from_millis(100)),
            Duration::from_secs(2),
            "a fast look keeps the interval"
        );
    }

    #[test]
    fn the_watch_wakes_the_analyzer_only_when_a_phase_can_move_on() {
        let twin = |ready: i32| {
            deployment(serde_json::json!({
                "metadata": {"name": "podinfo-canary", "namespace": "shop", "generation": 1,
                    "labels": {ann::MANAGED_LABEL: "true"}},
                "spec": {"replicas": 2, "selector": {}, "template": {}},
                "status": {"observedGeneration": 1, "readyReplicas": ready, "updatedReplicas": 2}
            }))
        };
        assert_eq!(
            woken_rollout(&twin(2)),
            Some(("shop".to_string(), "podinfo".to_string())),
            "twin ready: first traffic step, for its stable"
        );
        assert!(woken_rollout(&twin(1)).is_none(), "twin still starting");

        let stable = |phase: &str, paused: bool, available: i32| {
            deployment(serde_json::json!({
                "metadata": {"name": "podinfo", "namespace": "shop", "generation": 3,
                    "annotations": {ann::PHASE: phase}},
                "spec": {"replicas": 2, "paused": paused, "selector": {}, "template": {}},
                "status": {"observedGeneration": 3, "readyReplicas": 2, "updatedReplicas": 2,
                    "availableReplicas": available}
            }))
        };
        assert_eq!(
            woken_rollout(&stable("Promoting", false, 2)),
            Some(("shop".to_string(), "podinfo".to_string())),
            "promoted stable rolled out"
        );
        assert!(
            woken_rollout(&stable("Promoting", false, 1)).is_none(),
            "still rolling"
        );
        assert!(
            woken_rollout(&stable("Progressing", true, 2)).is_none(),
            "held stable"
        );
        assert!(
            woken_rollout(&stable("Succeeded", false, 2)).is_none(),
            "done already"
        );
        // A user's Deployment that happens to end in -canary is not a twin.
        let mut users = twin(2);
        users.metadata.labels = None;
        assert!(woken_rollout(&users).is_none());
    }
}
