use super::*;

use std::collections::BTreeMap;

use crate::annotations as ann;
use crate::settings::Defaults;

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

const NEW: &str = "7d9f8c6b5";
const OLD: &str = "5c4b3a2f1";
/// The Deployment's progressDeadlineSeconds as the analyzer passes it in.
const DEADLINE: Duration = Duration::from_secs(600);

fn t0() -> Timestamp {
    "2026-11-27T10:00:00Z".parse().expect("timestamp")
}

/// `t0` plus `secs` seconds.
fn at(secs: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(secs)
}

/// `t0` plus `millis` milliseconds (for sub-second edges).
fn at_ms(millis: i64) -> Timestamp {
    t0() + SignedDuration::from_millis(millis)
}

fn settings_with(pairs: &[(&str, &str)]) -> Settings {
    let annotations: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_annotations(&Defaults::default(), &annotations).expect("valid settings")
}

/// The reference scenario: 30 s, 10 % steps to 50 %, threshold 5, inconclusive limit 10.
fn defaults() -> Settings {
    Settings::from_annotations(&Defaults::default(), &BTreeMap::new()).expect("default settings")
}

/// As the webhook records it at `t0`.
fn pending() -> RolloutState {
    RolloutState::pending(NEW.into(), OLD.into(), t0())
}

/// Progressing since `t0`, the twin not ready yet (weight 0, no check so far).
fn waiting() -> RolloutState {
    RolloutState {
        phase: Phase::Progressing,
        message: "canary started".into(),
        ..pending()
    }
}

/// Progressing since `t0` at `weight`, last analysed window ended at `at(last)`.
fn progressing(weight: u32, last: i64) -> RolloutState {
    RolloutState {
        weight,
        last_check: Some(at(last)),
        ..waiting()
    }
}

/// A realistic state in each phase, with every field filled in that the phase would have.
fn in_phase(phase: Phase) -> RolloutState {
    let busy = RolloutState {
        failed_checks: 1,
        passed_checks: 2,
        inconclusive_checks: 1,
        gates: "success=99.80% p99=120ms".into(),
        counts: Counts {
            canary: [1200.0, 2.0],
            stable: [10800.0, 20.0],
            ..Default::default()
        },
        message: "gates green; 30 % to the canary".into(),
        ..progressing(30, 0)
    };
    match phase {
        Phase::Pending => pending(),
        Phase::Progressing => busy,
        Phase::Paused => RolloutState {
            phase,
            paused_from: Some(Phase::Progressing),
            ..busy
        },
        Phase::Promoting => RolloutState {
            phase,
            weight: 50,
            phase_since: at(10),
            ..busy
        },
        Phase::Succeeded | Phase::Failed | Phase::Cancelled => RolloutState {
            phase,
            weight: 0,
            phase_since: at(10),
            ..busy
        },
    }
}

fn twin(status: TwinStatus) -> Observation {
    Observation {
        twin: status,
        stable_rolled_out: false,
        analysis: None,
        action: None,
        action_by: None,
        progress_deadline: DEADLINE,
        setup_error: None,
        fresh_window: false,
        peek: None,
        hooks: Vec::new(),
    }
}

/// Twin ready, nothing else to report (no check due, no action).
fn ready() -> Observation {
    twin(TwinStatus::Ready)
}

fn starting(ready: u32, wanted: u32) -> Observation {
    twin(TwinStatus::Starting { ready, wanted })
}

/// Twin ready and this window's analysis came back with `verdict`.
fn judged(verdict: Verdict) -> Observation {
    Observation {
        analysis: Some(analysis(verdict)),
        ..ready()
    }
}

fn acting(action: Action) -> Observation {
    Observation {
        action: Some(action),
        ..ready()
    }
}

fn rolled_out() -> Observation {
    Observation {
        stable_rolled_out: true,
        ..ready()
    }
}

/// The analyzer cannot set the canary up at all.
fn broken() -> Observation {
    Observation {
        setup_error: Some(SETUP_ERROR.into()),
        ..ready()
    }
}

const SETUP_ERROR: &str = "no Service selects the pods of podinfo";

fn analysis(verdict: Verdict) -> Analysis {
    Analysis {
        verdict,
        summary: "success=99.91% p99=118ms".into(),
        counts: Counts {
            canary: [1500.0, 1.0],
            stable: [13500.0, 12.0],
            ..Default::default()
        },
    }
}

/// A verdict maker, so that loops can be fed `pass`, `fail`, ...
type MakeVerdict = fn() -> Verdict;

fn pass() -> Verdict {
    Verdict::Pass
}

fn fail() -> Verdict {
    Verdict::Fail {
        reason: "request-success-rate 97.5 % < 99 %".into(),
        decisive: false,
    }
}

fn decisive() -> Verdict {
    Verdict::Fail {
        reason: "request-success-rate 60 % < 99 %".into(),
        decisive: true,
    }
}

fn no_data() -> Verdict {
    Verdict::NoData {
        reason: "no canary requests in the window".into(),
    }
}

fn not_enough() -> Verdict {
    Verdict::NotEnoughData {
        reason: "12 of 50 requests".into(),
    }
}

fn undecided() -> Verdict {
    Verdict::Undecided {
        reason: "request-success-rate undecided".into(),
    }
}

fn stable_degraded() -> Verdict {
    Verdict::StableDegraded {
        reason: "stable at 95 % too".into(),
    }
}

fn all_verdicts() -> Vec<Verdict> {
    vec![
        pass(),
        fail(),
        decisive(),
        no_data(),
        not_enough(),
        undecided(),
        stable_degraded(),
    ]
}

const ACTIONS: [Action; 5] = [
    Action::Promote,
    Action::Abort,
    Action::Pause,
    Action::Resume,
    Action::Approve,
];

/// A varied set of observations: every twin status, every verdict, every action, rolled out.
fn all_observations() -> Vec<Observation> {
    let mut all = vec![
        ready(),
        twin(TwinStatus::Missing),
        starting(1, 3),
        rolled_out(),
        Observation {
            stable_rolled_out: true,
            ..judged(pass())
        },
    ];
    all.extend(all_verdicts().into_iter().map(judged));
    all.extend(ACTIONS.map(acting));
    all.extend(ACTIONS.map(|a| Observation {
        action: Some(a),
        ..judged(pass())
    }));
    all.extend(ACTIONS.map(|a| Observation {
        action: Some(a),
        ..rolled_out()
    }));
    all.push(broken());
    all.push(Observation {
        analysis: Some(analysis(pass())),
        ..broken()
    });
    all.extend(ACTIONS.map(|a| Observation {
        action: Some(a),
        ..broken()
    }));
    all
}

/// Effects in a compact form: `clear`, `decision:step`, `check:passed`, `Normal:Reason`,
/// `Warning:Reason`.
fn tags(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .map(|e| match e {
            Effect::Event { kind, reason, .. } => format!("{kind:?}:{reason}"),
            Effect::Decision(d) => format!("decision:{d}"),
            Effect::Check(c) => format!("check:{c}"),
            Effect::ClearAction => "clear".to_string(),
            Effect::CallHooks(k) => format!("hooks:{k}"),
        })
        .collect()
}

/// The message of the (only) event with this reason.
fn message<'a>(effects: &'a [Effect], reason: &str) -> &'a str {
    let found: Vec<&str> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Event {
                reason: r, message, ..
            } if *r == reason => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "one {reason} event expected in {effects:?}");
    found[0]
}

/// What a restart does to the state: written to annotations, read back by a new process.
fn round_trip(state: &RolloutState) -> RolloutState {
    let written: BTreeMap<String, String> = state
        .to_annotations()
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
        .collect();
    RolloutState::from_annotations(&written).expect("state written by canary-gate parses")
}

/// Apply `n` analyses with the same verdict, one interval apart, starting from `state` whose
/// last check was at `t`. Returns the final state, the time of the last check and all effects.
fn checks(
    mut state: RolloutState,
    settings: &Settings,
    mut t: i64,
    n: usize,
    verdict: MakeVerdict,
) -> (RolloutState, i64, Vec<Vec<Effect>>) {
    let mut all = Vec::new();
    for _ in 0..n {
        t += settings.interval.as_secs() as i64;
        assert!(
            check_due(&state, settings, true, at(t)),
            "check due at +{t}s: {state:?}"
        );
        let (next, effects) = step(&state, &judged(verdict()), settings, at(t));
        state = next;
        all.push(effects);
    }
    (state, t, all)
}

// ---------------------------------------------------------------------------------------------
// Pending → Progressing → waiting for the twin
// ---------------------------------------------------------------------------------------------

#[test]
fn pending_starts_progressing_at_weight_zero() {
    let now = at(2);
    let (s, fx) = step(&pending(), &twin(TwinStatus::Missing), &defaults(), now);
    assert_eq!(s.phase, Phase::Progressing);
    assert_eq!(s.weight, 0);
    assert_eq!(s.last_check, None);
    assert_eq!(s.phase_since, now);
    assert_eq!(
        s.started_at,
        t0(),
        "the start of the rollout is the admission time"
    );
    assert_eq!(tags(&fx), ["decision:start", "Normal:CanaryStarted"]);
    let msg = message(&fx, "CanaryStarted");
    assert!(msg.contains(NEW) && msg.contains(OLD), "{msg}");
    assert!(msg.contains("10 % steps every 30s to 50 %"), "{msg}");
    assert_eq!(s.message, msg, "the state carries the last event's message");
}

#[test]
fn pending_does_not_send_traffic_in_the_same_tick_even_if_the_twin_is_ready() {
    let (s, fx) = step(&pending(), &judged(pass()), &defaults(), at(1));
    assert_eq!(
        (s.phase, s.weight, s.last_check),
        (Phase::Progressing, 0, None)
    );
    assert_eq!(
        (s.passed_checks, s.gates.as_str()),
        (0, ""),
        "an analysis is not judged before traffic"
    );
    assert_eq!(tags(&fx), ["decision:start", "Normal:CanaryStarted"]);
}

#[test]
fn pending_with_leftover_weight_and_check_starts_from_zero() {
    let stale = RolloutState {
        weight: 40,
        last_check: Some(at(-300)),
        ..pending()
    };
    let (s, _) = step(&stale, &ready(), &defaults(), at(1));
    assert_eq!(
        (s.phase, s.weight, s.last_check),
        (Phase::Progressing, 0, None)
    );
}

#[test]
fn waiting_for_a_missing_or_starting_twin_holds() {
    for obs in [twin(TwinStatus::Missing), starting(0, 3), starting(2, 3)] {
        for now in [at(0), at(30), at(599), at(600)] {
            let (s, fx) = step(&waiting(), &obs, &defaults(), now);
            assert_eq!(s, waiting(), "{obs:?} at {now}");
            assert!(fx.is_empty(), "{obs:?} at {now}: {fx:?}");
        }
    }
}

#[test]
fn waiting_ignores_an_analysis_until_the_twin_takes_traffic() {
    let obs = Observation {
        analysis: Some(analysis(fail())),
        ..starting(1, 2)
    };
    let (s, fx) = step(&waiting(), &obs, &defaults(), at(60));
    assert_eq!(s, waiting());
    assert!(fx.is_empty(), "{fx:?}");
}

#[test]
fn twin_ready_sends_the_first_step_and_starts_the_first_window() {
    let now = at(45);
    let (s, fx) = step(&waiting(), &ready(), &defaults(), now);
    assert_eq!(
        (s.phase, s.weight, s.last_check),
        (Phase::Progressing, 10, Some(now))
    );
    assert_eq!(s.phase_since, t0(), "still the same phase");
    assert_eq!(
        (s.passed_checks, s.failed_checks),
        (0, 0),
        "becoming ready is not a check"
    );
    assert_eq!(tags(&fx), ["decision:step", "Normal:CanaryReady"]);
    assert!(message(&fx, "CanaryReady").contains("10 % of traffic"));
}

#[test]
fn twin_ready_weight_is_capped_at_max() {
    // Settings refuse step > max; the machine caps anyway.
    let settings = Settings {
        step_weight: 60,
        ..defaults()
    };
    let (s, _) = step(&waiting(), &ready(), &settings, at(1));
    assert_eq!(s.weight, 50);
}

#[test]
fn twin_never_ready_past_the_deadline_rolls_back_naming_the_pods_ready() {
    let now = at(601);
    let (s, fx) = step(&waiting(), &starting(1, 3), &defaults(), now);
    assert_eq!((s.phase, s.weight, s.phase_since), (Phase::Failed, 0, now));
    assert_eq!(tags(&fx), ["decision:rollback", "Warning:RolledBack"]);
    let msg = message(&fx, "RolledBack");
    assert!(msg.contains("1/3 pods ready"), "{msg}");
    assert!(msg.contains("not ready within 10m"), "{msg}");
    assert_eq!(s.message, msg);
}

#[test]
fn twin_never_created_past_the_deadline_rolls_back() {
    let (s, fx) = step(
        &waiting(),
        &twin(TwinStatus::Missing),
        &defaults(),
        at(3600),
    );
    assert_eq!((s.phase, s.weight), (Phase::Failed, 0));
    assert!(message(&fx, "RolledBack").contains("not created"), "{fx:?}");
}

#[test]
fn the_deadline_counts_from_entering_progressing_and_follows_the_observation() {
    let late = RolloutState {
        phase_since: at(1000),
        ..waiting()
    };
    let (s, _) = step(&late, &starting(0, 1), &defaults(), at(1500));
    assert_eq!(
        s.phase,
        Phase::Progressing,
        "500 s since entering the phase, deadline 600 s"
    );
    let short = Observation {
        progress_deadline: Duration::from_secs(60),
        ..starting(0, 1)
    };
    let (s, fx) = step(&waiting(), &short, &defaults(), at(61));
    assert_eq!(s.phase, Phase::Failed);
    assert!(message(&fx, "RolledBack").contains("within 1m"), "{fx:?}");
    let (s, _) = step(&waiting(), &short, &defaults(), at(60));
    assert_eq!(
        s.phase,
        Phase::Progressing,
        "exactly at the deadline is still in time"
    );
}

#[test]
fn a_twin_ready_just_past_the_deadline_still_counts() {
    let (s, _) = step(&waiting(), &ready(), &defaults(), at(3600));
    assert_eq!((s.phase, s.weight), (Phase::Progressing, 10));
}

// ---------------------------------------------------------------------------------------------
// Setup errors
// ---------------------------------------------------------------------------------------------

#[test]
fn a_setup_error_rolls_back_a_pending_or_progressing_rollout() {
    for before in [pending(), waiting(), in_phase(Phase::Progressing)] {
        let now = at(40);
        let obs = Observation {
            analysis: Some(analysis(pass())),
            ..broken()
        };
        let (s, fx) = step(&before, &obs, &defaults(), now);
        assert_eq!(
            (s.phase, s.weight, s.phase_since),
            (Phase::Failed, 0, now),
            "{before:?}"
        );
        assert_eq!(
            tags(&fx),
            ["decision:rollback", "Warning:RolledBack"],
            "{before:?}"
        );
        assert_eq!(
            message(&fx, "RolledBack"),
            format!("rolled back: {SETUP_ERROR}")
        );
        assert_eq!(
            s.passed_checks, before.passed_checks,
            "the analysis is not judged"
        );
        assert_eq!(s.last_check, before.last_check);
    }
}

#[test]
fn a_setup_error_does_not_touch_a_paused_or_promoting_rollout() {
    for phase in [Phase::Paused, Phase::Promoting] {
        let before = in_phase(phase);
        let (s, fx) = step(&before, &broken(), &defaults(), at(40));
        assert_eq!(s, before, "{phase}");
        assert!(fx.is_empty(), "{phase}: {fx:?}");
    }
    // Promoting still completes.
    let obs = Observation {
        stable_rolled_out: true,
        ..broken()
    };
    let (s, _) = step(&in_phase(Phase::Promoting), &obs, &defaults(), at(40));
    assert_eq!(s.phase, Phase::Succeeded);
}

#[test]
fn a_manual_action_is_handled_before_a_setup_error() {
    let d = defaults();
    let with = |a| Observation {
        action: Some(a),
        ..broken()
    };
    let (s, fx) = step(
        &in_phase(Phase::Progressing),
        &with(Action::Abort),
        &d,
        at(40),
    );
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(
        tags(&fx),
        ["clear", "decision:rollback", "Warning:RolledBack"]
    );
    assert!(
        message(&fx, "RolledBack").contains("aborted by hand"),
        "{fx:?}"
    );
    let (s, _) = step(
        &in_phase(Phase::Progressing),
        &with(Action::Pause),
        &d,
        at(40),
    );
    assert_eq!(
        s.phase,
        Phase::Paused,
        "a pause applies; the error is seen again on resume"
    );
    let (s, _) = step(&s, &with(Action::Resume), &d, at(50));
    assert_eq!(s.phase, Phase::Progressing);
    let (s, _) = step(&s, &broken(), &d, at(60));
    assert_eq!(s.phase, Phase::Failed);
    // An ignored action does not shield the rollout from the error.
    let (s, fx) = step(
        &in_phase(Phase::Progressing),
        &with(Action::Resume),
        &d,
        at(40),
    );
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(
        tags(&fx),
        [
            "clear",
            "Warning:ActionIgnored",
            "decision:rollback",
            "Warning:RolledBack"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// check_due / analysis_window
// ---------------------------------------------------------------------------------------------

#[test]
fn check_is_due_one_interval_after_the_last_check() {
    let s = progressing(10, 0);
    let d = defaults();
    assert!(!check_due(&s, &d, true, at(0)));
    assert!(!check_due(&s, &d, true, at(29)));
    assert!(!check_due(&s, &d, true, at_ms(29_700)));
    assert!(
        check_due(&s, &d, true, at_ms(29_850)),
        "a tick a few ms early still takes the check, not the next tick"
    );
    assert!(
        check_due(&s, &d, true, at(30)),
        "due exactly at last_check + interval"
    );
    assert!(check_due(&s, &d, true, at(31)));
    assert!(check_due(&s, &d, true, at(86_400)));
}

#[test]
fn check_due_follows_the_interval_setting() {
    let s = progressing(10, 0);
    let fast = settings_with(&[(ann::INTERVAL, "1s")]);
    assert!(!check_due(&s, &fast, true, at_ms(700)));
    assert!(check_due(&s, &fast, true, at(1)));
    let slow = settings_with(&[(ann::INTERVAL, "2m")]);
    assert!(!check_due(&s, &slow, true, at(119)));
    assert!(check_due(&s, &slow, true, at(120)));
}

#[test]
fn check_is_not_due_without_a_ready_twin_traffic_or_a_first_window() {
    let d = defaults();
    assert!(
        !check_due(&progressing(10, 0), &d, false, at(300)),
        "twin not ready"
    );
    assert!(
        !check_due(&progressing(0, 0), &d, true, at(300)),
        "weight 0"
    );
    assert!(
        !check_due(&waiting(), &d, true, at(300)),
        "no window started"
    );
    let no_window = RolloutState {
        last_check: None,
        ..progressing(10, 0)
    };
    assert!(!check_due(&no_window, &d, true, at(300)));
}

#[test]
fn check_is_only_due_while_progressing() {
    for phase in Phase::ALL {
        let s = RolloutState {
            phase,
            ..progressing(30, 0)
        };
        assert_eq!(
            check_due(&s, &defaults(), true, at(300)),
            phase == Phase::Progressing,
            "{phase}"
        );
    }
}

#[test]
fn analysis_window_is_the_time_since_the_last_check_in_whole_seconds() {
    let s = progressing(10, 0);
    assert_eq!(analysis_window(&s, at(30)), Some(Duration::from_secs(30)));
    assert_eq!(analysis_window(&s, at(95)), Some(Duration::from_secs(95)));
    assert_eq!(
        analysis_window(&s, at_ms(30_900)),
        Some(Duration::from_millis(30_900)),
        "to the millisecond: the next window starts where this one ends"
    );
    assert_eq!(
        analysis_window(&s, at(3600)),
        Some(Duration::from_secs(3600))
    );
}

#[test]
fn analysis_window_is_at_least_one_second() {
    let s = progressing(10, 0);
    assert_eq!(analysis_window(&s, at_ms(1)), Some(Duration::from_secs(1)));
    assert_eq!(
        analysis_window(&s, at_ms(999)),
        Some(Duration::from_secs(1))
    );
}

#[test]
fn analysis_window_is_none_without_a_last_check_or_time_passed() {
    assert_eq!(analysis_window(&waiting(), at(30)), None);
    assert_eq!(analysis_window(&progressing(10, 0), at(0)), None);
    assert_eq!(
        analysis_window(&progressing(10, 60), at(30)),
        None,
        "clock behind the last check"
    );
}

// ---------------------------------------------------------------------------------------------
// Pass: steps and promotion
// ---------------------------------------------------------------------------------------------

#[test]
fn passes_step_the_weight_10_20_30_40_50() {
    let d = defaults();
    let (mut s, mut t) = (progressing(10, 0), 0);
    for (i, want) in [20, 30, 40, 50].into_iter().enumerate() {
        t += 30;
        let (next, fx) = step(&s, &judged(pass()), &d, at(t));
        assert_eq!((next.phase, next.weight), (Phase::Progressing, want));
        assert_eq!(next.last_check, Some(at(t)));
        assert_eq!(next.passed_checks, i as u32 + 1);
        assert_eq!(
            tags(&fx),
            ["check:passed", "decision:step", "Normal:WeightIncreased"]
        );
        let msg = message(&fx, "WeightIncreased");
        assert!(msg.contains(&format!("{want} % to the canary")), "{msg}");
        assert!(msg.contains("success=99.91% p99=118ms"), "{msg}");
        s = next;
    }
}

#[test]
fn a_pass_at_max_weight_promotes_keeping_the_weight() {
    let now = at(30);
    let (s, fx) = step(&progressing(50, 0), &judged(pass()), &defaults(), now);
    assert_eq!(
        (s.phase, s.weight, s.phase_since),
        (Phase::Promoting, 50, now)
    );
    assert_eq!(s.passed_checks, 1);
    assert_eq!(s.last_check, Some(now));
    assert_eq!(
        tags(&fx),
        ["check:passed", "decision:promote", "Normal:Promoting"]
    );
    let msg = message(&fx, "Promoting");
    assert!(msg.contains("all gates green at 50 %"), "{msg}");
}

#[test]
fn a_step_that_does_not_divide_max_is_capped_at_max() {
    let d = settings_with(&[(ann::STEP_WEIGHT, "30")]);
    let (s, _) = step(&waiting(), &ready(), &d, at(0));
    assert_eq!(s.weight, 30);
    let (s, _) = step(&s, &judged(pass()), &d, at(30));
    assert_eq!((s.phase, s.weight), (Phase::Progressing, 50));
    let (s, _) = step(&s, &judged(pass()), &d, at(60));
    assert_eq!((s.phase, s.weight), (Phase::Promoting, 50));
}

#[test]
fn a_step_equal_to_max_goes_straight_to_max_and_promotes_on_the_first_pass() {
    let d = settings_with(&[(ann::STEP_WEIGHT, "50")]);
    let (s, _) = step(&waiting(), &ready(), &d, at(0));
    assert_eq!(s.weight, 50);
    let (s, _) = step(&s, &judged(pass()), &d, at(30));
    assert_eq!((s.phase, s.weight), (Phase::Promoting, 50));
}

#[test]
fn promotion_succeeds_when_the_stable_has_rolled_out() {
    let now = at(300);
    let (s, fx) = step(&in_phase(Phase::Promoting), &rolled_out(), &defaults(), now);
    assert_eq!(
        (s.phase, s.weight, s.phase_since),
        (Phase::Succeeded, 0, now)
    );
    assert_eq!(tags(&fx), ["decision:succeeded", "Normal:Succeeded"]);
    assert!(message(&fx, "Succeeded").contains(NEW), "{fx:?}");
}

#[test]
fn promoting_holds_until_the_stable_has_rolled_out() {
    let promoting = in_phase(Phase::Promoting);
    for obs in [
        ready(),
        twin(TwinStatus::Missing),
        judged(fail()),
        judged(decisive()),
        judged(pass()),
    ] {
        // Within the progress deadline (600 s from entering Promoting at 10 s).
        let (s, fx) = step(&promoting, &obs, &defaults(), at(600));
        assert_eq!(s, promoting, "{obs:?}");
        assert!(fx.is_empty(), "{obs:?}: {fx:?}");
    }
}

#[test]
fn a_promotion_that_does_not_finish_hands_over_after_the_deadline() {
    let promoting = in_phase(Phase::Promoting);
    let (s, fx) = step(&promoting, &ready(), &defaults(), at(3600));
    assert_eq!((s.phase, s.weight), (Phase::Succeeded, 0), "{fx:?}");
    assert!(
        message(&fx, "PromotionIncomplete").contains("did not finish"),
        "{fx:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Fail, NoData and the holding verdicts
// ---------------------------------------------------------------------------------------------

#[test]
fn failed_checks_count_up_and_roll_back_at_the_threshold() {
    let d = defaults();
    let (s, t, fx) = checks(progressing(20, 0), &d, 0, 4, fail);
    assert_eq!(
        (s.phase, s.weight, s.failed_checks),
        (Phase::Progressing, 20, 4),
        "weight held"
    );
    for (i, fx) in fx.iter().enumerate() {
        assert_eq!(tags(fx), ["check:failed", "Warning:CheckFailed"]);
        let msg = message(fx, "CheckFailed");
        assert!(msg.contains(&format!("({}/5)", i + 1)), "{msg}");
        assert!(msg.contains("97.5 %"), "{msg}");
    }
    let (s, _, fx) = checks(s, &d, t, 1, fail);
    assert_eq!((s.phase, s.weight, s.failed_checks), (Phase::Failed, 0, 5));
    assert_eq!(s.phase_since, at(t + 30));
    assert_eq!(
        tags(&fx[0]),
        ["check:failed", "decision:rollback", "Warning:RolledBack"]
    );
    assert!(message(&fx[0], "RolledBack").contains("5 failed checks reached the threshold"));
}

#[test]
fn the_threshold_setting_is_honoured() {
    let d = settings_with(&[(ann::THRESHOLD, "2")]);
    let (s, t, _) = checks(progressing(10, 0), &d, 0, 1, fail);
    assert_eq!(s.phase, Phase::Progressing);
    let (s, _, _) = checks(s, &d, t, 1, fail);
    assert_eq!((s.phase, s.weight), (Phase::Failed, 0));
}

#[test]
fn failed_checks_are_cumulative_across_passes() {
    let d = defaults();
    let mut s = progressing(10, 0);
    let mut t = 0;
    for verdict in [fail, pass, fail, pass, fail, pass, fail] {
        (s, t, _) = checks(s, &d, t, 1, verdict);
    }
    assert_eq!(
        (s.phase, s.failed_checks, s.passed_checks),
        (Phase::Progressing, 4, 3)
    );
    assert_eq!(s.weight, 40);
    let (s, _, _) = checks(s, &d, t, 1, fail);
    assert_eq!((s.phase, s.weight), (Phase::Failed, 0));
}

#[test]
fn a_decisive_fail_rolls_back_at_once() {
    let now = at(30);
    let (s, fx) = step(&progressing(30, 0), &judged(decisive()), &defaults(), now);
    assert_eq!((s.phase, s.weight, s.failed_checks), (Phase::Failed, 0, 1));
    assert_eq!(
        tags(&fx),
        ["check:failed", "decision:rollback", "Warning:RolledBack"]
    );
    let msg = message(&fx, "RolledBack");
    assert!(msg.contains("60 %") && msg.contains("decisive"), "{msg}");
}

#[test]
fn no_data_counts_inconclusive_and_rolls_back_at_the_limit() {
    let d = defaults();
    let (s, t, fx) = checks(progressing(20, 0), &d, 0, 9, no_data);
    assert_eq!(
        (s.phase, s.weight, s.inconclusive_checks),
        (Phase::Progressing, 20, 9)
    );
    assert_eq!(s.failed_checks, 0, "no data is not a failure");
    for (i, fx) in fx.iter().enumerate() {
        assert_eq!(
            tags(fx),
            ["check:inconclusive", "Warning:CheckInconclusive"]
        );
        assert!(
            message(fx, "CheckInconclusive").contains(&format!("({}/10)", i + 1)),
            "{fx:?}"
        );
    }
    let (s, _, fx) = checks(s, &d, t, 1, no_data);
    assert_eq!(
        (s.phase, s.weight, s.inconclusive_checks),
        (Phase::Failed, 0, 10)
    );
    assert_eq!(
        tags(&fx[0]),
        [
            "check:inconclusive",
            "decision:rollback",
            "Warning:RolledBack"
        ]
    );
    assert!(
        message(&fx[0], "RolledBack").contains("no usable data for 10 checks"),
        "{fx:?}"
    );
}

#[test]
fn the_inconclusive_limit_setting_is_honoured() {
    let d = settings_with(&[(ann::INCONCLUSIVE_LIMIT, "3")]);
    let (s, t, _) = checks(progressing(10, 0), &d, 0, 2, no_data);
    assert_eq!(s.phase, Phase::Progressing);
    let (s, _, _) = checks(s, &d, t, 1, no_data);
    assert_eq!(s.phase, Phase::Failed);
}

#[test]
fn a_pass_resets_the_inconclusive_count() {
    let d = defaults();
    let (s, t, _) = checks(progressing(10, 0), &d, 0, 9, no_data);
    let (s, t, _) = checks(s, &d, t, 1, pass);
    assert_eq!((s.inconclusive_checks, s.weight), (0, 20));
    let (s, _, _) = checks(s, &d, t, 9, no_data);
    assert_eq!(
        (s.phase, s.inconclusive_checks),
        (Phase::Progressing, 9),
        "counted afresh"
    );
}

#[test]
fn a_fail_resets_the_inconclusive_count_and_no_data_keeps_the_failed_count() {
    let d = defaults();
    let (s, t, _) = checks(progressing(10, 0), &d, 0, 3, no_data);
    let (s, t, _) = checks(s, &d, t, 1, fail);
    assert_eq!((s.inconclusive_checks, s.failed_checks), (0, 1));
    let (s, _, _) = checks(s, &d, t, 1, no_data);
    assert_eq!((s.inconclusive_checks, s.failed_checks), (1, 1));
}

#[test]
fn holding_verdicts_keep_the_weight_and_count_no_failure() {
    let cases: [(MakeVerdict, &str, &str); 3] = [
        (not_enough, "check:not_enough_data", "Normal:NotEnoughData"),
        (undecided, "check:undecided", "Normal:Undecided"),
        (
            stable_degraded,
            "check:stable_degraded",
            "Warning:StableDegraded",
        ),
    ];
    for (verdict, check, event) in cases {
        let before = RolloutState {
            failed_checks: 2,
            inconclusive_checks: 4,
            passed_checks: 1,
            ..progressing(30, 0)
        };
        let (s, fx) = step(&before, &judged(verdict()), &defaults(), at(30));
        assert_eq!((s.phase, s.weight), (Phase::Progressing, 30), "{check}");
        assert_eq!((s.failed_checks, s.passed_checks), (2, 1), "{check}");
        assert_eq!(
            s.inconclusive_checks, 0,
            "{check}: data flows, the no-data streak is over"
        );
        assert_eq!(
            s.last_check,
            Some(at(30)),
            "{check}: the next window starts now"
        );
        assert_eq!(tags(&fx), [check, event]);
        assert!(s.message.contains("held"), "{check}: {}", s.message);
    }
}

#[test]
fn a_check_holding_for_the_same_reason_again_records_its_message_but_no_new_event() {
    let events = |fx: &[Effect]| -> Vec<String> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Event { reason, .. } => Some(reason.to_string()),
                _ => None,
            })
            .collect()
    };
    for (verdict, reason) in [
        (not_enough as MakeVerdict, "NotEnoughData"),
        (undecided, "Undecided"),
        (stable_degraded, "StableDegraded"),
    ] {
        let (s, t, fx) = checks(progressing(30, 0), &defaults(), 0, 5, verdict);
        let per_check: Vec<Vec<String>> = fx.iter().map(|f| events(f)).collect();
        assert_eq!(per_check[0], [reason], "the first hold is an event");
        assert!(
            per_check[1..].iter().all(Vec::is_empty),
            "{reason}: repeats write no Event: {per_check:?}"
        );
        assert!(s.message.ends_with("weight held"), "{}", s.message);
        // A different verdict in between makes the next hold news again.
        let (s, t, fx) = checks(s, &defaults(), t, 1, no_data);
        assert_eq!(events(&fx[0]), ["CheckInconclusive"]);
        let (_, _, fx) = checks(s, &defaults(), t, 1, verdict);
        assert_eq!(events(&fx[0]), [reason]);
    }
}

#[test]
fn holding_verdicts_never_roll_back_however_often() {
    for verdict in [not_enough, undecided, stable_degraded] {
        let (s, _, _) = checks(progressing(10, 0), &defaults(), 0, 50, verdict);
        assert_eq!(
            (s.phase, s.weight, s.failed_checks),
            (Phase::Progressing, 10, 0)
        );
    }
}

#[test]
fn every_analysis_stores_the_gate_summary_counts_and_window_end() {
    for verdict in all_verdicts() {
        let a = Analysis {
            summary: format!("summary for {verdict:?}"),
            counts: Counts {
                canary: [77.0, 3.0],
                stable: [700.0, 9.0],
                ..Default::default()
            },
            verdict: verdict.clone(),
        };
        let obs = Observation {
            analysis: Some(a.clone()),
            ..ready()
        };
        let (s, _) = step(&in_phase(Phase::Progressing), &obs, &defaults(), at(30));
        assert_eq!(s.gates, a.summary, "{verdict:?}");
        assert_eq!(s.counts, a.counts, "{verdict:?}");
        assert_eq!(s.last_check, Some(at(30)), "{verdict:?}");
    }
}

#[test]
fn no_analysis_means_no_change() {
    // A twin that is not ready under traffic is judged on its own (see
    // `a_twin_that_stops_being_ready_under_traffic_*`); here the twin is fine or absent.
    let s = in_phase(Phase::Progressing);
    for obs in [ready(), twin(TwinStatus::Missing), rolled_out()] {
        let (next, fx) = step(&s, &obs, &defaults(), at(45));
        assert_eq!(next, s, "{obs:?}");
        assert!(fx.is_empty(), "{obs:?}: {fx:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Manual actions
// ---------------------------------------------------------------------------------------------

#[test]
fn abort_rolls_back_from_every_active_phase() {
    for phase in [
        Phase::Pending,
        Phase::Progressing,
        Phase::Paused,
        Phase::Promoting,
    ] {
        let now = at(77);
        let obs = Observation {
            action: Some(Action::Abort),
            ..judged(pass())
        };
        let (s, fx) = step(&in_phase(phase), &obs, &defaults(), now);
        assert_eq!(
            (s.phase, s.weight, s.phase_since),
            (Phase::Failed, 0, now),
            "{phase}"
        );
        assert_eq!(
            tags(&fx),
            ["clear", "decision:rollback", "Warning:RolledBack"],
            "{phase}"
        );
        assert!(
            message(&fx, "RolledBack").contains("aborted by hand"),
            "{phase}"
        );
        assert_eq!(
            s.passed_checks,
            in_phase(phase).passed_checks,
            "{phase}: the pass is not judged"
        );
    }
}

#[test]
fn promote_goes_to_promoting_at_max_weight() {
    for phase in [Phase::Pending, Phase::Progressing, Phase::Paused] {
        let now = at(77);
        let (s, fx) = step(&in_phase(phase), &acting(Action::Promote), &defaults(), now);
        assert_eq!(
            (s.phase, s.weight, s.phase_since),
            (Phase::Promoting, 50, now),
            "{phase}"
        );
        assert_eq!(
            tags(&fx),
            ["clear", "decision:promote", "Normal:Promoting"],
            "{phase}"
        );
        assert!(
            message(&fx, "Promoting").contains("promoted by hand"),
            "{phase}"
        );
    }
    let custom = settings_with(&[(ann::MAX_WEIGHT, "80")]);
    let (s, _) = step(
        &progressing(20, 0),
        &acting(Action::Promote),
        &custom,
        at(5),
    );
    assert_eq!(s.weight, 80);
}

#[test]
fn promote_before_the_twin_is_ready_sends_it_no_traffic() {
    for twin in [
        TwinStatus::Missing,
        TwinStatus::Starting {
            ready: 1,
            wanted: 2,
        },
    ] {
        for before in [pending(), progressing(20, 0)] {
            let obs = Observation {
                twin: twin.clone(),
                ..acting(Action::Promote)
            };
            let (s, fx) = step(&before, &obs, &defaults(), at(5));
            assert_eq!((s.phase, s.weight), (Phase::Promoting, 0), "{twin:?}");
            assert!(
                message(&fx, "Promoting").contains("before the canary was ready"),
                "{twin:?}"
            );
        }
    }
}

#[test]
fn promote_wins_over_a_failing_analysis_in_the_same_tick() {
    let obs = Observation {
        action: Some(Action::Promote),
        ..judged(decisive())
    };
    let (s, _) = step(&progressing(20, 0), &obs, &defaults(), at(30));
    assert_eq!((s.phase, s.failed_checks), (Phase::Promoting, 0));
}

#[test]
fn pause_records_where_it_came_from() {
    for (before, from) in [
        (pending(), Phase::Pending),
        (progressing(30, 0), Phase::Progressing),
    ] {
        let now = at(40);
        let obs = Observation {
            action: Some(Action::Pause),
            ..judged(pass())
        };
        let (s, fx) = step(&before, &obs, &defaults(), now);
        assert_eq!(
            (s.phase, s.paused_from, s.phase_since),
            (Phase::Paused, Some(from), now)
        );
        assert_eq!(
            s.weight, before.weight,
            "weight frozen, the pass is not applied"
        );
        assert_eq!(s.last_check, before.last_check);
        assert_eq!(tags(&fx), ["clear", "decision:pause", "Normal:Paused"]);
        assert!(
            message(&fx, "Paused").contains(&format!("at {} %", before.weight)),
            "{fx:?}"
        );
    }
}

#[test]
fn paused_holds_whatever_is_observed() {
    let paused = in_phase(Phase::Paused);
    for obs in [
        judged(pass()),
        judged(decisive()),
        judged(no_data()),
        starting(0, 1),
        twin(TwinStatus::Missing),
        rolled_out(),
    ] {
        let (s, fx) = step(&paused, &obs, &defaults(), at(86_400));
        assert_eq!(s, paused, "{obs:?}");
        assert!(fx.is_empty(), "{obs:?}: {fx:?}");
    }
}

#[test]
fn resume_returns_to_progressing_with_a_fresh_window() {
    let d = defaults();
    let (paused, _) = step(&progressing(20, 0), &acting(Action::Pause), &d, at(10));
    let now = at(3600);
    let (s, fx) = step(&paused, &acting(Action::Resume), &d, now);
    assert_eq!(
        (s.phase, s.weight, s.paused_from),
        (Phase::Progressing, 20, None)
    );
    assert_eq!((s.last_check, s.phase_since), (Some(now), now));
    assert_eq!(tags(&fx), ["clear", "decision:resume", "Normal:Resumed"]);
    assert!(message(&fx, "Resumed").contains("20 %"), "{fx:?}");
    // The hour spent paused is not judged: the next window is one interval from the resume.
    assert!(!check_due(&s, &d, true, at(3629)));
    assert!(check_due(&s, &d, true, at(3630)));
    assert_eq!(analysis_window(&s, at(3630)), Some(Duration::from_secs(30)));
}

#[test]
fn resume_of_a_pause_taken_before_the_first_step_keeps_waiting() {
    let d = defaults();
    let (paused, _) = step(&waiting(), &acting(Action::Pause), &d, at(10));
    let (s, _) = step(&paused, &acting(Action::Resume), &d, at(3600));
    assert_eq!(
        (s.phase, s.weight, s.last_check),
        (Phase::Progressing, 0, None)
    );
    // The twin gets its full deadline again from the resume.
    let (s, _) = step(&s, &starting(0, 1), &d, at(3600 + 599));
    assert_eq!(s.phase, Phase::Progressing);
    let (s, _) = step(&s, &ready(), &d, at(3600 + 700));
    assert_eq!(s.weight, 10);
}

#[test]
fn resume_of_a_pending_pause_goes_back_to_pending_and_starts_on_the_next_tick() {
    let d = defaults();
    let (paused, _) = step(&pending(), &acting(Action::Pause), &d, at(1));
    assert_eq!(paused.paused_from, Some(Phase::Pending));
    let (s, fx) = step(&paused, &acting(Action::Resume), &d, at(100));
    assert_eq!((s.phase, s.last_check), (Phase::Pending, None));
    assert_eq!(tags(&fx), ["clear", "decision:resume", "Normal:Resumed"]);
    let (s, _) = step(&s, &twin(TwinStatus::Missing), &d, at(101));
    assert_eq!((s.phase, s.weight), (Phase::Progressing, 0));
}

#[test]
fn resume_without_a_recorded_origin_goes_to_progressing() {
    let orphan = RolloutState {
        paused_from: None,
        ..in_phase(Phase::Paused)
    };
    let (s, _) = step(&orphan, &acting(Action::Resume), &defaults(), at(90));
    assert_eq!(
        (s.phase, s.weight, s.last_check),
        (Phase::Progressing, 30, Some(at(90)))
    );
}

#[test]
fn an_action_that_does_not_apply_is_cleared_with_a_warning_and_the_normal_step_happens() {
    let d = defaults();
    // resume while Progressing: the pass still steps the weight.
    let obs = Observation {
        action: Some(Action::Resume),
        ..judged(pass())
    };
    let (s, fx) = step(&progressing(20, 0), &obs, &d, at(30));
    assert_eq!((s.phase, s.weight), (Phase::Progressing, 30));
    assert_eq!(
        tags(&fx),
        [
            "clear",
            "Warning:ActionIgnored",
            "check:passed",
            "decision:step",
            "Normal:WeightIncreased"
        ]
    );
    assert_eq!(
        message(&fx, "ActionIgnored"),
        "action resume ignored in phase Progressing"
    );

    // pause while Promoting: the promotion still completes.
    let obs = Observation {
        action: Some(Action::Pause),
        ..rolled_out()
    };
    let (s, fx) = step(&in_phase(Phase::Promoting), &obs, &d, at(30));
    assert_eq!(s.phase, Phase::Succeeded);
    assert_eq!(
        tags(&fx),
        [
            "clear",
            "Warning:ActionIgnored",
            "decision:succeeded",
            "Normal:Succeeded"
        ]
    );

    // resume while Pending: the rollout still starts.
    let (s, fx) = step(&pending(), &acting(Action::Resume), &d, at(1));
    assert_eq!(s.phase, Phase::Progressing);
    assert_eq!(
        tags(&fx),
        [
            "clear",
            "Warning:ActionIgnored",
            "decision:start",
            "Normal:CanaryStarted"
        ]
    );

    // promote while Promoting, pause while Paused: nothing else to do.
    for (phase, action) in [
        (Phase::Promoting, Action::Promote),
        (Phase::Paused, Action::Pause),
    ] {
        let before = in_phase(phase);
        let (s, fx) = step(&before, &acting(action), &d, at(30));
        assert_eq!(
            (s.phase, s.weight),
            (before.phase, before.weight),
            "{phase}"
        );
        assert_eq!(tags(&fx), ["clear", "Warning:ActionIgnored"], "{phase}");
        let want = format!("action {} ignored in phase {phase}", action.as_str());
        assert_eq!(message(&fx, "ActionIgnored"), want);
    }
}

#[test]
fn an_ignored_action_while_waiting_still_applies_the_deadline() {
    let obs = Observation {
        action: Some(Action::Resume),
        ..starting(1, 2)
    };
    let (s, fx) = step(&waiting(), &obs, &defaults(), at(601));
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(
        tags(&fx),
        [
            "clear",
            "Warning:ActionIgnored",
            "decision:rollback",
            "Warning:RolledBack"
        ]
    );
    assert!(
        s.message.starts_with("rolled back"),
        "the last event's message wins: {}",
        s.message
    );
}

// ---------------------------------------------------------------------------------------------
// Terminal phases are absorbing
// ---------------------------------------------------------------------------------------------

#[test]
fn terminal_phases_ignore_every_observation() {
    for phase in [Phase::Succeeded, Phase::Failed, Phase::Cancelled] {
        let before = in_phase(phase);
        for obs in all_observations() {
            for now in [at(30), at(86_400 * 30)] {
                let (s, fx) = step(&before, &obs, &defaults(), now);
                match obs.action {
                    None => {
                        assert_eq!(s, before, "{phase} {obs:?}");
                        assert!(fx.is_empty(), "{phase} {obs:?}: {fx:?}");
                    }
                    Some(action) => {
                        // Only the message changes (it reports the ignored action).
                        let want = format!("action {} ignored in phase {phase}", action.as_str());
                        assert_eq!(
                            s,
                            RolloutState {
                                message: want.clone(),
                                ..before.clone()
                            },
                            "{phase} {obs:?}"
                        );
                        assert_eq!(
                            tags(&fx),
                            ["clear", "Warning:ActionIgnored"],
                            "{phase} {obs:?}"
                        );
                        assert_eq!(message(&fx, "ActionIgnored"), want);
                    }
                }
            }
        }
    }
}

#[test]
fn promote_when_succeeded_and_abort_when_failed_are_ignored() {
    let (s, fx) = step(
        &in_phase(Phase::Succeeded),
        &acting(Action::Promote),
        &defaults(),
        at(30),
    );
    assert_eq!((s.phase, s.weight), (Phase::Succeeded, 0));
    assert_eq!(tags(&fx), ["clear", "Warning:ActionIgnored"]);
    let (s, fx) = step(
        &in_phase(Phase::Failed),
        &acting(Action::Abort),
        &defaults(),
        at(30),
    );
    assert_eq!((s.phase, s.weight), (Phase::Failed, 0));
    assert_eq!(tags(&fx), ["clear", "Warning:ActionIgnored"]);
}

// ---------------------------------------------------------------------------------------------
// Restart safety
// ---------------------------------------------------------------------------------------------

#[test]
fn every_phase_survives_a_restart_unchanged() {
    for phase in Phase::ALL {
        let s = in_phase(phase);
        assert_eq!(round_trip(&s), s, "{phase}");
    }
}

#[test]
fn a_restarted_process_takes_the_same_step_in_every_phase() {
    let d = defaults();
    let mut states: Vec<RolloutState> = Phase::ALL.into_iter().map(in_phase).collect();
    states.push(waiting());
    // Sub-second timestamps, as a real clock produces them.
    states.push(RolloutState {
        last_check: Some(at_ms(30_123)),
        phase_since: at_ms(1_987),
        ..in_phase(Phase::Progressing)
    });
    for before in &states {
        let restarted = round_trip(before);
        for obs in all_observations() {
            for now in [at(31), at_ms(61_456), at(7200)] {
                let original = step(before, &obs, &d, now);
                let resumed = step(&restarted, &obs, &d, now);
                assert_eq!(resumed, original, "{:?} {obs:?} at {now}", before.phase);
                // ... and what it writes back reads back the same.
                assert_eq!(
                    round_trip(&original.0),
                    original.0,
                    "{:?} {obs:?}",
                    before.phase
                );
            }
        }
    }
}

#[test]
fn a_long_outage_produces_one_step_not_a_catch_up() {
    let d = defaults();
    let s = progressing(10, 0);
    let now = at(30 * 10 + 7); // ten intervals missed
    assert!(check_due(&s, &d, true, now));
    assert_eq!(
        analysis_window(&s, now),
        Some(Duration::from_secs(307)),
        "one window over the gap"
    );
    let (next, fx) = step(&round_trip(&s), &judged(pass()), &d, now);
    assert_eq!(
        (next.weight, next.passed_checks, next.last_check),
        (20, 1, Some(now))
    );
    assert_eq!(
        tags(&fx).iter().filter(|t| *t == "decision:step").count(),
        1
    );
    assert!(
        !check_due(&next, &d, true, now),
        "nothing more is due until one interval later"
    );
    assert!(!check_due(
        &next,
        &d,
        true,
        now + SignedDuration::from_secs(29)
    ));
    assert!(check_due(
        &next,
        &d,
        true,
        now + SignedDuration::from_secs(30)
    ));
}

#[test]
fn a_long_outage_counts_one_failed_check_not_many() {
    let (s, fx) = step(&progressing(10, 0), &judged(fail()), &defaults(), at(3600));
    assert_eq!((s.phase, s.failed_checks), (Phase::Progressing, 1));
    assert_eq!(tags(&fx), ["check:failed", "Warning:CheckFailed"]);
}

// ---------------------------------------------------------------------------------------------
// Full simulated rollouts
// ---------------------------------------------------------------------------------------------

struct Run {
    state: RolloutState,
    /// Analyses delivered (checks that were due).
    checks: u32,
    /// Calls to `step`.
    ticks: u32,
    /// (phase, weight) after every tick.
    trail: Vec<(Phase, u32)>,
    effects: Vec<Effect>,
}

/// The analyzer loop: one tick per interval starting at `t0`, the twin ready once created,
/// an analysis whenever one is due, the stable rolled out one tick after promotion. With
/// `restart`, every tick reads the state back from annotations as a new process would.
fn simulate(settings: &Settings, verdict: MakeVerdict, restart: bool) -> Run {
    let mut run = Run {
        state: pending(),
        checks: 0,
        ticks: 0,
        trail: Vec::new(),
        effects: Vec::new(),
    };
    let mut now = t0();
    while !run.state.phase.is_terminal() {
        assert!(run.ticks < 100, "no end in sight: {:?}", run.trail);
        let twin = if run.state.phase == Phase::Pending {
            TwinStatus::Missing
        } else {
            TwinStatus::Ready
        };
        let due = check_due(&run.state, settings, twin == TwinStatus::Ready, now);
        let obs = Observation {
            twin,
            stable_rolled_out: run.state.phase == Phase::Promoting,
            analysis: due.then(|| analysis(verdict())),
            action: None,
            action_by: None,
            progress_deadline: DEADLINE,
            setup_error: None,
            fresh_window: false,
            peek: None,
            hooks: Vec::new(),
        };
        run.checks += u32::from(due);
        let current = if restart {
            round_trip(&run.state)
        } else {
            run.state.clone()
        };
        let (next, effects) = step(&current, &obs, settings, now);
        run.state = next;
        run.effects.extend(effects);
        run.ticks += 1;
        run.trail.push((run.state.phase, run.state.weight));
        now += as_signed(settings.interval);
    }
    run
}

#[test]
fn a_healthy_rollout_succeeds_after_five_analysed_windows_and_the_promotion_tick() {
    // 1 step when the twin is ready (0 → 10) + 5 analysed windows, one at each of 10, 20,
    // 30, 40 and 50 % (the last one promotes), then the tick that sees the stable rolled out.
    let run = simulate(&defaults(), pass, false);
    use Phase::*;
    assert_eq!(
        run.trail,
        [
            (Progressing, 0),  // started
            (Progressing, 10), // twin ready
            (Progressing, 20),
            (Progressing, 30),
            (Progressing, 40),
            (Progressing, 50),
            (Promoting, 50),
            (Succeeded, 0),
        ]
    );
    assert_eq!(run.checks, 5);
    assert_eq!(run.state.passed_checks, 5);
    assert_eq!(run.state.failed_checks, 0);
    let decisions: Vec<String> = tags(&run.effects)
        .into_iter()
        .filter(|t| t.starts_with("decision:"))
        .collect();
    assert_eq!(
        decisions,
        [
            "decision:start",
            "decision:step",
            "decision:step",
            "decision:step",
            "decision:step",
            "decision:step",
            "decision:promote",
            "decision:succeeded"
        ]
    );
    // Six weight decisions (ready + 5 checks) and the promotion tick, one interval apart.
    assert_eq!(run.ticks, 8);
    assert_eq!(run.state.phase_since, at(7 * 30));
}

#[test]
fn a_bad_rollout_fails_after_exactly_five_checks() {
    let run = simulate(&defaults(), fail, false);
    use Phase::*;
    assert_eq!(
        run.trail,
        [
            (Progressing, 0),
            (Progressing, 10),
            (Progressing, 10),
            (Progressing, 10),
            (Progressing, 10),
            (Progressing, 10),
            (Failed, 0),
        ]
    );
    assert_eq!(run.checks, 5);
    assert_eq!((run.state.failed_checks, run.state.passed_checks), (5, 0));
}

#[test]
fn a_decisively_bad_rollout_fails_on_the_first_check() {
    let run = simulate(&defaults(), decisive, false);
    assert_eq!(run.checks, 1);
    assert_eq!(run.trail.last(), Some(&(Phase::Failed, 0)));
}

#[test]
fn a_rollout_without_data_fails_at_the_inconclusive_limit() {
    let run = simulate(&defaults(), no_data, false);
    assert_eq!(run.checks, 10);
    assert_eq!(
        (
            run.state.phase,
            run.state.failed_checks,
            run.state.inconclusive_checks
        ),
        (Phase::Failed, 0, 10)
    );
}

#[test]
fn a_rollout_restarted_at_every_tick_follows_the_same_path() {
    for verdict in [pass, fail, no_data, decisive] {
        let steady = simulate(&defaults(), verdict, false);
        let restarted = simulate(&defaults(), verdict, true);
        assert_eq!(restarted.trail, steady.trail);
        assert_eq!(restarted.checks, steady.checks);
        assert_eq!(restarted.effects, steady.effects);
        assert_eq!(restarted.state, steady.state);
    }
}

#[test]
fn custom_steps_and_intervals_in_a_full_run() {
    let settings = settings_with(&[
        (ann::STEP_WEIGHT, "30"),
        (ann::MAX_WEIGHT, "50"),
        (ann::INTERVAL, "1s"),
    ]);
    let run = simulate(&settings, pass, false);
    use Phase::*;
    assert_eq!(
        run.trail,
        [
            (Progressing, 0),
            (Progressing, 30),
            (Progressing, 50),
            (Promoting, 50),
            (Succeeded, 0)
        ]
    );
    assert_eq!(run.checks, 2);
}

// ---------------------------------------------------------------------------------------------
// A twin that loses readiness under traffic
// ---------------------------------------------------------------------------------------------
// `check_due` needs a ready twin, so no analysis comes in; the machine judges the twin itself.

#[test]
fn a_twin_that_stops_being_ready_counts_failed_checks_each_interval() {
    let d = defaults();
    let s = progressing(20, 0);
    let (next, fx) = step(&s, &starting(1, 2), &d, at(30));
    assert_eq!(
        (next.phase, next.weight, next.failed_checks),
        (Phase::Progressing, 20, 1),
        "{fx:?}"
    );
    assert_eq!(
        next.last_check,
        Some(at(30)),
        "the unready interval is the window judged"
    );
    assert_eq!(tags(&fx), ["check:failed", "Warning:CheckFailed"]);
    assert!(message(&fx, "CheckFailed").contains("(1/5)"), "{fx:?}");
    assert!(
        message(&fx, "CheckFailed").contains("1/2 pods ready"),
        "{fx:?}"
    );
}

#[test]
fn an_unready_twin_is_not_judged_before_the_interval_is_over() {
    let s = progressing(20, 0);
    for now in [at(0), at(29), at_ms(29_999)] {
        let (next, fx) = step(&s, &starting(0, 2), &defaults(), now);
        // Only the start of the unready period is recorded (from the last healthy check).
        let want = RolloutState {
            unready_since: s.last_check,
            ..s.clone()
        };
        assert_eq!(next, want, "at {now}");
        assert!(fx.is_empty(), "at {now}: {fx:?}");
    }
}

#[test]
fn an_unready_twin_rolls_back_at_the_threshold() {
    let d = defaults();
    let mut s = progressing(20, 0);
    for i in 1..=4 {
        (s, _) = step(&s, &starting(0, 2), &d, at(30 * i));
        assert_eq!((s.phase, s.failed_checks), (Phase::Progressing, i as u32));
    }
    let (s, fx) = step(&s, &starting(0, 2), &d, at(150));
    assert_eq!((s.phase, s.weight, s.failed_checks), (Phase::Failed, 0, 5));
    assert_eq!(
        tags(&fx),
        ["check:failed", "decision:rollback", "Warning:RolledBack"]
    );
    let msg = message(&fx, "RolledBack");
    assert!(
        msg.contains("0/2 pods ready") && msg.contains("5 failed checks"),
        "{msg}"
    );
}

#[test]
fn unready_intervals_and_failed_analyses_add_up() {
    let d = defaults();
    let (s, t, _) = checks(progressing(20, 0), &d, 0, 3, fail);
    let (s, fx) = step(&s, &starting(1, 2), &d, at(t + 30));
    assert_eq!(
        (s.phase, s.failed_checks),
        (Phase::Progressing, 4),
        "{fx:?}"
    );
    let (s, _) = step(&s, &starting(1, 2), &d, at(t + 60));
    assert_eq!((s.phase, s.failed_checks), (Phase::Failed, 5));
}

#[test]
fn a_twin_ready_again_resumes_normal_checks() {
    let d = defaults();
    let (s, _) = step(&progressing(20, 0), &starting(1, 2), &d, at(30));
    assert!(check_due(&s, &d, true, at(60)));
    let (s, _) = step(&s, &judged(pass()), &d, at(60));
    assert_eq!(
        (s.phase, s.weight, s.failed_checks),
        (Phase::Progressing, 30, 1)
    );
}

#[test]
fn an_unready_twin_is_counted_once_after_a_long_outage_or_rolled_back_past_the_deadline() {
    let d = defaults();
    // Up to the deadline since the last check: one failed check, no catch-up.
    let (s, _) = step(&progressing(20, 0), &starting(1, 2), &d, at(600));
    assert_eq!((s.phase, s.failed_checks), (Phase::Progressing, 1));
    // Past it: rolled back at once.
    let (s, fx) = step(&progressing(20, 0), &starting(1, 2), &d, at(601));
    assert_eq!((s.phase, s.weight), (Phase::Failed, 0));
    assert!(
        message(&fx, "RolledBack").contains("not ready for over 10m"),
        "{fx:?}"
    );
}

#[test]
fn a_twin_that_stops_being_ready_under_traffic_is_rolled_back_after_the_deadline() {
    // The twin took 20 % of the traffic, then crash-loops: with no tick for an hour (leader
    // change, outage) the next tick rolls back at once.
    let d = defaults();
    let s = progressing(20, 0);
    let now = at(3600);
    assert!(!check_due(&s, &d, false, now));
    let (next, fx) = step(&s, &starting(0, 2), &d, now);
    assert_eq!((next.phase, next.weight), (Phase::Failed, 0), "{fx:?}");
    assert!(
        message(&fx, "RolledBack").contains("0/2 pods ready"),
        "{fx:?}"
    );
}

#[test]
fn a_missing_twin_under_traffic_holds_until_the_analyzer_recreates_it() {
    let s = progressing(20, 0);
    let (next, fx) = step(&s, &twin(TwinStatus::Missing), &defaults(), at(3600));
    assert_eq!(next, s);
    assert!(fx.is_empty(), "{fx:?}");
}

#[test]
fn an_unready_twin_is_rolled_back_by_the_deadline_even_with_a_high_threshold() {
    // With threshold 100 and a 30 s interval, a twin with no ready pods keeps its share of
    // the traffic for 50 minutes: the deadline is measured from `last_check`, which each
    // unready check moves forward, so it only fires after a gap between ticks.
    let d = settings_with(&[(ann::THRESHOLD, "100")]);
    let mut s = progressing(20, 0);
    for i in 1..=21 {
        (s, _) = step(&s, &starting(0, 2), &d, at(30 * i));
    }
    assert_eq!(
        (s.phase, s.weight),
        (Phase::Failed, 0),
        "630 s unready, deadline 600 s: {s:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Looks between checks (early rollback)
// ---------------------------------------------------------------------------------------------

/// Twin ready, no check due, and a look at the evidence so far came back with `verdict`.
fn peeked(verdict: Verdict) -> Observation {
    Observation {
        peek: Some(Analysis {
            counts: Counts {
                canary: [31.0, 10.0],
                stable: [270.0, 0.0],
                ..Default::default()
            },
            ..analysis(verdict)
        }),
        ..ready()
    }
}

#[test]
fn a_peek_is_due_every_few_seconds_between_checks_only() {
    let d = defaults();
    let s = progressing(10, 0);
    let every = Duration::from_secs(2);
    assert!(
        !peek_due(&s, &d, true, every, at_ms(1700)),
        "too soon after the check"
    );
    assert!(peek_due(&s, &d, true, every, at(2)));
    assert!(peek_due(&s, &d, true, every, at(29)));
    assert!(
        !peek_due(&s, &d, true, every, at(30)),
        "the check itself is due"
    );
    assert!(!peek_due(&s, &d, false, every, at(10)), "twin not ready");
    assert!(
        !peek_due(&waiting(), &d, true, every, at(10)),
        "no traffic yet"
    );
    for phase in [
        Phase::Pending,
        Phase::Paused,
        Phase::Promoting,
        Phase::Failed,
    ] {
        let s = RolloutState {
            phase,
            ..progressing(10, 0)
        };
        assert!(!peek_due(&s, &d, true, every, at(10)), "{phase}");
    }
}

#[test]
fn decisive_evidence_between_checks_rolls_back_at_once_and_says_so() {
    let s = progressing(10, 0);
    let (next, fx) = step(&s, &peeked(decisive()), &defaults(), at(4));
    assert_eq!((next.phase, next.weight), (Phase::Failed, 0));
    assert_eq!(next.failed_checks, 1);
    assert_eq!(next.last_check, s.last_check, "no window was closed");
    assert_eq!(
        next.counts.canary,
        [31.0, 10.0],
        "the evidence acted on is recorded"
    );
    let m = message(&fx, "RolledBack");
    assert!(
        m.contains("early rollback between checks 4s after the last check"),
        "{m}"
    );
    assert!(m.contains("after 31 canary requests with 10 errors"), "{m}");
    assert!(m.contains("decisive evidence"), "{m}");
    assert!(
        tags(&fx).iter().any(|t| t.contains("failed_early")),
        "{fx:?}"
    );
}

#[test]
fn anything_but_decisive_evidence_between_checks_changes_nothing() {
    // Undecided, a non-decisive fail, too few requests, a Prometheus error (NoData): the
    // next check judges the whole window; none of these is ever a failure between checks.
    let s = progressing(20, 0);
    for verdict in [
        pass(),
        fail(),
        no_data(),
        not_enough(),
        undecided(),
        stable_degraded(),
    ] {
        let (next, fx) = step(&s, &peeked(verdict.clone()), &defaults(), at(6));
        assert_eq!(next, s, "{verdict:?}");
        assert!(fx.is_empty(), "{verdict:?}: {fx:?}");
    }
}

#[test]
fn a_peek_never_acts_outside_a_progressing_canary_with_traffic() {
    for s in [
        waiting(),
        in_phase(Phase::Paused),
        in_phase(Phase::Promoting),
    ] {
        let (next, _) = step(&s, &peeked(decisive()), &defaults(), at(6));
        assert_ne!(next.phase, Phase::Failed, "{:?}", s.phase);
    }
    // An unready twin is handled by the unready rule, not by the evidence.
    let s = progressing(20, 0);
    let obs = Observation {
        twin: TwinStatus::Starting {
            ready: 1,
            wanted: 2,
        },
        ..peeked(decisive())
    };
    let (next, _) = step(&s, &obs, &defaults(), at(6));
    assert_eq!(next.phase, Phase::Progressing);
}

#[test]
fn a_check_and_a_peek_in_one_tick_the_check_decides() {
    let s = progressing(10, 0);
    let obs = Observation {
        analysis: Some(analysis(pass())),
        ..peeked(decisive())
    };
    let (next, _) = step(&s, &obs, &defaults(), at(30));
    assert_eq!((next.phase, next.weight), (Phase::Progressing, 20));
}

#[test]
fn a_restart_between_checks_keeps_looking_from_the_persisted_check() {
    // The state as the last check persisted it, read back by a new process (a new leader):
    // its first look between checks still covers the window since that check.
    let s = round_trip(&progressing(30, 0));
    assert!(peek_due(
        &s,
        &defaults(),
        true,
        Duration::from_secs(2),
        at(12)
    ));
    let (next, fx) = step(&s, &peeked(decisive()), &defaults(), at(12));
    assert_eq!(next.phase, Phase::Failed);
    assert!(message(&fx, "RolledBack").contains("12s after the last check"));
    // And an undecided look after the restart leaves the persisted state exactly as it was.
    let (same, _) = step(&s, &peeked(undecided()), &defaults(), at(12));
    assert_eq!(round_trip(&same), s);
}

// ---------------------------------------------------------------------------------------------
// Hooks: results are observations, `post-rollout` an effect
// ---------------------------------------------------------------------------------------------

fn with_hooks(kinds: &[&str]) -> Settings {
    let pairs: Vec<(String, String)> = kinds
        .iter()
        .map(|k| {
            (
                format!("{}{k}", ann::HOOK_PREFIX),
                format!(r#"{{"type": "{k}", "url": "http://hooks.test/{k}"}}"#),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    settings_with(&refs)
}

fn hook(kind: HookKind, pass: bool) -> HookResult {
    HookResult {
        name: kind.as_str().into(),
        kind,
        outcome: if pass {
            hooks::HookOutcome::Pass
        } else {
            hooks::HookOutcome::Fail("answered HTTP 503".into())
        },
    }
}

fn answered(results: Vec<HookResult>) -> Observation {
    Observation {
        hooks: results,
        ..ready()
    }
}

#[test]
fn confirm_rollout_waits_without_a_twin_then_starts_or_is_cancelled_at_the_deadline() {
    let d = with_hooks(&["confirm-rollout"]);
    // No answer yet: nothing happens (no twin, no event).
    let (s, fx) = step(&pending(), &ready(), &d, at(1));
    assert_eq!(s.phase, Phase::Pending);
    assert!(fx.is_empty(), "{fx:?}");
    // "Not yet": waits, says so once, remembers since when (on the Deployment).
    let (s, fx) = step(
        &s,
        &answered(vec![hook(HookKind::ConfirmRollout, false)]),
        &d,
        at(2),
    );
    assert_eq!(s.phase, Phase::Pending);
    assert!(message(&fx, "WaitingForConfirmation").contains("answered HTTP 503"));
    assert_eq!(round_trip(&s).hooks.waiting_since, Some(at(2)));
    let (s2, fx) = step(
        &s,
        &answered(vec![hook(HookKind::ConfirmRollout, false)]),
        &d,
        at(40),
    );
    assert!(fx.is_empty(), "no second event while waiting: {fx:?}");
    // Confirmed: starts.
    let (started, _) = step(
        &s2,
        &answered(vec![hook(HookKind::ConfirmRollout, true)]),
        &d,
        at(50),
    );
    assert_eq!(started.phase, Phase::Progressing);
    assert_eq!(started.hooks.waiting_since, None);
    // Past the deadline (default 1 h): Cancelled with the reason.
    let (late, fx) = step(
        &s2,
        &answered(vec![hook(HookKind::ConfirmRollout, false)]),
        &d,
        at(3700),
    );
    assert_eq!(late.phase, Phase::Cancelled);
    assert!(message(&fx, "Cancelled").contains("not confirmed within 1h"));
}

#[test]
fn pre_rollout_holds_the_first_traffic_and_fails_checks_up_to_the_threshold() {
    let d = with_hooks(&["pre-rollout"]);
    let (s, _) = step(&waiting(), &ready(), &d, at(1));
    assert_eq!(s.weight, 0, "no traffic before the pre-rollout hook passed");
    let mut s = s;
    for i in 1..d.threshold {
        (s, _) = step(
            &s,
            &answered(vec![hook(HookKind::PreRollout, false)]),
            &d,
            at(30 * i64::from(i)),
        );
        assert_eq!(
            (s.phase, s.weight, s.failed_checks),
            (Phase::Progressing, 0, i)
        );
    }
    let (ok, fx) = step(
        &s,
        &answered(vec![hook(HookKind::PreRollout, true)]),
        &d,
        at(200),
    );
    assert_eq!(ok.weight, 10, "{fx:?}");
    let (failed, fx) = step(
        &s,
        &answered(vec![hook(HookKind::PreRollout, false)]),
        &d,
        at(200),
    );
    assert_eq!(failed.phase, Phase::Failed);
    assert!(message(&fx, "RolledBack").contains("pre-rollout hook pre-rollout failed"));
}

#[test]
fn rollout_hook_failures_are_failed_checks_and_a_rollback_hook_rolls_back() {
    let d = with_hooks(&["rollout", "rollback"]);
    let s = progressing(20, 0);
    let (next, fx) = step(
        &s,
        &answered(vec![hook(HookKind::Rollout, false)]),
        &d,
        at(31),
    );
    assert_eq!((next.phase, next.failed_checks), (Phase::Progressing, 1));
    assert!(message(&fx, "CheckFailed").contains("rollout hook rollout failed"));
    // A rollback hook that fails to answer is no reason to roll back; a 2xx is.
    let (kept, _) = step(
        &s,
        &answered(vec![hook(HookKind::Rollback, false)]),
        &d,
        at(31),
    );
    assert_eq!(kept.phase, Phase::Progressing);
    let (back, fx) = step(
        &s,
        &answered(vec![hook(HookKind::Rollback, true)]),
        &d,
        at(31),
    );
    assert_eq!(back.phase, Phase::Failed);
    assert!(message(&fx, "RolledBack").contains("rollback hook rollback answered 2xx"));
}

#[test]
fn confirm_promotion_holds_at_max_weight_still_judged_until_it_passes() {
    let d = with_hooks(&["confirm-promotion"]);
    let (held, fx) = step(&progressing(50, 0), &judged(pass()), &d, at(30));
    assert_eq!((held.phase, held.weight), (Phase::Progressing, 50));
    assert!(message(&fx, "WaitingForApproval").contains("waiting for approval"));
    // Still judged while held: decisive evidence rolls back.
    let (back, _) = step(&held, &judged(decisive()), &d, at(60));
    assert_eq!(back.phase, Phase::Failed);
    // The hook passes: promoted at once.
    let (promoted, fx) = step(
        &held,
        &answered(vec![hook(HookKind::ConfirmPromotion, true)]),
        &d,
        at(45),
    );
    assert_eq!(promoted.phase, Phase::Promoting);
    assert!(message(&fx, "Promoting").contains("confirmed by confirm-promotion hook"));
}

#[test]
fn post_rollout_is_asked_for_once_and_never_again_after_a_restart() {
    let d = with_hooks(&["post-rollout"]);
    let (failed, fx) = step(&progressing(20, 0), &judged(decisive()), &d, at(30));
    assert_eq!(failed.phase, Phase::Failed);
    assert!(
        fx.contains(&Effect::CallHooks(HookKind::PostRollout)),
        "{fx:?}"
    );
    let again = round_trip(&failed);
    assert!(again.hooks.post_rollout_sent);
    let (_, fx) = step(&again, &ready(), &d, at(31));
    assert!(
        !fx.contains(&Effect::CallHooks(HookKind::PostRollout)),
        "{fx:?}"
    );
    // Promotion path: on Succeeded.
    let promoting = in_phase(Phase::Promoting);
    let (done, fx) = step(&promoting, &rolled_out(), &d, at(40));
    assert_eq!(done.phase, Phase::Succeeded);
    assert!(fx.contains(&Effect::CallHooks(HookKind::PostRollout)));
}

#[test]
fn canary_gate_approve_satisfies_confirm_promotion_and_names_who() {
    let d = with_hooks(&["confirm-promotion"]);
    let (held, _) = step(&progressing(50, 0), &judged(pass()), &d, at(30));
    assert_eq!(held.phase, Phase::Progressing);
    let obs = Observation {
        action_by: Some("ana".into()),
        ..acting(Action::Approve)
    };
    let (promoted, fx) = step(&held, &obs, &d, at(40));
    assert_eq!(promoted.phase, Phase::Promoting);
    assert!(
        message(&fx, "Promoting").contains("approved by ana"),
        "{fx:?}"
    );
    // Approved before max weight: recorded, and the first green check at max promotes.
    let (early, fx) = step(&progressing(20, 0), &obs, &d, at(10));
    assert!(message(&fx, "Approved").contains("ana"));
    assert_eq!(
        round_trip(&early).hooks.promotion_confirmed_by.as_deref(),
        Some("ana (canary-gate approve)")
    );
    let at_max = RolloutState {
        weight: 50,
        ..early
    };
    let (next, _) = step(&at_max, &judged(pass()), &d, at(40));
    assert_eq!(next.phase, Phase::Promoting);
}

#[test]
fn manual_actions_name_who_set_them() {
    let obs = |a| Observation {
        action_by: Some("ana".into()),
        ..acting(a)
    };
    let (_, fx) = step(&progressing(20, 0), &obs(Action::Abort), &defaults(), at(5));
    assert!(
        message(&fx, "RolledBack").contains("aborted by ana"),
        "{fx:?}"
    );
    let (paused, fx) = step(&progressing(20, 0), &obs(Action::Pause), &defaults(), at(5));
    assert!(
        message(&fx, "Paused").contains("paused by ana at 20 %"),
        "{fx:?}"
    );
    let (_, fx) = step(&paused, &obs(Action::Resume), &defaults(), at(9));
    assert!(message(&fx, "Resumed").contains("by ana"), "{fx:?}");
    // Without a record (an old webhook, or the CLI's dry path): "by hand", as before.
    let (_, fx) = step(
        &progressing(20, 0),
        &acting(Action::Abort),
        &defaults(),
        at(5),
    );
    assert!(message(&fx, "RolledBack").contains("aborted by hand"));
}
