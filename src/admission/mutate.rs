//! `/mutate`: hold the stable version and record the rollout when a managed Deployment's pod
//! template changes. The user's spec keeps the new template (no drift for kubectl, SSA or
//! GitOps); only `spec.paused`, `canary-gate.io/` state annotations and the
//! `canary-gate.io/rollout` label (what the analyzer's watch selects on) are patched.

use jiff::Timestamp;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use kube::core::admission::Operation;
use serde_json::Value;

use super::pod::PodTemplate;
use super::review::{Object, Request};
use super::revision::{describe_change, template_revision};
use super::{annotations, group_kind, is_paused, labels, template, WebhookConfig};
use crate::annotations as ann;
use crate::rollout::state::{Phase, RolloutState};
use crate::settings::{is_managed, Settings};

/// The decision for one `/mutate` request.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// Let it through untouched; `reason` is for logs and metrics.
    Pass { reason: &'static str },
    /// Let it through with a patch and warnings kubectl prints.
    Patch {
        reason: &'static str,
        patch: Patch,
        warnings: Vec<String>,
    },
    Deny {
        reason: &'static str,
        message: String,
    },
}

impl Mutation {
    pub fn reason(&self) -> &'static str {
        match self {
            Mutation::Pass { reason }
            | Mutation::Patch { reason, .. }
            | Mutation::Deny { reason, .. } => reason,
        }
    }
}

pub fn decide(req: &Request, cfg: &WebhookConfig, now: Timestamp) -> Mutation {
    if group_kind(req) != ("apps", "Deployment") || req.sub_resource.is_some() {
        return Mutation::Pass {
            reason: "not_a_deployment",
        };
    }
    if req.operation != Operation::Update {
        return Mutation::Pass {
            reason: "not_an_update",
        };
    }
    let (Some(new), Some(old)) = (req.object.as_ref(), req.old_object.as_ref()) else {
        return Mutation::Deny {
            reason: "malformed",
            message: format!(
                "UPDATE of deployment {} without object and oldObject: cannot decide",
                req.name
            ),
        };
    };
    let name = &req.name;
    let new_annotations = annotations(new);
    // State is read from the stored object: a user's apply may drop annotations it does not
    // own, but what the cluster holds is the truth.
    let state = RolloutState::from_annotations(annotations(old)).ok();
    let (Some(old_template), Some(new_template)) = (template(old), template(new)) else {
        return Mutation::Deny {
            reason: "malformed",
            message: format!("deployment {name} has no spec.template: cannot decide"),
        };
    };
    if !is_managed(new_annotations, cfg.manage_by_default) {
        return match state {
            Some(s) if s.phase.holds_stable() || s.phase == Phase::Promoting => {
                opt_out(name, new, s, now)
            }
            _ => Mutation::Pass {
                reason: "not_managed",
            },
        };
    }
    if req.user_info.username.as_deref() == Some(cfg.controller_username.as_str()) {
        return Mutation::Pass {
            reason: "controller",
        };
    }
    let settings = match Settings::from_annotations(&cfg.defaults, new_annotations) {
        Ok(s) => s,
        Err(errors) => {
            return Mutation::Deny {
                reason: "invalid_settings",
                message: format!("deployment {name}: {errors}"),
            }
        }
    };
    // Byte-identical templates are the same version (the apiserver serialises both sides the
    // same way): most updates — scaling, annotating, GitOps re-syncs — stop here unhashed.
    let revisions = (old_template.get() != new_template.get())
        .then(|| {
            (
                template_revision(old_template),
                template_revision(new_template),
            )
        })
        .filter(|(old_rev, new_rev)| old_rev != new_rev);
    // A manual action (`canary-gate approve`, `abort`, …): who asked is what the API server
    // authenticated, recorded here whenever the action or its record changes, never what the
    // object says. Events and notifications name them.
    let old_annotations = annotations(old);
    let new_action = new_annotations.get(ann::ACTION);
    let approving = new_action.is_some()
        && (old_annotations.get(ann::ACTION) != new_action
            || new_annotations.get(ann::ACTION_BY) != old_annotations.get(ann::ACTION_BY));
    let approver = req
        .user_info
        .username
        .clone()
        .unwrap_or_else(|| "an unauthenticated user".into());
    // `approving` implies the object has annotations (the action is one).
    let record_approval = |patch: &mut Patch| {
        add(
            patch,
            &["metadata", "annotations", ann::ACTION_BY],
            Value::String(approver.clone()),
        );
    };
    // A Deployment with a rollout carries the label the analyzer's watch selects on: an
    // update that dropped it (a `kubectl replace`, a GitOps tool replacing metadata) gets it
    // back here, so the rollout never falls out of the analyzer's sight.
    let relabel = state.is_some() && !labels(new).contains_key(ann::ROLLOUT_LABEL);
    let Some((old_rev, new_rev)) = revisions else {
        // No new version. But a server-side apply that does not mention `spec.paused` resets
        // it (the webhook's write is owned by the applier's field manager), which would ship
        // the held canary template — or, after a rollback, the rejected one — to 100 %: keep
        // the hold. GitOps tools re-sync like this every few minutes.
        return match &state {
            Some(s)
                if (s.phase.holds_stable() || s.phase == Phase::Failed)
                    && !is_paused(new)
                    && s.canary_revision == template_revision(new_template) =>
            {
                let mut patch = Patch(Vec::new());
                add(&mut patch, &["spec", "paused"], Value::Bool(true));
                if approving {
                    record_approval(&mut patch);
                }
                label_patch(new, &mut patch);
                let why = if s.phase == Phase::Failed {
                    format!(
                        "revision {} failed its canary; apply a fixed version or the stable template",
                        s.canary_revision
                    )
                } else {
                    format!(
                        "its rollout is {}; use canary-gate.io/action=promote or abort",
                        s.phase
                    )
                };
                Mutation::Patch {
                    reason: "hold",
                    patch,
                    warnings: vec![format!("{name}: kept paused: {why}")],
                }
            }
            _ if approving => {
                let mut patch = Patch(Vec::new());
                record_approval(&mut patch);
                if relabel {
                    label_patch(new, &mut patch);
                }
                let action = new_action.map(String::as_str).unwrap_or_default();
                Mutation::Patch {
                    reason: "action",
                    patch,
                    warnings: vec![format!("{name}: action {action} by {approver} recorded")],
                }
            }
            _ if relabel => {
                let mut patch = Patch(Vec::new());
                label_patch(new, &mut patch);
                Mutation::Patch {
                    reason: "label",
                    patch,
                    warnings: Vec::new(),
                }
            }
            _ => Mutation::Pass {
                reason: "template_unchanged",
            },
        };
    };

    if let Some(s) = &state {
        let active = s.phase.holds_stable() || s.phase == Phase::Promoting;
        if (active || s.phase == Phase::Failed)
            && new_rev == s.stable_revision
            && !s.stable_revision.is_empty()
        {
            // Re-applying what already runs: nothing to release. Unpausing is safe because the
            // stable ReplicaSet already runs exactly this template.
            let mut next = s.clone();
            if active {
                next.phase = Phase::Cancelled;
                next.phase_since = now;
                next.message = format!(
                    "cancelled: the stable template {} was re-applied",
                    s.stable_revision
                );
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
                && matches!(
                    s.phase,
                    Phase::Pending | Phase::Progressing | Phase::Paused | Phase::Failed
                ) =>
        {
            s.stable_revision.clone()
        }
        _ => old_rev.clone(),
    };
    let mut warnings = Vec::new();
    if let Some(s) = state
        .as_ref()
        .filter(|s| s.phase.holds_stable() || s.phase == Phase::Promoting)
    {
        warnings.push(format!(
            "{name}: rollout of {} ({}) restarted on the newer revision {new_rev}",
            s.canary_revision, s.phase
        ));
    }
    // Only words for people: a template that does not parse is described by its revisions.
    let pod = |t| PodTemplate::parse(t).unwrap_or_default();
    let change = describe_change(
        &pod(old_template),
        &pod(new_template),
        &stable_rev,
        &new_rev,
    );
    warnings.push(format!("{name}: canary {change}, {}", settings.plan()));
    if req.dry_run {
        warnings.push(format!("{name}: dry run: nothing was changed"));
    }
    let next = RolloutState::pending(new_rev, stable_rev, now);
    let mut patch = state_patch(new, &next);
    add(&mut patch, &["spec", "paused"], Value::Bool(true));
    Mutation::Patch {
        reason: "rollout_started",
        patch,
        warnings: warnings.into_iter().map(cap_warning).collect(),
    }
}

/// kubectl prints warnings as they come; the apiserver truncates long ones anyway. A hostile
/// image name must not turn into megabytes of warning.
fn cap_warning(w: String) -> String {
    const MAX: usize = 256;
    if w.len() <= MAX {
        return w;
    }
    let mut end = MAX - 3;
    while !w.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &w[..end])
}

/// The Deployment stopped being managed mid-rollout: release the hold, record why.
fn opt_out(name: &str, new: &Object, state: RolloutState, now: Timestamp) -> Mutation {
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
fn state_patch(obj: &Object, state: &RolloutState) -> Patch {
    let existing = annotations(obj);
    let mut patch = Patch(Vec::new());
    if obj.metadata.annotations.is_none() {
        add(
            &mut patch,
            &["metadata", "annotations"],
            Value::Object(Default::default()),
        );
    }
    for (key, value) in state.to_annotations() {
        let path = pointer(&["metadata", "annotations", key]);
        match value {
            Some(v) => patch.0.push(PatchOperation::Add(AddOperation {
                path,
                value: Value::String(v),
            })),
            None if existing.contains_key(key) => patch
                .0
                .push(PatchOperation::Remove(RemoveOperation { path })),
            None => {}
        }
    }
    label_patch(obj, &mut patch);
    if existing.contains_key(ann::ACTION) {
        // An action meant for the previous rollout must not hit the new one.
        patch.0.push(PatchOperation::Remove(RemoveOperation {
            path: pointer(&["metadata", "annotations", ann::ACTION]),
        }));
    }
    patch
}

/// Adds `canary-gate.io/rollout: "true"` when the object as sent lacks it (the analyzer's
/// watch selects on it).
fn label_patch(obj: &Object, patch: &mut Patch) {
    if labels(obj).contains_key(ann::ROLLOUT_LABEL) {
        return;
    }
    if obj.metadata.labels.is_none() {
        add(
            patch,
            &["metadata", "labels"],
            Value::Object(Default::default()),
        );
    }
    add(
        patch,
        &["metadata", "labels", ann::ROLLOUT_LABEL],
        Value::String("true".into()),
    );
}

/// The JSON pointer to `tokens`, escaped (RFC 6901) into one string: jsonptr's `from_tokens`
/// allocates for every token with a `/`, which every annotation key has. A patch has a
/// pointer per state annotation, so this finds the two special bytes instead of splitting.
fn pointer(tokens: &[&str]) -> PointerBuf {
    let mut path = String::with_capacity(tokens.iter().map(|t| t.len() + 4).sum());
    for token in tokens {
        path.push('/');
        let mut rest = *token;
        while let Some(i) = rest.bytes().position(|b| b == b'/' || b == b'~') {
            path.push_str(&rest[..i]);
            path.push_str(if rest.as_bytes()[i] == b'/' {
                "~1"
            } else {
                "~0"
            });
            rest = &rest[i + 1..];
        }
        path.push_str(rest);
    }
    PointerBuf::parse(path).unwrap_or_else(|_| PointerBuf::from_tokens(tokens.iter().copied()))
}

fn add(patch: &mut Patch, tokens: &[&str], value: Value) {
    let path = pointer(tokens);
    patch
        .0
        .push(PatchOperation::Add(AddOperation { path, value }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::fixture;

    fn now() -> Timestamp {
        "2026-11-27T12:00:00Z".parse().expect("ts")
    }

    /// The object the apiserver would store after applying our patch.
    fn patched(req: &Request, m: &Mutation) -> Value {
        let mut obj = serde_json::to_value(req.object.as_ref().expect("object")).expect("json");
        if let Mutation::Patch { patch, .. } = m {
            json_patch::patch(&mut obj, patch).expect("patch applies to the object as sent");
        }
        obj
    }

    fn ann_of(obj: &Value, key: &str) -> Option<String> {
        obj["metadata"]["annotations"][key]
            .as_str()
            .map(str::to_string)
    }

    #[test]
    fn pointers_are_escaped_like_jsonptr_does() {
        for tokens in [
            &["metadata", "annotations", ann::PHASE][..],
            &["metadata", "labels", "a~b/c~1"],
            &["~/~", "//", "~~"],
            &["ä/ö~ü", "x/"],
            &["spec", "paused"],
            &[""],
        ] {
            assert_eq!(
                pointer(tokens),
                PointerBuf::from_tokens(tokens.iter().copied()),
                "{tokens:?}"
            );
        }
    }

    #[test]
    fn an_approval_is_recorded_with_the_authenticated_user_not_the_objects_claim() {
        let mut req = fixture("21-managed-update-image-kubectl-apply.mutate");
        // A metadata-only update of a managed Deployment: `canary-gate approve` by ana,
        // who also tries to write someone else's name.
        let old = req.old_object.clone().expect("old object");
        let mut new = old.clone();
        let a = new
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        a.insert(ann::ACTION.into(), "approve".into());
        a.insert(ann::ACTION_BY.into(), "the-boss".into());
        req.object = Some(new);
        req.user_info.username = Some("ana".into());
        let m = decide(&req, &WebhookConfig::default(), now());
        let Mutation::Patch { warnings, .. } = &m else {
            panic!("{m:?}")
        };
        assert_eq!(
            ann_of(&patched(&req, &m), ann::ACTION_BY).as_deref(),
            Some("ana")
        );
        assert!(
            warnings[0].contains("action approve by ana recorded"),
            "{warnings:?}"
        );
        // Without an approval, metadata-only updates still pass untouched.
        let mut plain = fixture("21-managed-update-image-kubectl-apply.mutate");
        plain.object = plain.old_object.clone();
        assert!(matches!(
            decide(&plain, &WebhookConfig::default(), now()),
            Mutation::Pass { .. }
        ));
    }

    #[test]
    fn managed_template_change_pauses_and_records_the_rollout() {
        let req = fixture("21-managed-update-image-kubectl-apply.mutate");
        let m = decide(&req, &WebhookConfig::default(), now());
        let Mutation::Patch { warnings, .. } = &m else {
            panic!("{m:?}")
        };
        let obj = patched(&req, &m);
        assert_eq!(obj["spec"]["paused"], true);
        assert_eq!(obj["metadata"]["labels"][ann::ROLLOUT_LABEL], "true");
        assert_eq!(ann_of(&obj, ann::PHASE).as_deref(), Some("Pending"));
        assert_eq!(ann_of(&obj, ann::WEIGHT).as_deref(), Some("0"));
        assert_eq!(
            ann_of(&obj, ann::STARTED_AT).as_deref(),
            Some("2026-11-27T12:00:00Z")
        );
        let old_rev =
            template_revision(template(req.old_object.as_ref().expect("old")).expect("t"));
        let new_rev = template_revision(template(req.object.as_ref().expect("new")).expect("t"));
        assert_eq!(ann_of(&obj, ann::STABLE_REVISION), Some(old_rev));
        assert_eq!(ann_of(&obj, ann::CANARY_REVISION), Some(new_rev));
        // The user's template is untouched: no drift for kubectl / GitOps.
        assert_eq!(
            obj["spec"]["template"],
            serde_json::to_value(req.object.as_ref().expect("o")).expect("j")["spec"]["template"]
        );
        assert_eq!(
            warnings.last().map(String::as_str),
            Some("podinfo: canary 6.0.0 → 6.0.1, 10 % steps every 30s to 50 %, gates: success ≥ 99 %, p99 ≤ 500 ms; decisive evidence rolls back at any moment")
        );
    }

    #[test]
    fn dry_run_gets_the_same_answer() {
        let live = decide(
            &fixture("21-managed-update-image-kubectl-apply.mutate"),
            &WebhookConfig::default(),
            now(),
        );
        let dry = decide(
            &fixture("22-managed-update-image-dry-run-server.mutate"),
            &WebhookConfig::default(),
            now(),
        );
        let (
            Mutation::Patch { patch: a, .. },
            Mutation::Patch {
                patch: b, warnings, ..
            },
        ) = (&live, &dry)
        else {
            panic!("{live:?} {dry:?}")
        };
        // The captures change different images; the answer has the same shape, no shortcut.
        let paths = |p: &Patch| {
            p.0.iter()
                .map(|op| op.path().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(paths(a), paths(b));
        assert!(warnings.iter().any(|w| w.contains("dry run")));
    }

    #[test]
    fn pass_through_cases() {
        let cfg = WebhookConfig::default();
        for (name, reason) in [
            ("20-managed-create-kubectl-apply.mutate", "not_an_update"),
            (
                "25-managed-update-scale-subresource.mutate",
                "not_a_deployment",
            ),
            ("07-update-scale-subresource.mutate", "not_a_deployment"),
            ("02-update-image-kubectl-apply.mutate", "not_managed"),
            ("08-update-metadata-only-annotate.mutate", "not_managed"),
            (
                "23-managed-update-image-server-side-apply.mutate.2",
                "template_unchanged",
            ),
            (
                "23-managed-update-image-server-side-apply.mutate.8",
                "template_unchanged",
            ),
        ] {
            assert_eq!(
                decide(&fixture(name), &cfg, now()),
                Mutation::Pass { reason },
                "{name}"
            );
        }
    }

    #[test]
    fn bad_settings_are_denied_naming_the_annotation() {
        let m = decide(
            &fixture("26-managed-update-bad-max-weight.mutate"),
            &WebhookConfig::default(),
            now(),
        );
        let Mutation::Deny { message, .. } = m else {
            panic!("{m:?}")
        };
        assert!(
            message.contains("canary-gate.io/max-weight=\"150\""),
            "{message}"
        );
        assert!(message.contains("from 1 to 100"), "{message}");
    }

    /// Fixture with the rollout state of `state` on both objects (as stored) and valid settings.
    fn with_state(name: &str, state: &RolloutState, paused: bool) -> Request {
        let mut req = fixture(name);
        for obj in [req.object.as_mut(), req.old_object.as_mut()]
            .into_iter()
            .flatten()
        {
            let a = obj
                .metadata
                .annotations
                .get_or_insert_with(Default::default);
            a.remove(ann::MAX_WEIGHT);
            for (k, v) in state.to_annotations() {
                if let Some(v) = v {
                    a.insert(k.to_string(), v);
                }
            }
            // As the webhook left it when the rollout started.
            obj.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(ann::ROLLOUT_LABEL.into(), "true".into());
            obj.spec.get_or_insert_with(Default::default).paused = Some(paused);
        }
        req
    }

    fn revs(req: &Request) -> (String, String) {
        let t = |o: Option<&Object>| template_revision(o.and_then(template).expect("template"));
        (t(req.old_object.as_ref()), t(req.object.as_ref()))
    }

    /// A server-side apply (or GitOps re-sync) of the same template that drops `paused`.
    fn paused_reset_in(phase: Phase) -> (Request, Mutation) {
        let name = "23-managed-update-image-server-side-apply.mutate.7";
        let (_, rev) = revs(&fixture(name));
        let state = RolloutState {
            phase,
            ..RolloutState::pending(rev, "stable0001".into(), now())
        };
        let mut req = with_state(name, &state, true);
        req.object
            .as_mut()
            .expect("o")
            .spec
            .get_or_insert_with(Default::default)
            .paused = Some(false);
        let m = decide(&req, &WebhookConfig::default(), now());
        (req, m)
    }

    #[test]
    fn ssa_reset_of_paused_is_held_during_a_rollout() {
        let (req, m) = paused_reset_in(Phase::Progressing);
        assert_eq!(m.reason(), "hold");
        assert_eq!(patched(&req, &m)["spec"]["paused"], true);
    }

    #[test]
    fn gitops_resync_after_a_failed_rollout_keeps_the_rejected_version_paused() {
        let (req, m) = paused_reset_in(Phase::Failed);
        assert_eq!(m.reason(), "hold");
        assert_eq!(patched(&req, &m)["spec"]["paused"], true);
        let Mutation::Patch { warnings, .. } = &m else {
            panic!("{m:?}")
        };
        assert!(warnings[0].contains("failed its canary"), "{warnings:?}");
    }

    #[test]
    fn a_rollout_label_dropped_by_an_update_is_put_back_and_nothing_else() {
        let (_, rev) = revs(&fixture(
            "23-managed-update-image-server-side-apply.mutate.7",
        ));
        let state = RolloutState {
            phase: Phase::Succeeded,
            ..RolloutState::pending(rev, "stable0001".into(), now())
        };
        let mut req = with_state(
            "23-managed-update-image-server-side-apply.mutate.7",
            &state,
            false,
        );
        // A `kubectl replace` of metadata without the label (labels map gone entirely).
        req.object.as_mut().expect("o").metadata.labels = None;
        let m = decide(&req, &WebhookConfig::default(), now());
        let Mutation::Patch { reason, patch, .. } = &m else {
            panic!("{m:?}")
        };
        assert_eq!(*reason, "label");
        assert_eq!(patch.0.len(), 2, "labels map + the label: {patch:?}");
        let obj = patched(&req, &m);
        assert_eq!(obj["metadata"]["labels"][ann::ROLLOUT_LABEL], "true");
        // Without rollout state there is nothing for the analyzer to watch: no label.
        let mut fresh = fixture("21-managed-update-image-kubectl-apply.mutate");
        fresh.object = fresh.old_object.clone();
        assert_eq!(
            decide(&fresh, &WebhookConfig::default(), now()).reason(),
            "template_unchanged"
        );
    }

    #[test]
    fn after_a_success_a_reset_of_paused_passes() {
        let (_, m) = paused_reset_in(Phase::Succeeded);
        assert_eq!(
            m,
            Mutation::Pass {
                reason: "template_unchanged"
            }
        );
    }

    #[test]
    fn reapplying_the_stable_template_cancels() {
        let probe = fixture("21-managed-update-image-kubectl-apply.mutate");
        let (old_rev, new_rev) = revs(&probe);
        // Rollout of old_rev running; user re-applies new_rev which is what stable runs.
        let state = RolloutState {
            phase: Phase::Progressing,
            ..RolloutState::pending(old_rev, new_rev, now())
        };
        let req = with_state("21-managed-update-image-kubectl-apply.mutate", &state, true);
        let m = decide(&req, &WebhookConfig::default(), now());
        assert_eq!(m.reason(), "cancel");
        let obj = patched(&req, &m);
        assert_eq!(obj["spec"]["paused"], false);
        assert_eq!(ann_of(&obj, ann::PHASE).as_deref(), Some("Cancelled"));
    }

    #[test]
    fn a_newer_template_mid_rollout_restarts_and_keeps_the_running_stable() {
        let probe = fixture("24-managed-update-image-set-image.mutate");
        let (old_rev, new_rev) = revs(&probe);
        let state = RolloutState {
            phase: Phase::Progressing,
            weight: 20,
            ..RolloutState::pending(old_rev, "s0s0s0s0s0".into(), now())
        };
        let req = with_state("24-managed-update-image-set-image.mutate", &state, true);
        let m = decide(&req, &WebhookConfig::default(), now());
        let Mutation::Patch { warnings, .. } = &m else {
            panic!("{m:?}")
        };
        assert!(
            warnings[0].contains("restarted on the newer revision"),
            "{warnings:?}"
        );
        let obj = patched(&req, &m);
        assert_eq!(
            ann_of(&obj, ann::STABLE_REVISION).as_deref(),
            Some("s0s0s0s0s0")
        );
        assert_eq!(ann_of(&obj, ann::CANARY_REVISION), Some(new_rev));
        assert_eq!(ann_of(&obj, ann::WEIGHT).as_deref(), Some("0"));
        assert_eq!(ann_of(&obj, ann::PHASE).as_deref(), Some("Pending"));
    }

    #[test]
    fn patch_applies_to_objects_without_annotations_and_already_paused() {
        let mut req = fixture("28-managed-update-paused-already.mutate.2");
        req.object.as_mut().expect("o").metadata.annotations = None;
        req.old_object.as_mut().expect("o").metadata.annotations = None;
        let cfg = WebhookConfig {
            manage_by_default: true,
            ..WebhookConfig::default()
        };
        let m = decide(&req, &cfg, now());
        assert_eq!(m.reason(), "rollout_started");
        let obj = patched(&req, &m);
        assert_eq!(obj["spec"]["paused"], true);
        assert_eq!(ann_of(&obj, ann::PHASE).as_deref(), Some("Pending"));
    }

    #[test]
    fn the_controller_passes_untouched() {
        let mut req = fixture("21-managed-update-image-kubectl-apply.mutate");
        let cfg = WebhookConfig::default();
        req.user_info.username = Some(cfg.controller_username.clone());
        assert_eq!(
            decide(&req, &cfg, now()),
            Mutation::Pass {
                reason: "controller"
            }
        );
    }

    #[test]
    fn opting_out_mid_rollout_releases_the_hold() {
        let probe = fixture("21-managed-update-image-kubectl-apply.mutate");
        let (_, new_rev) = revs(&probe);
        let state = RolloutState {
            phase: Phase::Progressing,
            ..RolloutState::pending(new_rev, "s".into(), now())
        };
        let mut req = with_state("21-managed-update-image-kubectl-apply.mutate", &state, true);
        req.object
            .as_mut()
            .expect("o")
            .metadata
            .annotations
            .as_mut()
            .expect("a")
            .remove(ann::ENABLED);
        let m = decide(&req, &WebhookConfig::default(), now());
        assert_eq!(m.reason(), "opt_out");
        assert_eq!(patched(&req, &m)["spec"]["paused"], false);
    }

    #[test]
    fn update_without_old_object_is_denied_not_panicking() {
        let mut req = fixture("21-managed-update-image-kubectl-apply.mutate");
        req.old_object = None;
        assert_eq!(
            decide(&req, &WebhookConfig::default(), now()).reason(),
            "malformed"
        );
    }
}
