//! The web dashboard served by the real admin server over real HTTP, reading the in-memory
//! cluster while the real analyzer drives rollouts against the real Prometheus; and the
//! chart's Grafana dashboard: every panel's PromQL parsed by the project's PromQL parser and
//! run against that Prometheus, fed by the Istio-style exporter and canary-gate's own
//! `/metrics`, during a rollout.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use canary_gate::annotations as ann;
use canary_gate::cli::{Args, Command};
use canary_gate::cluster::memory::MemoryCluster;
use canary_gate::dashboard::Dashboard;
use canary_gate::metrics::Metrics;
use canary_gate::rollout::state::Phase;
use canary_gate::server::http::{webhook_router, AppState};
use clap::Parser as _;
use serde_json::Value;
use support::dashboard::{serve, state};
use support::scenario::{admitted_deployment, fixture_path, run_rollout_with, Env, Shared, NAME};
use support::Profile;

const FAST: &[(&str, &str)] = &[("canary-gate.io/interval", "2s")];

fn healthy() -> Profile {
    Profile {
        error_rate: 0.001,
        latency_p50_ms: 40.0,
        latency_p99_ms: 120.0,
    }
}

fn broken() -> Profile {
    Profile {
        error_rate: 0.10,
        ..healthy()
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(40))
        .build()
        .expect("http client")
}

async fn get_json(url: &str) -> (u16, Value) {
    let r = http().get(url).send().await.expect("GET");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

async fn get_text(url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = http().get(url).send().await.expect("GET");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.expect("text body"))
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

fn some(checks: &[Value], field: &str) -> usize {
    checks.iter().filter(|c| !c[field].is_null()).count()
}

/// A Failed rollout whose message annotation is hostile HTML.
fn hostile_deployment() -> k8s_openapi::api::apps::v1::Deployment {
    let (mut d, _) = admitted_deployment(&[]).expect("admitted");
    d.metadata.namespace = Some("evil".into());
    let a = d.metadata.annotations.get_or_insert_with(Default::default);
    a.insert(ann::PHASE.into(), "Failed".into());
    a.insert(
        ann::MESSAGE.into(),
        "<script>alert('pwned')</script><img src=x onerror=alert(1)>".into(),
    );
    a.insert(ann::GATES.into(), "\"><svg onload=alert(2)>".into());
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_follows_rollouts_over_http() {
    let cluster = Arc::new(MemoryCluster::new());
    let metrics = Metrics::new();
    let admin = serve(state(&cluster, metrics.clone()), "127.0.0.1:0")
        .await
        .expect("admin server");
    let dashboard = admin.state.dashboard.clone().expect("dashboard on");
    let env = Env::start().await.expect("prometheus + exporter");
    cluster.put_deployment(hostile_deployment());

    // The list while the healthy rollout runs: weights seen over HTTP, and a long poll that
    // answers when the version changes.
    let done = AtomicBool::new(false);
    let seen = Mutex::new(Vec::<u64>::new());
    let long_polls = AtomicU32::new(0);
    let shared = Shared {
        cluster: Some(cluster.clone()),
        metrics: Some(metrics.clone()),
        history: Some(dashboard.history()),
    };
    let rollout = async {
        let out = run_rollout_with(
            &env,
            shared.clone(),
            "shop",
            FAST,
            healthy(),
            healthy(),
            true,
            Duration::from_secs(90),
            |_| {},
        )
        .await;
        done.store(true, Ordering::SeqCst);
        out
    };
    let watcher = async {
        let mut version = String::new();
        while !done.load(Ordering::SeqCst) {
            let started = Instant::now();
            let (status, list) =
                get_json(&admin.url(&format!("/api/rollouts?wait={version}"))).await;
            assert_eq!(status, 200, "{list}");
            if !version.is_empty() && list["version"] != version.as_str() {
                long_polls.fetch_add(1, Ordering::SeqCst);
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "long poll answered on change"
                );
            }
            version = list["version"].as_str().expect("version").to_string();
            if let Some(r) = list["rollouts"]
                .as_array()
                .expect("rollouts")
                .iter()
                .find(|r| r["namespace"] == "shop" && r["name"] == NAME)
            {
                let w = r["weight"].as_u64().expect("weight");
                let mut s = seen.lock().expect("lock");
                if s.last() != Some(&w) {
                    s.push(w);
                }
            }
        }
    };
    let (out, ()) = futures::join!(rollout, watcher);
    let out = out.expect("rollout ran");
    assert_eq!(out.phase, Phase::Succeeded, "{:?}", out.transitions);
    let seen = seen.into_inner().expect("lock");
    let distinct: BTreeSet<u64> = seen.iter().copied().collect();
    assert!(
        distinct.len() >= 3,
        "the list followed the weight over HTTP: {seen:?}"
    );
    assert!(
        long_polls.load(Ordering::SeqCst) >= 2,
        "long polls answered on changes"
    );

    // The rollout's data: history, plan, settings, queries, kubectl.
    let (status, d) = get_json(&admin.url("/api/rollouts/shop/podinfo")).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["rollout"]["phase"], "Succeeded");
    let h = &d["history"];
    let checks = h["checks"].as_array().expect("checks");
    assert!(
        checks.len() >= 5,
        "one check per step at least: {}",
        checks.len()
    );
    let weights: Vec<u64> = h["weights"]
        .as_array()
        .expect("weights")
        .iter()
        .map(|w| w["weight"].as_u64().expect("weight"))
        .collect();
    for step in [10, 20, 30, 40, 50] {
        assert!(weights.contains(&step), "weight {step} in {weights:?}");
    }
    let decisions: Vec<&str> = h["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .filter_map(|x| x["decision"].as_str())
        .collect();
    assert!(
        decisions.contains(&"step") && decisions.contains(&"promote"),
        "{decisions:?}"
    );
    let events: Vec<&str> = h["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(
        events.contains(&"CanaryStarted") && events.contains(&"Succeeded"),
        "{events:?}"
    );
    assert!(
        d["plan"]
            .as_str()
            .expect("plan")
            .contains("10 % steps every 2s to 50 %"),
        "{}",
        d["plan"]
    );
    assert_eq!(d["settings"]["interval"], "2s");
    let queries = d["queries"].as_array().expect("queries");
    assert_eq!(queries.len(), 4);
    for q in queries {
        let promql = q["promql"].as_str().expect("promql");
        promql_parser::parser::parse(promql).expect("the page's PromQL parses");
        assert!(
            promql.contains("podinfo-canary") && promql.contains("[2s]"),
            "{promql}"
        );
    }
    let kubectl: Vec<&str> = d["kubectl"]
        .as_array()
        .expect("kubectl")
        .iter()
        .filter_map(|k| k.as_str())
        .collect();
    assert!(
        kubectl
            .iter()
            .any(|k| k.contains("deployment podinfo-canary")),
        "{kubectl:?}"
    );
    assert!(
        kubectl.iter().any(|k| k.contains("virtualservices")),
        "{kubectl:?}"
    );
    let last = checks.last().expect("a check");
    for field in [
        "canary_success",
        "stable_success",
        "canary_p99_ms",
        "stable_p99_ms",
    ] {
        assert!(last[field].is_number(), "{field} measured: {last}");
    }
    assert!(d["evidence"]["bound_log_e"].as_f64().expect("bound") > 4.0);
    assert_eq!(d["evidence"]["decisive"], false);

    // The page draws one point per recorded value.
    let (status, headers, page) = get_text(&admin.url("/rollouts/shop/podinfo")).await;
    assert_eq!(status, 200);
    let csp = headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(count(&page, "class=\"pt pt-weight\""), weights.len());
    assert_eq!(
        count(&page, "class=\"pt pt-canary-success\""),
        some(checks, "canary_success")
    );
    assert_eq!(
        count(&page, "class=\"pt pt-stable-success\""),
        some(checks, "stable_success")
    );
    assert_eq!(
        count(&page, "class=\"pt pt-canary-p99\""),
        some(checks, "canary_p99_ms")
    );
    assert_eq!(
        count(&page, "class=\"pt pt-stable-p99\""),
        some(checks, "stable_p99_ms")
    );
    assert_eq!(count(&page, "class=\"pt pt-evidence\""), checks.len());
    assert!(
        page.contains("threshold 99 %")
            && page.contains("limit 500 ms")
            && page.contains("bound 1/α = 100")
    );
    assert!(page.contains("istio_requests_total") && page.contains("histogram_quantile(0.99"));
    assert!(page.contains("<script src=\"/dashboard.js\"></script>"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "nothing fetched from elsewhere"
    );
    let (status, headers, js) = get_text(&admin.url("/dashboard.js")).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/javascript"));
    assert!(js.contains("/api/rollouts?wait="));
    // The live fragment the script swaps in answers at once for an old version.
    let (status, headers, fragment) =
        get_text(&admin.url("/rollouts/shop/podinfo?fragment=live&wait=old")).await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("x-version") && fragment.contains("chart-weight"));
    assert!(!fragment.contains("<html"));

    // Hostile annotations are text, never markup.
    let (_, _, list_page) = get_text(&admin.url("/")).await;
    let (_, _, evil_page) = get_text(&admin.url("/rollouts/evil/podinfo")).await;
    for p in [&list_page, &evil_page] {
        assert!(
            p.contains("&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;"),
            "escaped"
        );
        assert!(
            !p.contains("<script>alert") && !p.contains("<img src=x") && !p.contains("<svg onload")
        );
    }
    assert!(list_page.contains("href=\"/rollouts/shop/podinfo\""));

    // A broken canary in another namespace of the same cluster: rolled back, with the
    // failing gate and the evidence on its page.
    let out = run_rollout_with(
        &env,
        shared.clone(),
        "payments",
        FAST,
        healthy(),
        broken(),
        true,
        Duration::from_secs(60),
        |_| {},
    )
    .await
    .expect("rollout ran");
    assert_eq!(out.phase, Phase::Failed, "{:?}", out.transitions);
    let (_, d) = get_json(&admin.url("/api/rollouts/payments/podinfo")).await;
    assert_eq!(d["evidence"]["decisive"], true, "{}", d["evidence"]);
    assert!(d["history"]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .any(|c| c["verdict"] == "fail"
            && c["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("request-success-rate")));
    let (_, _, page) = get_text(&admin.url("/rollouts/payments/podinfo")).await;
    assert!(page.contains("id=\"failing\"") && page.contains("request-success-rate"));
    assert!(page.contains("data-decisive=\"true\"") && page.contains("RolledBack"));
    let (_, list) = get_json(&admin.url("/api/rollouts")).await;
    let phases: BTreeMap<String, String> = list["rollouts"]
        .as_array()
        .expect("rollouts")
        .iter()
        .map(|r| {
            (
                format!(
                    "{}/{}",
                    r["namespace"].as_str().unwrap_or(""),
                    r["name"].as_str().unwrap_or("")
                ),
                r["phase"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        phases.get("shop/podinfo").map(String::as_str),
        Some("Succeeded")
    );
    assert_eq!(
        phases.get("payments/podinfo").map(String::as_str),
        Some("Failed")
    );
    assert_eq!(
        phases.get("evil/podinfo").map(String::as_str),
        Some("Failed")
    );

    // Unknown rollouts are 404s, on the page and in the API.
    assert_eq!(get_text(&admin.url("/rollouts/shop/nope")).await.0, 404);
    assert_eq!(get_json(&admin.url("/api/rollouts/shop/nope")).await.0, 404);

    // After a restart (a fresh process: empty history) the current state shows, seeded
    // from the annotations.
    let restarted = serve(state(&cluster, Metrics::new()), "127.0.0.1:0")
        .await
        .expect("second admin server");
    let (_, d) = get_json(&restarted.url("/api/rollouts/payments/podinfo")).await;
    assert_eq!(d["history"]["restored"], true);
    assert_eq!(d["rollout"]["phase"], "Failed");
    let restored = d["history"]["checks"].as_array().expect("checks");
    assert_eq!(restored.len(), 1, "the last check, from the annotations");
    assert_eq!(restored[0]["verdict"], "restored");
    assert!(restored[0]["canary_success"].as_f64().expect("success") < 99.0);
    assert_eq!(
        d["evidence"]["decisive"], true,
        "evidence recomputed from the counts"
    );
}

#[tokio::test]
async fn no_dashboard_flag_turns_the_pages_off() {
    let parsed = Args::try_parse_from(["canary-gate", "serve", "--no-dashboard"]).expect("parses");
    let Command::Serve(args) = parsed.command else {
        panic!("not serve")
    };
    assert!(args.dashboard.no_dashboard);
    let Command::Serve(args) = Args::try_parse_from(["canary-gate", "serve"])
        .expect("parses")
        .command
    else {
        panic!("not serve")
    };
    assert!(!args.dashboard.no_dashboard, "on by default");

    let cluster = Arc::new(MemoryCluster::new());
    let mut off = state(&cluster, Metrics::new());
    off.dashboard = None;
    let admin = serve(off, "127.0.0.1:0").await.expect("admin");
    for path in [
        "/",
        "/rollouts/shop/podinfo",
        "/api/rollouts",
        "/api/rollouts/shop/podinfo",
        "/dashboard.js",
    ] {
        assert_eq!(get_text(&admin.url(path)).await.0, 404, "{path} off");
    }
    assert_eq!(get_text(&admin.url("/metrics")).await.0, 200);
    assert_eq!(get_text(&admin.url("/healthz")).await.0, 200);
    // Without a cluster the pages say so instead of failing.
    let waiting = AppState {
        dashboard: Some(Arc::new(Dashboard::new(Default::default()))),
        ..state(&cluster, Metrics::new())
    };
    let admin = serve(waiting, "127.0.0.1:0").await.expect("admin");
    let (status, list) = get_json(&admin.url("/api/rollouts")).await;
    assert_eq!(status, 503);
    assert!(list["error"]
        .as_str()
        .unwrap_or_default()
        .contains("waiting for the Kubernetes cluster"));
    let (status, _, page) = get_text(&admin.url("/")).await;
    assert_eq!(status, 200);
    assert!(page.contains("waiting for the Kubernetes cluster"));
}

/// Every `expr` of every panel (rows included) of the chart's Grafana dashboard.
fn dashboard_queries() -> (Value, Vec<(String, String)>) {
    let path = format!(
        "{}/charts/canary-gate/dashboards/canary-gate.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard file"))
            .expect("dashboard JSON");
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((
                        p["title"].as_str().unwrap_or("?").to_string(),
                        expr.to_string(),
                    ));
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    (dash, out)
}

/// The dashboard variables as Grafana substitutes them for one selection.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "10m")
        .replace("$namespace", "shop")
        .replace("$deployment", "podinfo")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_panels_return_data_during_a_rollout() {
    let (dash, queries) = dashboard_queries();
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(
        vars.contains(&"namespace") && vars.contains(&"deployment"),
        "{vars:?}"
    );
    let titles: BTreeSet<&str> = queries.iter().map(|(t, _)| t.as_str()).collect();
    for wanted in [
        "Rollouts by phase",
        "Weight per rollout",
        "Request success rate: canary vs stable",
        "Request duration p99: canary vs stable",
        "Decisions",
        "Rollbacks",
        "Admission requests",
        "Admission latency p99",
        "Admission denials",
        "Kubernetes API calls by outcome",
        "Prometheus queries by outcome",
    ] {
        assert!(titles.contains(wanted), "panel {wanted:?} in {titles:?}");
    }
    for (title, expr) in &queries {
        let q = substitute(expr);
        assert!(!q.contains('$'), "{title}: unsubstituted variable in {q}");
        promql_parser::parser::parse(&q).unwrap_or_else(|e| panic!("{title}: {q}: {e}"));
    }
    // The success and p99 panels use the gates' metrics, selectors and quantile.
    let gate = canary_gate::gates::batch_queries(
        &[(
            Duration::from_secs(60),
            vec![canary_gate::gates::Workload {
                namespace: "shop".into(),
                workload: "podinfo".into(),
            }],
        )],
        &[],
        &[500.0],
    );
    let gate_p99 = gate.p99.expect("a check has a p99 query");
    let p99 = queries
        .iter()
        .find(|(t, _)| t.starts_with("Request duration p99"))
        .map(|(_, q)| substitute(q))
        .expect("p99 panel");
    assert!(
        gate_p99.starts_with("histogram_quantile(0.99, sum by (")
            && p99.starts_with("histogram_quantile(0.99, sum by (")
    );
    for part in [
        "istio_request_duration_milliseconds_bucket{reporter=\"destination\"",
        "destination_workload_namespace=~\"shop\"",
    ] {
        assert!(
            gate_p99.contains(part) && p99.contains(part),
            "{part}: {p99} vs {gate_p99}"
        );
    }

    // canary-gate's own /metrics (one registry: analyzer, webhook, kube client) is scraped
    // next to the Istio exporter.
    let cluster = Arc::new(MemoryCluster::new());
    let metrics = Metrics::new();
    let admin = serve(state(&cluster, metrics.clone()), "127.0.0.1:0")
        .await
        .expect("admin server");
    let env = Env::start_with_targets(&[admin.addr])
        .await
        .expect("prometheus + exporter + canary-gate");

    // Admission: the webhook's router (real handlers; plain HTTP here, TLS is tested in
    // tests/webhook.rs) answers a captured review, and denies one with a bad annotation.
    let webhook = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = webhook_router(admin.state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        addr
    };
    let review = std::fs::read(fixture_path("21-managed-update-image-kubectl-apply.mutate"))
        .expect("fixture");
    let mut bad: Value = serde_json::from_slice(
        &std::fs::read(fixture_path(
            "21-managed-update-image-kubectl-apply.validate",
        ))
        .expect("fixture"),
    )
    .expect("json");
    bad["request"]["object"]["metadata"]["annotations"]["canary-gate.io/step-weight"] =
        "lots".into();
    let answer: Value = http()
        .post(format!("http://{webhook}/mutate?timeout=10s"))
        .body(review)
        .send()
        .await
        .expect("mutate")
        .json()
        .await
        .expect("review");
    assert_eq!(answer["response"]["allowed"], true);
    let answer: Value = http()
        .post(format!("http://{webhook}/validate?timeout=10s"))
        .json(&bad)
        .send()
        .await
        .expect("validate")
        .json()
        .await
        .expect("review");
    assert_eq!(answer["response"]["allowed"], false, "{answer}");

    // Kubernetes calls: the real kube client against a fake API server on loopback.
    let apiserver = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = axum::Router::new().route(
            "/apis/apps/v1/namespaces/shop/deployments",
            axum::routing::get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    r#"{"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {"resourceVersion": "1"}, "items": []}"#,
                )
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        addr
    };
    let config = kube::Config::new(format!("http://{apiserver}").parse().expect("url"));
    let client = kube::Client::try_from(config).expect("kube client");
    let (kube, _watch) = canary_gate::cluster::kube::KubeCluster::start(
        client,
        canary_gate::cluster::limit::KubeLimits {
            timeout: Duration::from_secs(5),
            ..Default::default()
        },
        metrics.clone(),
        "test".into(),
        |_| None,
    );
    kube.list_deployments(Some("shop"))
        .await
        .expect("list through the real client");

    // A broken canary first (a rollback to count), then a healthy one; the panels are
    // queried while the healthy one is running.
    let shared = Shared {
        cluster: Some(cluster.clone()),
        metrics: Some(metrics.clone()),
        history: Some(admin.state.dashboard.clone().expect("dashboard").history()),
    };
    let out = run_rollout_with(
        &env,
        shared.clone(),
        "payments",
        FAST,
        healthy(),
        broken(),
        true,
        Duration::from_secs(60),
        |_| {},
    )
    .await
    .expect("broken rollout");
    assert_eq!(out.phase, Phase::Failed);
    let weight = AtomicU32::new(0);
    let done = AtomicBool::new(false);
    let rollout = async {
        let out = run_rollout_with(
            &env,
            shared.clone(),
            "shop",
            FAST,
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
    let probe = async {
        while weight.load(Ordering::SeqCst) < 20 && !done.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Give Prometheus a few scrapes of the current state, then ask every panel.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut empty = Vec::new();
            for (title, expr) in &queries {
                let q = substitute(expr);
                let samples = env.prometheus.query_vector(&q).await.unwrap_or_default();
                if samples.is_empty() {
                    empty.push(format!("{title}: {q}"));
                }
            }
            let running = !done.load(Ordering::SeqCst);
            if empty.is_empty() {
                return (running, empty);
            }
            if Instant::now() > deadline || !running {
                return (running, empty);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let (out, (running, empty)) = futures::join!(rollout, probe);
    assert_eq!(out.expect("healthy rollout").phase, Phase::Succeeded);
    assert!(
        empty.is_empty(),
        "panels without data during the rollout:\n{}",
        empty.join("\n")
    );
    assert!(
        running,
        "the panels were asked while the rollout was running"
    );
}
