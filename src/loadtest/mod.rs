//! `canary-gate loadtest`: keep traffic flowing to a service while a canary is analyzed.
//!
//! The gates judge the canary on real requests, so an idle service means "no data" and a stalled
//! rollout. This replaces the Flagger load-test Job (a loop of curls) with an open-loop
//! generator: requests are started on a fixed schedule whether or not earlier ones have
//! answered, so a slow canary shows up as latency and errors instead of silently lowering the
//! request rate (which is what a closed loop of curls does).

pub mod hook;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Upper bound on `--concurrency`: far above what one pod should hold open, and well inside
/// what a tokio semaphore can count.
pub const MAX_CONCURRENCY: usize = 100_000;

/// In-flight requests get this much beyond `--timeout` at shutdown, so one that started just
/// before the end is reported as `error:timeout` by the client rather than `error:unfinished`.
const DRAIN_SLACK: Duration = Duration::from_millis(250);

/// Arguments of `canary-gate loadtest`.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadtestArgs {
    /// URLs to request, round-robin (http or https), e.g. the front page and product pages.
    /// With --serve, the default URLs of runs whose hook call names none.
    #[arg(required_unless_present = "serve", num_args = 1.., value_parser = parse_url_arg)]
    pub urls: Vec<String>,

    /// Serve hook calls on this address instead of running once: each POST (a canary-gate
    /// `pre-rollout` or `rollout` hook) starts a run for that Deployment unless one is
    /// running, with `urls`, `rate`, `duration` from the hook's metadata over these flags.
    /// Replaces Flagger's loadtester service.
    #[arg(long, env = "CANARY_GATE_LOADTEST_SERVE", value_name = "ADDR")]
    pub serve: Option<std::net::SocketAddr>,

    /// Requests per second, over all URLs together.
    #[arg(
        long,
        env = "CANARY_GATE_LOADTEST_RATE",
        default_value_t = 10.0,
        value_parser = parse_rate_arg
    )]
    pub rate: f64,

    /// How long to run, e.g. 60s, 10m; 0s runs until Ctrl-C.
    #[arg(
        long,
        env = "CANARY_GATE_LOADTEST_DURATION",
        default_value = "60s",
        value_parser = humantime::parse_duration
    )]
    pub duration: Duration,

    /// Maximum requests in flight; requests due beyond it are counted as dropped.
    #[arg(
        long,
        env = "CANARY_GATE_LOADTEST_CONCURRENCY",
        default_value_t = 32,
        value_parser = parse_concurrency_arg
    )]
    pub concurrency: usize,

    /// Timeout of each request (connect + response + body).
    #[arg(
        long,
        env = "CANARY_GATE_LOADTEST_TIMEOUT",
        default_value = "5s",
        value_parser = parse_timeout_arg
    )]
    pub timeout: Duration,

    /// Host header for every request: reach a virtual host through an ingress gateway by the
    /// gateway's address (e.g. `http://istio-ingressgateway.istio-system/` with
    /// `--host podinfo.example.com`), as external users do.
    #[arg(long, env = "CANARY_GATE_LOADTEST_HOST", value_parser = parse_host_arg)]
    pub host: Option<String>,

    /// No live progress line on stderr.
    #[arg(
        long,
        env = "CANARY_GATE_LOADTEST_QUIET",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub quiet: bool,
}

impl LoadtestArgs {
    /// Arguments with the CLI defaults for the given URLs.
    pub fn new(urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            urls: urls.into_iter().map(Into::into).collect(),
            rate: 10.0,
            duration: Duration::from_secs(60),
            concurrency: 32,
            timeout: Duration::from_secs(5),
            host: None,
            serve: None,
            quiet: false,
        }
    }

    /// Checks everything clap can't (or that a caller building the struct by hand skipped)
    /// and returns the parsed URLs.
    pub fn validate(&self) -> Result<Vec<reqwest::Url>, LoadtestError> {
        if self.urls.is_empty() {
            return Err(LoadtestError::NoUrls);
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(LoadtestError::InvalidRate(self.rate));
        }
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return Err(LoadtestError::InvalidConcurrency(self.concurrency));
        }
        if self.timeout.is_zero() {
            return Err(LoadtestError::InvalidTimeout);
        }
        if let Some(host) = &self.host {
            parse_host_arg(host)?;
        }
        self.urls.iter().map(|u| parse_url(u)).collect()
    }
}

/// Errors a caller may want to tell apart: bad arguments vs. a client that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    #[error("no URL given: pass at least one http:// or https:// URL")]
    NoUrls,
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid --rate {0}: must be a number of requests per second greater than 0")]
    InvalidRate(f64),
    #[error("invalid --concurrency {0}: must be between 1 and {MAX_CONCURRENCY}")]
    InvalidConcurrency(usize),
    #[error("invalid --timeout: must be greater than 0")]
    InvalidTimeout,
    #[error("invalid --host {0:?}: must be a host name, optionally with :port")]
    InvalidHost(String),
    #[error("building the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Parses and checks one URL: absolute, http or https, with a host.
pub fn parse_url(raw: &str) -> Result<reqwest::Url, LoadtestError> {
    let invalid = |reason: String| LoadtestError::InvalidUrl {
        url: raw.to_owned(),
        reason,
    };
    let url = reqwest::Url::parse(raw).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme {:?} is not supported, use http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host".to_owned()));
    }
    Ok(url)
}

fn parse_url_arg(raw: &str) -> Result<String, LoadtestError> {
    parse_url(raw).map(|_| raw.to_owned())
}

fn parse_host_arg(raw: &str) -> Result<String, LoadtestError> {
    let ok = !raw.is_empty()
        && raw.len() <= 253
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']'));
    ok.then(|| raw.to_owned())
        .ok_or_else(|| LoadtestError::InvalidHost(raw.to_owned()))
}

fn parse_concurrency_arg(raw: &str) -> Result<usize, String> {
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_CONCURRENCY).contains(&n) => Ok(n),
        Ok(_) => Err(format!("must be between 1 and {MAX_CONCURRENCY}")),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_timeout_arg(raw: &str) -> Result<Duration, String> {
    match humantime::parse_duration(raw) {
        Ok(d) if d.is_zero() => Err("must be greater than 0".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_rate_arg(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        Ok(_) => Err("must be greater than 0".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs the load test until `--duration` has passed or Ctrl-C is pressed.
pub async fn run(args: LoadtestArgs) -> anyhow::Result<Summary> {
    run_until(args, ctrl_c()).await
}

/// Like [`run`], but stops early when `stop` completes instead of on Ctrl-C (for callers with
/// their own shutdown signal, and for tests).
pub async fn run_until(
    args: LoadtestArgs,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<Summary> {
    let urls = args.validate()?;
    let client = build_client(&args)?;
    tracing::debug!(
        urls = ?args.urls,
        rate = args.rate,
        duration = %humantime::format_duration(args.duration),
        concurrency = args.concurrency,
        "starting load test"
    );
    Ok(drive(&args, urls, client, stop).await)
}

async fn ctrl_c() {
    if let Err(e) = tokio::signal::ctrl_c().await {
        // Without a handler we can still stop at --duration; never resolve rather than stop
        // the run immediately.
        tracing::warn!(error = %e, "cannot listen for Ctrl-C");
        std::future::pending::<()>().await;
    }
}

fn build_client(args: &LoadtestArgs) -> Result<reqwest::Client, LoadtestError> {
    // reqwest panics on the first TLS client build when no rustls provider is installed; the
    // binary installs ring at startup, this covers library callers and tests that forgot.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(host) = &args.host {
        let value = reqwest::header::HeaderValue::from_str(host)
            .map_err(|_| LoadtestError::InvalidHost(host.clone()))?;
        headers.insert(reqwest::header::HOST, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(args.timeout)
        .connect_timeout(args.timeout)
        // A redirect is a response the service gave; following it would hide it and double the
        // traffic to wherever it points.
        .redirect(reqwest::redirect::Policy::none())
        // The traffic is meant to enter the mesh from this pod, as the analysis expects; a proxy
        // from the environment would change its source and add its own latency.
        .no_proxy()
        .pool_max_idle_per_host(args.concurrency)
        .user_agent(concat!("canary-gate-loadtest/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(LoadtestError::Client)
}

/// The result of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Outcome {
    Status(u16),
    Error(ErrorKind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum ErrorKind {
    Connect,
    Timeout,
    Redirect,
    Body,
    Request,
    /// Still in flight when the drain time after the run ran out.
    Unfinished,
}

impl Outcome {
    /// Same rule as the built-in request-success-rate gate (non-5xx is success), so the numbers
    /// printed here line up with what the analyzer sees.
    fn is_ok(self) -> bool {
        matches!(self, Outcome::Status(code) if code < 500)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Status(code) => write!(f, "{code}"),
            Outcome::Error(kind) => f.write_str(match kind {
                ErrorKind::Connect => "error:connect",
                ErrorKind::Timeout => "error:timeout",
                ErrorKind::Redirect => "error:redirect",
                ErrorKind::Body => "error:body",
                ErrorKind::Request => "error:request",
                ErrorKind::Unfinished => "error:unfinished",
            }),
        }
    }
}

fn classify(e: &reqwest::Error) -> ErrorKind {
    // Timeout first: a connect that times out is both, and "timeout" is the useful answer.
    if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_connect() {
        ErrorKind::Connect
    } else if e.is_redirect() {
        ErrorKind::Redirect
    } else if e.is_body() || e.is_decode() {
        ErrorKind::Body
    } else {
        ErrorKind::Request
    }
}

/// One request, body included: curl's total time is what the old Job measured, and reading
/// the body to the end lets the connection go back to the pool.
async fn fetch(client: reqwest::Client, url: reqwest::Url) -> (Outcome, Duration) {
    let started = Instant::now();
    let outcome = match client.get(url).send().await {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            loop {
                match resp.chunk().await {
                    Ok(Some(_)) => {}
                    Ok(None) => break Outcome::Status(status),
                    Err(e) => break Outcome::Error(classify(&e)),
                }
            }
        }
        Err(e) => Outcome::Error(classify(&e)),
    };
    (outcome, started.elapsed())
}

/// Running counts for one URL (or the total).
#[derive(Debug, Clone, Default)]
struct Tally {
    sent: u64,
    dropped: u64,
    ok: u64,
    errors: u64,
    outcomes: BTreeMap<Outcome, u64>,
    latency: LatencyHistogram,
}

impl Tally {
    fn record(&mut self, outcome: Outcome, latency: Duration) {
        *self.outcomes.entry(outcome).or_default() += 1;
        if outcome.is_ok() {
            self.ok += 1;
        } else {
            self.errors += 1;
        }
        // Only answered requests have a meaningful latency; a timeout's would just be the
        // timeout and would drown the percentiles the p99 gate is about.
        if let Outcome::Status(_) = outcome {
            self.latency.record(latency);
        }
    }

    fn stats(&self, elapsed: Duration) -> Stats {
        let secs = elapsed.as_secs_f64();
        Stats {
            sent: self.sent,
            dropped: self.dropped,
            ok: self.ok,
            errors: self.errors,
            outcomes: self
                .outcomes
                .iter()
                .map(|(o, n)| (o.to_string(), *n))
                .collect(),
            latency: Latency::of(&self.latency),
            achieved_rps: if secs > 0.0 {
                self.sent as f64 / secs
            } else {
                0.0
            },
        }
    }
}

/// The schedule, the in-flight set and the bookkeeping, until stop, then the drain.
async fn drive(
    args: &LoadtestArgs,
    urls: Vec<reqwest::Url>,
    client: reqwest::Client,
    stop: impl Future<Output = ()>,
) -> Summary {
    let mut tallies = vec![Tally::default(); urls.len()];
    let mut total = Tally::default();
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let mut inflight: JoinSet<(Outcome, Duration)> = JoinSet::new();
    let mut inflight_url: HashMap<tokio::task::Id, usize> = HashMap::new();

    let mut progress = Progress::new(args.quiet);
    let start = Instant::now();
    // Deadlines are computed from the start (n / rate), not by adding a period each time, so
    // rounding never accumulates and a stall is followed by a catch-up burst: the rate holds.
    let deadline = |n: u64| {
        Duration::try_from_secs_f64(n as f64 / args.rate)
            .ok()
            .and_then(|d| start.checked_add(d))
    };
    let end = (!args.duration.is_zero())
        .then(|| start.checked_add(args.duration))
        .flatten();

    let mut n: u64 = 0;
    let mut next = deadline(0);
    let fire = tokio::time::sleep_until(next.unwrap_or(start));
    let finish = tokio::time::sleep_until(end.unwrap_or(start));
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(fire, finish, stop);

    let mut interrupted = false;
    loop {
        // Biased: stopping wins over firing, and firing over bookkeeping, so that neither a
        // flood of completions nor the progress line can delay the schedule.
        tokio::select! {
            biased;
            () = &mut stop => {
                interrupted = true;
                break;
            }
            () = &mut finish, if end.is_some() => break,
            () = &mut fire, if next.is_some() => {
                let idx = usize::try_from(n % urls.len() as u64).unwrap_or(0);
                match Arc::clone(&permits).try_acquire_owned() {
                    Ok(permit) => {
                        tallies[idx].sent += 1;
                        total.sent += 1;
                        let request = fetch(client.clone(), urls[idx].clone());
                        let handle = inflight.spawn(async move {
                            let result = request.await;
                            drop(permit);
                            result
                        });
                        inflight_url.insert(handle.id(), idx);
                    }
                    Err(_) => {
                        tallies[idx].dropped += 1;
                        total.dropped += 1;
                    }
                }
                n += 1;
                next = deadline(n);
                if let Some(at) = next {
                    fire.as_mut().reset(at);
                }
            }
            _ = tick.tick(), if progress.enabled() => {
                progress.update(start.elapsed(), &total);
            }
            Some(joined) = inflight.join_next_with_id() => {
                reap(joined, &mut inflight_url, &mut tallies, &mut total);
            }
        }
    }
    let elapsed = start.elapsed();

    let drain = async {
        while let Some(joined) = inflight.join_next_with_id().await {
            reap(joined, &mut inflight_url, &mut tallies, &mut total);
        }
    };
    // tokio::time::timeout copes with an absurd --timeout that would overflow an Instant.
    let _ = tokio::time::timeout(args.timeout.saturating_add(DRAIN_SLACK), drain).await;
    inflight.abort_all();
    for idx in inflight_url.into_values() {
        let unfinished = Outcome::Error(ErrorKind::Unfinished);
        tallies[idx].record(unfinished, Duration::ZERO);
        total.record(unfinished, Duration::ZERO);
    }
    progress.finish(elapsed, &total);

    Summary {
        target_rps: args.rate,
        elapsed,
        interrupted,
        per_url: urls
            .iter()
            .zip(&tallies)
            .map(|(url, tally)| UrlSummary {
                url: url.to_string(),
                stats: tally.stats(elapsed),
            })
            .collect(),
        total: total.stats(elapsed),
    }
}

fn reap(
    joined: Result<(tokio::task::Id, (Outcome, Duration)), tokio::task::JoinError>,
    inflight_url: &mut HashMap<tokio::task::Id, usize>,
    tallies: &mut [Tally],
    total: &mut Tally,
) {
    let (id, (outcome, latency)) = match joined {
        Ok(done) => done,
        // Only a panic in the HTTP stack gets here; count it rather than lose the request.
        Err(e) => {
            tracing::warn!(error = %e, "load test request task failed");
            (e.id(), (Outcome::Error(ErrorKind::Request), Duration::ZERO))
        }
    };
    if let Some(idx) = inflight_url.remove(&id) {
        if let Some(tally) = tallies.get_mut(idx) {
            tally.record(outcome, latency);
        }
        total.record(outcome, latency);
    }
}

/// The live line on stderr.
struct Progress {
    mode: ProgressMode,
    ticks: u64,
    printed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ProgressMode {
    Off,
    /// Rewrite one line in place every second.
    Terminal,
    /// A plain line every few seconds, for logs (a Job's output) where `\r` only adds noise.
    Log,
}

/// Seconds between lines when stderr is not a terminal.
const LOG_EVERY_TICKS: u64 = 5;

impl Progress {
    fn new(quiet: bool) -> Self {
        let mode = if quiet {
            ProgressMode::Off
        } else if std::io::stderr().is_terminal() {
            ProgressMode::Terminal
        } else {
            ProgressMode::Log
        };
        Self {
            mode,
            ticks: 0,
            printed: false,
        }
    }

    fn enabled(&self) -> bool {
        self.mode != ProgressMode::Off
    }

    fn update(&mut self, elapsed: Duration, total: &Tally) {
        self.ticks += 1;
        let line = progress_line(elapsed, total);
        let mut err = std::io::stderr().lock();
        // Progress is best effort: a closed stderr must not end the load test.
        let _ = match self.mode {
            ProgressMode::Off => return,
            ProgressMode::Terminal => write!(err, "\r{line}\x1b[K").and_then(|()| err.flush()),
            ProgressMode::Log if self.ticks % LOG_EVERY_TICKS == 0 => writeln!(err, "{line}"),
            ProgressMode::Log => return,
        };
        self.printed = true;
    }

    fn finish(&mut self, elapsed: Duration, total: &Tally) {
        if self.mode == ProgressMode::Terminal && self.printed {
            let _ = writeln!(
                std::io::stderr().lock(),
                "\r{}\x1b[K",
                progress_line(elapsed, total)
            );
        }
    }
}

fn progress_line(elapsed: Duration, total: &Tally) -> String {
    let secs = elapsed.as_secs_f64();
    let rps = if secs > 0.0 {
        total.sent as f64 / secs
    } else {
        0.0
    };
    let ms = |q| {
        total
            .latency
            .percentile(q)
            .map_or_else(|| "-".to_owned(), |d| format!("{:.1}ms", as_ms(d)))
    };
    let dropped = if total.dropped > 0 {
        format!(" dropped {}", total.dropped)
    } else {
        String::new()
    };
    format!(
        "[{secs:>6.1}s] sent {} ({rps:.1} rps) ok {} err {}{dropped} p50 {} p99 {}",
        total.sent,
        total.ok,
        total.errors,
        ms(0.50),
        ms(0.99),
    )
}

/// `6.0s` for short runs, `1h 2m 3s` for long ones: nobody wants nanoseconds in a summary.
fn short_duration(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

fn as_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// Result of a load test, per URL and in total.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    /// `--rate`.
    pub target_rps: f64,
    /// Time from the first scheduled request to the stop (the drain is not included).
    pub elapsed: Duration,
    /// Stopped by Ctrl-C (or the caller's stop future) rather than by `--duration`.
    pub interrupted: bool,
    /// In the order the URLs were given.
    pub per_url: Vec<UrlSummary>,
    pub total: Stats,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UrlSummary {
    pub url: String,
    #[serde(flatten)]
    pub stats: Stats,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stats {
    /// Requests started. Every one ends up in exactly one `outcomes` entry.
    pub sent: u64,
    /// Requests that were due while `--concurrency` requests were in flight, and not sent.
    pub dropped: u64,
    /// Responses below 500 (the request-success-rate gate's notion of success).
    pub ok: u64,
    /// 5xx responses and requests without a response.
    pub errors: u64,
    /// Count per HTTP status (`"200"`) or failure (`"error:timeout"`, `"error:connect"`,
    /// `"error:redirect"`, `"error:body"`, `"error:request"`, `"error:unfinished"`).
    pub outcomes: BTreeMap<String, u64>,
    /// Over requests that got a response; `None` when none did.
    pub latency: Option<Latency>,
    /// `sent` per second of `Summary::elapsed`.
    pub achieved_rps: f64,
}

impl Stats {
    /// Count of one `outcomes` key, 0 when absent.
    pub fn count(&self, outcome: &str) -> u64 {
        self.outcomes.get(outcome).copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(h: &LatencyHistogram) -> Option<Self> {
        Some(Self {
            samples: h.count(),
            p50_ms: as_ms(h.percentile(0.50)?),
            p90_ms: as_ms(h.percentile(0.90)?),
            p99_ms: as_ms(h.percentile(0.99)?),
            max_ms: as_ms(h.max()?),
        })
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "load test {} after {}: {} sent, {:.1} rps achieved of {} rps target, {} dropped (client saturated)",
            if self.interrupted { "interrupted" } else { "finished" },
            short_duration(self.elapsed),
            self.total.sent,
            self.total.achieved_rps,
            self.target_rps,
            self.total.dropped,
        )?;
        writeln!(f)?;

        let width = self
            .per_url
            .iter()
            .map(|u| u.url.len())
            .chain(["URL".len(), "total".len()])
            .max()
            .unwrap_or(0);
        writeln!(
            f,
            "{:<width$}  {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8}  results",
            "URL", "sent", "dropped", "ok", "err", "p50 ms", "p90 ms", "p99 ms", "max ms"
        )?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, s: &Stats| {
            let lat = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
            let results = s
                .outcomes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            writeln!(
                f,
                "{name:<width$}  {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8}  {}",
                s.sent,
                s.dropped,
                s.ok,
                s.errors,
                lat(s.latency.map(|l| l.p50_ms)),
                lat(s.latency.map(|l| l.p90_ms)),
                lat(s.latency.map(|l| l.p99_ms)),
                lat(s.latency.map(|l| l.max_ms)),
                if results.is_empty() { "-" } else { &results },
            )
        };
        for u in &self.per_url {
            row(f, &u.url, &u.stats)?;
        }
        if self.per_url.len() > 1 {
            row(f, "total", &self.total)?;
        }
        Ok(())
    }
}

/// Latency histogram with logarithmic buckets from 1 µs to 60 s: constant memory however long
/// the run, under 1 % relative error on percentiles (each bucket is 1.9 % wide and reports its
/// geometric middle, off by at most 0.95 %). Min and max are kept exactly; longer latencies land in the last bucket,
/// shorter ones in the first.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    count: u64,
    min_ns: u64,
    max_ns: u64,
}

/// Bucket `i` holds latencies in `[GROWTH^i, GROWTH^(i+1))` microseconds.
const GROWTH: f64 = 1.019;
const TRACKED_MAX_US: f64 = 60_000_000.0;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        Self {
            counts: vec![0; raw_bucket(TRACKED_MAX_US) + 1],
            count: 0,
            min_ns: u64::MAX,
            max_ns: 0,
        }
    }

    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let idx = raw_bucket(ns as f64 / 1_000.0).min(self.counts.len() - 1);
        self.counts[idx] += 1;
        self.count += 1;
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_nanos(self.max_ns))
    }

    /// The `q` quantile (0.0..=1.0, e.g. 0.99): the smallest recorded value such that at least
    /// `q` of all values are ≤ it, within the bucket error. `None` when empty.
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        // The smallest and largest values are known exactly; no need to estimate them.
        if rank == 1 {
            return Some(Duration::from_nanos(self.min_ns));
        }
        if rank == self.count {
            return Some(Duration::from_nanos(self.max_ns));
        }
        let mut seen = 0;
        for (idx, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                // Nanosecond resolution: rounding the middle to whole microseconds would eat
                // the error budget for latencies under ~100 µs.
                let mid_ns = (GROWTH.powf(idx as f64 + 0.5) * 1_000.0).round() as u64;
                // Exact extremes beat the bucket's middle at both ends.
                return Some(Duration::from_nanos(mid_ns.clamp(self.min_ns, self.max_ns)));
            }
        }
        self.max()
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.count += other.count;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }
}

fn raw_bucket(us: f64) -> usize {
    if us <= 1.0 {
        0
    } else {
        // Saturating float-to-int cast: huge values go to the last bucket via the caller's min.
        (us.ln() / GROWTH.ln()) as usize
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    const DELAY: Duration = Duration::from_millis(5);

    fn install_provider() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    /// Only what the tests need of HTTP/1.1: keep-alive GETs without bodies. Written on
    /// `try_read`/`try_write` so it needs no tokio feature beyond `net`.
    async fn start_server() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = serve_connection(sock).await;
                });
            }
        });
        addr
    }

    async fn serve_connection(sock: TcpStream) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let head_end = loop {
                if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break pos + 4;
                }
                sock.readable().await?;
                match sock.try_read(&mut chunk) {
                    Ok(0) => return Ok(()),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            buf.drain(..head_end);
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let vhost = head
                .lines()
                .any(|l| l.eq_ignore_ascii_case("host: podinfo.example.com"));
            let (status, delay) = match path.as_str() {
                "/" => ("200 OK", DELAY),
                "/vhost" if vhost => ("200 OK", DELAY),
                "/bad" => ("500 Internal Server Error", DELAY),
                "/slow" => ("200 OK", Duration::from_secs(30)),
                "/moved" => ("301 Moved Permanently", Duration::ZERO),
                _ => ("404 Not Found", Duration::ZERO),
            };
            tokio::time::sleep(delay).await;
            let body = "hello\n";
            let response = format!(
                "HTTP/1.1 {status}\r\nlocation: /\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let mut out = response.as_bytes();
            while !out.is_empty() {
                sock.writable().await?;
                match sock.try_write(out) {
                    Ok(n) => out = &out[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }

    fn args(urls: &[String], rate: f64, duration: Duration) -> LoadtestArgs {
        LoadtestArgs {
            rate,
            duration,
            quiet: true,
            timeout: Duration::from_secs(2),
            ..LoadtestArgs::new(urls.iter().cloned())
        }
    }

    fn within(value: u64, expected: u64, tolerance: f64) -> bool {
        let (v, e) = (value as f64, expected as f64);
        (v - e).abs() <= e * tolerance
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_host_header_reaches_a_virtual_host_through_a_gateway_address() {
        install_provider();
        let addr = start_server().await;
        let url = format!("http://{addr}/vhost");
        let plain = run_until(
            args(std::slice::from_ref(&url), 50.0, Duration::from_millis(200)),
            std::future::pending(),
        )
        .await
        .expect("runs");
        assert_eq!(
            plain.total.count("200"),
            0,
            "no virtual host without --host"
        );
        let with_host = LoadtestArgs {
            host: Some("podinfo.example.com".into()),
            ..args(&[url], 50.0, Duration::from_millis(200))
        };
        let routed = run_until(with_host, std::future::pending())
            .await
            .expect("runs");
        assert!(routed.total.count("200") > 0, "{routed:?}");
        assert_eq!(routed.total.count("404"), 0, "{routed:?}");
        for bad in ["", "a b", "x\r\nInjected: 1"] {
            let bad_args = LoadtestArgs {
                host: Some(bad.into()),
                ..args(
                    &["http://127.0.0.1:9/".into()],
                    1.0,
                    Duration::from_millis(10),
                )
            };
            assert!(
                matches!(bad_args.validate(), Err(LoadtestError::InvalidHost(_))),
                "{bad:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_statuses_and_latencies_per_url() {
        install_provider();
        let addr = start_server().await;
        let urls = [format!("http://{addr}/"), format!("http://{addr}/bad")];
        let summary = run(args(&urls, 50.0, Duration::from_secs(1)))
            .await
            .expect("run");
        println!("{summary}");

        assert!(!summary.interrupted);
        assert!(within(summary.total.sent, 50, 0.2), "{summary:?}");
        assert!(
            (40.0..=60.0).contains(&summary.total.achieved_rps),
            "{summary:?}"
        );
        assert_eq!(summary.total.dropped, 0);
        assert_eq!(summary.per_url.len(), 2);
        let good = &summary.per_url[0].stats;
        let bad = &summary.per_url[1].stats;
        assert_eq!(summary.per_url[0].url, urls[0]);
        assert!(within(good.count("200"), 25, 0.2), "{good:?}");
        assert!(within(bad.count("500"), 25, 0.2), "{bad:?}");
        assert_eq!(good.count("200"), good.sent, "{good:?}");
        assert_eq!(bad.count("500"), bad.sent, "{bad:?}");
        assert_eq!(good.ok, good.sent);
        assert_eq!(bad.errors, bad.sent);
        assert_eq!(summary.total.count("200"), good.sent);
        assert_eq!(summary.total.count("500"), bad.sent);
        assert_eq!(
            summary.total.outcomes.values().sum::<u64>(),
            summary.total.sent
        );

        for stats in [good, bad, &summary.total] {
            let lat = stats.latency.expect("latency recorded");
            assert_eq!(lat.samples, stats.sent);
            assert!(lat.p50_ms <= lat.p90_ms, "{lat:?}");
            assert!(lat.p90_ms <= lat.p99_ms, "{lat:?}");
            assert!(lat.p99_ms <= lat.max_ms, "{lat:?}");
            // The server sleeps 5 ms; loopback adds little, and nothing should take a second.
            assert!(lat.p50_ms >= 4.5, "{lat:?}");
            assert!(lat.max_ms < 1_000.0, "{lat:?}");
        }

        let table = summary.to_string();
        assert!(table.contains(&urls[1]), "{table}");
        assert!(table.contains("200="), "{table}");
        assert!(table.contains("500="), "{table}");
        assert!(table.contains("total"), "{table}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_port_counts_connect_errors_without_hanging() {
        install_provider();
        // Bind then drop, so the port is very likely closed: connects are refused at once.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let urls = [format!("http://127.0.0.1:{port}/")];
        let started = std::time::Instant::now();
        let summary = tokio::time::timeout(
            Duration::from_secs(10),
            run(args(&urls, 20.0, Duration::from_millis(500))),
        )
        .await
        .expect("does not hang")
        .expect("run");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(summary.total.sent >= 5, "{summary:?}");
        assert_eq!(summary.total.count("error:connect"), summary.total.sent);
        assert_eq!(summary.total.errors, summary.total.sent);
        assert_eq!(summary.total.ok, 0);
        assert!(summary.total.latency.is_none());
        assert!(summary.to_string().contains("error:connect="));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_responses_time_out_and_saturation_drops() {
        install_provider();
        let addr = start_server().await;
        let urls = [format!("http://{addr}/slow")];
        let a = LoadtestArgs {
            concurrency: 2,
            timeout: Duration::from_millis(300),
            ..args(&urls, 40.0, Duration::from_millis(500))
        };
        let started = std::time::Instant::now();
        let summary = run(a).await.expect("run");
        // Stops at duration, then waits at most about the timeout for the stragglers.
        assert!(started.elapsed() < Duration::from_secs(2), "{summary:?}");
        let total = &summary.total;
        // Two slots of 300 ms in 500 ms: a handful sent, the rest of the 20 due dropped.
        assert!(total.sent >= 2 && total.sent <= 6, "{total:?}");
        assert!(total.dropped >= 12, "{total:?}");
        assert!(within(total.sent + total.dropped, 20, 0.2), "{total:?}");
        assert_eq!(total.count("error:timeout"), total.sent, "{total:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn zero_duration_runs_until_stopped_and_redirects_are_counted() {
        install_provider();
        let addr = start_server().await;
        let urls = [format!("http://{addr}/moved")];
        let a = args(&urls, 20.0, Duration::ZERO);
        let summary = run_until(a, tokio::time::sleep(Duration::from_millis(500)))
            .await
            .expect("run");
        assert!(summary.interrupted);
        assert!(within(summary.total.sent, 10, 0.3), "{summary:?}");
        // Not followed: the 301 is what the service answered.
        assert_eq!(
            summary.total.count("301"),
            summary.total.sent,
            "{summary:?}"
        );
        assert_eq!(summary.total.ok, summary.total.sent);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invalid_arguments_are_rejected_before_sending() {
        install_provider();
        let bad = [
            ("ftp://example.com/", "scheme"),
            ("not a url", "not a url"),
            ("/relative/path", "/relative/path"),
            ("http://", "http://"),
        ];
        for (url, needle) in bad {
            let a = LoadtestArgs::new(["http://127.0.0.1:1/", url]);
            let err = a.validate().expect_err(url);
            assert!(
                matches!(&err, LoadtestError::InvalidUrl { url: u, .. } if u == url),
                "{url}: {err:?}"
            );
            assert!(err.to_string().contains(needle), "{url}: {err}");
            let err = run(a).await.expect_err(url);
            assert!(err.to_string().contains(url), "{err}");
        }
        let none = LoadtestArgs::new(Vec::<String>::new());
        assert!(matches!(none.validate(), Err(LoadtestError::NoUrls)));
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let a = LoadtestArgs {
                rate,
                ..LoadtestArgs::new(["http://127.0.0.1/"])
            };
            assert!(
                matches!(a.validate(), Err(LoadtestError::InvalidRate(_))),
                "{rate}"
            );
        }
        let a = LoadtestArgs {
            concurrency: 0,
            ..LoadtestArgs::new(["http://127.0.0.1/"])
        };
        assert!(matches!(
            a.validate(),
            Err(LoadtestError::InvalidConcurrency(0))
        ));
        let ok = LoadtestArgs::new(["https://shop.example/products/42?x=1", "http://[::1]:8080/"]);
        assert_eq!(ok.validate().expect("valid").len(), 2);
    }

    #[test]
    fn clap_parses_flags_and_rejects_bad_values() {
        use clap::Parser as _;
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            args: LoadtestArgs,
        }
        let cli = Cli::try_parse_from([
            "loadtest",
            "http://a.example/",
            "https://b.example/p/1",
            "--rate",
            "2.5",
            "--duration",
            "0s",
            "--concurrency",
            "4",
            "--timeout",
            "750ms",
            "--quiet",
        ])
        .expect("parses");
        assert_eq!(cli.args.urls.len(), 2);
        assert_eq!(cli.args.rate, 2.5);
        assert_eq!(cli.args.duration, Duration::ZERO);
        assert_eq!(cli.args.concurrency, 4);
        assert_eq!(cli.args.timeout, Duration::from_millis(750));
        assert!(cli.args.quiet);

        let defaults = Cli::try_parse_from(["loadtest", "http://a.example/"]).expect("parses");
        assert_eq!(defaults.args.duration, Duration::from_secs(60));
        assert_eq!(defaults.args.timeout, Duration::from_secs(5));
        assert_eq!(defaults.args.concurrency, 32);

        let err = Cli::try_parse_from(["loadtest", "http://a.example/", "gopher://b/"])
            .expect_err("bad url");
        assert!(err.to_string().contains("gopher://b/"), "{err}");
        let err = Cli::try_parse_from(["loadtest", "--rate", "0", "http://a/"]).expect_err("rate");
        assert!(err.to_string().contains("--rate"), "{err}");
        assert!(
            Cli::try_parse_from(["loadtest"]).is_err(),
            "a URL is required"
        );
    }

    #[test]
    fn histogram_percentiles_within_one_percent() {
        let mut h = LatencyHistogram::new();
        for us in 1..=100_000u64 {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count(), 100_000);
        for (q, exact) in [(0.5, 50_000.0), (0.9, 90_000.0), (0.99, 99_000.0)] {
            let got = h.percentile(q).expect("non-empty").as_secs_f64() * 1e6;
            let err = (got - exact).abs() / exact;
            assert!(err <= 0.01, "q={q}: got {got}, want {exact} (err {err:.4})");
        }
        assert_eq!(h.max(), Some(Duration::from_micros(100_000)));
        assert_eq!(h.percentile(1.0), Some(Duration::from_micros(100_000)));
        assert_eq!(h.percentile(0.0), Some(Duration::from_micros(1)));
    }

    #[test]
    fn histogram_edge_cases() {
        let empty = LatencyHistogram::new();
        assert_eq!(empty.percentile(0.5), None);
        assert_eq!(empty.max(), None);

        // A single value is reported exactly at every quantile (clamped to min/max).
        let mut one = LatencyHistogram::new();
        one.record(Duration::from_micros(12_345));
        for q in [0.0, 0.5, 0.99, 1.0] {
            assert_eq!(one.percentile(q), Some(Duration::from_micros(12_345)));
        }

        // Beyond the tracked range: counted, max exact, percentile bounded by it.
        let mut long = LatencyHistogram::new();
        long.record(Duration::from_secs(120));
        long.record(Duration::from_nanos(10));
        assert_eq!(long.count(), 2);
        assert_eq!(long.max(), Some(Duration::from_secs(120)));
        // Below 1 µs only the bucket bound holds, not the 1 %.
        let p50 = long.percentile(0.5).expect("non-empty");
        assert_eq!(p50, Duration::from_nanos(10), "the minimum is exact");
        let p99 = long.percentile(0.99).expect("non-empty");
        assert!(p99 >= Duration::from_secs(59) && p99 <= Duration::from_secs(120));

        // Merge equals recording everything in one.
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        let mut both = LatencyHistogram::new();
        for us in [100u64, 200, 300, 5_000, 70_000] {
            a.record(Duration::from_micros(us));
            both.record(Duration::from_micros(us));
        }
        for us in [1u64, 900, 2_000_000] {
            b.record(Duration::from_micros(us));
            both.record(Duration::from_micros(us));
        }
        a.merge(&b);
        assert_eq!(a.count(), both.count());
        for q in [0.1, 0.5, 0.9, 1.0] {
            assert_eq!(a.percentile(q), both.percentile(q));
        }
        // Memory is fixed: under a thousand buckets whatever was recorded.
        assert!(a.counts.len() < 1_000, "{}", a.counts.len());
    }

    #[test]
    fn bucket_error_bound_holds_everywhere() {
        // Every value from 1 µs to 60 s is reported within 1 % when it is the only sample
        // in its bucket but not the min/max (which would be exact).
        let mut us = 2u64;
        while us < 60_000_000 {
            let mut h = LatencyHistogram::new();
            h.record(Duration::from_micros(1));
            h.record(Duration::from_micros(us));
            h.record(Duration::from_secs(100));
            let got = h.percentile(0.5).expect("non-empty").as_secs_f64() * 1e6;
            let err = (got - us as f64).abs() / us as f64;
            assert!(err <= 0.01, "{us}: {got}");
            us = us * 21 / 20 + 1;
        }
    }

    #[test]
    fn progress_line_shows_the_essentials() {
        let mut t = Tally {
            sent: 30,
            dropped: 2,
            ..Tally::default()
        };
        t.record(Outcome::Status(200), Duration::from_millis(12));
        t.record(Outcome::Error(ErrorKind::Timeout), Duration::from_secs(5));
        let line = progress_line(Duration::from_secs(3), &t);
        assert!(line.contains("3.0s"), "{line}");
        assert!(line.contains("sent 30"), "{line}");
        assert!(line.contains("10.0 rps"), "{line}");
        assert!(line.contains("ok 1 err 1"), "{line}");
        assert!(line.contains("dropped 2"), "{line}");
        assert!(line.contains("p50 12.0ms"), "{line}");
        assert!(line.contains("p99 12.0ms"), "{line}");
    }

    #[test]
    fn summary_serializes_to_json() {
        let mut t = Tally {
            sent: 1,
            ..Tally::default()
        };
        t.record(Outcome::Status(503), Duration::from_millis(3));
        let summary = Summary {
            target_rps: 1.0,
            elapsed: Duration::from_secs(1),
            interrupted: false,
            per_url: vec![UrlSummary {
                url: "http://x/".into(),
                stats: t.stats(Duration::from_secs(1)),
            }],
            total: t.stats(Duration::from_secs(1)),
        };
        let json = serde_json::to_value(&summary).expect("json");
        assert_eq!(json["total"]["outcomes"]["503"], 1);
        assert_eq!(json["per_url"][0]["url"], "http://x/");
        assert_eq!(json["per_url"][0]["errors"], 1);
        let text = summary.to_string();
        assert!(text.contains("503=1"), "{text}");
        // One URL: no separate total row.
        assert!(!text.contains("\ntotal"), "{text}");
    }
}
