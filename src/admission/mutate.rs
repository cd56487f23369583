//! `/mutate`: hold the stable version and record the rollout when a managed Deployment's pod
//! template changes. The user's spec keeps the new template (no drift for kubectl, SSA or
//! GitOps); only `spec.paused` and `canary-gate.io/` state annotations are patched.

use std::collections::BTreeMap;

use jiff::Timestamp;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use kube::core::admission::Operation;
use kube::core::DynamicObject;
use serde_json::Value;

use super::review::Request;
use super::revision::{describe_change, template_revision};
use super::{annotations, group_kind, is_paused, template, WebhookConfig};
use crate::annotations as ann;
use crate::rollout::state::{Phase, RolloutState};
use crate::settings::{is_managed, Settings};

/// The decision for one `/mutate` request.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// Let it through untouched; `reason` is for logs and metrics.
    Pass { reason: &'static str },
    /// Let it through with a patch and warnings kubectl prints.
    Patch { reason: &'static str, patch: Patch, warnings: Vec<String> },
    Deny { reason: &'static str, message: String },
}

impl Mutation {
    pub fn reason(&self) -> &'static str {
        match self {
            Mutation::Pass { reason } | Mutation::Patch { reason, .. } | Mutation::Deny { reason, .. } => reason,
        }
    }
}

pub fn decide(req: &Request, cfg: &WebhookConfig, now: Timestamp) -> Mutation {
    if group_kind(req) != ("apps", "Deployment") || req.sub_resource.is_some() {
        return Mutation::Pass { reason: "not_a_deployment" };
    }
    if req.operation != Operation::Update {
        return Mutation::Pass { reason: "not_an_update" };
    }
    let (Some(new), Some(old)) = (req.object.as_ref(), req.old_object.as_ref()) else {
        return Mutation::Deny {
            reason: "malformed",
            message: format!("UPDATE of deployment {} without object and oldObject: cannot decide", req.name),
        };
    };
    let name = &req.name;
    let new_annotations = annotations(new);
    // State is read from the stored object: a user's apply may drop annotations it does not
    // own, but what the cluster holds is the truth.
    let state = RolloutState::from_annotations(&annotations(old)).ok();
    let (Some(old_template), Some(new_template)) = (template(old), template(new)) else {
        return Mutation::Deny {
            reason: "malformed",
            message: format!("deployment {name} has no spec.template: cannot decide"),
        };
    };
    if !is_managed(&new_annotations, cfg.manage_by_default) {
        return match state {
            Some(s) if s.phase.holds_stable() || s.phase == Phase::Promoting => opt_out(name, new, s, now),
            _ => Mutation::Pass { reason: "not_managed" },
        };
    }
    if req.user_info.username.as_deref() == Some(cfg.controller_username.as_str()) {
        return Mutation::Pass { reason: "controller" };
    }
    let settings = match Settings::from_annotations(&cfg.defaults, &new_annotations) {
        Ok(s) => s,
        Err(errors) => {
            return Mutation::Deny {
                reason: "invalid_settings",
                message: format!("deployment {name}: {errors}"),
            }
        }
    };
    let old_rev = template_revision(old_template);
    let new_rev = template_revision(new_template);

    if old_rev == new_rev {
        // No new version. But a server-side apply that does not mention `spec.paused` resets
        // it, which would ship the held canary template to 100 %: keep the hold.
        return match &state {
            Some(s) if s.phase.holds_stable() && s.canary_revision == new_rev && !is_paused(new) => {
                let mut patch = Patch(Vec::new());
                add(&mut patch, &["spec", "paused"], Value::Bool(true));
                Mutation::Patch {
                    reason: "hold",
                    patch,
                    warnings: vec![format!(
                        "{name}: kept paused: canary-gate holds the stable version while its rollout is {}; use canary-gate.io/action=promote or abort",
                        s.phase
                    )],
                }
            }
            _ => Mutation::Pass { reason: "template_unchanged" },
        };
    }

    if let Some(s) = &state {
        let active = s.phase.holds_stable() || s.phase == Phase::Promoting;
        if (active || s.phase == Phase::Failed) && new_rev == s.stable_revision && !s.stable_revision.is_empty() {
            // Re-applying what already runs: nothing to release. Unpausing is safe because the
            // stable ReplicaSet already runs exactly this template.
            let mut next = s.clone();
            if active {
                next.phase = Phase::Cancelled;
                next.phase_since = now;
                next.message = format!("cancelled: the stable template {} was re-applied", s.stable_revision);
            } else {
                next.message = format!("reverted to the stable template {}", s.stable_revision);
            }
            let mut patch = state_patch(new, &next);
            add(&mut patch, &["spec", "paused"], Value::Bool(false));
            return Mutation::Patch {
                reason: if active { "cancel" } else { "revert" },
                patch,
                warnings: vec![format!("{name}: {}", next.message)],
            };
        }
    }

    // Which version runs on the stable pods? While a rollout holds the Deployment paused the
    // stable ReplicaSet is still the recorded stable revision, not the old spec's template.
    let stable_rev = match &state {
        Some(s)
            if is_paused(old)
                && !s.stable_revision.is_empty()
                && matches!(s.phase, Phase::Pending | Phase::Progressing | Phase::Paused | Phase::Failed) =>
        {
            s.stable_revision.clone()
        }
        _ => old_rev.clone(),
    };
    let mut warnings = Vec::new();
    if let Some(s) = state.as_ref().filter(|s| s.phase.holds_stable() || s.phase == Phase::Promoting) {
        warnings.push(format!(
            "{name}: rollout of {} ({}) restarted on the newer revision {new_rev}",
            s.canary_revision, s.phase
        ));
    }
    let change = describe_change(old_template, new_template, &stable_rev, &new_rev);
    warnings.push(format!("{name}: canary {change}, {}", settings.plan()));
    if req.dry_run {
        warnings.push(format!("{name}: dry run: nothing was changed"));
    }
    let next = RolloutState::pending(new_rev, stable_rev, now);
    let mut patch = state_patch(new, &next);
    add(&mut patch, &["spec", "paused"], Value::Bool(true));
    Mutation::Patch { reason: "rollout_started", patch, warnings }
}

/// The Deployment stopped being managed mid-rollout: release the hold, record why.
fn opt_out(name: &str, new: &DynamicObject, state: RolloutState, now: Timestamp) -> Mutation {
    let mut next = state;
    next.phase = Phase::Cancelled;
    next.phase_since = now;
    next.message = "cancelled: the Deployment is no longer managed by canary-gate".into();
    let mut patch = state_patch(new, &next);
    add(&mut patch, &["spec", "paused"], Value::Bool(false));
    Mutation::Patch {
        reason: "opt_out",
        patch,
        warnings: vec![format!("{name}: canary-gate no longer manages it; the running rollout is cancelled and the Deployment unpaused")],
    }
}

/// Operations that make the object's state annotations equal `state`, valid against the object
/// as sent (which may have no annotations at all).
fn state_patch(obj: &DynamicObject, state: &RolloutState) -> Patch {
    let existing: BTreeMap<String, String> = annotations(obj);
    let mut patch = Patch(Vec::new());
    if obj.metadata.annotations.is_none() {
        add(&mut patch, &["metadata", "annotations"], Value::Object(Default::default()));
    }
    for (key, value) in state.to_annotations() {
        let path = PointerBuf::from_tokens(["metadata", "annotations", key]);
        match value {
            Some(v) => patch.0.push(PatchOperation::Add(AddOperation { path, value: Value::String(v) })),
            None if existing.contains_key(key) => patch.0.push(PatchOperation::Remove(RemoveOperation { path })),
            None => {}
        }
    }
    if existing.contains_key(ann::ACTION) {
        // An action meant for the previous rollout must not hit the new one.
        patch.0.push(PatchOperation::Remove(RemoveOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations", ann::ACTION]),
        }));
    }
    patch
}

fn add(patch: &mut Patch, tokens: &[&str], value: Value) {
    let path = PointerBuf::from_tokens(tokens.iter().copied());
    patch.0.push(PatchOperation::Add(AddOperation { path, value }));
}
