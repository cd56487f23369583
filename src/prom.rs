//! The Prometheus client: instant queries over HTTP, each with a timeout, counted by outcome.
//! The only module besides `cluster` that does I/O for the analyzer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::Deserialize;

use crate::gates::Sample;
use crate::metrics::{CallOutcome, Metrics};

#[derive(Debug, Clone, thiserror::Error)]
pub enum PromError {
    #[error("Prometheus did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Prometheus unreachable: {0}")]
    Http(String),
    #[error("Prometheus rejected the query ({kind}): {message}")]
    Api { kind: String, message: String },
    #[error("unexpected answer from Prometheus: {0}")]
    Decode(String),
}

/// Anything that answers PromQL instant queries (the real client, or a test double).
pub trait QueryApi: Send + Sync {
    fn query(
        &self,
        promql: &str,
        at: Timestamp,
    ) -> impl std::future::Future<Output = Result<Vec<Sample>, PromError>> + Send;
}

#[derive(Clone)]
pub struct PromClient {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    /// Parsed straight into samples once the type is known, without a `serde_json::Value` of
    /// every series in between.
    result: Box<serde_json::value::RawValue>,
}

#[derive(Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

impl PromClient {
    pub fn new(base: &str, timeout: Duration, metrics: Arc<Metrics>) -> Result<Self, PromError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(4)
            .build()
            .map_err(|e| PromError::Http(e.to_string()))?;
        Ok(PromClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            timeout,
            metrics,
        })
    }

    async fn query_inner(&self, promql: &str, at: Timestamp) -> Result<Vec<Sample>, PromError> {
        let time = format!("{:.3}", at.as_millisecond() as f64 / 1000.0);
        let request = self
            .http
            .post(format!("{}/api/v1/query", self.base))
            .form(&[("query", promql), ("time", time.as_str())])
            .send();
        let response = tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| PromError::Timeout(self.timeout))?
            .map_err(|e| {
                if e.is_timeout() {
                    PromError::Timeout(self.timeout)
                } else {
                    PromError::Http(e.to_string())
                }
            })?;
        let status = response.status();
        let body = tokio::time::timeout(self.timeout, response.bytes())
            .await
            .map_err(|_| PromError::Timeout(self.timeout))?
            .map_err(|e| PromError::Http(e.to_string()))?;
        self.metrics
            .prometheus_response_bytes
            .observe(body.len() as f64);
        let parsed: ApiResponse = serde_json::from_slice(&body)
            .map_err(|e| PromError::Decode(format!("HTTP {status}: {e}")))?;
        if parsed.status != "success" {
            return Err(PromError::Api {
                kind: parsed.error_type.unwrap_or_default(),
                message: parsed.error.unwrap_or_default(),
            });
        }
        let data = parsed
            .data
            .ok_or_else(|| PromError::Decode("no data".into()))?;
        match data.result_type.as_str() {
            "vector" => {
                let samples: Vec<VectorSample> = serde_json::from_str(data.result.get())
                    .map_err(|e| PromError::Decode(e.to_string()))?;
                Ok(samples
                    .into_iter()
                    .map(|s| Sample {
                        labels: s.metric,
                        value: parse_value(&s.value.1),
                    })
                    .collect())
            }
            "scalar" => {
                let (_, v): (f64, String) = serde_json::from_str(data.result.get())
                    .map_err(|e| PromError::Decode(e.to_string()))?;
                Ok(vec![Sample {
                    labels: BTreeMap::new(),
                    value: parse_value(&v),
                }])
            }
            other => Err(PromError::Decode(format!(
                "result type {other}, expected an instant vector"
            ))),
        }
    }
}

impl QueryApi for PromClient {
    async fn query(&self, promql: &str, at: Timestamp) -> Result<Vec<Sample>, PromError> {
        let started = std::time::Instant::now();
        let result = self.query_inner(promql, at).await;
        self.metrics
            .prometheus_query_duration
            .observe(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(_) => CallOutcome::Success,
            Err(PromError::Timeout(_)) => CallOutcome::Timeout,
            Err(_) => CallOutcome::Failure,
        };
        Metrics::count_call(&self.metrics.prometheus_queries, "query", outcome);
        if let Err(error) = &result {
            tracing::warn!(%error, query = promql, "prometheus query failed");
        }
        result
    }
}

/// Prometheus writes NaN, +Inf and -Inf as strings.
fn parse_value(raw: &str) -> f64 {
    match raw {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().unwrap_or(f64::NAN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_values() {
        assert!(parse_value("NaN").is_nan());
        assert_eq!(parse_value("+Inf"), f64::INFINITY);
        assert_eq!(parse_value("0.25"), 0.25);
        assert!(parse_value("garbage").is_nan());
    }
}
