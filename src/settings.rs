//! Per-Deployment rollout settings: chart defaults overridden by `canary-gate.io/*`
//! annotations. Parsing is pure and reports every bad annotation with the value and what is
//! allowed, so the validating webhook can deny with a message a user can act on.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::annotations as ann;

/// Cluster-wide defaults (chart values → `serve` flags). They equal the reference scenario:
/// analysis every 30 s, 10 % steps up to 50 %, success rate ≥ 99 %, p99 ≤ 500 ms.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub interval: Duration,
    pub step_weight: u32,
    pub max_weight: u32,
    pub threshold: u32,
    pub min_success_rate: f64,
    pub max_p99_ms: f64,
    pub inconclusive_limit: u32,
    pub confidence: f64,
    pub min_requests: f64,
    pub tolerance: f64,
    /// Router when a Deployment has no `canary-gate.io/router` (chart `analysis.router`).
    pub router: crate::rollout::routes::Router,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            step_weight: 10,
            max_weight: 50,
            threshold: 5,
            min_success_rate: 99.0,
            max_p99_ms: 500.0,
            inconclusive_limit: 10,
            confidence: 0.99,
            min_requests: 30.0,
            tolerance: 0.5,
            router: crate::rollout::routes::Router::Auto,
        }
    }
}

/// A custom PromQL gate: `canary-gate.io/gate.<name>: '{"query": "...", "max": 1.5}'`.
/// The query is a template with `{namespace}`, `{workload}` and `{interval}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomGate {
    #[serde(skip)]
    pub name: String,
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl CustomGate {
    /// The query with its placeholders filled in for one workload.
    pub fn render(&self, namespace: &str, workload: &str, window: Duration) -> String {
        render_template(&self.query, namespace, workload, window)
    }

    pub fn passes(&self, value: f64) -> bool {
        self.min.is_none_or(|m| value >= m) && self.max.is_none_or(|m| value <= m)
    }

    pub fn describe(&self) -> String {
        match (self.min, self.max) {
            (Some(lo), Some(hi)) => format!("{} in [{lo}, {hi}]", self.name),
            (Some(lo), None) => format!("{} ≥ {lo}", self.name),
            (None, Some(hi)) => format!("{} ≤ {hi}", self.name),
            (None, None) => self.name.clone(),
        }
    }
}

pub fn render_template(
    template: &str,
    namespace: &str,
    workload: &str,
    window: Duration,
) -> String {
    template
        .replace("{namespace}", namespace)
        .replace("{workload}", workload)
        .replace("{interval}", &promql_duration(window))
}

/// A PromQL range duration: whole seconds, at least 1s.
pub fn promql_duration(d: Duration) -> String {
    let d = d.max(Duration::from_secs(1));
    match d.subsec_millis() {
        0 => format!("{}s", d.as_secs()),
        ms => format!("{}s{ms}ms", d.as_secs()),
    }
}

/// The effective settings of one managed Deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub interval: Duration,
    pub step_weight: u32,
    pub max_weight: u32,
    pub threshold: u32,
    pub min_success_rate: f64,
    pub max_p99_ms: f64,
    pub inconclusive_limit: u32,
    pub confidence: f64,
    pub min_requests: f64,
    pub tolerance: f64,
    /// The Service that fronts the Deployment, when the user names it; otherwise found by selector.
    pub service: Option<String>,
    /// Which routes carry the split (`canary-gate.io/router`).
    pub router: crate::rollout::routes::Router,
    pub gates: Vec<CustomGate>,
    /// `canary-gate.io/hook.<name>` annotations, in name order.
    pub hooks: Vec<crate::rollout::hooks::Hook>,
    /// How long `confirm-rollout` hooks may answer "not yet" before the rollout is cancelled.
    pub confirm_deadline: Duration,
}

/// Default of `canary-gate.io/confirm-deadline`.
pub const DEFAULT_CONFIRM_DEADLINE: Duration = Duration::from_secs(3600);

/// One bad annotation: which, the value, what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub annotation: String,
    pub value: String,
    pub allowed: String,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "annotation {}={:?} is invalid: {}",
            self.annotation, self.value, self.allowed
        )
    }
}

/// All problems found in one object's annotations (never just the first one: a user fixing
/// their manifest should see everything at once).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SettingErrors(pub Vec<SettingError>);

impl fmt::Display for SettingErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// Is this Deployment managed? The annotation wins; otherwise the chart's default applies.
pub fn is_managed(annotations: &BTreeMap<String, String>, manage_by_default: bool) -> bool {
    match annotations.get(ann::ENABLED).map(|v| v.trim()) {
        Some("true") => true,
        Some("false") => false,
        _ => manage_by_default,
    }
}

impl From<&Defaults> for Settings {
    /// The settings of a Deployment without any setting annotation.
    fn from(d: &Defaults) -> Self {
        Settings {
            interval: d.interval,
            step_weight: d.step_weight,
            max_weight: d.max_weight,
            threshold: d.threshold,
            min_success_rate: d.min_success_rate,
            max_p99_ms: d.max_p99_ms,
            inconclusive_limit: d.inconclusive_limit,
            confidence: d.confidence,
            min_requests: d.min_requests,
            tolerance: d.tolerance,
            service: None,
            router: d.router,
            gates: Vec::new(),
            hooks: Vec::new(),
            confirm_deadline: DEFAULT_CONFIRM_DEADLINE,
        }
    }
}

impl Settings {
    pub fn from_annotations(
        defaults: &Defaults,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Settings, SettingErrors> {
        let mut p = Parser {
            annotations,
            errors: Vec::new(),
        };
        if let Some(v) = annotations.get(ann::ENABLED) {
            if !matches!(v.trim(), "true" | "false") {
                p.error(ann::ENABLED, v, "must be \"true\" or \"false\"");
            }
        }
        let interval = p.duration(ann::INTERVAL, defaults.interval);
        let step_weight = p.int(ann::STEP_WEIGHT, defaults.step_weight, 1, 100);
        let max_weight = p.int(ann::MAX_WEIGHT, defaults.max_weight, 1, 100);
        let threshold = p.int(ann::THRESHOLD, defaults.threshold, 1, 1000);
        let min_success_rate = p.float(
            ann::MIN_SUCCESS_RATE,
            defaults.min_success_rate,
            0.0,
            100.0,
            "a percentage from 0 to 100, e.g. 99 or 99.5",
        );
        let max_p99_ms = p.float(
            ann::MAX_P99_MS,
            defaults.max_p99_ms,
            0.001,
            3_600_000.0,
            "milliseconds, a number greater than 0 and at most 3600000",
        );
        let inconclusive_limit = p.int(
            ann::INCONCLUSIVE_LIMIT,
            defaults.inconclusive_limit,
            1,
            10_000,
        );
        let confidence = p.float(
            ann::CONFIDENCE,
            defaults.confidence,
            0.5,
            0.999_999,
            "a probability from 0.5 to 0.999999, e.g. 0.99",
        );
        let min_requests = p.float(
            ann::MIN_REQUESTS,
            defaults.min_requests,
            0.0,
            1e12,
            "a number of requests, 0 or more",
        );
        let tolerance = p.float(
            ann::TOLERANCE,
            defaults.tolerance,
            0.0,
            100.0,
            "a relative tolerance from 0 to 100, e.g. 0.5 = canary may be 1.5 × stable",
        );
        if step_weight > max_weight && p.errors.is_empty() {
            let (key, value) = if annotations.contains_key(ann::STEP_WEIGHT) {
                (ann::STEP_WEIGHT, step_weight.to_string())
            } else {
                (ann::MAX_WEIGHT, max_weight.to_string())
            };
            p.error(
                key,
                &value,
                &format!("step-weight ({step_weight}) must not exceed max-weight ({max_weight})"),
            );
        }
        let router = match annotations.get(ann::ROUTER) {
            Some(v) => crate::rollout::routes::Router::parse(v).unwrap_or_else(|| {
                p.error(ann::ROUTER, v, crate::rollout::routes::Router::ALLOWED);
                defaults.router
            }),
            None => defaults.router,
        };
        let service = match annotations.get(ann::SERVICE) {
            Some(v) if is_dns_label(v) => Some(v.clone()),
            Some(v) => {
                p.error(
                    ann::SERVICE,
                    v,
                    "must be the name of a Service in the same namespace (a DNS-1035 label)",
                );
                None
            }
            None => None,
        };
        if let Some(v) = annotations.get(ann::ACTION) {
            if crate::rollout::state::Action::parse(v).is_none() {
                p.error(
                    ann::ACTION,
                    v,
                    "must be one of promote, abort, pause, resume, approve",
                );
            }
        }
        if let Some(v) = annotations.get(ann::NOTIFY) {
            if let Err(why) = crate::outbound::notify::parse_channels(Some(v)) {
                p.error(ann::NOTIFY, v, &why);
            }
        }
        let gates = p.gates();
        let hooks = p.hooks();
        let confirm_deadline = match annotations.get(ann::CONFIRM_DEADLINE) {
            None => DEFAULT_CONFIRM_DEADLINE,
            Some(raw) => match humantime::parse_duration(raw.trim()) {
                Ok(d)
                    if (Duration::from_secs(60)..=Duration::from_secs(7 * 86_400)).contains(&d) =>
                {
                    d
                }
                _ => {
                    p.error(
                        ann::CONFIRM_DEADLINE,
                        raw,
                        "must be a duration from 1m to 7d, e.g. 1h",
                    );
                    DEFAULT_CONFIRM_DEADLINE
                }
            },
        };
        p.unknown_keys();
        if !p.errors.is_empty() {
            return Err(SettingErrors(p.errors));
        }
        Ok(Settings {
            interval,
            step_weight,
            max_weight,
            threshold,
            min_success_rate,
            max_p99_ms,
            inconclusive_limit,
            confidence,
            min_requests,
            tolerance,
            service,
            router,
            gates,
            hooks,
            confirm_deadline,
        })
    }

    /// One line that tells a user what the rollout will do, e.g. for admission warnings.
    pub fn plan(&self) -> String {
        let mut gates = vec![
            format!("success ≥ {} %", fmt_num(self.min_success_rate)),
            format!("p99 ≤ {} ms", fmt_num(self.max_p99_ms)),
        ];
        gates.extend(self.gates.iter().map(CustomGate::describe));
        // The interval is the bake time per step; the judgement runs every few seconds
        // between checks too (the analyzer's --peek-interval), so users read that a broken
        // canary is not given a whole interval.
        format!(
            "{} % steps every {} to {} %, gates: {}; decisive evidence rolls back at any moment",
            self.step_weight,
            humantime::format_duration(self.interval),
            self.max_weight,
            gates.join(", ")
        )
    }
}

/// Numbers as a person writes them: `99`, `99.5`, not `99.0`.
pub fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

struct Parser<'a> {
    annotations: &'a BTreeMap<String, String>,
    errors: Vec<SettingError>,
}

impl Parser<'_> {
    fn error(&mut self, annotation: &str, value: &str, allowed: &str) {
        self.errors.push(SettingError {
            annotation: annotation.to_string(),
            value: value.to_string(),
            allowed: allowed.to_string(),
        });
    }

    fn int(&mut self, key: &str, default: u32, lo: u32, hi: u32) -> u32 {
        let Some(raw) = self.annotations.get(key) else {
            return default;
        };
        match raw.trim().parse::<u32>() {
            Ok(v) if (lo..=hi).contains(&v) => v,
            _ => {
                self.error(
                    key,
                    raw,
                    &format!("must be a whole number from {lo} to {hi}"),
                );
                default
            }
        }
    }

    fn float(&mut self, key: &str, default: f64, lo: f64, hi: f64, allowed: &str) -> f64 {
        let Some(raw) = self.annotations.get(key) else {
            return default;
        };
        let trimmed = raw.trim().trim_end_matches('%').trim();
        match trimmed.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= lo && v <= hi => v,
            _ => {
                self.error(key, raw, &format!("must be {allowed}"));
                default
            }
        }
    }

    fn duration(&mut self, key: &str, default: Duration) -> Duration {
        let Some(raw) = self.annotations.get(key) else {
            return default;
        };
        let allowed = "must be a duration from 1s to 1h, e.g. 30s, 2m or 1m30s";
        match humantime::parse_duration(raw.trim()) {
            Ok(d) if (MIN_INTERVAL..=MAX_INTERVAL).contains(&d) && d.subsec_nanos() == 0 => d,
            Ok(d) if d.subsec_nanos() != 0 && d >= MIN_INTERVAL => {
                self.error(key, raw, &format!("{allowed} (whole seconds)"));
                default
            }
            _ => {
                self.error(key, raw, allowed);
                default
            }
        }
    }

    fn gates(&mut self) -> Vec<CustomGate> {
        let mut gates = Vec::new();
        for (key, raw) in self.annotations.range(ann::GATE_PREFIX.to_string()..) {
            let Some(name) = key.strip_prefix(ann::GATE_PREFIX) else {
                break;
            };
            let shape = "must be JSON like {\"query\": \"<PromQL with {namespace}, {workload}, {interval}>\", \"max\": <number>} (or \"min\")";
            if !is_dns_label(name) {
                self.error(key, raw, "the gate name after `gate.` must be a lowercase DNS label, e.g. gate.error-budget");
                continue;
            }
            let mut gate: CustomGate = match serde_json::from_str(raw) {
                Ok(g) => g,
                Err(e) => {
                    self.error(key, raw, &format!("{shape}: {e}"));
                    continue;
                }
            };
            gate.name = name.to_string();
            if gate.min.is_none() && gate.max.is_none() {
                self.error(
                    key,
                    raw,
                    &format!("{shape}: a threshold (\"min\" or \"max\") is required"),
                );
                continue;
            }
            if [gate.min, gate.max]
                .iter()
                .flatten()
                .any(|v| !v.is_finite())
            {
                self.error(key, raw, "thresholds must be finite numbers");
                continue;
            }
            // Parse the query for real, with sample values in the placeholders, so a typo is
            // caught at admission and not at the first analysis tick.
            let sample = gate.render("ns", "workload", Duration::from_secs(30));
            if let Err(e) = promql_parser::parser::parse(&sample) {
                self.error(
                    key,
                    raw,
                    &format!("the query is not valid PromQL: {}", e.trim()),
                );
                continue;
            }
            gates.push(gate);
        }
        gates
    }

    fn hooks(&mut self) -> Vec<crate::rollout::hooks::Hook> {
        let mut hooks = Vec::new();
        for (key, raw, parsed) in crate::rollout::hooks::from_annotations(self.annotations) {
            let name = &key[ann::HOOK_PREFIX.len()..];
            if !is_dns_label(name) {
                self.error(&key, &raw, "the hook name after `hook.` must be a lowercase DNS label, e.g. hook.smoke-tests");
                continue;
            }
            match parsed {
                Ok(h) => hooks.push(h),
                Err(why) => self.error(&key, &raw, &why),
            }
        }
        hooks
    }

    /// Typos like `canary-gate.io/max-wieght` would otherwise be silently ignored.
    fn unknown_keys(&mut self) {
        let unknown: Vec<(String, String)> = self
            .annotations
            .iter()
            .filter(|(k, _)| k.starts_with(ann::PREFIX))
            .filter(|(k, _)| {
                !ann::SETTINGS.contains(&k.as_str())
                    && !ann::STATE.contains(&k.as_str())
                    && !k.starts_with(ann::GATE_PREFIX)
                    && !k.starts_with(ann::HOOK_PREFIX)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in unknown {
            self.error(
                &k,
                &v,
                &format!(
                    "unknown canary-gate annotation; known settings: {}",
                    known_settings()
                ),
            );
        }
    }
}

fn known_settings() -> String {
    ann::SETTINGS
        .iter()
        .map(|k| k.trim_start_matches(ann::PREFIX))
        .chain(std::iter::once("gate.<name>"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<Settings, SettingErrors> {
        Settings::from_annotations(&Defaults::default(), &annotations(pairs))
    }

    #[test]
    fn defaults_equal_the_reference_scenario() {
        let s = parse(&[(ann::ENABLED, "true")]).expect("valid");
        assert_eq!(s.interval, Duration::from_secs(30));
        assert_eq!((s.step_weight, s.max_weight, s.threshold), (10, 50, 5));
        assert_eq!((s.min_success_rate, s.max_p99_ms), (99.0, 500.0));
        assert_eq!(
            s.plan(),
            "10 % steps every 30s to 50 %, gates: success ≥ 99 %, p99 ≤ 500 ms; decisive evidence rolls back at any moment"
        );
    }

    #[test]
    fn router_is_parsed_and_a_bad_one_named() {
        use crate::rollout::routes::Router;
        assert_eq!(parse(&[]).expect("valid").router, Router::Auto);
        for (v, r) in [
            ("auto", Router::Auto),
            ("istio", Router::Istio),
            ("gateway-api", Router::GatewayApi),
        ] {
            assert_eq!(parse(&[(ann::ROUTER, v)]).expect("valid").router, r);
        }
        let gateway = Defaults {
            router: Router::GatewayApi,
            ..Defaults::default()
        };
        let s = Settings::from_annotations(&gateway, &annotations(&[])).expect("valid");
        assert_eq!(s.router, Router::GatewayApi, "the chart default");
        let s = Settings::from_annotations(&gateway, &annotations(&[(ann::ROUTER, "istio")]));
        assert_eq!(
            s.expect("valid").router,
            Router::Istio,
            "the annotation wins"
        );
        let err = parse(&[(ann::ROUTER, "linkerd")])
            .expect_err("invalid")
            .to_string();
        assert!(err.contains("canary-gate.io/router"), "{err}");
        assert!(err.contains("\"linkerd\""), "{err}");
        assert!(err.contains("auto, istio, gateway-api"), "{err}");
    }

    #[test]
    fn overrides_are_applied() {
        let s = parse(&[
            (ann::INTERVAL, "1m30s"),
            (ann::STEP_WEIGHT, "5"),
            (ann::MAX_WEIGHT, "100"),
            (ann::THRESHOLD, "2"),
            (ann::MIN_SUCCESS_RATE, "99.5%"),
            (ann::MAX_P99_MS, "250"),
            (ann::SERVICE, "front"),
        ])
        .expect("valid");
        assert_eq!(s.interval, Duration::from_secs(90));
        assert_eq!((s.step_weight, s.max_weight, s.threshold), (5, 100, 2));
        assert_eq!((s.min_success_rate, s.max_p99_ms), (99.5, 250.0));
        assert_eq!(s.service.as_deref(), Some("front"));
    }

    #[test]
    fn interval_accepts_one_second_and_rejects_less() {
        assert_eq!(
            parse(&[(ann::INTERVAL, "1s")]).expect("valid").interval,
            Duration::from_secs(1)
        );
        for bad in ["500ms", "0s", "soon", "2h", "1.5s", ""] {
            let err = parse(&[(ann::INTERVAL, bad)]).expect_err(bad);
            assert_eq!(err.0.len(), 1, "{bad}");
            assert_eq!(err.0[0].annotation, ann::INTERVAL);
            assert!(err.to_string().contains("from 1s to 1h"), "{err}");
        }
    }

    #[test]
    fn every_bad_value_is_reported_with_name_value_and_range() {
        let err = parse(&[
            (ann::MAX_WEIGHT, "150"),
            (ann::STEP_WEIGHT, "ten"),
            (ann::THRESHOLD, "0"),
            (ann::MIN_SUCCESS_RATE, "101"),
            (ann::MAX_P99_MS, "-1"),
            (ann::ENABLED, "yes"),
            (ann::SERVICE, "Bad_Name"),
            (ann::ACTION, "explode"),
            (ann::CONFIDENCE, "NaN"),
        ])
        .expect_err("invalid");
        let text = err.to_string();
        assert_eq!(err.0.len(), 9, "{text}");
        assert!(text.contains("canary-gate.io/max-weight=\"150\" is invalid: must be a whole number from 1 to 100"), "{text}");
        assert!(
            text.contains("canary-gate.io/step-weight=\"ten\""),
            "{text}"
        );
        assert!(text.contains("canary-gate.io/action=\"explode\" is invalid: must be one of promote, abort, pause, resume"), "{text}");
    }

    #[test]
    fn step_above_max_is_denied_naming_the_annotation_the_user_set() {
        let err = parse(&[(ann::STEP_WEIGHT, "60")]).expect_err("step > default max");
        assert_eq!(err.0[0].annotation, ann::STEP_WEIGHT);
        assert!(err.to_string().contains("must not exceed max-weight (50)"));
        let err = parse(&[(ann::MAX_WEIGHT, "5")]).expect_err("default step > max");
        assert_eq!(err.0[0].annotation, ann::MAX_WEIGHT);
    }

    #[test]
    fn unknown_prefixed_annotations_are_typos() {
        let err = parse(&[("canary-gate.io/max-wieght", "40")]).expect_err("typo");
        assert!(err.to_string().contains("unknown canary-gate annotation"));
        // State annotations written by canary-gate itself are not typos.
        parse(&[(ann::PHASE, "Progressing"), (ann::WEIGHT, "10")]).expect("state is fine");
    }

    #[test]
    fn custom_gates_are_parsed_as_promql() {
        let q = r#"{"query": "sum(rate(http_errors_total{namespace=\"{namespace}\",pod=~\"{workload}-.*\"}[{interval}]))", "max": 0.5}"#;
        let s = parse(&[("canary-gate.io/gate.errors", q)]).expect("valid gate");
        assert_eq!(s.gates.len(), 1);
        assert_eq!(s.gates[0].name, "errors");
        assert!(s.gates[0].passes(0.5) && !s.gates[0].passes(0.51));
        assert_eq!(
            s.gates[0].render("shop", "podinfo-canary", Duration::from_secs(30)),
            "sum(rate(http_errors_total{namespace=\"shop\",pod=~\"podinfo-canary-.*\"}[30s]))"
        );
        assert!(s.plan().contains("errors ≤ 0.5; decisive"), "{}", s.plan());
    }

    #[test]
    fn custom_gate_errors() {
        let cases = [
            (
                r#"{"query": "sum(rate(x[{interval}])", "max": 1}"#,
                "not valid PromQL",
            ),
            (r#"{"query": "up"}"#, "threshold"),
            (r#"{"query": "up", "max": 1, "mix": 2}"#, "unknown field"),
            ("not json", "must be JSON"),
        ];
        for (raw, expect) in cases {
            let err = parse(&[("canary-gate.io/gate.g", raw)]).expect_err(raw);
            assert!(err.to_string().contains(expect), "{raw}: {err}");
        }
        let err =
            parse(&[("canary-gate.io/gate.Bad", r#"{"query":"up","max":1}"#)]).expect_err("name");
        assert!(err.to_string().contains("lowercase DNS label"));
    }

    #[test]
    fn managed_by_annotation_or_default() {
        assert!(is_managed(&annotations(&[(ann::ENABLED, "true")]), false));
        assert!(!is_managed(&annotations(&[(ann::ENABLED, "false")]), true));
        assert!(is_managed(&annotations(&[]), true));
        assert!(!is_managed(&annotations(&[]), false));
    }
}
