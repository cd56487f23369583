//! Rollout hooks, pure: what a hook annotation says, which hooks are due, what their calls
//! carry and what the rollout remembers of them. The calls themselves are I/O
//! (`outbound`); their results come back to the state machine as one more observation.
//!
//! `canary-gate.io/hook.<name>: '{"type": "pre-rollout", "url": "http://…", "timeout": "10s",
//! "metadata": {…}}'`. A hook passes on any 2xx; for `rollback`, a 2xx means "roll back now".

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::state::RolloutState;

/// Where in a rollout a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookKind {
    /// Before the twin is created; the rollout waits (up to `confirm-deadline`) until it passes.
    ConfirmRollout,
    /// After the twin is ready, before its first traffic; a failure is a failed check.
    PreRollout,
    /// With every interval check; a failure is a failed check.
    Rollout,
    /// At max weight with green gates; the rollout holds there, still judged, until it passes.
    ConfirmPromotion,
    /// After `Succeeded` or `Failed`, once; informational.
    PostRollout,
    /// Polled with every check; a 2xx means roll back now.
    Rollback,
}

impl HookKind {
    pub const ALL: [HookKind; 6] = [
        HookKind::ConfirmRollout,
        HookKind::PreRollout,
        HookKind::Rollout,
        HookKind::ConfirmPromotion,
        HookKind::PostRollout,
        HookKind::Rollback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::ConfirmRollout => "confirm-rollout",
            HookKind::PreRollout => "pre-rollout",
            HookKind::Rollout => "rollout",
            HookKind::ConfirmPromotion => "confirm-promotion",
            HookKind::PostRollout => "post-rollout",
            HookKind::Rollback => "rollback",
        }
    }
}

impl fmt::Display for HookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Limits the validating webhook enforces on a hook annotation.
pub const MAX_HOOK_BYTES: usize = 4096;
pub const MIN_HOOK_TIMEOUT: Duration = Duration::from_secs(1);
pub const MAX_HOOK_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// One hook as admitted.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    pub name: String,
    pub kind: HookKind,
    pub url: String,
    pub timeout: Duration,
    pub metadata: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHook {
    #[serde(rename = "type")]
    kind: String,
    url: String,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
}

/// Parses one hook annotation value; the error says what is wrong and what is allowed.
pub fn parse_hook(name: &str, raw: &str) -> Result<Hook, String> {
    if raw.len() > MAX_HOOK_BYTES {
        return Err(format!(
            "is {} bytes; a hook annotation may have at most {MAX_HOOK_BYTES}",
            raw.len()
        ));
    }
    let shape = "must be JSON like {\"type\": \"pre-rollout\", \"url\": \"http://svc.ns/path\", \"timeout\": \"10s\", \"metadata\": {}}";
    let h: RawHook = serde_json::from_str(raw).map_err(|e| format!("{shape}: {e}"))?;
    let kind = HookKind::ALL
        .into_iter()
        .find(|k| k.as_str() == h.kind)
        .ok_or_else(|| {
            format!(
                "type {:?} is not one of {}",
                h.kind,
                HookKind::ALL.map(HookKind::as_str).join(", ")
            )
        })?;
    let url = reqwest::Url::parse(&h.url).map_err(|e| format!("url {:?}: {e}", h.url))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "url {:?} must be an absolute http:// or https:// URL with a host",
            h.url
        ));
    }
    let timeout = match &h.timeout {
        None => DEFAULT_HOOK_TIMEOUT,
        Some(t) => match humantime::parse_duration(t.trim()) {
            Ok(d) if (MIN_HOOK_TIMEOUT..=MAX_HOOK_TIMEOUT).contains(&d) => d,
            _ => {
                return Err(format!(
                    "timeout {t:?} must be a duration from 1s to 60s, e.g. \"10s\""
                ))
            }
        },
    };
    let metadata = h.metadata.unwrap_or_else(|| json!({}));
    if !metadata.is_object() {
        return Err("metadata must be a JSON object".into());
    }
    Ok(Hook {
        name: name.to_string(),
        kind,
        url: h.url,
        timeout,
        metadata,
    })
}

/// How one call went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// A 2xx answer.
    Pass,
    /// Any other answer, a timeout or a connection error, with what happened.
    Fail(String),
}

/// A finished call, as the machine observes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookResult {
    pub name: String,
    pub kind: HookKind,
    pub outcome: HookOutcome,
}

impl HookResult {
    pub fn passed(&self) -> bool {
        self.outcome == HookOutcome::Pass
    }

    pub fn describe(&self) -> String {
        match &self.outcome {
            HookOutcome::Pass => format!("{} hook {} passed", self.kind, self.name),
            HookOutcome::Fail(why) => format!("{} hook {} failed: {why}", self.kind, self.name),
        }
    }
}

/// What a rollout remembers of its hooks, on the Deployment (`canary-gate.io/hooks`), so a
/// restart neither forgets a wait nor calls `post-rollout` twice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookState {
    /// Since when the rollout waits for a confirm hook (rollout or promotion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Timestamp>,
    /// When the hooks of this phase were last called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_call: Option<Timestamp>,
    /// `confirm-promotion` passed (or `canary-gate approve`), by whom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_confirmed_by: Option<String>,
    /// `post-rollout` was handed to the caller: never again for this rollout.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub post_rollout_sent: bool,
}

impl HookState {
    pub fn is_empty(&self) -> bool {
        *self == HookState::default()
    }
}

/// The hooks to call now for a rollout. Polling hooks are called at most once per `interval`
/// (from `last_call`); `rollout`, `rollback` and `confirm-promotion` with the interval checks.
pub fn due<'a>(
    hooks: &'a [Hook],
    state: &RolloutState,
    interval: Duration,
    twin_ready: bool,
    check_due: bool,
    max_weight: u32,
    now: Timestamp,
) -> Vec<&'a Hook> {
    use super::state::Phase;
    let polled = state
        .hooks
        .last_call
        .is_none_or(|t| now >= t + super::machine::as_signed(interval));
    let wanted = |k: HookKind| -> bool {
        match (state.phase, k) {
            (Phase::Pending, HookKind::ConfirmRollout) => polled,
            (Phase::Progressing, HookKind::PreRollout) => state.weight == 0 && twin_ready && polled,
            (Phase::Progressing, HookKind::Rollout | HookKind::Rollback) => check_due,
            (Phase::Progressing, HookKind::ConfirmPromotion) => {
                check_due
                    && state.weight >= max_weight
                    && state.hooks.promotion_confirmed_by.is_none()
            }
            _ => false,
        }
    };
    hooks.iter().filter(|h| wanted(h.kind)).collect()
}

/// The documented request body of every hook call.
pub fn request_body(hook: &Hook, namespace: &str, deployment: &str, state: &RolloutState) -> Value {
    json!({
        "type": hook.kind.as_str(),
        "name": hook.name,
        "namespace": namespace,
        "deployment": deployment,
        "phase": state.phase.as_str(),
        "weight": state.weight,
        "canaryRevision": state.canary_revision,
        "stableRevision": state.stable_revision,
        "gates": state.gates,
        "failedChecks": state.failed_checks,
        "message": state.message,
        "metadata": hook.metadata,
    })
}

/// Hooks by kind, for the machine.
pub fn of_kind(hooks: &[Hook], kind: HookKind) -> impl Iterator<Item = &Hook> {
    hooks.iter().filter(move |h| h.kind == kind)
}

/// Results by kind: `None` when no hook of the kind was called this time.
pub fn results_of(results: &[HookResult], kind: HookKind) -> Option<Vec<&HookResult>> {
    let found: Vec<&HookResult> = results.iter().filter(|r| r.kind == kind).collect();
    (!found.is_empty()).then_some(found)
}

/// What the failed ones of these calls said, for messages and events.
pub fn failures(results: &[&HookResult]) -> String {
    results
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.describe())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every hook annotation of a Deployment (`canary-gate.io/hook.<name>`), parsed.
pub fn from_annotations(
    annotations: &BTreeMap<String, String>,
) -> Vec<(String, String, Result<Hook, String>)> {
    let prefix = crate::annotations::HOOK_PREFIX;
    annotations
        .range(prefix.to_string()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| {
            let name = &k[prefix.len()..];
            (k.clone(), v.clone(), parse_hook(name, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_annotation_parses_with_defaults() {
        let h = parse_hook(
            "smoke",
            r#"{"type": "pre-rollout", "url": "http://tests.ci/run"}"#,
        )
        .expect("valid");
        assert_eq!(h.kind, HookKind::PreRollout);
        assert_eq!(h.timeout, DEFAULT_HOOK_TIMEOUT);
        assert_eq!(h.metadata, json!({}));
        let h = parse_hook(
            "ticket",
            r#"{"type": "confirm-promotion", "url": "https://jira.example/ok", "timeout": "30s", "metadata": {"ticket": "OPS-1"}}"#,
        )
        .expect("valid");
        assert_eq!(h.timeout, Duration::from_secs(30));
        assert_eq!(h.metadata["ticket"], "OPS-1");
    }

    #[test]
    fn bad_hooks_say_what_is_allowed() {
        let err = |raw: &str| parse_hook("x", raw).expect_err(raw);
        assert!(err(r#"{"type": "pre-deploy", "url": "http://a/"}"#)
            .contains("not one of confirm-rollout"));
        assert!(err(r#"{"type": "rollout", "url": "/relative"}"#).contains("url"));
        assert!(err(r#"{"type": "rollout", "url": "file:///etc/passwd"}"#).contains("http"));
        assert!(
            err(r#"{"type": "rollout", "url": "http://a/", "timeout": "5m"}"#)
                .contains("1s to 60s")
        );
        assert!(
            err(r#"{"type": "rollout", "url": "http://a/", "timeout": "0s"}"#)
                .contains("1s to 60s")
        );
        assert!(
            err(r#"{"type": "rollout", "url": "http://a/", "metadata": [1]}"#).contains("object")
        );
        assert!(
            err(r#"{"type": "rollout", "url": "http://a/", "extra": 1}"#).contains("unknown field")
        );
        assert!(err("not json").contains("must be JSON"));
        let big = format!(
            r#"{{"type": "rollout", "url": "http://a/", "metadata": {{"x": "{}"}}}}"#,
            "y".repeat(MAX_HOOK_BYTES)
        );
        assert!(err(&big).contains("at most 4096"));
    }

    fn state(phase: super::super::state::Phase, weight: u32) -> RolloutState {
        let t0: Timestamp = "2026-12-01T10:00:00Z".parse().expect("ts");
        RolloutState {
            phase,
            weight,
            ..RolloutState::pending("c".into(), "s".into(), t0)
        }
    }

    #[test]
    fn each_kind_is_due_where_it_belongs() {
        use super::super::state::Phase;
        let now: Timestamp = "2026-12-01T10:00:30Z".parse().expect("ts");
        let hooks: Vec<Hook> = HookKind::ALL
            .iter()
            .map(|k| Hook {
                name: k.as_str().into(),
                kind: *k,
                url: "http://h/".into(),
                timeout: DEFAULT_HOOK_TIMEOUT,
                metadata: json!({}),
            })
            .collect();
        let iv = Duration::from_secs(30);
        let kinds = |s: &RolloutState, ready, check| -> Vec<HookKind> {
            due(&hooks, s, iv, ready, check, 50, now)
                .iter()
                .map(|h| h.kind)
                .collect()
        };
        assert_eq!(
            kinds(&state(Phase::Pending, 0), false, false),
            [HookKind::ConfirmRollout]
        );
        assert_eq!(
            kinds(&state(Phase::Progressing, 0), true, false),
            [HookKind::PreRollout]
        );
        assert!(
            kinds(&state(Phase::Progressing, 0), false, false).is_empty(),
            "twin not ready"
        );
        assert_eq!(
            kinds(&state(Phase::Progressing, 20), true, true),
            [HookKind::Rollout, HookKind::Rollback]
        );
        assert_eq!(
            kinds(&state(Phase::Progressing, 50), true, true),
            [
                HookKind::Rollout,
                HookKind::ConfirmPromotion,
                HookKind::Rollback
            ]
        );
        assert!(
            kinds(&state(Phase::Progressing, 20), true, false).is_empty(),
            "between checks"
        );
        for p in [
            Phase::Paused,
            Phase::Promoting,
            Phase::Succeeded,
            Phase::Failed,
        ] {
            assert!(kinds(&state(p, 20), true, true).is_empty(), "{p}");
        }
        // Polling hooks wait an interval after their last call.
        let mut s = state(Phase::Pending, 0);
        s.hooks.last_call = Some("2026-12-01T10:00:10Z".parse().expect("ts"));
        assert!(kinds(&s, false, false).is_empty());
        // A confirmed promotion is not asked again.
        let mut s = state(Phase::Progressing, 50);
        s.hooks.promotion_confirmed_by = Some("hook ticket".into());
        assert_eq!(
            kinds(&s, true, true),
            [HookKind::Rollout, HookKind::Rollback]
        );
    }

    #[test]
    fn the_request_body_carries_the_documented_fields() {
        let h = parse_hook(
            "t",
            r#"{"type": "rollout", "url": "http://a/", "metadata": {"k": "v"}}"#,
        )
        .expect("valid");
        let mut s = state(super::super::state::Phase::Progressing, 30);
        s.gates = "success=99.9%".into();
        let body = request_body(&h, "shop", "podinfo", &s);
        for field in [
            "deployment",
            "namespace",
            "phase",
            "weight",
            "canaryRevision",
            "stableRevision",
            "type",
            "metadata",
            "gates",
        ] {
            assert!(body.get(field).is_some(), "{field}: {body}");
        }
        assert_eq!(body["weight"], 30);
        assert_eq!(body["metadata"]["k"], "v");
        assert_eq!(body["type"], "rollout");
    }
}
