//! `canary-gate loadtest --serve ADDR`: a load generator that canary-gate's hooks start, in
//! place of Flagger's loadtester service. Point a `pre-rollout` (or `rollout`) hook at it:
//! every call starts a run for the Deployment it names unless one is running, and answers at
//! once (the run goes on in the background), so the hook passes when the run has started.
//!
//! The hook's `metadata` may override the command line: `{"urls": ["http://podinfo-canary.shop:9898/"],
//! "rate": 20, "duration": "5m", "host": "podinfo.example.com"}`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde::Deserialize;

use super::{run_until, LoadtestArgs};

/// What a hook call may set for its run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Overrides {
    #[serde(default)]
    urls: Option<Vec<String>>,
    #[serde(default)]
    rate: Option<f64>,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    host: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct HookCall {
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    deployment: String,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

/// The run a hook call asks for: the command line's arguments with the metadata's
/// overrides, checked like the command line's. The error says what is wrong.
fn plan(base: &LoadtestArgs, body: &[u8]) -> Result<(String, LoadtestArgs), String> {
    let call: HookCall =
        serde_json::from_slice(body).map_err(|e| format!("not a hook call: {e}"))?;
    let overrides: Overrides = match call.metadata {
        None => Overrides::default(),
        Some(m) => serde_json::from_value(m)
            .map_err(|e| format!("metadata: {e} (allowed: urls, rate, duration, host)"))?,
    };
    let mut args = base.clone();
    args.serve = None;
    args.quiet = true;
    if let Some(urls) = overrides.urls {
        args.urls = urls;
    }
    if let Some(rate) = overrides.rate {
        args.rate = rate;
    }
    if let Some(d) = overrides.duration {
        args.duration = humantime::parse_duration(d.trim())
            .map_err(|e| format!("metadata.duration {d:?}: {e}"))?;
    }
    if overrides.host.is_some() {
        args.host = overrides.host;
    }
    if args.duration.is_zero() {
        return Err(
            "a run started by a hook needs a duration (metadata.duration or --duration)".into(),
        );
    }
    args.validate().map_err(|e| e.to_string())?;
    Ok((format!("{}/{}", call.namespace, call.deployment), args))
}

struct Server {
    base: LoadtestArgs,
    running: Mutex<HashSet<String>>,
}

async fn start_run(
    State(server): State<Arc<Server>>,
    body: axum::body::Bytes,
) -> (StatusCode, String) {
    let (key, args) = match plan(&server.base, &body) {
        Ok(p) => p,
        Err(why) => return (StatusCode::BAD_REQUEST, format!("{why}\n")),
    };
    if !server
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key.clone())
    {
        return (
            StatusCode::OK,
            format!("a run for {key} is already going\n"),
        );
    }
    let rate = args.rate;
    let duration = args.duration;
    tracing::info!(rollout = %key, rate, duration = %humantime::format_duration(duration), "load test started by a hook");
    let this = server.clone();
    let started = key.clone();
    tokio::spawn(async move {
        match run_until(args, std::future::pending()).await {
            Ok(summary) => {
                tracing::info!(rollout = %started, sent = summary.total.sent, errors = summary.total.errors, "load test finished")
            }
            Err(error) => tracing::warn!(rollout = %started, %error, "load test failed"),
        }
        this.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&started);
    });
    (
        StatusCode::OK,
        format!(
            "started {} at {rate} req/s for {key}\n",
            humantime::format_duration(duration)
        ),
    )
}

/// The router of `--serve`, for the binary and the tests.
pub fn router(base: LoadtestArgs) -> Router {
    let server = Arc::new(Server {
        base,
        running: Mutex::new(HashSet::new()),
    });
    Router::new().route("/", post(start_run)).with_state(server)
}

/// Serves hook calls until Ctrl-C.
pub async fn serve(args: LoadtestArgs) -> anyhow::Result<()> {
    let Some(addr) = args.serve else {
        anyhow::bail!("loadtest --serve needs an address");
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (--serve): {e}"))?;
    tracing::info!(%addr, "load tester waiting for hook calls");
    axum::serve(listener, router(args))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // Runs still going are cut short with the process: the next hook call starts them again.
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn base() -> LoadtestArgs {
        LoadtestArgs::new(["http://podinfo.shop:9898/"])
    }

    #[test]
    fn a_hook_call_plans_a_run_with_its_metadata_over_the_flags() {
        let body = br#"{"type": "pre-rollout", "namespace": "shop", "deployment": "podinfo",
            "metadata": {"urls": ["http://podinfo-canary.shop:9898/api/info"], "rate": 25, "duration": "2m"}}"#;
        let (key, args) = plan(&base(), body).expect("valid");
        assert_eq!(key, "shop/podinfo");
        assert_eq!(args.urls, ["http://podinfo-canary.shop:9898/api/info"]);
        assert_eq!(args.rate, 25.0);
        assert_eq!(args.duration, Duration::from_secs(120));
        assert!(args.serve.is_none() && args.quiet);
        // No metadata: the command line's run.
        let (_, args) = plan(
            &base(),
            br#"{"namespace": "shop", "deployment": "podinfo"}"#,
        )
        .expect("valid");
        assert_eq!(args.urls, ["http://podinfo.shop:9898/"]);
    }

    #[test]
    fn serve_needs_no_urls_on_the_command_line_but_a_run_does() {
        use clap::Parser as _;
        let parsed = crate::cli::Args::try_parse_from([
            "canary-gate",
            "loadtest",
            "--serve",
            "127.0.0.1:8080",
        ]);
        assert!(parsed.is_ok(), "{parsed:?}");
        assert!(crate::cli::Args::try_parse_from(["canary-gate", "loadtest"]).is_err());
    }

    #[test]
    fn a_bad_call_is_refused_with_the_reason() {
        let err = |b: &[u8]| plan(&base(), b).expect_err("invalid");
        assert!(err(b"nope").contains("not a hook call"));
        assert!(err(br#"{"metadata": {"urls": ["ftp://x/"]}}"#).contains("ftp"));
        assert!(err(br#"{"metadata": {"rate": -1}}"#).contains("rate"));
        assert!(err(br#"{"metadata": {"duration": "soon"}}"#).contains("duration"));
        assert!(
            err(br#"{"metadata": {"speed": 3}}"#).contains("allowed: urls, rate, duration, host")
        );
        assert!(err(br#"{"metadata": {"duration": "0s"}}"#).contains("needs a duration"));
    }
}
