//! All outbound HTTP of canary-gate (rollout hooks and notifications) goes through this one
//! module and one client. House rule: one client, a timeout on every call, outcomes counted.
//!
//! The client follows no redirects and ignores proxy settings from the environment. URLs are
//! never logged and never put into errors: notification URLs are secrets and hook URLs may carry
//! tokens.

pub mod notify;
pub mod payload;

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;

/// Most of a response body read (and thrown away) before the call counts as done.
const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum OutboundError {
    /// The URL does not parse or is not absolute http(s). Holds the reason, never the URL.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Other(String),
}

impl OutboundError {
    /// Worth another try: a timeout or a connection that failed (5xx is decided by the caller).
    pub fn is_transient(&self) -> bool {
        matches!(self, OutboundError::Timeout(_) | OutboundError::Connect(_))
    }
}

/// The one outbound HTTP client. Cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    http: reqwest::Client,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound").finish_non_exhaustive()
    }
}

impl Outbound {
    pub fn new(metrics: Arc<Metrics>) -> Result<Self, OutboundError> {
        // reqwest panics building a TLS client when no rustls provider is installed; the
        // binary installs ring at startup, this covers library callers (tests, examples).
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("canary-gate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OutboundError::Other(e.without_url().to_string()))?;
        Ok(Outbound { http, metrics })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// POSTs `body` as JSON with this call's own timeout (connect + response + body); returns
    /// the HTTP status, whatever it is (the caller decides what a status means).
    ///
    /// Counts `canary_gate_outbound_calls_total{kind, outcome}`: `success` for a 2xx answer,
    /// `timeout` when `timeout` passed, `failure` for anything else (other statuses, refused
    /// connections, invalid URLs).
    pub async fn post_json(
        &self,
        kind: &'static str,
        url: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<u16, OutboundError> {
        let result = self.post_inner(url, body, timeout).await;
        let outcome = match &result {
            Ok(status) if (200..300).contains(status) => "success",
            Err(OutboundError::Timeout(_)) => "timeout",
            _ => "failure",
        };
        self.metrics.count_outbound(kind, outcome);
        if let Err(e) = &result {
            tracing::debug!(kind, error = %e, "outbound call failed");
        }
        result
    }

    async fn post_inner(
        &self,
        url: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<u16, OutboundError> {
        let url = check_url(url)?;
        let call = async {
            let mut response = self
                .http
                .post(url)
                .timeout(timeout)
                .json(body)
                .send()
                .await
                .map_err(|e| classify(e, timeout))?;
            let status = response.status().as_u16();
            let mut read = 0usize;
            while read < MAX_BODY {
                match response.chunk().await.map_err(|e| classify(e, timeout))? {
                    Some(chunk) => read += chunk.len(),
                    None => break,
                }
            }
            Ok(status)
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| OutboundError::Timeout(timeout))?
    }
}

/// Parses `url` and requires absolute http(s) with a host. The error never repeats the URL.
pub fn check_url(url: &str) -> Result<reqwest::Url, OutboundError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| OutboundError::InvalidUrl(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(OutboundError::InvalidUrl(format!(
            "scheme {:?} is not http or https",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(OutboundError::InvalidUrl("no host".to_string()));
    }
    Ok(parsed)
}

fn classify(e: reqwest::Error, timeout: Duration) -> OutboundError {
    if e.is_timeout() {
        return OutboundError::Timeout(timeout);
    }
    let connect = e.is_connect();
    let text = error_chain(e.without_url());
    if connect {
        OutboundError::Connect(text)
    } else {
        OutboundError::Other(text)
    }
}

fn error_chain(e: reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_absolute_http() {
        assert!(check_url("https://hooks.slack.com/services/x").is_ok());
        assert!(check_url("http://10.0.0.1:8080/a").is_ok());
        assert!(matches!(
            check_url("ftp://x/y"),
            Err(OutboundError::InvalidUrl(_))
        ));
        assert!(matches!(
            check_url("/relative"),
            Err(OutboundError::InvalidUrl(_))
        ));
        let secret = "https://hooks.slack.com/services/T0/B0/SECRET";
        let e = check_url(&secret.replace("https", "gopher")).unwrap_err();
        assert!(!e.to_string().contains("SECRET"));
    }
}
