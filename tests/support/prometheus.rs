//! A private Prometheus server per test: the real binary (Debian package `prometheus`) on a free
//! loopback port, scraping the given targets, with its TSDB in a tempdir. A system Prometheus on
//! :9090 may exist on the machine; it is never used, so tests cannot see each other's data.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use tokio::process::{Child, Command};

/// The analyzer bench's exporter serves ~500,000 series for 10,000 rollouts: Prometheus's
/// first scrapes of it can run past their 2 s timeout for a while on a busy 2-core box.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_EVERY: Duration = Duration::from_millis(50);
/// A port picked by binding :0 can be taken by someone else before Prometheus binds it; a few
/// fresh attempts make that race irrelevant.
const PORT_ATTEMPTS: usize = 3;
const LOG_FILE: &str = "prometheus.log";

pub struct TestPrometheus {
    // Drop kills and reaps the child before the fields drop, so the TempDir is removed only
    // once nothing writes into it any more.
    child: Child,
    port: u16,
    http: reqwest::Client,
    dir: tempfile::TempDir,
    startup: Duration,
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl TestPrometheus {
    /// Starts Prometheus and returns once it is ready and has scraped every target
    /// successfully (`up == 1`), so the first query already sees data.
    ///
    /// Expect about 5.2 s: Prometheus 2.42 is ready in ~60 ms, but target discovery hands
    /// targets to the scrape manager on a fixed 5 s tick, and 2.42 has no flag to shorten it.
    /// Start it early and let other setup, e.g. the traffic simulator, run meanwhile.
    ///
    /// # Panics
    /// Inside reqwest ("No provider set") when reqwest is built with a `rustls-*-no-provider`
    /// feature, as in canary-gate, and no process-wide rustls provider is installed yet: call
    /// `rustls::crypto::ring::default_provider().install_default()` first (ignore its `Err`,
    /// which only means one is installed already).
    pub async fn start(
        targets: &[SocketAddr],
        scrape_interval: Duration,
    ) -> anyhow::Result<TestPrometheus> {
        let started = Instant::now();
        let binary = find_binary()?;
        let config = config_yaml(targets, scrape_interval)?;
        let http = reqwest::Client::builder()
            // An http_proxy in the environment must not capture loopback traffic.
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client for Prometheus")?;

        let mut attempt = 1;
        loop {
            let dir = tempfile::Builder::new()
                .prefix("canary-gate-prometheus-")
                .tempdir()
                .context("creating a tempdir for Prometheus")?;
            let config_path = dir.path().join("prometheus.yml");
            tokio::fs::write(&config_path, &config)
                .await
                .with_context(|| format!("writing {}", config_path.display()))?;
            let port = free_port()?;
            let child = spawn(&binary, &config_path, dir.path(), port)?;
            let mut prometheus = TestPrometheus {
                child,
                port,
                http: http.clone(),
                dir,
                startup: Duration::ZERO,
            };
            match prometheus.wait_ready(targets, started).await {
                Ok(()) => {
                    prometheus.startup = started.elapsed();
                    return Ok(prometheus);
                }
                Err(err) => {
                    let log = prometheus.log_tail();
                    if attempt < PORT_ATTEMPTS && log.contains("address already in use") {
                        attempt += 1;
                        continue;
                    }
                    let targets = prometheus.target_health().await;
                    bail!(
                        "Prometheus ({}) on 127.0.0.1:{port} did not become ready: {err:#}\n\
                         scrape targets: {targets}\nconfig:\n{config}stderr tail:\n{}",
                        binary.display(),
                        if log.is_empty() { "(empty)" } else { &log }
                    );
                }
            }
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How long `start` took until Prometheus was ready with all targets up.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// Where the TSDB, config and log live (kept until drop; useful when a test fails).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Instant query at "now". Returns the API's `data` object
    /// (`{"resultType": ..., "result": ...}`); API errors (bad PromQL, ...) become `Err`.
    pub async fn query(&self, promql: &str) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}/api/v1/query", self.url());
        let response = self
            .http
            .get(&url)
            .query(&[("query", promql)])
            .send()
            .await
            .with_context(|| format!("GET {url} query={promql}"))?;
        let status = response.status();
        let body: serde_json::Value = response
            .json()
            .await
            .with_context(|| format!("decoding the answer to {promql} (HTTP {status})"))?;
        if body["status"] != "success" {
            bail!(
                "Prometheus rejected {promql} (HTTP {status}): {}: {}",
                body["errorType"].as_str().unwrap_or("?"),
                body["error"].as_str().unwrap_or("?")
            );
        }
        Ok(body["data"].clone())
    }

    /// Instant query that must return a vector; values are parsed (NaN and ±Inf included,
    /// as Prometheus encodes them as strings).
    pub async fn query_vector(&self, promql: &str) -> anyhow::Result<Vec<Sample>> {
        let data = self.query(promql).await?;
        if data["resultType"] != "vector" {
            bail!("{promql} returned {}, not a vector", data["resultType"]);
        }
        let result = data["result"]
            .as_array()
            .ok_or_else(|| anyhow!("{promql}: result is not an array: {data}"))?;
        result
            .iter()
            .map(|item| {
                let labels = item["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = item["value"][1]
                    .as_str()
                    .ok_or_else(|| anyhow!("{promql}: sample without value: {item}"))?
                    .parse::<f64>()
                    .with_context(|| format!("{promql}: unparsable value in {item}"))?;
                Ok(Sample { labels, value })
            })
            .collect()
    }

    /// Instant query keyed by one label, for results like `sum by (destination_workload)`.
    pub async fn query_by(
        &self,
        promql: &str,
        label: &str,
    ) -> anyhow::Result<BTreeMap<String, f64>> {
        Ok(self
            .query_vector(promql)
            .await?
            .into_iter()
            .map(|s| (s.labels.get(label).cloned().unwrap_or_default(), s.value))
            .collect())
    }

    /// Instant query expected to yield at most one sample; `None` when the vector is empty,
    /// which is how PromQL says "no data" (not zero).
    pub async fn query_scalar(&self, promql: &str) -> anyhow::Result<Option<f64>> {
        let samples = self.query_vector(promql).await?;
        match samples.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.value)),
            many => bail!("{promql} returned {} samples, expected one", many.len()),
        }
    }

    async fn wait_ready(&mut self, targets: &[SocketAddr], started: Instant) -> anyhow::Result<()> {
        let ready_url = format!("{}/-/ready", self.url());
        let mut ready = false;
        let mut last = String::from("no answer yet");
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .context("polling the Prometheus process")?
            {
                bail!("Prometheus exited early with {status}");
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!("timed out after {READY_TIMEOUT:?}; last state: {last}");
            }
            if !ready {
                match self.http.get(&ready_url).send().await {
                    Ok(r) if r.status().is_success() => ready = true,
                    Ok(r) => last = format!("/-/ready answered {}", r.status()),
                    Err(e) => last = format!("/-/ready: {e}"),
                }
            }
            if ready {
                match self.targets_up(targets).await {
                    Ok(None) => return Ok(()),
                    Ok(Some(waiting)) => last = waiting,
                    Err(e) => last = format!("{e:#}"),
                }
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// `None` when every target has been scraped successfully, else what is still missing.
    async fn targets_up(&self, targets: &[SocketAddr]) -> anyhow::Result<Option<String>> {
        let up = self.query_by("up", "instance").await?;
        let missing: Vec<String> = targets
            .iter()
            .map(|t| t.to_string())
            .filter(|t| up.get(t) != Some(&1.0))
            .collect();
        Ok(if missing.is_empty() {
            None
        } else {
            Some(format!("targets not up yet: {missing:?} (up = {up:?})"))
        })
    }

    /// The scrape errors Prometheus saw (e.g. "connection refused"), for failure messages.
    async fn target_health(&self) -> String {
        let url = format!("{}/api/v1/targets", self.url());
        let body: serde_json::Value = match self.http.get(&url).send().await {
            Ok(response) => match response.json().await {
                Ok(body) => body,
                Err(e) => return format!("unreadable answer from {url}: {e}"),
            },
            Err(e) => return format!("GET {url}: {e}"),
        };
        let targets = body["data"]["activeTargets"]
            .as_array()
            .map(|targets| {
                targets
                    .iter()
                    .map(|t| format!("{} {} {}", t["scrapeUrl"], t["health"], t["lastError"]))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        if targets.is_empty() {
            // Prometheus 2.x hands new targets to the scrape manager only every 5 s.
            "none active yet".into()
        } else {
            targets
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(LOG_FILE)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for TestPrometheus {
    fn drop(&mut self) {
        // kill_on_drop only sends SIGKILL; wait briefly (this is test code, blocking is fine)
        // so the TSDB files are no longer written when TempDir removes them.
        let _ = self.child.start_kill();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

fn find_binary() -> anyhow::Result<PathBuf> {
    const HOW: &str =
        "install Debian package prometheus (apt-get install -y prometheus) or set PROMETHEUS_BIN";
    if let Some(path) = std::env::var_os("PROMETHEUS_BIN") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!("PROMETHEUS_BIN={} is not a file; {HOW}", path.display());
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| anyhow!("no prometheus binary on PATH; {HOW}"))
}

fn config_yaml(targets: &[SocketAddr], scrape_interval: Duration) -> anyhow::Result<String> {
    let ms = scrape_interval.as_millis();
    if ms == 0 {
        bail!("scrape interval must be at least 1ms, got {scrape_interval:?}");
    }
    let targets = targets
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    // Durations are written in ms because Prometheus' duration syntax has no fractions
    // ("0.2s" is rejected). scrape_timeout must not exceed the interval, or the config is
    // refused; the default would be 10s.
    Ok(format!(
        "global:\n  scrape_interval: {ms}ms\n  scrape_timeout: {ms}ms\n  evaluation_interval: {ms}ms\n\
         scrape_configs:\n  - job_name: istio-mesh\n    static_configs:\n      - targets: [{targets}]\n"
    ))
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("finding a free loopback port")?;
    Ok(listener
        .local_addr()
        .context("reading the free port's address")?
        .port())
}

fn spawn(binary: &Path, config: &Path, dir: &Path, port: u16) -> anyhow::Result<Child> {
    let log_path = dir.join(LOG_FILE);
    // A file rather than a pipe: nobody has to drain it for Prometheus to keep running, and it
    // survives for the error message and for post-mortems of a failed test.
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .current_dir(dir)
        // A heap profiler's preload on the bench is for the analyzer, not for Prometheus.
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", binary.display()))
}
