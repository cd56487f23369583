//! Decision quality of canary-gate's judgement against a Flagger-equivalent fixed-threshold
//! policy, on the same simulated traffic. Prints a Markdown table for the README.
//!
//! Run with `make bench-judgement` (= `cargo run --quiet --release --example bench_judgement`).
//! Optional first argument: runs per scenario (default 20,000).
use canary_gate::gates::{self, Measured, WindowData};
use canary_gate::judge::sim::*;
use canary_gate::judge::*;
use canary_gate::rollout::machine::{self, Observation, TwinStatus};
use canary_gate::rollout::state::{Phase, RolloutState};
use canary_gate::settings::{Defaults, Settings};
use std::time::Duration;

/// Base seed: every run of every scenario derives its own seed from it, so the table is
/// reproducible and both policies see the same random stream in a given run.
const BASE_SEED: u64 = 20_240_917;
const DEFAULT_RUNS: u32 = 20_000;
/// The analyzer's default `--peek-interval`: looks between checks every 2 s.
const PEEK_S: f64 = 2.0;
/// Runs per cell of the by-interval table (a fifth of the main table's: it has 27 cells).
const INTERVAL_RUNS_DIVISOR: u32 = 5;

/// Flagger-equivalent policy: request-success-rate ≥ 99 % and request-duration p99 ≤ 500 ms
/// per window, `threshold: 5` failed checks (cumulative, like Flagger's `failedChecks`).
const FLAGGER_MIN_SUCCESS: f64 = 0.99;
const FLAGGER_THRESHOLD: u32 = 5;

/// Whether a canary in this scenario should be promoted (acceptable) or rolled back (bad).
fn acceptable(s: &Scenario) -> bool {
    matches!(
        s.name.as_str(),
        "healthy" | "low-traffic" | "noisy-platform"
    )
}

fn label(s: &Scenario) -> String {
    let pct = |x: f64| format!("{}", (x * 1000.0).round() / 10.0);
    match s.name.as_str() {
        "healthy" => format!(
            "healthy ({} % vs {} % 5xx)",
            pct(s.canary_error_rate),
            pct(s.stable_error_rate)
        ),
        "badly-broken" => format!("badly broken ({} % 5xx)", pct(s.canary_error_rate)),
        "subtly-broken" => format!(
            "subtly broken ({} % vs {} %)",
            pct(s.canary_error_rate),
            pct(s.stable_error_rate)
        ),
        "slow" => format!("slow (p99 {} ms)", s.canary_p99_ms),
        "low-traffic" => format!("low traffic ({} req/s)", s.rps_total),
        "noisy-platform" => format!(
            "noisy platform (stable also {} % 5xx)",
            pct(s.stable_error_rate)
        ),
        other => other.to_string(),
    }
}

/// One run's seed: a splitmix64 output of (base, scenario, run), so neighbouring runs get
/// unrelated streams.
fn run_seed(scenario: usize, run: u32) -> u64 {
    Rng::new(BASE_SEED ^ ((scenario as u64) << 32) ^ u64::from(run)).next_u64()
}

/// How one rollout ended, for either policy.
struct Run {
    outcome: Outcome,
    /// Simulated time from the first traffic to the decision.
    seconds: f64,
    canary_errors: f64,
}

/// Flagger-equivalent fixed-threshold analysis on the same traffic model as
/// [`simulate_rollout`]: start at one step; every interval sample a window; a check fails
/// when the window's success rate is below 99 %, its p99 above the limit, or it has no
/// canary requests (Flagger: "no values found" halts advancement and counts as a failed
/// check); a passing check steps the weight up, or promotes at max weight; the
/// `FLAGGER_THRESHOLD`-th failed check rolls back.
fn flagger(s: &Scenario, p: &RolloutParams, rng: &mut Rng) -> Run {
    let mut weight = p.step_pct.min(p.max_weight_pct);
    let mut failed = 0;
    let mut canary_errors = 0.0;
    for interval in 1..=p.max_intervals {
        let w = sample_window(s, weight, p.interval_s, rng);
        canary_errors += w.canary.errors;
        let ok = w.canary.total > 0.0
            && 1.0 - w.canary.errors / w.canary.total >= FLAGGER_MIN_SUCCESS
            && w.canary_p99_ms.is_some_and(|x| x <= p.max_p99_ms);
        let outcome = if !ok {
            failed += 1;
            (failed >= FLAGGER_THRESHOLD).then_some(Outcome::RolledBack)
        } else if weight >= p.max_weight_pct {
            Some(Outcome::Promoted)
        } else {
            weight = (weight + p.step_pct).min(p.max_weight_pct);
            None
        };
        if let Some(outcome) = outcome {
            return Run {
                outcome,
                seconds: f64::from(interval) * p.interval_s,
                canary_errors,
            };
        }
    }
    Run {
        outcome: Outcome::Stalled,
        seconds: f64::from(p.max_intervals) * p.interval_s,
        canary_errors,
    }
}

/// canary-gate as it runs in the analyzer: every simulated window goes through the same
/// `gates::evaluate` (built-in gates, sequential judgement) and the same pure state machine
/// `machine::step` as in production, with default settings (10 % steps to 50 %, threshold 5,
/// inconclusive limit 10) at `p.interval_s`, on a simulated clock. With `peek_s`, the
/// analyzer's looks between checks are replayed too: every `peek_s` the evidence so far (the
/// last check's counts plus the window up to then) goes to the machine as `Observation::peek`,
/// so the false-rollback rate below is the one with a look at every evaluation.
fn canary_gate(s: &Scenario, p: &RolloutParams, peek_s: Option<f64>, rng: &mut Rng) -> Run {
    let settings = Settings::from(&Defaults {
        interval: Duration::from_secs_f64(p.interval_s),
        ..Defaults::default()
    });
    let t0 = jiff::Timestamp::UNIX_EPOCH;
    let ready = Observation {
        twin: TwinStatus::Ready,
        stable_rolled_out: false,
        analysis: None,
        action: None,
        action_by: None,
        progress_deadline: Duration::from_secs(600),
        setup_error: None,
        fresh_window: false,
        peek: None,
        hooks: Vec::new(),
    };
    // Pending -> Progressing, then the ready twin gets the first step at t0.
    let mut state = RolloutState::pending("canary".into(), "stable".into(), t0);
    state = machine::step(&state, &ready, &settings, t0).0;
    state = machine::step(&state, &ready, &settings, t0).0;
    let mut canary_errors = 0.0;
    // Sub-windows per interval: the looks between checks happen at their ends but the last.
    let parts = peek_s.map_or(1, |e| (p.interval_s / e).round().max(1.0) as u32);
    let part_s = p.interval_s / f64::from(parts);
    let at = |secs: f64| t0 + jiff::SignedDuration::from_secs_f64(secs);
    let data = |c: Counts, st: Counts, cp: Option<f64>, sp: Option<f64>| {
        let measured = |c: Counts, p99: Option<f64>| Measured {
            requests: Some(c.total),
            errors: Some(c.errors),
            p99_ms: p99,
            slow: None,
        };
        WindowData {
            canary: measured(c, cp),
            stable: measured(st, sp),
            custom: Vec::new(),
        }
    };
    for interval in 1..=p.max_intervals {
        let (mut wc, mut ws) = (Counts::default(), Counts::default());
        // The window's p99: the simulator draws one per sub-window that had requests.
        let (mut cp, mut sp) = (None, None);
        for part in 1..=parts {
            let w = sample_window(s, f64::from(state.weight), part_s, rng);
            canary_errors += w.canary.errors;
            wc = Counts::new(wc.total + w.canary.total, wc.errors + w.canary.errors);
            ws = Counts::new(ws.total + w.stable.total, ws.errors + w.stable.errors);
            cp = w.canary_p99_ms.or(cp);
            sp = w.stable_p99_ms.or(sp);
            if part == parts {
                break;
            }
            let now = at((f64::from(interval - 1) * f64::from(parts) + f64::from(part)) * part_s);
            let look = gates::evaluate(
                &settings,
                state.weight,
                state.counts,
                Ok(data(wc, ws, cp, sp)),
            );
            let obs = Observation {
                peek: Some(look),
                ..ready.clone()
            };
            state = machine::step(&state, &obs, &settings, now).0;
            if state.phase == Phase::Failed {
                return Run {
                    outcome: Outcome::RolledBack,
                    seconds: (now.as_millisecond() - t0.as_millisecond()) as f64 / 1000.0,
                    canary_errors,
                };
            }
        }
        let now = at(f64::from(interval) * p.interval_s);
        let analysis = gates::evaluate(
            &settings,
            state.weight,
            state.counts,
            Ok(data(wc, ws, cp, sp)),
        );
        let obs = Observation {
            analysis: Some(analysis),
            ..ready.clone()
        };
        state = machine::step(&state, &obs, &settings, now).0;
        let outcome = match state.phase {
            Phase::Promoting => Some(Outcome::Promoted),
            Phase::Failed => Some(Outcome::RolledBack),
            _ => None,
        };
        if let Some(outcome) = outcome {
            return Run {
                outcome,
                seconds: f64::from(interval) * p.interval_s,
                canary_errors,
            };
        }
    }
    Run {
        outcome: Outcome::Stalled,
        seconds: f64::from(p.max_intervals) * p.interval_s,
        canary_errors,
    }
}

/// Nearest-rank quantile (sorts in place); NaN when empty.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = (q * v.len() as f64).ceil().max(1.0) as usize;
    v[rank - 1]
}

/// One table row's numbers.
struct Row {
    rolled_back: u32,
    promoted: u32,
    stalled: u32,
    minutes: Vec<f64>,
    errors: Vec<f64>,
}

fn evaluate(runs: &[Run]) -> Row {
    let count = |o: Outcome| runs.iter().filter(|r| r.outcome == o).count() as u32;
    Row {
        rolled_back: count(Outcome::RolledBack),
        promoted: count(Outcome::Promoted),
        stalled: count(Outcome::Stalled),
        minutes: runs.iter().map(|r| r.seconds / 60.0).collect(),
        errors: runs.iter().map(|r| r.canary_errors).collect(),
    }
}

fn main() {
    let started = std::time::Instant::now();
    let runs: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_RUNS);
    let cfg = JudgeConfig::default();
    let p = RolloutParams::default();
    let scenarios = scenarios();

    // Each scenario is independent and every run has its own seed, so the result does not
    // depend on the number of threads.
    let rows: Vec<(Row, Row)> = std::thread::scope(|scope| {
        let handles: Vec<_> = scenarios
            .iter()
            .enumerate()
            .map(|(idx, s)| {
                let p = &p;
                scope.spawn(move || {
                    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
                    for run in 0..runs {
                        let seed = run_seed(idx, run);
                        ours.push(canary_gate(s, p, Some(PEEK_S), &mut Rng::new(seed)));
                        theirs.push(flagger(s, p, &mut Rng::new(seed)));
                    }
                    (evaluate(&ours), evaluate(&theirs))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("benchmark thread panicked"))
            .collect()
    });

    println!(
        "Simulated traffic (Poisson arrivals, binomial 5xx, p99 = scenario value ± 5 %), not \
         measured: {runs} runs per scenario and policy, base seed {BASE_SEED} (run i of both \
         policies uses the same seed); {} s interval, {} % steps to {} %, give up after {} \
         intervals ({} min), p99 limit {} ms, 20 req/s unless stated.",
        p.interval_s,
        p.step_pct,
        p.max_weight_pct,
        p.max_intervals,
        f64::from(p.max_intervals) * p.interval_s / 60.0,
        p.max_p99_ms,
    );
    println!(
        "canary-gate: the analyzer's own `gates::evaluate` + `machine::step` with default \
         settings (confidence {}, threshold {} failed checks for latency, decisive error \
         evidence rolls back at once, no data for 10 checks rolls back). Flagger-equivalent: per \
         window success ≥ {} % and p99 ≤ {} ms, `threshold: {}` failed checks (a window \
         without canary requests is a failed check, as Flagger's \"no values found\").",
        cfg.confidence,
        FLAGGER_THRESHOLD,
        FLAGGER_MIN_SUCCESS * 100.0,
        p.max_p99_ms,
        FLAGGER_THRESHOLD,
    );
    println!();
    println!(
        "| Scenario | Policy | Runs | False rollbacks | Missed regressions | No decision | \
         Time to decision, median (min) | Time to decision, p90 (min) | 5xx served by canary, \
         median |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let pct = |x: u32| format!("{:.1} %", 100.0 * f64::from(x) / f64::from(runs));
    for (s, (ours, theirs)) in scenarios.iter().zip(rows) {
        for (policy, mut row) in [("canary-gate", ours), ("Flagger-style", theirs)] {
            let (false_rb, missed) = if acceptable(s) {
                (pct(row.rolled_back), "—".to_string())
            } else {
                ("—".to_string(), pct(row.promoted))
            };
            println!(
                "| {} | {policy} | {runs} | {false_rb} | {missed} | {} | {:.1} | {:.1} | {} |",
                label(s),
                pct(row.stalled),
                quantile(&mut row.minutes, 0.5),
                quantile(&mut row.minutes, 0.9),
                quantile(&mut row.errors, 0.5),
            );
        }
    }
    println!();
    println!(
        "False rollbacks: share of runs rolled back although the canary was acceptable \
         (healthy, low traffic, noisy platform). Missed regressions: share of runs promoted \
         although the canary was bad (broken, subtle, slow). No decision: neither within {} \
         min; such runs count as {} min in the time columns. 5xx served: canary 5xx responses \
         users received before the decision.",
        f64::from(p.max_intervals) * p.interval_s / 60.0,
        f64::from(p.max_intervals) * p.interval_s / 60.0,
    );
    let by_interval = interval_table(&scenarios, runs / INTERVAL_RUNS_DIVISOR);
    eprintln!(
        "bench_judgement: {} rollouts in {:.1} s",
        2 * runs as usize * scenarios.len() + by_interval,
        started.elapsed().as_secs_f64()
    );
}

/// The policies of the by-interval table.
#[derive(Clone, Copy)]
enum Policy {
    Peeking,
    ChecksOnly,
    Flagger,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Peeking => "canary-gate, looks every 2 s",
            Policy::ChecksOnly => "canary-gate, checks only",
            Policy::Flagger => "Flagger-style",
        }
    }

    fn run(self, s: &Scenario, p: &RolloutParams, rng: &mut Rng) -> Run {
        match self {
            Policy::Peeking => canary_gate(s, p, Some(PEEK_S), rng),
            Policy::ChecksOnly => canary_gate(s, p, None, rng),
            Policy::Flagger => flagger(s, p, rng),
        }
    }
}

/// Time to roll back a badly broken canary and the 5xx it served, and the false-rollback rate
/// of healthy and low-traffic canaries, at 2 s, 10 s and 30 s intervals (each with a 20 min
/// horizon). Returns the number of rollouts simulated.
fn interval_table(scenarios: &[Scenario], runs: u32) -> usize {
    let runs = runs.max(1);
    let pick = |name: &str| {
        let i = scenarios
            .iter()
            .position(|s| s.name == name)
            .expect("scenario exists");
        (i, &scenarios[i])
    };
    let cells: Vec<(f64, Policy)> = [2.0, 10.0, 30.0]
        .into_iter()
        .flat_map(|i| {
            [Policy::Peeking, Policy::ChecksOnly, Policy::Flagger]
                .into_iter()
                .map(move |p| (i, p))
        })
        .collect();
    let rows: Vec<(Row, Row, Row)> = std::thread::scope(|scope| {
        let handles: Vec<_> = cells
            .iter()
            .map(|&(interval_s, policy)| {
                let pick = &pick;
                scope.spawn(move || {
                    let p = RolloutParams {
                        interval_s,
                        max_intervals: (1200.0 / interval_s) as u32,
                        ..RolloutParams::default()
                    };
                    let one = |name: &str| {
                        let (idx, s) = pick(name);
                        let runs: Vec<Run> = (0..runs)
                            .map(|run| policy.run(s, &p, &mut Rng::new(run_seed(idx, run))))
                            .collect();
                        evaluate(&runs)
                    };
                    (one("badly-broken"), one("healthy"), one("low-traffic"))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("benchmark thread panicked"))
            .collect()
    });
    println!();
    println!(
        "By interval ({runs} runs per cell, same seeds across cells, 20 min horizon): the badly \
         broken canary (10 % 5xx, 20 req/s, 10 % first step) and the false-rollback rate of \
         acceptable canaries with a look at every evaluation. canary-gate looks every {PEEK_S} s \
         between checks (`--peek-interval`; at a 2 s interval every evaluation is a check)."
    );
    println!();
    println!(
        "| Interval | Policy | Broken: rolled back after, median (s) | p90 (s) | Broken: 5xx served, \
         median | Healthy: false rollbacks | Low traffic: false rollbacks |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    let pct = |x: u32| format!("{:.2} %", 100.0 * f64::from(x) / f64::from(runs));
    for (&(interval_s, policy), (mut broken, healthy, low)) in cells.iter().zip(rows) {
        println!(
            "| {interval_s} s | {} | {:.0} | {:.0} | {} | {} | {} |",
            policy.name(),
            quantile(&mut broken.minutes, 0.5) * 60.0,
            quantile(&mut broken.minutes, 0.9) * 60.0,
            quantile(&mut broken.errors, 0.5),
            pct(healthy.rolled_back),
            pct(low.rolled_back),
        );
    }
    cells.len() * 3 * runs as usize
}
