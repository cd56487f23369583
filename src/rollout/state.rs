//! The rollout state, kept in the stable Deployment's annotations so that a restart or a new
//! leader resumes exactly where the last one stopped.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::annotations as ann;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Recorded by the webhook; the analyzer has not created the twin yet.
    Pending,
    /// Twin and routes exist; gates are evaluated every interval.
    Progressing,
    /// Gates green at max weight; the stable Deployment is rolling out the validated template.
    Promoting,
    Succeeded,
    Failed,
    /// Held by hand (`canary-gate.io/action: pause`): weight frozen, no judgement.
    Paused,
    /// The stable template was re-applied during a rollout: nothing to release.
    Cancelled,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Pending,
        Phase::Progressing,
        Phase::Promoting,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Paused,
        Phase::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Progressing => "Progressing",
            Phase::Promoting => "Promoting",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Paused => "Paused",
            Phase::Cancelled => "Cancelled",
        }
    }

    /// A terminal phase needs no twin and no split routes.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Cancelled)
    }

    /// While a rollout is active the stable Deployment must stay paused on the old ReplicaSet.
    pub fn holds_stable(self) -> bool {
        matches!(self, Phase::Pending | Phase::Progressing | Phase::Paused)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s).ok_or(())
    }
}

/// Manual actions (`canary-gate.io/action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Promote,
    Abort,
    Pause,
    Resume,
    /// Satisfies `confirm-promotion` (recorded with who approved).
    Approve,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s.trim() {
            "promote" => Some(Action::Promote),
            "abort" => Some(Action::Abort),
            "pause" => Some(Action::Pause),
            "resume" => Some(Action::Resume),
            "approve" => Some(Action::Approve),
            _ => None,
        }
    }

    /// Whether a rollout in `phase` takes this action. The analyzer ignores any other (with
    /// an `ActionIgnored` event); the CLI refuses it up front with the reason.
    pub fn applies_in(self, phase: Phase) -> bool {
        match self {
            Action::Abort => !phase.is_terminal(),
            Action::Promote => matches!(phase, Phase::Pending | Phase::Progressing | Phase::Paused),
            Action::Pause => matches!(phase, Phase::Pending | Phase::Progressing),
            Action::Resume => phase == Phase::Paused,
            Action::Approve => phase == Phase::Progressing,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Promote => "promote",
            Action::Abort => "abort",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Approve => "approve",
        }
    }
}

/// Cumulative request counts since the twin started taking traffic (for sequential judgement).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// canary requests, canary errors, stable requests, stable errors
    #[serde(rename = "c")]
    pub canary: [f64; 2],
    #[serde(rename = "s")]
    pub stable: [f64; 2],
    /// canary requests in the latency histogram, and those slower than the p99 limit
    #[serde(rename = "cl", default)]
    pub canary_slow: [f64; 2],
    /// stable requests in the latency histogram, and those slower than the p99 limit
    #[serde(rename = "sl", default)]
    pub stable_slow: [f64; 2],
}

#[derive(Debug, Clone, PartialEq)]
pub struct RolloutState {
    pub phase: Phase,
    pub weight: u32,
    pub canary_revision: String,
    pub stable_revision: String,
    pub started_at: Timestamp,
    pub phase_since: Timestamp,
    /// End of the last analysed window; the next window starts here (no gap, no overlap).
    pub last_check: Option<Timestamp>,
    pub failed_checks: u32,
    pub passed_checks: u32,
    pub inconclusive_checks: u32,
    /// The phase to return to on `resume`.
    pub paused_from: Option<Phase>,
    /// Since when the twin has been seen without all pods ready while taking traffic.
    pub unready_since: Option<Timestamp>,
    pub message: String,
    /// Last gate values, human readable (`success=99.8% p99=120ms`).
    pub gates: String,
    pub counts: Counts,
    pub hooks: super::hooks::HookState,
}

/// Why the annotations do not hold a usable state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("no rollout recorded")]
    Absent,
    #[error("annotation {annotation}={value:?} is not a valid {what}")]
    Invalid {
        annotation: &'static str,
        value: String,
        what: &'static str,
    },
}

impl RolloutState {
    /// A fresh rollout as recorded by the webhook at admission.
    pub fn pending(canary_revision: String, stable_revision: String, now: Timestamp) -> Self {
        RolloutState {
            phase: Phase::Pending,
            weight: 0,
            canary_revision,
            stable_revision,
            started_at: now,
            phase_since: now,
            last_check: None,
            failed_checks: 0,
            passed_checks: 0,
            inconclusive_checks: 0,
            paused_from: None,
            unready_since: None,
            message: "waiting for the analyzer to create the canary".into(),
            gates: String::new(),
            counts: Counts::default(),
            hooks: Default::default(),
        }
    }

    pub fn from_annotations(a: &BTreeMap<String, String>) -> Result<Self, StateError> {
        let Some(phase_raw) = a.get(ann::PHASE) else {
            return Err(StateError::Absent);
        };
        let phase = phase_raw.parse().map_err(|()| StateError::Invalid {
            annotation: ann::PHASE,
            value: phase_raw.clone(),
            what: "phase",
        })?;
        let text = |key: &str| a.get(key).cloned().unwrap_or_default();
        let started_at = timestamp(a, ann::STARTED_AT)?.unwrap_or(Timestamp::UNIX_EPOCH);
        Ok(RolloutState {
            phase,
            weight: number(a, ann::WEIGHT)?.unwrap_or(0).min(100),
            canary_revision: text(ann::CANARY_REVISION),
            stable_revision: text(ann::STABLE_REVISION),
            started_at,
            phase_since: timestamp(a, ann::PHASE_SINCE)?.unwrap_or(started_at),
            last_check: timestamp(a, ann::LAST_CHECK)?,
            failed_checks: number(a, ann::FAILED_CHECKS)?.unwrap_or(0),
            passed_checks: number(a, ann::PASSED_CHECKS)?.unwrap_or(0),
            inconclusive_checks: number(a, ann::INCONCLUSIVE_CHECKS)?.unwrap_or(0),
            paused_from: a.get(ann::PAUSED_FROM).and_then(|p| p.parse().ok()),
            unready_since: timestamp(a, ann::UNREADY_SINCE)?,
            message: text(ann::MESSAGE),
            gates: text(ann::GATES),
            counts: a
                .get(ann::COUNTS)
                .and_then(|c| serde_json::from_str(c).ok())
                .unwrap_or_default(),
            hooks: a
                .get(ann::HOOKS)
                .and_then(|h| serde_json::from_str(h).ok())
                .unwrap_or_default(),
        })
    }

    /// Every state annotation with its value; `None` means "remove". In key order, so that
    /// patches built from it come out the same every time; an array, not a map, because the
    /// webhook builds one per release it starts.
    pub fn to_annotations(&self) -> [(&'static str, Option<String>); 16] {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        [
            (ann::CANARY_REVISION, opt(&self.canary_revision)),
            (
                ann::COUNTS,
                (self.counts != Counts::default())
                    .then(|| serde_json::to_string(&self.counts).unwrap_or_default()),
            ),
            (ann::FAILED_CHECKS, Some(self.failed_checks.to_string())),
            (ann::GATES, opt(&self.gates)),
            (
                ann::HOOKS,
                (!self.hooks.is_empty())
                    .then(|| serde_json::to_string(&self.hooks).unwrap_or_default()),
            ),
            (
                ann::INCONCLUSIVE_CHECKS,
                Some(self.inconclusive_checks.to_string()),
            ),
            (ann::LAST_CHECK, self.last_check.map(|t| t.to_string())),
            (ann::MESSAGE, opt(&self.message)),
            (ann::PASSED_CHECKS, Some(self.passed_checks.to_string())),
            (ann::PAUSED_FROM, self.paused_from.map(|p| p.to_string())),
            (ann::PHASE, Some(self.phase.to_string())),
            (ann::PHASE_SINCE, Some(self.phase_since.to_string())),
            (ann::STABLE_REVISION, opt(&self.stable_revision)),
            (ann::STARTED_AT, Some(self.started_at.to_string())),
            (
                ann::UNREADY_SINCE,
                self.unready_since.map(|t| t.to_string()),
            ),
            (ann::WEIGHT, Some(self.weight.to_string())),
        ]
    }
}

fn number(a: &BTreeMap<String, String>, key: &'static str) -> Result<Option<u32>, StateError> {
    a.get(key)
        .map(|v| {
            v.trim().parse().map_err(|_| StateError::Invalid {
                annotation: key,
                value: v.clone(),
                what: "whole number",
            })
        })
        .transpose()
}

fn timestamp(
    a: &BTreeMap<String, String>,
    key: &'static str,
) -> Result<Option<Timestamp>, StateError> {
    a.get(key)
        .map(|v| {
            v.trim().parse().map_err(|_| StateError::Invalid {
                annotation: key,
                value: v.clone(),
                what: "RFC 3339 timestamp",
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_annotations() {
        let now: Timestamp = "2026-11-27T10:00:00Z".parse().expect("ts");
        let mut s = RolloutState::pending("abc".into(), "def".into(), now);
        s.phase = Phase::Paused;
        s.paused_from = Some(Phase::Progressing);
        s.weight = 30;
        s.last_check = Some(now);
        s.failed_checks = 2;
        s.counts.canary = [120.0, 3.0];
        s.hooks.waiting_since = Some(now);
        s.hooks.post_rollout_sent = true;
        let map: BTreeMap<String, String> = s
            .to_annotations()
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect();
        assert_eq!(RolloutState::from_annotations(&map), Ok(s));
    }

    #[test]
    fn annotations_come_in_key_order_once_each() {
        let s = RolloutState::pending("abc".into(), "def".into(), Timestamp::UNIX_EPOCH);
        let keys: Vec<&str> = s.to_annotations().iter().map(|(k, _)| *k).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert!(keys.iter().all(|k| k.starts_with(ann::PREFIX)), "{keys:?}");
    }

    #[test]
    fn absent_and_invalid_states() {
        assert_eq!(
            RolloutState::from_annotations(&BTreeMap::new()),
            Err(StateError::Absent)
        );
        let bad = BTreeMap::from([(ann::PHASE.to_string(), "Exploding".to_string())]);
        assert!(matches!(
            RolloutState::from_annotations(&bad),
            Err(StateError::Invalid { .. })
        ));
        let bad = BTreeMap::from([
            (ann::PHASE.to_string(), "Progressing".to_string()),
            (ann::WEIGHT.to_string(), "ten".to_string()),
        ]);
        assert!(matches!(
            RolloutState::from_annotations(&bad),
            Err(StateError::Invalid {
                annotation: ann::WEIGHT,
                ..
            })
        ));
    }

    #[test]
    fn phases_parse_and_classify() {
        for p in Phase::ALL {
            assert_eq!(p.as_str().parse::<Phase>(), Ok(p));
        }
        assert!(Phase::Failed.is_terminal() && !Phase::Paused.is_terminal());
        assert!(Phase::Progressing.holds_stable() && !Phase::Promoting.holds_stable());
    }
}
