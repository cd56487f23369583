//! `/validate`: deny bad `canary-gate.io/*` settings, policy violations on managed
//! Deployments, and changes to the objects canary-gate manages during a rollout by anyone but
//! canary-gate itself.

use kube::core::admission::Operation;

use super::pod::PodTemplate;
use super::policy::violations;
use super::review::{Object, Request};
use super::{annotations, group_kind, labels, template, WebhookConfig};
use crate::annotations as ann;
use crate::settings::{is_managed, Settings};

#[derive(Debug, Clone, PartialEq)]
pub enum Validation {
    Allow {
        reason: &'static str,
    },
    Deny {
        reason: &'static str,
        message: String,
    },
}

impl Validation {
    pub fn reason(&self) -> &'static str {
        match self {
            Validation::Allow { reason } | Validation::Deny { reason, .. } => reason,
        }
    }
}

/// Objects canary-gate created (label) or adopted (original routes kept on it).
fn is_managed_object(obj: &Object) -> bool {
    labels(obj)
        .get(ann::MANAGED_LABEL)
        .is_some_and(|v| v == "true")
        || annotations(obj).contains_key(ann::ORIGINAL_ROUTES)
        || annotations(obj).contains_key(ann::ORIGINAL_RULES)
}

pub fn decide(req: &Request, cfg: &WebhookConfig) -> Validation {
    let is_controller = req.user_info.username.as_deref() == Some(cfg.controller_username.as_str());
    let (group, kind) = group_kind(req);
    let kind_name = kind.to_ascii_lowercase();

    // The object as it is stored decides whether it is managed (an UPDATE could strip the
    // label to escape the check); for CREATE only the new one exists.
    let guarded = match req.operation {
        Operation::Create => req.object.as_ref(),
        _ => req.old_object.as_ref().or(req.object.as_ref()),
    };
    if let Some(obj) = guarded.filter(|o| is_managed_object(o)) {
        if !is_controller {
            let owner = annotations(obj)
                .get(ann::OWNER)
                .cloned()
                .unwrap_or_else(|| "its Deployment".into());
            return Validation::Deny {
                reason: "managed_object",
                message: format!(
                    "{kind_name} {} is managed by canary-gate for the rollout of {owner}; change the Deployment {owner} instead, or end the rollout with `kubectl annotate deployment {owner} {}=abort`",
                    req.name,
                    ann::ACTION
                ),
            };
        }
        return Validation::Allow {
            reason: "controller",
        };
    }

    if (group, kind) != ("apps", "Deployment") || req.sub_resource.is_some() {
        return Validation::Allow {
            reason: "not_guarded",
        };
    }
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return Validation::Allow {
            reason: "not_a_write",
        };
    }
    if is_controller {
        return Validation::Allow {
            reason: "controller",
        };
    }
    let Some(new) = req.object.as_ref() else {
        return Validation::Deny {
            reason: "malformed",
            message: format!(
                "{:?} of deployment {} without object: cannot decide",
                req.operation, req.name
            ),
        };
    };
    if req.operation == Operation::Update && req.old_object.is_none() {
        // Same answer as /mutate: without the stored object nothing can be judged.
        return Validation::Deny {
            reason: "malformed",
            message: format!(
                "UPDATE of deployment {} without oldObject: cannot decide",
                req.name
            ),
        };
    }
    let new_annotations = annotations(new);
    if !is_managed(new_annotations, cfg.manage_by_default) {
        return Validation::Allow {
            reason: "not_managed",
        };
    }
    match Settings::from_annotations(&cfg.defaults, new_annotations) {
        Err(errors) => {
            return Validation::Deny {
                reason: "invalid_settings",
                message: format!("deployment {}: {errors}", req.name),
            };
        }
        Ok(settings) if !cfg.policies.allow_custom_gates && !settings.gates.is_empty() => {
            return Validation::Deny {
                reason: "policy",
                message: format!(
                    "deployment {}: custom gates ({}) are disabled on this cluster (chart value policies.allowCustomGates); use the built-in gates",
                    req.name,
                    settings.gates.iter().map(|g| format!("{}{}", crate::annotations::GATE_PREFIX, g.name)).collect::<Vec<_>>().join(", ")
                ),
            };
        }
        Ok(settings) => {
            let denied = super::policy::hook_violations(&cfg.policies, &settings.hooks);
            if !denied.is_empty() {
                return Validation::Deny {
                    reason: "policy",
                    message: format!("deployment {}: {}", req.name, denied.join("; ")),
                };
            }
        }
    }
    // Policies apply to what will be released: a new Deployment or a new template. Scaling or
    // annotating an older, non-compliant Deployment stays possible.
    let new_template = template(new);
    let template_changed = match (
        &req.operation,
        req.old_object.as_ref().and_then(template),
        new_template,
    ) {
        (Operation::Create, _, _) => true,
        // The apiserver serialises both sides the same way, so different bytes are a different
        // template; not hashing here keeps a validation at decode cost. (A hand-made review could only
        // make equal templates look different, which at worst checks the policies once more.)
        (_, Some(old_t), Some(new_t)) => old_t.get() != new_t.get(),
        _ => true,
    };
    if template_changed {
        if let Some(t) = new_template {
            let pod = match PodTemplate::parse(t) {
                Ok(pod) => pod,
                Err(error) => {
                    return Validation::Deny {
                        reason: "malformed",
                        message: format!(
                            "deployment {}: spec.template is not a pod template ({error}): cannot check it",
                            req.name
                        ),
                    }
                }
            };
            let problems = violations(&cfg.policies, &pod);
            if !problems.is_empty() {
                return Validation::Deny {
                    reason: "policy",
                    message: format!(
                        "deployment {} violates rollout policy: {}",
                        req.name,
                        problems.join("; ")
                    ),
                };
            }
        }
    }
    Validation::Allow { reason: "valid" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::{edit_template, fixture};

    #[test]
    fn fixtures_without_canary_gate_objects_are_allowed() {
        let cfg = WebhookConfig::default();
        for name in [
            "01-create-kubectl-apply.validate",
            "02-update-image-kubectl-apply.validate",
            "10-create-virtualservice.validate",
            "11-create-destinationrule.validate",
            "12-update-virtualservice-json-patch.validate",
            "13-delete-virtualservice.validate",
            "15-delete-deployment.validate",
            "20-managed-create-kubectl-apply.validate",
            "21-managed-update-image-kubectl-apply.validate",
            "29-managed-delete-deployment.validate",
        ] {
            let v = decide(&fixture(name), &cfg);
            assert!(matches!(v, Validation::Allow { .. }), "{name}: {v:?}");
        }
    }

    #[test]
    fn update_without_old_object_is_denied_like_mutate() {
        let mut req = fixture("21-managed-update-image-kubectl-apply.validate");
        req.old_object = None;
        assert_eq!(
            decide(&req, &WebhookConfig::default()).reason(),
            "malformed"
        );
    }

    #[test]
    fn custom_gates_can_be_switched_off() {
        let mut req = fixture("21-managed-update-image-kubectl-apply.validate");
        let gate = r#"{"query": "sum(rate(x{namespace=\"{namespace}\"}[{interval}]))", "max": 1}"#;
        req.object
            .as_mut()
            .expect("object")
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("canary-gate.io/gate.errors".into(), gate.into());
        let mut cfg = WebhookConfig::default();
        assert_eq!(decide(&req, &cfg), Validation::Allow { reason: "valid" });
        cfg.policies.allow_custom_gates = false;
        let v = decide(&req, &cfg);
        let Validation::Deny { message, .. } = &v else {
            panic!("{v:?}")
        };
        assert!(message.contains("canary-gate.io/gate.errors"), "{message}");
        assert!(message.contains("policies.allowCustomGates"), "{message}");
    }

    #[test]
    fn bad_max_weight_is_denied() {
        let v = decide(
            &fixture("26-managed-update-bad-max-weight.validate"),
            &WebhookConfig::default(),
        );
        let Validation::Deny { message, .. } = v else {
            panic!("{v:?}")
        };
        assert_eq!(
            message,
            "deployment podinfo: annotation canary-gate.io/max-weight=\"150\" is invalid: must be a whole number from 1 to 100"
        );
    }

    #[test]
    fn managed_objects_are_guarded_from_everyone_but_the_controller() {
        let cfg = WebhookConfig::default();
        for name in [
            "12-update-virtualservice-json-patch.validate",
            "13-delete-virtualservice.validate",
        ] {
            let mut req = fixture(name);
            for obj in [req.object.as_mut(), req.old_object.as_mut()]
                .into_iter()
                .flatten()
            {
                obj.metadata
                    .labels
                    .get_or_insert_with(Default::default)
                    .insert(ann::MANAGED_LABEL.into(), "true".into());
                obj.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(ann::OWNER.into(), "podinfo".into());
            }
            let v = decide(&req, &cfg);
            let Validation::Deny { message, .. } = &v else {
                panic!("{name}: {v:?}")
            };
            assert!(
                message.contains("managed by canary-gate for the rollout of podinfo"),
                "{message}"
            );
            assert!(message.contains("canary-gate.io/action=abort"), "{message}");
            req.user_info.username = Some(cfg.controller_username.clone());
            assert_eq!(
                decide(&req, &cfg),
                Validation::Allow {
                    reason: "controller"
                }
            );
        }
    }

    #[test]
    fn bad_router_is_denied_naming_the_values_allowed() {
        let mut req = fixture("21-managed-update-image-kubectl-apply.validate");
        req.object
            .as_mut()
            .expect("object")
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(ann::ROUTER.into(), "gateway".into());
        let v = decide(&req, &WebhookConfig::default());
        let Validation::Deny { reason, message } = &v else {
            panic!("{v:?}")
        };
        assert_eq!(*reason, "invalid_settings");
        assert_eq!(
            message,
            "deployment podinfo: annotation canary-gate.io/router=\"gateway\" is invalid: must be one of auto, istio, gateway-api"
        );
    }

    #[test]
    fn adopted_http_routes_are_guarded_like_virtual_services() {
        // A user's HTTPRoute adopted for a rollout carries its original rules, no label.
        let cfg = WebhookConfig::default();
        let mut req = fixture("12-update-virtualservice-json-patch.validate");
        req.kind.group = "gateway.networking.k8s.io".into();
        req.kind.kind = "HTTPRoute".into();
        req.name = "podinfo".into();
        let old = req.old_object.as_mut().expect("old");
        let marks = old
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        marks.insert(ann::ORIGINAL_RULES.into(), "[]".into());
        marks.insert(ann::OWNER.into(), "podinfo".into());
        let v = decide(&req, &cfg);
        let Validation::Deny { reason, message } = &v else {
            panic!("{v:?}")
        };
        assert_eq!(*reason, "managed_object");
        assert!(
            message.starts_with(
                "httproute podinfo is managed by canary-gate for the rollout of podinfo"
            ),
            "{message}"
        );
        req.user_info.username = Some(cfg.controller_username.clone());
        assert_eq!(decide(&req, &cfg).reason(), "controller");
    }

    #[test]
    fn stripping_the_label_does_not_escape_the_guard() {
        let mut req = fixture("12-update-virtualservice-json-patch.validate");
        let old = req.old_object.as_mut().expect("old");
        old.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(ann::MANAGED_LABEL.into(), "true".into());
        assert_eq!(
            decide(&req, &WebhookConfig::default()).reason(),
            "managed_object"
        );
    }

    #[test]
    fn policies_apply_to_new_templates_only() {
        let cfg = WebhookConfig::default();
        let mut req = fixture("21-managed-update-image-kubectl-apply.validate");
        edit_template(req.object.as_mut().expect("o"), |t| {
            let container = &mut t["spec"]["containers"][0];
            container["image"] = "ghcr.io/stefanprodan/podinfo:latest".into();
            container
                .as_object_mut()
                .expect("obj")
                .remove("readinessProbe");
        });
        let v = decide(&req, &cfg);
        let Validation::Deny { message, .. } = &v else {
            panic!("{v:?}")
        };
        assert!(message.contains("readinessProbe is required"), "{message}");
        assert!(message.contains("no fixed version"), "{message}");
        // Metadata-only changes to a Deployment that does not comply still pass.
        let mut req = fixture("23-managed-update-image-server-side-apply.validate.2");
        for obj in [req.object.as_mut(), req.old_object.as_mut()]
            .into_iter()
            .flatten()
        {
            edit_template(obj, |t| {
                t["spec"]["containers"][0]["image"] = "nginx".into()
            });
        }
        assert_eq!(decide(&req, &cfg), Validation::Allow { reason: "valid" });
    }
}
