//! The built-in web dashboard on the admin port: the rollouts list at `/`, one rollout at
//! `/rollouts/<namespace>/<deployment>`, and their data as JSON at `/api/rollouts` and
//! `/api/rollouts/<namespace>/<deployment>`. Read-only; server-rendered HTML with inline
//! SVG charts and one small script (`dashboard.js`, shipped in the binary) that keeps the
//! pages live by long-polling the JSON (`?wait=<version>` answers when something changed).
//!
//! The rollouts come from the cluster (the same Deployments the analyzer reads); what was
//! seen over time comes from [`History`], fed by the analyzer.

pub mod history;
pub mod html;
pub mod svg;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use serde::Serialize;

pub use history::History;
use history::{CheckPoint, RolloutHistory};

use crate::annotations as ann;
use crate::cluster::{Cluster, KubeError};
use crate::gates::{self, latency_bucket, Workload};
use crate::rollout::state::RolloutState;
use crate::rollout::twin::twin_name;
use crate::settings::{fmt_num, Defaults, Settings};

/// The one static script, embedded in the binary.
pub const SCRIPT: &str = include_str!("dashboard.js");
/// Longest a `?wait=` request is held open.
pub const MAX_WAIT: Duration = Duration::from_secs(25);
const WAIT_POLL: Duration = Duration::from_millis(250);

/// Where the dashboard reads Deployments: any [`Cluster`] (object-safe wrapper).
pub trait Source: Send + Sync {
    fn deployments(&self) -> BoxFuture<'_, Result<Vec<Arc<Deployment>>, KubeError>>;
}

impl<C: Cluster> Source for C {
    fn deployments(&self) -> BoxFuture<'_, Result<Vec<Arc<Deployment>>, KubeError>> {
        Box::pin(Cluster::deployments(self))
    }
}

/// One rollout in the list (and the head of its page).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutSummary {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    pub weight: u32,
    pub max_weight: u32,
    pub step_weight: u32,
    pub threshold: u32,
    /// The gates' limits: success rate (percent) and p99 (ms).
    pub min_success_rate: f64,
    pub max_p99_ms: f64,
    pub started_at: String,
    pub phase_since: String,
    pub age_seconds: i64,
    pub failed_checks: u32,
    pub passed_checks: u32,
    pub inconclusive_checks: u32,
    pub canary_revision: String,
    pub stable_revision: String,
    /// Last gate values, canary and stable, as recorded on the Deployment.
    pub gates: String,
    pub message: String,
    /// The last check this process saw (or the one restored from the annotations).
    pub last_check: Option<CheckPoint>,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutList {
    /// Changes when anything shown changes (not with the age): `?wait=<version>`.
    pub version: String,
    pub generated_at: String,
    pub rollouts: Vec<RolloutSummary>,
    /// Why the cluster could not be read, if it could not.
    pub error: Option<String>,
}

/// The evidence of the sequential test against its decision bound `1/α`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    pub alpha: f64,
    /// `ln(1/α)`: the e-process rolls back when `ln E` reaches it.
    pub bound_log_e: f64,
    /// `ln E` on the cumulative 5xx counts, canary against stable.
    pub log_e_errors: f64,
    /// `ln E` on the cumulative count of requests slower than the p99 limit.
    pub log_e_slow: Option<f64>,
    /// Either crossed the bound.
    pub decisive: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Query {
    pub gate: String,
    pub promql: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutDetail {
    pub version: String,
    pub rollout: RolloutSummary,
    /// `Settings::plan`, as the admission warning says it.
    pub plan: String,
    pub settings: BTreeMap<&'static str, String>,
    /// The PromQL the analyzer runs for this rollout over one interval.
    pub queries: Vec<Query>,
    /// Where to look with kubectl.
    pub kubectl: Vec<String>,
    pub evidence: Evidence,
    pub history: RolloutHistory,
}

pub struct Dashboard {
    defaults: Defaults,
    history: Arc<History>,
    source: RwLock<Option<Arc<dyn Source>>>,
    /// Why there is no source (shown on the pages).
    missing: RwLock<String>,
}

impl Dashboard {
    pub fn new(defaults: Defaults) -> Self {
        Dashboard {
            defaults,
            history: Arc::new(History::new()),
            source: RwLock::new(None),
            missing: RwLock::new("waiting for the Kubernetes cluster (see /readyz)".into()),
        }
    }

    /// The history the analyzer records into.
    pub fn history(&self) -> Arc<History> {
        self.history.clone()
    }

    /// Read rollouts from this cluster from now on.
    pub fn set_source(&self, source: Arc<dyn Source>) {
        *self.source.write().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// No cluster will come: say why on the pages.
    pub fn set_missing(&self, why: impl Into<String>) {
        *self.missing.write().unwrap_or_else(|p| p.into_inner()) = why.into();
    }

    async fn read(&self) -> Result<Vec<Arc<Deployment>>, String> {
        let source = self
            .source
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match source {
            None => Err(self
                .missing
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone()),
            Some(s) => s.deployments().await.map_err(|e| e.to_string()),
        }
    }

    fn rollout(&self, d: &Deployment) -> Option<(String, String, RolloutState, Settings)> {
        let managed_object = d
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(ann::MANAGED_LABEL));
        if managed_object {
            return None;
        }
        let annotations = d.metadata.annotations.clone().unwrap_or_default();
        let state = RolloutState::from_annotations(&annotations).ok()?;
        let settings = Settings::from_annotations(&self.defaults, &annotations)
            .unwrap_or_else(|_| Settings::from(&self.defaults));
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let name = d.metadata.name.clone().unwrap_or_default();
        self.history.observe(&ns, &name, &state, &settings);
        Some((ns, name, state, settings))
    }

    fn summary(
        &self,
        ns: &str,
        name: &str,
        s: &RolloutState,
        settings: &Settings,
        now: Timestamp,
    ) -> RolloutSummary {
        RolloutSummary {
            namespace: ns.to_string(),
            name: name.to_string(),
            phase: s.phase.to_string(),
            weight: s.weight,
            max_weight: settings.max_weight,
            step_weight: settings.step_weight,
            threshold: settings.threshold,
            min_success_rate: settings.min_success_rate,
            max_p99_ms: settings.max_p99_ms,
            started_at: s.started_at.to_string(),
            phase_since: s.phase_since.to_string(),
            age_seconds: now.duration_since(s.started_at).as_secs().max(0),
            failed_checks: s.failed_checks,
            passed_checks: s.passed_checks,
            inconclusive_checks: s.inconclusive_checks,
            canary_revision: s.canary_revision.clone(),
            stable_revision: s.stable_revision.clone(),
            gates: s.gates.clone(),
            message: s.message.clone(),
            last_check: self.history.last_check(ns, name),
            url: format!("/rollouts/{}/{}", path_segment(ns), path_segment(name)),
        }
    }

    /// Every rollout recorded on a Deployment, by namespace and name.
    pub async fn list(&self, now: Timestamp) -> RolloutList {
        self.history.forget_finished(now);
        let (rollouts, error) = match self.read().await {
            Err(e) => (Vec::new(), Some(e)),
            Ok(deployments) => {
                let mut v: Vec<RolloutSummary> = deployments
                    .iter()
                    .filter_map(|d| self.rollout(d))
                    .map(|(ns, name, s, settings)| self.summary(&ns, &name, &s, &settings, now))
                    .collect();
                v.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
                (v, None)
            }
        };
        let version = list_version(&rollouts, error.as_deref());
        RolloutList {
            version,
            generated_at: now.to_string(),
            rollouts,
            error,
        }
    }

    /// One rollout: `Ok(None)` when there is no such rollout, `Err` when the cluster could
    /// not be read.
    pub async fn detail(
        &self,
        ns: &str,
        name: &str,
        now: Timestamp,
    ) -> Result<Option<RolloutDetail>, String> {
        let deployments = self.read().await?;
        let found = deployments.iter().find(|d| {
            d.metadata.namespace.as_deref() == Some(ns) && d.metadata.name.as_deref() == Some(name)
        });
        let Some((ns, name, state, settings)) = found.and_then(|d| self.rollout(d)) else {
            return Ok(None);
        };
        let history = self.history.get(&ns, &name).unwrap_or_default();
        let rollout = self.summary(&ns, &name, &state, &settings, now);
        let cfg = gates::judge_config(&settings);
        let (log_e_errors, log_e_slow) = history::log_evidence(&state.counts, &cfg);
        let bound_log_e = (1.0 / cfg.alpha()).ln();
        let evidence = Evidence {
            alpha: cfg.alpha(),
            bound_log_e,
            log_e_errors,
            log_e_slow,
            decisive: log_e_errors >= bound_log_e || log_e_slow.is_some_and(|l| l >= bound_log_e),
        };
        let version = detail_version(&rollout, &history);
        Ok(Some(RolloutDetail {
            version,
            plan: settings.plan(),
            settings: settings_table(&settings),
            queries: queries(&ns, &name, &settings),
            kubectl: kubectl(&ns, &name, &settings),
            evidence,
            history,
            rollout,
        }))
    }

    /// `list`, once its version differs from `seen` (or after `wait`).
    pub async fn wait_list(&self, seen: Option<&str>, wait: Duration) -> RolloutList {
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        loop {
            let list = self.list(Timestamp::now()).await;
            if seen != Some(list.version.as_str()) || tokio::time::Instant::now() >= deadline {
                return list;
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    /// `detail`, once its version differs from `seen` (or after `wait`).
    pub async fn wait_detail(
        &self,
        ns: &str,
        name: &str,
        seen: Option<&str>,
        wait: Duration,
    ) -> Result<Option<RolloutDetail>, String> {
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        loop {
            let detail = self.detail(ns, name, Timestamp::now()).await?;
            let same = match (&detail, seen) {
                (Some(d), Some(v)) => d.version == v,
                _ => false,
            };
            if !same || tokio::time::Instant::now() >= deadline {
                return Ok(detail);
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }
}

/// A namespace or name in a URL path (Kubernetes names need no escaping; anything else is
/// percent-encoded all the same).
pub fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn hash_hex(h: impl Hash) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    h.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn summary_key(r: &RolloutSummary) -> impl Hash + '_ {
    (
        &r.namespace,
        &r.name,
        &r.phase,
        r.weight,
        r.failed_checks,
        r.passed_checks,
        r.inconclusive_checks,
        &r.gates,
        &r.message,
        r.last_check.as_ref().map(|c| c.at.ms),
    )
}

fn list_version(rollouts: &[RolloutSummary], error: Option<&str>) -> String {
    let keys: Vec<_> = rollouts.iter().map(summary_key).collect();
    hash_hex((keys, error))
}

fn detail_version(r: &RolloutSummary, h: &RolloutHistory) -> String {
    hash_hex((
        summary_key(r),
        h.weights.len(),
        h.checks.back().map(|c| c.at.ms),
        h.events.len(),
        h.decisions.len(),
    ))
}

fn settings_table(s: &Settings) -> BTreeMap<&'static str, String> {
    let mut m = BTreeMap::from([
        (
            "interval",
            humantime::format_duration(s.interval).to_string(),
        ),
        ("step-weight", format!("{} %", s.step_weight)),
        ("max-weight", format!("{} %", s.max_weight)),
        ("threshold", format!("{} failed checks", s.threshold)),
        (
            "min-success-rate",
            format!("{} %", fmt_num(s.min_success_rate)),
        ),
        ("max-p99-ms", format!("{} ms", fmt_num(s.max_p99_ms))),
        (
            "inconclusive-limit",
            format!("{} checks", s.inconclusive_limit),
        ),
        ("confidence", fmt_num(s.confidence)),
        ("min-requests", fmt_num(s.min_requests)),
        ("tolerance", fmt_num(s.tolerance)),
    ]);
    if let Some(svc) = &s.service {
        m.insert("service", svc.clone());
    }
    for g in &s.gates {
        m.insert("gate", g.describe());
    }
    m
}

/// The queries one analysis of this rollout runs, built by the analyzer's own functions
/// (`gates::batch_queries`, `CustomGate::render`) for a window of one interval.
pub fn queries(ns: &str, name: &str, s: &Settings) -> Vec<Query> {
    let workloads = [
        Workload {
            namespace: ns.to_string(),
            workload: twin_name(name),
        },
        Workload {
            namespace: ns.to_string(),
            workload: name.to_string(),
        },
    ];
    let les: Vec<f64> = latency_bucket(s.max_p99_ms).into_iter().collect();
    let q = gates::batch_queries(&[(s.interval, workloads.to_vec())], &[], &les);
    let mut v = vec![
        Query {
            gate: "requests".into(),
            promql: q.requests,
        },
        Query {
            gate: "errors (5xx)".into(),
            promql: q.errors,
        },
        Query {
            gate: "p99".into(),
            // A check always has its p99 query.
            promql: q.p99.unwrap_or_default(),
        },
        Query {
            gate: "slow requests (latency buckets)".into(),
            promql: q.buckets,
        },
    ];
    for g in &s.gates {
        v.push(Query {
            gate: format!("gate {}", g.name),
            promql: g.render(ns, &twin_name(name), s.interval),
        });
    }
    v
}

fn kubectl(ns: &str, name: &str, s: &Settings) -> Vec<String> {
    let twin = twin_name(name);
    let mut v = vec![
        format!("kubectl -n {ns} describe deployment {name}"),
        format!("kubectl -n {ns} get deployment {twin} -o wide"),
        format!("kubectl -n {ns} get events --field-selector involvedObject.name={name}"),
        format!("kubectl -n {ns} get virtualservices.networking.istio.io,destinationrules.networking.istio.io"),
        format!("kubectl -n {ns} get httproutes.gateway.networking.k8s.io"),
    ];
    if let Some(svc) = &s.service {
        v.push(format!("kubectl -n {ns} get service {svc} {svc}-canary"));
    }
    v.push(format!("canary-gate status -n {ns}"));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_the_analyzers() {
        let s = Settings::from(&Defaults::default());
        let q = queries("shop", "podinfo", &s);
        let direct = gates::batch_queries(
            &[(
                Duration::from_secs(30),
                vec![
                    Workload {
                        namespace: "shop".into(),
                        workload: "podinfo-canary".into(),
                    },
                    Workload {
                        namespace: "shop".into(),
                        workload: "podinfo".into(),
                    },
                ],
            )],
            &[],
            &[500.0],
        );
        assert_eq!(q[0].promql, direct.requests);
        assert_eq!(Some(&q[2].promql), direct.p99.as_ref());
        assert_eq!(q[3].promql, direct.buckets);
        for query in &q {
            promql_parser::parser::parse(&query.promql).expect("valid PromQL");
        }
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("pod-info.v1"), "pod-info.v1");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn summary_json_shape() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().expect("ts");
        let d = Dashboard::new(Defaults::default());
        let mut st = RolloutState::pending(
            "c".into(),
            "s".into(),
            "2026-01-01T00:00:00Z".parse().expect("ts"),
        );
        st.weight = 20;
        let s = d.summary(
            "shop",
            "podinfo",
            &st,
            &Settings::from(&Defaults::default()),
            now,
        );
        let v = serde_json::to_value(&s).expect("json");
        for key in [
            "namespace",
            "name",
            "phase",
            "weight",
            "max_weight",
            "age_seconds",
            "failed_checks",
            "passed_checks",
            "gates",
            "message",
            "last_check",
            "url",
        ] {
            assert!(v.get(key).is_some(), "{key} in {v}");
        }
        assert_eq!(v["age_seconds"], 60);
        assert_eq!(v["weight"], 20);
        assert_eq!(v["url"], "/rollouts/shop/podinfo");
    }
}
