//! Reconciling the cluster to a rollout's state: twin, canary Service and routes while a
//! rollout is active; none of them, and the user's routes restored, once it has ended.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::lists::{put, remove, Listed, Lists, Memo};
use super::Item;
use crate::annotations as ann;
use crate::cluster::{ignore_not_found, merge_annotations, Cluster, KubeError};
use crate::gateway_api::{HTTPRoute, HTTPRouteRule};
use crate::istio::{HttpRoute, VirtualService};
use crate::rollout::routes::gateway::Gateway;
use crate::rollout::routes::istio::Istio;
use crate::rollout::routes::{owner_of, plan, RouteKind, Router};
use crate::rollout::state::{Phase, RolloutState};
use crate::rollout::twin::{build_canary_service, build_twin, find_service, twin_name};

/// Why this rollout cannot run (reported by the machine as a rollback reason): no Service,
/// or a route implementation that reports the canary backend unresolvable
/// (`ResolvedRefs=False` on an HTTPRoute split for this rollout).
pub(super) async fn setup_error<C: Cluster>(
    cluster: &C,
    lists: &Lists,
    item: &Item,
) -> Option<String> {
    let service = match lists.services(cluster, &item.namespace).await {
        Ok(services) => match find_service(
            &item.deployment,
            &services,
            item.settings.service.as_deref(),
        ) {
            Ok(s) => s.metadata.name.clone().unwrap_or_default(),
            Err(e) => return Some(e),
        },
        Err(_) => return None, // transient: try again next tick
    };
    if item.settings.router == Router::Istio {
        return None;
    }
    let routes = routes::<Gateway, C>(cluster, lists, &item.namespace)
        .await
        .ok()?;
    routes
        .iter()
        .map(|r| &**r)
        .filter(|r| Gateway::owner(r) == Some(item.name.as_str()))
        .find_map(|r| Gateway::unresolved(r, &service))
}

/// The stable Deployment with its pod template: the cached one while it has it (the watch
/// cache keeps pod specs of rollouts that have not started), else read from the API server.
/// A twin runs the template this state is about: if the Deployment read now holds another
/// canary revision (applied since the cache was read), that is a conflict, and the newer
/// state comes with the next tick.
async fn stable_with_template<C: Cluster>(
    cluster: &C,
    item: &Item,
    state: &RolloutState,
) -> Result<Arc<Deployment>, KubeError> {
    if item
        .deployment
        .spec
        .as_ref()
        .is_some_and(|s| s.template.spec.is_some())
    {
        return Ok(item.deployment.clone());
    }
    let stable = cluster.get_deployment(&item.namespace, &item.name).await?;
    if !holds_revision(&stable.metadata, &state.canary_revision) {
        return Err(KubeError::Conflict);
    }
    Ok(Arc::new(stable))
}

/// Does the Deployment record `revision` as its canary? A stable has it from the webhook,
/// written with the template in the same admission; a twin is stamped with the one it runs.
pub(super) fn holds_revision(meta: &ObjectMeta, revision: &str) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(ann::CANARY_REVISION))
        .is_some_and(|r| r == revision)
}

/// Returns whether anything had to be written: if not, the cluster already ran the state.
pub(super) async fn reconcile<C: Cluster>(
    cluster: &C,
    lists: &Lists,
    item: &Item,
    state: &RolloutState,
) -> Result<bool, KubeError> {
    let ns = &item.namespace;
    // What this rollout needs from the namespace's list, taken before any write: a list
    // held across writes is a generation of all the namespace's Services kept alive.
    let (service, canary_svc_present) = {
        let services = lists.services(cluster, ns).await?;
        let service = find_service(
            &item.deployment,
            &services,
            item.settings.service.as_deref(),
        )
        .ok()
        .cloned();
        let canary = service
            .as_ref()
            .and_then(|s| s.metadata.name.as_deref())
            .map(twin_name);
        let present = services
            .iter()
            .any(|s| canary.is_some() && s.metadata.name == canary);
        (service, present)
    };
    match state.phase {
        Phase::Pending => Ok(false),
        Phase::Progressing | Phase::Paused | Phase::Promoting => {
            let Some(service) = service else {
                return Ok(false);
            };
            let svc = service.metadata.name.clone().unwrap_or_default();
            let mut wrote = false;
            // Twin and its Service first, so routes never point at nothing.
            if !item.twin_present {
                let stable = stable_with_template(cluster, item, state).await?;
                if let Some(mut twin) = build_twin(&stable, &service, item.settings.max_weight) {
                    // Stamped with the revision it runs, so a newer template is noticed.
                    twin.metadata
                        .annotations
                        .get_or_insert_with(Default::default)
                        .insert(
                            ann::CANARY_REVISION.to_string(),
                            state.canary_revision.clone(),
                        );
                    cluster.apply_deployment(&twin).await?;
                    wrote = true;
                }
            }
            if !canary_svc_present {
                if let Some(canary_svc) = build_canary_service(&item.deployment, &service) {
                    cluster.apply_service(&canary_svc).await?;
                    let name = twin_name(&svc);
                    lists
                        .services
                        .update(ns, |items| put(items, &name, canary_svc, service_name))
                        .await;
                    wrote = true;
                }
            }
            let router = item.settings.router;
            Ok(set_routes(
                cluster,
                lists,
                ns,
                &service,
                &item.name,
                router,
                state.weight,
            )
            .await?
                || wrote)
        }
        Phase::Succeeded | Phase::Failed | Phase::Cancelled => {
            cleanup(cluster, lists, ns, &item.name).await.map(|()| true)
        }
    }
}

fn service_name(s: &Service) -> Option<&str> {
    s.metadata.name.as_deref()
}

/// Route I/O per kind: the [`RouteKind`] (pure) plus the four cluster calls it needs and the
/// tick's list of the kind, so adoption, creation and restoration below are written once for
/// every router kind.
trait RouteStore: RouteKind {
    /// This tick's lists of the kind.
    fn memo(lists: &Lists) -> &Memo<Self::Route>;
    /// What a merge patch of `rules` and `annotations` makes of a route (for the tick's list).
    fn edited(
        route: &Self::Route,
        rules: &[Self::Rule],
        annotations: &BTreeMap<String, Option<String>>,
    ) -> Self::Route;
    fn list<'a, C: Cluster>(
        c: &'a C,
        ns: &'a str,
    ) -> impl Future<Output = Result<Vec<Self::Route>, KubeError>> + Send + 'a;
    fn patch<'a, C: Cluster>(
        c: &'a C,
        ns: &'a str,
        name: &'a str,
        rules: &'a [Self::Rule],
        annotations: BTreeMap<String, Option<String>>,
    ) -> impl Future<Output = Result<(), KubeError>> + Send + 'a;
    fn apply<'a, C: Cluster>(
        c: &'a C,
        route: &'a Self::Route,
    ) -> impl Future<Output = Result<(), KubeError>> + Send + 'a;
    fn delete<'a, C: Cluster>(
        c: &'a C,
        ns: &'a str,
        name: &'a str,
    ) -> impl Future<Output = Result<(), KubeError>> + Send + 'a;
}

impl RouteStore for Istio {
    fn memo(lists: &Lists) -> &Memo<VirtualService> {
        &lists.istio
    }
    fn edited(
        route: &VirtualService,
        rules: &[HttpRoute],
        annotations: &BTreeMap<String, Option<String>>,
    ) -> VirtualService {
        let mut route = route.clone();
        route.spec.http = rules.to_vec();
        merge_annotations(&mut route.metadata, annotations);
        route
    }
    fn list<'a, C: Cluster>(
        c: &'a C,
        ns: &'a str,
    ) -> impl Future<Output = Result<Vec<VirtualService>, KubeError>> + Send + 'a {
        c.virtual_services(ns)
    }
    fn patch<'a, C: Cluster>(
        c: &'a C,
        ns: &'a str,
        name: &'a str,
        rules: &'a [HttpRoute],
        annotations: BTreeMap<String, Option<String>>,
    ) -> impl Future<Output = Result<(), KubeError>> + Send + 'a {
        c.patch_virtual_service(ns, name, rules, annotations)
    }
    fn apply<'a, C: Cluster>(
        c: &'a C,
        route: &'a VirtualService,
    ) -> impl Future<Output = Result<(), KubeError>> + Send + 'a {
        c.apply_virtual_service(route)
    }
    fn delete<'a, C: Cluster>(
        c: &'a C,
        ns: &'a str,
        name: &'a str,
    ) -> impl Future<Output = Result<(), KubeError>> + Send + 'a {
        c.delete_virtual_service(ns, name)
    }
}

impl RouteStore for Gateway {
    fn memo(lists: &Lists) -> &Memo<HTTPRoute> {
        &lists.gateway
    }
    fn edited(
        route: &HTTPRoute,
        rules: &[HTTPRouteRule],
        annotations: &BTreeMap<String, Option<String>>,
    ) -> HTTPRoute {
        let mut route = route.clone();
        route.spec.rules = rules.to_vec();
        merge_annotations(&mut route.metadata, annotations);
        route
    }
    fn list<'a, C: Cluster>(
        c: &'a C,
        ns: &'a str,
    ) -> impl Future<Output = Result<Vec<HTTPRoute>, KubeError>> + Send + 'a {
        c.http_routes(ns)
    }
    fn patch<'a, C: Cluster>(
        c: &'a C,
        ns: &'a str,
        name: &'a str,
        rules: &'a [HTTPRouteRule],
        annotations: BTreeMap<String, Option<String>>,
    ) -> impl Future<Output = Result<(), KubeError>> + Send + 'a {
        c.patch_http_route(ns, name, rules, annotations)
    }
    fn apply<'a, C: Cluster>(
        c: &'a C,
        route: &'a HTTPRoute,
    ) -> impl Future<Output = Result<(), KubeError>> + Send + 'a {
        c.apply_http_route(route)
    }
    fn delete<'a, C: Cluster>(
        c: &'a C,
        ns: &'a str,
        name: &'a str,
    ) -> impl Future<Output = Result<(), KubeError>> + Send + 'a {
        c.delete_http_route(ns, name)
    }
}

/// The namespace's routes of kind `K`, from the tick's list.
async fn routes<K: RouteStore, C: Cluster>(
    cluster: &C,
    lists: &Lists,
    ns: &str,
) -> Result<Listed<K::Route>, KubeError> {
    K::memo(lists).get(ns, || K::list(cluster, ns)).await
}

/// Writes a merge patch of a route and keeps the tick's list in line with it.
async fn patch_route<K: RouteStore, C: Cluster>(
    cluster: &C,
    lists: &Lists,
    ns: &str,
    route: &K::Route,
    rules: &[K::Rule],
    annotations: BTreeMap<String, Option<String>>,
) -> Result<(), KubeError> {
    let name = K::name(route);
    let edited = K::edited(route, rules, &annotations);
    K::patch(cluster, ns, &name, rules, annotations).await?;
    K::memo(lists)
        .update(ns, |items| {
            put(items, &name, edited, |r| K::meta(r).name.as_deref())
        })
        .await;
    Ok(())
}

/// Routes the Service's traffic at `weight` through the router kinds the settings and the
/// cluster call for ([`plan`]). A canary backend the route's implementation cannot resolve
/// gets no traffic and is reported as an error (retried next tick).
async fn set_routes<C: Cluster>(
    cluster: &C,
    lists: &Lists,
    ns: &str,
    service: &Service,
    owner: &str,
    router: Router,
    weight: u32,
) -> Result<bool, KubeError> {
    let svc = service.metadata.name.clone().unwrap_or_default();
    let port = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p.first())
        .map(|p| p.port);
    let http_routes = match router {
        Router::Istio => Arc::default(),
        Router::Auto | Router::GatewayApi => routes::<Gateway, C>(cluster, lists, ns).await?,
    };
    let gateway_routed = http_routes
        .iter()
        .any(|r| Gateway::routes_to(r, &svc, ns) || Gateway::owner(r) == Some(owner));
    let plan = plan(router, gateway_routed);
    let mut wrote = false;
    let mut blocked = Vec::new();
    let target = Target {
        ns,
        svc: &svc,
        port,
        owner,
        weight,
    };
    if let Some(create) = plan.gateway {
        wrote |= set_kind::<Gateway, C>(cluster, lists, http_routes, &target, create, &mut blocked)
            .await?;
    } else {
        drop(http_routes);
    }
    if let Some(create) = plan.istio {
        let all = routes::<Istio, C>(cluster, lists, ns).await?;
        wrote |= set_kind::<Istio, C>(cluster, lists, all, &target, create, &mut blocked).await?;
    }
    if !blocked.is_empty() {
        return Err(KubeError::Api(blocked.join("; ")));
    }
    Ok(wrote)
}

struct Target<'a> {
    ns: &'a str,
    svc: &'a str,
    port: Option<i32>,
    owner: &'a str,
    weight: u32,
}

/// One router kind: adopt and split the user's routes of the Service, create one when none
/// covers the Service itself (if `create`).
async fn set_kind<K: RouteStore, C: Cluster>(
    cluster: &C,
    lists: &Lists,
    all: Listed<K::Route>,
    t: &Target<'_>,
    create: bool,
    blocked: &mut Vec<String>,
) -> Result<bool, KubeError> {
    let (ns, svc, owner) = (t.ns, t.svc, t.owner);
    // The routes this rollout works on, taken before any write (the whole list is let go).
    let mine: Vec<Arc<K::Route>> = all
        .iter()
        .filter(|r| {
            !K::is_created_by_us(r) && (K::routes_to(r, svc, ns) || K::original(r).is_some())
        })
        .cloned()
        .collect();
    let current: Option<Arc<K::Route>> = all
        .iter()
        .find(|r| K::meta(r).name.as_deref() == Some(K::created_name(svc).as_str()))
        .cloned();
    drop(all);
    let mut covered = false;
    let mut wrote = false;
    // Never send traffic to a canary backend the implementation reports unresolved.
    let mut weight_for = |route: &K::Route| match K::unresolved(route, svc) {
        Some(why) => {
            blocked.push(why);
            0
        }
        None => t.weight,
    };
    for route in mine.iter().map(|r| &**r) {
        covered |= K::covers(route, svc, ns);
        if K::owner(route).is_some_and(|o| o != owner) {
            // Another rollout splits this route now: never add a second route for the same
            // Service (the implementation would pick one of the two arbitrarily).
            continue;
        }
        let saved = K::original(route);
        let original = saved.clone().unwrap_or_else(|| K::rules(route).to_vec());
        let desired = K::split(&original, svc, ns, weight_for(route));
        if desired.as_slice() != K::rules(route) || saved.is_none() {
            let raw =
                serde_json::to_string(&original).map_err(|e| KubeError::Api(e.to_string()))?;
            let annotations = BTreeMap::from([
                (K::ORIGINAL.to_string(), Some(raw)),
                (ann::OWNER.to_string(), Some(owner.to_string())),
            ]);
            patch_route::<K, C>(cluster, lists, ns, route, &desired, annotations).await?;
            wrote = true;
        }
    }
    if create && !covered {
        let current = current.as_deref();
        let weight = current.map_or(t.weight, &mut weight_for);
        let desired = K::created(ns, svc, t.port, owner, weight);
        if current.map(K::rules) != Some(K::rules(&desired)) {
            K::apply(cluster, &desired).await?;
            let name = K::name(&desired);
            K::memo(lists)
                .update(ns, |items| {
                    put(items, &name, desired, |r| K::meta(r).name.as_deref())
                })
                .await;
            wrote = true;
        }
    }
    Ok(wrote)
}

/// Everything canary-gate made or changed for the rollout of `owner`, undone: traffic back
/// first (adopted routes restored verbatim, created routes deleted), then the twin and the
/// canary Service. Idempotent; also used when the stable Deployment itself was deleted.
pub(super) async fn cleanup<C: Cluster>(
    cluster: &C,
    lists: &Lists,
    ns: &str,
    owner: &str,
) -> Result<(), KubeError> {
    restore::<Gateway, C>(cluster, lists, ns, owner).await?;
    restore::<Istio, C>(cluster, lists, ns, owner).await?;
    ignore_not_found(cluster.delete_deployment(ns, &twin_name(owner)).await)?;
    let canary_services: Vec<String> = lists
        .services(cluster, ns)
        .await?
        .iter()
        .filter(|svc| {
            let managed = svc
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(ann::MANAGED_LABEL));
            managed && owner_of(svc.metadata.annotations.as_ref()) == Some(owner)
        })
        .map(|svc| svc.metadata.name.clone().unwrap_or_default())
        .collect();
    for name in canary_services {
        ignore_not_found(cluster.delete_service(ns, &name).await)?;
        lists
            .services
            .update(ns, |items| remove(items, &name, service_name))
            .await;
    }
    Ok(())
}

/// The routes of one kind given back: created ones deleted, adopted ones restored.
async fn restore<K: RouteStore, C: Cluster>(
    cluster: &C,
    lists: &Lists,
    ns: &str,
    owner: &str,
) -> Result<(), KubeError> {
    let owned: Vec<Arc<K::Route>> = routes::<K, C>(cluster, lists, ns)
        .await?
        .iter()
        .filter(|r| K::owner(r) == Some(owner))
        .cloned()
        .collect();
    for route in owned {
        let name = K::name(&route);
        if K::is_created_by_us(&route) {
            ignore_not_found(K::delete(cluster, ns, &name).await)?;
            K::memo(lists)
                .update(ns, |items| {
                    remove(items, &name, |r| K::meta(r).name.as_deref())
                })
                .await;
        } else {
            // The saved original normally; if someone mangled it, take the split back out so
            // no traffic goes to a canary backend that is about to disappear.
            let original = K::original(&route).unwrap_or_else(|| K::unsplit(K::rules(&route)));
            let annotations = BTreeMap::from([
                (K::ORIGINAL.to_string(), None),
                (ann::OWNER.to_string(), None),
            ]);
            patch_route::<K, C>(cluster, lists, ns, &route, &original, annotations).await?;
        }
    }
    Ok(())
}

/// The rollout named in an object's `canary-gate.io/owner` annotation, as (namespace, owner):
/// for the orphan sweep over routes of any kind.
pub(super) fn route_owner(meta: &ObjectMeta) -> Option<(String, String)> {
    owner_of(meta.annotations.as_ref())
        .map(|o| (meta.namespace.clone().unwrap_or_default(), o.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_twin_is_built_only_from_the_revision_its_state_is_about() {
        let meta = |rev: Option<&str>| ObjectMeta {
            annotations: rev.map(|r| BTreeMap::from([(ann::CANARY_REVISION.into(), r.into())])),
            ..Default::default()
        };
        assert!(holds_revision(&meta(Some("6f0012d2f9")), "6f0012d2f9"));
        // Applied again since the cache was read: the newer state comes with the next tick.
        assert!(!holds_revision(&meta(Some("aaaaaaaaaa")), "6f0012d2f9"));
        assert!(!holds_revision(&meta(None), "6f0012d2f9"));
    }
}
