//! Reconciling the cluster to a rollout's state: twin, canary Service and routes while a
//! rollout is active; none of them, and the user's routes restored, once it has ended.

use std::collections::BTreeMap;

use super::Item;
use crate::annotations as ann;
use crate::cluster::{ignore_not_found, Cluster, KubeError};
use crate::rollout::routes::{
    created_name, created_virtual_service, hosts_service, is_created_by_us, original_http,
    routes_to, split_http, unsplit_http,
};
use crate::rollout::state::{Phase, RolloutState};
use crate::rollout::twin::{build_canary_service, build_twin, find_service, twin_name};

/// Why this rollout cannot run (reported by the machine as a rollback reason).
pub(super) async fn setup_error<C: Cluster>(cluster: &C, item: &Item) -> Option<String> {
    match cluster.services(&item.namespace).await {
        Ok(services) => find_service(
            &item.deployment,
            &services,
            item.settings.service.as_deref(),
        )
        .err(),
        Err(_) => None, // transient: try again next tick
    }
}

/// Returns whether anything had to be written: if not, the cluster already ran the state.
pub(super) async fn reconcile<C: Cluster>(
    cluster: &C,
    item: &Item,
    state: &RolloutState,
) -> Result<bool, KubeError> {
    let ns = &item.namespace;
    let services = cluster.services(ns).await?;
    let service = find_service(
        &item.deployment,
        &services,
        item.settings.service.as_deref(),
    )
    .ok()
    .cloned();
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
                if let Some(mut twin) =
                    build_twin(&item.deployment, &service, item.settings.max_weight)
                {
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
            let canary_svc_present = services
                .iter()
                .any(|s| s.metadata.name.as_deref() == Some(twin_name(&svc).as_str()));
            if !canary_svc_present {
                if let Some(canary_svc) = build_canary_service(&item.deployment, &service) {
                    cluster.apply_service(&canary_svc).await?;
                    wrote = true;
                }
            }
            Ok(set_routes(cluster, ns, &svc, &item.name, state.weight).await? || wrote)
        }
        Phase::Succeeded | Phase::Failed | Phase::Cancelled => {
            cleanup(cluster, ns, &item.name).await.map(|()| true)
        }
    }
}

async fn set_routes<C: Cluster>(
    cluster: &C,
    ns: &str,
    svc: &str,
    owner: &str,
    weight: u32,
) -> Result<bool, KubeError> {
    let all = cluster.virtual_services(ns).await?;
    let mut mesh_covered = false;
    let mut wrote = false;
    for vs in all.iter().filter(|vs| {
        !is_created_by_us(vs) && (routes_to(vs, svc, ns) || original_http(vs).is_some())
    }) {
        let name = vs.metadata.name.clone().unwrap_or_default();
        let owned_by_other = vs
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ann::OWNER))
            .is_some_and(|o| o != owner);
        if owned_by_other {
            // Another rollout splits this route now: never add a second VirtualService for the
            // same host (Istio would pick one of the two arbitrarily).
            mesh_covered |= hosts_service(vs, svc, ns);
            continue;
        }
        mesh_covered |= hosts_service(vs, svc, ns);
        let original = original_http(vs).unwrap_or_else(|| vs.spec.http.clone());
        let desired = split_http(&original, svc, ns, weight);
        if desired != vs.spec.http || original_http(vs).is_none() {
            let raw =
                serde_json::to_string(&original).map_err(|e| KubeError::Api(e.to_string()))?;
            let annotations = BTreeMap::from([
                (ann::ORIGINAL_ROUTES.to_string(), Some(raw)),
                (ann::OWNER.to_string(), Some(owner.to_string())),
            ]);
            cluster
                .patch_virtual_service(ns, &name, &desired, annotations)
                .await?;
            wrote = true;
        }
    }
    if !mesh_covered {
        let desired = created_virtual_service(ns, svc, owner, weight);
        let current = all
            .iter()
            .find(|v| v.metadata.name.as_deref() == Some(created_name(svc).as_str()));
        if current.map(|c| &c.spec) != Some(&desired.spec) {
            cluster.apply_virtual_service(&desired).await?;
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
    ns: &str,
    owner: &str,
) -> Result<(), KubeError> {
    for vs in cluster.virtual_services(ns).await? {
        if owner_of(vs.metadata.annotations.as_ref()) != Some(owner) {
            continue;
        }
        let name = vs.metadata.name.clone().unwrap_or_default();
        if is_created_by_us(&vs) {
            ignore_not_found(cluster.delete_virtual_service(ns, &name).await)?;
        } else {
            // The saved original normally; if someone mangled it, take the split back out so
            // no traffic goes to a canary host that is about to disappear.
            let original = original_http(&vs).unwrap_or_else(|| unsplit_http(&vs.spec.http));
            let annotations = BTreeMap::from([
                (ann::ORIGINAL_ROUTES.to_string(), None),
                (ann::OWNER.to_string(), None),
            ]);
            cluster
                .patch_virtual_service(ns, &name, &original, annotations)
                .await?;
        }
    }
    ignore_not_found(cluster.delete_deployment(ns, &twin_name(owner)).await)?;
    for svc in cluster.services(ns).await? {
        let managed = svc
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(ann::MANAGED_LABEL));
        if managed && owner_of(svc.metadata.annotations.as_ref()) == Some(owner) {
            let name = svc.metadata.name.clone().unwrap_or_default();
            ignore_not_found(cluster.delete_service(ns, &name).await)?;
        }
    }
    Ok(())
}

fn owner_of(annotations: Option<&BTreeMap<String, String>>) -> Option<&str> {
    annotations
        .and_then(|a| a.get(ann::OWNER))
        .map(String::as_str)
}
