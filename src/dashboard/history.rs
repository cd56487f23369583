//! What the analyzer has seen of each rollout, in memory: the weight over time, every check
//! (canary against stable, the evidence), decisions and events. Bounded (the last
//! [`MAX_POINTS`] points per series, [`MAX_EVENTS`] events, finished rollouts forgotten after
//! [`FORGET_AFTER`]); no database. After a restart a rollout is seeded from what its
//! Deployment's annotations hold (phase, weight, last gate values, cumulative counts).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::gates::judge_config;
use crate::judge::{self, JudgeConfig};
use crate::rollout::machine::{Analysis, Effect, EventType, Verdict};
use crate::rollout::state::{Counts, RolloutState};
use crate::settings::Settings;

/// Points kept per series (weights, checks, decisions) per rollout.
pub const MAX_POINTS: usize = 200;
/// Events kept per rollout.
pub const MAX_EVENTS: usize = 100;
/// A finished rollout is forgotten this long after its last change.
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Rollouts remembered at most (the oldest finished ones go first).
pub const MAX_ROLLOUTS: usize = 5000;

/// A point in time as the dashboard shows it: RFC 3339 and Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct At {
    pub at: String,
    pub ms: i64,
}

impl From<Timestamp> for At {
    fn from(t: Timestamp) -> Self {
        At {
            at: t.to_string(),
            ms: t.as_millisecond(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightPoint {
    #[serde(flatten)]
    pub at: At,
    pub weight: u32,
    pub phase: String,
}

/// One analysis window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckPoint {
    #[serde(flatten)]
    pub at: At,
    /// The weight the window ran at.
    pub weight: u32,
    /// `pass`, `fail`, `no-data`, `not-enough-data`, `undecided`, `stable-degraded`, or
    /// `restored` (seeded from the annotations after a restart).
    pub verdict: &'static str,
    pub reason: String,
    /// The decision the check led to (`step`, `promote`, `rollback`, ...), if any.
    pub decision: Option<&'static str>,
    /// Success rate in the window, percent (None: no requests).
    pub canary_success: Option<f64>,
    pub stable_success: Option<f64>,
    pub canary_p99_ms: Option<f64>,
    pub stable_p99_ms: Option<f64>,
    /// Canary requests in the window.
    pub canary_requests: f64,
    /// `ln E` of the error-rate e-process on the cumulative counts (judge::evidence).
    pub log_e_errors: f64,
    /// `ln E` of the slow-request e-process (share above the p99 limit), when measured.
    pub log_e_slow: Option<f64>,
    /// The gate values as the analyzer summarised them.
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventPoint {
    #[serde(flatten)]
    pub at: At,
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionPoint {
    #[serde(flatten)]
    pub at: At,
    pub decision: &'static str,
    /// The weight after the decision.
    pub weight: u32,
}

/// Everything remembered of one rollout (one canary revision of one Deployment).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RolloutHistory {
    pub canary_revision: String,
    /// Seeded from annotations (this process did not see the start).
    pub restored: bool,
    pub weights: VecDeque<WeightPoint>,
    pub checks: VecDeque<CheckPoint>,
    pub decisions: VecDeque<DecisionPoint>,
    pub events: VecDeque<EventPoint>,
    #[serde(skip)]
    started_ms: i64,
    #[serde(skip)]
    updated_ms: i64,
    #[serde(skip)]
    terminal: bool,
}

fn push<T>(q: &mut VecDeque<T>, v: T, max: usize) {
    q.push_back(v);
    while q.len() > max {
        q.pop_front();
    }
}

type Key = (String, String);

/// The in-memory history of every rollout this process has seen.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<BTreeMap<Key, RolloutHistory>>,
}

/// The log e-values for cumulative counts: errors, and slow requests when measured.
pub fn log_evidence(counts: &Counts, cfg: &JudgeConfig) -> (f64, Option<f64>) {
    let errors = judge::evidence(
        judge::Counts::new(counts.canary[0], counts.canary[1]),
        judge::Counts::new(counts.stable[0], counts.stable[1]),
        cfg,
    )
    .log_e_acceptable;
    let slow = (counts.canary_slow[0] > 0.0).then(|| {
        let slow_cfg = JudgeConfig {
            max_error_rate: 0.01,
            ..cfg.clone()
        };
        judge::evidence(
            judge::Counts::new(counts.canary_slow[0], counts.canary_slow[1]),
            judge::Counts::new(counts.stable_slow[0], counts.stable_slow[1]),
            &slow_cfg,
        )
        .log_e_acceptable
    });
    (finite(errors), slow.map(finite))
}

fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else if v > 0.0 {
        1e6
    } else {
        -1e6
    }
}

/// The success rate (percent) of the requests between two cumulative counts.
pub fn window_success(before: [f64; 2], after: [f64; 2]) -> Option<f64> {
    let n = after[0] - before[0];
    let e = (after[1] - before[1]).clamp(0.0, n.max(0.0));
    (n >= 0.5).then(|| 100.0 * (1.0 - e / n))
}

/// `p99=118ms (stable 121ms)` in the analyzer's gate summary (`gates::evaluate`): the canary
/// and stable p99 of the window, in milliseconds.
pub fn parse_p99(summary: &str) -> (Option<f64>, Option<f64>) {
    let Some(rest) = summary.split_once("p99=").map(|(_, r)| r) else {
        return (None, None);
    };
    let ms = |s: &str| s.strip_suffix("ms").and_then(|v| v.parse::<f64>().ok());
    let canary = rest.split_whitespace().next().and_then(ms);
    let stable = rest
        .split_once("(stable ")
        .and_then(|(_, r)| r.split(')').next())
        .and_then(ms);
    (canary, stable)
}

/// `success=99.92% (stable 99.90%)` in the gate summary: cumulative success rates, percent.
pub fn parse_success(summary: &str) -> (Option<f64>, Option<f64>) {
    let Some(rest) = summary.split_once("success=").map(|(_, r)| r) else {
        return (None, None);
    };
    let pct = |s: &str| s.strip_suffix('%').and_then(|v| v.parse::<f64>().ok());
    let canary = rest.split_whitespace().next().and_then(pct);
    let stable = rest
        .split_once("(stable ")
        .and_then(|(_, r)| r.split(')').next())
        .and_then(pct);
    (canary, stable)
}

fn verdict_name(v: &Verdict) -> (&'static str, String) {
    match v {
        Verdict::Pass => ("pass", String::new()),
        Verdict::Fail { reason, .. } => ("fail", reason.clone()),
        Verdict::NoData { reason } => ("no-data", reason.clone()),
        Verdict::NotEnoughData { reason } => ("not-enough-data", reason.clone()),
        Verdict::Undecided { reason } => ("undecided", reason.clone()),
        Verdict::StableDegraded { reason } => ("stable-degraded", reason.clone()),
    }
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, RolloutHistory>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of one rollout's history.
    pub fn get(&self, ns: &str, name: &str) -> Option<RolloutHistory> {
        self.lock()
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// The last check of one rollout.
    pub fn last_check(&self, ns: &str, name: &str) -> Option<CheckPoint> {
        self.lock()
            .get(&(ns.to_string(), name.to_string()))
            .and_then(|h| h.checks.back().cloned())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes sure a rollout read from the cluster has a history: after a restart (or for a
    /// rollout this process never worked on) it is seeded from the annotations.
    pub fn observe(&self, ns: &str, name: &str, state: &RolloutState, settings: &Settings) {
        let mut map = self.lock();
        let key = (ns.to_string(), name.to_string());
        let fresh = map.get(&key).is_none_or(|h| !same_rollout(h, state));
        if fresh {
            map.insert(key, seeded(state, settings));
            bound(&mut map);
        }
    }

    /// Records one step of the analyzer: the check it judged (if any), the decisions and
    /// events it produced, the weight and phase it moved to. Cheap when nothing happened.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        key: (&str, &str),
        settings: &Settings,
        before: &RolloutState,
        after: &RolloutState,
        analysis: Option<&Analysis>,
        effects: &[Effect],
        now: Timestamp,
    ) {
        let mut map = self.lock();
        let k = (key.0.to_string(), key.1.to_string());
        if map.get(&k).is_none_or(|h| !same_rollout(h, after)) {
            // A new rollout (or a restart): start from what the state before this step says.
            let mut h = seeded(before, settings);
            if before.canary_revision != after.canary_revision
                || before.started_at != after.started_at
            {
                h = seeded(after, settings);
            }
            map.insert(k.clone(), h);
        }
        let Some(h) = map.get_mut(&k) else {
            return;
        };
        let mut changed = false;
        if let Some(a) = analysis {
            let (verdict, reason) = verdict_name(&a.verdict);
            let (canary_p99_ms, stable_p99_ms) = parse_p99(&a.summary);
            let (log_e_errors, log_e_slow) = log_evidence(&a.counts, &judge_config(settings));
            let decision = effects.iter().find_map(|e| match e {
                Effect::Decision(d) => Some(*d),
                _ => None,
            });
            push(
                &mut h.checks,
                CheckPoint {
                    at: now.into(),
                    weight: before.weight,
                    verdict,
                    reason,
                    decision,
                    canary_success: window_success(before.counts.canary, a.counts.canary),
                    stable_success: window_success(before.counts.stable, a.counts.stable),
                    canary_p99_ms,
                    stable_p99_ms,
                    canary_requests: (a.counts.canary[0] - before.counts.canary[0]).max(0.0),
                    log_e_errors,
                    log_e_slow,
                    summary: a.summary.clone(),
                },
                MAX_POINTS,
            );
            changed = true;
        }
        for e in effects {
            match e {
                Effect::Decision(d) => {
                    push(
                        &mut h.decisions,
                        DecisionPoint {
                            at: now.into(),
                            decision: d,
                            weight: after.weight,
                        },
                        MAX_POINTS,
                    );
                    changed = true;
                }
                Effect::Event {
                    kind,
                    reason,
                    message,
                } => {
                    push(
                        &mut h.events,
                        EventPoint {
                            at: now.into(),
                            warning: *kind == EventType::Warning,
                            reason: reason.to_string(),
                            message: message.clone(),
                        },
                        MAX_EVENTS,
                    );
                    changed = true;
                }
                Effect::Check(_) | Effect::ClearAction | Effect::CallHooks(_) => {}
            }
        }
        let moved = h
            .weights
            .back()
            .is_none_or(|w| w.weight != after.weight || w.phase != after.phase.as_str());
        if moved {
            push(
                &mut h.weights,
                WeightPoint {
                    at: now.into(),
                    weight: after.weight,
                    phase: after.phase.to_string(),
                },
                MAX_POINTS,
            );
            changed = true;
        }
        if changed {
            h.updated_ms = now.as_millisecond();
            h.terminal = after.phase.is_terminal();
        }
        if moved && after.phase.is_terminal() {
            forget_old(&mut map, now);
        }
    }

    /// Drops finished rollouts not changed for [`FORGET_AFTER`].
    pub fn forget_finished(&self, now: Timestamp) {
        forget_old(&mut self.lock(), now);
    }
}

fn same_rollout(h: &RolloutHistory, state: &RolloutState) -> bool {
    h.canary_revision == state.canary_revision && h.started_ms == state.started_at.as_millisecond()
}

fn seeded(state: &RolloutState, settings: &Settings) -> RolloutHistory {
    let mut h = RolloutHistory {
        canary_revision: state.canary_revision.clone(),
        restored: true,
        started_ms: state.started_at.as_millisecond(),
        updated_ms: state.phase_since.as_millisecond(),
        terminal: state.phase.is_terminal(),
        ..RolloutHistory::default()
    };
    h.weights.push_back(WeightPoint {
        at: state.phase_since.into(),
        weight: state.weight,
        phase: state.phase.to_string(),
    });
    if let (Some(at), false) = (state.last_check, state.gates.is_empty()) {
        let (canary_success, stable_success) = parse_success(&state.gates);
        let (canary_p99_ms, stable_p99_ms) = parse_p99(&state.gates);
        let (log_e_errors, log_e_slow) = log_evidence(&state.counts, &judge_config(settings));
        h.checks.push_back(CheckPoint {
            at: at.into(),
            weight: state.weight,
            verdict: "restored",
            reason: "last check before this process started (from the annotations)".into(),
            decision: None,
            canary_success,
            stable_success,
            canary_p99_ms,
            stable_p99_ms,
            canary_requests: state.counts.canary[0],
            log_e_errors,
            log_e_slow,
            summary: state.gates.clone(),
        });
    }
    h
}

fn forget_old(map: &mut BTreeMap<Key, RolloutHistory>, now: Timestamp) {
    let cutoff = now.as_millisecond() - FORGET_AFTER.as_millis() as i64;
    map.retain(|_, h| !(h.terminal && h.updated_ms < cutoff));
}

fn bound(map: &mut BTreeMap<Key, RolloutHistory>) {
    while map.len() > MAX_ROLLOUTS {
        // The least recently changed finished rollout, else the least recently changed one.
        let victim = map
            .iter()
            .min_by_key(|(_, h)| (!h.terminal, h.updated_ms))
            .map(|(k, _)| k.clone());
        match victim {
            Some(k) => {
                map.remove(&k);
            }
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::state::Phase;
    use crate::settings::Defaults;

    fn settings() -> Settings {
        Settings::from(&Defaults::default())
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn parses_the_gate_summary_the_analyzer_writes() {
        // The summary comes from gates::evaluate: parse what it really produces.
        let data = crate::gates::WindowData {
            canary: crate::gates::Measured {
                requests: Some(1000.0),
                errors: Some(2.0),
                p99_ms: Some(118.4),
                slow: None,
            },
            stable: crate::gates::Measured {
                requests: Some(9000.0),
                errors: Some(9.0),
                p99_ms: Some(121.0),
                slow: None,
            },
            custom: vec![],
        };
        let a = crate::gates::evaluate(&settings(), 10, Counts::default(), Ok(data));
        assert_eq!(parse_p99(&a.summary), (Some(118.0), Some(121.0)));
        assert_eq!(parse_success(&a.summary), (Some(99.8), Some(99.9)));
        assert_eq!(parse_p99("p99=n/a (stable n/a)"), (None, None));
        assert_eq!(parse_p99("nothing"), (None, None));
    }

    #[test]
    fn window_success_is_per_window() {
        assert_eq!(window_success([100.0, 1.0], [300.0, 3.0]), Some(99.0));
        assert_eq!(window_success([100.0, 1.0], [100.0, 1.0]), None);
    }

    #[test]
    fn records_checks_weights_and_decisions_bounded() {
        let h = History::new();
        let t0 = ts("2026-01-01T00:00:00Z");
        let mut before = RolloutState::pending("c1".into(), "s1".into(), t0);
        before.phase = Phase::Progressing;
        before.weight = 10;
        for i in 0..(MAX_POINTS + 50) {
            let mut after = before.clone();
            after.weight = 10 + (i as u32 % 5) * 10;
            after.counts.canary = [before.counts.canary[0] + 100.0, 0.0];
            let a = Analysis {
                verdict: Verdict::Pass,
                summary: "success=100.00% (stable 100.00%) p99=100ms (stable 90ms)".into(),
                counts: after.counts,
            };
            h.record(
                ("shop", "podinfo"),
                &settings(),
                &before,
                &after,
                Some(&a),
                &[Effect::Decision("step")],
                t0 + jiff::SignedDuration::from_secs(i as i64),
            );
            before = after;
        }
        let r = h.get("shop", "podinfo").expect("history");
        assert_eq!(r.checks.len(), MAX_POINTS);
        assert_eq!(r.decisions.len(), MAX_POINTS);
        assert!(r.weights.len() <= MAX_POINTS);
        let last = r.checks.back().expect("a check");
        assert_eq!(last.canary_success, Some(100.0));
        assert_eq!(
            (last.canary_p99_ms, last.stable_p99_ms),
            (Some(100.0), Some(90.0))
        );
        assert_eq!(last.decision, Some("step"));
    }

    #[test]
    fn seeds_from_annotations_and_forgets_finished_rollouts() {
        let h = History::new();
        let t0 = ts("2026-01-01T00:00:00Z");
        let mut s = RolloutState::pending("c1".into(), "s1".into(), t0);
        s.phase = Phase::Progressing;
        s.weight = 30;
        s.last_check = Some(t0);
        s.gates = "success=99.50% (stable 99.90%) p99=120ms (stable 110ms) requests=900".into();
        s.counts.canary = [900.0, 4.5];
        s.counts.stable = [9000.0, 9.0];
        h.observe("shop", "podinfo", &s, &settings());
        let r = h.get("shop", "podinfo").expect("seeded");
        assert!(r.restored);
        assert_eq!(r.weights.back().map(|w| w.weight), Some(30));
        assert_eq!(r.checks.len(), 1);
        assert_eq!(r.checks[0].verdict, "restored");
        assert_eq!(r.checks[0].canary_p99_ms, Some(120.0));
        // Observing the same rollout again keeps what was recorded.
        h.observe("shop", "podinfo", &s, &settings());
        assert_eq!(h.get("shop", "podinfo").map(|r| r.checks.len()), Some(1));
        // Finished, then forgotten after FORGET_AFTER.
        let mut done = s.clone();
        done.phase = Phase::Succeeded;
        done.weight = 0;
        h.record(("shop", "podinfo"), &settings(), &s, &done, None, &[], t0);
        h.forget_finished(t0 + jiff::SignedDuration::from_secs(60));
        assert!(h.get("shop", "podinfo").is_some());
        h.forget_finished(t0 + jiff::SignedDuration::from_secs(2 * 3600));
        assert!(h.get("shop", "podinfo").is_none());
    }
}
