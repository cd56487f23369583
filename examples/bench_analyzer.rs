//! The analyzer at scale: N managed rollouts in one process, against a real Prometheus.
//!
//! `cargo run --release --example bench_analyzer -- [rollouts] [interval_s] [duration_s]`
//! (defaults 1000, 30, 120). `BENCH_SCRAPE_MS` sets Prometheus' scrape interval (default 2000).
//!
//! What runs where, so the numbers measure the analyzer only:
//! - this process: the real `Analyzer::run` (1 s tick, leader) over an in-memory Kubernetes API
//!   (`MemoryCluster`, behind a call-counting wrapper) holding N Deployments `app-0000`… in
//!   namespaces `ns-00`…`ns-19`, each admitted by the real webhook decision (phase `Pending`)
//!   and fronted by a Service, plus the real `PromClient`;
//! - a child process (this binary with `--feeder N`): the Istio-style exporter, fed every
//!   second with SIMULATED healthy traffic for all N stable and N canary workloads;
//! - a child process: the real Prometheus (Debian package) scraping that exporter.
//!
//! RSS and CPU are reported for this process; the two children are reported separately.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use canary_gate::analyzer::Analyzer;
use canary_gate::cluster::memory::MemoryCluster;
use canary_gate::cluster::{Cluster, KubeError};
use canary_gate::gateway_api::{HTTPRoute, HTTPRouteRule};
use canary_gate::istio::{HttpRoute, VirtualService};
use canary_gate::metrics::Metrics;
use canary_gate::prom::PromClient;
use canary_gate::rollout::machine::EventType;
use canary_gate::rollout::state::RolloutState;
use canary_gate::rollout::twin::twin_name;
use canary_gate::settings::Defaults;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
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

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--feeder") {
        let n = args.get(1).context("--feeder N")?.parse()?;
        return feeder(n);
    }
    let num = |i: usize, default: u64| -> anyhow::Result<u64> {
        args.get(i)
            .map(|s| {
                s.parse()
                    .with_context(|| format!("argument {}: {s}", i + 1))
            })
            .unwrap_or(Ok(default))
    };
    let rollouts = num(0, 1000)? as usize;
    let interval_s = num(1, 30)?;
    let duration_s = num(2, 120)?;
    let start = Probe::read_self();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(rollouts, interval_s, duration_s, start))
}

fn names(i: usize) -> (String, String) {
    (format!("ns-{:02}", i % NAMESPACES), format!("app-{i:04}"))
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
// A call-counting Cluster in front of MemoryCluster (reads are not in its write log).

struct Counted {
    inner: Arc<MemoryCluster>,
    calls: Mutex<BTreeMap<&'static str, u64>>,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

impl Counted {
    fn count(&self, call: &'static str) -> InFlight<'_> {
        *self
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(call)
            .or_default() += 1;
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(self)
    }

    fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

struct InFlight<'a>(&'a Counted);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Cluster for Counted {
    async fn deployments(&self) -> Result<Vec<Arc<Deployment>>, KubeError> {
        let _g = self.count("list deployments (cache)");
        self.inner.deployments().await
    }
    async fn get_deployment(&self, ns: &str, name: &str) -> Result<Deployment, KubeError> {
        let _g = self.count("get deployment");
        self.inner.get_deployment(ns, name).await
    }
    async fn apply_deployment(&self, d: &Deployment) -> Result<(), KubeError> {
        let _g = self.count("apply deployment");
        self.inner.apply_deployment(d).await
    }
    async fn delete_deployment(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        let _g = self.count("delete deployment");
        self.inner.delete_deployment(ns, name).await
    }
    async fn patch_deployment(
        &self,
        ns: &str,
        name: &str,
        resource_version: &str,
        annotations: BTreeMap<String, Option<String>>,
        paused: Option<bool>,
    ) -> Result<(), KubeError> {
        let _g = self.count("patch deployment");
        self.inner
            .patch_deployment(ns, name, resource_version, annotations, paused)
            .await
    }
    async fn services(&self, ns: &str) -> Result<Vec<Service>, KubeError> {
        let _g = self.count("list services");
        self.inner.services(ns).await
    }
    async fn apply_service(&self, s: &Service) -> Result<(), KubeError> {
        let _g = self.count("apply service");
        self.inner.apply_service(s).await
    }
    async fn delete_service(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        let _g = self.count("delete service");
        self.inner.delete_service(ns, name).await
    }
    async fn virtual_services(&self, ns: &str) -> Result<Vec<VirtualService>, KubeError> {
        let _g = self.count("list virtualservices");
        self.inner.virtual_services(ns).await
    }
    async fn virtual_services_everywhere(&self) -> Result<Vec<VirtualService>, KubeError> {
        self.inner.virtual_services_everywhere().await
    }
    async fn apply_virtual_service(&self, vs: &VirtualService) -> Result<(), KubeError> {
        let _g = self.count("apply virtualservice");
        self.inner.apply_virtual_service(vs).await
    }
    async fn patch_virtual_service(
        &self,
        ns: &str,
        name: &str,
        http: &[HttpRoute],
        annotations: BTreeMap<String, Option<String>>,
    ) -> Result<(), KubeError> {
        let _g = self.count("patch virtualservice");
        self.inner
            .patch_virtual_service(ns, name, http, annotations)
            .await
    }
    async fn delete_virtual_service(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        let _g = self.count("delete virtualservice");
        self.inner.delete_virtual_service(ns, name).await
    }
    async fn http_routes(&self, ns: &str) -> Result<Vec<HTTPRoute>, KubeError> {
        let _g = self.count("list httproutes");
        self.inner.http_routes(ns).await
    }
    async fn http_routes_everywhere(&self) -> Result<Vec<HTTPRoute>, KubeError> {
        self.inner.http_routes_everywhere().await
    }
    async fn apply_http_route(&self, route: &HTTPRoute) -> Result<(), KubeError> {
        let _g = self.count("apply httproute");
        self.inner.apply_http_route(route).await
    }
    async fn patch_http_route(
        &self,
        ns: &str,
        name: &str,
        rules: &[HTTPRouteRule],
        annotations: BTreeMap<String, Option<String>>,
    ) -> Result<(), KubeError> {
        let _g = self.count("patch httproute");
        self.inner
            .patch_http_route(ns, name, rules, annotations)
            .await
    }
    async fn delete_http_route(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        let _g = self.count("delete httproute");
        self.inner.delete_http_route(ns, name).await
    }
    async fn event(
        &self,
        d: &Deployment,
        kind: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), KubeError> {
        let _g = self.count("create event");
        self.inner.event(d, kind, reason, message).await
    }
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

fn phases(cluster: &MemoryCluster, rollouts: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for i in 0..rollouts {
        let (ns, name) = names(i);
        let phase = cluster
            .deployment(&ns, &name)
            .and_then(|d| RolloutState::from_annotations(&d.metadata.annotations?).ok())
            .map(|s| format!("{} {}%", s.phase, s.weight))
            .unwrap_or_else(|| "(unreadable)".into());
        *out.entry(phase).or_default() += 1;
    }
    out
}

async fn bench(
    rollouts: usize,
    interval_s: u64,
    duration_s: u64,
    start: Probe,
) -> anyhow::Result<()> {
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
    println!("== analyzer benchmark: {rollouts} rollouts, interval {interval_s}s, {duration_s}s, scrape {scrape:?} ==");
    println!("{SIMULATED_NOTICE}");
    let setup_wall = Instant::now();

    // 1. Feeder child (exporter + traffic).
    let mut feeder = Command::new(std::env::current_exe()?)
        .args(["--feeder", &rollouts.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning the feeder")?;
    let mut line = String::new();
    BufReader::new(feeder.stdout.take().context("feeder stdout")?).read_line(&mut line)?;
    let Some(addr) = line.trim().strip_prefix("ADDR ") else {
        bail!("feeder said {line:?}");
    };
    let addr: std::net::SocketAddr = addr.parse()?;

    // 2. Prometheus, started while the cluster is being filled.
    let prometheus = tokio::spawn(async move { TestPrometheus::start(&[addr], scrape).await });

    // 3. The cluster: N admitted (Pending) Deployments with a Service each.
    let interval = format!("{interval_s}s");
    let (template, _warnings) =
        admitted_deployment(&[("canary-gate.io/interval", interval.as_str())])?;
    let service = podinfo_service();
    let memory = Arc::new(MemoryCluster::new());
    for i in 0..rollouts {
        let (ns, name) = names(i);
        memory.put_deployment(rename_deployment(&template, &ns, &name)?);
        memory.put_service(rename_service(&service, &ns, &name));
    }
    let cluster = Arc::new(Counted {
        inner: memory.clone(),
        calls: Mutex::default(),
        in_flight: AtomicU64::new(0),
        max_in_flight: AtomicU64::new(0),
    });
    let prometheus = prometheus.await??;
    let prom_pid = child_pids("prometheus").into_iter().next();
    let metrics = Metrics::new();
    let prom = PromClient::new(&prometheus.url(), Duration::from_secs(5), metrics.clone())?;
    let analyzer = Arc::new(Analyzer::new(
        cluster.clone(),
        Arc::new(prom),
        Defaults::default(),
        metrics.clone(),
    ));
    let after_setup = Probe::read_self();
    let setup_elapsed = setup_wall.elapsed();
    println!(
        "setup done in {:.1}s (Prometheus startup {:.1}s); RSS {:.1} MiB",
        setup_elapsed.as_secs_f64(),
        prometheus.startup_time().as_secs_f64(),
        mib(after_setup.rss_kib)
    );

    // 4. The analyzer, for the duration; /proc sampled every second.
    let (_leader_tx, leader_rx) = tokio::sync::watch::channel(true);
    let run_started = Instant::now();
    let task = tokio::spawn(analyzer.clone().run(TICK, leader_rx, None));
    let mut samples = vec![Probe::read_self()];
    let mut sampler = tokio::time::interval(Duration::from_secs(1));
    sampler.tick().await;
    while run_started.elapsed() < Duration::from_secs(duration_s) {
        sampler.tick().await;
        let p = Probe::read_self();
        samples.push(p);
        let elapsed = run_started.elapsed().as_secs();
        if elapsed % 10 == 0 {
            println!(
                "t={elapsed:>4}s RSS {:>6.1} MiB, queries {:>5}, writes {:>6}",
                mib(p.rss_kib),
                metric_sum(&metrics.encode(), "canary_gate_prometheus_queries_total"),
                memory.log().len() - rollouts
            );
        }
    }
    task.abort();
    let _ = task.await;
    let end = Probe::read_self();
    let run_elapsed = run_started.elapsed().as_secs_f64();

    // 5. Report.
    let prom_probe = prom_pid.as_deref().and_then(Probe::read);
    let feeder_probe = Probe::read(&feeder.id().to_string());
    drop(feeder.stdin.take());
    let _ = feeder.kill();
    let _ = feeder.wait();
    drop(prometheus);

    let encoded = metrics.encode();
    let queries = metric_sum(&encoded, "canary_gate_prometheus_queries_total");
    let ticks = timer
        .ticks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    // Gaps between tick starts: 1 s when on schedule, 2 s when one tick was skipped.
    let skipped: u64 = ticks
        .windows(2)
        .map(|w| (w[1].0.duration_since(w[0].0).as_secs_f64().round() as u64).saturating_sub(1))
        .sum();
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
    let log = memory.log();
    let mut writes: BTreeMap<String, usize> = BTreeMap::new();
    for l in log.iter().filter(|l| !l.starts_with("user put")) {
        let verb: String = l.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        *writes.entry(verb).or_default() += 1;
    }
    let total_writes: usize = writes.values().sum();
    let calls = cluster.calls();

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

    println!("\n== results: {rollouts} rollouts, interval {interval_s}s, analyzer ran {run_elapsed:.0}s (tick 1s) ==");
    println!("RSS (analyzer process: analyzer + in-memory Kubernetes API + PromClient + tracing)");
    println!("  start            {:>7.1} MiB", mib(start.rss_kib));
    println!("  after setup      {:>7.1} MiB", mib(after_setup.rss_kib));
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
        "  sent             {queries:.0} = {:.3}/s  (TickReport-equivalent: 3 per window group per due tick)",
        queries / run_elapsed
    );
    println!(
        "  naive            {naive:.1}/s  (2 built-in gates x {rollouts} rollouts / {interval_s}s); ratio {:.0}x fewer",
        naive / (queries / run_elapsed).max(f64::MIN_POSITIVE)
    );
    println!(
        "  checks           {:.0} (expected ≤ {:.0} = rollouts x run/interval)",
        metric_sum(&encoded, "canary_gate_checks_total"),
        rollouts as f64 * checks_per_rollout
    );
    println!(
        "Ticks: {} (durations from the `tick` span; lateness from canary_gate_tick_lateness_seconds)",
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
        "  lateness ms      p50 ≤{:.0}  p90 ≤{:.0}  p99 ≤{:.0}  (histogram bucket bounds); ticks skipped {skipped}",
        ms(histogram_quantile(&encoded, "canary_gate_tick_lateness_seconds", 0.5)),
        ms(histogram_quantile(&encoded, "canary_gate_tick_lateness_seconds", 0.9)),
        ms(histogram_quantile(&encoded, "canary_gate_tick_lateness_seconds", 0.99)),
    );
    let count = metric_sum(&encoded, "canary_gate_tick_lateness_seconds_count");
    println!(
        "  metrics histos   lateness mean {:.2} ms over {count:.0}; duration mean {:.2} ms over {:.0}",
        ms(metric_sum(&encoded, "canary_gate_tick_lateness_seconds_sum") / count),
        ms(metric_sum(&encoded, "canary_gate_tick_duration_seconds_sum")
            / metric_sum(&encoded, "canary_gate_tick_duration_seconds_count")),
        metric_sum(&encoded, "canary_gate_tick_duration_seconds_count"),
    );
    println!("Rollouts by phase at the end:");
    for (phase, n) in phases(&memory, rollouts) {
        println!("  {phase:<18} {n}");
    }
    println!(
        "Kubernetes API writes (MemoryCluster log): {total_writes} = {:.1}/s; events {}",
        total_writes as f64 / run_elapsed,
        memory.events().len()
    );
    for (verb, n) in &writes {
        println!("  {verb:<22} {n}");
    }
    println!(
        "Kubernetes API calls seen by the analyzer (max in flight {}):",
        cluster.max_in_flight.load(Ordering::SeqCst)
    );
    for (call, n) in &calls {
        println!("  {call:<26} {n:>8} = {:>7.1}/s", *n as f64 / run_elapsed);
    }
    match prom_probe {
        Some(p) => println!(
            "Prometheus child (pid {}): RSS {:.1} MiB (peak {:.1}), CPU {:.1} s total",
            prom_pid.unwrap_or_default(),
            mib(p.rss_kib),
            mib(p.hwm_kib),
            p.cpu_s
        ),
        None => println!("Prometheus child: pid not found"),
    }
    if let Some(p) = feeder_probe {
        println!(
            "Feeder child (exporter + simulated traffic): RSS {:.1} MiB (peak {:.1}), CPU {:.1} s total",
            mib(p.rss_kib),
            mib(p.hwm_kib),
            p.cpu_s
        );
    }
    let errors = metric_sum(&encoded, "canary_gate_prometheus_queries_total")
        - encoded
            .lines()
            .filter(|l| {
                l.starts_with("canary_gate_prometheus_queries_total")
                    && l.to_ascii_lowercase().contains("success")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    println!("Prometheus queries not successful: {errors:.0}");
    for l in encoded
        .lines()
        .filter(|l| l.starts_with("canary_gate_prometheus_queries_total"))
    {
        println!("  {l}");
    }
    Ok(())
}
