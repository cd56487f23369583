//! SIMULATED Istio mesh traffic. Nothing here sends a request: `MeshSim` plays the part of a
//! load-test Job behind weighted Istio routes by writing what the destination sidecars of the
//! stable and canary workloads would report into an `IstioExporter`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::exporter::IstioExporter;

/// Anything shown to a person (demo output, logs) should carry this, so simulated numbers are
/// never mistaken for a real mesh.
pub const SIMULATED_NOTICE: &str =
    "SIMULATED traffic: no real requests are sent; the numbers come from an in-process Istio mesh simulator";

const TICK: Duration = Duration::from_millis(100);
/// Standard normal quantile at 0.99, to fit a log-normal to (p50, p99).
const Z_99: f64 = 2.326_347_874_040_841;

/// How one workload behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// Fraction of requests answered with 503, 0.0..=1.0.
    pub error_rate: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

impl Profile {
    /// A well-behaved service: no errors, p50 50 ms, p99 200 ms.
    pub fn healthy() -> Profile {
        Profile {
            error_rate: 0.0,
            latency_p50_ms: 50.0,
            latency_p99_ms: 200.0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub namespace: String,
    /// Short name of the Service both workloads sit behind (reported as its FQDN).
    pub service: String,
    pub stable_workload: String,
    pub canary_workload: String,
    /// Total requests per second across both workloads.
    pub rps: f64,
    pub stable: Profile,
    pub canary: Profile,
    pub seed: u64,
}

/// Requests and errors (5xx) seen by one workload since the simulation started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
}

/// Per-workload totals; `errors` of both is what users would have seen fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimTotals {
    pub stable: Totals,
    pub canary: Totals,
}

impl SimTotals {
    pub fn requests(&self) -> u64 {
        self.stable.requests + self.canary.requests
    }

    pub fn errors(&self) -> u64 {
        self.stable.errors + self.canary.errors
    }
}

/// Keeps generating traffic until `stop()` or drop.
pub struct MeshSim {
    state: Arc<Mutex<SimState>>,
    stopped: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl MeshSim {
    /// Spawns the generator on the current tokio runtime. Every 100 ms it emits `rps × 0.1`
    /// requests and routes `weight()` percent of them (clamped to 0..=100, read every tick so
    /// the analyzer under test can move it) to the canary. Must be called inside a tokio
    /// runtime (it panics otherwise, like `tokio::spawn`).
    pub fn start(
        exporter: Arc<IstioExporter>,
        cfg: SimConfig,
        weight: Arc<dyn Fn() -> u32 + Send + Sync>,
    ) -> MeshSim {
        let mut seeder = SplitMix64(cfg.seed);
        let state = Arc::new(Mutex::new(SimState {
            stable: WorkloadSim::new(cfg.stable, seeder.next_u64()),
            canary: WorkloadSim::new(cfg.canary, seeder.next_u64()),
            request_carry: 0.0,
            canary_carry: 0.0,
        }));
        let stopped = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let state = state.clone();
            let stopped = stopped.clone();
            async move {
                let mut ticker = tokio::time::interval(TICK);
                // Burst (the default) catches up after a stalled runtime, so the long-run rate
                // stays `rps` even on a loaded CI machine.
                loop {
                    ticker.tick().await;
                    let weight = weight().min(100);
                    let mut state = lock(&state);
                    // Checked under the lock that `stop()` also takes, so nothing is recorded
                    // after `stop()` returns and totals match the exporter exactly.
                    if stopped.load(Ordering::SeqCst) {
                        return;
                    }
                    state.tick(&exporter, &cfg, weight);
                }
            }
        });
        MeshSim {
            state,
            stopped,
            task,
        }
    }

    /// Changes the canary's behaviour from the next tick on (e.g. a bad release).
    pub fn set_canary_profile(&self, profile: Profile) {
        lock(&self.state).canary.set_profile(profile);
    }

    pub fn set_stable_profile(&self, profile: Profile) {
        lock(&self.state).stable.set_profile(profile);
    }

    pub fn totals(&self) -> SimTotals {
        let state = lock(&self.state);
        SimTotals {
            stable: state.stable.totals,
            canary: state.canary.totals,
        }
    }

    /// Stops generating; no request is recorded after this returns.
    pub fn stop(&self) {
        let _state = lock(&self.state);
        self.stopped.store(true, Ordering::SeqCst);
        self.task.abort();
    }
}

impl Drop for MeshSim {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock(state: &Mutex<SimState>) -> MutexGuard<'_, SimState> {
    // The state is plain counters that are consistent between requests, so a panic elsewhere
    // while the lock was held is no reason to fail every later call too.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct SimState {
    stable: WorkloadSim,
    canary: WorkloadSim,
    /// Fractions of a request carried to the next tick, so e.g. 15 rps is 1.5 per tick
    /// on average instead of 1 or 2.
    request_carry: f64,
    /// Same for the weighted split, so the canary gets exactly `weight` % over any few ticks
    /// (Envoy's weighted clusters are random, but exact shares keep tests tight).
    canary_carry: f64,
}

impl SimState {
    fn tick(&mut self, exporter: &IstioExporter, cfg: &SimConfig, weight: u32) {
        self.request_carry += cfg.rps.max(0.0) * TICK.as_secs_f64();
        let total = self.request_carry.floor();
        self.request_carry -= total;
        self.canary_carry += total * f64::from(weight) / 100.0;
        let to_canary = self.canary_carry.floor();
        self.canary_carry -= to_canary;
        let (total, to_canary) = (total as u64, to_canary as u64);
        self.canary
            .serve(exporter, cfg, &cfg.canary_workload, to_canary.min(total));
        self.stable.serve(
            exporter,
            cfg,
            &cfg.stable_workload,
            total.saturating_sub(to_canary),
        );
    }
}

struct WorkloadSim {
    profile: Profile,
    /// ln-space parameters of the latency distribution, derived from the profile.
    mu: f64,
    sigma: f64,
    rng: SplitMix64,
    /// Error diffusion instead of a coin flip per request: over any window of n requests the
    /// error count is within 1 of `n × error_rate`. With i.i.d. draws a 2 % error rate on
    /// 80 requests passes a 99 % success gate about 1 time in 5, which makes gate tests flaky.
    error_carry: f64,
    totals: Totals,
}

impl WorkloadSim {
    fn new(profile: Profile, seed: u64) -> WorkloadSim {
        let mut sim = WorkloadSim {
            profile,
            mu: 0.0,
            sigma: 0.0,
            rng: SplitMix64(seed),
            error_carry: 0.0,
            totals: Totals::default(),
        };
        sim.set_profile(profile);
        sim
    }

    fn set_profile(&mut self, profile: Profile) {
        let p50 = profile.latency_p50_ms.max(f64::MIN_POSITIVE);
        let p99 = profile.latency_p99_ms.max(p50);
        self.profile = profile;
        self.mu = p50.ln();
        self.sigma = (p99.ln() - p50.ln()) / Z_99;
    }

    fn serve(&mut self, exporter: &IstioExporter, cfg: &SimConfig, workload: &str, n: u64) {
        for _ in 0..n {
            self.error_carry += self.profile.error_rate.clamp(0.0, 1.0);
            let failed = self.error_carry >= 1.0;
            if failed {
                self.error_carry -= 1.0;
            }
            let latency_ms = (self.mu + self.sigma * self.rng.standard_normal()).exp();
            let code = if failed { 503 } else { 200 };
            exporter.record(&cfg.namespace, workload, &cfg.service, code, latency_ms);
            self.totals.requests += 1;
            self.totals.errors += u64::from(failed);
        }
    }
}

/// splitmix64: tiny, seedable, good enough statistically for latency jitter, and keeps the
/// harness free of a `rand` dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so `ln` below stays finite.
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Box–Muller; the second variate is discarded for simplicity (cost is irrelevant here).
    fn standard_normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}
