//! The canary twin `<name>-canary` and the `<service>-canary` Service, built from the stable
//! Deployment and its Service. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

use crate::annotations as ann;

pub const SUFFIX: &str = "-canary";

pub fn twin_name(stable: &str) -> String {
    format!("{stable}{SUFFIX}")
}

/// Label keys whose values are rewritten on twin pods: the Deployment's selector and the
/// Service's selector, so neither the stable ReplicaSet nor the stable Service ever picks a
/// twin pod.
fn rewritten_keys(stable: &Deployment, service: &Service) -> Vec<String> {
    let mut keys: Vec<String> = stable
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default()
        .into_keys()
        .collect();
    keys.extend(
        service
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default()
            .into_keys(),
    );
    keys.sort();
    keys.dedup();
    keys
}

fn rewrite(labels: &BTreeMap<String, String>, keys: &[String]) -> BTreeMap<String, String> {
    let mut out = labels.clone();
    for k in keys {
        if let Some(v) = out.get_mut(k) {
            *v = canary_value(v);
        }
    }
    out
}

/// Label values are at most 63 characters.
fn canary_value(v: &str) -> String {
    let mut s = format!("{v}{SUFFIX}");
    if s.len() > 63 {
        s = format!("{}{SUFFIX}", &v[..63 - SUFFIX.len()])
            .trim_end_matches(['-', '_', '.'])
            .to_string();
    }
    s
}

fn owner_ref(stable: &Deployment) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: stable.metadata.name.clone()?,
        uid: stable.metadata.uid.clone()?,
        controller: Some(false),
        block_owner_deletion: Some(true),
    })
}

/// Whether canary-gate created the object: the label `managed_meta` writes.
pub fn created_by_us(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .is_some_and(|l| l.get(ann::MANAGED_LABEL).is_some_and(|v| v == "true"))
}

/// Metadata of every object canary-gate creates: the managed label (the validating webhook
/// guards on it) and the owning stable Deployment.
pub(crate) fn managed_meta(
    name: String,
    namespace: Option<String>,
    owner: &str,
    owner_ref: Option<OwnerReference>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace,
        labels: Some(BTreeMap::from([
            (ann::MANAGED_LABEL.to_string(), "true".to_string()),
            (
                "app.kubernetes.io/managed-by".to_string(),
                "canary-gate".to_string(),
            ),
        ])),
        annotations: Some(BTreeMap::from([(
            ann::OWNER.to_string(),
            owner.to_string(),
        )])),
        owner_references: owner_ref.map(|o| vec![o]),
        ..Default::default()
    }
}

/// Replicas for the twin: enough for the largest share it will take (max weight), at least 1.
pub fn twin_replicas(stable_replicas: i32, max_weight: u32) -> i32 {
    let share = (stable_replicas.max(1) as i64 * max_weight as i64 + 99) / 100;
    share.clamp(1, stable_replicas.max(1) as i64) as i32
}

pub fn build_twin(stable: &Deployment, service: &Service, max_weight: u32) -> Option<Deployment> {
    let name = stable.metadata.name.clone()?;
    let spec = stable.spec.as_ref()?;
    let keys = rewritten_keys(stable, service);
    let mut template = spec.template.clone();
    let mut meta = template.metadata.take().unwrap_or_default();
    let mut labels = rewrite(&meta.labels.unwrap_or_default(), &keys);
    labels.insert(ann::TWIN_LABEL.to_string(), "true".to_string());
    meta.labels = Some(labels);
    template.metadata = Some(meta);
    let selector = LabelSelector {
        match_labels: Some(rewrite(
            &spec.selector.match_labels.clone().unwrap_or_default(),
            &keys,
        )),
        // Expressions on a rewritten key must select the rewritten value, or the apiserver
        // rejects a selector that does not match the template.
        match_expressions: spec.selector.match_expressions.clone().map(|exprs| {
            exprs
                .into_iter()
                .map(|mut e| {
                    if keys.contains(&e.key) {
                        e.values = e
                            .values
                            .map(|vs| vs.iter().map(|v| canary_value(v)).collect());
                    }
                    e
                })
                .collect()
        }),
    };
    let mut metadata = managed_meta(
        twin_name(&name),
        stable.metadata.namespace.clone(),
        &name,
        owner_ref(stable),
    );
    // The analyzer's Deployment watch selects on this label.
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(ann::ROLLOUT_LABEL.to_string(), "true".to_string());
    Some(Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(twin_replicas(spec.replicas.unwrap_or(1), max_weight)),
            selector,
            template,
            progress_deadline_seconds: spec.progress_deadline_seconds,
            min_ready_seconds: spec.min_ready_seconds,
            strategy: spec.strategy.clone(),
            paused: None,
            revision_history_limit: Some(1),
        }),
        status: None,
    })
}

pub fn build_canary_service(stable: &Deployment, service: &Service) -> Option<Service> {
    let owner = stable.metadata.name.clone()?;
    let name = service.metadata.name.clone()?;
    let spec = service.spec.as_ref()?;
    let keys = rewritten_keys(stable, service);
    Some(Service {
        metadata: managed_meta(
            twin_name(&name),
            service.metadata.namespace.clone(),
            &owner,
            owner_ref(stable),
        ),
        spec: Some(ServiceSpec {
            selector: Some(rewrite(&spec.selector.clone().unwrap_or_default(), &keys)),
            ports: spec.ports.as_ref().map(|ports| {
                ports
                    .iter()
                    .map(|p| ServicePort {
                        name: p.name.clone(),
                        port: p.port,
                        target_port: p.target_port.clone(),
                        protocol: p.protocol.clone(),
                        app_protocol: p.app_protocol.clone(),
                        node_port: None,
                    })
                    .collect()
            }),
            type_: Some("ClusterIP".into()),
            ..Default::default()
        }),
        status: None,
    })
}

/// Does the Service select the Deployment's pods?
pub fn selects(service: &Service, stable: &Deployment) -> bool {
    let Some(selector) = service
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
    else {
        return false;
    };
    let labels = stable
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The Service fronting the Deployment: the one named by annotation, else the only one that
/// selects its pods (canary Services excluded). Err explains what to do.
pub fn find_service<'a, S: std::borrow::Borrow<Service>>(
    stable: &Deployment,
    services: &'a [S],
    named: Option<&str>,
) -> Result<&'a Service, String> {
    let mut services = services.iter().map(|s| s.borrow());
    let deployment = stable.metadata.name.clone().unwrap_or_default();
    if let Some(name) = named {
        return services
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .ok_or_else(|| format!("Service {name} named by {} does not exist", ann::SERVICE));
    }
    let candidates: Vec<&Service> = services
        .filter(|s| {
            !s.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(ann::MANAGED_LABEL))
        })
        .filter(|s| selects(s, stable))
        .collect();
    match candidates.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!(
            "no Service selects the pods of {deployment}; create one or set {}",
            ann::SERVICE
        )),
        many => Err(format!(
            "{} Services select the pods of {deployment} ({}); choose one with {}",
            many.len(),
            many.iter()
                .filter_map(|s| s.metadata.name.clone())
                .collect::<Vec<_>>()
                .join(", "),
            ann::SERVICE
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stable() -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "podinfo", "namespace": "shop", "uid": "u-1"},
            "spec": {
                "replicas": 4,
                "selector": {"matchLabels": {"app": "podinfo"}},
                "template": {"metadata": {"labels": {"app": "podinfo", "tier": "web"}},
                             "spec": {"containers": [{"name": "app", "image": "podinfo:6.0.1"}]}}
            }
        }))
        .expect("deployment")
    }

    fn service() -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "podinfo", "namespace": "shop"},
            "spec": {"selector": {"app": "podinfo", "tier": "web"}, "ports": [{"name": "http", "port": 9898, "targetPort": "http"}]}
        }))
        .expect("service")
    }

    #[test]
    fn twin_pods_are_never_selected_by_the_stable_service_or_replicaset() {
        let twin = build_twin(&stable(), &service(), 50).expect("twin");
        assert_eq!(twin.metadata.name.as_deref(), Some("podinfo-canary"));
        let spec = twin.spec.as_ref().expect("spec");
        let labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .expect("labels");
        assert_eq!(labels["app"], "podinfo-canary");
        assert_eq!(labels["tier"], "web-canary");
        assert_eq!(labels[ann::TWIN_LABEL], "true");
        assert_eq!(
            spec.selector.match_labels.as_ref().expect("ml")["app"],
            "podinfo-canary"
        );
        let twin_as_stable = Deployment {
            spec: Some(spec.clone()),
            ..stable()
        };
        assert!(!selects(&service(), &twin_as_stable));
        assert_eq!(spec.replicas, Some(2));
        let owner = &twin.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.name.as_str(), owner.uid.as_str()),
            ("podinfo", "u-1")
        );
        assert_eq!(
            twin.metadata.labels.as_ref().expect("l")[ann::MANAGED_LABEL],
            "true"
        );
        // Seen by the analyzer's label-selected watch.
        assert_eq!(
            twin.metadata.labels.as_ref().expect("l")[ann::ROLLOUT_LABEL],
            "true"
        );
    }

    #[test]
    fn canary_service_selects_exactly_the_twin() {
        let twin = build_twin(&stable(), &service(), 50).expect("twin");
        let svc = build_canary_service(&stable(), &service()).expect("svc");
        assert_eq!(svc.metadata.name.as_deref(), Some("podinfo-canary"));
        let twin_as_deployment = Deployment {
            spec: twin.spec.clone(),
            ..stable()
        };
        assert!(selects(&svc, &twin_as_deployment));
        assert!(!selects(&svc, &stable()));
        assert_eq!(
            svc.spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .expect("ports")[0]
                .port,
            9898
        );
    }

    #[test]
    fn selector_expressions_follow_the_rewritten_labels() {
        let mut d = stable();
        let spec = d.spec.as_mut().expect("spec");
        spec.selector.match_labels = None;
        spec.selector.match_expressions = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                key: "app".into(),
                operator: "In".into(),
                values: Some(vec!["podinfo".into()]),
            },
        ]);
        let twin = build_twin(&d, &service(), 50).expect("twin");
        let expr = &twin
            .spec
            .as_ref()
            .expect("spec")
            .selector
            .match_expressions
            .as_ref()
            .expect("exprs")[0];
        assert_eq!(
            expr.values.as_deref(),
            Some(&["podinfo-canary".to_string()][..])
        );
    }

    #[test]
    fn replicas_follow_the_max_share() {
        assert_eq!(twin_replicas(10, 50), 5);
        assert_eq!(twin_replicas(1, 10), 1);
        assert_eq!(twin_replicas(3, 50), 2);
        assert_eq!(twin_replicas(0, 50), 1);
        assert_eq!(twin_replicas(4, 100), 4);
    }

    #[test]
    fn long_label_values_stay_valid() {
        let v = "a".repeat(63);
        assert!(canary_value(&v).len() <= 63);
        assert!(canary_value(&v).ends_with(SUFFIX));
    }

    #[test]
    fn finding_the_service() {
        let services = vec![service()];
        assert!(find_service(&stable(), &services, None).is_ok());
        assert!(find_service(&stable(), &services, Some("nope"))
            .expect_err("missing")
            .contains("does not exist"));
        assert!(find_service(&stable(), &[] as &[Service], None)
            .expect_err("none")
            .contains("no Service selects"));
        let two = vec![
            service(),
            Service {
                metadata: ObjectMeta {
                    name: Some("other".into()),
                    ..Default::default()
                },
                ..service()
            },
        ];
        assert!(find_service(&stable(), &two, None)
            .expect_err("two")
            .contains("choose one"));
    }
}
