//! Reliability of the analyzer: crashes at every tick and between persisting a transition and
//! reconciling the world to it, Kubernetes API conflicts and timeouts, Prometheus outages, the
//! user deleting objects under a running rollout, and two replicas of which one is leader.
//!
//! The real analyzer runs against the in-memory cluster (the one thin Kubernetes boundary) and
//! a *scripted* Prometheus that answers the three batched built-in queries per workload. Time
//! is a synthetic clock advanced by the interval at every tick: no sleeping, deterministic,
//! except the leader test, which drives `Analyzer::run` for a few real seconds.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canary_gate::analyzer::{Analyzer, TickReport};
use canary_gate::annotations as ann;
use canary_gate::cluster::memory::MemoryCluster;
use canary_gate::cluster::{Cluster, KubeError};
use canary_gate::gates::Sample;
use canary_gate::gateway_api::{HTTPRoute, HTTPRouteRule};
use canary_gate::istio::{HttpRoute, VirtualService};
use canary_gate::metrics::Metrics;
use canary_gate::prom::{PromError, QueryApi};
use canary_gate::rollout::machine::EventType;
use canary_gate::rollout::routes::{canary_share, gateway};
use canary_gate::rollout::state::{Phase, RolloutState};
use canary_gate::settings::Defaults;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use support::scenario::{admitted_deployment, podinfo_service, user_virtual_service, NAME, NS};

const TWIN: &str = "podinfo-canary";
const CREATED_VS: &str = "podinfo-canary-gate";
const INTERVAL: SignedDuration = SignedDuration::from_secs(30);
/// Enough ticks for any rollout here to end (the longest: 10 blind checks after 2 steps).
const MAX_TICKS: usize = 40;

/// Which routes carry the rollout's traffic: the scenarios run for each.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Routes {
    /// None of the user's: canary-gate creates a VirtualService (router `auto`).
    Created,
    /// The user's own VirtualService, adopted.
    Vs,
    /// The user's own Gateway API HTTPRoute, adopted (router `auto` finds it).
    HttpRoute,
    /// None of the user's, router `gateway-api`: canary-gate creates a GAMMA HTTPRoute.
    CreatedHttpRoute,
}

/// `true`: the user's VirtualService is adopted; `false`: one is created.
impl From<bool> for Routes {
    fn from(adopt: bool) -> Routes {
        if adopt {
            Routes::Vs
        } else {
            Routes::Created
        }
    }
}

impl std::fmt::Display for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// A user's own HTTPRoute for the Service: attached to a Gateway and to the Service (GAMMA),
/// a rule with matches, a filter and a timeout to the Service, a weighted rule shared with
/// another backend, and a rule that does not touch the Service.
fn user_http_route() -> HTTPRoute {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "public", "namespace": "gateways"}, {"group": "", "kind": "Service", "name": NAME, "port": 9898}],
            "hostnames": ["podinfo.example.com"],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                 "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-api", "value": "1"}]}}],
                 "timeouts": {"request": "5s"},
                 "backendRefs": [{"name": NAME, "port": 9898}]},
                {"backendRefs": [{"name": NAME, "port": 9898, "weight": 80}, {"name": "legacy", "port": 80, "weight": 20}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/cart"}}], "backendRefs": [{"name": "cart", "port": 80}]}
            ]
        }
    }))
    .expect("static httproute")
}

// ---------------------------------------------------------------------------------------------
// A scripted Prometheus

/// How the scripted Prometheus answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Prom {
    /// Canary and stable: no errors, p99 120 ms.
    Healthy,
    /// The canary answers 20 % 5xx: decisive evidence, rolled back at once.
    Broken,
    /// The canary's p99 is 900 ms (> 500): one failed check per interval up to the threshold.
    Slow,
    /// Every query times out.
    Timeout,
    /// Every query fails at the HTTP level.
    Down,
    /// Queries succeed with no series (no traffic recorded).
    Empty,
}

struct ScriptedProm {
    mode: Mutex<Prom>,
    /// Queries selecting this namespace time out, whatever the mode.
    stuck_namespace: Mutex<Option<&'static str>>,
    queries: AtomicUsize,
    /// The p99 queries among them (the heaviest: every bucket of the histogram).
    p99_queries: AtomicUsize,
}

impl ScriptedProm {
    fn new(mode: Prom) -> Arc<Self> {
        Arc::new(ScriptedProm {
            mode: Mutex::new(mode),
            stuck_namespace: Mutex::new(None),
            queries: AtomicUsize::new(0),
            p99_queries: AtomicUsize::new(0),
        })
    }

    fn set(&self, mode: Prom) {
        *self.mode.lock().expect("mode") = mode;
    }
}

/// The workload names a batched query selects (`destination_workload=~"a|b"`).
fn selected(promql: &str, label: &str) -> Vec<String> {
    let needle = format!("{label}=~\"");
    let Some(start) = promql.find(&needle).map(|i| i + needle.len()) else {
        return vec![];
    };
    let rest = &promql[start..];
    let end = rest.find('"').unwrap_or(rest.len());
    rest[..end]
        .split('|')
        .map(|s| s.replace('\\', ""))
        .collect()
}

impl QueryApi for ScriptedProm {
    async fn query(&self, promql: &str, _at: Timestamp) -> Result<Vec<Sample>, PromError> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        if let Some(ns) = *self.stuck_namespace.lock().expect("namespace") {
            if promql.contains(&format!("destination_workload_namespace=~\"{ns}\"")) {
                return Err(PromError::Timeout(Duration::from_secs(5)));
            }
        }
        let mode = *self.mode.lock().expect("mode");
        match mode {
            Prom::Timeout => return Err(PromError::Timeout(Duration::from_secs(5))),
            Prom::Down => return Err(PromError::Http("connection refused".into())),
            Prom::Empty => return Ok(vec![]),
            _ => {}
        }
        enum Q {
            Requests,
            Errors,
            P99,
            Buckets,
        }
        let q = if promql.starts_with("histogram_quantile") {
            self.p99_queries.fetch_add(1, Ordering::Relaxed);
            Q::P99
        } else if promql.contains("istio_request_duration_milliseconds_bucket") {
            Q::Buckets
        } else if promql.contains("response_code=~\"5..\"") {
            Q::Errors
        } else if promql.contains("increase(istio_requests_total") {
            Q::Requests
        } else {
            return Err(PromError::Api {
                kind: "bad_data".into(),
                message: format!("unscripted query {promql}"),
            });
        };
        let namespaces = selected(promql, "destination_workload_namespace");
        let mut out = Vec::new();
        let les = selected(promql, "le");
        for workload in selected(promql, "destination_workload") {
            for ns in &namespaces {
                let canary = workload.ends_with("-canary");
                let total = if canary { 600.0 } else { 5400.0 };
                let labels = BTreeMap::from([
                    ("destination_workload_namespace".into(), ns.clone()),
                    ("destination_workload".into(), workload.clone()),
                ]);
                let value = match (&q, canary, mode) {
                    (Q::Requests, _, _) => total,
                    (Q::Errors, true, Prom::Broken) => 120.0,
                    (Q::Errors, _, _) => 0.0,
                    (Q::P99, true, Prom::Slow) => 900.0,
                    (Q::P99, _, _) => 120.0,
                    (Q::Buckets, _, _) => {
                        // Cumulative counts at the p99 limit and at +Inf. In `Slow`, canary and
                        // stable both have 0.5 % of requests above the limit: the share test
                        // stays undecided and the p99 gate fails one check per interval.
                        for le in &les {
                            let le = le.split('(').next().unwrap_or_default().to_string();
                            let value = if le == "+Inf" || mode != Prom::Slow {
                                total
                            } else {
                                total * 0.995
                            };
                            let mut labels = labels.clone();
                            labels.insert("le".into(), le);
                            out.push(Sample { labels, value });
                        }
                        continue;
                    }
                };
                out.push(Sample { labels, value });
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// The harness: one cluster, one (replaceable) analyzer, a synthetic clock, and a trace

#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    phase: Phase,
    /// Distinct consecutive (phase, weight) states persisted on the Deployment.
    states: Vec<(Phase, u32)>,
    /// Distinct consecutive canary shares in the routes (the traffic the canary really got).
    route_weights: Vec<i32>,
    /// Event reasons, in order.
    events: Vec<String>,
    objects: Vec<String>,
    passed_checks: u32,
    failed_checks: u32,
    stable_paused: Option<bool>,
}

struct Harness {
    cluster: Arc<MemoryCluster>,
    prom: Arc<ScriptedProm>,
    analyzer: Analyzer<MemoryCluster, ScriptedProm>,
    t: Timestamp,
    ticks: usize,
    restarts: usize,
    states: Vec<(Phase, u32)>,
    route_weights: Vec<i32>,
    errors: Vec<String>,
}

fn analyzer(
    cluster: &Arc<MemoryCluster>,
    prom: &Arc<ScriptedProm>,
) -> Analyzer<MemoryCluster, ScriptedProm> {
    Analyzer::new(
        cluster.clone(),
        prom.clone(),
        Defaults::default(),
        Metrics::new(),
    )
}

fn push_distinct<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if v.last() != Some(&x) {
        v.push(x);
    }
}

fn state_of(d: &Deployment) -> RolloutState {
    RolloutState::from_annotations(&d.metadata.annotations.clone().unwrap_or_default())
        .expect("rollout state on the stable Deployment")
}

impl Harness {
    /// A stable Deployment held by the webhook (phase Pending), its Service and the user's
    /// own routes for it, if `routes` says so.
    fn new(prom: Prom, routes: impl Into<Routes>, interval: &str) -> Harness {
        let routes = routes.into();
        let cluster = Arc::new(MemoryCluster::new());
        let mut annotations = vec![("canary-gate.io/interval", interval)];
        if routes == Routes::CreatedHttpRoute {
            annotations.push(("canary-gate.io/router", "gateway-api"));
        }
        let (d, _) = admitted_deployment(&annotations).expect("admitted deployment");
        cluster.put_deployment(d);
        cluster.put_service(podinfo_service());
        match routes {
            Routes::Vs => cluster.put_virtual_service(user_virtual_service()),
            Routes::HttpRoute => cluster.put_http_route(user_http_route()),
            Routes::Created | Routes::CreatedHttpRoute => {}
        }
        let prom = ScriptedProm::new(prom);
        let analyzer = analyzer(&cluster, &prom);
        let t = Timestamp::now();
        let mut h = Harness {
            cluster,
            prom,
            analyzer,
            t,
            ticks: 0,
            restarts: 0,
            states: vec![],
            route_weights: vec![],
            errors: vec![],
        };
        h.observe();
        h
    }

    /// Crash and restart: a new Analyzer knows nothing but what is in the cluster.
    fn restart(&mut self) {
        self.analyzer = analyzer(&self.cluster, &self.prom);
        self.restarts += 1;
    }

    fn stable(&self) -> Option<Deployment> {
        self.cluster.deployment(NS, NAME)
    }

    fn state(&self) -> RolloutState {
        state_of(&self.stable().expect("stable Deployment"))
    }

    fn route_weight(&self) -> i32 {
        let vs = self
            .cluster
            .all_virtual_services()
            .into_iter()
            .filter_map(|vs| canary_share(&vs, NAME));
        let http = self
            .cluster
            .all_http_routes()
            .into_iter()
            .filter_map(|r| gateway::canary_share(&r, NAME));
        vs.chain(http).max().unwrap_or(0)
    }

    fn observe(&mut self) {
        if let Some(d) = self.stable() {
            let s = state_of(&d);
            push_distinct(&mut self.states, (s.phase, s.weight));
        }
        let w = self.route_weight();
        push_distinct(&mut self.route_weights, w);
    }

    async fn tick(&mut self) -> TickReport {
        let report = self.analyzer.tick(self.t).await;
        self.t += INTERVAL;
        self.ticks += 1;
        self.errors.extend(report.errors.iter().cloned());
        self.observe();
        report
    }

    /// Ticks on until the rollout has reached `weight` (within `MAX_TICKS`).
    async fn tick_to_weight(&mut self, weight: u32) {
        while self.state().weight < weight {
            assert!(self.ticks < MAX_TICKS, "never reached {weight} %");
            self.tick().await;
        }
    }

    fn done(&self) -> bool {
        self.stable()
            .is_none_or(|d| state_of(&d).phase.is_terminal())
    }

    /// Ticks until the rollout ends, then once more (a terminal tick must change nothing).
    async fn run_to_end(&mut self) {
        while !self.done() {
            assert!(
                self.ticks < MAX_TICKS,
                "no end after {MAX_TICKS} ticks: {:?}, errors {:?}",
                self.states,
                self.errors
            );
            self.tick().await;
        }
        self.tick().await;
    }

    fn outcome(&self) -> Outcome {
        let s = self.state();
        Outcome {
            phase: s.phase,
            states: self.states.clone(),
            route_weights: self.route_weights.clone(),
            events: self
                .cluster
                .events()
                .into_iter()
                .map(|e| e.reason)
                .collect(),
            objects: self.cluster.object_names(),
            passed_checks: s.passed_checks,
            failed_checks: s.failed_checks,
            stable_paused: self.stable().and_then(|d| d.spec.and_then(|s| s.paused)),
        }
    }

    /// Faults injected and consumed so far (the memory cluster logs `call target -> error`).
    fn faults_hit(&self) -> usize {
        self.cluster
            .log()
            .iter()
            .filter(|l| l.contains(" -> "))
            .count()
    }
}

/// Nothing canary-gate created is left, and the user's routes are exactly theirs again.
fn assert_no_orphans(h: &Harness, routes: impl Into<Routes>, ctx: &str) {
    let objects = h.cluster.object_names();
    let mut want = vec![
        format!("deployment {NS}/{NAME}"),
        format!("service {NS}/{NAME}"),
    ];
    want.extend(user_routes(routes.into()));
    assert_eq!(objects, want, "{ctx}: leftover or missing objects");
    assert_user_routes_restored(h, ctx);
}

/// The user's own route objects a scenario starts with.
fn user_routes(routes: Routes) -> Vec<String> {
    match routes {
        Routes::Vs => vec![format!("virtualservice {NS}/{NAME}")],
        Routes::HttpRoute => vec![format!("httproute {NS}/{NAME}")],
        Routes::Created | Routes::CreatedHttpRoute => vec![],
    }
}

/// The user's routes (of either kind, where present) are exactly theirs again, byte for byte.
fn assert_user_routes_restored(h: &Harness, ctx: &str) {
    if let Some(vs) = h.cluster.virtual_service(NS, NAME) {
        assert_eq!(vs.spec, user_virtual_service().spec, "{ctx}: user routes");
        assert!(
            vs.metadata.annotations.unwrap_or_default().is_empty(),
            "{ctx}: adoption marks left on the user's VirtualService"
        );
    }
    if let Some(route) = h.cluster.http_route(NS, NAME) {
        assert_eq!(
            serde_json::to_string(&route.spec).expect("json"),
            serde_json::to_string(&user_http_route().spec).expect("json"),
            "{ctx}: user HTTPRoute rules"
        );
        assert!(
            route.metadata.annotations.unwrap_or_default().is_empty(),
            "{ctx}: adoption marks left on the user's HTTPRoute"
        );
    }
}

/// While a rollout is active, the world matches the persisted state.
fn assert_world_matches_state(h: &Harness, ctx: &str) {
    let s = h.state();
    match s.phase {
        Phase::Progressing | Phase::Promoting | Phase::Paused => {
            assert!(
                h.cluster.deployment(NS, TWIN).is_some(),
                "{ctx}: twin missing in {}",
                s.phase
            );
            assert!(h.cluster.service(NS, TWIN).is_some(), "{ctx}: canary svc");
            assert_eq!(
                h.route_weight(),
                s.weight as i32,
                "{ctx}: routes not at the persisted weight"
            );
        }
        _ => {}
    }
}

async fn reference(prom: Prom, adopt: impl Into<Routes>) -> Outcome {
    let adopt = adopt.into();
    let mut h = Harness::new(prom, adopt, "30s");
    h.run_to_end().await;
    assert!(
        h.errors.is_empty(),
        "reference run had errors: {:?}",
        h.errors
    );
    assert_no_orphans(&h, adopt, "reference");
    h.outcome()
}

/// Totals over the whole file, printed by each test for the README table.
static FAULTS: AtomicUsize = AtomicUsize::new(0);
static ROLLOUTS: AtomicUsize = AtomicUsize::new(0);

fn tally(h: &Harness) {
    FAULTS.fetch_add(h.faults_hit(), Ordering::Relaxed);
    ROLLOUTS.fetch_add(1, Ordering::Relaxed);
}

fn report(test: &str, rollouts: usize, faults: usize, restarts: usize) {
    eprintln!(
        "{test}: {rollouts} rollouts, {faults} faults injected and hit, {restarts} restarts, 0 lost, 0 orphans (file totals so far: {} rollouts, {} faults)",
        ROLLOUTS.load(Ordering::Relaxed),
        FAULTS.load(Ordering::Relaxed)
    );
}

// ---------------------------------------------------------------------------------------------
// Sanity of the scripted world

#[tokio::test]
async fn reference_rollouts_take_every_step() {
    let healthy = reference(Prom::Healthy, true).await;
    assert_eq!(healthy.phase, Phase::Succeeded);
    assert_eq!(
        healthy.states,
        vec![
            (Phase::Pending, 0),
            (Phase::Progressing, 0),
            (Phase::Progressing, 10),
            (Phase::Progressing, 20),
            (Phase::Progressing, 30),
            (Phase::Progressing, 40),
            (Phase::Progressing, 50),
            (Phase::Promoting, 50),
            (Phase::Succeeded, 0),
        ]
    );
    assert_eq!(healthy.route_weights, vec![0, 10, 20, 30, 40, 50, 0]);
    assert_eq!(healthy.stable_paused, Some(false));

    let broken = reference(Prom::Broken, false).await;
    assert_eq!(broken.phase, Phase::Failed);
    assert_eq!(broken.route_weights, vec![0, 10, 0]);
    assert_eq!(
        broken.stable_paused,
        Some(true),
        "stable stays on the old RS"
    );

    let slow = reference(Prom::Slow, true).await;
    assert_eq!(slow.phase, Phase::Failed);
    assert_eq!(slow.failed_checks, 5, "threshold 5: {:?}", slow.events);
    assert_eq!(slow.route_weights, vec![0, 10, 0]);
    for o in [&healthy, &broken, &slow] {
        assert_eq!(
            o.events.iter().filter(|e| *e == "CanaryStarted").count(),
            1,
            "{:?}",
            o.events
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Crash and resume

/// Every scenario the crash tests replay: prometheus behaviour × adopted or created routes.
const SCENARIOS: &[(Prom, Routes)] = &[
    (Prom::Healthy, Routes::Vs),
    (Prom::Healthy, Routes::Created),
    (Prom::Broken, Routes::Created),
    (Prom::Slow, Routes::Vs),
    (Prom::Healthy, Routes::HttpRoute),
    (Prom::Broken, Routes::HttpRoute),
    (Prom::Healthy, Routes::CreatedHttpRoute),
];

fn assert_same_end(h: &Harness, r: &Outcome, adopt: Routes, ctx: &str) {
    let o = h.outcome();
    assert_eq!(o.phase, r.phase, "{ctx}: final phase");
    assert_eq!(o.states, r.states, "{ctx}: persisted (phase, weight) steps");
    assert_eq!(o.route_weights, r.route_weights, "{ctx}: traffic steps");
    assert_eq!(o.events, r.events, "{ctx}: events (a step repeated?)");
    assert_eq!(o.passed_checks, r.passed_checks, "{ctx}: passed checks");
    assert_eq!(o.failed_checks, r.failed_checks, "{ctx}: failed checks");
    assert_eq!(o.stable_paused, r.stable_paused, "{ctx}: stable paused");
    assert_eq!(o.objects, r.objects, "{ctx}: objects");
    assert_no_orphans(h, adopt, ctx);
}

#[tokio::test]
async fn restart_after_any_tick_ends_like_an_uninterrupted_rollout() {
    let (mut runs, mut restarts) = (0, 0);
    for &(prom, adopt) in SCENARIOS {
        let r = reference(prom, adopt).await;
        let ticks = r.states.len() + 2;
        for k in 0..ticks {
            let ctx = format!("{prom:?} adopt={adopt} restart after tick {k}");
            let mut h = Harness::new(prom, adopt, "30s");
            while !h.done() {
                assert!(h.ticks < MAX_TICKS, "{ctx}: no end");
                h.tick().await;
                if h.ticks == k + 1 {
                    h.restart();
                }
            }
            h.tick().await;
            assert!(h.errors.is_empty(), "{ctx}: {:?}", h.errors);
            assert_same_end(&h, &r, adopt, &ctx);
            runs += 1;
            restarts += h.restarts;
            tally(&h);
        }
    }
    report("restart after any tick", runs, 0, restarts);
}

#[tokio::test]
async fn restart_after_every_tick_ends_like_an_uninterrupted_rollout() {
    // The harshest schedule: a new Analyzer for every single tick.
    for &(prom, adopt) in SCENARIOS {
        let r = reference(prom, adopt).await;
        let mut h = Harness::new(prom, adopt, "30s");
        while !h.done() {
            assert!(h.ticks < MAX_TICKS);
            h.tick().await;
            h.restart();
        }
        h.tick().await;
        assert_same_end(&h, &r, adopt, &format!("{prom:?} restart every tick"));
        tally(&h);
    }
}

/// Reconcile writes: each fails once, as if the process died after persisting the state and
/// before (or while) making the world match it.
fn reconcile_faults() -> Vec<(&'static str, KubeError)> {
    vec![
        // The stable's template, read when its twin is built.
        (
            "get deployment",
            KubeError::Timeout(Duration::from_secs(10)),
        ),
        (
            "apply deployment",
            KubeError::Timeout(Duration::from_secs(10)),
        ),
        ("apply service", KubeError::Timeout(Duration::from_secs(10))),
        (
            "apply virtualservice",
            KubeError::Timeout(Duration::from_secs(10)),
        ),
        (
            "patch virtualservice",
            KubeError::Api("etcdserver: request timed out".into()),
        ),
        (
            "delete deployment",
            KubeError::Timeout(Duration::from_secs(10)),
        ),
        ("delete service", KubeError::Api("internal error".into())),
        (
            "delete virtualservice",
            KubeError::Timeout(Duration::from_secs(10)),
        ),
        (
            "apply httproute",
            KubeError::Timeout(Duration::from_secs(10)),
        ),
        (
            "patch httproute",
            KubeError::Api("etcdserver: request timed out".into()),
        ),
        (
            "delete httproute",
            KubeError::Timeout(Duration::from_secs(10)),
        ),
    ]
}

/// A crash between persisting a transition and reconciling the world, at every tick and in
/// every reconcile write, with and without a restart right after: the next tick repairs it.
/// The *persisted* states, the events, the final objects and the checks must equal the
/// uninterrupted run. (The traffic steps are checked in
/// `reconcile_failure_does_not_skip_a_traffic_step`.)
#[tokio::test]
async fn crash_between_persist_and_reconcile_is_repaired_next_tick() {
    let (mut runs, mut faults, mut restarts) = (0, 0, 0);
    for &(prom, adopt) in SCENARIOS {
        let r = reference(prom, adopt).await;
        let ticks = r.states.len() + 1;
        for (call, error) in reconcile_faults() {
            for k in 0..ticks {
                for restart in [false, true] {
                    let ctx = format!(
                        "{prom:?} adopt={adopt}: {call} fails at tick {k}, restart={restart}"
                    );
                    let mut h = Harness::new(prom, adopt, "30s");
                    let mut hit_at = None;
                    while !h.done() {
                        assert!(h.ticks < MAX_TICKS, "{ctx}: no end");
                        if h.ticks == k {
                            h.cluster.inject_fault(call, error.clone());
                        }
                        let before = h.faults_hit();
                        let report = h.tick().await;
                        if h.faults_hit() > before {
                            hit_at = Some(h.ticks);
                            assert!(
                                !report.errors.is_empty(),
                                "{ctx}: a failed write not reported"
                            );
                            if restart {
                                h.restart();
                            }
                        } else if hit_at.is_some_and(|t| h.ticks == t + 1) {
                            // The tick after the fault repaired the world.
                            assert!(report.errors.is_empty(), "{ctx}: {:?}", report.errors);
                            if !h.done() {
                                assert_world_matches_state(&h, &ctx);
                            }
                        }
                    }
                    h.tick().await;
                    // A fault still pending means this call never happened at or after tick k.
                    let o = h.outcome();
                    assert_eq!(o.phase, r.phase, "{ctx}: final phase");
                    assert_eq!(o.states, r.states, "{ctx}: persisted steps");
                    assert_eq!(o.events, r.events, "{ctx}: events");
                    assert_eq!(o.failed_checks, r.failed_checks, "{ctx}");
                    assert_eq!(o.stable_paused, r.stable_paused, "{ctx}");
                    assert_no_orphans(&h, adopt, &ctx);
                    runs += 1;
                    faults += h.faults_hit();
                    restarts += h.restarts;
                    tally(&h);
                }
            }
        }
    }
    assert!(faults > 50, "too few faults actually hit: {faults}");
    report(
        "crash between persist and reconcile",
        runs,
        faults,
        restarts,
    );
}

/// A weight is persisted but the routes write fails (or the process dies before it). The next
/// tick is already due for a check: it judges a window in which the canary still had the old
/// share of traffic, and steps on from a weight that never served traffic.
#[tokio::test]
async fn reconcile_failure_does_not_skip_a_traffic_step() {
    for restart in [false, true] {
        let r = reference(Prom::Healthy, true).await;
        let mut h = Harness::new(Prom::Healthy, true, "30s");
        while !h.done() {
            assert!(h.ticks < MAX_TICKS);
            let before = h.state();
            if before.phase == Phase::Progressing && before.weight == 10 {
                // The step to 20 % is persisted, its routes write fails.
                h.cluster.inject_fault(
                    "patch virtualservice",
                    KubeError::Timeout(Duration::from_secs(10)),
                );
            }
            h.tick().await;
            if restart && h.faults_hit() > 0 && h.restarts == 0 {
                h.restart();
            }
        }
        h.tick().await;
        assert_eq!(
            h.route_weights, r.route_weights,
            "restart={restart}: traffic steps (persisted: {:?})",
            h.states
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes API conflicts and timeouts on persisting the state

#[tokio::test]
async fn conflicts_and_timeouts_on_persist_hold_state_and_are_retried() {
    let (mut runs, mut faults) = (0, 0);
    for &(prom, adopt) in SCENARIOS {
        let r = reference(prom, adopt).await;
        for error in [
            KubeError::Conflict,
            KubeError::Timeout(Duration::from_secs(10)),
        ] {
            for k in 0..r.states.len() {
                for times in [1usize, 3] {
                    let ctx = format!("{prom:?} adopt={adopt}: {error:?} x{times} from tick {k}");
                    let mut h = Harness::new(prom, adopt, "30s");
                    while !h.done() {
                        assert!(h.ticks < MAX_TICKS, "{ctx}: no end");
                        if h.ticks == k {
                            for _ in 0..times {
                                h.cluster.inject_fault("patch deployment", error.clone());
                            }
                        }
                        let before = h.stable().expect("stable");
                        let hits = h.faults_hit();
                        let report = h.tick().await;
                        if h.faults_hit() > hits {
                            assert!(
                                report
                                    .errors
                                    .iter()
                                    .any(|e| e.contains("conflict") || e.contains("timed out")),
                                "{ctx}: error not reported: {report:?}"
                            );
                            let after = h.stable().expect("stable");
                            assert_eq!(
                                after.metadata.annotations, before.metadata.annotations,
                                "{ctx}: state changed although the write failed"
                            );
                            assert!(report.transitions.is_empty(), "{ctx}: {report:?}");
                        }
                    }
                    h.tick().await;
                    let o = h.outcome();
                    assert_eq!(o.phase, r.phase, "{ctx}: final phase");
                    assert_eq!(o.states, r.states, "{ctx}: no step skipped or repeated");
                    assert_eq!(o.route_weights, r.route_weights, "{ctx}: traffic steps");
                    assert_eq!(o.events, r.events, "{ctx}: events");
                    assert_eq!(o.failed_checks, r.failed_checks, "{ctx}");
                    assert_no_orphans(&h, adopt, &ctx);
                    runs += 1;
                    faults += h.faults_hit();
                    tally(&h);
                }
            }
        }
    }
    report("409 / timeout on persist", runs, faults, 0);
}

// ---------------------------------------------------------------------------------------------
// Prometheus outages

#[tokio::test]
async fn prometheus_down_holds_weight_then_rolls_back_at_the_limit() {
    for outage in [Prom::Timeout, Prom::Down, Prom::Empty] {
        let ctx = format!("{outage:?}");
        let mut h = Harness::new(Prom::Healthy, true, "30s");
        // Healthy up to 20 %.
        h.tick_to_weight(20).await;
        h.prom.set(outage);
        let events_before = h.cluster.events().len();
        let mut blind = 0;
        while !h.done() {
            assert!(h.ticks < MAX_TICKS, "{ctx}: no end");
            h.tick().await;
            blind += 1;
            let s = h.state();
            assert_ne!(s.phase, Phase::Promoting, "{ctx}: promoted blind");
            assert_ne!(s.phase, Phase::Succeeded, "{ctx}: promoted blind");
            if !s.phase.is_terminal() {
                assert_eq!(s.weight, 20, "{ctx}: weight not held");
                assert_eq!(h.route_weight(), 20, "{ctx}: routes not held");
                assert_eq!(s.inconclusive_checks, blind, "{ctx}");
            }
        }
        h.tick().await;
        assert_eq!(blind, 10, "{ctx}: rolled back after {blind} blind checks");
        let s = h.state();
        assert_eq!(s.phase, Phase::Failed, "{ctx}");
        assert!(
            s.message.contains("no usable data for 10 checks"),
            "{ctx}: {}",
            s.message
        );
        let events: Vec<_> = h.cluster.events().split_off(events_before);
        let inconclusive = events
            .iter()
            .filter(|e| e.reason == "CheckInconclusive" && e.kind == EventType::Warning)
            .count();
        // One CheckInconclusive per blind check; the 10th is the rollback itself.
        assert_eq!(inconclusive, 9, "{ctx}: {events:?}");
        assert_eq!(
            events.last().map(|e| e.reason.as_str()),
            Some("RolledBack"),
            "{ctx}"
        );
        assert_eq!(h.route_weights, vec![0, 10, 20, 0], "{ctx}");
        assert_no_orphans(&h, true, &ctx);
        tally(&h);
    }
}

#[tokio::test]
async fn a_look_that_times_out_does_not_take_the_check_beside_it_along() {
    // Two rollouts; in the same tick one is due for its check, the other for a look. The
    // look's queries time out (as a look over thousands of canaries did on a busy
    // Prometheus): the check, in queries of its own, passes all the same.
    let mut h = Harness::new(Prom::Healthy, true, "30s");
    h.tick_to_weight(10).await;
    let checked_at = h.state().last_check.expect("last check");
    let (mut other, _) =
        admitted_deployment(&[("canary-gate.io/interval", "30s")]).expect("admitted deployment");
    other.metadata.namespace = Some("other".into());
    h.cluster.put_deployment(other);
    let mut service = podinfo_service();
    service.metadata.namespace = Some("other".into());
    h.cluster.put_service(service);
    let other = |h: &Harness| state_of(&h.cluster.deployment("other", NAME).expect("other"));
    let mut t = checked_at;
    while other(&h).weight < 10 {
        t += SignedDuration::from_secs(1);
        assert!(
            t < checked_at + SignedDuration::from_secs(25),
            "{:?}",
            other(&h)
        );
        let r = h.analyzer.tick(t).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
    }
    *h.prom.stuck_namespace.lock().expect("namespace") = Some("other");
    let r = h.analyzer.tick(checked_at + INTERVAL).await;
    assert_eq!((r.checks, r.peeks), (1, 1), "{r:?}");
    let s = h.state();
    assert_eq!(
        (s.weight, s.inconclusive_checks),
        (20, 0),
        "the check passed: {s:?}"
    );
    let o = other(&h);
    assert_eq!((o.phase, o.weight), (Phase::Progressing, 10), "{o:?}");
}

#[tokio::test]
async fn looks_between_checks_send_no_p99_query() {
    // A look acts on decisive evidence only (errors, the share of slow requests), which the
    // p99 never is: it is left to the checks, being the heaviest query by far.
    let mut h = Harness::new(Prom::Healthy, true, "30s");
    h.tick_to_weight(10).await;
    let last_check = h
        .state()
        .last_check
        .expect("a Progressing rollout has a last check");
    let p99 = || h.prom.p99_queries.load(Ordering::Relaxed);
    let (queries, p99_before) = (h.prom.queries.load(Ordering::Relaxed), p99());
    for after in [2, 4, 6] {
        let r = h
            .analyzer
            .tick(last_check + SignedDuration::from_secs(after))
            .await;
        assert_eq!((r.peeks, r.checks, r.queries), (1, 0, 3), "{after}s: {r:?}");
    }
    assert_eq!(p99(), p99_before, "a look sent the p99 query");
    assert_eq!(h.prom.queries.load(Ordering::Relaxed), queries + 9);
    let r = h.analyzer.tick(last_check + INTERVAL).await;
    assert_eq!((r.peeks, r.checks, r.queries), (0, 1, 4), "{r:?}");
    assert_eq!(p99(), p99_before + 1, "the check sent its p99 query");
    assert_eq!(h.state().weight, 20, "{:?}", r.errors);
}

#[tokio::test]
async fn prometheus_back_before_the_limit_resumes_the_rollout() {
    let r = reference(Prom::Healthy, false).await;
    let mut h = Harness::new(Prom::Healthy, false, "30s");
    h.tick_to_weight(30).await;
    h.prom.set(Prom::Down);
    for _ in 0..9 {
        h.tick().await;
    }
    assert_eq!(h.state().inconclusive_checks, 9);
    assert_eq!(h.state().weight, 30);
    h.prom.set(Prom::Healthy);
    h.run_to_end().await;
    let o = h.outcome();
    assert_eq!(o.phase, Phase::Succeeded);
    assert_eq!(o.states, r.states, "no step skipped or repeated");
    assert_eq!(h.state().inconclusive_checks, 0, "reset by a green check");
    assert_no_orphans(&h, false, "prometheus back");
    tally(&h);
}

#[tokio::test]
async fn restart_while_prometheus_is_down_keeps_the_blind_count() {
    // The count of blind checks lives in the cluster: a restart neither resets it (rolling
    // back later than the limit) nor double counts.
    let mut h = Harness::new(Prom::Healthy, true, "30s");
    h.tick_to_weight(20).await;
    h.prom.set(Prom::Timeout);
    let mut blind = 0;
    while !h.done() {
        assert!(h.ticks < MAX_TICKS);
        h.tick().await;
        blind += 1;
        h.restart();
    }
    assert_eq!(blind, 10);
    assert_eq!(h.state().phase, Phase::Failed);
    h.tick().await;
    assert_no_orphans(&h, true, "restart while blind");
    tally(&h);
}

// ---------------------------------------------------------------------------------------------
// The user deletes objects under a running rollout

async fn progressing_at(weight: u32, adopt: impl Into<Routes>) -> Harness {
    let mut h = Harness::new(Prom::Healthy, adopt, "30s");
    h.tick_to_weight(weight).await;
    assert_eq!(h.state().phase, Phase::Progressing);
    h
}

#[tokio::test]
async fn failing_repairs_back_off_and_recover() {
    let h = progressing_at(20, true).await;
    h.cluster
        .delete_deployment(NS, TWIN)
        .await
        .expect("delete twin");
    // The API server refuses the next five attempts to re-create the twin.
    for _ in 0..5 {
        h.cluster.inject_fault(
            "apply deployment",
            KubeError::Timeout(Duration::from_secs(10)),
        );
    }
    let attempts = |h: &Harness| {
        h.cluster
            .log()
            .iter()
            .filter(|l| l.starts_with(&format!("apply deployment {NS}/{TWIN}")))
            .count()
    };
    let before = attempts(&h);
    // Ticks a second apart, as in production: failures at 0, 1, 3, 7 and 15 s, then the
    // attempt at 31 s succeeds. Retrying every tick would have made 31 attempts.
    let start = h.t;
    let mut tried_at = Vec::new();
    for s in 0..40 {
        let n = attempts(&h);
        h.analyzer.tick(start + SignedDuration::from_secs(s)).await;
        if attempts(&h) > n {
            tried_at.push(s);
        }
    }
    assert_eq!(
        tried_at,
        [0, 1, 3, 7, 15, 31],
        "attempts (s after the first)"
    );
    assert_eq!(attempts(&h) - before, 6);
    assert!(h.cluster.deployment(NS, TWIN).is_some(), "twin re-created");
}

#[tokio::test]
async fn twin_deleted_by_hand_is_recreated_next_tick() {
    for (adopt, restart) in [
        (Routes::Vs, false),
        (Routes::Created, false),
        (Routes::Vs, true),
        (Routes::HttpRoute, true),
        (Routes::CreatedHttpRoute, false),
    ] {
        let ctx = format!("adopt={adopt} restart={restart}");
        let r = reference(Prom::Healthy, adopt).await;
        let mut h = progressing_at(20, adopt).await;
        h.cluster
            .delete_deployment(NS, TWIN)
            .await
            .expect("delete twin");
        if restart {
            h.restart();
        }
        let state = h.state();
        h.tick().await;
        assert!(
            h.cluster.deployment(NS, TWIN).is_some(),
            "{ctx}: twin not re-created"
        );
        assert_eq!(
            h.state().weight,
            state.weight,
            "{ctx}: no step without a twin"
        );
        assert_world_matches_state(&h, &ctx);
        h.run_to_end().await;
        let o = h.outcome();
        assert_eq!(o.phase, Phase::Succeeded, "{ctx}");
        assert_eq!(o.states, r.states, "{ctx}");
        assert_no_orphans(&h, adopt, &ctx);
        tally(&h);
    }
}

#[tokio::test]
async fn canary_service_and_routes_deleted_by_hand_are_restored() {
    // The user removes the canary Service and the created VirtualService: reconciled back at
    // the next tick, the memo notwithstanding.
    let mut h = progressing_at(20, false).await;
    h.cluster
        .delete_service(NS, TWIN)
        .await
        .expect("delete canary svc");
    h.cluster
        .delete_virtual_service(NS, CREATED_VS)
        .await
        .expect("delete created vs");
    h.tick().await;
    h.tick().await;
    assert_world_matches_state(&h, "canary Service and routes deleted by hand");
}

#[tokio::test]
async fn tampered_http_routes_are_split_again_and_restored() {
    // Someone with more rights than the webhook allows (or with it off) rewrites the adopted
    // HTTPRoute's rules mid-rollout, or deletes the created one: the next tick splits it
    // again at the persisted weight, and the end restores the user's original rules.
    for routes in [Routes::HttpRoute, Routes::CreatedHttpRoute] {
        let ctx = format!("{routes}");
        let r = reference(Prom::Healthy, routes).await;
        let mut h = progressing_at(20, routes).await;
        match routes {
            Routes::HttpRoute => {
                let mut route = h.cluster.http_route(NS, NAME).expect("adopted route");
                route.spec.rules = user_http_route().spec.rules;
                h.cluster.put_http_route(route);
            }
            _ => h
                .cluster
                .delete_http_route(NS, CREATED_VS)
                .await
                .expect("delete created route"),
        }
        assert_eq!(h.route_weight(), 0, "{ctx}: tampered");
        h.tick().await;
        assert_world_matches_state(&h, &ctx);
        h.run_to_end().await;
        let o = h.outcome();
        assert_eq!((o.phase, o.states), (r.phase, r.states), "{ctx}");
        assert_no_orphans(&h, routes, &ctx);
    }
}

#[tokio::test]
async fn a_mangled_saved_original_still_takes_the_canary_out_of_the_http_route() {
    let mut h = progressing_at(20, Routes::HttpRoute).await;
    let mut route = h.cluster.http_route(NS, NAME).expect("adopted");
    route
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(ann::ORIGINAL_RULES.into(), "not json".into());
    h.cluster.put_http_route(route);
    // Abort: the rollback restores what it can.
    let d = h.stable().expect("stable");
    let mut d2 = d.clone();
    d2.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert("canary-gate.io/action".into(), "abort".into());
    h.cluster.put_deployment(d2);
    h.run_to_end().await;
    let route = h.cluster.http_route(NS, NAME).expect("user route");
    assert!(
        route
            .spec
            .rules
            .iter()
            .flat_map(|r| &r.backend_refs)
            .all(|b| b.name != TWIN),
        "canary backendRef left: {:?}",
        route.spec.rules
    );
    // Weights given back: 80 → 80, the sole ref keeps all the traffic.
    assert_eq!(route.spec.rules[1].backend_refs[0].weight, Some(80));
    assert_eq!(route.spec.rules[2], user_http_route().spec.rules[2]);
}

#[tokio::test]
async fn both_kinds_routing_the_service_are_both_split_and_restored() {
    // `router: auto` with a VirtualService *and* an HTTPRoute for the Service: both carry the
    // same canary share at every step, no third route is created, both are restored.
    let mut h = Harness::new(Prom::Healthy, Routes::HttpRoute, "30s");
    h.cluster.put_virtual_service(user_virtual_service());
    while !h.done() {
        assert!(h.ticks < MAX_TICKS);
        h.tick().await;
        let s = h.state();
        if matches!(s.phase, Phase::Progressing | Phase::Promoting) {
            let vs = h.cluster.virtual_service(NS, NAME).expect("vs");
            let route = h.cluster.http_route(NS, NAME).expect("route");
            assert_eq!(canary_share(&vs, NAME), Some(s.weight as i32), "vs");
            assert_eq!(
                gateway::canary_share(&route, NAME),
                Some(s.weight as i32),
                "route"
            );
        }
    }
    h.tick().await;
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    assert_eq!(h.state().phase, Phase::Succeeded);
    let mut want = vec![
        format!("deployment {NS}/{NAME}"),
        format!("service {NS}/{NAME}"),
        format!("virtualservice {NS}/{NAME}"),
        format!("httproute {NS}/{NAME}"),
    ];
    want.sort();
    let mut got = h.cluster.object_names();
    got.sort();
    assert_eq!(got, want);
    assert_user_routes_restored(&h, "both kinds");
}

#[tokio::test]
async fn an_unresolved_canary_backend_gets_no_traffic_and_rolls_back() {
    // The implementation reports ResolvedRefs=False on the route once the canary backendRef
    // is in it (e.g. a cross-namespace backend without a ReferenceGrant).
    let mut h = Harness::new(Prom::Healthy, Routes::HttpRoute, "30s");
    while h.state().phase == Phase::Pending {
        h.tick().await;
    }
    assert_eq!((h.state().phase, h.state().weight), (Phase::Progressing, 0));
    let mut route = h.cluster.http_route(NS, NAME).expect("adopted");
    route.status = Some(
        serde_json::from_value(serde_json::json!({"parents": [{
            "parentRef": {"name": "public", "namespace": "gateways"},
            "controllerName": "istio.io/gateway-controller",
            "conditions": [
                {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound", "message": "backend podinfo-canary not found", "lastTransitionTime": "2026-01-01T00:00:00Z"}
            ]
        }]}))
        .expect("status"),
    );
    h.cluster.put_http_route(route);
    h.tick().await;
    let s = h.state();
    assert_eq!(s.phase, Phase::Failed, "{s:?}");
    assert!(s.message.contains("ResolvedRefs=False"), "{}", s.message);
    assert!(s.message.contains("BackendNotFound"), "{}", s.message);
    assert!(
        h.cluster
            .events()
            .iter()
            .any(|e| e.reason == "RolledBack" && e.message.contains("ResolvedRefs=False")),
        "{:?}",
        h.cluster.events()
    );
    assert_eq!(h.route_weights, vec![0], "never any traffic to the canary");
    h.tick().await;
    assert_no_orphans(&h, Routes::HttpRoute, "unresolved");
}

/// Objects Kubernetes' garbage collector deletes with the Deployment (ownerReferences).
fn owned_by(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|r| r.uid == uid))
}

#[tokio::test]
async fn twin_and_canary_service_are_garbage_collected_with_the_stable() {
    let h = progressing_at(20, true).await;
    let uid = h.stable().and_then(|d| d.metadata.uid).expect("uid");
    let twin = h.cluster.deployment(NS, TWIN).expect("twin");
    assert!(owned_by(&twin.metadata, &uid), "twin has no ownerReference");
    let svc: Service = h.cluster.service(NS, TWIN).expect("canary svc");
    assert!(
        owned_by(&svc.metadata, &uid),
        "canary Service has no ownerReference"
    );
}

/// The user deletes the stable Deployment at 20 %; `gc` removes the owned twin and canary
/// Service first, as Kubernetes' garbage collector may well do before the next tick.
async fn delete_stable(adopt: Routes, gc: bool, restart: bool, fault: Option<&str>) -> Harness {
    let mut h = progressing_at(20, adopt).await;
    let uid = h.stable().and_then(|d| d.metadata.uid).expect("uid");
    h.cluster.remove_deployment(NS, NAME);
    if gc {
        if h.cluster
            .deployment(NS, TWIN)
            .is_some_and(|d| owned_by(&d.metadata, &uid))
        {
            h.cluster
                .delete_deployment(NS, TWIN)
                .await
                .expect("gc twin");
        }
        if h.cluster
            .service(NS, TWIN)
            .is_some_and(|s| owned_by(&s.metadata, &uid))
        {
            h.cluster.delete_service(NS, TWIN).await.expect("gc svc");
        }
    }
    if restart {
        h.restart();
    }
    if let Some(call) = fault {
        h.cluster
            .inject_fault(call, KubeError::Timeout(Duration::from_secs(10)));
    }
    for _ in 0..3 {
        h.tick().await;
    }
    h
}

fn assert_cleaned_after_delete(h: &Harness, adopt: Routes, ctx: &str) {
    let mut want = vec![format!("service {NS}/{NAME}")];
    want.extend(user_routes(adopt));
    assert_eq!(h.cluster.object_names(), want, "{ctx}: leftovers");
    assert_user_routes_restored(h, ctx);
}

/// Every kind of routes a rollout can run on.
const ALL_ROUTES: [Routes; 4] = [
    Routes::Vs,
    Routes::Created,
    Routes::HttpRoute,
    Routes::CreatedHttpRoute,
];

#[tokio::test]
async fn stable_deleted_mid_rollout_cleans_up_everything() {
    let mut faults = 0;
    let mut runs = 0;
    for adopt in ALL_ROUTES {
        for gc in [false, true] {
            for fault in [
                None,
                Some("patch virtualservice"),
                Some("delete virtualservice"),
                Some("patch httproute"),
                Some("delete httproute"),
                Some("delete deployment"),
                Some("delete service"),
            ] {
                runs += 1;
                let ctx = format!("adopt={adopt} gc={gc} fault={fault:?}");
                let h = delete_stable(adopt, gc, false, fault).await;
                assert_cleaned_after_delete(&h, adopt, &ctx);
                faults += h.faults_hit();
                tally(&h);
            }
        }
    }
    report("stable deleted mid-rollout", runs, faults, 0);
}

#[tokio::test]
async fn stable_deleted_then_restart_cleans_up_everything() {
    // The new process never saw the rollout: it finds it by the twin whose owner is gone.
    for adopt in ALL_ROUTES {
        let h = delete_stable(adopt, false, true, None).await;
        assert_cleaned_after_delete(&h, adopt, &format!("adopt={adopt}"));
        tally(&h);
    }
}

#[tokio::test]
async fn stable_deleted_gc_then_restart_restores_routes() {
    for adopt in ALL_ROUTES {
        let h = delete_stable(adopt, true, true, None).await;
        assert_cleaned_after_delete(&h, adopt, &format!("adopt={adopt}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Two replicas, one leader

/// Forwards to the shared cluster and counts this replica's writes.
struct Replica {
    inner: Arc<MemoryCluster>,
    writes: AtomicUsize,
}

impl Replica {
    fn new(inner: &Arc<MemoryCluster>) -> Arc<Self> {
        Arc::new(Replica {
            inner: inner.clone(),
            writes: AtomicUsize::new(0),
        })
    }

    fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::SeqCst);
    }

    fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }
}

impl Cluster for Replica {
    async fn deployments(&self) -> Result<Vec<Arc<Deployment>>, KubeError> {
        self.inner.deployments().await
    }
    async fn unlabeled_rollouts(&self) -> Result<Vec<(String, String)>, KubeError> {
        self.inner.unlabeled_rollouts().await
    }
    async fn label_rollout(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        self.wrote();
        self.inner.label_rollout(ns, name).await
    }
    async fn get_deployment(&self, ns: &str, name: &str) -> Result<Deployment, KubeError> {
        self.inner.get_deployment(ns, name).await
    }
    async fn apply_deployment(&self, d: &Deployment) -> Result<(), KubeError> {
        self.wrote();
        self.inner.apply_deployment(d).await
    }
    async fn delete_deployment(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        self.wrote();
        self.inner.delete_deployment(ns, name).await
    }
    async fn patch_deployment(
        &self,
        ns: &str,
        name: &str,
        resource_version: &str,
        annotations: BTreeMap<String, Option<String>>,
        paused: Option<bool>,
    ) -> Result<(), KubeError> {
        self.wrote();
        self.inner
            .patch_deployment(ns, name, resource_version, annotations, paused)
            .await
    }
    async fn services(&self, ns: &str) -> Result<Vec<Service>, KubeError> {
        self.inner.services(ns).await
    }
    async fn apply_service(&self, s: &Service) -> Result<(), KubeError> {
        self.wrote();
        self.inner.apply_service(s).await
    }
    async fn delete_service(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        self.wrote();
        self.inner.delete_service(ns, name).await
    }
    async fn virtual_services(&self, ns: &str) -> Result<Vec<VirtualService>, KubeError> {
        self.inner.virtual_services(ns).await
    }
    async fn virtual_services_everywhere(&self) -> Result<Vec<VirtualService>, KubeError> {
        self.inner.virtual_services_everywhere().await
    }
    async fn apply_virtual_service(&self, vs: &VirtualService) -> Result<(), KubeError> {
        self.wrote();
        self.inner.apply_virtual_service(vs).await
    }
    async fn patch_virtual_service(
        &self,
        ns: &str,
        name: &str,
        http: &[HttpRoute],
        annotations: BTreeMap<String, Option<String>>,
    ) -> Result<(), KubeError> {
        self.wrote();
        self.inner
            .patch_virtual_service(ns, name, http, annotations)
            .await
    }
    async fn delete_virtual_service(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        self.wrote();
        self.inner.delete_virtual_service(ns, name).await
    }
    async fn http_routes(&self, ns: &str) -> Result<Vec<HTTPRoute>, KubeError> {
        self.inner.http_routes(ns).await
    }
    async fn http_routes_everywhere(&self) -> Result<Vec<HTTPRoute>, KubeError> {
        self.inner.http_routes_everywhere().await
    }
    async fn apply_http_route(&self, route: &HTTPRoute) -> Result<(), KubeError> {
        self.wrote();
        self.inner.apply_http_route(route).await
    }
    async fn patch_http_route(
        &self,
        ns: &str,
        name: &str,
        rules: &[HTTPRouteRule],
        annotations: BTreeMap<String, Option<String>>,
    ) -> Result<(), KubeError> {
        self.wrote();
        self.inner
            .patch_http_route(ns, name, rules, annotations)
            .await
    }
    async fn delete_http_route(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        self.wrote();
        self.inner.delete_http_route(ns, name).await
    }
    async fn event(
        &self,
        d: &Deployment,
        kind: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), KubeError> {
        self.wrote();
        self.inner.event(d, kind, reason, message).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_acts_and_a_new_leader_finishes_the_rollout_once() {
    let cluster = Arc::new(MemoryCluster::new());
    let (d, _) = admitted_deployment(&[("canary-gate.io/interval", "1s")]).expect("deployment");
    cluster.put_deployment(d);
    cluster.put_service(podinfo_service());
    cluster.put_virtual_service(user_virtual_service());
    let prom = ScriptedProm::new(Prom::Healthy);
    let (a_cluster, b_cluster) = (Replica::new(&cluster), Replica::new(&cluster));
    let mk = |c: &Arc<Replica>| {
        Arc::new(Analyzer::new(
            c.clone(),
            prom.clone(),
            Defaults::default(),
            Metrics::new(),
        ))
    };
    let (a_tx, a_rx) = tokio::sync::watch::channel(true);
    let (b_tx, b_rx) = tokio::sync::watch::channel(false);
    let every = Duration::from_millis(100);
    let a = tokio::spawn(mk(&a_cluster).run(every, a_rx, None));
    let b = tokio::spawn(mk(&b_cluster).run(every, b_rx, None));
    let state = || state_of(&cluster.deployment(NS, NAME).expect("stable"));

    // A leads until the rollout is mid-way.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while state().weight < 20 {
        assert!(tokio::time::Instant::now() < deadline, "A made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a_cluster.writes() > 0);
    assert_eq!(b_cluster.writes(), 0, "a follower wrote");
    let flipped_at = state();

    // A loses the lease; B gets it one lease-grace later (here: 300 ms).
    a_tx.send(false).expect("a");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a_final = a_cluster.writes();
    assert_eq!(b_cluster.writes(), 0, "a follower wrote");
    assert_eq!(state(), flipped_at, "nobody acted without the lease");
    b_tx.send(true).expect("b");

    while !state().phase.is_terminal() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "B did not finish: {:?}",
            state()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A few more ticks: nothing more to do, nothing done twice.
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.abort();
    b.abort();
    assert_eq!(
        a_cluster.writes(),
        a_final,
        "A wrote after losing the lease"
    );
    assert!(b_cluster.writes() > 0, "B never acted");
    assert_eq!(state().phase, Phase::Succeeded, "{}", state().message);

    let reasons: Vec<String> = cluster.events().into_iter().map(|e| e.reason).collect();
    let count = |r: &str| reasons.iter().filter(|x| *x == r).count();
    assert_eq!(count("CanaryStarted"), 1, "{reasons:?}");
    assert_eq!(count("CanaryReady"), 1, "{reasons:?}");
    assert_eq!(count("WeightIncreased"), 4, "one per step: {reasons:?}");
    assert_eq!(count("Promoting"), 1, "{reasons:?}");
    assert_eq!(count("Succeeded"), 1, "{reasons:?}");
    assert_eq!(
        weight_steps(&cluster, NS),
        [20, 30, 40, 50].map(|w| format!("{w} % to the canary")),
        "no step repeated or skipped"
    );
    let vs = cluster.virtual_service(NS, NAME).expect("user vs");
    assert_eq!(vs.spec, user_virtual_service().spec);
    assert!(cluster.deployment(NS, TWIN).is_none());
    assert!(cluster.service(NS, TWIN).is_none());
}

// ---------------------------------------------------------------------------------------------
// Changes of the stable Deployment by its user during a rollout (found in review)

/// The Deployment as the webhook leaves it after admitting `image` mid-rollout: template
/// changed, rollout restarted in `Pending` on the new revision, stable revision kept.
fn apply_new_version(h: &Harness, image: &str) -> String {
    let mut d = h.stable().expect("stable");
    let containers = &mut d
        .spec
        .as_mut()
        .expect("spec")
        .template
        .spec
        .as_mut()
        .expect("pod spec")
        .containers;
    containers[0].image = Some(image.to_string());
    let template =
        serde_json::value::to_raw_value(&d.spec.as_ref().expect("spec").template).expect("json");
    let rev = canary_gate::admission::revision::template_revision(&template);
    let old = h.state();
    let next = RolloutState::pending(rev.clone(), old.stable_revision.clone(), Timestamp::now());
    let a = d.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in next.to_annotations() {
        match v {
            Some(v) => a.insert(k.to_string(), v),
            None => a.remove(k),
        };
    }
    h.cluster.put_deployment(d);
    rev
}

#[tokio::test]
async fn a_newer_template_mid_rollout_replaces_the_twin_before_any_traffic() {
    let mut h = progressing_at(30, true).await;
    let rev = apply_new_version(&h, "ghcr.io/stefanprodan/podinfo:6.0.9");
    h.tick().await;
    let twin = h.cluster.deployment(NS, TWIN).expect("twin");
    let image = twin
        .spec
        .as_ref()
        .expect("spec")
        .template
        .spec
        .as_ref()
        .expect("pod")
        .containers[0]
        .image
        .clone();
    assert_eq!(
        image.as_deref(),
        Some("ghcr.io/stefanprodan/podinfo:6.0.9"),
        "twin runs the newest template"
    );
    let stamp = twin
        .metadata
        .annotations
        .unwrap_or_default()
        .get("canary-gate.io/canary-revision")
        .cloned();
    assert_eq!(stamp, Some(rev.clone()));
    assert_eq!(
        h.route_weight(),
        0,
        "no traffic before the new twin is ready"
    );
    h.run_to_end().await;
    let s = h.state();
    assert_eq!((s.phase, s.canary_revision), (Phase::Succeeded, rev));
    assert_no_orphans(&h, true, "newer template");
}

#[tokio::test]
async fn opting_out_mid_rollout_cleans_up_the_canary() {
    let mut h = progressing_at(20, true).await;
    // What the webhook stores when `canary-gate.io/enabled` is removed mid-rollout.
    let mut d = h.stable().expect("stable");
    let a = d.metadata.annotations.get_or_insert_with(BTreeMap::new);
    a.remove("canary-gate.io/enabled");
    a.insert("canary-gate.io/phase".into(), "Cancelled".into());
    d.spec.as_mut().expect("spec").paused = Some(false);
    h.cluster.put_deployment(d);
    h.tick().await;
    assert_no_orphans(&h, true, "opt-out");
}

#[tokio::test]
async fn a_deployment_recreated_under_the_same_name_does_not_keep_split_routes() {
    for restart in [false, true] {
        let ctx = format!("restart={restart}");
        let mut h = progressing_at(20, true).await;
        // `kubectl replace --force`: deleted (the GC takes the twin and canary Service) and
        // created again from the user's manifest, without any rollout state.
        let mut fresh = h.stable().expect("stable");
        h.cluster.remove_deployment(NS, NAME);
        h.cluster
            .delete_deployment(NS, TWIN)
            .await
            .expect("gc twin");
        h.cluster.delete_service(NS, TWIN).await.expect("gc svc");
        fresh.metadata.annotations = Some(BTreeMap::from([(
            "canary-gate.io/enabled".to_string(),
            "true".to_string(),
        )]));
        fresh.metadata.uid = None;
        h.cluster.put_deployment(fresh);
        if restart {
            h.restart();
        }
        // Not `h.tick()`: the re-created Deployment has no rollout state to observe.
        let report = h.analyzer.tick(h.t).await;
        assert!(report.errors.is_empty(), "{ctx}: {report:?}");
        assert_no_orphans(&h, true, &ctx);
    }
}

/// A write that takes long (a slow API server, thousands of rollouts stepping at once) holds
/// up only its own rollout: later ticks start on schedule and move the others on, and never
/// touch the rollout still being written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_write_holds_up_only_its_own_rollout() {
    let cluster = Arc::new(MemoryCluster::new());
    let (d, _) = admitted_deployment(&[("canary-gate.io/interval", "1s")]).expect("deployment");
    let mut other = d.clone();
    other.metadata.namespace = Some("other".into());
    cluster.put_deployment(d);
    cluster.put_deployment(other);
    let mut svc = podinfo_service();
    cluster.put_service(svc.clone());
    svc.metadata.namespace = Some("other".into());
    cluster.put_service(svc);
    // Every state write of shop/podinfo waits until the test lets it through.
    let gate = cluster.hold_patches(NS, NAME);
    let prom = ScriptedProm::new(Prom::Healthy);
    let metrics = Metrics::new();
    let analyzer = Arc::new(Analyzer::new(
        cluster.clone(),
        prom.clone(),
        Defaults::default(),
        metrics.clone(),
    ));
    let (_tx, rx) = tokio::sync::watch::channel(true);
    let task = tokio::spawn(analyzer.run(Duration::from_millis(100), rx, None));
    let state = |ns: &str| state_of(&cluster.deployment(ns, NAME).expect("stable"));

    // other/podinfo runs to the end while shop/podinfo's first write is still held.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while state("other").phase != Phase::Succeeded {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other rollout was held up: {:?}",
            state("other")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        state(NS).phase,
        Phase::Pending,
        "the held write went through"
    );

    // Let shop/podinfo's writes through: it finishes too, every step once.
    gate.add_permits(1_000);
    while state(NS).phase != Phase::Succeeded {
        assert!(
            tokio::time::Instant::now() < deadline,
            "shop/podinfo did not finish: {:?}",
            state(NS)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    for ns in [NS, "other"] {
        assert_eq!(
            weight_steps(&cluster, ns),
            [20, 30, 40, 50].map(|w| format!("{w} % to the canary")),
            "{ns}: no step repeated or skipped"
        );
    }
    let encoded = metrics.encode();
    assert!(
        encoded.contains("canary_gate_ticks_skipped_total 0"),
        "{}",
        encoded
            .lines()
            .filter(|l| l.contains("ticks_skipped"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The new weight of every `WeightIncreased` Event in `ns`, in order.
fn weight_steps(cluster: &MemoryCluster, ns: &str) -> Vec<String> {
    cluster
        .events()
        .into_iter()
        .filter(|e| e.namespace == ns && e.reason == "WeightIncreased")
        .map(|e| {
            e.message
                .rsplit("; ")
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}
