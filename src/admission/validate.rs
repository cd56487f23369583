//! `/validate`: deny bad `canary-gate.io/*` settings, policy violations on managed
//! Deployments, and changes to the objects canary-gate manages during a rollout by anyone but
//! canary-gate itself.

use kube::core::admission::Operation;
use kube::core::DynamicObject;

use super::policy::violations;
use super::review::Request;
use super::revision::template_revision;
use super::{annotations, group_kind, labels, template, WebhookConfig};
use crate::annotations as ann;
use crate::settings::{is_managed, Settings};

#[derive(Debug, Clone, PartialEq)]
pub enum Validation {
    Allow { reason: &'static str },
    Deny { reason: &'static str, message: String },
}

impl Validation {
    pub fn reason(&self) -> &'static str {
        match self {
            Validation::Allow { reason } | Validation::Deny { reason, .. } => reason,
        }
    }
}

/// Objects canary-gate created (label) or adopted (original routes kept on it).
fn is_managed_object(obj: &DynamicObject) -> bool {
    labels(obj).get(ann::MANAGED_LABEL).is_some_and(|v| v == "true")
        || annotations(obj).contains_key(ann::ORIGINAL_ROUTES)
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
            let owner = annotations(obj).get(ann::OWNER).cloned().unwrap_or_else(|| "its Deployment".into());
            return Validation::Deny {
                reason: "managed_object",
                message: format!(
                    "{kind_name} {} is managed by canary-gate for the rollout of {owner}; change the Deployment {owner} instead, or end the rollout with `kubectl annotate deployment {owner} {}=abort`",
                    req.name,
                    ann::ACTION
                ),
            };
        }
        return Validation::Allow { reason: "controller" };
    }

    if (group, kind) != ("apps", "Deployment") || req.sub_resource.is_some() {
        return Validation::Allow { reason: "not_guarded" };
    }
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return Validation::Allow { reason: "not_a_write" };
    }
    if is_controller {
        return Validation::Allow { reason: "controller" };
    }
    let Some(new) = req.object.as_ref() else {
        return Validation::Deny {
            reason: "malformed",
            message: format!("{:?} of deployment {} without object: cannot decide", req.operation, req.name),
        };
    };
    let new_annotations = annotations(new);
    if !is_managed(&new_annotations, cfg.manage_by_default) {
        return Validation::Allow { reason: "not_managed" };
    }
    if let Err(errors) = Settings::from_annotations(&cfg.defaults, &new_annotations) {
        return Validation::Deny {
            reason: "invalid_settings",
            message: format!("deployment {}: {errors}", req.name),
        };
    }
    // Policies apply to what will be released: a new Deployment or a new template. Scaling or
    // annotating an older, non-compliant Deployment stays possible.
    let new_template = template(new);
    let template_changed = match (req.operation.clone(), req.old_object.as_ref().and_then(template), new_template) {
        (Operation::Create, _, _) => true,
        (_, Some(old_t), Some(new_t)) => template_revision(old_t) != template_revision(new_t),
        _ => true,
    };
    if template_changed {
        if let Some(t) = new_template {
            let problems = violations(&cfg.policies, t);
            if !problems.is_empty() {
                return Validation::Deny {
                    reason: "policy",
                    message: format!("deployment {} violates rollout policy: {}", req.name, problems.join("; ")),
                };
            }
        }
    }
    Validation::Allow { reason: "valid" }
}
