//! The real cluster: kube-rs client calls with a timeout each, counted by call and outcome.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource};
use serde_json::json;

use super::limit::{KubeLimits, Limiter};
use super::{Cluster, KubeError};
use crate::gateway_api::{HTTPRoute, HTTPRouteRule};
use crate::istio::{HttpRoute, VirtualService};
use crate::metrics::{CallOutcome, Metrics};
use crate::rollout::machine::EventType;

pub const FIELD_MANAGER: &str = "canary-gate";

/// How long an Event may wait for the client's budget (`Limiter::admit_spare`) before it is
/// dropped: no longer than a rollout's writes wait when the API server keeps up.
const EVENT_MAX_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Why no client could be built for the CLI's commands.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot read the kubeconfig{}: {source}", .path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Kubeconfig {
        path: Option<std::path::PathBuf>,
        source: kube::config::KubeconfigError,
    },
    #[error("no cluster found (in-cluster config, $KUBECONFIG or ~/.kube/config; or pass --kubeconfig/--context): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client the way kubectl resolves one: `--kubeconfig` and `--context` when given, else
/// `$KUBECONFIG` or `~/.kube/config`, else the pod's ServiceAccount. Also returns the
/// namespace the context defaults to, for commands given a bare Deployment name.
pub async fn connect(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> Result<(Client, String), ConnectError> {
    use kube::config::{Config, KubeConfigOptions, Kubeconfig};
    let config = if kubeconfig.is_some() || context.is_some() {
        let kubeconfig_error = |source| ConnectError::Kubeconfig {
            path: kubeconfig.map(Into::into),
            source,
        };
        let file = match kubeconfig {
            Some(path) => Kubeconfig::read_from(path),
            None => Kubeconfig::read(),
        }
        .map_err(kubeconfig_error)?;
        let options = KubeConfigOptions {
            context: context.map(Into::into),
            ..KubeConfigOptions::default()
        };
        Config::from_custom_kubeconfig(file, &options)
            .await
            .map_err(kubeconfig_error)?
    } else {
        Config::infer().await?
    };
    let namespace = config.default_namespace.clone();
    Ok((Client::try_from(config)?, namespace))
}

#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
    limiter: Arc<Limiter>,
    metrics: Arc<Metrics>,
    deployments: Store<Deployment>,
    /// This replica's name in the Events it writes (`reportingInstance`).
    instance: String,
    /// Notified when the watch sees a Deployment for which `wakes` says the analyzer should
    /// act now rather than at its next tick.
    changed: Arc<super::Wakes>,
}

impl KubeCluster {
    /// Starts the Deployment watch (a reflector cache) and returns once it is constructed;
    /// `wait_ready` blocks until the first list arrived. `wakes` picks the changes that
    /// wake a rollout (`changed()`), and names it.
    pub fn start(
        client: Client,
        limits: KubeLimits,
        metrics: Arc<Metrics>,
        instance: String,
        wakes: fn(&Deployment) -> Option<(String, String)>,
    ) -> (Self, impl Future<Output = ()>) {
        let changed = Arc::new(super::Wakes::default());
        let notify = changed.clone();
        let (store, writer) = reflector::store();
        let api: Api<Deployment> = Api::all(client.clone());
        // Only the Deployments canary-gate works on (the label the webhook and the analyzer
        // put on stables with a rollout and on twins): a cluster of 20,000 Deployments with
        // 1,000 managed costs 1,000. Drop what canary-gate never reads too.
        let config = watcher::Config::default().labels(crate::annotations::ROLLOUT_LABEL);
        let stream = watcher(api, config).modify(super::as_cached);
        let stream = reflector::reflector(writer, stream)
            .default_backoff()
            .applied_objects()
            .for_each(move |r| {
                match r {
                    Ok(d) => {
                        if let Some((ns, name)) = wakes(&d) {
                            notify.wake(ns, name);
                        }
                    }
                    Err(error) => tracing::warn!(%error, "deployment watch error; retrying"),
                }
                std::future::ready(())
            });
        (
            KubeCluster {
                client,
                limiter: Arc::new(Limiter::new(limits)),
                metrics,
                deployments: store,
                instance,
                changed,
            },
            stream,
        )
    }

    /// The rollouts `start`'s `wakes` selected.
    pub fn changed(&self) -> Arc<super::Wakes> {
        self.changed.clone()
    }

    /// Deployments straight from the API server (one namespace, or all), for `status`.
    pub async fn list_deployments(&self, ns: Option<&str>) -> Result<Vec<Deployment>, KubeError> {
        let api: Api<Deployment> = match ns {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        self.call("list deployments", api.list(&ListParams::default()))
            .await
            .map(|l| l.items)
    }

    pub async fn wait_ready(&self) {
        let _ = self.deployments.wait_until_ready().await;
    }

    async fn call<T>(
        &self,
        name: &'static str,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, KubeError> {
        let permit = self.limiter.admit().await;
        self.send(name, permit, fut).await
    }

    /// Sends one call admitted by the limiter (`permit`, held until the answer), with its
    /// timeout, and counts its outcome.
    async fn send<T>(
        &self,
        name: &'static str,
        _permit: Option<tokio::sync::SemaphorePermit<'_>>,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, KubeError> {
        let timeout = self.limiter.limits().timeout;
        let result = match tokio::time::timeout(timeout, fut).await {
            Err(_) => Err(KubeError::Timeout(timeout)),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(kube::Error::Api(status))) if status.code == 404 => Err(KubeError::NotFound),
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => Err(KubeError::Conflict),
            Ok(Err(e)) => Err(KubeError::Api(e.to_string())),
        };
        let outcome = match &result {
            Ok(_) | Err(KubeError::NotFound) => CallOutcome::Success,
            Err(KubeError::Timeout(_)) => CallOutcome::Timeout,
            Err(_) => CallOutcome::Failure,
        };
        Metrics::count_call(&self.metrics.kube_calls, name, outcome);
        result
    }

    fn apply_params() -> PatchParams {
        PatchParams::apply(FIELD_MANAGER).force()
    }

    /// A merge patch under canary-gate's field manager.
    fn merge_params() -> PatchParams {
        PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        }
    }
}

/// A list's items, slimmed.
fn slimmed<T: Resource + Clone>(list: kube::core::ObjectList<T>) -> Vec<T> {
    let mut items = list.items;
    for item in &mut items {
        super::slim(item.meta_mut());
    }
    items
}

/// A list of HTTPRoutes answered 404: the Gateway API CRDs are not installed, so no route
/// of that kind exists (Istio-only clusters keep working under `router: auto`).
fn no_gateway_api_is_none(
    r: Result<Vec<HTTPRoute>, KubeError>,
) -> Result<Vec<HTTPRoute>, KubeError> {
    match r {
        Err(KubeError::NotFound) => Ok(Vec::new()),
        other => other,
    }
}

impl Cluster for KubeCluster {
    async fn deployments(&self) -> Result<Vec<Arc<Deployment>>, KubeError> {
        Ok(self.deployments.state())
    }

    async fn unlabeled_rollouts(&self) -> Result<Vec<(String, String)>, KubeError> {
        use crate::annotations as ann;
        /// Objects per list page: the sweep's memory is one page of metadata.
        const PAGE: u32 = 500;
        let api: Api<Deployment> = Api::all(self.client.clone());
        let selector = format!("!{}", ann::ROLLOUT_LABEL);
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut params = ListParams::default().labels(&selector).limit(PAGE);
            if let Some(t) = &token {
                params = params.continue_token(t);
            }
            let page = self
                .call("list deployment metadata", api.list_metadata(&params))
                .await?;
            found.extend(
                page.items
                    .into_iter()
                    .filter(|d| {
                        d.metadata
                            .annotations
                            .as_ref()
                            .is_some_and(|a| a.contains_key(ann::PHASE))
                    })
                    .map(|d| {
                        (
                            d.metadata.namespace.unwrap_or_default(),
                            d.metadata.name.unwrap_or_default(),
                        )
                    }),
            );
            match page.metadata.continue_.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(found),
            }
        }
    }

    async fn label_rollout(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let body = json!({"metadata": {"labels": {crate::annotations::ROLLOUT_LABEL: "true"}}});
        self.call(
            "label deployment",
            api.patch(name, &Self::merge_params(), &Patch::Merge(body)),
        )
        .await
        .map(|_| ())
    }

    async fn get_deployment(&self, ns: &str, name: &str) -> Result<Deployment, KubeError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        self.call("get deployment", api.get(name)).await
    }

    async fn apply_deployment(&self, d: &Deployment) -> Result<(), KubeError> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let name = d.metadata.name.clone().unwrap_or_default();
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
        let mut body = serde_json::to_value(d).map_err(|e| KubeError::Api(e.to_string()))?;
        body["apiVersion"] = json!("apps/v1");
        body["kind"] = json!("Deployment");
        self.call(
            "apply deployment",
            api.patch(&name, &Self::apply_params(), &Patch::Apply(body)),
        )
        .await
        .map(|_| ())
    }

    async fn delete_deployment(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        self.call(
            "delete deployment",
            api.delete(name, &DeleteParams::background()),
        )
        .await
        .map(|_| ())
    }

    async fn patch_deployment(
        &self,
        ns: &str,
        name: &str,
        resource_version: &str,
        annotations: BTreeMap<String, Option<String>>,
        paused: Option<bool>,
    ) -> Result<(), KubeError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let mut body =
            json!({"metadata": {"resourceVersion": resource_version, "annotations": annotations}});
        if let Some(p) = paused {
            body["spec"] = json!({"paused": p});
        }
        self.call(
            "patch deployment",
            api.patch(name, &Self::merge_params(), &Patch::Merge(body)),
        )
        .await
        .map(|_| ())
    }

    async fn services(&self, ns: &str) -> Result<Vec<Service>, KubeError> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        self.call("list services", api.list(&ListParams::default()))
            .await
            .map(slimmed)
    }

    async fn apply_service(&self, s: &Service) -> Result<(), KubeError> {
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        let name = s.metadata.name.clone().unwrap_or_default();
        let api: Api<Service> = Api::namespaced(self.client.clone(), &ns);
        let mut body = serde_json::to_value(s).map_err(|e| KubeError::Api(e.to_string()))?;
        body["apiVersion"] = json!("v1");
        body["kind"] = json!("Service");
        self.call(
            "apply service",
            api.patch(&name, &Self::apply_params(), &Patch::Apply(body)),
        )
        .await
        .map(|_| ())
    }

    async fn delete_service(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        self.call(
            "delete service",
            api.delete(name, &DeleteParams::background()),
        )
        .await
        .map(|_| ())
    }

    async fn virtual_services(&self, ns: &str) -> Result<Vec<VirtualService>, KubeError> {
        let api: Api<VirtualService> = Api::namespaced(self.client.clone(), ns);
        self.call("list virtualservices", api.list(&ListParams::default()))
            .await
            .map(slimmed)
    }

    async fn virtual_services_everywhere(&self) -> Result<Vec<VirtualService>, KubeError> {
        let api: Api<VirtualService> = Api::all(self.client.clone());
        self.call("list virtualservices", api.list(&ListParams::default()))
            .await
            .map(slimmed)
    }

    async fn apply_virtual_service(&self, vs: &VirtualService) -> Result<(), KubeError> {
        let ns = vs.metadata.namespace.clone().unwrap_or_default();
        let name = vs.metadata.name.clone().unwrap_or_default();
        let api: Api<VirtualService> = Api::namespaced(self.client.clone(), &ns);
        self.call(
            "apply virtualservice",
            api.patch(&name, &Self::apply_params(), &Patch::Apply(vs)),
        )
        .await
        .map(|_| ())
    }

    async fn patch_virtual_service(
        &self,
        ns: &str,
        name: &str,
        http: &[HttpRoute],
        annotations: BTreeMap<String, Option<String>>,
    ) -> Result<(), KubeError> {
        let api: Api<VirtualService> = Api::namespaced(self.client.clone(), ns);
        let body = json!({"metadata": {"annotations": annotations}, "spec": {"http": http}});
        self.call(
            "patch virtualservice",
            api.patch(name, &Self::merge_params(), &Patch::Merge(body)),
        )
        .await
        .map(|_| ())
    }

    async fn delete_virtual_service(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        let api: Api<VirtualService> = Api::namespaced(self.client.clone(), ns);
        self.call(
            "delete virtualservice",
            api.delete(name, &DeleteParams::background()),
        )
        .await
        .map(|_| ())
    }

    async fn http_routes(&self, ns: &str) -> Result<Vec<HTTPRoute>, KubeError> {
        let api: Api<HTTPRoute> = Api::namespaced(self.client.clone(), ns);
        no_gateway_api_is_none(
            self.call("list httproutes", api.list(&ListParams::default()))
                .await
                .map(slimmed),
        )
    }

    async fn http_routes_everywhere(&self) -> Result<Vec<HTTPRoute>, KubeError> {
        let api: Api<HTTPRoute> = Api::all(self.client.clone());
        no_gateway_api_is_none(
            self.call("list httproutes", api.list(&ListParams::default()))
                .await
                .map(slimmed),
        )
    }

    async fn apply_http_route(&self, route: &HTTPRoute) -> Result<(), KubeError> {
        let ns = route.metadata.namespace.clone().unwrap_or_default();
        let name = route.metadata.name.clone().unwrap_or_default();
        let api: Api<HTTPRoute> = Api::namespaced(self.client.clone(), &ns);
        self.call(
            "apply httproute",
            api.patch(&name, &Self::apply_params(), &Patch::Apply(route)),
        )
        .await
        .map(|_| ())
    }

    async fn patch_http_route(
        &self,
        ns: &str,
        name: &str,
        rules: &[HTTPRouteRule],
        annotations: BTreeMap<String, Option<String>>,
    ) -> Result<(), KubeError> {
        let api: Api<HTTPRoute> = Api::namespaced(self.client.clone(), ns);
        let body = json!({"metadata": {"annotations": annotations}, "spec": {"rules": rules}});
        self.call(
            "patch httproute",
            api.patch(name, &Self::merge_params(), &Patch::Merge(body)),
        )
        .await
        .map(|_| ())
    }

    async fn delete_http_route(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        let api: Api<HTTPRoute> = Api::namespaced(self.client.clone(), ns);
        self.call(
            "delete httproute",
            api.delete(name, &DeleteParams::background()),
        )
        .await
        .map(|_| ())
    }

    async fn event(
        &self,
        d: &Deployment,
        kind: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), KubeError> {
        // One create per event, as kube's `Recorder` would write it, without its cache: that
        // keys on reason and object but not on the note, so a second `WeightIncreased` became
        // a repeat of the first one's text, and it scans every cached event on each publish
        // (quadratic at thousands of rollouts).
        use k8s_openapi::api::events::v1::Event;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
        // Events are best effort, as in client-go: when the budget is taken by the rollouts'
        // writes they are dropped and counted (before any is built); the state annotations,
        // `canary-gate status` and the notifications still tell.
        let Some(permit) = self.limiter.admit_spare(EVENT_MAX_WAIT).await else {
            self.metrics.events_dropped.inc();
            tracing::debug!(reason, "event dropped: the API budget is in use");
            return Ok(());
        };
        // Stamped once admitted: its time is when it is sent, not when it began to wait.
        let now = jiff::Timestamp::now();
        let reference = d.object_ref(&());
        let event = Event {
            metadata: ObjectMeta {
                namespace: reference.namespace.clone(),
                name: Some(format!(
                    "{}.{:x}",
                    reference.name.as_deref().unwrap_or("canary-gate"),
                    now.as_nanosecond()
                )),
                ..Default::default()
            },
            action: Some("Rollout".into()),
            reason: Some(reason.to_string()),
            note: Some(message.chars().take(1000).collect()),
            type_: Some(
                match kind {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference.clone()),
            reporting_controller: Some("canary-gate".into()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        let ns = reference
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        self.send(
            "create event",
            Some(permit),
            api.create(&PostParams::default(), &event),
        )
        .await
        .map(|_| ())
    }
}
