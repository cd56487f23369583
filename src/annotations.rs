//! The `canary-gate.io/` annotation and label names: the public contract with users (see
//! `design.md`). Everything else refers to these constants so a rename happens in one place.

pub const PREFIX: &str = "canary-gate.io/";

// Opt-in and settings (written by users).
pub const ENABLED: &str = "canary-gate.io/enabled";
pub const INTERVAL: &str = "canary-gate.io/interval";
pub const STEP_WEIGHT: &str = "canary-gate.io/step-weight";
pub const MAX_WEIGHT: &str = "canary-gate.io/max-weight";
pub const THRESHOLD: &str = "canary-gate.io/threshold";
pub const MIN_SUCCESS_RATE: &str = "canary-gate.io/min-success-rate";
pub const MAX_P99_MS: &str = "canary-gate.io/max-p99-ms";
pub const INCONCLUSIVE_LIMIT: &str = "canary-gate.io/inconclusive-limit";
pub const SERVICE: &str = "canary-gate.io/service";
pub const CONFIDENCE: &str = "canary-gate.io/confidence";
pub const MIN_REQUESTS: &str = "canary-gate.io/min-requests";
pub const TOLERANCE: &str = "canary-gate.io/tolerance";
/// Which routes carry the split: `auto` (default), `istio` or `gateway-api`.
pub const ROUTER: &str = "canary-gate.io/router";
/// Custom gates: `canary-gate.io/gate.<name>: '{"query": "...", "max": 1.5}'`.
pub const GATE_PREFIX: &str = "canary-gate.io/gate.";
/// Hooks: `canary-gate.io/hook.<name>: '{"type": "pre-rollout", "url": "http://..."}'`.
pub const HOOK_PREFIX: &str = "canary-gate.io/hook.";
/// How long a `confirm-rollout` hook may answer "not yet" before the rollout is cancelled.
pub const CONFIRM_DEADLINE: &str = "canary-gate.io/confirm-deadline";
/// Notifications for this Deployment: `off`, or a comma list of `slack`, `teams`, `webhook`
/// (default: every provider the install configured).
pub const NOTIFY: &str = "canary-gate.io/notify";

// Manual action (written by users or `canary-gate` CLI, cleared by the analyzer).
pub const ACTION: &str = "canary-gate.io/action";

// Rollout state (written by the webhook and the analyzer only).
pub const PHASE: &str = "canary-gate.io/phase";
pub const WEIGHT: &str = "canary-gate.io/weight";
pub const CANARY_REVISION: &str = "canary-gate.io/canary-revision";
pub const STABLE_REVISION: &str = "canary-gate.io/stable-revision";
pub const STARTED_AT: &str = "canary-gate.io/started-at";
pub const PHASE_SINCE: &str = "canary-gate.io/phase-since";
pub const LAST_CHECK: &str = "canary-gate.io/last-check";
pub const FAILED_CHECKS: &str = "canary-gate.io/failed-checks";
pub const PASSED_CHECKS: &str = "canary-gate.io/passed-checks";
pub const INCONCLUSIVE_CHECKS: &str = "canary-gate.io/inconclusive-checks";
pub const PAUSED_FROM: &str = "canary-gate.io/paused-from";
pub const UNREADY_SINCE: &str = "canary-gate.io/unready-since";
pub const MESSAGE: &str = "canary-gate.io/message";
pub const GATES: &str = "canary-gate.io/gates";
pub const COUNTS: &str = "canary-gate.io/counts";
/// What the rollout remembers of its hooks (waits, last calls, post-rollout sent).
pub const HOOKS: &str = "canary-gate.io/hooks";
/// Who set `canary-gate.io/action` (promote, abort, pause, resume, approve), as the API
/// server authenticated them: written by the mutating webhook from the AdmissionReview,
/// never taken from the user.
pub const ACTION_BY: &str = "canary-gate.io/action-by";

// On objects the analyzer creates or adopts.
/// Label on every object canary-gate created (twin, canary Service, created routes).
pub const MANAGED_LABEL: &str = "canary-gate.io/managed";
/// Label on every Deployment the analyzer works on: stable Deployments with a rollout (added by
/// the mutating webhook, re-added on any update that drops it, and by the analyzer's sweep for
/// Deployments that got their rollout state before this label existed) and their twins. The
/// analyzer's watch selects on it, so its memory follows the managed Deployments, not all.
pub const ROLLOUT_LABEL: &str = "canary-gate.io/rollout";
/// Annotation naming the stable Deployment an object belongs to.
pub const OWNER: &str = "canary-gate.io/owner";
/// On a user's VirtualService adopted for a rollout: its original `spec.http`, restored at the end.
pub const ORIGINAL_ROUTES: &str = "canary-gate.io/original-http";
/// On a user's HTTPRoute adopted for a rollout: its original `spec.rules`, restored at the end.
pub const ORIGINAL_RULES: &str = "canary-gate.io/original-rules";
/// Pod label on twin pods so they are never mistaken for stable ones.
pub const TWIN_LABEL: &str = "canary-gate.io/twin";

/// Settings annotations users may write; anything else under the prefix that is not state or
/// an action is a typo the validating webhook reports.
pub const SETTINGS: &[&str] = &[
    ENABLED,
    INTERVAL,
    STEP_WEIGHT,
    MAX_WEIGHT,
    THRESHOLD,
    MIN_SUCCESS_RATE,
    MAX_P99_MS,
    INCONCLUSIVE_LIMIT,
    SERVICE,
    CONFIDENCE,
    MIN_REQUESTS,
    TOLERANCE,
    ROUTER,
    ACTION,
    CONFIRM_DEADLINE,
    NOTIFY,
];

pub const STATE: &[&str] = &[
    PHASE,
    WEIGHT,
    CANARY_REVISION,
    STABLE_REVISION,
    STARTED_AT,
    PHASE_SINCE,
    LAST_CHECK,
    FAILED_CHECKS,
    PASSED_CHECKS,
    INCONCLUSIVE_CHECKS,
    PAUSED_FROM,
    UNREADY_SINCE,
    MESSAGE,
    GATES,
    COUNTS,
    HOOKS,
    ACTION_BY,
];
