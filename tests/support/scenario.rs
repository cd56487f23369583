//! One rollout end to end, shared by the analyzer tests and `make demo`: the captured
//! `kubectl apply` review goes through the real webhook decision, the patched Deployment is
//! stored in the in-memory cluster, and the real analyzer drives it against a real
//! Prometheus fed by simulated mesh traffic (weights read from the routes it writes).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use canary_gate::admission::mutate::{self, Mutation};
use canary_gate::admission::review::decode;
use canary_gate::admission::WebhookConfig;
use canary_gate::analyzer::Analyzer;
use canary_gate::cluster::memory::MemoryCluster;
use canary_gate::istio::VirtualService;
use canary_gate::metrics::Metrics;
use canary_gate::prom::PromClient;
use canary_gate::rollout::routes::canary_share;
use canary_gate::rollout::state::{Phase, RolloutState};
use canary_gate::settings::Defaults;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;

use super::{IstioExporter, MeshSim, Profile, SimConfig, TestPrometheus};

pub const NS: &str = "shop";
pub const NAME: &str = "podinfo";

pub fn fixture_path(name: &str) -> String {
    format!(
        "{}/tests/fixtures/admission/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// The Deployment as stored after the webhook admitted the captured `kubectl apply`.
pub fn admitted_deployment(
    extra_annotations: &[(&str, &str)],
) -> anyhow::Result<(Deployment, Vec<String>)> {
    let body = std::fs::read(fixture_path("21-managed-update-image-kubectl-apply.mutate"))?;
    let mut req = decode(&body).map_err(|e| anyhow::anyhow!("{e}"))?;
    for obj in [req.object.as_mut(), req.old_object.as_mut()]
        .into_iter()
        .flatten()
    {
        let a = obj
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        for (k, v) in extra_annotations {
            a.insert(k.to_string(), v.to_string());
        }
    }
    let decision = mutate::decide(&req, &WebhookConfig::default(), jiff::Timestamp::now());
    let Mutation::Patch {
        patch, warnings, ..
    } = decision
    else {
        anyhow::bail!("webhook did not start a rollout: {decision:?}");
    };
    let mut obj = serde_json::to_value(req.object.as_ref().context("object")?)?;
    json_patch::patch(&mut obj, &patch)?;
    obj["metadata"]["managedFields"] = serde_json::Value::Null;
    Ok((serde_json::from_value(obj)?, warnings))
}

pub fn podinfo_service() -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {"selector": {"app": NAME}, "ports": [{"name": "http", "port": 9898, "targetPort": 9898}]}
    }))
    .expect("static service")
}

/// A user's own VirtualService with a retry policy and a second route, to check adoption.
pub fn user_virtual_service() -> VirtualService {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {"hosts": [NAME], "http": [
            {"name": "api", "match": [{"uri": {"prefix": "/api"}}], "retries": {"attempts": 3, "perTryTimeout": "1s"}, "timeout": "5s",
             "route": [{"destination": {"host": NAME, "port": {"number": 9898}}}]},
            {"name": "rest", "route": [{"destination": {"host": NAME}}]}
        ]}
    }))
    .expect("static vs")
}

pub struct Outcome {
    pub phase: Phase,
    pub state: RolloutState,
    /// Canary weight seen in the routes after each tick (deduplicated).
    pub weights: Vec<i32>,
    pub elapsed: Duration,
    pub cluster: Arc<MemoryCluster>,
    pub canary_requests: u64,
    pub canary_errors: u64,
    pub transitions: Vec<String>,
}

pub struct Env {
    pub prometheus: TestPrometheus,
    pub exporter: Arc<IstioExporter>,
}

impl Env {
    pub async fn start() -> anyhow::Result<Env> {
        Self::start_with_targets(&[]).await
    }

    /// [`Env::start`] with more scrape targets for Prometheus (e.g. canary-gate's own admin
    /// port serving `/metrics`), bound before this is called.
    pub async fn start_with_targets(extra: &[std::net::SocketAddr]) -> anyhow::Result<Env> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let exporter = Arc::new(IstioExporter::start().await?);
        let mut targets = vec![exporter.addr()];
        targets.extend_from_slice(extra);
        let prometheus = TestPrometheus::start(&targets, Duration::from_millis(200)).await?;
        Ok(Env {
            prometheus,
            exporter,
        })
    }
}

/// What a rollout shares with the rest of a test: by default nothing (a fresh in-memory
/// cluster and metrics, no dashboard history).
#[derive(Default, Clone)]
pub struct Shared {
    /// The cluster to run in (e.g. one a dashboard reads); other rollouts may live in it.
    pub cluster: Option<Arc<MemoryCluster>>,
    /// The metrics the analyzer counts into (e.g. the ones an admin server exposes).
    pub metrics: Option<Arc<Metrics>>,
    /// Where the analyzer records checks and decisions for the dashboard.
    pub history: Option<Arc<canary_gate::dashboard::History>>,
}

/// Runs one rollout to a terminal phase (or `deadline`). `canary` is how the new version
/// behaves; the stable is `stable`.
#[allow(clippy::too_many_arguments)]
pub async fn run_rollout(
    env: &Env,
    ns: &str,
    annotations: &[(&str, &str)],
    stable: Profile,
    canary: Profile,
    adopt_user_routes: bool,
    deadline: Duration,
    on_tick: impl FnMut(&Outcome),
) -> anyhow::Result<Outcome> {
    run_rollout_with(
        env,
        Shared::default(),
        ns,
        annotations,
        stable,
        canary,
        adopt_user_routes,
        deadline,
        on_tick,
    )
    .await
}

/// [`run_rollout`] in a cluster, metrics and dashboard history shared with the test.
#[allow(clippy::too_many_arguments)]
pub async fn run_rollout_with(
    env: &Env,
    shared: Shared,
    ns: &str,
    annotations: &[(&str, &str)],
    stable: Profile,
    canary: Profile,
    adopt_user_routes: bool,
    deadline: Duration,
    mut on_tick: impl FnMut(&Outcome),
) -> anyhow::Result<Outcome> {
    let cluster = shared
        .cluster
        .clone()
        .unwrap_or_else(|| Arc::new(MemoryCluster::new()));
    let (mut deployment, _warnings) = admitted_deployment(annotations)?;
    deployment.metadata.namespace = Some(ns.to_string());
    cluster.put_deployment(deployment);
    let mut svc = podinfo_service();
    svc.metadata.namespace = Some(ns.to_string());
    cluster.put_service(svc);
    if adopt_user_routes {
        let mut vs = user_virtual_service();
        vs.metadata.namespace = Some(ns.to_string());
        cluster.put_virtual_service(vs);
    }
    let weight_source = cluster.clone();
    let weight_ns = ns.to_string();
    let weight = Arc::new(move || {
        weight_source
            .all_virtual_services()
            .iter()
            .filter(|vs| vs.metadata.namespace.as_deref() == Some(weight_ns.as_str()))
            .filter_map(|vs| canary_share(vs, NAME))
            .max()
            .unwrap_or(0)
            .max(0) as u32
    });
    let sim = MeshSim::start(
        env.exporter.clone(),
        SimConfig {
            namespace: ns.to_string(),
            service: NAME.to_string(),
            stable_workload: NAME.to_string(),
            canary_workload: format!("{NAME}-canary"),
            rps: 200.0,
            stable,
            canary,
            seed: 7,
        },
        weight,
    );
    let metrics = shared.metrics.clone().unwrap_or_else(Metrics::new);
    let prom = PromClient::new(
        &env.prometheus.url(),
        Duration::from_secs(5),
        metrics.clone(),
    )?;
    let mut analyzer = Analyzer::new(
        cluster.clone(),
        Arc::new(prom),
        Defaults::default(),
        metrics,
    );
    if let Some(history) = &shared.history {
        analyzer = analyzer.with_history(history.clone());
    }
    let started = Instant::now();
    let mut outcome = Outcome {
        phase: Phase::Pending,
        state: RolloutState::pending(String::new(), String::new(), jiff::Timestamp::now()),
        weights: vec![],
        elapsed: Duration::ZERO,
        cluster: cluster.clone(),
        canary_requests: 0,
        canary_errors: 0,
        transitions: vec![],
    };
    loop {
        let report = analyzer.tick(jiff::Timestamp::now()).await;
        outcome.transitions.extend(report.transitions);
        let d = cluster
            .deployment(ns, NAME)
            .context("stable deployment vanished")?;
        let annotations: BTreeMap<String, String> =
            d.metadata.annotations.clone().unwrap_or_default();
        outcome.state =
            RolloutState::from_annotations(&annotations).map_err(|e| anyhow::anyhow!("{e}"))?;
        outcome.phase = outcome.state.phase;
        let w = cluster
            .all_virtual_services()
            .iter()
            .filter(|vs| vs.metadata.namespace.as_deref() == Some(ns))
            .filter_map(|vs| canary_share(vs, NAME))
            .max()
            .unwrap_or(0);
        if outcome.weights.last() != Some(&w) {
            outcome.weights.push(w);
        }
        outcome.elapsed = started.elapsed();
        let totals = sim.totals();
        outcome.canary_requests = totals.canary.requests;
        outcome.canary_errors = totals.canary.errors;
        on_tick(&outcome);
        if outcome.phase.is_terminal() || started.elapsed() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    sim.stop();
    Ok(outcome)
}
