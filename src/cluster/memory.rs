//! An in-memory cluster for tests and the demo: it stores objects, bumps resourceVersions,
//! enforces optimistic concurrency, marks Deployments rolled out and ready at once (there is
//! no kubelet), records Events, and can inject faults. It is the Kubernetes API faked at the
//! one thin boundary; everything above it is the code that ships.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::core::v1::Service;

use super::{merge_annotations, Cluster, KubeError};
use crate::annotations as ann;
use crate::gateway_api::{HTTPRoute, HTTPRouteRule};
use crate::istio::{HttpRoute, VirtualService};
use crate::rollout::machine::EventType;

type Key = (String, String);

#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub namespace: String,
    pub name: String,
    pub kind: EventType,
    pub reason: String,
    pub message: String,
}

#[derive(Default)]
struct Inner {
    /// Shared like a reflector's store: a list hands out pointers, not copies.
    deployments: BTreeMap<Key, Arc<Deployment>>,
    services: BTreeMap<Key, Service>,
    virtual_services: BTreeMap<Key, VirtualService>,
    http_routes: BTreeMap<Key, HTTPRoute>,
    events: Vec<RecordedEvent>,
    /// Every write, e.g. `apply deployment shop/podinfo-canary`, in order.
    log: Vec<String>,
    /// Faults to return: (call name prefix, error), consumed one per matching call.
    faults: Vec<(String, KubeError)>,
    /// Held writes: (call, target) waits for a permit of the semaphore (a slow API server).
    holds: Vec<(String, String, Arc<tokio::sync::Semaphore>)>,
    version: u64,
}

impl Inner {
    /// A stored Deployment to change in place (copied first if a list still shares it).
    fn deployment_mut(&mut self, ns: &str, name: &str) -> Result<&mut Deployment, KubeError> {
        self.deployments
            .get_mut(&key(ns, name))
            .map(Arc::make_mut)
            .ok_or(KubeError::NotFound)
    }
}

#[derive(Default)]
pub struct MemoryCluster {
    inner: Mutex<Inner>,
}

fn key(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

fn meta_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    key(
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

fn has_rollout_label(d: &Deployment) -> bool {
    d.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(ann::ROLLOUT_LABEL))
}

/// What a Deployment controller with instant pods would report.
fn settle(d: &mut Deployment) {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    let generation = d.metadata.generation.unwrap_or(1);
    let previous = d.status.clone().unwrap_or_default();
    d.status = Some(DeploymentStatus {
        replicas: Some(replicas),
        ready_replicas: Some(replicas),
        available_replicas: Some(replicas),
        // A paused Deployment keeps its old pods: nothing is updated to the new template.
        updated_replicas: Some(if paused {
            previous.updated_replicas.unwrap_or(0).min(replicas)
        } else {
            replicas
        }),
        observed_generation: Some(generation),
        ..Default::default()
    });
}

impl MemoryCluster {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(
        &self,
        call: &str,
        target: &str,
    ) -> Result<std::sync::MutexGuard<'_, Inner>, KubeError> {
        let mut inner = self.lock();
        take_fault(&mut inner, call, target)?;
        inner.version += 1;
        inner.log.push(format!("{call} {target}"));
        Ok(inner)
    }

    /// Holds every `patch deployment` of `ns/name` until the returned semaphore gets
    /// permits (one per call let through): an API server that is slow for one object.
    pub fn hold_patches(&self, ns: &str, name: &str) -> Arc<tokio::sync::Semaphore> {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        self.lock().holds.push((
            "patch deployment".into(),
            format!("{ns}/{name}"),
            gate.clone(),
        ));
        gate
    }

    async fn wait_if_held(&self, call: &str, target: &str) {
        let gate = self
            .lock()
            .holds
            .iter()
            .find(|(c, t, _)| c == call && t == target)
            .map(|(_, _, g)| g.clone());
        if let Some(gate) = gate {
            if let Ok(permit) = gate.acquire().await {
                permit.forget();
            }
        }
    }

    /// Makes the next call whose name starts with `call` fail with `error`.
    pub fn inject_fault(&self, call: &str, error: KubeError) {
        self.lock().faults.push((call.to_string(), error));
    }

    /// Stores a Deployment as a user's `kubectl apply` would (after admission).
    pub fn put_deployment(&self, mut d: Deployment) {
        let mut inner = self.lock();
        inner.version += 1;
        let k = meta_key(&d.metadata);
        let generation = inner
            .deployments
            .get(&k)
            .and_then(|o| o.metadata.generation)
            .unwrap_or(0)
            + 1;
        d.metadata.generation = Some(generation);
        d.metadata.resource_version = Some(inner.version.to_string());
        if d.metadata.uid.is_none() {
            d.metadata.uid = Some(format!("uid-{}-{}", k.0, k.1));
        }
        let previous = inner.deployments.get(&k).and_then(|o| o.status.clone());
        d.status = previous;
        settle(&mut d);
        inner
            .log
            .push(format!("user put deployment {}/{}", k.0, k.1));
        inner.deployments.insert(k, Arc::new(d));
    }

    pub fn put_service(&self, s: Service) {
        let mut inner = self.lock();
        inner.services.insert(meta_key(&s.metadata), s);
    }

    pub fn put_virtual_service(&self, vs: VirtualService) {
        let mut inner = self.lock();
        inner.virtual_services.insert(meta_key(&vs.metadata), vs);
    }

    /// Stores an HTTPRoute as a user (or, for its status, a Gateway API implementation) would.
    pub fn put_http_route(&self, route: HTTPRoute) {
        let mut inner = self.lock();
        inner.http_routes.insert(meta_key(&route.metadata), route);
    }

    pub fn http_route(&self, ns: &str, name: &str) -> Option<HTTPRoute> {
        self.lock().http_routes.get(&key(ns, name)).cloned()
    }

    pub fn all_http_routes(&self) -> Vec<HTTPRoute> {
        self.lock().http_routes.values().cloned().collect()
    }

    pub fn remove_deployment(&self, ns: &str, name: &str) {
        self.lock().deployments.remove(&key(ns, name));
    }

    pub fn deployment(&self, ns: &str, name: &str) -> Option<Deployment> {
        self.lock()
            .deployments
            .get(&key(ns, name))
            .map(|d| (**d).clone())
    }

    pub fn service(&self, ns: &str, name: &str) -> Option<Service> {
        self.lock().services.get(&key(ns, name)).cloned()
    }

    pub fn virtual_service(&self, ns: &str, name: &str) -> Option<VirtualService> {
        self.lock().virtual_services.get(&key(ns, name)).cloned()
    }

    pub fn all_virtual_services(&self) -> Vec<VirtualService> {
        self.lock().virtual_services.values().cloned().collect()
    }

    pub fn events(&self) -> Vec<RecordedEvent> {
        self.lock().events.clone()
    }

    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    pub fn object_names(&self) -> Vec<String> {
        let inner = self.lock();
        let mut out: Vec<String> = inner
            .deployments
            .keys()
            .map(|(n, m)| format!("deployment {n}/{m}"))
            .collect();
        out.extend(
            inner
                .services
                .keys()
                .map(|(n, m)| format!("service {n}/{m}")),
        );
        out.extend(
            inner
                .virtual_services
                .keys()
                .map(|(n, m)| format!("virtualservice {n}/{m}")),
        );
        out.extend(
            inner
                .http_routes
                .keys()
                .map(|(n, m)| format!("httproute {n}/{m}")),
        );
        out
    }
}

/// Fails the call if a fault was injected for it (logged, like every failed call).
fn take_fault(inner: &mut Inner, call: &str, target: &str) -> Result<(), KubeError> {
    if let Some(pos) = inner
        .faults
        .iter()
        .position(|(prefix, _)| call.starts_with(prefix.as_str()))
    {
        let (_, error) = inner.faults.remove(pos);
        inner.log.push(format!("{call} {target} -> {error}"));
        return Err(error);
    }
    Ok(())
}

impl Cluster for MemoryCluster {
    async fn deployments(&self) -> Result<Vec<Arc<Deployment>>, KubeError> {
        // What the real watch selects (only labelled Deployments) and keeps of them.
        Ok(self
            .lock()
            .deployments
            .values()
            .filter(|d| has_rollout_label(d))
            .map(|d| {
                let mut d = Deployment::clone(d);
                super::as_cached(&mut d);
                Arc::new(d)
            })
            .collect())
    }

    async fn unlabeled_rollouts(&self) -> Result<Vec<(String, String)>, KubeError> {
        Ok(self
            .lock()
            .deployments
            .iter()
            .filter(|(_, d)| {
                !has_rollout_label(d)
                    && d.metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key(ann::PHASE))
            })
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn label_rollout(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        let mut inner = self.write("label deployment", &format!("{ns}/{name}"))?;
        let version = inner.version.to_string();
        let d = inner.deployment_mut(ns, name)?;
        d.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(ann::ROLLOUT_LABEL.to_string(), "true".to_string());
        d.metadata.resource_version = Some(version);
        Ok(())
    }

    async fn get_deployment(&self, ns: &str, name: &str) -> Result<Deployment, KubeError> {
        take_fault(&mut self.lock(), "get deployment", &format!("{ns}/{name}"))?;
        self.deployment(ns, name).ok_or(KubeError::NotFound)
    }

    async fn apply_deployment(&self, d: &Deployment) -> Result<(), KubeError> {
        let k = meta_key(&d.metadata);
        // As the API server's validation does: a Deployment runs containers.
        let containers = d
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map_or(0, |p| p.containers.len());
        if containers == 0 {
            return Err(KubeError::Api(format!(
                "Deployment.apps \"{}\" is invalid: spec.template.spec.containers: Required value",
                k.1
            )));
        }
        let mut inner = self.write("apply deployment", &format!("{}/{}", k.0, k.1))?;
        let version = inner.version.to_string();
        let existing = inner.deployments.get(&k).cloned();
        let mut next = d.clone();
        let spec_changed = existing.as_ref().is_none_or(|e| e.spec != d.spec);
        next.metadata.generation = Some(
            existing
                .as_ref()
                .and_then(|e| e.metadata.generation)
                .unwrap_or(0)
                + i64::from(spec_changed),
        );
        next.metadata.uid = existing
            .as_ref()
            .and_then(|e| e.metadata.uid.clone())
            .or(Some(format!("uid-{}-{}", k.0, k.1)));
        next.metadata.resource_version = Some(version);
        settle(&mut next);
        inner.deployments.insert(k, Arc::new(next));
        Ok(())
    }

    async fn delete_deployment(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        let mut inner = self.write("delete deployment", &format!("{ns}/{name}"))?;
        inner
            .deployments
            .remove(&key(ns, name))
            .map(|_| ())
            .ok_or(KubeError::NotFound)
    }

    async fn patch_deployment(
        &self,
        ns: &str,
        name: &str,
        resource_version: &str,
        annotations: BTreeMap<String, Option<String>>,
        paused: Option<bool>,
    ) -> Result<(), KubeError> {
        let target = format!("{ns}/{name}");
        self.wait_if_held("patch deployment", &target).await;
        let mut inner = self.write("patch deployment", &target)?;
        let version = inner.version.to_string();
        let d = inner.deployment_mut(ns, name)?;
        if d.metadata.resource_version.as_deref() != Some(resource_version) {
            return Err(KubeError::Conflict);
        }
        merge_annotations(&mut d.metadata, &annotations);
        if let (Some(p), Some(spec)) = (paused, d.spec.as_mut()) {
            if spec.paused.unwrap_or(false) != p {
                spec.paused = Some(p);
                d.metadata.generation = Some(d.metadata.generation.unwrap_or(0) + 1);
            }
        }
        d.metadata.resource_version = Some(version);
        settle(d);
        Ok(())
    }

    async fn services(&self, ns: &str) -> Result<Vec<Service>, KubeError> {
        Ok(self
            .lock()
            .services
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|(_, s)| s.clone())
            .collect())
    }

    async fn apply_service(&self, s: &Service) -> Result<(), KubeError> {
        let k = meta_key(&s.metadata);
        let mut inner = self.write("apply service", &format!("{}/{}", k.0, k.1))?;
        inner.services.insert(k, s.clone());
        Ok(())
    }

    async fn delete_service(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        let mut inner = self.write("delete service", &format!("{ns}/{name}"))?;
        inner
            .services
            .remove(&key(ns, name))
            .map(|_| ())
            .ok_or(KubeError::NotFound)
    }

    async fn virtual_services(&self, ns: &str) -> Result<Vec<VirtualService>, KubeError> {
        Ok(self
            .lock()
            .virtual_services
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|(_, v)| v.clone())
            .collect())
    }

    async fn virtual_services_everywhere(&self) -> Result<Vec<VirtualService>, KubeError> {
        Ok(self.all_virtual_services())
    }

    async fn apply_virtual_service(&self, vs: &VirtualService) -> Result<(), KubeError> {
        let k = meta_key(&vs.metadata);
        let mut inner = self.write("apply virtualservice", &format!("{}/{}", k.0, k.1))?;
        inner.virtual_services.insert(k, vs.clone());
        Ok(())
    }

    async fn patch_virtual_service(
        &self,
        ns: &str,
        name: &str,
        http: &[HttpRoute],
        annotations: BTreeMap<String, Option<String>>,
    ) -> Result<(), KubeError> {
        let mut inner = self.write("patch virtualservice", &format!("{ns}/{name}"))?;
        let vs = inner
            .virtual_services
            .get_mut(&key(ns, name))
            .ok_or(KubeError::NotFound)?;
        vs.spec.http = http.to_vec();
        merge_annotations(&mut vs.metadata, &annotations);
        Ok(())
    }

    async fn delete_virtual_service(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        let mut inner = self.write("delete virtualservice", &format!("{ns}/{name}"))?;
        inner
            .virtual_services
            .remove(&key(ns, name))
            .map(|_| ())
            .ok_or(KubeError::NotFound)
    }

    async fn http_routes(&self, ns: &str) -> Result<Vec<HTTPRoute>, KubeError> {
        Ok(self
            .lock()
            .http_routes
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn http_routes_everywhere(&self) -> Result<Vec<HTTPRoute>, KubeError> {
        Ok(self.all_http_routes())
    }

    async fn apply_http_route(&self, route: &HTTPRoute) -> Result<(), KubeError> {
        let k = meta_key(&route.metadata);
        let mut inner = self.write("apply httproute", &format!("{}/{}", k.0, k.1))?;
        inner.http_routes.insert(k, route.clone());
        Ok(())
    }

    async fn patch_http_route(
        &self,
        ns: &str,
        name: &str,
        rules: &[HTTPRouteRule],
        annotations: BTreeMap<String, Option<String>>,
    ) -> Result<(), KubeError> {
        let mut inner = self.write("patch httproute", &format!("{ns}/{name}"))?;
        let route = inner
            .http_routes
            .get_mut(&key(ns, name))
            .ok_or(KubeError::NotFound)?;
        if route.spec.rules != rules {
            route.metadata.generation = Some(route.metadata.generation.unwrap_or(1) + 1);
        }
        route.spec.rules = rules.to_vec();
        merge_annotations(&mut route.metadata, &annotations);
        Ok(())
    }

    async fn delete_http_route(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        let mut inner = self.write("delete httproute", &format!("{ns}/{name}"))?;
        inner
            .http_routes
            .remove(&key(ns, name))
            .map(|_| ())
            .ok_or(KubeError::NotFound)
    }

    async fn event(
        &self,
        d: &Deployment,
        kind: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), KubeError> {
        let k = meta_key(&d.metadata);
        let mut inner = self.lock();
        inner.events.push(RecordedEvent {
            namespace: k.0,
            name: k.1,
            kind,
            reason: reason.to_string(),
            message: message.to_string(),
        });
        Ok(())
    }
}
