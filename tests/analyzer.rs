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
    let out = run_rollout(
        &env,
        "shop",
        FAST,
        healthy(),
        healthy(),
        true,
        Duration::from_secs(90),
        |_| {},
    )
    .await
    .expect("rollout ran");
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
