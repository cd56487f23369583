//! The analyzer at scale: N managed rollouts among M other Deployments, in one process,
//! against a real Prometheus and an API server in another process.
//!
//! `cargo run --release --example bench_analyzer -- [--rollouts N] [--unmanaged M]
//! [--interval S] [--duration S] [--kube-qps Q] [--kube-burst B] [--kube-max-in-flight F]
//! [--list-max-age S]` (defaults 1000, 0, 30 s, 60 s and `serve`'s Kubernetes limits and list
//! age). `BENCH_SCRAPE_MS` sets Prometheus' scrape interval (default 2000).
//!
//! What runs where, so the numbers measure the analyzer only:
//! - this process: the real `Analyzer::run` (1 s tick, leader) over the real `KubeCluster`
//!   (kube client, label-selected Deployment watch, rate limits) and the real `PromClient`;
//! - a child process (this binary with `--apiserver`): the in-memory API server of
//!   tests/support/apiserver.rs on loopback, holding N Deployments `app-00000`… in namespaces
//!   `ns-00`…`ns-19`, each admitted by the real webhook decision (phase `Pending`) and fronted
//!   by a Service, plus M unmanaged Deployments `other-00000`…; it counts every call;
//! - a child process (`--feeder N`): the Istio-style exporter, fed every second with
//!   SIMULATED healthy traffic for all N stable and N canary workloads;
//! - a child process: the real Prometheus (Debian package) scraping that exporter.
//!
//! RSS and CPU are reported for this process; the children are reported separately.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use canary_gate::analyzer::{woken_rollout, Analyzer};
use canary_gate::cluster::kube::KubeCluster;
use canary_gate::cluster::limit::KubeLimits;
use canary_gate::cluster::Cluster;
use canary_gate::metrics::Metrics;
use canary_gate::prom::PromClient;
use canary_gate::rollout::state::RolloutState;
use canary_gate::rollout::twin::twin_name;
use canary_gate::settings::Defaults;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use support::apiserver::FakeApiServer;
use support::scenario::{admitted_deployment, podinfo_service, NAME};
use support::{IstioExporter, TestPrometheus, SIMULATED_NOTICE};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

const NAMESPACES: usize = 20;
/// Requests per second recorded for every stable and every canary workload.
const RPS_PER_WORKLOAD: u64 = 20;
const TICK: Duration = Duration::from_secs(1);
/// The first seconds of the run create every twin, canary Service and route.
const WARMUP: Duration = Duration::from_secs(10);

struct Args {
    rollouts: usize,
    unmanaged: usize,
    interval_s: u64,
    duration_s: u64,
    limits: KubeLimits,
    list_max_age: Duration,
}

fn parse_args(args: &[String]) -> anyhow::Result<Args> {
    let mut out = Args {
        rollouts: 1000,
        unmanaged: 0,
        interval_s: 30,
        duration_s: 60,
        limits: KubeLimits::default(),
        list_max_age: canary_gate::analyzer::LIST_MAX_AGE,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let bad = || format!("{flag} {value}: not a number");
        match flag.as_str() {
            "--rollouts" => out.rollouts = value.parse().with_context(bad)?,
            "--unmanaged" => out.unmanaged = value.parse().with_context(bad)?,
            "--interval" => out.interval_s = value.parse().with_context(bad)?,
            "--duration" => out.duration_s = value.parse().with_context(bad)?,
            "--kube-qps" => out.limits.qps = value.parse().with_context(bad)?,
            "--kube-burst" => out.limits.burst = value.parse().with_context(bad)?,
            "--kube-max-in-flight" => out.limits.max_in_flight = value.parse().with_context(bad)?,
            "--list-max-age" => {
                out.list_max_age = Duration::from_secs_f64(value.parse().with_context(bad)?)
            }
            other => {
                bail!("unknown argument {other} (see the header of examples/bench_analyzer.rs)")
            }
        }
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--feeder") => {
            let n = args.get(1).context("--feeder N")?.parse()?;
            return feeder(n);
        }
        Some("--apiserver") => {
            let n: usize = args.get(1).context("--apiserver N M INTERVAL")?.parse()?;
            let m: usize = args.get(2).context("--apiserver N M INTERVAL")?.parse()?;
            let interval: u64 = args.get(3).context("--apiserver N M INTERVAL")?.parse()?;
            return apiserver(n, m, interval);
        }
        _ => {}
    }
    let args = parse_args(&args)?;
    let start = Probe::read_self();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(args, start))
}

fn names(i: usize) -> (String, String) {
    (format!("ns-{:02}", i % NAMESPACES), format!("app-{i:05}"))
}

// ---------------------------------------------------------------------------------------------
// The API server child: the in-memory API server, filled, until its stdin closes.

fn apiserver(rollouts: usize, unmanaged: usize, interval_s: u64) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let api = FakeApiServer::start().await?;
        let interval = format!("{interval_s}s");
        let (template, _warnings) =
            admitted_deployment(&[("canary-gate.io/interval", interval.as_str())])?;
        let service = podinfo_service();
        for i in 0..rollouts {
            let (ns, name) = names(i);
            api.put(&rename_deployment(&template, &ns, &name)?);
            api.put(&rename_service(&service, &ns, &name));
        }
        // The same Deployment before any canary-gate involvement: no rollout, no label.
        let mut plain = template.clone();
        plain.metadata.annotations = None;
        if let Some(l) = plain.metadata.labels.as_mut() {
            l.remove(canary_gate::annotations::ROLLOUT_LABEL);
        }
        for i in 0..unmanaged {
            let ns = format!("ns-{:02}", i % NAMESPACES);
            let name = format!("other-{i:05}");
            api.put(&rename_deployment(&plain, &ns, &name)?);
        }
        println!("ADDR {}", api.addr());
        std::io::stdout().flush()?;
        tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        })
        .await?;
        Ok(())
    })
}

/// Starts this binary in a child mode and reads the address it prints.
fn child(args: &[String]) -> anyhow::Result<(Child, std::net::SocketAddr)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        // A heap profiler (heaptrack) preloaded into the bench measures the analyzer only.
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {args:?}"))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("child stdout")?).read_line(&mut line)?;
    let Some(addr) = line.trim().strip_prefix("ADDR ") else {
        bail!("{args:?} said {line:?}");
    };
    Ok((child, addr.parse()?))
}

// ---------------------------------------------------------------------------------------------
// The feeder child: exporter + simulated traffic, until its stdin closes.

fn feeder(n: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let exporter = IstioExporter::start().await?;
        println!("ADDR {}", exporter.addr());
        std::io::stdout().flush()?;
        // The parent holds our stdin; EOF means it is gone.
        std::thread::spawn(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            std::process::exit(0);
        });
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        loop {
            ticker.tick().await;
            for i in 0..n {
                let (ns, name) = names(i);
                for workload in [name.clone(), twin_name(&name)] {
                    // 95 % fast, 5 % slower: p99 lands in the 100..250 ms bucket, no errors.
                    let slow = RPS_PER_WORKLOAD / 20;
                    exporter.record_many(&ns, &workload, &name, 200, 40.0, RPS_PER_WORKLOAD - slow);
                    exporter.record_many(&ns, &workload, &name, 200, 150.0, slow);
                }
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// /proc readings.

#[derive(Debug, Clone, Copy, Default)]
struct Probe {
    at: Option<Instant>,
    rss_kib: u64,
    hwm_kib: u64,
    cpu_s: f64,
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

impl Probe {
    fn read_self() -> Probe {
        Probe::read("self").unwrap_or_default()
    }

    fn read(pid: &str) -> Option<Probe> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(Probe {
            at: Some(Instant::now()),
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
            cpu_s: ticks as f64 / clock_ticks_cached(),
        })
    }
}

fn clock_ticks_cached() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(clock_ticks)
}

/// Children of this process named `comm` (TestPrometheus does not expose its pid).
fn child_pids(comm: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|pid| pid.chars().all(|c| c.is_ascii_digit()))
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let name = stat
                .find('(')
                .zip(stat.rfind(')'))
                .map(|(a, b)| &stat[a + 1..b]);
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat[i + 2..].split_whitespace().nth(1));
            name == Some(comm) && ppid == Some(me.as_str())
        })
        .collect()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------------
// Tick timing from the analyzer's own `tick` span (created right after the scheduled tick
// fired, closed when the tick finished).

#[derive(Clone, Default)]
struct TickTimer {
    ticks: Arc<Mutex<Vec<(Instant, Duration)>>>,
}

struct SpanStart(Instant);

impl<S> tracing_subscriber::Layer<S> for TickTimer
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() == "tick" {
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(SpanStart(Instant::now()));
            }
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            if let Some(start) = span.extensions().get::<SpanStart>() {
                let mut ticks = self.ticks.lock().unwrap_or_else(|p| p.into_inner());
                ticks.push((start.0, start.0.elapsed()));
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// ---------------------------------------------------------------------------------------------
// Fixtures: one admitted Deployment, cloned and renamed consistently.

fn rename_deployment(template: &Deployment, ns: &str, name: &str) -> anyhow::Result<Deployment> {
    let mut d = template.clone();
    d.metadata.name = Some(name.to_string());
    d.metadata.namespace = Some(ns.to_string());
    d.metadata.uid = None;
    d.metadata.resource_version = None;
    let relabel = |labels: &mut Option<BTreeMap<String, String>>| {
        for v in labels.iter_mut().flat_map(|l| l.values_mut()) {
            if v == NAME {
                *v = name.to_string();
            }
        }
    };
    relabel(&mut d.metadata.labels);
    let spec = d.spec.as_mut().context("spec")?;
    relabel(&mut spec.selector.match_labels);
    relabel(
        &mut spec
            .template
            .metadata
            .get_or_insert_with(Default::default)
            .labels,
    );
    // kubectl's last-applied-configuration names the object too.
    if let Some(a) = d.metadata.annotations.as_mut() {
        if let Some(raw) = a.get_mut("kubectl.kubernetes.io/last-applied-configuration") {
            let mut v: serde_json::Value = serde_json::from_str(raw)?;
            v["metadata"]["name"] = name.into();
            v["metadata"]["namespace"] = ns.into();
            for path in [
                &["metadata", "labels"][..],
                &["spec", "selector", "matchLabels"][..],
                &["spec", "template", "metadata", "labels"][..],
            ] {
                let mut at = &mut v;
                for p in path {
                    at = &mut at[*p];
                }
                if at.get("app").is_some() {
                    at["app"] = name.into();
                }
            }
            *raw = serde_json::to_string(&v)?;
        }
    }
    Ok(d)
}

fn rename_service(template: &Service, ns: &str, name: &str) -> Service {
    let mut s = template.clone();
    s.metadata.name = Some(name.to_string());
    s.metadata.namespace = Some(ns.to_string());
    if let Some(sel) = s.spec.as_mut().and_then(|sp| sp.selector.as_mut()) {
        sel.insert("app".into(), name.to_string());
    }
    s
}

// ---------------------------------------------------------------------------------------------

fn metric_sum(encoded: &str, prefix: &str) -> f64 {
    encoded
        .lines()
        .filter(|l| {
            l.starts_with(prefix)
                && l[prefix.len()..].starts_with(['{', ' '])
                && !l.starts_with('#')
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0 // an empty sum is -0.0
}

/// Upper bound of the bucket holding quantile `q` of a histogram in the text exposition.
fn histogram_quantile(encoded: &str, name: &str, q: f64) -> f64 {
    let prefix = format!("{name}_bucket{{le=\"");
    let buckets: Vec<(f64, f64)> = encoded
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    buckets
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|b| b.0)
        .unwrap_or(f64::NAN)
}

fn phases(deployments: &[Arc<Deployment>]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for d in deployments {
        let Some(a) = d.metadata.annotations.as_ref() else {
            continue;
        };
        if let Ok(s) = RolloutState::from_annotations(a) {
            *out.entry(format!("{} {}%", s.phase, s.weight)).or_default() += 1;
        }
    }
    out
}

/// The API server's newest resourceVersion (the fake's `/fake/version`, not counted).
async fn api_version(api_addr: &std::net::SocketAddr) -> anyhow::Result<u64> {
    let body = reqwest::get(format!("http://{api_addr}/fake/version"))
        .await?
        .text()
        .await?;
    Ok(body.trim().parse()?)
}

/// The newest resourceVersion among the cached Deployments (the fake numbers them).
fn newest_version(deployments: &[Arc<Deployment>]) -> u64 {
    deployments
        .iter()
        .filter_map(|d| d.metadata.resource_version.as_deref()?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// At most how long ago the API server held `cached` as its newest version: the time since
/// the last sample that did not yet have it (1 s while the cache keeps up; zero when it
/// holds the latest sample's version). Deployments change every second in this benchmark;
/// where none did for a while, this would overstate the lag.
fn watch_lag(versions: &[(Instant, u64)], cached: u64) -> Duration {
    let Some(&(now, _)) = versions.last() else {
        return Duration::ZERO;
    };
    match versions.partition_point(|&(_, v)| v < cached) {
        first if first == versions.len() => Duration::ZERO,
        0 => now.saturating_duration_since(versions[0].0),
        first => now.saturating_duration_since(versions[first - 1].0),
    }
}

/// Mean and the bound of the bucket holding the 99th percentile of a histogram.
fn histogram_summary(encoded: &str, name: &str) -> (f64, f64, f64) {
    let count = metric_sum(encoded, &format!("{name}_count"));
    let sum = metric_sum(encoded, &format!("{name}_sum"));
    (count, sum / count, histogram_quantile(encoded, name, 0.99))
}

async fn bench(args: Args, start: Probe) -> anyhow::Result<()> {
    let Args {
        rollouts,
        unmanaged,
        interval_s,
        duration_s,
        limits,
        list_max_age,
    } = args;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let timer = TickTimer::default();
    // As in `serve`: an info-level subscriber that formats every event (into a sink here).
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(timer.clone())
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink))
        .init();
    let scrape = Duration::from_millis(
        std::env::var("BENCH_SCRAPE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000),
    );
    let total = rollouts + unmanaged;
    println!("== analyzer benchmark: {rollouts} rollouts among {total} Deployments, interval {interval_s}s, {duration_s}s, scrape {scrape:?} ==");
    println!(
        "Kubernetes client limits: {} calls/s, burst {}, {} in flight, timeout {:?}; lists used for {list_max_age:?}",
        limits.qps, limits.burst, limits.max_in_flight, limits.timeout
    );
    println!("{SIMULATED_NOTICE}");
    let setup_wall = Instant::now();

    // 1. Children: the feeder (exporter + traffic) and the API server.
    let (mut feeder, feeder_addr) = child(&["--feeder".into(), rollouts.to_string()])?;
    let (mut apiserver, api_addr) = child(&[
        "--apiserver".into(),
        rollouts.to_string(),
        unmanaged.to_string(),
        interval_s.to_string(),
    ])?;

    // 2. Prometheus.
    let prometheus = TestPrometheus::start(&[feeder_addr], scrape).await?;
    let prom_pid = child_pids("prometheus").into_iter().next();
    let metrics = Metrics::new();
    let prom = PromClient::new(&prometheus.url(), Duration::from_secs(5), metrics.clone())?;

    // 3. The real cluster client and its watch.
    let config = kube::Config::new(format!("http://{api_addr}").parse()?);
    let client = kube::Client::try_from(config)?;
    let (cluster, watch) = KubeCluster::start(
        client,
        limits,
        metrics.clone(),
        "bench".into(),
        woken_rollout,
    );
    let changed = cluster.changed();
    tokio::spawn(watch);
    let watch_started = Instant::now();
    cluster.wait_ready().await;
    let watch_ready = watch_started.elapsed();
    let cluster = Arc::new(cluster);
    let cached = cluster.deployments().await?.len();
    let analyzer = Arc::new(
        Analyzer::new(
            cluster.clone(),
            Arc::new(prom),
            Defaults::default(),
            metrics.clone(),
        )
        .with_list_max_age(list_max_age),
    );
    let after_setup = Probe::read_self();
    let setup_elapsed = setup_wall.elapsed();
    println!(
        "setup done in {:.1}s (Prometheus startup {:.1}s, watch ready in {:.2}s holding {cached} of {total} Deployments); RSS {:.1} MiB",
        setup_elapsed.as_secs_f64(),
        prometheus.startup_time().as_secs_f64(),
        watch_ready.as_secs_f64(),
        mib(after_setup.rss_kib)
    );

    // 4. The analyzer, for the duration; /proc sampled every second.
    let (_leader_tx, leader_rx) = tokio::sync::watch::channel(true);
    let run_started = Instant::now();
    let task = tokio::spawn(analyzer.clone().run(TICK, leader_rx, Some(changed)));
    let mut samples = vec![Probe::read_self()];
    let mut sampler = tokio::time::interval(Duration::from_secs(1));
    // How far the watch cache is behind the API server: (when, the API server's newest
    // version) each second, against the newest version the cache holds.
    let mut versions: Vec<(Instant, u64)> = Vec::new();
    let mut lags: Vec<f64> = Vec::new();
    sampler.tick().await;
    while run_started.elapsed() < Duration::from_secs(duration_s) {
        sampler.tick().await;
        let p = Probe::read_self();
        samples.push(p);
        versions.push((Instant::now(), api_version(&api_addr).await?));
        let lag = watch_lag(&versions, newest_version(&cluster.deployments().await?));
        lags.push(lag.as_secs_f64());
        let elapsed = run_started.elapsed().as_secs();
        if elapsed % 10 == 0 {
            let encoded = metrics.encode();
            println!(
                "t={elapsed:>4}s RSS {:>6.1} MiB, queries {:>5}, kube calls {:>7}, checks {:>6}, events dropped {:>6}, ticks skipped {:>3}, watch lag ≤{:>3}s",
                mib(p.rss_kib),
                metric_sum(&encoded, "canary_gate_prometheus_queries_total"),
                metric_sum(&encoded, "canary_gate_kube_calls_total"),
                metric_sum(&encoded, "canary_gate_checks_total"),
                metric_sum(&encoded, "canary_gate_events_dropped_total"),
                metric_sum(&encoded, "canary_gate_ticks_skipped_total"),
                lag.as_secs(),
            );
        }
    }
    task.abort();
    let _ = task.await;
    let end = Probe::read_self();
    let run_elapsed = run_started.elapsed().as_secs_f64();
    let final_deployments = cluster.deployments().await?;

    // 5. Report.
    let calls: BTreeMap<String, u64> = {
        let body = reqwest::get(format!("http://{api_addr}/fake/calls"))
            .await?
            .text()
            .await?;
        serde_json::from_str(&body)?
    };
    // What the API server holds at the end, against the watch cache (read after the calls,
    // so it is not counted among them).
    let stored: Vec<Arc<Deployment>> = {
        let body = reqwest::get(format!(
            "http://{api_addr}/apis/apps/v1/deployments?labelSelector={}",
            canary_gate::annotations::ROLLOUT_LABEL
        ))
        .await?
        .bytes()
        .await?;
        let list: k8s_openapi::List<Deployment> = serde_json::from_slice(&body)?;
        list.items.into_iter().map(Arc::new).collect()
    };
    let cached_versions: BTreeMap<(Option<&str>, Option<&str>), Option<&str>> = final_deployments
        .iter()
        .map(|d| {
            let m = &d.metadata;
            (
                (m.namespace.as_deref(), m.name.as_deref()),
                m.resource_version.as_deref(),
            )
        })
        .collect();
    let behind = stored
        .iter()
        .filter(|d| {
            let m = &d.metadata;
            cached_versions.get(&(m.namespace.as_deref(), m.name.as_deref()))
                != Some(&m.resource_version.as_deref())
        })
        .count();
    let prom_probe = prom_pid.as_deref().and_then(Probe::read);
    let feeder_probe = Probe::read(&feeder.id().to_string());
    let api_probe = Probe::read(&apiserver.id().to_string());
    for c in [&mut feeder, &mut apiserver] {
        drop(c.stdin.take());
        let _ = c.kill();
        let _ = c.wait();
    }
    drop(prometheus);

    let encoded = metrics.encode();
    let queries = metric_sum(&encoded, "canary_gate_prometheus_queries_total");
    let ticks = timer
        .ticks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let skipped = metric_sum(&encoded, "canary_gate_ticks_skipped_total");
    let mut durations: Vec<f64> = ticks.iter().map(|(_, d)| d.as_secs_f64()).collect();
    durations.sort_by(f64::total_cmp);
    let steady_durations: Vec<f64> = {
        let mut v: Vec<f64> = ticks
            .iter()
            .filter(|(at, _)| at.duration_since(run_started) >= WARMUP)
            .map(|(_, d)| d.as_secs_f64())
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let is_write = |verb: &str| matches!(verb, "create" | "patch" | "update" | "delete");
    let mut writes: BTreeMap<String, u64> = BTreeMap::new();
    let mut reads: BTreeMap<String, u64> = BTreeMap::new();
    for (call, n) in &calls {
        let verb = call.split_whitespace().next().unwrap_or_default();
        if is_write(verb) {
            writes.insert(call.clone(), *n);
        } else {
            reads.insert(call.clone(), *n);
        }
    }
    let total_writes: u64 = writes.values().sum();

    let cpu_between = |a: &Probe, b: &Probe| -> (f64, f64) {
        let wall = match (a.at, b.at) {
            (Some(x), Some(y)) => y.duration_since(x).as_secs_f64(),
            _ => f64::NAN,
        };
        (b.cpu_s - a.cpu_s, (b.cpu_s - a.cpu_s) / wall)
    };
    let warm_end = samples
        .iter()
        .find(|p| {
            p.at.is_some_and(|t| t.duration_since(run_started) >= WARMUP)
        })
        .copied()
        .unwrap_or(end);
    let first = samples[0];
    let (setup_cpu, setup_cores) = cpu_between(&start, &after_setup);
    let (warm_cpu, warm_cores) = cpu_between(&first, &warm_end);
    let (steady_cpu, steady_cores) = cpu_between(&warm_end, &end);
    let (run_cpu, run_cores) = cpu_between(&first, &end);
    let peak_1s = samples
        .windows(2)
        .map(|w| cpu_between(&w[0], &w[1]).1)
        .fold(0.0, f64::max);
    let steady_rss_max = samples
        .iter()
        .filter(|p| {
            p.at.is_some_and(|t| t.duration_since(run_started) >= WARMUP)
        })
        .map(|p| p.rss_kib)
        .max()
        .unwrap_or(end.rss_kib);

    let checks_per_rollout = run_elapsed / interval_s as f64;
    // Flagger-style: one query per built-in gate (success rate, p99) per rollout per check.
    let naive = 2.0 * rollouts as f64 / interval_s as f64;

    println!("\n== results: {rollouts} rollouts among {total} Deployments, interval {interval_s}s, analyzer ran {run_elapsed:.0}s (tick 1s) ==");
    println!("RSS (analyzer process: analyzer + watch cache + kube client + PromClient + tracing)");
    println!("  start            {:>7.1} MiB", mib(start.rss_kib));
    println!(
        "  after setup      {:>7.1} MiB  (watch cache filled: {cached} Deployments)",
        mib(after_setup.rss_kib)
    );
    println!(
        "  steady max (>{}s) {:>6.1} MiB",
        WARMUP.as_secs(),
        mib(steady_rss_max)
    );
    println!("  end              {:>7.1} MiB", mib(end.rss_kib));
    println!("  peak (VmHWM)     {:>7.1} MiB", mib(end.hwm_kib));
    println!("CPU (utime+stime of the analyzer process / wall time)");
    println!(
        "  setup            {setup_cpu:>6.2} s over {:.1} s = {setup_cores:.3} cores",
        setup_elapsed.as_secs_f64()
    );
    println!(
        "  warm-up 0-{}s    {warm_cpu:>6.2} s = {warm_cores:.3} cores",
        WARMUP.as_secs()
    );
    println!(
        "  steady {}s-end   {steady_cpu:>6.2} s = {steady_cores:.3} cores",
        WARMUP.as_secs()
    );
    println!("  whole run        {run_cpu:>6.2} s = {run_cores:.3} cores; busiest 1 s: {peak_1s:.3} cores");
    println!("Prometheus queries");
    println!(
        "  sent             {queries:.0} = {:.3}/s",
        queries / run_elapsed
    );
    println!(
        "  naive            {naive:.1}/s  (2 built-in gates x {rollouts} rollouts / {interval_s}s); ratio {:.0}x fewer",
        naive / (queries / run_elapsed).max(f64::MIN_POSITIVE)
    );
    let (n, mean, p99) =
        histogram_summary(&encoded, "canary_gate_prometheus_query_duration_seconds");
    println!(
        "  time per query   mean {:.1} ms, p99 ≤{:.0} ms (over {n:.0})",
        mean * 1000.0,
        p99 * 1000.0
    );
    let (n, mean, p99) = histogram_summary(&encoded, "canary_gate_prometheus_response_bytes");
    println!(
        "  answer size      mean {:.1} KiB, p99 ≤{:.0} KiB (over {n:.0})",
        mean / 1024.0,
        p99 / 1024.0
    );
    println!(
        "  checks           {:.0} (expected ≤ {:.0} = rollouts x run/interval)",
        metric_sum(&encoded, "canary_gate_checks_total"),
        rollouts as f64 * checks_per_rollout
    );
    println!(
        "Ticks: {} started (durations from the `tick` span: until the tick's last write)",
        ticks.len()
    );
    let ms = |v: f64| v * 1000.0;
    println!(
        "  duration ms      p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        ms(percentile(&durations, 50.0)),
        ms(percentile(&durations, 90.0)),
        ms(percentile(&durations, 99.0)),
        ms(percentile(&durations, 100.0))
    );
    println!(
        "  steady dur. ms   p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        ms(percentile(&steady_durations, 50.0)),
        ms(percentile(&steady_durations, 90.0)),
        ms(percentile(&steady_durations, 99.0)),
        ms(percentile(&steady_durations, 100.0))
    );
    println!(
        "  lateness ms      p50 ≤{:.0}  p90 ≤{:.0}  p99 ≤{:.0}  (canary_gate_tick_lateness_seconds bucket bounds); ticks skipped {skipped:.0}",
        ms(histogram_quantile(&encoded, "canary_gate_tick_lateness_seconds", 0.5)),
        ms(histogram_quantile(&encoded, "canary_gate_tick_lateness_seconds", 0.9)),
        ms(histogram_quantile(&encoded, "canary_gate_tick_lateness_seconds", 0.99)),
    );
    println!("Rollouts by phase at the end (from the watch cache):");
    for (phase, n) in phases(&final_deployments) {
        println!("  {phase:<18} {n}");
    }
    lags.sort_by(f64::total_cmp);
    println!(
        "Watch cache against the API server: lag p50 ≤{:.0}s p99 ≤{:.0}s max ≤{:.0}s (sampled each second; the age of the newest version the cache holds); at the end {behind} of {} Deployments differ",
        percentile(&lags, 50.0),
        percentile(&lags, 99.0),
        percentile(&lags, 100.0),
        stored.len()
    );
    if behind > 0 {
        println!("Rollouts by phase at the end (from the API server):");
        for (phase, n) in phases(&stored) {
            println!("  {phase:<18} {n}");
        }
    }
    println!(
        "Kubernetes API writes (counted by the API server): {total_writes} = {:.1}/s, {:.2} per rollout",
        total_writes as f64 / run_elapsed,
        total_writes as f64 / rollouts.max(1) as f64
    );
    for (call, n) in &writes {
        println!(
            "  {call:<30} {n:>8} = {:>7.1}/s = {:>5.2} per rollout",
            *n as f64 / run_elapsed,
            *n as f64 / rollouts.max(1) as f64
        );
    }
    println!(
        "  Events dropped (the API budget was in use by rollout writes): {:.0}",
        metric_sum(&encoded, "canary_gate_events_dropped_total")
    );
    println!("Kubernetes API reads (counted by the API server):");
    for (call, n) in &reads {
        println!("  {call:<30} {n:>8} = {:>7.1}/s", *n as f64 / run_elapsed);
    }
    let report_child = |what: &str, p: Option<Probe>| match p {
        Some(p) => println!(
            "{what}: RSS {:.1} MiB (peak {:.1}), CPU {:.1} s total",
            mib(p.rss_kib),
            mib(p.hwm_kib),
            p.cpu_s
        ),
        None => println!("{what}: not found"),
    };
    report_child("Prometheus child", prom_probe);
    report_child("Feeder child (exporter + simulated traffic)", feeder_probe);
    report_child("API server child (in-memory, all Deployments)", api_probe);
    for l in encoded.lines().filter(|l| {
        l.starts_with("canary_gate_prometheus_queries_total")
            || l.starts_with("canary_gate_checks_total")
            || l.starts_with("canary_gate_decisions_total")
            || (l.starts_with("canary_gate_kube_calls_total") && !l.contains("Success"))
    }) {
        println!("  {l}");
    }
    Ok(())
}
