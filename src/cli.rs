//! Command-line interface: the clap `Args` and the one `run()` that wires everything.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};

use crate::admission::policy::Policies;
use crate::admission::WebhookConfig;
use crate::metrics::Metrics;
use crate::rollout::state::Action;
use crate::server::health::Health;
use crate::server::http::{admin_router, serve_webhook, webhook_router, AppState};
use crate::server::tls::CertStore;
use crate::settings::Defaults;

#[derive(Debug, Parser)]
#[command(
    name = "canary-gate",
    version,
    about = "Every kubectl apply of a Deployment becomes a canary release on Istio, gated by PromQL"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
    #[arg(long, env = "CANARY_GATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the admission webhook and the analyzer.
    Serve(Box<ServeArgs>),
    /// Keep traffic flowing to a service during canary analysis (replaces a load-test Job).
    Loadtest(crate::loadtest::LoadtestArgs),
    /// Show every rollout: phase, weight, last gate values, age.
    Status(crate::commands::status::StatusArgs),
    /// Wait for a rollout to end. Exit code 0 Succeeded, 1 Failed, 2 Cancelled or nothing to
    /// wait for (not found, not managed, no rollout recorded), 3 timeout, 4 error.
    Wait(crate::commands::wait::WaitArgs),
    /// Promote now: skip the remaining analysis and roll the stable Deployment to the canary.
    Promote(crate::commands::act::ActArgs),
    /// Roll back now: all traffic to the stable Deployment, delete the canary.
    Abort(crate::commands::act::ActArgs),
    /// Freeze the rollout at its weight: no steps, no judgement.
    Pause(crate::commands::act::ActArgs),
    /// Continue a paused rollout with a fresh analysis window.
    Resume(crate::commands::act::ActArgs),
    /// Approve the promotion (satisfies `confirm-promotion` hooks); recorded on the
    /// Deployment with who approved, as the API server authenticated them.
    Approve(crate::commands::act::ActArgs),
    /// Generate a CA and a serving certificate for the webhook and print the caBundle.
    Certs(crate::certs::CertsArgs),
}

#[derive(Debug, Clone, ClapArgs)]
pub struct ServeArgs {
    #[command(flatten)]
    pub webhook: WebhookArgs,
    #[command(flatten)]
    pub analysis: AnalysisArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub analyzer: AnalyzerArgs,
    #[command(flatten)]
    pub dashboard: DashboardArgs,
    #[command(flatten)]
    pub notify: NotifyArgs,
}

/// Notification URLs are secrets: set them from a Secret through the environment (the chart's
/// `notifications.*.existingSecret`); their values never show in `--help`, `Debug` or logs.
#[derive(Debug, Clone, ClapArgs)]
#[command(next_help_heading = "Notifications")]
pub struct NotifyArgs {
    /// Slack incoming-webhook URL.
    #[arg(
        long,
        env = "CANARY_GATE_NOTIFY_SLACK_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub notify_slack_url: Option<crate::outbound::notify::SecretUrl>,
    /// Microsoft Teams Workflows webhook URL (Adaptive Cards).
    #[arg(
        long,
        env = "CANARY_GATE_NOTIFY_TEAMS_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub notify_teams_url: Option<crate::outbound::notify::SecretUrl>,
    /// Generic JSON webhook URL.
    #[arg(
        long,
        env = "CANARY_GATE_NOTIFY_WEBHOOK_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub notify_webhook_url: Option<crate::outbound::notify::SecretUrl>,
    /// Timeout of one notification attempt (connect, answer and body).
    #[arg(long, env = "CANARY_GATE_NOTIFY_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    pub notify_timeout: Duration,
    /// Attempts per notification and provider (retried on 5xx, 429, timeouts, connect errors).
    #[arg(long, env = "CANARY_GATE_NOTIFY_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub notify_attempts: u32,
}

impl NotifyArgs {
    /// The notifier's configuration; an invalid URL is an error naming the provider only.
    pub fn config(&self) -> Result<crate::outbound::notify::NotifyConfig, String> {
        let config = crate::outbound::notify::NotifyConfig {
            slack: self.notify_slack_url.clone(),
            teams: self.notify_teams_url.clone(),
            webhook: self.notify_webhook_url.clone(),
            timeout: self.notify_timeout,
            attempts: self.notify_attempts,
            ..Default::default()
        };
        config.validate()?;
        Ok(config)
    }
}

#[derive(Debug, Clone, ClapArgs)]
#[command(next_help_heading = "Dashboard")]
pub struct DashboardArgs {
    /// Do not serve the web dashboard (`/`, `/rollouts/...`, `/api/rollouts`) on the admin
    /// port. The admin port is unauthenticated: keep it cluster-internal.
    #[arg(long, env = "CANARY_GATE_NO_DASHBOARD", default_value_t = false)]
    pub no_dashboard: bool,
}

#[derive(Debug, Clone, ClapArgs)]
#[command(next_help_heading = "Webhook")]
pub struct WebhookArgs {
    /// HTTPS address for /mutate and /validate.
    #[arg(long, env = "CANARY_GATE_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Plain-HTTP address for /healthz, /readyz and /metrics.
    #[arg(long, env = "CANARY_GATE_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    pub admin_listen: SocketAddr,
    /// PEM certificate chain served by the webhook (reloaded when it changes).
    #[arg(long, env = "CANARY_GATE_TLS_CERT", default_value = "/tls/tls.crt")]
    pub tls_cert: PathBuf,
    /// PEM private key of the certificate.
    #[arg(long, env = "CANARY_GATE_TLS_KEY", default_value = "/tls/tls.key")]
    pub tls_key: PathBuf,
    /// How often the certificate files are checked for changes.
    #[arg(long, env = "CANARY_GATE_TLS_RELOAD_INTERVAL", value_parser = humantime::parse_duration, default_value = "10s")]
    pub tls_reload_interval: Duration,
    /// Manage every Deployment in an opted-in namespace, not only annotated ones.
    #[arg(long, env = "CANARY_GATE_MANAGE_BY_DEFAULT", default_value_t = false, action = clap::ArgAction::Set)]
    pub manage_by_default: bool,
    /// The username of canary-gate's own ServiceAccount: the only identity allowed to change
    /// managed objects while a rollout runs.
    #[arg(
        long,
        env = "CANARY_GATE_CONTROLLER_USERNAME",
        default_value = "system:serviceaccount:canary-gate:canary-gate"
    )]
    pub controller_username: String,
}

#[derive(Debug, Clone, ClapArgs)]
#[command(next_help_heading = "Analysis defaults (overridable per Deployment by annotation)")]
pub struct AnalysisArgs {
    #[arg(long, env = "CANARY_GATE_DEFAULT_INTERVAL", value_parser = humantime::parse_duration, default_value = "30s")]
    pub default_interval: Duration,
    #[arg(long, env = "CANARY_GATE_DEFAULT_STEP_WEIGHT", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub default_step_weight: u32,
    #[arg(long, env = "CANARY_GATE_DEFAULT_MAX_WEIGHT", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub default_max_weight: u32,
    /// Failed checks before a rollback.
    #[arg(long, env = "CANARY_GATE_DEFAULT_THRESHOLD", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub default_threshold: u32,
    /// Minimum request success rate, percent.
    #[arg(
        long,
        env = "CANARY_GATE_DEFAULT_MIN_SUCCESS_RATE",
        default_value_t = 99.0
    )]
    pub default_min_success_rate: f64,
    /// Maximum p99 request duration, milliseconds.
    #[arg(long, env = "CANARY_GATE_DEFAULT_MAX_P99_MS", default_value_t = 500.0)]
    pub default_max_p99_ms: f64,
    /// Consecutive intervals without usable data before a rollback.
    #[arg(
        long,
        env = "CANARY_GATE_DEFAULT_INCONCLUSIVE_LIMIT",
        default_value_t = 10
    )]
    pub default_inconclusive_limit: u32,
    /// Router for Deployments without `canary-gate.io/router`: auto, istio or gateway-api.
    #[arg(long, env = "CANARY_GATE_DEFAULT_ROUTER", default_value = "auto", value_parser = parse_router)]
    pub default_router: crate::rollout::routes::Router,
}

fn parse_router(s: &str) -> Result<crate::rollout::routes::Router, String> {
    crate::rollout::routes::Router::parse(s)
        .ok_or_else(|| format!("{s:?}: {}", crate::rollout::routes::Router::ALLOWED))
}

#[derive(Debug, Clone, ClapArgs)]
#[command(next_help_heading = "Rollout policies (validating webhook)")]
pub struct PolicyArgs {
    #[arg(long, env = "CANARY_GATE_POLICY_REQUIRE_READINESS_PROBE", default_value_t = true, action = clap::ArgAction::Set)]
    pub policy_require_readiness_probe: bool,
    #[arg(long, env = "CANARY_GATE_POLICY_FORBID_LATEST_TAG", default_value_t = true, action = clap::ArgAction::Set)]
    pub policy_forbid_latest_tag: bool,
    #[arg(long, env = "CANARY_GATE_POLICY_REQUIRE_RESOURCE_REQUESTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub policy_require_resource_requests: bool,
    /// Allow custom PromQL gates (their values are reported, so they can read any series).
    #[arg(
        long,
        env = "CANARY_GATE_POLICY_ALLOW_CUSTOM_GATES",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub policy_allow_custom_gates: bool,
    /// Allow rollout hooks (`canary-gate.io/hook.<name>`): they make canary-gate send HTTP
    /// requests inside the cluster on behalf of whoever may edit a Deployment.
    #[arg(long, env = "CANARY_GATE_POLICY_ALLOW_HOOKS", default_value_t = true, action = clap::ArgAction::Set)]
    pub policy_allow_hooks: bool,
    /// Comma-separated URL prefixes hook URLs must start with (empty: any http(s) URL).
    #[arg(
        long,
        env = "CANARY_GATE_POLICY_HOOK_URL_PREFIXES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub policy_hook_url_prefixes: Vec<String>,
}

#[derive(Debug, Clone, ClapArgs)]
#[command(next_help_heading = "Analyzer")]
pub struct AnalyzerArgs {
    /// Run only the webhook.
    #[arg(long, env = "CANARY_GATE_NO_ANALYZER", default_value_t = false)]
    pub no_analyzer: bool,
    #[arg(
        long,
        env = "CANARY_GATE_PROMETHEUS_URL",
        default_value = "http://prometheus.monitoring:9090"
    )]
    pub prometheus_url: String,
    /// Timeout of one Prometheus query.
    #[arg(long, env = "CANARY_GATE_PROMETHEUS_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    pub prometheus_timeout: Duration,
    /// How often Progressing canaries are judged between checks, for an early rollback on
    /// decisive evidence (the bake time per step stays the interval). About the Prometheus
    /// scrape interval; 0s turns it off. A look that took long spaces the next ones (five
    /// times what it took), so looks take at most a fifth of Prometheus's time.
    #[arg(long, env = "CANARY_GATE_PEEK_INTERVAL", value_parser = humantime::parse_duration, default_value = "2s")]
    pub peek_interval: Duration,
    /// How long the analyzer uses a namespace's list of Services and routes before reading it
    /// again: a change by someone else (a hand-edited route, a deleted canary Service) is
    /// seen and repaired within it; canary-gate's own writes are seen at once. Raise it with
    /// thousands of rollouts per namespace, where the lists are most of the API server's load.
    #[arg(long, env = "CANARY_GATE_LIST_MAX_AGE", value_parser = humantime::parse_duration, default_value = "1s")]
    pub list_max_age: Duration,
    /// Timeout of one Kubernetes API call (from when it is sent, not while it waits for the
    /// limits below).
    #[arg(long, env = "CANARY_GATE_KUBE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub kube_timeout: Duration,
    /// Average Kubernetes API calls per second, at most (the watch is one call).
    #[arg(long, env = "CANARY_GATE_KUBE_QPS", default_value_t = 200.0, value_parser = positive_rate)]
    pub kube_qps: f64,
    /// Kubernetes API calls that may go at once after a quiet spell.
    #[arg(long, env = "CANARY_GATE_KUBE_BURST", default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..))]
    pub kube_burst: u32,
    /// Kubernetes API calls in flight at once, at most.
    #[arg(long, env = "CANARY_GATE_KUBE_MAX_IN_FLIGHT", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub kube_max_in_flight: u64,
    /// Namespace of the leader-election Lease (the pod's own namespace in the chart).
    #[arg(
        long,
        env = "CANARY_GATE_LEASE_NAMESPACE",
        default_value = "canary-gate"
    )]
    pub lease_namespace: String,
    #[arg(
        long,
        env = "CANARY_GATE_LEASE_NAME",
        default_value = "canary-gate-analyzer"
    )]
    pub lease_name: String,
    /// This replica's identity in the Lease.
    #[arg(
        long,
        env = "CANARY_GATE_POD_NAME",
        default_value = "canary-gate-local"
    )]
    pub pod_name: String,
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a positive number of calls per second"
        )),
    }
}

impl AnalyzerArgs {
    pub fn kube_limits(&self) -> crate::cluster::limit::KubeLimits {
        crate::cluster::limit::KubeLimits {
            timeout: self.kube_timeout,
            qps: self.kube_qps,
            burst: self.kube_burst,
            max_in_flight: usize::try_from(self.kube_max_in_flight).unwrap_or(1024),
        }
    }
}

impl ServeArgs {
    pub fn webhook_config(&self) -> WebhookConfig {
        WebhookConfig {
            defaults: self.analysis.defaults(),
            manage_by_default: self.webhook.manage_by_default,
            controller_username: self.webhook.controller_username.clone(),
            policies: Policies {
                require_readiness_probe: self.policy.policy_require_readiness_probe,
                forbid_latest_tag: self.policy.policy_forbid_latest_tag,
                require_resource_requests: self.policy.policy_require_resource_requests,
                allow_custom_gates: self.policy.policy_allow_custom_gates,
                allow_hooks: self.policy.policy_allow_hooks,
                hook_url_prefixes: self
                    .policy
                    .policy_hook_url_prefixes
                    .iter()
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect(),
            },
        }
    }
}

impl AnalysisArgs {
    pub fn defaults(&self) -> Defaults {
        Defaults {
            interval: self.default_interval,
            step_weight: self.default_step_weight,
            max_weight: self.default_max_weight,
            threshold: self.default_threshold,
            min_success_rate: self.default_min_success_rate,
            max_p99_ms: self.default_max_p99_ms,
            inconclusive_limit: self.default_inconclusive_limit,
            router: self.default_router,
            ..Defaults::default()
        }
    }
}

/// Exit code of any command that failed with an error (cluster unreachable, bad argument):
/// distinct from the outcomes `wait` and the actions report.
pub const EXIT_ERROR: u8 = 4;

/// Parses the command line. Run as `kubectl-canary_gate` (a kubectl plugin), usage and help
/// say `kubectl canary-gate`. Usage errors exit with `EXIT_ERROR`, not clap's 2, which
/// `wait` reserves for "not released".
pub fn parse() -> Result<Args, u8> {
    use clap::CommandFactory as _;
    use clap::FromArgMatches as _;
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let plugin = std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|f| f.to_string_lossy().starts_with("kubectl-"));
    let mut command = Args::command();
    if plugin {
        command = command.bin_name("kubectl canary-gate");
    }
    let parsed = command
        .try_get_matches()
        .and_then(|mut m| Args::from_arg_matches_mut(&mut m));
    parsed.map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            EXIT_ERROR
        } else {
            0
        }
    })
}

/// Entry point from `main`: the process exit code.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    // Held to the end: dropping it flushes the log lines still queued.
    let _log_writer = init_tracing(args.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    match args.command {
        Command::Loadtest(args) if args.serve.is_some() => {
            crate::loadtest::hook::serve(args).await.map(|()| 0)
        }
        Command::Loadtest(args) => {
            let summary = crate::loadtest::run(args).await?;
            use std::io::Write as _;
            write!(std::io::stdout().lock(), "{summary}")?;
            Ok(0)
        }
        Command::Status(args) => crate::commands::status::run(args).await.map(|()| 0),
        Command::Wait(args) => crate::commands::wait::run(args).await,
        Command::Promote(args) => crate::commands::act::run(Action::Promote, args).await,
        Command::Abort(args) => crate::commands::act::run(Action::Abort, args).await,
        Command::Pause(args) => crate::commands::act::run(Action::Pause, args).await,
        Command::Resume(args) => crate::commands::act::run(Action::Resume, args).await,
        Command::Approve(args) => crate::commands::act::run(Action::Approve, args).await,
        Command::Certs(args) => crate::certs::run(args).map(|()| 0),
        Command::Serve(serve) => {
            let running = start(*serve).await?;
            shutdown_signal().await;
            tracing::info!("shutting down");
            running.stop().await;
            tracing::info!("stopped");
            Ok(0)
        }
    }
}

fn init_tracing(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    // Lines are written by a thread of their own, in batches, so a request never waits on a
    // write(2) to stderr or on a container runtime that drains the pipe slowly: about 10 µs of
    // CPU per logged admission (README, Performance). Not lossy: when 8,192 lines wait
    // (the default 128k would hold 4 MiB of slots from the start), logging blocks as a direct
    // write would. The guard flushes them when `run` returns.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(8192)
        .lossy(false)
        .thread_name("canary-gate-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    // Colour codes only for a person at a terminal, never into log files or collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = init_logs(format, ansi, writer);
    guard
}

/// Installs the process's log subscriber writing to `writer`: the one formatting of every
/// log line (the tests that check JSON lines install this same one).
pub fn init_logs<W>(
    format: LogFormat,
    ansi: bool,
    writer: W,
) -> Result<(), tracing_subscriber::util::TryInitError>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder.json().finish().try_init(),
        LogFormat::Text => builder.finish().try_init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// A started `serve`: its bound addresses and the means to stop it.
pub struct Running {
    pub webhook_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    handle: axum_server::Handle<SocketAddr>,
    webhook_task: tokio::task::JoinHandle<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    admin_shutdown: tokio::sync::watch::Sender<bool>,
}

impl Running {
    /// Stops accepting, lets in-flight admission requests finish (up to 5 s), then stops.
    pub async fn stop(self) {
        self.handle.graceful_shutdown(Some(Duration::from_secs(5)));
        let _ = self.admin_shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(6), self.webhook_task).await;
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Starts the webhook, the admin server and (unless disabled) the analyzer.
pub async fn start(args: ServeArgs) -> anyhow::Result<Running> {
    // One crypto provider for every TLS user in the process (webhook, kube client, reqwest).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A bad notification URL is a startup error naming the provider (never the URL).
    args.notify.config().map_err(anyhow::Error::msg)?;
    let metrics = Metrics::new();
    let health = Arc::new(Health::default());

    // Certificates are checked before anything binds: a bad pair is a startup error that
    // names the file, not a listener that fails every handshake.
    let certs = CertStore::load(&args.webhook.tls_cert, &args.webhook.tls_key)
        .context("cannot start the webhook without a valid serving certificate (see certs/README.md or `canary-gate certs`)")?;
    health.set_tls(true);

    let dashboard = (!args.dashboard.no_dashboard)
        .then(|| Arc::new(crate::dashboard::Dashboard::new(args.analysis.defaults())));
    let state = AppState {
        config: Arc::new(args.webhook_config()),
        metrics: metrics.clone(),
        health: health.clone(),
        dashboard: dashboard.clone(),
    };
    let webhook_listener = std::net::TcpListener::bind(args.webhook.listen)
        .with_context(|| format!("cannot listen on {} (--listen)", args.webhook.listen))?;
    let webhook_addr = webhook_listener.local_addr()?;
    let admin_listener = tokio::net::TcpListener::bind(args.webhook.admin_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (--admin-listen)",
                args.webhook.admin_listen
            )
        })?;
    let admin_addr = admin_listener.local_addr()?;

    let mut tasks = Vec::new();
    let handle = axum_server::Handle::new();
    let tls_config = certs.server_config();
    let router = webhook_router(state.clone());
    let serve_handle = handle.clone();
    let webhook_task = tokio::spawn(async move {
        if let Err(error) = serve_webhook(webhook_listener, tls_config, router, serve_handle).await
        {
            tracing::error!(%error, "webhook server stopped");
        }
    });
    let (admin_shutdown, mut admin_stop) = tokio::sync::watch::channel(false);
    let admin = admin_router(state.clone());
    tasks.push(tokio::spawn(async move {
        let stop = async move {
            let _ = admin_stop.wait_for(|s| *s).await;
        };
        if let Err(error) = axum::serve(admin_listener, admin)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(%error, "admin server stopped");
        }
    }));
    tasks.push(tokio::spawn(
        certs.watch(args.webhook.tls_reload_interval, metrics.clone()),
    ));

    if args.analyzer.no_analyzer {
        health.set_analyzer("disabled (--no-analyzer)");
        if let Some(d) = &dashboard {
            d.set_missing("the analyzer is disabled (--no-analyzer): no cluster to read");
        }
    } else {
        tasks.push(tokio::spawn(crate::analyzer::run::start_in_cluster(
            args.clone(),
            metrics.clone(),
            health.clone(),
            dashboard.clone(),
        )));
    }
    tracing::info!(%webhook_addr, %admin_addr, analyzer = !args.analyzer.no_analyzer, dashboard = dashboard.is_some(), "canary-gate serving");
    Ok(Running {
        webhook_addr,
        admin_addr,
        metrics,
        health,
        handle,
        webhook_task,
        tasks,
        admin_shutdown,
    })
}
