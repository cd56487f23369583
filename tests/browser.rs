//! The dashboard in a real headless Chromium (Debian package `chromium`), driven with
//! Chromium's own `--dump-dom` and `--screenshot`, against the real admin server reading the
//! in-memory cluster while the real analyzer runs rollouts against the real Prometheus.
//! Writes the README's screenshots: docs/dashboard-list.png and docs/dashboard-rollout.png.
//! Without Chromium this test FAILS (install it: `apt-get install -y chromium`).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use canary_gate::cluster::memory::MemoryCluster;
use canary_gate::metrics::Metrics;
use canary_gate::rollout::state::Phase;
use serde_json::Value;
use support::dashboard::{serve, state};
use support::scenario::{run_rollout_with, Env, Shared};
use support::Profile;

const FAST: &[(&str, &str)] = &[("canary-gate.io/interval", "2s")];
/// The healthy rollout the list page watches: slow enough (8 steps of 3 s) that the page,
/// opened at its first step, sees several weights whatever Chromium's start-up takes.
const WATCHED: &[(&str, &str)] = &[
    ("canary-gate.io/interval", "3s"),
    ("canary-gate.io/step-weight", "5"),
];

fn healthy() -> Profile {
    Profile {
        error_rate: 0.001,
        latency_p50_ms: 40.0,
        latency_p99_ms: 120.0,
    }
}

fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "headless Chromium not found at {}: install the Debian package (`apt-get install -y chromium`, \
         as .ci/run does) or set CHROMIUM=/path/to/chromium. The browser test never passes without it.",
        path.display()
    );
    path
}

/// One headless Chromium run with a fresh profile; returns stdout (the DOM for --dump-dom).
async fn chrome(args: &[String], url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--hide-scrollbars",
        "--no-proxy-server",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .arg(url)
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(150), cmd.output())
        .await
        .expect("chromium finished in time")
        .expect("chromium ran");
    assert!(
        out.status.success(),
        "chromium failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn dump(url: &str, extra: &[&str]) -> String {
    let args: Vec<String> = std::iter::once("--dump-dom".to_string())
        .chain(extra.iter().map(|s| s.to_string()))
        .collect();
    let dom = chrome(&args, url).await;
    assert!(dom.contains("</html>"), "a DOM was dumped: {dom}");
    dom
}

async fn screenshot(url: &str, file: &Path, size: &str) {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).expect("docs dir");
    }
    let _ = std::fs::remove_file(file);
    chrome(
        &[
            format!("--screenshot={}", file.display()),
            format!("--window-size={size}"),
        ],
        url,
    )
    .await;
    let png = std::fs::read(file).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "a real screenshot: {} bytes",
        png.len()
    );
}

/// `(attribute value)` of the first `name="..."` in `dom`.
fn attr<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let start = dom.find(&format!("{name}=\""))? + name.len() + 2;
    dom[start..].split('"').next()
}

fn count(dom: &str, needle: &str) -> usize {
    dom.matches(needle).count()
}

async fn get_json(url: &str) -> Value {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(url)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium() {
    chromium();
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let cluster = Arc::new(MemoryCluster::new());
    let metrics = Metrics::new();
    let admin = serve(state(&cluster, metrics.clone()), "127.0.0.1:0")
        .await
        .expect("admin server");
    let env = Env::start().await.expect("prometheus + exporter");
    let shared = Shared {
        cluster: Some(cluster.clone()),
        metrics: Some(metrics),
        history: Some(admin.state.dashboard.clone().expect("dashboard").history()),
    };

    // 1. A broken canary (10 % 5xx) is rolled back.
    let broken = Profile {
        error_rate: 0.10,
        ..healthy()
    };
    let out = run_rollout_with(
        &env,
        shared.clone(),
        "payments",
        FAST,
        healthy(),
        broken,
        true,
        Duration::from_secs(60),
        |_| {},
    )
    .await
    .expect("broken rollout");
    assert_eq!(out.phase, Phase::Failed);

    // 2. A healthy one; the list page is opened once it takes traffic and left to poll.
    let weight = AtomicU32::new(0);
    let done = AtomicBool::new(false);
    let rollout = async {
        let out = run_rollout_with(
            &env,
            shared.clone(),
            "shop",
            WATCHED,
            healthy(),
            healthy(),
            true,
            Duration::from_secs(90),
            |o| {
                weight.store(o.state.weight, Ordering::SeqCst);
            },
        )
        .await;
        done.store(true, Ordering::SeqCst);
        out
    };
    let browser = async {
        while weight.load(Ordering::SeqCst) < 10 {
            assert!(
                !done.load(Ordering::SeqCst),
                "rollout ended before taking traffic"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Virtual time runs the page's timers; it stands still while a long poll is open,
        // so each poll waits for a real change of the rollouts.
        let dom = dump(&admin.url("/"), &["--virtual-time-budget=2500"]).await;
        screenshot(
            &admin.url("/"),
            &docs.join("dashboard-list.png"),
            "1280,420",
        )
        .await;
        dom
    };
    let (out, dom) = futures::join!(rollout, browser);
    let out = out.expect("healthy rollout");
    assert_eq!(out.phase, Phase::Succeeded, "{:?}", out.transitions);

    // The list shows both rollouts; the weight changed in this one document, by its own
    // polling: the server rendered one weight, the script's poll log (which a reload
    // would reset) saw several, and the rows are the script's.
    assert!(
        dom.contains("data-key=\"shop/podinfo\"") && dom.contains("data-key=\"payments/podinfo\""),
        "{dom}"
    );
    let server = attr(&dom, "data-server-weights").expect("server-rendered weights");
    let initial: u32 = server
        .split(' ')
        .find_map(|kv| kv.strip_prefix("shop/podinfo="))
        .and_then(|w| w.parse().ok())
        .expect("initial weight of shop/podinfo");
    let polls: usize = attr(&dom, "data-polls")
        .and_then(|n| n.parse().ok())
        .expect("data-polls set by the script");
    assert!(polls >= 2, "the page polled: {polls}");
    let log: Vec<u32> = dom
        .split("<li data-poll=\"")
        .skip(1)
        .filter_map(|li| {
            let text = li.split_once('>')?.1.split('<').next()?;
            text.split(' ')
                .find_map(|kv| kv.strip_prefix("shop/podinfo="))
                .and_then(|w| w.split(':').next())
                .and_then(|w| w.parse().ok())
        })
        .collect();
    assert_eq!(
        log.len(),
        polls,
        "one log entry per poll, all in one document"
    );
    let distinct: BTreeSet<u32> = log.iter().copied().collect();
    let raw: Vec<&str> = dom
        .split("<li data-poll=\"")
        .skip(1)
        .filter_map(|li| li.split_once('>')?.1.split('<').next())
        .collect();
    assert!(
        distinct.len() >= 2,
        "weights seen by polling: {log:?} (poll log: {raw:?})"
    );
    assert!(
        log.iter().any(|w| *w != initial),
        "changed from the server-rendered {initial} %: {log:?}"
    );
    assert!(
        dom.contains("data-source=\"poll\""),
        "rows rendered by the script"
    );
    assert!(dom.contains("data-script=\"running\""));

    // The rollout page draws every point of the history.
    let detail = get_json(&admin.url("/api/rollouts/shop/podinfo")).await;
    let checks = detail["history"]["checks"]
        .as_array()
        .expect("checks")
        .clone();
    let weights = detail["history"]["weights"]
        .as_array()
        .expect("weights")
        .len();
    let some = |f: &str| checks.iter().filter(|c| !c[f].is_null()).count();
    assert!(checks.len() >= 5, "{} checks", checks.len());
    let page = dump(&admin.url("/rollouts/shop/podinfo"), &[]).await;
    assert_eq!(
        count(&page, "class=\"pt pt-weight\""),
        weights,
        "weight points"
    );
    assert_eq!(
        count(&page, "class=\"pt pt-canary-success\""),
        some("canary_success")
    );
    assert_eq!(
        count(&page, "class=\"pt pt-stable-success\""),
        some("stable_success")
    );
    assert_eq!(
        count(&page, "class=\"pt pt-canary-p99\""),
        some("canary_p99_ms")
    );
    assert_eq!(
        count(&page, "class=\"pt pt-stable-p99\""),
        some("stable_p99_ms")
    );
    assert_eq!(count(&page, "class=\"pt pt-evidence\""), checks.len());
    assert!(some("canary_success") >= 5 && some("canary_p99_ms") >= 5);
    assert!(page.contains("<svg") && page.contains("id=\"chart-weight\""));
    screenshot(
        &admin.url("/rollouts/shop/podinfo"),
        &docs.join("dashboard-rollout.png"),
        "1280,1500",
    )
    .await;

    // The rolled-back rollout shows the failing gate and the evidence.
    let page = dump(&admin.url("/rollouts/payments/podinfo"), &[]).await;
    assert!(page.contains("Failed"), "phase");
    let failing = page
        .split("id=\"failing\"")
        .nth(1)
        .expect("failing gate shown");
    assert!(failing.contains("request-success-rate"), "{failing}");
    assert!(
        page.contains("data-decisive=\"true\"")
            && page.contains("decisive evidence against the canary")
    );
    assert!(page.contains("RolledBack"));
    screenshot(
        &admin.url("/rollouts/payments/podinfo"),
        &std::env::temp_dir().join("canary-gate-dashboard-failed.png"),
        "1280,1100",
    )
    .await;
}
