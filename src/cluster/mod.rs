//! The one boundary to the Kubernetes API. `KubeCluster` is what ships; `MemoryCluster` is an
//! in-memory cluster for tests and the demo. Keep this trait thin: decisions live elsewhere.

pub mod kube;
pub mod limit;
pub mod memory;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::gateway_api::{HTTPRoute, HTTPRouteRule};
use crate::istio::{HttpRoute, VirtualService};
use crate::rollout::machine::EventType;

/// Rollouts the watch saw change in a way the analyzer acts on at once (a twin turned
/// ready, a promoted stable finished rolling out), and the signal that there are some. The
/// tick a wake-up starts works on these rollouts only: a thousand twins turning ready at
/// 10,000 rollouts must not make several passes a second over all of them.
#[derive(Debug, Default)]
pub struct Wakes {
    keys: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    notify: tokio::sync::Notify,
}

impl Wakes {
    /// Remember (namespace, name) of a stable Deployment and signal.
    pub fn wake(&self, namespace: String, name: String) {
        self.lock().insert((namespace, name));
        self.notify.notify_one();
    }

    /// Until something was woken (since the last call returned).
    pub async fn woken(&self) {
        self.notify.notified().await
    }

    /// The rollouts woken so far, forgotten here.
    pub fn take(&self) -> std::collections::HashSet<(String, String)> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<(String, String)>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum KubeError {
    #[error("not found")]
    NotFound,
    /// Optimistic concurrency: someone else changed the object; re-read and retry next tick.
    #[error("conflict: the object changed since it was read")]
    Conflict,
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("{0}")]
    Api(String),
}

/// Object writes canary-gate makes, and the reads it needs. Every call has a timeout in the
/// real implementation and is counted by outcome.
pub trait Cluster: Send + Sync + 'static {
    /// The Deployments labelled `canary-gate.io/rollout` (stables with a rollout, twins): the
    /// real implementation reads a watch-fed cache that selects on the label, so a cluster's
    /// other Deployments cost nothing. The cache's objects, shared: a tick copies none.
    fn deployments(&self) -> impl Future<Output = Result<Vec<Arc<Deployment>>, KubeError>> + Send;
    /// (namespace, name) of Deployments that carry rollout state but not the label (state
    /// written before the label existed, or the label removed while the webhook was down):
    /// the analyzer labels them so that the watch sees them. Reads metadata only, a page at
    /// a time.
    fn unlabeled_rollouts(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, String)>, KubeError>> + Send;
    /// Merge-patches `canary-gate.io/rollout: "true"` onto a Deployment.
    fn label_rollout(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), KubeError>> + Send;
    /// One Deployment read from the API server, not the cache: the CLI's commands see what
    /// the analyzer will see next.
    fn get_deployment(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Deployment, KubeError>> + Send;
    /// Server-side apply with canary-gate's field manager.
    fn apply_deployment(
        &self,
        d: &Deployment,
    ) -> impl Future<Output = Result<(), KubeError>> + Send;
    fn delete_deployment(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), KubeError>> + Send;
    /// Merge-patches annotations (None removes) and optionally `spec.paused`, failing with
    /// `Conflict` when the object's resourceVersion is no longer `resource_version`.
    fn patch_deployment(
        &self,
        ns: &str,
        name: &str,
        resource_version: &str,
        annotations: BTreeMap<String, Option<String>>,
        paused: Option<bool>,
    ) -> impl Future<Output = Result<(), KubeError>> + Send;
    fn services(&self, ns: &str) -> impl Future<Output = Result<Vec<Service>, KubeError>> + Send;
    fn apply_service(&self, s: &Service) -> impl Future<Output = Result<(), KubeError>> + Send;
    fn delete_service(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), KubeError>> + Send;
    fn virtual_services(
        &self,
        ns: &str,
    ) -> impl Future<Output = Result<Vec<VirtualService>, KubeError>> + Send;
    /// VirtualServices in every namespace: to find routes left by a rollout whose stable
    /// Deployment was deleted while this process was not watching.
    fn virtual_services_everywhere(
        &self,
    ) -> impl Future<Output = Result<Vec<VirtualService>, KubeError>> + Send;
    fn apply_virtual_service(
        &self,
        vs: &VirtualService,
    ) -> impl Future<Output = Result<(), KubeError>> + Send;
    /// Replaces `spec.http` of a user's VirtualService and sets/removes annotations on it.
    fn patch_virtual_service(
        &self,
        ns: &str,
        name: &str,
        http: &[HttpRoute],
        annotations: BTreeMap<String, Option<String>>,
    ) -> impl Future<Output = Result<(), KubeError>> + Send;
    fn delete_virtual_service(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), KubeError>> + Send;
    /// Gateway API HTTPRoutes of a namespace (none when the Gateway API is not installed).
    fn http_routes(
        &self,
        ns: &str,
    ) -> impl Future<Output = Result<Vec<HTTPRoute>, KubeError>> + Send;
    /// HTTPRoutes in every namespace, for the orphan sweep (none without the Gateway API).
    fn http_routes_everywhere(
        &self,
    ) -> impl Future<Output = Result<Vec<HTTPRoute>, KubeError>> + Send;
    /// Server-side apply of an HTTPRoute canary-gate creates.
    fn apply_http_route(
        &self,
        route: &HTTPRoute,
    ) -> impl Future<Output = Result<(), KubeError>> + Send;
    /// Replaces `spec.rules` of a user's HTTPRoute and sets/removes annotations on it.
    fn patch_http_route(
        &self,
        ns: &str,
        name: &str,
        rules: &[HTTPRouteRule],
        annotations: BTreeMap<String, Option<String>>,
    ) -> impl Future<Output = Result<(), KubeError>> + Send;
    fn delete_http_route(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), KubeError>> + Send;
    /// A Kubernetes Event on the Deployment (`kubectl describe deploy` shows it). Best
    /// effort: the real client drops one rather than hold up rollout writes (`Limiter::admit_spare`).
    fn event(
        &self,
        d: &Deployment,
        kind: EventType,
        reason: &str,
        message: &str,
    ) -> impl Future<Output = Result<(), KubeError>> + Send;
}

/// What the Deployment watch keeps of a Deployment (the real cache and the in-memory one
/// alike), so that memory follows what canary-gate reads:
/// - no managedFields, no kubectl last-applied copy ([`slim`]);
/// - no status conditions (readiness is read from the replica counts);
/// - a pod spec only while the rollout is Pending: it is read only to build a twin, from a
///   rollout about to start. It is a third to a half of a slimmed Deployment; the template's
///   labels stay (they find the Service). A twin rebuilt later reads its stable from the API
///   server, and twins' own specs are never read.
pub fn as_cached(d: &mut Deployment) {
    slim(&mut d.metadata);
    if let Some(status) = d.status.as_mut() {
        status.conditions = None;
    }
    let twin = crate::rollout::twin::created_by_us(&d.metadata);
    let starting = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::annotations::PHASE))
        .is_none_or(|p| p == crate::rollout::state::Phase::Pending.as_str());
    if let (true, Some(spec)) = (twin || !starting, d.spec.as_mut()) {
        spec.template.spec = None;
    }
}

/// Drops what canary-gate never reads of an object it watches or lists: managedFields and
/// kubectl's last-applied copy. In a real cluster they are most of an object's bytes, and
/// managedFields parse into a JSON tree of several KiB per object; the lists of Services and
/// routes are held for a tick interval, the watch cache for good. Nothing is written back from
/// them (server-side apply refuses managedFields in its body anyway).
pub fn slim(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Sets and removes annotations the way a merge patch of `annotations` does (`None`
/// removes), for stores that keep objects in memory.
pub fn merge_annotations(meta: &mut ObjectMeta, annotations: &BTreeMap<String, Option<String>>) {
    let map = meta.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in annotations {
        match v {
            Some(v) => map.insert(k.clone(), v.clone()),
            None => map.remove(k),
        };
    }
}

/// Deletes are idempotent: gone already is fine.
pub fn ignore_not_found(r: Result<(), KubeError>) -> Result<(), KubeError> {
    match r {
        Err(KubeError::NotFound) => Ok(()),
        other => other,
    }
}
