//! Gates: the PromQL that measures a canary and its stable over a window, and the pure
//! judgement of the results. Built-in gates are batched: one query per gate per tick for all
//! rollouts with the same window, grouped by workload, instead of one query per rollout.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::judge::{self, JudgeConfig, LatencyObservation};
use crate::rollout::machine::{Analysis, Verdict};
use crate::rollout::state::Counts;
use crate::settings::{fmt_num, promql_duration, CustomGate, Settings};

/// Canary requests a window must be expected to carry (from the stable's traffic and the
/// weight) before a window without any counts as "no data": Poisson(5) is 0 in 0.7 % of
/// windows, so ten such windows in a row never come from low traffic alone.
pub const EXPECTED_CANARY_REQUESTS: f64 = 5.0;

/// A workload as Istio labels it (`destination_workload_namespace`, `destination_workload`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    pub namespace: String,
    pub workload: String,
}

/// The built-in queries for a set of workloads over their windows.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchQueries {
    pub requests: String,
    pub errors: String,
    /// Only for the workloads of checks (None without any): the p99 reads every bucket of
    /// the histogram, the heaviest query by far, and a look between checks acts on decisive
    /// evidence only, which the p99 never is.
    pub p99: Option<String>,
    /// Requests per latency bucket at the p99 limits and +Inf: the share of slow requests.
    pub buckets: String,
}

const BY: &str = "destination_workload_namespace, destination_workload";

/// Istio's default buckets for `istio_request_duration_milliseconds` (`le` values).
pub const ISTIO_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// The histogram bucket that decides "slower than the p99 limit": the smallest boundary at or
/// above it (so a request is only called slow when it certainly is).
pub fn latency_bucket(max_p99_ms: f64) -> Option<f64> {
    ISTIO_BUCKETS_MS.iter().copied().find(|b| *b >= max_p99_ms)
}

/// `le` label values as Prometheus may write them (`500`, `500.0`).
fn le_alternatives(les: &[f64]) -> String {
    // Doubled backslashes: one level for the PromQL string, one for the regex.
    let mut parts: Vec<String> = les
        .iter()
        .map(|l| format!(r"{}(\\.0)?", fmt_num(*l).replace('.', r"\\.")))
        .collect();
    parts.sort();
    parts.dedup();
    parts.push(r"\\+Inf".into());
    parts.join("|")
}

/// The built-in queries for every workload to be measured in one tick: one query per
/// measurement however many rollouts and windows. `checks` are the workloads of rollouts due
/// for their check, `looks` those of rollouts looked at between checks (no p99 for them).
/// Each `(window, workloads)` group and namespace is one branch, joined with `or`; a
/// workload belongs to one rollout and so to one branch, which keeps the branches disjoint
/// (`or` would keep the first of two equal series).
pub fn batch_queries(
    checks: &[(Duration, Vec<Workload>)],
    looks: &[(Duration, Vec<Workload>)],
    les: &[f64],
) -> BatchQueries {
    let checked = branches(checks);
    let looked = branches(looks);
    let all = || checked.iter().chain(&looked);
    let les = le_alternatives(les);
    BatchQueries {
        requests: join(all(), |sel, range| {
            format!("sum by ({BY}) (increase(istio_requests_total{{{sel}}}[{range}]))")
        }),
        errors: join(all(), |sel, range| {
            format!("sum by ({BY}) (increase(istio_requests_total{{{sel},response_code=~\"5..\"}}[{range}]))")
        }),
        p99: (!checked.is_empty()).then(|| join(&checked, |sel, range| {
            format!("histogram_quantile(0.99, sum by ({BY}, le) (rate(istio_request_duration_milliseconds_bucket{{{sel}}}[{range}])))")
        })),
        buckets: join(all(), |sel, range| {
            format!("sum by ({BY}, le) (increase(istio_request_duration_milliseconds_bucket{{{sel},le=~\"{les}\"}}[{range}]))")
        }),
    }
}

/// One query per branch, joined with `or`.
fn join<'a>(
    branches: impl IntoIterator<Item = &'a (String, String)>,
    one: impl Fn(&str, &str) -> String,
) -> String {
    branches
        .into_iter()
        .map(|(selector, range)| one(selector, range))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// One (selector, range) branch per window and namespace.
fn branches(groups: &[(Duration, Vec<Workload>)]) -> Vec<(String, String)> {
    let mut branches = Vec::new();
    for (window, workloads) in groups {
        let mut by_namespace: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for w in workloads {
            by_namespace
                .entry(w.namespace.as_str())
                .or_default()
                .push(w.workload.as_str());
        }
        for (namespace, names) in by_namespace {
            let namespace = regex_alternatives(std::iter::once(namespace));
            let names = regex_alternatives(names.into_iter());
            branches.push((
                format!(
                    "reporter=\"destination\",destination_workload_namespace=~\"{namespace}\",destination_workload=~\"{names}\""
                ),
                promql_duration(*window),
            ));
        }
    }
    branches
}

/// `a|b|c` with regex metacharacters escaped (Kubernetes names only have `-` and `.`, but a
/// namespace or name is user input all the same).
fn regex_alternatives<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut unique: Vec<&str> = items.collect();
    unique.sort_unstable();
    unique.dedup();
    unique
        .iter()
        .map(|s| {
            s.chars()
                .flat_map(|c| match c {
                    '.' | '+' | '*' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '^' | '$'
                    | '\\' => vec!['\\', '\\', c],
                    '"' => vec!['\\', '"'],
                    c => vec![c],
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// One instant-vector sample as returned by Prometheus.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The workload a sample is about; None for a series without the workload labels.
fn workload_of(s: &Sample) -> Option<Workload> {
    Some(Workload {
        namespace: s.labels.get("destination_workload_namespace")?.clone(),
        workload: s.labels.get("destination_workload")?.clone(),
    })
}

/// Samples keyed by workload; series without the workload labels are ignored.
pub fn by_workload(samples: &[Sample]) -> HashMap<Workload, f64> {
    samples
        .iter()
        .filter_map(|s| Some((workload_of(s)?, s.value)))
        .collect()
}

/// The built-in measurements of one workload over the window (None = no series).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measured {
    pub requests: Option<f64>,
    pub errors: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Requests in the latency histogram and how many were slower than the p99 limit.
    pub slow: Option<[f64; 2]>,
}

/// Results of the batched queries for one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub requests: HashMap<Workload, f64>,
    pub errors: HashMap<Workload, f64>,
    pub p99: HashMap<Workload, f64>,
    /// workload -> (`le` as a number, +Inf as infinity; cumulative count).
    pub buckets: HashMap<Workload, Vec<(f64, f64)>>,
}

/// Either every query answered, or the error of one that failed (a partial picture is not
/// judged).
pub type BatchResult = Result<Batch, String>;

/// Bucket samples keyed by workload: (numeric `le`, +Inf as infinity; cumulative count).
/// Keyed, because every rollout of a tick looks up its two workloads here: a list scanned
/// per lookup made a 10,000-rollout look between checks quadratic.
pub fn buckets_by_workload(samples: &[Sample]) -> HashMap<Workload, Vec<(f64, f64)>> {
    let mut out: HashMap<Workload, Vec<(f64, f64)>> = HashMap::new();
    for s in samples {
        let le = match s.labels.get("le").map(String::as_str) {
            Some("+Inf") => f64::INFINITY,
            Some(le) => match le.parse() {
                Ok(v) => v,
                Err(_) => continue,
            },
            None => continue,
        };
        if let Some(w) = workload_of(s) {
            out.entry(w).or_default().push((le, s.value));
        }
    }
    out
}

pub fn measured(batch: &Batch, w: &Workload, le: Option<f64>) -> Measured {
    let finite = |v: Option<&f64>| v.copied().filter(|x| x.is_finite());
    let bucket = |bound: f64| {
        batch
            .buckets
            .get(w)?
            .iter()
            .find(|(l, _)| *l == bound || (l.is_infinite() && bound.is_infinite()))
            .map(|(_, v)| *v)
            .filter(|v| v.is_finite())
    };
    let slow = le.and_then(|le| {
        let (all, within) = (bucket(f64::INFINITY)?, bucket(le)?);
        Some([all.max(0.0), (all - within).max(0.0)])
    });
    Measured {
        requests: finite(batch.requests.get(w)),
        errors: finite(batch.errors.get(w)),
        p99_ms: finite(batch.p99.get(w)),
        slow,
    }
}

/// Everything measured for one rollout in one window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowData {
    pub canary: Measured,
    pub stable: Measured,
    /// Custom gates with their value, or why there is none.
    pub custom: Vec<(CustomGate, Result<f64, String>)>,
}

pub fn judge_config(settings: &Settings) -> JudgeConfig {
    JudgeConfig {
        confidence: settings.confidence,
        min_requests: settings.min_requests,
        tolerance: settings.tolerance,
        max_error_rate: (1.0 - settings.min_success_rate / 100.0).clamp(0.0, 0.999_999),
        ..JudgeConfig::default()
    }
}

/// Judges one window. `prior` are the cumulative counts before it.
/// Judges one window on top of the cumulative `prior` counts; `weight` is the canary's share
/// (percent) while the window ran, to tell low traffic from traffic that does not arrive.
pub fn evaluate(
    settings: &Settings,
    weight: u32,
    prior: Counts,
    data: Result<WindowData, String>,
) -> Analysis {
    let data = match data {
        Ok(d) => d,
        Err(reason) => {
            return Analysis {
                verdict: Verdict::NoData { reason },
                summary: "no data".into(),
                counts: prior,
            };
        }
    };
    let window_requests = data.canary.requests.unwrap_or(0.0);
    let add = |prior: [f64; 2], window: Option<[f64; 2]>| {
        let w = window.unwrap_or_default();
        [prior[0] + w[0], prior[1] + w[1]]
    };
    let counts = Counts {
        canary_slow: add(prior.canary_slow, data.canary.slow),
        stable_slow: add(prior.stable_slow, data.stable.slow),
        canary: [
            prior.canary[0] + window_requests.max(0.0),
            prior.canary[1] + data.canary.errors.unwrap_or(0.0).max(0.0),
        ],
        stable: [
            prior.stable[0] + data.stable.requests.unwrap_or(0.0).max(0.0),
            prior.stable[1] + data.stable.errors.unwrap_or(0.0).max(0.0),
        ],
    };
    let summary = summarize(&counts, &data);
    if window_requests < 0.5 {
        // No canary request is only suspicious when the stable's traffic says some were
        // due: at 1 req/s, a 10 % canary and a 2 s window, none is the likely outcome, and
        // low traffic must never count towards a rollback.
        let w = f64::from(weight.min(99));
        let expected = data.stable.requests.map(|s| s.max(0.0) * w / (100.0 - w));
        let verdict = match expected {
            Some(e) if e < EXPECTED_CANARY_REQUESTS => Verdict::NotEnoughData {
                reason: format!(
                    "low traffic: no canary request in the window, about {e:.1} expected"
                ),
            },
            _ => Verdict::NoData {
                reason: "no canary requests in the window (is traffic reaching it?)".into(),
            },
        };
        return Analysis {
            verdict,
            summary,
            counts,
        };
    }
    let cfg = judge_config(settings);
    let mut verdicts = Vec::new();
    let errors = judge::judge_errors(
        judge::Counts::new(counts.canary[0], counts.canary[1]),
        judge::Counts::new(counts.stable[0], counts.stable[1]),
        &cfg,
    );
    verdicts.push(convert(errors, "request-success-rate", true));
    let latency = judge::judge_latency(
        LatencyObservation {
            canary_p99_ms: data.canary.p99_ms,
            stable_p99_ms: data.stable.p99_ms,
        },
        settings.max_p99_ms,
        &cfg,
    );
    verdicts.push(convert(latency, "request-duration", false));
    if let (Some(limit), Some(_)) = (latency_bucket(settings.max_p99_ms), data.canary.slow) {
        // p99 ≤ limit means at most 1 % of requests slower than the limit: the same
        // sequential test as for errors, on "slow" instead of "5xx", so a clearly slow canary
        // is rolled back on decisive evidence instead of after `threshold` checks.
        let slow_cfg = JudgeConfig {
            max_error_rate: 0.01,
            ..cfg.clone()
        };
        let slow = judge::judge_errors(
            judge::Counts::new(counts.canary_slow[0], counts.canary_slow[1]),
            judge::Counts::new(counts.stable_slow[0], counts.stable_slow[1]),
            &slow_cfg,
        );
        if let judge::Verdict::Fail { reason } = slow {
            verdicts.push(Verdict::Fail {
                reason: format!(
                    "request-duration: share of requests slower than {} ms: {reason}",
                    fmt_num(limit)
                ),
                decisive: true,
            });
        }
    }
    for (gate, value) in &data.custom {
        verdicts.push(match value {
            Ok(v) if gate.passes(*v) => Verdict::Pass,
            Ok(v) => Verdict::Fail {
                reason: format!(
                    "gate {} = {} (want {})",
                    gate.name,
                    fmt_num(*v),
                    gate.describe()
                ),
                decisive: false,
            },
            Err(reason) => Verdict::NoData {
                reason: format!("gate {}: {reason}", gate.name),
            },
        });
    }
    Analysis {
        verdict: combine(verdicts),
        summary,
        counts,
    }
}

fn convert(v: judge::Verdict, gate: &str, decisive: bool) -> Verdict {
    match v {
        judge::Verdict::Pass => Verdict::Pass,
        judge::Verdict::Fail { reason } => Verdict::Fail {
            reason: format!("{gate}: {reason}"),
            decisive,
        },
        judge::Verdict::Undecided => Verdict::Undecided {
            reason: format!("{gate} undecided"),
        },
        judge::Verdict::NotEnoughData { have, need } => Verdict::NotEnoughData {
            reason: format!("{gate}: {have:.0} of {need:.0} canary requests"),
        },
        judge::Verdict::StableDegraded { reason } => Verdict::StableDegraded {
            reason: format!("{gate}: {reason}"),
        },
        judge::Verdict::InvalidConfig { reason } => Verdict::NoData {
            reason: format!("{gate}: {reason}"),
        },
    }
}

/// The worst verdict wins: a failure over everything; a decisive failure over any other.
fn combine(verdicts: Vec<Verdict>) -> Verdict {
    let rank = |v: &Verdict| match v {
        Verdict::Fail { decisive: true, .. } => 0,
        Verdict::Fail { .. } => 1,
        Verdict::NoData { .. } => 2,
        Verdict::StableDegraded { .. } => 3,
        Verdict::NotEnoughData { .. } => 4,
        Verdict::Undecided { .. } => 5,
        Verdict::Pass => 6,
    };
    verdicts
        .into_iter()
        .min_by_key(rank)
        .unwrap_or(Verdict::Pass)
}

fn summarize(counts: &Counts, data: &WindowData) -> String {
    let rate = |c: [f64; 2]| {
        if c[0] > 0.0 {
            format!("{:.2}%", 100.0 * (1.0 - c[1] / c[0]))
        } else {
            "n/a".into()
        }
    };
    let ms = |v: Option<f64>| {
        v.map(|x| format!("{x:.0}ms"))
            .unwrap_or_else(|| "n/a".into())
    };
    let mut parts = vec![
        format!(
            "success={} (stable {})",
            rate(counts.canary),
            rate(counts.stable)
        ),
        format!(
            "p99={} (stable {})",
            ms(data.canary.p99_ms),
            ms(data.stable.p99_ms)
        ),
        format!("requests={:.0}", counts.canary[0]),
    ];
    for (gate, value) in &data.custom {
        parts.push(match value {
            Ok(v) => format!("{}={}", gate.name, fmt_num((v * 1000.0).round() / 1000.0)),
            Err(_) => format!("{}=n/a", gate.name),
        });
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Defaults;

    fn settings() -> Settings {
        Settings::from_annotations(&Defaults::default(), &BTreeMap::new()).expect("defaults")
    }

    fn window(canary: (f64, f64, f64), stable: (f64, f64, f64)) -> Result<WindowData, String> {
        let m = |(r, e, p): (f64, f64, f64)| Measured {
            requests: Some(r),
            errors: Some(e),
            p99_ms: Some(p),
            slow: None,
        };
        Ok(WindowData {
            canary: m(canary),
            stable: m(stable),
            custom: vec![],
        })
    }

    #[test]
    fn batched_queries_select_every_workload_once() {
        let ws = vec![
            Workload {
                namespace: "shop".into(),
                workload: "podinfo".into(),
            },
            Workload {
                namespace: "shop".into(),
                workload: "podinfo-canary".into(),
            },
            Workload {
                namespace: "pay".into(),
                workload: "api.v2".into(),
            },
        ];
        let q = batch_queries(
            &[(Duration::from_secs(30), ws.clone())],
            &[],
            &[500.0, 1000.0],
        );
        let p99 = q.p99.as_deref().expect("a check has a p99 query");
        assert!(
            q.requests.contains(
                r#"destination_workload_namespace=~"pay",destination_workload=~"api\\.v2"}[30s]"#
            ),
            "{}",
            q.requests
        );
        assert!(
            q.requests.contains(
                r#"destination_workload_namespace=~"shop",destination_workload=~"podinfo|podinfo-canary"}[30s]"#
            ),
            "{}",
            q.requests
        );
        assert_eq!(
            q.requests.matches(" or ").count(),
            1,
            "one branch per namespace"
        );
        assert!(q.errors.contains(r#"response_code=~"5..""#));
        assert!(p99.starts_with("histogram_quantile(0.99, sum by (destination_workload_namespace, destination_workload, le)"));
        assert!(
            q.buckets.contains(r#"le=~"1000(\\.0)?|500(\\.0)?|\\+Inf""#),
            "{}",
            q.buckets
        );
        for query in [&q.requests, &q.errors, p99, &q.buckets] {
            promql_parser::parser::parse(query).expect("valid PromQL");
            assert!(query.contains("[30s]"));
        }

        // A check and a look between checks (different windows) share the requests, errors
        // and buckets queries, one branch each; only the check is in the p99 query.
        let (a, b) = ws.split_at(2);
        let q = batch_queries(
            &[(Duration::from_secs(30), a.to_vec())],
            &[(Duration::from_millis(4_500), b.to_vec())],
            &[500.0],
        );
        for query in [&q.requests, &q.errors, &q.buckets] {
            promql_parser::parser::parse(query).expect("valid PromQL");
            assert!(
                query.contains("[30s]") && query.contains("[4s500ms]"),
                "{query}"
            );
            assert_eq!(query.matches(" or ").count(), 1, "{query}");
        }
        let p99 = q.p99.as_deref().expect("a check has a p99 query");
        promql_parser::parser::parse(p99).expect("valid PromQL");
        assert!(p99.contains("[30s]") && !p99.contains("[4s500ms]"), "{p99}");
        assert!(!p99.contains("api\\\\.v2"), "{p99}");

        // Looks alone: no p99 query at all.
        let q = batch_queries(&[], &[(Duration::from_secs(4), ws)], &[500.0]);
        assert_eq!(q.p99, None);
        assert!(q.requests.contains("api\\\\.v2"), "{}", q.requests);
    }

    #[test]
    fn prometheus_errors_are_no_data_and_keep_counts() {
        let prior = Counts {
            canary: [10.0, 0.0],
            stable: [90.0, 0.0],
            ..Default::default()
        };
        let a = evaluate(&settings(), 10, prior, Err("timeout".into()));
        assert!(matches!(a.verdict, Verdict::NoData { .. }));
        assert_eq!(a.counts, prior);
    }

    #[test]
    fn no_canary_traffic_is_no_data() {
        let a = evaluate(
            &settings(),
            10,
            Counts::default(),
            window((0.0, 0.0, f64::NAN), (100.0, 0.0, 100.0)),
        );
        assert!(matches!(a.verdict, Verdict::NoData { .. }), "{a:?}");
    }

    #[test]
    fn no_canary_request_on_low_traffic_only_holds() {
        // 9 stable requests at a 10 % canary: one canary request expected, none is likely.
        let a = evaluate(
            &settings(),
            10,
            Counts::default(),
            window((0.0, 0.0, f64::NAN), (9.0, 0.0, 100.0)),
        );
        let Verdict::NotEnoughData { reason } = &a.verdict else {
            panic!("{a:?}")
        };
        assert!(reason.contains("low traffic"), "{reason}");
        // 45 stable requests at 10 %: five canary requests were due, so none is suspicious.
        let a = evaluate(
            &settings(),
            10,
            Counts::default(),
            window((0.0, 0.0, f64::NAN), (45.0, 0.0, 100.0)),
        );
        assert!(matches!(a.verdict, Verdict::NoData { .. }), "{a:?}");
    }

    #[test]
    fn healthy_canary_with_enough_traffic_passes_and_accumulates() {
        let a = evaluate(
            &settings(),
            10,
            Counts::default(),
            window((300.0, 0.0, 120.0), (2700.0, 2.0, 110.0)),
        );
        assert_eq!(a.verdict, Verdict::Pass, "{a:?}");
        assert_eq!(a.counts.canary, [300.0, 0.0]);
        assert!(a.summary.contains("success=100.00%"), "{}", a.summary);
    }

    #[test]
    fn broken_canary_fails_decisively() {
        let a = evaluate(
            &settings(),
            10,
            Counts::default(),
            window((300.0, 30.0, 120.0), (2700.0, 2.0, 110.0)),
        );
        assert!(
            matches!(a.verdict, Verdict::Fail { decisive: true, .. }),
            "{a:?}"
        );
    }

    #[test]
    fn slow_canary_fails_one_check() {
        let a = evaluate(
            &settings(),
            10,
            Counts::default(),
            window((300.0, 0.0, 900.0), (2700.0, 2.0, 110.0)),
        );
        assert!(
            matches!(
                a.verdict,
                Verdict::Fail {
                    decisive: false,
                    ..
                }
            ),
            "{a:?}"
        );
    }

    #[test]
    fn clearly_slow_canary_fails_decisively_on_the_share_of_slow_requests() {
        let mut data = window((300.0, 0.0, 900.0), (2700.0, 2.0, 110.0)).expect("ok");
        data.canary.slow = Some([300.0, 45.0]);
        data.stable.slow = Some([2700.0, 5.0]);
        let a = evaluate(&settings(), 10, Counts::default(), Ok(data.clone()));
        assert!(
            matches!(&a.verdict, Verdict::Fail { decisive: true, reason } if reason.contains("slower than 500 ms")),
            "{a:?}"
        );
        assert_eq!(a.counts.canary_slow, [300.0, 45.0]);
        // A canary as fast as stable is not failed by it.
        data.canary = Measured {
            p99_ms: Some(120.0),
            slow: Some([300.0, 1.0]),
            ..data.canary
        };
        let a = evaluate(&settings(), 10, Counts::default(), Ok(data));
        assert_eq!(a.verdict, Verdict::Pass, "{a:?}");
    }

    #[test]
    fn latency_bucket_is_the_boundary_at_or_above_the_limit() {
        assert_eq!(latency_bucket(500.0), Some(500.0));
        assert_eq!(latency_bucket(300.0), Some(500.0));
        assert_eq!(latency_bucket(1e9), None);
    }

    #[test]
    fn few_requests_are_not_enough_data() {
        let a = evaluate(
            &settings(),
            10,
            Counts::default(),
            window((5.0, 0.0, 100.0), (45.0, 0.0, 100.0)),
        );
        assert!(matches!(a.verdict, Verdict::NotEnoughData { .. }), "{a:?}");
    }

    #[test]
    fn custom_gates_fail_or_lack_data() {
        let gate = CustomGate {
            name: "cpu".into(),
            query: "up".into(),
            min: None,
            max: Some(1.0),
        };
        let mut data = window((300.0, 0.0, 100.0), (2700.0, 0.0, 100.0)).expect("ok");
        data.custom = vec![(gate.clone(), Ok(2.0))];
        let a = evaluate(&settings(), 10, Counts::default(), Ok(data.clone()));
        assert!(
            matches!(&a.verdict, Verdict::Fail { reason, decisive: false } if reason.contains("gate cpu = 2")),
            "{a:?}"
        );
        data.custom = vec![(gate, Err("empty result".into()))];
        let a = evaluate(&settings(), 10, Counts::default(), Ok(data));
        assert!(matches!(a.verdict, Verdict::NoData { .. }), "{a:?}");
    }
}
