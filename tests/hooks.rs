//! Rollout hooks end to end: a real HTTP server on loopback plays every hook target (it records
//! each request and answers 2xx, 5xx, slowly or not at all); the real analyzer calls it
//! through the real outbound client. Gates come from the real Prometheus where a rollout must
//! pass them, and from an empty query API where only hooks move the rollout.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use canary_gate::analyzer::Analyzer;
use canary_gate::cluster::memory::MemoryCluster;
use canary_gate::gates::Sample;
use canary_gate::metrics::Metrics;
use canary_gate::prom::{PromError, QueryApi};
use canary_gate::rollout::state::{Phase, RolloutState};
use canary_gate::settings::Defaults;
use jiff::Timestamp;
use serde_json::Value;
use support::scenario::{admitted_deployment, podinfo_service, run_rollout, Env, NAME, NS};
use support::Profile;

/// How the target answers a path: status, and a delay before answering.
#[derive(Clone, Copy)]
struct Answer {
    status: u16,
    delay: Duration,
}

#[derive(Default)]
struct Target {
    answers: BTreeMap<String, Answer>,
    /// (path, body) of every request, in arrival order.
    seen: Vec<(String, Value)>,
}

#[derive(Clone, Default)]
struct HookTarget(Arc<Mutex<Target>>);

impl HookTarget {
    async fn start() -> (SocketAddr, HookTarget) {
        let target = HookTarget::default();
        let app = Router::new()
            .route("/{path}", post(answer))
            .with_state(target.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (addr, target)
    }

    fn answer(&self, path: &str, status: u16, delay: Duration) {
        self.0
            .lock()
            .expect("target")
            .answers
            .insert(path.into(), Answer { status, delay });
    }

    fn seen(&self, path: &str) -> Vec<Value> {
        self.0
            .lock()
            .expect("target")
            .seen
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

async fn answer(
    State(target): State<HookTarget>,
    Path(path): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    let answer = {
        let mut t = target.0.lock().expect("target");
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        t.seen.push((path.clone(), body));
        t.answers.get(&path).copied().unwrap_or(Answer {
            status: 200,
            delay: Duration::ZERO,
        })
    };
    tokio::time::sleep(answer.delay).await;
    StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn hook(addr: SocketAddr, kind: &str, path: &str, timeout: &str) -> (String, String) {
    (
        format!("canary-gate.io/hook.{path}"),
        format!(
            r#"{{"type": "{kind}", "url": "http://{addr}/{path}", "timeout": "{timeout}", "metadata": {{"suite": "smoke"}}}}"#
        ),
    )
}

/// Only hooks move these rollouts: Prometheus has no data (inconclusive, weight held).
struct NoData;

impl QueryApi for NoData {
    async fn query(&self, _: &str, _: Timestamp) -> Result<Vec<Sample>, PromError> {
        Ok(vec![])
    }
}

fn rig(
    annotations: &[(String, String)],
) -> (
    Arc<MemoryCluster>,
    Analyzer<MemoryCluster, NoData>,
    Arc<Metrics>,
) {
    let cluster = Arc::new(MemoryCluster::new());
    let refs: Vec<(&str, &str)> = annotations
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (d, _) = admitted_deployment(&refs).expect("the webhook admits it");
    cluster.put_deployment(d);
    cluster.put_service(podinfo_service());
    let metrics = Metrics::new();
    let analyzer = Analyzer::new(
        cluster.clone(),
        Arc::new(NoData),
        Defaults::default(),
        metrics.clone(),
    );
    (cluster, analyzer, metrics)
}

fn state(c: &MemoryCluster) -> RolloutState {
    RolloutState::from_annotations(
        &c.deployment(NS, NAME)
            .and_then(|d| d.metadata.annotations)
            .unwrap_or_default(),
    )
    .expect("state")
}

/// Ticks (every 100 ms) until `done` holds or `within` passes.
async fn tick_until(
    analyzer: &Analyzer<MemoryCluster, NoData>,
    cluster: &MemoryCluster,
    within: Duration,
    done: impl Fn(&RolloutState) -> bool,
) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        analyzer.tick(Timestamp::now()).await;
        if done(&state(cluster)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_rollout_holds_before_the_twin_survives_a_restart_and_then_starts() {
    let (addr, target) = HookTarget::start().await;
    target.answer("confirm", 403, Duration::ZERO);
    let annotations = vec![
        hook(addr, "confirm-rollout", "confirm", "2s"),
        ("canary-gate.io/interval".into(), "1s".into()),
    ];
    let (cluster, analyzer, metrics) = rig(&annotations);
    assert!(
        tick_until(&analyzer, &cluster, Duration::from_secs(5), |s| s
            .hooks
            .waiting_since
            .is_some())
        .await,
        "waiting for confirmation"
    );
    let s = state(&cluster);
    assert_eq!(s.phase, Phase::Pending);
    assert!(s.message.contains("answered HTTP 403"), "{}", s.message);
    assert!(
        cluster.deployment(NS, "podinfo-canary").is_none(),
        "no twin before confirmation"
    );
    let body = &target.seen("confirm")[0];
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
        assert!(body.get(field).is_some(), "{field} in {body}");
    }
    assert_eq!(body["type"], "confirm-rollout");
    assert_eq!(body["deployment"], NAME);
    assert_eq!(body["metadata"]["suite"], "smoke");
    let waiting_since = s.hooks.waiting_since;

    // A restart: a new analyzer with nothing in memory. The wait lives on the Deployment.
    let metrics2 = Metrics::new();
    let restarted = Analyzer::new(
        cluster.clone(),
        Arc::new(NoData),
        Defaults::default(),
        metrics2,
    );
    target.answer("confirm", 200, Duration::ZERO);
    assert!(
        tick_until(&restarted, &cluster, Duration::from_secs(8), |s| s.weight
            > 0)
        .await,
        "confirmed, started, first step: {:?}",
        state(&cluster)
    );
    assert_eq!(state(&cluster).hooks.waiting_since, None);
    assert!(waiting_since.is_some());
    let text = metrics.encode();
    assert!(
        text.contains(r#"canary_gate_hook_calls_total{type="confirm-rollout",outcome="fail"}"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_pre_rollout_hook_times_out_fails_checks_and_never_slows_the_tick() {
    let (addr, target) = HookTarget::start().await;
    target.answer("smoke", 200, Duration::from_secs(30));
    let annotations = vec![
        hook(addr, "pre-rollout", "smoke", "1s"),
        ("canary-gate.io/interval".into(), "1s".into()),
        ("canary-gate.io/threshold".into(), "2".into()),
    ];
    let (cluster, analyzer, metrics) = rig(&annotations);
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) && !state(&cluster).phase.is_terminal() {
        let t = Instant::now();
        analyzer.tick(Timestamp::now()).await;
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = state(&cluster);
    assert_eq!(s.phase, Phase::Failed, "{}", s.message);
    assert!(
        s.message
            .contains("pre-rollout hook smoke failed: no answer within 1s"),
        "{}",
        s.message
    );
    assert_eq!(s.weight, 0);
    assert!(
        slowest < Duration::from_millis(500),
        "a tick took {slowest:?} while the hook hung"
    );
    assert!(
        target.seen("smoke").len() >= 2,
        "retried after the interval"
    );
    assert!(metrics
        .encode()
        .contains(r#"canary_gate_hook_calls_total{type="pre-rollout",outcome="timeout"}"#));
}

fn healthy() -> Profile {
    Profile {
        error_rate: 0.001,
        latency_p50_ms: 40.0,
        latency_p99_ms: 120.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_rollout_runs_every_hook_type_in_its_place() {
    // pre-rollout and rollout pass, confirm-promotion says "not yet" until we flip it,
    // rollback never asks to roll back (404), post-rollout is called once at the end.
    let (addr, target) = HookTarget::start().await;
    target.answer("approve", 409, Duration::ZERO);
    target.answer("stop", 404, Duration::ZERO);
    let env = Env::start().await.expect("prometheus + exporter");
    let hooks = [
        hook(addr, "pre-rollout", "smoke", "5s"),
        hook(addr, "rollout", "load", "5s"),
        hook(addr, "confirm-promotion", "approve", "5s"),
        hook(addr, "rollback", "stop", "5s"),
        hook(addr, "post-rollout", "report", "5s"),
    ];
    let mut annotations: Vec<(&str, &str)> = hooks
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    annotations.push(("canary-gate.io/interval", "2s"));
    let flip = target.clone();
    let mut held_at_max = false;
    let out = run_rollout(
        &env,
        "shop",
        &annotations,
        healthy(),
        healthy(),
        true,
        Duration::from_secs(90),
        |o| {
            if o.state.weight == 50 && o.state.hooks.waiting_since.is_some() && !held_at_max {
                held_at_max = true;
                flip.answer("approve", 200, Duration::ZERO);
            }
        },
    )
    .await
    .expect("rollout ran");
    assert_eq!(out.phase, Phase::Succeeded, "{}", out.state.message);
    assert!(held_at_max, "held at max weight waiting for approval");
    let reasons: Vec<String> = out.cluster.events().into_iter().map(|e| e.reason).collect();
    assert!(
        reasons.iter().any(|r| r == "WaitingForApproval"),
        "{reasons:?}"
    );
    let promoting = out
        .cluster
        .events()
        .into_iter()
        .find(|e| e.reason == "Promoting")
        .expect("promoted");
    assert!(
        promoting
            .message
            .contains("confirmed by confirm-promotion hook approve"),
        "{}",
        promoting.message
    );
    let smoke = target.seen("smoke");
    assert!(!smoke.is_empty(), "pre-rollout ran");
    assert_eq!(smoke[0]["weight"], 0, "before any traffic");
    assert!(
        target.seen("load").len() >= 4,
        "rollout hook with every check"
    );
    assert!(!target.seen("stop").is_empty(), "rollback hook polled");
    // post-rollout: once, asynchronously after Succeeded.
    let deadline = Instant::now() + Duration::from_secs(5);
    while target.seen("report").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = target.seen("report");
    assert_eq!(report.len(), 1, "post-rollout exactly once");
    assert_eq!(report[0]["phase"], "Succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_hook_answering_2xx_and_a_failing_rollout_hook_roll_back() {
    let (addr, target) = HookTarget::start().await;
    let env = Env::start().await.expect("prometheus + exporter");
    // The rollback switch: thrown (2xx) from the start.
    let stop = hook(addr, "rollback", "stop", "5s");
    let out = run_rollout(
        &env,
        "shop",
        &[
            (stop.0.as_str(), stop.1.as_str()),
            ("canary-gate.io/interval", "2s"),
        ],
        healthy(),
        healthy(),
        false,
        Duration::from_secs(40),
        |_| {},
    )
    .await
    .expect("rollout ran");
    assert_eq!(out.phase, Phase::Failed);
    assert!(
        out.state
            .message
            .contains("rollback hook stop answered 2xx"),
        "{}",
        out.state.message
    );

    // A rollout hook answering 500: failed checks up to the threshold.
    target.answer("load", 500, Duration::ZERO);
    let load = hook(addr, "rollout", "load", "5s");
    let out = run_rollout(
        &env,
        "team-b",
        &[
            (load.0.as_str(), load.1.as_str()),
            ("canary-gate.io/interval", "2s"),
            ("canary-gate.io/threshold", "2"),
        ],
        healthy(),
        healthy(),
        false,
        Duration::from_secs(60),
        |_| {},
    )
    .await
    .expect("rollout ran");
    assert_eq!(out.phase, Phase::Failed, "{}", out.state.message);
    assert!(
        out.state
            .message
            .contains("rollout hook load failed: answered HTTP 500"),
        "{}",
        out.state.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_events_reach_the_chat_webhook_with_the_events_own_text() {
    // The analyzer's notifier, through the same outbound client as the hooks: a rollout that
    // waits for confirmation announces it, with the message of the Event.
    let (addr, target) = HookTarget::start().await;
    target.answer("confirm", 409, Duration::ZERO);
    let annotations = vec![
        hook(addr, "confirm-rollout", "confirm", "2s"),
        ("canary-gate.io/interval".into(), "1s".into()),
    ];
    let (cluster, analyzer, _) = rig(&annotations);
    let analyzer = analyzer.with_notifications(canary_gate::outbound::notify::NotifyConfig {
        webhook: Some(canary_gate::outbound::notify::SecretUrl::new(format!(
            "http://{addr}/chat"
        ))),
        ..Default::default()
    });
    assert!(
        tick_until(&analyzer, &cluster, Duration::from_secs(5), |s| s
            .hooks
            .waiting_since
            .is_some())
        .await
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while target.seen("chat").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = target.seen("chat");
    let waiting = cluster
        .events()
        .into_iter()
        .find(|e| e.reason == "WaitingForConfirmation")
        .expect("event");
    assert!(
        sent.iter()
            .any(|n| n["reason"] == "WaitingForConfirmation" && n["message"] == waiting.message),
        "{sent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_rollout_hook_starts_canary_gate_loadtest_against_the_canary() {
    // `canary-gate loadtest --serve` in place of Flagger's loadtester: the hook starts a run
    // and passes at once; the run sends traffic to the URLs of the hook's metadata.
    let hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = hits.clone();
    let app = Router::new().route(
        "/api/info",
        axum::routing::get(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { "ok" }
        }),
    );
    let canary = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let canary_addr = canary.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(canary, app).await;
    });
    let tester = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let tester_addr = tester.local_addr().expect("addr");
    let base = canary_gate::loadtest::LoadtestArgs::new(["http://127.0.0.1:9/"]);
    tokio::spawn(async move {
        let _ = axum::serve(tester, canary_gate::loadtest::hook::router(base)).await;
    });

    let hook = (
        "canary-gate.io/hook.load".to_string(),
        format!(
            r#"{{"type": "pre-rollout", "url": "http://{tester_addr}/", "metadata": {{"urls": ["http://{canary_addr}/api/info"], "rate": 50, "duration": "2s"}}}}"#
        ),
    );
    let (cluster, analyzer, _) = rig(&[hook]);
    assert!(
        tick_until(&analyzer, &cluster, Duration::from_secs(10), |s| s.weight
            > 0)
        .await,
        "the pre-rollout hook passed: {:?}",
        state(&cluster)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while hits.load(std::sync::atomic::Ordering::SeqCst) < 50 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n = hits.load(std::sync::atomic::Ordering::SeqCst);
    assert!(n >= 50, "the load test sent {n} requests to the canary");
}
