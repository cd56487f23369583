//! Gates: the PromQL that measures a canary and its stable over a window, and the pure
//! judgement of the results. Built-in gates are batched: one query per gate per tick for all
//! rollouts with the same window, grouped by workload, instead of one query per rollout.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::judge::{self, JudgeConfig, LatencyObservation};
use crate::rollout::machine::{Analysis, Verdict};
use crate::rollout::state::Counts;
use crate::settings::{fmt_num, promql_duration, CustomGate, Settings};

/// A workload as Istio labels it (`destination_workload_namespace`, `destination_workload`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    pub namespace: String,
    pub workload: String,
}

/// The three built-in queries for a set of workloads over one window.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchQueries {
    pub requests: String,
    pub errors: String,
    pub p99: String,
}

const BY: &str = "destination_workload_namespace, destination_workload";

pub fn batch_queries(window: Duration, workloads: &[Workload]) -> BatchQueries {
    let namespaces = regex_alternatives(workloads.iter().map(|w| w.namespace.as_str()));
    let names = regex_alternatives(workloads.iter().map(|w| w.workload.as_str()));
    let selector = format!(
        "reporter=\"destination\",destination_workload_namespace=~\"{namespaces}\",destination_workload=~\"{names}\""
    );
    let range = promql_duration(window);
    BatchQueries {
        requests: format!("sum by ({BY}) (increase(istio_requests_total{{{selector}}}[{range}]))"),
        errors: format!("sum by ({BY}) (increase(istio_requests_total{{{selector},response_code=~\"5..\"}}[{range}]))"),
        p99: format!(
            "histogram_quantile(0.99, sum by ({BY}, le) (rate(istio_request_duration_milliseconds_bucket{{{selector}}}[{range}])))"
        ),
    }
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

/// Samples keyed by workload; series without the workload labels are ignored.
pub fn by_workload(samples: &[Sample]) -> HashMap<Workload, f64> {
    samples
        .iter()
        .filter_map(|s| {
            Some((
                Workload {
                    namespace: s.labels.get("destination_workload_namespace")?.clone(),
                    workload: s.labels.get("destination_workload")?.clone(),
                },
                s.value,
            ))
        })
        .collect()
}

/// The built-in measurements of one workload over the window (None = no series).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measured {
    pub requests: Option<f64>,
    pub errors: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Results of the batched queries for one window: either all three, or the error of the
/// first that failed (a partial picture is not judged).
pub type BatchResult = Result<[HashMap<Workload, f64>; 3], String>;

pub fn measured(batch: &[HashMap<Workload, f64>; 3], w: &Workload) -> Measured {
    let finite = |v: Option<&f64>| v.copied().filter(|x| x.is_finite());
    Measured {
        requests: finite(batch[0].get(w)),
        errors: finite(batch[1].get(w)),
        p99_ms: finite(batch[2].get(w)),
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
pub fn evaluate(settings: &Settings, prior: Counts, data: Result<WindowData, String>) -> Analysis {
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
    let counts = Counts {
        canary: [
            prior.canary[0] + window_requests.max(0.0),
            prior.canary[1] + data.canary.errors.unwrap_or(0.0).max(0.0),
        ],
        stable: [
            prior.stable[0] + data.stable.requests.unwrap_or(0.0).max(0.0),
            prior.stable[1] + data.stable.errors.unwrap_or(0.0).max(0.0),
        ],
    };
    let summary = summarize(settings, &counts, &data);
    if window_requests < 0.5 {
        return Analysis {
            verdict: Verdict::NoData {
                reason: "no canary requests in the window (is traffic reaching it?)".into(),
            },
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

fn summarize(settings: &Settings, counts: &Counts, data: &WindowData) -> String {
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
    let _ = settings;
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
        let q = batch_queries(Duration::from_secs(30), &ws);
        assert!(
            q.requests
                .contains(r#"destination_workload_namespace=~"pay|shop""#),
            "{}",
            q.requests
        );
        assert!(
            q.requests
                .contains(r#"destination_workload=~"api\\.v2|podinfo|podinfo-canary""#),
            "{}",
            q.requests
        );
        assert!(q.errors.contains(r#"response_code=~"5..""#));
        assert!(q.p99.starts_with("histogram_quantile(0.99, sum by (destination_workload_namespace, destination_workload, le)"));
        for query in [&q.requests, &q.errors, &q.p99] {
            promql_parser::parser::parse(query).expect("valid PromQL");
            assert!(query.contains("[30s]"));
        }
    }

    #[test]
    fn prometheus_errors_are_no_data_and_keep_counts() {
        let prior = Counts {
            canary: [10.0, 0.0],
            stable: [90.0, 0.0],
        };
        let a = evaluate(&settings(), prior, Err("timeout".into()));
        assert!(matches!(a.verdict, Verdict::NoData { .. }));
        assert_eq!(a.counts, prior);
    }

    #[test]
    fn no_canary_traffic_is_no_data() {
        let a = evaluate(
            &settings(),
            Counts::default(),
            window((0.0, 0.0, f64::NAN), (100.0, 0.0, 100.0)),
        );
        assert!(matches!(a.verdict, Verdict::NoData { .. }), "{a:?}");
    }

    #[test]
    fn healthy_canary_with_enough_traffic_passes_and_accumulates() {
        let a = evaluate(
            &settings(),
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
    fn few_requests_are_not_enough_data() {
        let a = evaluate(
            &settings(),
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
        let a = evaluate(&settings(), Counts::default(), Ok(data.clone()));
        assert!(
            matches!(&a.verdict, Verdict::Fail { reason, decisive: false } if reason.contains("gate cpu = 2")),
            "{a:?}"
        );
        data.custom = vec![(gate, Err("empty result".into()))];
        let a = evaluate(&settings(), Counts::default(), Ok(data));
        assert!(matches!(a.verdict, Verdict::NoData { .. }), "{a:?}");
    }
}
