//! `wait` and the manual actions, two ways:
//! - against the in-memory cluster with the real analyzer taking the actions (the rollout
//!   state the commands read is the one the analyzer really writes);
//! - as the shipped binary through the real kube client, against a fake API server on
//!   loopback (the HTTP boundary), for the exit codes, the kubeconfig/context/namespace
//!   flags and the `kubectl-canary_gate` plugin name.

mod common;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use canary_gate::analyzer::Analyzer;
use canary_gate::annotations as ann;
use canary_gate::cluster::memory::MemoryCluster;
use canary_gate::commands::act::{act, Plan};
use canary_gate::commands::wait::{wait, Outcome};
use canary_gate::gates::Sample;
use canary_gate::metrics::Metrics;
use canary_gate::prom::{PromError, QueryApi};
use canary_gate::rollout::state::{Action, Phase, RolloutState};
use canary_gate::settings::Defaults;
use jiff::Timestamp;
use serde_json::{json, Value};
use support::scenario::{admitted_deployment, podinfo_service, NAME, NS};

/// Prometheus with no series yet: every check is inconclusive, so only actions move a
/// rollout (and nothing here depends on timing of gate results).
struct NoData;

impl QueryApi for NoData {
    async fn query(&self, _promql: &str, _at: Timestamp) -> Result<Vec<Sample>, PromError> {
        Ok(vec![])
    }
}

struct Rig {
    cluster: Arc<MemoryCluster>,
    analyzer: Analyzer<MemoryCluster, NoData>,
}

impl Rig {
    fn new() -> Rig {
        let cluster = Arc::new(MemoryCluster::new());
        let (deployment, _) = admitted_deployment(&[]).expect("webhook admits the capture");
        cluster.put_deployment(deployment);
        cluster.put_service(podinfo_service());
        let analyzer = Analyzer::new(
            cluster.clone(),
            Arc::new(NoData),
            Defaults::default(),
            Metrics::new(),
        );
        Rig { cluster, analyzer }
    }

    async fn tick(&self) {
        self.analyzer.tick(Timestamp::now()).await;
    }

    fn state(&self) -> RolloutState {
        let d = self.cluster.deployment(NS, NAME).expect("stable exists");
        RolloutState::from_annotations(&d.metadata.annotations.unwrap_or_default())
            .expect("state recorded")
    }

    /// Ticks until the rollout is Progressing with the twin taking traffic.
    async fn progressing(&self) {
        for _ in 0..20 {
            self.tick().await;
            let s = self.state();
            if s.phase == Phase::Progressing && s.weight > 0 {
                return;
            }
        }
        panic!("never progressing: {:?}", self.state());
    }

    /// `wait` in the background, with a buffer for its progress lines.
    fn wait_in_background(&self, timeout: Duration) -> tokio::task::JoinHandle<(Outcome, String)> {
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            let mut out = Vec::new();
            let outcome = wait(
                &*cluster,
                NS,
                NAME,
                timeout,
                Duration::from_millis(20),
                &mut out,
            )
            .await;
            (outcome, String::from_utf8(out).expect("utf-8"))
        })
    }
}

#[tokio::test]
async fn promote_then_wait_succeeds_and_a_second_promote_is_refused() {
    let rig = Rig::new();
    let waiting = rig.wait_in_background(Duration::from_secs(20));
    rig.progressing().await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let first = act(&*rig.cluster, Action::Promote, NS, NAME)
        .await
        .expect("api");
    assert_eq!(
        first,
        Plan::Request {
            phase: Phase::Progressing,
            weight: 10
        }
    );
    let again = act(&*rig.cluster, Action::Promote, NS, NAME)
        .await
        .expect("api");
    assert_eq!(again, Plan::AlreadyRequested, "repetition writes nothing");

    // Ticks slower than `wait` polls, so that it sees each phase.
    for _ in 0..20 {
        rig.tick().await;
        if rig.state().phase.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (outcome, progress) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("wait returns once the rollout ended")
        .expect("task");
    assert_eq!(outcome.exit_code(), 0, "{outcome:?}\n{progress}");
    assert!(outcome.text().contains("promoted"), "{outcome:?}");
    for phase in ["Progressing", "Promoting"] {
        assert!(
            progress.contains(phase),
            "progress shows {phase}:\n{progress}"
        );
    }
    assert!(progress.contains("[#.........]  10%"), "{progress}");

    let late = act(&*rig.cluster, Action::Promote, NS, NAME)
        .await
        .expect("api");
    let Plan::Refuse(why) = &late else {
        panic!("promote on Succeeded is refused: {late:?}")
    };
    assert!(why.contains("already ended Succeeded"), "{why}");
    assert_eq!(late.exit_code(), 1);
    let annotations = rig
        .cluster
        .deployment(NS, NAME)
        .and_then(|d| d.metadata.annotations)
        .unwrap_or_default();
    assert!(
        !annotations.contains_key(ann::ACTION),
        "a refused action is not left on the object: {annotations:?}"
    );
}

#[tokio::test]
async fn abort_then_wait_fails_with_the_reason() {
    let rig = Rig::new();
    rig.progressing().await;
    let waiting = rig.wait_in_background(Duration::from_secs(20));
    assert!(matches!(
        act(&*rig.cluster, Action::Abort, NS, NAME).await,
        Ok(Plan::Request { .. })
    ));
    rig.tick().await;
    assert_eq!(rig.state().phase, Phase::Failed);
    let (outcome, _) = waiting.await.expect("task");
    assert_eq!(outcome.exit_code(), 1, "{outcome:?}");
    assert!(outcome.text().contains("aborted by hand"), "{outcome:?}");
    let again = act(&*rig.cluster, Action::Abort, NS, NAME)
        .await
        .expect("api");
    assert!(
        matches!(again, Plan::AlreadyDone(_)),
        "abort after abort: {again:?}"
    );
}

#[tokio::test]
async fn pause_and_resume_are_taken_and_repetitions_are_no_ops() {
    let rig = Rig::new();
    rig.progressing().await;
    assert!(matches!(
        act(&*rig.cluster, Action::Pause, NS, NAME).await,
        Ok(Plan::Request { .. })
    ));
    rig.tick().await;
    assert_eq!(rig.state().phase, Phase::Paused);
    assert!(matches!(
        act(&*rig.cluster, Action::Pause, NS, NAME).await,
        Ok(Plan::AlreadyDone(_))
    ));
    // A paused rollout is still running for `wait`: it times out (exit 3).
    let (outcome, progress) = rig
        .wait_in_background(Duration::from_millis(300))
        .await
        .expect("task");
    assert_eq!(outcome.exit_code(), 3, "{outcome:?}");
    assert!(outcome.text().contains("Paused"), "{outcome:?}");
    assert!(progress.contains("Paused"), "{progress}");

    assert!(matches!(
        act(&*rig.cluster, Action::Resume, NS, NAME).await,
        Ok(Plan::Request { .. })
    ));
    rig.tick().await;
    assert_eq!(rig.state().phase, Phase::Progressing);
    assert!(matches!(
        act(&*rig.cluster, Action::Resume, NS, NAME).await,
        Ok(Plan::AlreadyDone(_))
    ));
}

#[tokio::test]
async fn nothing_to_wait_for_exits_2() {
    let rig = Rig::new();
    let missing = wait(
        &*rig.cluster,
        NS,
        "nope",
        Duration::from_secs(5),
        Duration::from_millis(20),
        &mut Vec::new(),
    )
    .await;
    assert_eq!(missing.exit_code(), 2, "{missing:?}");
    let mut plain = podinfo_deployment_without_state();
    plain.metadata.name = Some("plain".into());
    rig.cluster.put_deployment(plain);
    let unmanaged = wait(
        &*rig.cluster,
        NS,
        "plain",
        Duration::from_secs(5),
        Duration::from_millis(20),
        &mut Vec::new(),
    )
    .await;
    assert_eq!(unmanaged.exit_code(), 2, "{unmanaged:?}");
    assert!(unmanaged.text().contains("not managed"), "{unmanaged:?}");
}

fn podinfo_deployment_without_state() -> k8s_openapi::api::apps::v1::Deployment {
    let (mut d, _) = admitted_deployment(&[]).expect("admitted");
    d.metadata.annotations = None;
    d
}

// --- The shipped binary against a fake API server ---------------------------------------

/// Just enough of the API server for one Deployment: GET, and merge-PATCH with
/// resourceVersion preconditions. Records every PATCH body.
#[derive(Default)]
struct FakeApi {
    deployment: Option<Value>,
    version: u64,
    patches: Vec<Value>,
}

type Shared = Arc<Mutex<FakeApi>>;

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    json_response(code, &body)
}

async fn get_deployment(
    State(api): State<Shared>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Response {
    let api = api.lock().expect("fake api");
    match &api.deployment {
        Some(d) if d["metadata"]["name"] == name && d["metadata"]["namespace"] == ns => {
            json_response(StatusCode::OK, d)
        }
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("deployments.apps \"{name}\" not found"),
        ),
    }
}

async fn patch_deployment(
    State(api): State<Shared>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON");
    };
    let mut api = api.lock().expect("fake api");
    api.patches.push(patch.clone());
    api.version += 1;
    let version = api.version.to_string();
    let Some(d) = api
        .deployment
        .as_mut()
        .filter(|d| d["metadata"]["name"] == name && d["metadata"]["namespace"] == ns)
    else {
        return status(StatusCode::NOT_FOUND, "NotFound", "not found");
    };
    let wanted = &patch["metadata"]["resourceVersion"];
    if !wanted.is_null() && *wanted != d["metadata"]["resourceVersion"] {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            "the object has been modified",
        );
    }
    json_patch::merge(d, &patch);
    d["metadata"]["resourceVersion"] = json!(version);
    json_response(StatusCode::OK, d)
}

async fn fake_api() -> (SocketAddr, Shared) {
    let api: Shared = Arc::default();
    let app = Router::new()
        .route(
            "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
            get(get_deployment).patch(patch_deployment),
        )
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, api)
}

/// The Deployment as the analyzer leaves it in `phase`, as JSON the API server returns.
fn deployment_in(phase: Phase, message: &str) -> Value {
    let (d, _) = admitted_deployment(&[]).expect("admitted");
    let mut s = RolloutState::from_annotations(&d.metadata.annotations.clone().unwrap_or_default())
        .expect("pending state");
    s.phase = phase;
    s.weight = if phase == Phase::Progressing { 20 } else { 0 };
    s.message = message.into();
    let mut annotations: BTreeMap<String, String> =
        d.metadata.annotations.clone().unwrap_or_default();
    for (k, v) in s.to_annotations() {
        match v {
            Some(v) => annotations.insert(k.to_string(), v),
            None => annotations.remove(k),
        };
    }
    let mut v = serde_json::to_value(&d).expect("json");
    v["apiVersion"] = json!("apps/v1");
    v["kind"] = json!("Deployment");
    v["metadata"]["annotations"] = json!(annotations);
    v["metadata"]["resourceVersion"] = json!("100");
    v
}

fn kubeconfig(dir: &Path, api: SocketAddr) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        r#"apiVersion: v1
kind: Config
current-context: elsewhere
clusters:
- name: fake
  cluster:
    server: http://{api}
- name: closed
  cluster:
    server: http://127.0.0.1:9
contexts:
- name: fake-shop
  context: {{cluster: fake, user: tester, namespace: {NS}}}
- name: elsewhere
  context: {{cluster: closed, user: tester}}
users:
- name: tester
  user: {{token: test-token}}
"#
    );
    std::fs::write(&path, text).expect("kubeconfig written");
    path
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn run(program: &Path, args: &[&str], kubeconfig: &Path) -> Run {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(program)
            .args(args)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .env_remove("KUBECONFIG")
            .env("HOME", kubeconfig.parent().expect("dir"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("command ends")
    .expect("command runs");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

const BIN: &str = env!("CARGO_BIN_EXE_canary-gate");

#[tokio::test]
async fn binary_wait_exit_codes_through_the_real_client() {
    let (addr, api) = fake_api().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = kubeconfig(dir.path(), addr);
    let bin = Path::new(BIN);
    let wait_args = |target: &'static str, timeout: &'static str| {
        vec![
            "wait",
            target,
            "--context",
            "fake-shop",
            "--timeout",
            timeout,
            "--poll-interval",
            "100ms",
        ]
    };
    let set = |phase, message: &str| {
        api.lock().expect("api").deployment = Some(deployment_in(phase, message));
    };

    // Running, then the analyzer rolls it back while `wait` watches.
    set(Phase::Progressing, "gates green; 20 % to the canary");
    let flip = {
        let api = api.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            api.lock().expect("api").deployment = Some(deployment_in(
                Phase::Failed,
                "rolled back: request-success-rate: 90.00% < 99% (decisive evidence)",
            ));
        })
    };
    let failed = run(bin, &wait_args("shop/podinfo", "20s"), &kc).await;
    flip.await.expect("flip");
    assert_eq!(failed.code, 1, "{}{}", failed.stdout, failed.stderr);
    assert!(
        failed.stdout.contains("Progressing"),
        "progress: {}",
        failed.stdout
    );
    assert!(
        failed.stdout.contains("[##........]  20%"),
        "{}",
        failed.stdout
    );
    assert!(
        failed.stderr.contains("failed: shop/podinfo Failed")
            && failed.stderr.contains("decisive evidence"),
        "{}",
        failed.stderr
    );

    // The bare name takes the context's namespace.
    set(Phase::Succeeded, "revision promoted");
    let ok = run(bin, &wait_args("podinfo", "20s"), &kc).await;
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);
    assert!(
        ok.stdout.contains("succeeded: shop/podinfo Succeeded"),
        "{}",
        ok.stdout
    );

    set(
        Phase::Cancelled,
        "cancelled: the stable template was re-applied",
    );
    let cancelled = run(bin, &wait_args("shop/podinfo", "20s"), &kc).await;
    assert_eq!(cancelled.code, 2, "{}", cancelled.stderr);
    let missing = run(bin, &wait_args("shop/other", "20s"), &kc).await;
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("shop/other not found"),
        "{}",
        missing.stderr
    );

    set(Phase::Progressing, "gates green; 20 % to the canary");
    let slow = run(bin, &wait_args("shop/podinfo", "1s"), &kc).await;
    assert_eq!(slow.code, 3, "{}{}", slow.stdout, slow.stderr);
    assert!(slow.stderr.contains("timed out"), "{}", slow.stderr);

    // An unknown context is an error (4), distinct from every outcome.
    let bad = run(bin, &["wait", "shop/podinfo", "--context", "nope"], &kc).await;
    assert_eq!(bad.code, 4, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("nope"),
        "names the context: {}",
        bad.stderr
    );
    // So is a usage error (clap would say 2, which means "not released").
    let usage = run(bin, &["wait"], &kc).await;
    assert_eq!(usage.code, 4, "{}", usage.stderr);
}

#[tokio::test]
async fn kubectl_plugin_actions_write_once_and_refuse_with_the_reason() {
    let (addr, api) = fake_api().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = kubeconfig(dir.path(), addr);
    // Installed as a kubectl plugin: the same binary under kubectl's plugin name.
    let plugin = dir.path().join("kubectl-canary_gate");
    std::os::unix::fs::symlink(BIN, &plugin).expect("symlink");

    let help = run(&plugin, &["promote", "--help"], &kc).await;
    assert_eq!(help.code, 0, "{}", help.stderr);
    assert!(
        help.stdout.contains("kubectl canary-gate promote"),
        "{}",
        help.stdout
    );
    for flag in ["--context", "--kubeconfig", "--namespace"] {
        assert!(help.stdout.contains(flag), "{flag} in {}", help.stdout);
    }

    api.lock().expect("api").deployment = Some(deployment_in(
        Phase::Progressing,
        "gates green; 20 % to the canary",
    ));
    let args = [
        "promote",
        "podinfo",
        "-n",
        NS,
        "--context",
        "fake-shop",
        "--wait-for-analyzer",
        "0s",
    ];
    let first = run(&plugin, &args, &kc).await;
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    assert!(
        first.stdout.contains("promote requested"),
        "{}",
        first.stdout
    );
    {
        let api = api.lock().expect("api");
        assert_eq!(api.patches.len(), 1, "{:?}", api.patches);
        let patch = &api.patches[0];
        assert_eq!(patch["metadata"]["annotations"][ann::ACTION], "promote");
        assert_eq!(
            patch["metadata"]["resourceVersion"], "100",
            "written against the version read"
        );
        assert!(patch.get("spec").is_none(), "only the annotation: {patch}");
    }
    let second = run(&plugin, &args, &kc).await;
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(
        second.stdout.contains("already requested"),
        "{}",
        second.stdout
    );
    assert_eq!(api.lock().expect("api").patches.len(), 1, "no second write");

    // With --wait-for-analyzer the command reports where the analyzer took the rollout.
    api.lock().expect("api").deployment = Some(deployment_in(
        Phase::Progressing,
        "gates green; 20 % to the canary",
    ));
    let analyzer = {
        let api = api.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let mut api = api.lock().expect("api");
                if api.patches.len() == 2 {
                    api.deployment = Some(deployment_in(
                        Phase::Paused,
                        "paused by hand at 20 %; resume with canary-gate.io/action=resume",
                    ));
                    return true;
                }
            }
            false
        })
    };
    let pause = run(
        &plugin,
        &[
            "pause",
            "shop/podinfo",
            "--context",
            "fake-shop",
            "--wait-for-analyzer",
            "10s",
        ],
        &kc,
    )
    .await;
    assert!(analyzer.await.expect("task"), "the pause was written");
    assert_eq!(pause.code, 0, "{}", pause.stderr);
    assert!(pause.stdout.contains("pause requested"), "{}", pause.stdout);
    assert!(
        pause.stdout.contains("shop/podinfo: Paused"),
        "{}",
        pause.stdout
    );

    api.lock().expect("api").deployment =
        Some(deployment_in(Phase::Succeeded, "revision promoted"));
    let refused = run(&plugin, &args, &kc).await;
    assert_eq!(refused.code, 1, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("cannot promote")
            && refused.stderr.contains("already ended Succeeded"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        api.lock().expect("api").patches.len(),
        2,
        "a refusal writes nothing"
    );

    // `-n` and a conflicting NAMESPACE/ prefix: an error naming both.
    let conflict = run(
        &plugin,
        &["abort", "other/podinfo", "-n", NS, "--context", "fake-shop"],
        &kc,
    )
    .await;
    assert_eq!(conflict.code, 4, "{}", conflict.stderr);
    assert!(conflict.stderr.contains("\"other\""), "{}", conflict.stderr);
}

// --- The analyzer's run loop: a change seen by the watch moves a phase on at once ---------

#[tokio::test]
async fn a_wake_from_the_watch_runs_a_tick_without_waiting_for_the_next_one() {
    let rig = Rig::new();
    let Rig { cluster, analyzer } = rig;
    let analyzer = Arc::new(analyzer);
    let (_leader_tx, leader_rx) = tokio::sync::watch::channel(true);
    let changed = Arc::new(canary_gate::cluster::Wakes::default());
    // Ticks an hour apart: only the immediate first tick and wake-ups can move anything.
    let task = tokio::spawn(analyzer.clone().run(
        Duration::from_secs(3600),
        leader_rx,
        Some(changed.clone()),
    ));
    let state = |c: &MemoryCluster| {
        RolloutState::from_annotations(
            &c.deployment(NS, NAME)
                .and_then(|d| d.metadata.annotations)
                .unwrap_or_default(),
        )
        .expect("state")
    };
    // The first tick: Pending -> Progressing, the twin created (ready at once in memory).
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            state(&cluster).phase == Phase::Progressing
        })
        .await
    );
    assert_eq!(
        state(&cluster).weight,
        0,
        "no traffic before the twin is seen ready"
    );
    // A wake-up works on the rollouts it names: another one's twin turning ready does
    // not step this one.
    changed.wake(NS.into(), "someone-else".into());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state(&cluster).weight, 0, "woken for another rollout");
    let woken = std::time::Instant::now();
    changed.wake(NS.into(), NAME.into());
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            state(&cluster).weight == 10
        })
        .await,
        "the wake-up sent the first step"
    );
    assert!(
        woken.elapsed() < Duration::from_secs(2),
        "{:?} after the wake-up, not at the next tick",
        woken.elapsed()
    );
    task.abort();
}
