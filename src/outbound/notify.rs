//! Notifications to Slack, Microsoft Teams and a generic JSON webhook.
//!
//! [`Notifier::notify`] never blocks and never awaits: it puts the notification on a bounded
//! queue (when full, the notification is dropped and counted) and one worker task delivers it
//! with the [`Outbound`] client: a timeout per call and a bounded retry with backoff on 5xx,
//! 429, timeouts and connection errors (never on other 4xx). Counted in
//! `canary_gate_notifications_total{provider, outcome="sent"|"failed"|"dropped"}`.
//!
//! Which Event reasons notify is decided by [`wanted`]; which providers a Deployment uses by
//! its `canary-gate.io/notify` annotation ([`parse_channels`]). URLs are secrets: they are never
//! logged and [`NotifyConfig`]'s `Debug` hides them.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

pub use super::payload;
use super::{check_url, Outbound, OutboundError};
use crate::metrics::Metrics;

/// Default capacity of the queue between the analyzer and the delivery worker.
pub const DEFAULT_QUEUE: usize = 1024;
/// Longest wait between two delivery attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The notification providers a Deployment wants (`canary-gate.io/notify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channels {
    pub slack: bool,
    pub teams: bool,
    pub webhook: bool,
}

impl Channels {
    pub const ALL: Channels = Channels {
        slack: true,
        teams: true,
        webhook: true,
    };
    pub const NONE: Channels = Channels {
        slack: false,
        teams: false,
        webhook: false,
    };

    pub fn is_empty(&self) -> bool {
        !(self.slack || self.teams || self.webhook)
    }

    pub fn and(self, other: Channels) -> Channels {
        Channels {
            slack: self.slack && other.slack,
            teams: self.teams && other.teams,
            webhook: self.webhook && other.webhook,
        }
    }

    fn providers(self) -> impl Iterator<Item = Provider> {
        [
            (self.slack, Provider::Slack),
            (self.teams, Provider::Teams),
            (self.webhook, Provider::Webhook),
        ]
        .into_iter()
        .filter_map(|(on, p)| on.then_some(p))
    }
}

impl Default for Channels {
    fn default() -> Self {
        Channels::ALL
    }
}

/// Parses the `canary-gate.io/notify` annotation: absent means every configured provider,
/// `off` none, otherwise a comma list of `slack`, `teams`, `webhook`. The error names the value
/// and what is allowed.
pub fn parse_channels(value: Option<&str>) -> Result<Channels, String> {
    let Some(raw) = value else {
        return Ok(Channels::ALL);
    };
    let allowed = "allowed: `off` or a comma-separated list of slack, teams, webhook";
    let trimmed = raw.trim();
    if trimmed == "off" {
        return Ok(Channels::NONE);
    }
    if trimmed.is_empty() {
        return Err(format!("{:?} is empty; {allowed}", raw));
    }
    let mut channels = Channels::NONE;
    for item in trimmed.split(',') {
        match item.trim() {
            "slack" => channels.slack = true,
            "teams" => channels.teams = true,
            "webhook" => channels.webhook = true,
            "off" => {
                return Err(format!(
                    "{raw:?}: `off` cannot be combined with providers; {allowed}"
                ))
            }
            "" => return Err(format!("{raw:?} has an empty entry; {allowed}")),
            other => return Err(format!("{raw:?}: unknown provider {other:?}; {allowed}")),
        }
    }
    Ok(channels)
}

/// Does an Event with this reason send a notification? Started, promoted (announced once, on
/// `Promoting`, which also carries a promote by hand), rolled back (also an abort by hand),
/// manual actions, waiting for a confirmation or an approval, failed checks (a failing
/// `pre-rollout` or `rollout` hook is one), a cancelled rollout and a stuck one. Not every step.
pub fn wanted(reason: &str) -> bool {
    matches!(
        reason,
        "CanaryStarted"
            | "Promoting"
            | "RolledBack"
            | "Cancelled"
            | "Paused"
            | "Resumed"
            | "ActionIgnored"
            | "Approved"
            | "WaitingForConfirmation"
            | "WaitingForApproval"
            | "CheckFailed"
            | "HookFailed"
            | "PromotionIncomplete"
            | "CheckInconclusive"
    )
}

/// One notification: what a Kubernetes Event said, for one Deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub namespace: String,
    pub deployment: String,
    /// The Kubernetes Event reason (`CanaryStarted`, `RolledBack`, ...).
    pub reason: String,
    /// The same text as the Event.
    pub message: String,
    pub phase: String,
    pub weight: u32,
    /// From the Deployment's `canary-gate.io/notify` annotation ([`parse_channels`]).
    pub channels: Channels,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    Slack,
    Teams,
    Webhook,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::Slack => "slack",
            Provider::Teams => "teams",
            Provider::Webhook => "webhook",
        }
    }
}

/// A URL that must never be shown: `Debug` prints `<redacted>`. Parsing never fails (so that
/// a parse error cannot echo the value); [`NotifyConfig::validate`] checks it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretUrl(<redacted>)")
    }
}

impl std::str::FromStr for SecretUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SecretUrl(s.to_string()))
    }
}

/// Where and how to deliver. `Debug` never shows the URLs.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub slack: Option<SecretUrl>,
    pub teams: Option<SecretUrl>,
    pub webhook: Option<SecretUrl>,
    /// Timeout of one attempt (connect + response + body).
    pub timeout: Duration,
    /// Attempts per notification and provider, at least 1.
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each further one (at most 30 s).
    pub backoff: Duration,
    /// Queue capacity; notifications beyond it are dropped and counted.
    pub queue: usize,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            slack: None,
            teams: None,
            webhook: None,
            timeout: Duration::from_secs(5),
            attempts: 3,
            backoff: Duration::from_secs(1),
            queue: DEFAULT_QUEUE,
        }
    }
}

impl NotifyConfig {
    /// The providers with a URL.
    pub fn configured(&self) -> Channels {
        Channels {
            slack: self.slack.is_some(),
            teams: self.teams.is_some(),
            webhook: self.webhook.is_some(),
        }
    }

    /// Checks each URL is absolute http(s). The error names the provider, never the URL.
    pub fn validate(&self) -> Result<(), String> {
        for (name, url) in [
            ("slack", &self.slack),
            ("teams", &self.teams),
            ("webhook", &self.webhook),
        ] {
            if let Some(url) = url {
                check_url(url.expose()).map_err(|e| format!("the {name} notification URL: {e}"))?;
            }
        }
        Ok(())
    }

    fn url(&self, p: Provider) -> Option<&str> {
        match p {
            Provider::Slack => self.slack.as_ref(),
            Provider::Teams => self.teams.as_ref(),
            Provider::Webhook => self.webhook.as_ref(),
        }
        .map(SecretUrl::expose)
    }
}

struct Queued {
    n: Notification,
    /// Providers to deliver to: wanted by the Deployment and configured.
    to: Channels,
    timestamp: String,
}

struct Inner {
    tx: mpsc::Sender<Queued>,
    configured: Channels,
    metrics: Arc<Metrics>,
    /// Set while notifications are being dropped, so a full queue logs once, not per drop.
    dropping: AtomicBool,
}

/// Sends notifications without ever blocking the caller. Cheap to clone; a Notifier with no
/// provider configured (or [`Notifier::disabled`]) does nothing.
#[derive(Clone, Default)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("configured", &self.inner.as_ref().map(|i| i.configured))
            .finish()
    }
}

impl Notifier {
    /// A Notifier that sends nothing.
    pub fn disabled() -> Self {
        Notifier { inner: None }
    }

    /// The Notifier and its delivery worker: spawn the future (`tokio::spawn(worker)`). It ends
    /// when every clone of the Notifier is dropped and the queue is drained. With no provider
    /// configured the Notifier is a no-op and the worker returns at once.
    pub fn new(
        outbound: Outbound,
        config: NotifyConfig,
    ) -> (Notifier, impl Future<Output = ()> + Send + 'static) {
        let configured = config.configured();
        let (notifier, rx) = if configured.is_empty() {
            (Notifier::disabled(), None)
        } else {
            let (tx, rx) = mpsc::channel(config.queue.max(1));
            let inner = Inner {
                tx,
                configured,
                metrics: outbound.metrics().clone(),
                dropping: AtomicBool::new(false),
            };
            (
                Notifier {
                    inner: Some(Arc::new(inner)),
                },
                Some(rx),
            )
        };
        let worker = async move {
            if let Some(rx) = rx {
                run_worker(rx, outbound, Arc::new(config)).await;
            }
        };
        (notifier, worker)
    }

    /// `new` and spawn the worker on the current tokio runtime.
    pub fn spawn(outbound: Outbound, config: NotifyConfig) -> Notifier {
        let (notifier, worker) = Notifier::new(outbound, config);
        tokio::spawn(worker);
        notifier
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues `n` if its reason is [`wanted`] and one of its channels is configured. Never
    /// blocks, never awaits: when the queue is full the notification is dropped and counted.
    pub fn notify(&self, n: Notification) {
        let Some(inner) = &self.inner else {
            return;
        };
        if !wanted(&n.reason) {
            return;
        }
        let to = n.channels.and(inner.configured);
        if to.is_empty() {
            return;
        }
        let queued = Queued {
            n,
            to,
            timestamp: jiff::Timestamp::now().to_string(),
        };
        match inner.tx.try_send(queued) {
            Ok(()) => {
                if inner.dropping.swap(false, Ordering::Relaxed) {
                    tracing::info!("notification queue accepts again");
                }
            }
            Err(e) => {
                let (queued, full) = match e {
                    mpsc::error::TrySendError::Full(q) => (q, true),
                    mpsc::error::TrySendError::Closed(q) => (q, false),
                };
                for p in queued.to.providers() {
                    inner.metrics.count_notification(p.name(), "dropped");
                }
                if !inner.dropping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        namespace = %queued.n.namespace,
                        deployment = %queued.n.deployment,
                        reason = %queued.n.reason,
                        queue_full = full,
                        "notification dropped: delivery queue full or stopped"
                    );
                }
            }
        }
    }
}

async fn run_worker(mut rx: mpsc::Receiver<Queued>, outbound: Outbound, config: Arc<NotifyConfig>) {
    while let Some(q) = rx.recv().await {
        // The providers of one notification are delivered concurrently: a hanging Teams
        // endpoint does not delay the Slack message.
        let deliveries = q.to.providers().filter_map(|p| {
            let url = config.url(p)?;
            let body = match p {
                Provider::Slack => payload::slack(&q.n),
                Provider::Teams => payload::teams(&q.n),
                Provider::Webhook => payload::webhook(&q.n, &q.timestamp),
            };
            Some(deliver(&outbound, &config, p, url, body, &q.n))
        });
        futures::future::join_all(deliveries).await;
    }
}

/// What one attempt's result means for the next.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Sent,
    Retry,
    Fail,
}

fn judge(result: &Result<u16, OutboundError>) -> Attempt {
    match result {
        Ok(s) if (200..300).contains(s) => Attempt::Sent,
        Ok(429) => Attempt::Retry,
        Ok(s) if *s >= 500 => Attempt::Retry,
        Ok(_) => Attempt::Fail,
        Err(e) if e.is_transient() => Attempt::Retry,
        Err(_) => Attempt::Fail,
    }
}

/// The wait before attempt `attempt + 1` (attempt counts from 1).
fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(MAX_BACKOFF)
}

async fn deliver(
    outbound: &Outbound,
    config: &NotifyConfig,
    p: Provider,
    url: &str,
    body: serde_json::Value,
    n: &Notification,
) {
    let attempts = config.attempts.max(1);
    let metrics = outbound.metrics();
    for attempt in 1..=attempts {
        let result = outbound
            .post_json(p.name(), url, &body, config.timeout)
            .await;
        let verdict = judge(&result);
        match verdict {
            Attempt::Sent => {
                metrics.count_notification(p.name(), "sent");
                tracing::debug!(provider = p.name(), namespace = %n.namespace, deployment = %n.deployment, reason = %n.reason, attempt, "notification sent");
                return;
            }
            Attempt::Retry if attempt < attempts => {
                tokio::time::sleep(backoff(config.backoff, attempt)).await;
            }
            Attempt::Retry | Attempt::Fail => {
                metrics.count_notification(p.name(), "failed");
                let (status, error) = match &result {
                    Ok(s) => (Some(*s), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                tracing::warn!(
                    provider = p.name(),
                    namespace = %n.namespace,
                    deployment = %n.deployment,
                    reason = %n.reason,
                    attempt,
                    status,
                    error,
                    "notification not delivered"
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_from_the_annotation() {
        assert_eq!(parse_channels(None), Ok(Channels::ALL));
        assert_eq!(parse_channels(Some("off")), Ok(Channels::NONE));
        assert_eq!(parse_channels(Some(" off ")), Ok(Channels::NONE));
        assert_eq!(
            parse_channels(Some("slack")),
            Ok(Channels {
                slack: true,
                teams: false,
                webhook: false
            })
        );
        assert_eq!(
            parse_channels(Some("teams, webhook")),
            Ok(Channels {
                slack: false,
                teams: true,
                webhook: true
            })
        );
        assert_eq!(
            parse_channels(Some("slack,teams,webhook,slack")),
            Ok(Channels::ALL)
        );
    }

    #[test]
    fn bad_channels_name_the_value_and_what_is_allowed() {
        for bad in [
            "",
            "email",
            "slack,,teams",
            "off,slack",
            "Slack",
            "slack;teams",
        ] {
            let e = parse_channels(Some(bad)).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{e}");
            assert!(
                e.contains("off") && e.contains("slack, teams, webhook"),
                "{e}"
            );
        }
        assert!(parse_channels(Some("email"))
            .unwrap_err()
            .contains("\"email\""));
    }

    #[test]
    fn which_reasons_notify() {
        for yes in [
            "CanaryStarted",
            "Promoting",
            "RolledBack",
            "Paused",
            "Resumed",
            "ActionIgnored",
            "WaitingForApproval",
            "HookFailed",
            "PromotionIncomplete",
            "CheckInconclusive",
        ] {
            assert!(wanted(yes), "{yes}");
        }
        // A promotion is announced once (on Promoting), and steps are not announced.
        for no in [
            "Succeeded",
            "WeightIncreased",
            "CheckPassed",
            "",
            "rolledback",
        ] {
            assert!(!wanted(no), "{no}");
        }
    }

    #[test]
    fn retry_on_5xx_429_timeout_connect_only() {
        assert_eq!(judge(&Ok(200)), Attempt::Sent);
        assert_eq!(judge(&Ok(202)), Attempt::Sent);
        assert_eq!(judge(&Ok(500)), Attempt::Retry);
        assert_eq!(judge(&Ok(503)), Attempt::Retry);
        assert_eq!(judge(&Ok(429)), Attempt::Retry);
        assert_eq!(judge(&Ok(400)), Attempt::Fail);
        assert_eq!(judge(&Ok(404)), Attempt::Fail);
        assert_eq!(judge(&Ok(302)), Attempt::Fail);
        assert_eq!(
            judge(&Err(OutboundError::Timeout(Duration::from_secs(1)))),
            Attempt::Retry
        );
        assert_eq!(
            judge(&Err(OutboundError::Connect("refused".into()))),
            Attempt::Retry
        );
        assert_eq!(
            judge(&Err(OutboundError::InvalidUrl("x".into()))),
            Attempt::Fail
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let b = Duration::from_millis(100);
        assert_eq!(backoff(b, 1), Duration::from_millis(100));
        assert_eq!(backoff(b, 2), Duration::from_millis(200));
        assert_eq!(backoff(b, 3), Duration::from_millis(400));
        assert_eq!(backoff(b, 40), MAX_BACKOFF);
    }

    #[test]
    fn config_debug_hides_urls_and_validation_names_the_provider() {
        let c = NotifyConfig {
            slack: Some(SecretUrl::new(
                "https://hooks.slack.com/services/T/B/SECRET",
            )),
            webhook: Some(SecretUrl::new("not a url SECRET")),
            ..NotifyConfig::default()
        };
        assert!(!format!("{c:?}").contains("SECRET"));
        let e = c.validate().unwrap_err();
        assert!(e.contains("webhook") && !e.contains("SECRET"), "{e}");
        assert_eq!(
            c.configured(),
            Channels {
                slack: true,
                teams: false,
                webhook: true
            }
        );
    }
}
