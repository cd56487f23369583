//! An in-process stand-in for the Istio sidecars of a namespace: it serves the two standard
//! Istio metrics the analyzer's built-in gates read, exactly as Envoy reports them with
//! `reporter="destination"`, so the real Prometheus and PromQL engine can be exercised without
//! a mesh.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context as _;
use axum::{http::header, routing::get, Router};

/// Istio's default `istio_request_duration_milliseconds` bucket bounds (the `+Inf` bucket is
/// implicit: it always equals the request count).
pub const ISTIO_DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

const BUCKETS: usize = ISTIO_DURATION_BUCKETS_MS.len();

/// One Prometheus series family member; ordered so the exposition output is stable, which
/// keeps diffs of scraped output readable when a test fails.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesKey {
    namespace: String,
    workload: String,
    service: String,
    response_code: u16,
}

#[derive(Debug, Clone, Default)]
struct SeriesValues {
    requests: u64,
    /// Per-bucket (non-cumulative) counts; made cumulative only when rendering so `record`
    /// stays O(log buckets).
    buckets: [u64; BUCKETS],
    sum_ms: f64,
}

type Registry = Arc<Mutex<BTreeMap<SeriesKey, SeriesValues>>>;

/// Serves `/metrics` on `127.0.0.1:<ephemeral>` until dropped.
pub struct IstioExporter {
    addr: SocketAddr,
    registry: Registry,
    server: tokio::task::JoinHandle<()>,
}

impl IstioExporter {
    pub async fn start() -> anyhow::Result<IstioExporter> {
        let registry: Registry = Arc::default();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the Istio test exporter on 127.0.0.1:0")?;
        let addr = listener
            .local_addr()
            .context("reading the Istio test exporter's address")?;
        let app = Router::new().route(
            "/metrics",
            get({
                let registry = registry.clone();
                move || {
                    let body = render(&lock(&registry));
                    async move {
                        (
                            [(
                                header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            body,
                        )
                    }
                }
            }),
        );
        let server = tokio::spawn(async move {
            // Nobody is left to report to once the test is over; a failing exporter shows up
            // as `up == 0` in Prometheus, which TestPrometheus::start already reports.
            let _ = axum::serve(listener, app).await;
        });
        Ok(IstioExporter {
            addr,
            registry,
            server,
        })
    }

    /// The scrape target to hand to `TestPrometheus::start`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Records one request as the destination sidecar of `workload` would.
    /// `service` is the short Service name; the FQDN is built like Istio does.
    pub fn record(
        &self,
        namespace: &str,
        workload: &str,
        service: &str,
        response_code: u16,
        latency_ms: f64,
    ) {
        self.record_many(namespace, workload, service, response_code, latency_ms, 1);
    }

    /// Records `count` requests that all took `latency_ms`, for setting up a known state in
    /// one call instead of a loop.
    pub fn record_many(
        &self,
        namespace: &str,
        workload: &str,
        service: &str,
        response_code: u16,
        latency_ms: f64,
        count: u64,
    ) {
        if count == 0 {
            // A zero-count record would still create the series, which a real sidecar only
            // does on the first request; tests of "no data" depend on that.
            return;
        }
        let key = SeriesKey {
            namespace: namespace.to_owned(),
            workload: workload.to_owned(),
            service: service.to_owned(),
            response_code,
        };
        // `le` is inclusive: a 500 ms request belongs to the le="500" bucket.
        let bucket = ISTIO_DURATION_BUCKETS_MS.partition_point(|&le| le < latency_ms);
        let mut registry = lock(&self.registry);
        let series = registry.entry(key).or_default();
        series.requests += count;
        if bucket < BUCKETS {
            series.buckets[bucket] += count;
        }
        series.sum_ms += latency_ms * count as f64;
    }

    /// The exposition text as Prometheus would scrape it (handy in assertions and when
    /// debugging a failing test).
    pub fn render(&self) -> String {
        render(&lock(&self.registry))
    }
}

impl Drop for IstioExporter {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A panic while holding the lock cannot leave the counters half-updated in a way that
/// matters to a test, so poisoning is ignored rather than cascading the panic.
fn lock(registry: &Registry) -> MutexGuard<'_, BTreeMap<SeriesKey, SeriesValues>> {
    registry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn render(registry: &BTreeMap<SeriesKey, SeriesValues>) -> String {
    let mut out = String::with_capacity(256 + registry.len() * 4096);
    out.push_str("# HELP istio_requests_total Total requests.\n");
    out.push_str("# TYPE istio_requests_total counter\n");
    for (key, values) in registry {
        let _ = writeln!(
            out,
            "istio_requests_total{{{}}} {}",
            labels(key),
            values.requests
        );
    }
    out.push_str("# HELP istio_request_duration_milliseconds Request duration in milliseconds.\n");
    out.push_str("# TYPE istio_request_duration_milliseconds histogram\n");
    for (key, values) in registry {
        let labels = labels(key);
        let mut cumulative = 0;
        for (le, count) in ISTIO_DURATION_BUCKETS_MS.iter().zip(values.buckets) {
            cumulative += count;
            // f64's Display prints 1800000 rather than 1.8e6, matching what Istio exposes, so
            // selectors like le="1000" written by hand keep matching.
            let _ = writeln!(
                out,
                "istio_request_duration_milliseconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "istio_request_duration_milliseconds_bucket{{{labels},le=\"+Inf\"}} {}",
            values.requests
        );
        let _ = writeln!(
            out,
            "istio_request_duration_milliseconds_sum{{{labels}}} {}",
            values.sum_ms
        );
        let _ = writeln!(
            out,
            "istio_request_duration_milliseconds_count{{{labels}}} {}",
            values.requests
        );
    }
    out
}

fn labels(key: &SeriesKey) -> String {
    format!(
        "reporter=\"destination\",destination_workload=\"{w}\",destination_workload_namespace=\"{ns}\",destination_service=\"{svc}.{ns}.svc.cluster.local\",response_code=\"{code}\",request_protocol=\"http\"",
        w = escape(&key.workload),
        ns = escape(&key.namespace),
        svc = escape(&key.service),
        code = key.response_code,
    )
}

/// Tests may feed arbitrary names (e.g. to check the analyzer's own escaping), and one bad
/// label value would make Prometheus reject the whole scrape.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
