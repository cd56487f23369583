//! The analyzer end to end: the real webhook decision, the real analyzer and a real
//! Prometheus (Debian package) scraping simulated Istio traffic, with the Kubernetes API
//! faked in memory at the one cluster boundary.

mod support;

use std::time::Duration;

use canary_gate::rollout::state::Phase;
use support::scenario::{run_rollout, user_virtual_service, Env, NAME};
use support::Profile;

const FAST: &[(&str, &str)] = &[("canary-gate.io/interval", "2s")];

fn healthy() -> Profile {
    Profile {
        error_rate: 0.001,
        latency_p50_ms: 40.0,
        latency_p99_ms: 120.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_canary_is_promoted_and_user_routes_restored() {
    let env = Env::start().await.expect("prometheus + exporter");
    let mut first_traffic = None;
    let out = run_rollout(
        &env,
        "shop",
        FAST,
        healthy(),
        healthy(),
        true,
        Duration::from_secs(90),
        |o| {
            if first_traffic.is_none() && o.weights.iter().any(|w| *w > 0) {
                first_traffic = Some(std::time::Instant::now());
            }
        },
    )
    .await
    .expect("rollout ran");
    // Five 2 s bake times (10 → 50 %, then the promotion check), the stable's roll-out (at
    // once in memory) and at most 2 s of reaction in all: no idle ticks between phases.
    let promoted_after = first_traffic.expect("traffic").elapsed();
    eprintln!("healthy 10 -> 50 % promoted {promoted_after:?} after the first traffic");
    assert!(
        promoted_after <= Duration::from_secs(5 * 2 + 2),
        "{promoted_after:?}: {:?}",
        out.transitions
    );
    assert_eq!(
        out.phase,
        Phase::Succeeded,
        "{:?} {}",
        out.transitions,
        out.state.message
    );
    // Every step was taken, in order, none skipped or repeated.
    let steps: Vec<i32> = out.weights.iter().copied().filter(|w| *w > 0).collect();
    assert_eq!(
        steps,
        vec![10, 20, 30, 40, 50],
        "weights seen: {:?}",
        out.weights
    );
    let c = &out.cluster;
    let stable = c.deployment("shop", NAME).expect("stable");
    assert_eq!(
        stable.spec.as_ref().and_then(|s| s.paused),
        Some(false),
        "stable unpaused to roll out the validated template"
    );
    assert!(
        c.deployment("shop", "podinfo-canary").is_none(),
        "twin deleted"
    );
    assert!(
        c.service("shop", "podinfo-canary").is_none(),
        "canary service deleted"
    );
    let vs = c.virtual_service("shop", NAME).expect("user VS kept");
    assert_eq!(
        vs.spec,
        user_virtual_service().spec,
        "user routes restored exactly"
    );
    assert!(
        vs.metadata.annotations.unwrap_or_default().is_empty(),
        "adoption marks removed"
    );
    let reasons: Vec<String> = c.events().into_iter().map(|e| e.reason).collect();
    for r in [
        "CanaryStarted",
        "CanaryReady",
        "WeightIncreased",
        "Promoting",
        "Succeeded",
    ] {
        assert!(
            reasons.iter().any(|x| x == r),
            "missing event {r}: {reasons:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_canary_is_rolled_back_fast() {
    let env = Env::start().await.expect("prometheus + exporter");
    let broken = Profile {
        error_rate: 0.10,
        ..healthy()
    };
    let out = run_rollout(
        &env,
        "shop",
        FAST,
        healthy(),
        broken,
        false,
        Duration::from_secs(60),
        |_| {},
    )
    .await
    .expect("rollout ran");
    assert_eq!(out.phase, Phase::Failed, "{:?}", out.transitions);
    assert!(
        out.state.message.contains("request-success-rate"),
        "{}",
        out.state.message
    );
    // Decisive evidence: rolled back at the first weight, not after 5 failed checks.
    assert!(
        out.weights.iter().all(|w| *w <= 10),
        "weights {:?}",
        out.weights
    );
    let c = &out.cluster;
    assert!(
        c.deployment("shop", "podinfo-canary").is_none(),
        "twin deleted"
    );
    assert!(
        c.all_virtual_services().is_empty(),
        "created routes removed"
    );
    let stable = c.deployment("shop", NAME).expect("stable");
    assert_eq!(
        stable.spec.as_ref().and_then(|s| s.paused),
        Some(true),
        "stable stays on the old ReplicaSet"
    );
    assert_eq!(out.state.weight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_canary_is_rolled_back_on_the_share_of_slow_requests() {
    let env = Env::start().await.expect("prometheus + exporter");
    let slow = Profile {
        latency_p50_ms: 300.0,
        latency_p99_ms: 900.0,
        ..healthy()
    };
    let out = run_rollout(
        &env,
        "shop",
        FAST,
        healthy(),
        slow,
        false,
        Duration::from_secs(60),
        |_| {},
    )
    .await
    .expect("rollout ran");
    assert_eq!(out.phase, Phase::Failed, "{:?}", out.transitions);
    assert!(
        out.state.message.contains("request-duration")
            && out.state.message.contains("slower than 500 ms"),
        "{}",
        out.state.message
    );
    // Decisive: at the first weight, long before `threshold` (5) failed checks.
    assert!(
        out.weights.iter().all(|w| *w <= 10),
        "weights {:?}",
        out.weights
    );
    assert!(out.state.failed_checks <= 2, "{}", out.state.failed_checks);
    assert!(out.cluster.deployment("shop", "podinfo-canary").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn borderline_slow_canary_is_rolled_back() {
    // p99 just over the limit (700 ms vs 500 ms, few requests slower than the limit): caught
    // by the per-window p99 gate (threshold 3) or by the share of slow requests, whichever
    // has the evidence first; either way never promoted.
    let env = Env::start().await.expect("prometheus + exporter");
    let borderline = Profile {
        latency_p50_ms: 60.0,
        latency_p99_ms: 700.0,
        ..healthy()
    };
    let annotations = &[
        ("canary-gate.io/interval", "2s"),
        ("canary-gate.io/threshold", "3"),
    ];
    let out = run_rollout(
        &env,
        "shop",
        annotations,
        healthy(),
        borderline,
        false,
        Duration::from_secs(60),
        |_| {},
    )
    .await
    .expect("rollout ran");
    assert_eq!(out.phase, Phase::Failed, "{:?}", out.transitions);
    assert!(
        out.state.message.contains("request-duration"),
        "{}",
        out.state.message
    );
}

/// When the canary first took traffic and when the rollout ended, seen tick by tick.
#[derive(Default)]
struct Clock {
    first_traffic: Option<std::time::Instant>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_canary_is_rolled_back_between_checks_within_seconds() {
    // The default 30 s interval: without looks between checks the first judgement would come
    // 30 s after the first traffic. 10 % of 200 req/s go to the canary, 10 % of those fail.
    let env = Env::start().await.expect("prometheus + exporter");
    let broken = Profile {
        error_rate: 0.10,
        ..healthy()
    };
    let mut clock = Clock::default();
    let out = run_rollout(
        &env,
        "shop",
        &[],
        healthy(),
        broken,
        false,
        Duration::from_secs(40),
        |o| {
            if o.weights.iter().any(|w| *w > 0) && clock.first_traffic.is_none() {
                clock.first_traffic = Some(std::time::Instant::now());
            }
        },
    )
    .await
    .expect("rollout ran");
    let ended = std::time::Instant::now();
    assert_eq!(
        out.phase,
        Phase::Failed,
        "{:?} {}",
        out.transitions,
        out.state.message
    );
    let after = ended - clock.first_traffic.expect("the canary took traffic");
    assert!(
        after <= Duration::from_secs(6),
        "rolled back {after:?} after its first traffic: {}",
        out.state.message
    );
    let m = &out.state.message;
    eprintln!("rolled back {after:?} after the first traffic: {m}");
    assert!(m.contains("early rollback between checks"), "{m}");
    assert!(m.contains("canary requests with"), "{m}");
    let events = out.cluster.events();
    let rolled = events
        .iter()
        .find(|e| e.reason == "RolledBack")
        .expect("a RolledBack event");
    assert!(
        rolled.message.contains("early rollback"),
        "{}",
        rolled.message
    );
    assert_eq!(out.state.passed_checks, 0, "no interval check ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_canary_is_not_rolled_back_by_looks_between_checks() {
    // 35 s at the default 30 s interval: some fifteen looks between checks, then one check.
    // The looks never roll a healthy canary back, and the bake time per step stays the
    // interval: exactly one step, at the check.
    let env = Env::start().await.expect("prometheus + exporter");
    let out = run_rollout(
        &env,
        "shop",
        &[],
        healthy(),
        healthy(),
        false,
        Duration::from_secs(35),
        |_| {},
    )
    .await
    .expect("rollout ran");
    assert_eq!(
        out.phase,
        Phase::Progressing,
        "{:?} {}",
        out.transitions,
        out.state.message
    );
    assert_eq!(
        out.state.weight, 20,
        "one step, at the 30 s check: {:?}",
        out.weights
    );
    assert_eq!(out.state.failed_checks, 0);
}
