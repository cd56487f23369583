//! The shipped `KubeCluster` through the real kube client against a fake API server on
//! loopback (tests/support/apiserver.rs): its Deployment watch holds only the Deployments
//! canary-gate works on, Deployments whose rollout state predates the label are found by the
//! metadata-only sweep and labelled, and a rollout runs to the end through it.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use canary_gate::analyzer::{woken_rollout, Analyzer};
use canary_gate::cluster::kube::KubeCluster;
use canary_gate::cluster::limit::KubeLimits;
use canary_gate::cluster::Cluster;
use canary_gate::gates::Sample;
use canary_gate::metrics::Metrics;
use canary_gate::prom::{PromError, QueryApi};
use canary_gate::rollout::state::{Phase, RolloutState};
use canary_gate::settings::Defaults;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use support::apiserver::FakeApiServer;
use support::scenario::{admitted_deployment, podinfo_service, NAME, NS};

fn renamed(d: &Deployment, name: &str) -> Deployment {
    let mut d = d.clone();
    d.metadata.name = Some(name.into());
    d
}

async fn cluster(api: &FakeApiServer) -> (Arc<KubeCluster>, Arc<canary_gate::cluster::Wakes>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = kube::Config::new(api.url().parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let (cluster, watch) = KubeCluster::start(
        client,
        KubeLimits {
            timeout: Duration::from_secs(5),
            ..KubeLimits::default()
        },
        Metrics::new(),
        "test".into(),
        woken_rollout,
    );
    tokio::spawn(watch);
    cluster.wait_ready().await;
    let changed = cluster.changed();
    (Arc::new(cluster), changed)
}

async fn names(cluster: &KubeCluster) -> Vec<String> {
    let mut v: Vec<String> = cluster
        .deployments()
        .await
        .expect("cache")
        .iter()
        .filter_map(|d| d.metadata.name.clone())
        .collect();
    v.sort();
    v
}

async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Healthy traffic for every workload a batched query names.
struct Healthy;

impl QueryApi for Healthy {
    async fn query(&self, promql: &str, _at: Timestamp) -> Result<Vec<Sample>, PromError> {
        let workloads = ["podinfo", "podinfo-canary"];
        let value = |w: &str| -> f64 {
            if promql.starts_with("histogram_quantile") {
                120.0
            } else if promql.contains("response_code=~\"5..\"") {
                0.0
            } else if w.ends_with("-canary") {
                600.0
            } else {
                5400.0
            }
        };
        let les: Vec<String> = ["500", "+Inf"].map(String::from).to_vec();
        let mut out = Vec::new();
        for w in workloads {
            let labels = BTreeMap::from([
                ("destination_workload_namespace".to_string(), NS.to_string()),
                ("destination_workload".to_string(), w.to_string()),
            ]);
            if promql.contains("istio_request_duration_milliseconds_bucket")
                && !promql.starts_with("histogram_quantile")
            {
                for le in &les {
                    let mut labels = labels.clone();
                    labels.insert("le".into(), le.clone());
                    out.push(Sample {
                        labels,
                        value: value(w),
                    });
                }
            } else {
                out.push(Sample {
                    labels,
                    value: value(w),
                });
            }
        }
        Ok(out)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_holds_only_managed_deployments_and_older_rollouts_get_labelled() {
    let api = FakeApiServer::start().await.expect("fake api server");
    let (managed, _) = admitted_deployment(&[("canary-gate.io/interval", "1s")]).expect("admitted");
    assert!(
        managed
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("canary-gate.io/rollout")),
        "the webhook labels a Deployment it starts a rollout on"
    );
    // A Deployment nobody manages, and one whose rollout state predates the label.
    let mut plain = renamed(&managed, "plain");
    plain.metadata.annotations = None;
    plain.metadata.labels = None;
    let mut older = renamed(&managed, "older");
    older.metadata.labels = None;
    for d in [&managed, &plain, &older] {
        api.put(d);
    }
    api.put(&podinfo_service());

    let (cluster, changed) = cluster(&api).await;
    assert_eq!(
        names(&cluster).await,
        [NAME],
        "the watch selects on the label"
    );
    assert_eq!(
        cluster.unlabeled_rollouts().await.expect("sweep"),
        [(NS.to_string(), "older".to_string())],
        "the metadata sweep finds rollout state without the label, not plain Deployments"
    );

    // The analyzer, through this cluster: the sweep labels `older`, the watch then holds it,
    // and the rollout of podinfo runs to the end.
    let analyzer = Arc::new(Analyzer::new(
        cluster.clone(),
        Arc::new(Healthy),
        Defaults::default(),
        Metrics::new(),
    ));
    let (_tx, rx) = tokio::sync::watch::channel(true);
    let task = tokio::spawn(analyzer.run(Duration::from_millis(200), rx, Some(changed)));
    let twin_has_containers = || {
        let containers = api
            .object("deployments", NS, "podinfo-canary")
            .map(|t| t["spec"]["template"]["spec"]["containers"].clone());
        async move { containers.is_some_and(|c| c.as_array().is_some_and(|c| !c.is_empty())) }
    };
    eventually(
        "the twin made with the stable's containers",
        twin_has_containers,
    )
    .await;
    // Once the rollout runs the cache keeps no pod spec: a twin deleted by hand is rebuilt
    // from the stable as the API server holds it.
    eventually("the cache drops the running rollout's pod spec", || {
        let cluster = cluster.clone();
        async move {
            cluster.deployments().await.expect("cache").iter().any(|d| {
                d.metadata.name.as_deref() == Some(NAME)
                    && d.spec.as_ref().is_some_and(|s| s.template.spec.is_none())
            })
        }
    })
    .await;
    cluster
        .delete_deployment(NS, "podinfo-canary")
        .await
        .expect("delete the twin");
    eventually(
        "the twin rebuilt with the stable's containers",
        twin_has_containers,
    )
    .await;
    assert!(
        api.calls().get("get deployments").copied().unwrap_or(0) >= 1,
        "the stable's template was read: {:?}",
        api.calls()
    );
    eventually("older labelled and watched", || {
        let cluster = cluster.clone();
        async move { names(&cluster).await.contains(&"older".to_string()) }
    })
    .await;
    let phase = |name: &str| {
        api.object("deployments", NS, name)
            .and_then(|d| {
                let a: BTreeMap<String, String> =
                    serde_json::from_value(d["metadata"]["annotations"].clone()).ok()?;
                RolloutState::from_annotations(&a).ok()
            })
            .map(|s| s.phase)
    };
    eventually("podinfo promoted through the real client", || {
        let done = phase(NAME) == Some(Phase::Succeeded);
        async move { done }
    })
    .await;
    assert!(
        !names(&cluster).await.contains(&"plain".to_string()),
        "an unmanaged Deployment never enters the cache"
    );
    let calls = api.calls();
    assert!(
        calls.get("patch deployments").copied().unwrap_or(0) > 0,
        "{calls:?}"
    );
    assert!(
        calls.get("watch deployments").copied().unwrap_or(0) >= 1,
        "{calls:?}"
    );
    // The twin was created with the label, seen by the watch, and is deleted once the state
    // says Succeeded (state first, world second).
    eventually("the twin deleted after the promotion", || {
        let gone = api.object("deployments", NS, "podinfo-canary").is_none();
        async move { gone }
    })
    .await;
    // Every step is its own Event with its own text (kube's Recorder folded them into a
    // series of the first step's text).
    let mut steps: Vec<(String, String)> = api
        .objects("events")
        .iter()
        .filter(|e| e["reason"] == "WeightIncreased")
        .map(|e| {
            (
                e["eventTime"].as_str().unwrap_or_default().to_string(),
                e["note"]
                    .as_str()
                    .unwrap_or_default()
                    .rsplit("; ")
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    steps.sort();
    let steps: Vec<String> = steps.into_iter().map(|(_, note)| note).collect();
    assert_eq!(
        steps,
        [20, 30, 40, 50].map(|w| format!("{w} % to the canary")),
        "one Event per step"
    );
    task.abort();
}

/// What canary-gate never reads is dropped as objects arrive: managedFields and kubectl's
/// last-applied copy from the watch cache and from listed Services and routes, the
/// conditions from a cached Deployment's status. What it does read is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_and_listed_objects_keep_only_what_is_read() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

    let api = FakeApiServer::start().await.expect("fake api server");
    let heavy = |meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("kubectl-client-side-apply".into()),
            operation: Some("Update".into()),
            fields_v1: Some(FieldsV1(serde_json::json!({"f:spec": {"f:ports": {}}}))),
            ..Default::default()
        }]);
        let a = meta.annotations.get_or_insert_with(Default::default);
        a.insert(LAST_APPLIED.into(), "{\"kind\":\"...\"}".into());
        a.insert("team".into(), "shop".into());
    };
    let (mut managed, _) = admitted_deployment(&[]).expect("admitted");
    heavy(&mut managed.metadata);
    let mut service = podinfo_service();
    heavy(&mut service.metadata);
    let mut route = support::scenario::user_virtual_service();
    heavy(&mut route.metadata);
    api.put(&managed);
    api.put(&service);
    api.put(&route);
    assert!(
        api.object("services", NS, NAME)
            .is_some_and(|s| s["metadata"]["managedFields"].is_array()),
        "the fake API server holds the managedFields"
    );
    let stored = api.object("deployments", NS, NAME).expect("stored");
    assert!(stored["status"]["conditions"].is_array(), "{stored}");

    let (cluster, _) = cluster(&api).await;
    let cached = cluster.deployments().await.expect("cache");
    let d = cached.first().expect("the managed Deployment");
    let services = cluster.services(NS).await.expect("services");
    let routes = cluster.virtual_services(NS).await.expect("routes");
    let metas = [
        &d.metadata,
        &services.first().expect("service").metadata,
        &routes.first().expect("route").metadata,
    ];
    for meta in metas {
        assert!(meta.managed_fields.is_none(), "{:?}", meta.name);
        let a = meta.annotations.as_ref().expect("annotations");
        assert!(!a.contains_key(LAST_APPLIED), "{:?}: {a:?}", meta.name);
        assert_eq!(a.get("team").map(String::as_str), Some("shop"));
    }
    assert!(
        d.spec.as_ref().is_some_and(|s| s.template.spec.is_some()),
        "a Pending rollout's pod spec stays in the cache (its twin is built from it)"
    );
    let status = d.status.as_ref().expect("status");
    assert_eq!(
        status.ready_replicas.map(i64::from),
        stored["status"]["readyReplicas"].as_i64()
    );
    assert!(status.conditions.is_none());
    assert!(
        d.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.keys().any(|k| k.starts_with("canary-gate.io/"))),
        "the rollout state stays"
    );
}
