//! The rollout state machine: `(state, observation, now) -> (state, effects)`. Pure: all
//! inputs come in the observation, all outputs are a new state plus effects (events,
//! decisions) that the analyzer executes. The objects in the cluster are reconciled to the
//! *state* afterwards (`rollout::world`), so a crash between steps is repaired by the next run.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::hooks::{self, HookKind, HookResult};
use super::state::{Action, Counts, Phase, RolloutState};
use crate::settings::Settings;

/// The twin Deployment as seen in the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum TwinStatus {
    /// Not created yet (or already deleted).
    Missing,
    /// Created, pods not all ready yet.
    Starting {
        ready: u32,
        wanted: u32,
    },
    Ready,
}

/// The outcome of one analysis window.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every gate green.
    Pass,
    /// A gate failed. `decisive` means the evidence alone justifies a rollback now (a
    /// sequential test crossed its boundary), not after `threshold` failed checks.
    Fail { reason: String, decisive: bool },
    /// No usable data: Prometheus error, no series, NaN, or no canary traffic at all.
    NoData { reason: String },
    /// Traffic flows but not enough requests for a judgement yet: hold the weight.
    NotEnoughData { reason: String },
    /// Enough data but not decisive either way yet: hold the weight.
    Undecided { reason: String },
    /// The stable version is unhealthy too and the canary is no worse: not its fault.
    StableDegraded { reason: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub verdict: Verdict,
    /// Human-readable gate values, e.g. `success=99.8% p99=120ms`.
    pub summary: String,
    /// Cumulative counts including this window.
    pub counts: Counts,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub twin: TwinStatus,
    /// During promotion: the stable Deployment runs the canary revision on all replicas.
    pub stable_rolled_out: bool,
    /// The result of this interval's analysis; `None` when no check was due or it was skipped.
    pub analysis: Option<Analysis>,
    /// A look between checks at the evidence so far (the last check's counts plus the window
    /// up to now). Only decisive evidence acts on it: an early rollback. Anything else leaves
    /// the state as it is; the next check judges the whole window.
    pub peek: Option<Analysis>,
    /// Hook calls that finished since the last tick (they run outside the tick, so a slow
    /// hook never holds up another rollout).
    pub hooks: Vec<HookResult>,
    /// A manual action found on the Deployment.
    pub action: Option<Action>,
    /// Who set the action, as the mutating webhook recorded it from the AdmissionReview.
    pub action_by: Option<String>,
    /// Time allowed for the twin to become ready (the Deployment's progressDeadlineSeconds).
    pub progress_deadline: Duration,
    /// Why the canary cannot be set up at all (e.g. no Service selects the pods).
    pub setup_error: Option<String>,
    /// The cluster was just brought back in line with the state (after a failed write or a
    /// restart): traffic may not have run at the recorded weight, so the next analysis
    /// window starts now.
    pub fresh_window: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A Kubernetes Event on the stable Deployment.
    Event {
        kind: EventType,
        reason: &'static str,
        message: String,
    },
    /// Count a decision in metrics (`step`, `promote`, `rollback`, ...).
    Decision(&'static str),
    /// Count a check result in metrics (`passed`, `failed`, `inconclusive`, ...).
    Check(&'static str),
    /// Remove the `canary-gate.io/action` annotation: it was handled.
    ClearAction,
    /// Call the hooks of this kind now and forget the answers (`post-rollout`). Emitted once
    /// per rollout, after the state that says so is persisted: never twice after a restart.
    CallHooks(HookKind),
}

/// Is an analysis of this rollout due at `now`? Only then does the analyzer query Prometheus.
pub fn check_due(
    state: &RolloutState,
    settings: &Settings,
    twin_ready: bool,
    now: Timestamp,
) -> bool {
    state.phase == Phase::Progressing
        && twin_ready
        && state.weight > 0
        && state
            .last_check
            .is_some_and(|t| now + DUE_SLACK >= t + as_signed(settings.interval))
}

/// A check or a look is due this much early: ticks run a few milliseconds late or early, and
/// a check due at `last_check + interval` must not slip a whole tick because this tick's
/// clock read 3 ms short of it. Windows are exact (milliseconds), so nothing is lost.
pub const DUE_SLACK: SignedDuration = SignedDuration::from_millis(200);

/// A look between checks is useful: a Progressing canary with traffic, not due for its check,
/// with at least `every` of new evidence since the last check.
pub fn peek_due(
    state: &RolloutState,
    settings: &Settings,
    twin_ready: bool,
    every: Duration,
    now: Timestamp,
) -> bool {
    state.phase == Phase::Progressing
        && twin_ready
        && state.weight > 0
        && !check_due(state, settings, twin_ready, now)
        && state
            .last_check
            .is_some_and(|t| now + DUE_SLACK >= t + as_signed(every))
}

/// The window the next analysis covers: from the end of the last one to now, to the
/// millisecond (consecutive windows neither overlap nor leave a gap), at least a second.
pub fn analysis_window(state: &RolloutState, now: Timestamp) -> Option<Duration> {
    let since = state.last_check?;
    let d = now.duration_since(since);
    (d > SignedDuration::ZERO).then(|| Duration::from_millis(d.as_millis().max(1000) as u64))
}

/// `by ana` for an action the webhook attributed, `by hand` otherwise.
fn by(obs: &Observation) -> String {
    obs.action_by
        .as_ref()
        .map_or_else(|| "by hand".to_string(), |who| format!("by {who}"))
}

pub(crate) fn as_signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

pub fn step(
    state: &RolloutState,
    obs: &Observation,
    settings: &Settings,
    now: Timestamp,
) -> (RolloutState, Vec<Effect>) {
    let mut m = Machine {
        s: state.clone(),
        effects: Vec::new(),
        now,
    };
    if let Some(action) = obs.action {
        m.effects.push(Effect::ClearAction);
        if m.manual(action, obs, settings) {
            m.post_rollout(state.phase, settings);
            return m.finish();
        }
    }
    if let (Some(reason), Phase::Pending | Phase::Progressing) = (&obs.setup_error, state.phase) {
        m.rollback(reason.clone());
        m.post_rollout(state.phase, settings);
        return m.finish();
    }
    match state.phase {
        Phase::Pending => m.confirm_then_start(obs, settings),
        Phase::Progressing => m.progress(obs, settings),
        Phase::Promoting => m.promoting(obs),
        Phase::Paused | Phase::Succeeded | Phase::Failed | Phase::Cancelled => {}
    }
    m.post_rollout(state.phase, settings);
    m.finish()
}

struct Machine {
    s: RolloutState,
    effects: Vec<Effect>,
    now: Timestamp,
}

/// Why a check held the weight (see `Machine::held`); read back from the message it wrote.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Held {
    NotEnoughData,
    Undecided,
    StableDegraded,
}

impl Held {
    fn reason(self) -> &'static str {
        match self {
            Held::NotEnoughData => "NotEnoughData",
            Held::Undecided => "Undecided",
            Held::StableDegraded => "StableDegraded",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Held::NotEnoughData => "not enough data yet: ",
            Held::Undecided => "not decisive yet: ",
            Held::StableDegraded => "the stable is degraded too: ",
        }
    }

    fn kind(self) -> EventType {
        match self {
            Held::NotEnoughData | Held::Undecided => EventType::Normal,
            Held::StableDegraded => EventType::Warning,
        }
    }

    fn message(self, reason: &str) -> String {
        let tail = match self {
            Held::StableDegraded => "the canary is not worse, weight held",
            Held::NotEnoughData | Held::Undecided => "weight held",
        };
        format!("{}{reason}; {tail}", self.prefix())
    }

    /// Whether `message` is one this reason wrote.
    fn is(self, message: &str) -> bool {
        message.starts_with(self.prefix()) && message.ends_with("weight held")
    }
}

impl Machine {
    fn finish(self) -> (RolloutState, Vec<Effect>) {
        (self.s, self.effects)
    }

    fn event(&mut self, kind: EventType, reason: &'static str, message: String) {
        self.s.message = message.clone();
        self.effects.push(Effect::Event {
            kind,
            reason,
            message,
        });
    }

    /// A check that holds the weight: its message is recorded every time, but the Event
    /// (an API write each) only when the previous check did not hold for the same reason.
    /// Ten thousand rollouts waiting for traffic must not write ten thousand Events per
    /// interval that say what the last ones said.
    fn held(&mut self, why: Held, reason: &str) {
        let message = why.message(reason);
        if why.is(&self.s.message) {
            self.s.message = message;
        } else {
            self.event(why.kind(), why.reason(), message);
        }
    }

    fn enter(&mut self, phase: Phase) {
        self.s.phase = phase;
        self.s.phase_since = self.now;
    }

    /// Returns true when the action decided this tick.
    fn manual(&mut self, action: Action, obs: &Observation, settings: &Settings) -> bool {
        let phase = self.s.phase;
        if !action.applies_in(phase) {
            self.event(
                EventType::Warning,
                "ActionIgnored",
                format!("action {} ignored in phase {phase}", action.as_str()),
            );
            return false;
        }
        match action {
            Action::Abort => {
                self.rollback(format!("aborted {} (canary-gate.io/action=abort)", by(obs)));
                true
            }
            Action::Promote => {
                // While the stable Deployment rolls, the canary carries as much traffic as a
                // rollout ever gives it, but only if its pods can answer: a promote issued
                // while the twin starts must not send half the traffic to no endpoints.
                let message = if obs.twin == TwinStatus::Ready {
                    self.s.weight = settings.max_weight;
                    format!("promoted {} (canary-gate.io/action=promote)", by(obs))
                } else {
                    self.s.weight = 0;
                    format!("promoted {} (canary-gate.io/action=promote) before the canary was ready; its traffic stays on the stable Deployment", by(obs))
                };
                self.promote(message);
                true
            }
            Action::Pause => {
                self.s.paused_from = Some(phase);
                self.enter(Phase::Paused);
                self.effects.push(Effect::Decision("pause"));
                let weight = self.s.weight;
                self.event(
                    EventType::Normal,
                    "Paused",
                    format!(
                        "paused {} at {weight} %; resume with canary-gate.io/action=resume",
                        by(obs)
                    ),
                );
                true
            }
            Action::Approve => {
                let who = obs
                    .action_by
                    .clone()
                    .unwrap_or_else(|| "an unknown user".into());
                self.s.hooks.promotion_confirmed_by = Some(format!("{who} (canary-gate approve)"));
                if self.s.hooks.waiting_since.take().is_some() {
                    let w = self.s.weight;
                    self.promote(format!("all gates green at {w} %, approved by {who}"));
                    return true;
                }
                let w = self.s.weight;
                self.event(
                    EventType::Normal,
                    "Approved",
                    format!("promotion approved by {who} at {w} %; it follows the first green check at max weight"),
                );
                false
            }
            Action::Resume => {
                let back = self.s.paused_from.take().unwrap_or(Phase::Progressing);
                self.enter(back);
                // A fresh window: what happened while paused is not judged.
                if self.s.last_check.is_some() {
                    self.s.last_check = Some(self.now);
                }
                self.effects.push(Effect::Decision("resume"));
                let weight = self.s.weight;
                self.event(
                    EventType::Normal,
                    "Resumed",
                    format!(
                        "resumed at {weight} %{}",
                        obs.action_by
                            .as_ref()
                            .map(|w| format!(" by {w}"))
                            .unwrap_or_default()
                    ),
                );
                true
            }
        }
    }

    /// `post-rollout` hooks once, when the rollout has just ended Succeeded or Failed.
    fn post_rollout(&mut self, from: Phase, settings: &Settings) {
        let ended = matches!(self.s.phase, Phase::Succeeded | Phase::Failed) && !from.is_terminal();
        let wanted = hooks::of_kind(&settings.hooks, HookKind::PostRollout)
            .next()
            .is_some();
        if ended && wanted && !self.s.hooks.post_rollout_sent {
            self.s.hooks.post_rollout_sent = true;
            self.effects.push(Effect::CallHooks(HookKind::PostRollout));
        }
    }

    /// The twin is ready: with `pre-rollout` hooks, its first traffic waits until they all
    /// pass; a failure is a failed check, retried every interval, up to `threshold`.
    fn pre_rollout(&mut self, obs: &Observation, settings: &Settings) -> bool {
        if hooks::of_kind(&settings.hooks, HookKind::PreRollout)
            .next()
            .is_none()
        {
            return true;
        }
        match hooks::results_of(&obs.hooks, HookKind::PreRollout) {
            Some(rs) if rs.iter().all(|r| r.passed()) => {
                self.s.hooks.last_call = None;
                true
            }
            Some(rs) => {
                self.s.hooks.last_call = Some(self.now);
                let why = hooks::failures(&rs);
                self.failed_check(why, settings);
                false
            }
            None => false,
        }
    }

    /// Pending: with `confirm-rollout` hooks, wait (no twin yet) until they all pass, up to
    /// `confirm-deadline`; then start.
    fn confirm_then_start(&mut self, obs: &Observation, settings: &Settings) {
        if hooks::of_kind(&settings.hooks, HookKind::ConfirmRollout)
            .next()
            .is_none()
        {
            return self.start(settings);
        }
        match hooks::results_of(&obs.hooks, HookKind::ConfirmRollout) {
            Some(rs) if rs.iter().all(|r| r.passed()) => {
                self.s.hooks.waiting_since = None;
                self.s.hooks.last_call = None;
                self.start(settings);
            }
            Some(rs) => {
                self.s.hooks.last_call = Some(self.now);
                let why = hooks::failures(&rs);
                let first = self.s.hooks.waiting_since.is_none();
                let since = *self.s.hooks.waiting_since.get_or_insert(self.now);
                let deadline = humantime::format_duration(settings.confirm_deadline);
                let message = format!("waiting for confirmation ({why}); cancelled if not confirmed within {deadline}");
                if first {
                    self.event(EventType::Normal, "WaitingForConfirmation", message);
                } else {
                    self.s.message = message;
                }
                if self.now.duration_since(since) > as_signed(settings.confirm_deadline) {
                    self.enter(Phase::Cancelled);
                    self.s.weight = 0;
                    self.effects.push(Effect::Decision("cancel"));
                    self.event(
                        EventType::Warning,
                        "Cancelled",
                        format!("cancelled: not confirmed within {deadline} ({why}); the stable Deployment keeps its old ReplicaSet"),
                    );
                }
            }
            None => {}
        }
    }

    /// Hook answers while the canary takes traffic: `rollback` (2xx rolls back now),
    /// `rollout` (a failure is a failed check), `confirm-promotion` (a pass lets a held
    /// promotion go). Returns true when the rollout was decided.
    fn traffic_hooks(&mut self, obs: &Observation, settings: &Settings) -> bool {
        if let Some(rs) = hooks::results_of(&obs.hooks, HookKind::Rollback) {
            if let Some(r) = rs.iter().find(|r| r.passed()) {
                self.rollback(format!("the rollback hook {} answered 2xx", r.name));
                return true;
            }
        }
        if let Some(rs) = hooks::results_of(&obs.hooks, HookKind::Rollout) {
            if rs.iter().any(|r| !r.passed()) {
                self.failed_check(hooks::failures(&rs), settings);
                if self.s.phase != Phase::Progressing {
                    return true;
                }
            }
        }
        if let Some(rs) = hooks::results_of(&obs.hooks, HookKind::ConfirmPromotion) {
            if rs.iter().all(|r| r.passed()) {
                let names = rs
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                self.s.hooks.promotion_confirmed_by =
                    Some(format!("confirm-promotion hook {names}"));
                if self.s.hooks.waiting_since.take().is_some() {
                    let who = self
                        .s
                        .hooks
                        .promotion_confirmed_by
                        .clone()
                        .unwrap_or_default();
                    self.promote(format!(
                        "all gates green at {} %, confirmed by {who}",
                        self.s.weight
                    ));
                    return true;
                }
            } else {
                let why = hooks::failures(&rs);
                self.s.message = format!("all gates green at {} %; waiting for approval ({why}; or `canary-gate approve`)", self.s.weight);
            }
        }
        false
    }

    fn start(&mut self, settings: &Settings) {
        self.enter(Phase::Progressing);
        self.s.weight = 0;
        self.s.last_check = None;
        self.effects.push(Effect::Decision("start"));
        self.event(
            EventType::Normal,
            "CanaryStarted",
            format!(
                "canary {} started against stable {}: {}",
                self.s.canary_revision,
                self.s.stable_revision,
                settings.plan()
            ),
        );
    }

    fn progress(&mut self, obs: &Observation, settings: &Settings) {
        if obs.fresh_window && self.s.weight > 0 && self.s.last_check.is_some() {
            self.s.last_check = Some(self.now);
        }
        if self.s.weight == 0 {
            // Waiting for the twin before any traffic goes to it.
            match &obs.twin {
                TwinStatus::Ready if !self.pre_rollout(obs, settings) => {}
                TwinStatus::Ready => {
                    self.s.weight = settings.step_weight.min(settings.max_weight);
                    self.s.last_check = Some(self.now);
                    self.effects.push(Effect::Decision("step"));
                    let w = self.s.weight;
                    self.event(
                        EventType::Normal,
                        "CanaryReady",
                        format!("canary ready; {w} % of traffic to the canary"),
                    );
                }
                status => {
                    let waited = self.now.duration_since(self.s.phase_since);
                    if waited > as_signed(obs.progress_deadline) {
                        let detail = match status {
                            TwinStatus::Starting { ready, wanted } => {
                                format!("{ready}/{wanted} pods ready")
                            }
                            _ => "not created".into(),
                        };
                        self.rollback(format!(
                            "canary not ready within {} ({detail})",
                            humantime::format_duration(obs.progress_deadline)
                        ));
                    }
                }
            }
            return;
        }
        if let TwinStatus::Starting { ready, wanted } = obs.twin {
            // The twin took traffic and then lost ready pods: users of the canary share see
            // errors. Each due interval counts as a failed check, and the progress deadline,
            // counted from the last time it was judged healthy, is a backstop independent of
            // the threshold.
            let detail = format!("{ready}/{wanted} pods ready");
            let last = self.s.last_check.unwrap_or(self.s.phase_since);
            let since = *self.s.unready_since.get_or_insert(last);
            if self.now.duration_since(since) > as_signed(obs.progress_deadline) {
                self.rollback(format!(
                    "canary pods not ready for over {} ({detail})",
                    humantime::format_duration(obs.progress_deadline)
                ));
            } else if self.now >= last + as_signed(settings.interval) {
                self.s.last_check = Some(self.now);
                self.failed_check(format!("canary pods not ready ({detail})"), settings);
            }
            return;
        }
        self.s.unready_since = None;
        if self.traffic_hooks(obs, settings) {
            return;
        }
        let Some(analysis) = &obs.analysis else {
            if let Some(peek) = &obs.peek {
                self.early_rollback(peek);
            }
            return;
        };
        self.s.last_check = Some(self.now);
        self.s.gates = analysis.summary.clone();
        self.s.counts = analysis.counts;
        match &analysis.verdict {
            Verdict::Pass => {
                self.s.passed_checks += 1;
                self.s.inconclusive_checks = 0;
                self.effects.push(Effect::Check("passed"));
                let unconfirmed = hooks::of_kind(&settings.hooks, HookKind::ConfirmPromotion)
                    .next()
                    .is_some()
                    && self.s.hooks.promotion_confirmed_by.is_none();
                if self.s.weight >= settings.max_weight && unconfirmed {
                    // Held at max weight, still judged every interval (and so still able to
                    // roll back), until a confirm-promotion hook or `canary-gate approve`.
                    let w = self.s.weight;
                    let message = format!("all gates green at {w} % ({}); waiting for approval (confirm-promotion hook or `canary-gate approve`)", analysis.summary);
                    if self.s.hooks.waiting_since.is_none() {
                        self.s.hooks.waiting_since = Some(self.now);
                        self.event(EventType::Normal, "WaitingForApproval", message);
                    } else {
                        self.s.message = message;
                    }
                } else if self.s.weight >= settings.max_weight {
                    let by = self
                        .s
                        .hooks
                        .promotion_confirmed_by
                        .as_ref()
                        .map(|who| format!(", confirmed by {who}"))
                        .unwrap_or_default();
                    self.promote(format!(
                        "all gates green at {} %: {}{by}",
                        self.s.weight, analysis.summary
                    ));
                } else {
                    self.s.weight = (self.s.weight + settings.step_weight).min(settings.max_weight);
                    self.effects.push(Effect::Decision("step"));
                    let w = self.s.weight;
                    self.event(
                        EventType::Normal,
                        "WeightIncreased",
                        format!("gates green ({}); {w} % to the canary", analysis.summary),
                    );
                }
            }
            Verdict::Fail { reason, decisive } => {
                self.s.inconclusive_checks = 0;
                if *decisive {
                    self.s.failed_checks += 1;
                    self.effects.push(Effect::Check("failed"));
                    self.rollback(format!("{reason} (decisive evidence)"));
                } else {
                    self.failed_check(reason.clone(), settings);
                }
            }
            Verdict::NoData { reason } => {
                self.s.inconclusive_checks += 1;
                self.effects.push(Effect::Check("inconclusive"));
                if self.s.inconclusive_checks >= settings.inconclusive_limit {
                    self.rollback(format!(
                        "no usable data for {} checks in a row ({reason}); not promoting blind",
                        self.s.inconclusive_checks
                    ));
                } else {
                    let (n, l) = (self.s.inconclusive_checks, settings.inconclusive_limit);
                    self.event(
                        EventType::Warning,
                        "CheckInconclusive",
                        format!("no usable data ({n}/{l}): {reason}; weight held"),
                    );
                }
            }
            Verdict::NotEnoughData { reason } => {
                self.s.inconclusive_checks = 0;
                self.effects.push(Effect::Check("not_enough_data"));
                self.held(Held::NotEnoughData, reason);
            }
            Verdict::Undecided { reason } => {
                self.s.inconclusive_checks = 0;
                self.effects.push(Effect::Check("undecided"));
                self.held(Held::Undecided, reason);
            }
            Verdict::StableDegraded { reason } => {
                self.s.inconclusive_checks = 0;
                self.effects.push(Effect::Check("stable_degraded"));
                self.held(Held::StableDegraded, reason);
            }
        }
    }

    /// Between checks: roll back at once on decisive evidence, else change nothing (a Prometheus
    /// error or a thin window is never a failure here).
    fn early_rollback(&mut self, peek: &Analysis) {
        let Verdict::Fail {
            reason,
            decisive: true,
        } = &peek.verdict
        else {
            return;
        };
        self.s.gates = peek.summary.clone();
        self.s.counts = peek.counts;
        self.s.failed_checks += 1;
        self.effects.push(Effect::Check("failed_early"));
        let since = self
            .s
            .last_check
            .map(|t| {
                format!(
                    " {}s after the last check",
                    self.now.duration_since(t).as_secs()
                )
            })
            .unwrap_or_default();
        let [requests, errors] = peek.counts.canary;
        self.rollback(format!(
            "{reason} (decisive evidence; early rollback between checks{since}, after {requests:.0} canary requests with {errors:.0} errors)"
        ));
    }

    /// One failed check; at the threshold, a rollback.
    fn failed_check(&mut self, reason: String, settings: &Settings) {
        self.s.failed_checks += 1;
        self.effects.push(Effect::Check("failed"));
        let (n, t) = (self.s.failed_checks, settings.threshold);
        if n >= t {
            self.rollback(format!("{reason}; {n} failed checks reached the threshold"));
        } else {
            self.event(
                EventType::Warning,
                "CheckFailed",
                format!("check failed ({n}/{t}): {reason}"),
            );
        }
    }

    fn promoting(&mut self, obs: &Observation) {
        let rev = self.s.canary_revision.clone();
        if obs.stable_rolled_out {
            self.enter(Phase::Succeeded);
            self.s.weight = 0;
            self.effects.push(Effect::Decision("succeeded"));
            self.event(
                EventType::Normal,
                "Succeeded",
                format!("revision {rev} promoted; all traffic on the stable Deployment"),
            );
        } else if self.now.duration_since(self.s.phase_since) > as_signed(obs.progress_deadline) {
            // The stable already runs the validated template (partly): holding the twin longer
            // only holds resources. Hand over and say so.
            self.enter(Phase::Succeeded);
            self.s.weight = 0;
            self.effects.push(Effect::Decision("succeeded"));
            self.event(
                EventType::Warning,
                "PromotionIncomplete",
                format!(
                    "the stable Deployment did not finish rolling out revision {rev} within {}; all traffic moved to it anyway (check `kubectl rollout status`)",
                    humantime::format_duration(obs.progress_deadline)
                ),
            );
        }
    }

    fn promote(&mut self, message: String) {
        self.enter(Phase::Promoting);
        self.effects.push(Effect::Decision("promote"));
        self.event(
            EventType::Normal,
            "Promoting",
            format!("{message}; rolling the stable Deployment to the canary revision"),
        );
    }

    fn rollback(&mut self, reason: String) {
        self.enter(Phase::Failed);
        self.s.weight = 0;
        self.effects.push(Effect::Decision("rollback"));
        self.event(
            EventType::Warning,
            "RolledBack",
            format!("rolled back: {reason}"),
        );
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
