//! `make demo`: the main job of canary-gate on a machine with no cluster.
//!
//! 1. The real webhook (HTTPS, a throw-away CA) answers the `kubectl apply` review captured
//!    from a real kube-apiserver: it holds the stable version and prints the plan.
//! 2. The real analyzer drives a healthy canary to promotion, then a broken one (10 % 5xx)
//!    to rollback, against a real local Prometheus. The Kubernetes API is the in-memory
//!    cluster and the mesh traffic is SIMULATED (an Istio-style metrics exporter fed at
//!    200 req/s, split by the weights the analyzer writes into the VirtualService).
//! 3. The web dashboard (the real admin server) shows both rollouts; its URL is printed.
//!    `--serve-dashboard 300s` keeps serving it that long after the rollouts (`make demo
//!    DEMO_ARGS="--serve-dashboard 300s"`), on `--dashboard-listen` (default 127.0.0.1:8080,
//!    any free port if that is taken). Without the flag the demo ends by itself.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use canary_gate::certs::{generate, CertsArgs};
use canary_gate::cli::{Args, Command};
use canary_gate::commands::status::bar;
use canary_gate::rollout::state::Phase;
use clap::Parser;
use support::scenario::{fixture_path, run_rollout_with, Env, Shared};
use support::{Profile, SIMULATED_NOTICE};

/// `--serve-dashboard DURATION` and `--dashboard-listen ADDR`.
fn demo_flags() -> anyhow::Result<(Option<Duration>, String)> {
    let mut serve = None;
    let mut listen = "127.0.0.1:8080".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--serve-dashboard" => {
                let v = args.next().ok_or_else(|| anyhow::anyhow!("--serve-dashboard needs a duration, e.g. 300s"))?;
                serve = Some(humantime::parse_duration(&v).map_err(|e| anyhow::anyhow!("--serve-dashboard {v}: {e}"))?);
            }
            "--dashboard-listen" => {
                listen = args.next().ok_or_else(|| anyhow::anyhow!("--dashboard-listen needs an address"))?;
            }
            other => anyhow::bail!("unknown argument {other:?} (use --serve-dashboard 300s, --dashboard-listen 127.0.0.1:8080)"),
        }
    }
    Ok((serve, listen))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (serve_dashboard, dashboard_listen) = demo_flags()?;
    println!("== canary-gate demo ==\n{SIMULATED_NOTICE}\n");

    // 1. The webhook over real TLS.
    let dir = tempfile::tempdir()?;
    let certs = generate(&CertsArgs {
        extra_dns: vec!["localhost".into()],
        ..CertsArgs::default()
    })?;
    std::fs::write(dir.path().join("tls.crt"), &certs.tls_cert_pem)?;
    std::fs::write(dir.path().join("tls.key"), &certs.tls_key_pem)?;
    let cert = dir.path().join("tls.crt").display().to_string();
    let key = dir.path().join("tls.key").display().to_string();
    let parsed = Args::try_parse_from([
        "canary-gate",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--no-analyzer",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ])?;
    let Command::Serve(args) = parsed.command else {
        anyhow::bail!("not a serve command")
    };
    let running = canary_gate::cli::start(*args).await?;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(
            certs.ca_cert_pem.as_bytes(),
        )?)
        .build()?;
    let body = std::fs::read(fixture_path("21-managed-update-image-kubectl-apply.mutate"))?;
    let url = format!(
        "https://localhost:{}/mutate?timeout=10s",
        running.webhook_addr.port()
    );
    let review: serde_json::Value = client.post(url).body(body).send().await?.json().await?;
    let response = &review["response"];
    println!("$ kubectl apply -f podinfo.yaml        # image 6.0.0 -> 6.0.1, replayed from a real apiserver capture");
    for w in response["warnings"].as_array().into_iter().flatten() {
        println!("Warning: {}", w.as_str().unwrap_or_default());
    }
    println!("deployment.apps/podinfo configured");
    println!(
        "  (webhook answer: allowed={}, patchType={}, the Deployment is held with spec.paused=true)\n",
        response["allowed"], response["patchType"]
    );
    running.stop().await;

    // 2. Two rollouts against a real Prometheus.
    println!("starting a local Prometheus (Debian package) scraping the simulated mesh ...");
    let env = Env::start().await?;
    // One in-memory cluster for both rollouts, read by the dashboard of the admin server.
    let cluster = std::sync::Arc::new(canary_gate::cluster::memory::MemoryCluster::new());
    let metrics = canary_gate::metrics::Metrics::new();
    let admin_state = support::dashboard::state(&cluster, metrics.clone());
    let admin = match support::dashboard::serve(admin_state.clone(), &dashboard_listen).await {
        Ok(a) => a,
        Err(_) => support::dashboard::serve(admin_state, "127.0.0.1:0").await?,
    };
    println!(
        "dashboard: {}  (rollout pages: {})",
        admin.url("/"),
        admin.url("/rollouts/shop/podinfo")
    );
    let shared = Shared {
        cluster: Some(cluster.clone()),
        metrics: Some(metrics),
        history: admin.state.dashboard.as_ref().map(|d| d.history()),
    };
    let healthy = Profile {
        error_rate: 0.001,
        latency_p50_ms: 40.0,
        latency_p99_ms: 120.0,
    };
    let annotations = &[("canary-gate.io/interval", "2s")];
    for (ns, title, canary) in [
        (
            "shop",
            "healthy canary 6.0.1 (0.1 % errors, p99 120 ms)",
            healthy,
        ),
        (
            "checkout",
            "broken canary 6.0.1 (10 % 5xx)",
            Profile {
                error_rate: 0.10,
                ..healthy
            },
        ),
    ] {
        println!("\n-- {ns}/podinfo: {title}; interval 2s (demo speed), 10 % steps to 50 %");
        let mut last = String::new();
        let out = run_rollout_with(
            &env,
            shared.clone(),
            ns,
            annotations,
            healthy,
            canary,
            true,
            Duration::from_secs(90),
            |o| {
                let line = format!(
                    "{:>5.1}s  {:<11} {} {:>3}%  {}",
                    o.elapsed.as_secs_f64(),
                    o.phase.to_string(),
                    bar(o.state.weight, 10),
                    o.state.weight,
                    o.state.gates
                );
                let key = format!("{} {}", o.phase, o.state.weight);
                if key != last {
                    println!("{line}");
                    last = key;
                }
            },
        )
        .await?;
        println!(
            "   => {} after {:.1}s: {}",
            out.phase,
            out.elapsed.as_secs_f64(),
            out.state.message
        );
        println!(
            "   canary served {} requests over the whole rollout, {} of them failed; twin left: {}; routes: {}",
            out.canary_requests,
            out.canary_errors,
            out.cluster.deployment(ns, "podinfo-canary").is_some(),
            if out.cluster.virtual_service(ns, "podinfo").is_some_and(|v| v
                .metadata
                .annotations
                .unwrap_or_default()
                .is_empty())
            {
                "user's VirtualService restored"
            } else {
                "NOT restored"
            }
        );
        println!("   events (kubectl describe deploy podinfo):");
        for e in out
            .cluster
            .events()
            .into_iter()
            .filter(|e| e.namespace == ns)
        {
            println!("     {:?}  {:<16} {}", e.kind, e.reason, e.message);
        }
        let expected = if canary.error_rate > 0.05 {
            Phase::Failed
        } else {
            Phase::Succeeded
        };
        anyhow::ensure!(
            out.phase == expected,
            "demo expected {expected}, got {}",
            out.phase
        );
        println!(
            "   dashboard: {}",
            admin.url(&format!("/rollouts/{ns}/podinfo"))
        );
    }
    if let Some(d) = serve_dashboard {
        println!(
            "\nserving the dashboard at {} for {} (Ctrl-C to stop) ...",
            admin.url("/"),
            humantime::format_duration(d)
        );
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    } else {
        println!("\n(run `make demo DEMO_ARGS=\"--serve-dashboard 300s\"` to keep the dashboard up and watch it in a browser)");
    }
    drop(admin);
    println!("\ndemo finished; Prometheus stopped and its temporary data removed.");
    Ok(())
}
