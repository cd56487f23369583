//! The pages, rendered on the server. Everything from the cluster (names, annotations,
//! messages: user input) goes through [`esc`].

use std::fmt::Write as _;

use super::history::{CheckPoint, RolloutHistory};
use super::svg::{self, Chart, HLine, Marker, Series};
use super::{RolloutDetail, RolloutList, RolloutSummary};
use crate::settings::fmt_num;

/// HTML-escapes text for element content and double- or single-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '`' => out.push_str("&#96;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
:root{--fg:#1d232b;--muted:#5b6673;--bg:#fff;--line:#d5dbe2;--canary:#d9480f;--stable:#1864ab;--good:#2b8a3e;--bad:#c92a2a;--warn:#e67700}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);margin:0}
header.top{display:flex;gap:1rem;align-items:baseline;padding:.6rem 1.2rem;border-bottom:1px solid var(--line)}
header.top a{color:inherit;text-decoration:none;font-weight:600}
main{padding:1rem 1.2rem;max-width:1400px}
h1{font-size:1.3rem;margin:.2rem 0 .6rem}
h2{font-size:1.05rem;margin:1.4rem 0 .5rem}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:600;color:var(--muted);font-size:.85rem}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.phase{display:inline-block;padding:0 .45rem;border-radius:.6rem;font-size:.85rem;border:1px solid currentColor}
.phase-Succeeded{color:var(--good)}.phase-Failed{color:var(--bad)}.phase-Progressing,.phase-Promoting{color:var(--stable)}.phase-Paused,.phase-Pending{color:var(--warn)}.phase-Cancelled{color:var(--muted)}
svg.bar{width:110px;height:10px;vertical-align:middle}
svg.bar .track{fill:#e9ecef}svg.bar .fill{fill:var(--canary)}svg.bar .max{stroke:var(--fg);stroke-width:1}
.muted{color:var(--muted)}
.vs .c{color:var(--canary)}.vs .s{color:var(--stable)}
.bad{color:var(--bad)}.good{color:var(--good)}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:1rem}
figure.chart{margin:0;border:1px solid var(--line);border-radius:4px;padding:.5rem}
figure.chart figcaption{font-weight:600;margin-bottom:.3rem}
figure.chart svg{width:100%;height:auto;display:block}
svg text{font-size:10px;fill:var(--muted)}
.axis line{stroke:#868e96}.grid{stroke:#eef0f3}
.series path{fill:none;stroke-width:2}
.series.weight path,.pt-weight{stroke:var(--canary)}.pt-weight{fill:var(--canary)}
.series.canary-success path,.series.canary-p99 path{stroke:var(--canary)}.pt-canary-success,.pt-canary-p99{fill:var(--canary)}
.series.stable-success path,.series.stable-p99 path{stroke:var(--stable);stroke-dasharray:5 3}.pt-stable-success,.pt-stable-p99{fill:var(--stable)}
.series.evidence path{stroke:#862e9c}.pt-evidence{fill:#862e9c}.series.evidence-slow path{stroke:#5f3dc4;stroke-dasharray:2 2}.pt-evidence-slow{fill:#5f3dc4}
.hline line{stroke:var(--bad);stroke-dasharray:6 3}.hline text{fill:var(--bad)}
.marker line{stroke:#adb5bd;stroke-dasharray:2 3}.marker.rollback line,.marker.abort line{stroke:var(--bad);stroke-dasharray:none}.marker.promote line,.marker.succeeded line{stroke:var(--good);stroke-dasharray:none}
.legend{font-size:.8rem;display:flex;gap:.8rem;flex-wrap:wrap}
.key::before{content:"";display:inline-block;width:14px;height:3px;margin-right:4px;vertical-align:middle;background:currentColor}
.key.weight,.key.canary-success,.key.canary-p99{color:var(--canary)}.key.stable-success,.key.stable-p99{color:var(--stable)}.key.evidence,.key.evidence-slow{color:#862e9c}.key.limit,.key.bound{color:var(--bad)}
pre{background:#f6f8fa;border:1px solid var(--line);padding:.5rem;overflow-x:auto;white-space:pre-wrap;word-break:break-all;font-size:.82rem}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;margin:0}dl.kv dt{color:var(--muted)}dl.kv dd{margin:0}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(380px,1fr));gap:1rem}
.evidence-box{border:1px solid var(--line);border-radius:4px;padding:.5rem .8rem}
.note{font-size:.85rem;color:var(--muted)}
@media print{
 :root{--bg:#fff;--fg:#000}
 header.top nav,.noprint{display:none!important}
 body{font-size:11px}
 main{max-width:none;padding:0}
 .charts{grid-template-columns:1fr 1fr}
 figure.chart,table,pre,.evidence-box{break-inside:avoid}
 pre{white-space:pre-wrap;border-color:#999}
 a{color:#000;text-decoration:none}
}
"#;

/// The page around `body`.
pub fn layout(title: &str, page: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{t} · canary-gate</title><style>{STYLE}</style></head>\
         <body data-page=\"{page}\"><header class=\"top\"><a href=\"/\">canary-gate</a>\
         <span class=\"muted\">rollouts dashboard (read-only)</span>\
         <nav class=\"muted\"><a href=\"/api/rollouts\">JSON</a> · <a href=\"/metrics\">metrics</a> · <a href=\"/readyz\">readyz</a></nav></header>\
         <main>{body}</main><script src=\"/dashboard.js\"></script></body></html>",
        t = esc(title),
    )
}

/// The weight bar: `weight` of 100, with a tick at the maximum weight.
pub fn weight_bar(weight: u32, max: u32) -> String {
    let w = weight.min(100);
    let m = max.min(100);
    format!(
        "<svg class=\"bar\" viewBox=\"0 0 100 10\" preserveAspectRatio=\"none\" aria-label=\"{w} % to the canary\">\
         <rect class=\"track\" width=\"100\" height=\"10\"/><rect class=\"fill\" width=\"{w}\" height=\"10\"/>\
         <line class=\"max\" x1=\"{m}\" y1=\"0\" x2=\"{m}\" y2=\"10\"/></svg>"
    )
}

pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{}s", s / 60, s % 60)
    } else if s < 86400 {
        format!("{}h{}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{}h", s / 86400, (s % 86400) / 3600)
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.2}%"))
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.0} ms"))
}

/// "canary vs stable" for the last check, or the recorded summary.
pub fn gate_values(r: &RolloutSummary) -> String {
    match &r.last_check {
        Some(c) => format!(
            "<span class=\"vs\">success <span class=\"c\">{}</span> vs <span class=\"s\">{}</span> · p99 <span class=\"c\">{}</span> vs <span class=\"s\">{}</span></span>",
            esc(&pct(c.canary_success)),
            esc(&pct(c.stable_success)),
            esc(&ms(c.canary_p99_ms)),
            esc(&ms(c.stable_p99_ms)),
        ),
        None if !r.gates.is_empty() => esc(&r.gates),
        None => "<span class=\"muted\">no check yet</span>".into(),
    }
}

fn row(r: &RolloutSummary) -> String {
    format!(
        "<tr data-key=\"{ns}/{name}\" data-weight=\"{w}\" data-phase=\"{phase}\">\
         <td>{ns}</td><td><a href=\"{url}\">{name}</a></td>\
         <td><span class=\"phase phase-{phase}\">{phase}</span></td>\
         <td class=\"weight\">{bar} <span class=\"w\">{w}%</span></td>\
         <td class=\"num\">{age}</td><td class=\"gates\">{gates}</td>\
         <td class=\"num\"><span class=\"good\">{passed}</span> / <span class=\"bad\">{failed}</span><span class=\"muted\"> of {threshold}</span></td>\
         <td class=\"msg\">{msg}</td></tr>",
        ns = esc(&r.namespace),
        name = esc(&r.name),
        url = esc(&r.url),
        phase = esc(&r.phase),
        w = r.weight,
        bar = weight_bar(r.weight, r.max_weight),
        age = esc(&age(r.age_seconds)),
        gates = gate_values(r),
        passed = r.passed_checks,
        failed = r.failed_checks,
        threshold = r.threshold,
        msg = esc(&r.message),
    )
}

/// `/`: every rollout; `dashboard.js` keeps the rows live.
pub fn list_page(list: &RolloutList) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Rollouts</h1><p class=\"note\" id=\"status\" data-version=\"{v}\">{n} rollout(s) · {at}{err}</p>",
        v = esc(&list.version),
        n = list.rollouts.len(),
        at = esc(&list.generated_at),
        err = list
            .error
            .as_ref()
            .map(|e| format!(" · <span class=\"bad\">cluster: {}</span>", esc(e)))
            .unwrap_or_default()
    );
    let server_weights: Vec<String> = list
        .rollouts
        .iter()
        .map(|r| format!("{}/{}={}", r.namespace, r.name, r.weight))
        .collect();
    let _ = write!(
        body,
        "<table id=\"rollouts\" data-server-weights=\"{sw}\"><thead><tr><th>Namespace</th><th>Deployment</th><th>Phase</th>\
         <th>Weight</th><th>Age</th><th>Last gates: canary vs stable</th><th>Checks passed / failed</th><th>Message</th></tr></thead><tbody>",
        sw = esc(&server_weights.join(" "))
    );
    for r in &list.rollouts {
        body.push_str(&row(r));
    }
    if list.rollouts.is_empty() {
        body.push_str("<tr class=\"empty\"><td colspan=\"8\" class=\"muted\">no rollouts recorded on any Deployment</td></tr>");
    }
    body.push_str("</tbody></table><ol id=\"poll-log\" hidden></ol>");
    layout("Rollouts", "list", &body)
}

fn x_of(h_start_ms: i64, ms: i64) -> f64 {
    (ms - h_start_ms) as f64 / 1000.0
}

fn x_labels(x0: f64, x1: f64) -> Vec<(f64, String)> {
    let span = (x1 - x0).max(1.0);
    (0..=4)
        .map(|i| {
            let x = x0 + span * f64::from(i) / 4.0;
            (x, format!("+{}", age(x.round() as i64)))
        })
        .collect()
}

fn check_tip(c: &CheckPoint) -> String {
    format!(
        "{} at {} %: {}{}",
        c.at.at,
        c.weight,
        c.verdict,
        if c.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", c.reason)
        }
    )
}

/// The four charts of a rollout page.
pub fn charts(d: &RolloutDetail) -> Vec<Chart> {
    let h = &d.history;
    let r = &d.rollout;
    let start = h
        .weights
        .front()
        .map(|w| w.at.ms)
        .into_iter()
        .chain(h.checks.front().map(|c| c.at.ms))
        .min()
        .unwrap_or(0);
    let end = h
        .weights
        .back()
        .map(|w| w.at.ms)
        .into_iter()
        .chain(h.checks.back().map(|c| c.at.ms))
        .chain(h.decisions.back().map(|c| c.at.ms))
        .max()
        .unwrap_or(start);
    let labels = x_labels(0.0, x_of(start, end));
    let weight = Chart {
        id: "chart-weight",
        title: "Weight to the canary over time, with each decision".into(),
        y_unit: "%",
        series: vec![Series {
            label: "canary weight".into(),
            class: "weight",
            points: h
                .weights
                .iter()
                .map(|w| {
                    (
                        x_of(start, w.at.ms),
                        f64::from(w.weight),
                        format!("{}: {} % ({})", w.at.at, w.weight, w.phase),
                    )
                })
                .collect(),
            steps: true,
        }],
        hlines: vec![HLine {
            y: f64::from(r.max_weight),
            label: format!("max {} %", r.max_weight),
            class: "limit",
        }],
        markers: h
            .decisions
            .iter()
            .map(|m| Marker {
                x: x_of(start, m.at.ms),
                label: if m.decision == "step" {
                    String::new()
                } else {
                    m.decision.to_string()
                },
                class: m.decision,
            })
            .collect(),
        y_range: Some((0.0, 100.0)),
        x_labels: labels.clone(),
    };
    let series =
        |label: &str, class: &'static str, f: &dyn Fn(&CheckPoint) -> Option<f64>| Series {
            label: label.to_string(),
            class,
            points: h
                .checks
                .iter()
                .filter_map(|c| f(c).map(|v| (x_of(start, c.at.ms), v, check_tip(c))))
                .collect(),
            steps: false,
        };
    let min_success = r.min_success_rate;
    let max_p99 = r.max_p99_ms;
    let lowest = h
        .checks
        .iter()
        .flat_map(|c| [c.canary_success, c.stable_success])
        .flatten()
        .fold(min_success, f64::min);
    let success = Chart {
        id: "chart-success",
        title: "Success rate per check: canary vs stable".into(),
        y_unit: "%",
        series: vec![
            series("canary", "canary-success", &|c| c.canary_success),
            series("stable", "stable-success", &|c| c.stable_success),
        ],
        hlines: vec![HLine {
            y: min_success,
            label: format!("threshold {} %", fmt_num(min_success)),
            class: "limit",
        }],
        markers: vec![],
        y_range: Some(((lowest - 0.5).floor().max(0.0), 100.0)),
        x_labels: labels.clone(),
    };
    let latency = Chart {
        id: "chart-latency",
        title: "p99 latency per check: canary vs stable".into(),
        y_unit: "ms",
        series: vec![
            series("canary", "canary-p99", &|c| c.canary_p99_ms),
            series("stable", "stable-p99", &|c| c.stable_p99_ms),
        ],
        hlines: vec![HLine {
            y: max_p99,
            label: format!("limit {} ms", fmt_num(max_p99)),
            class: "limit",
        }],
        markers: vec![],
        y_range: None,
        x_labels: labels.clone(),
    };
    let ln10 = std::f64::consts::LN_10;
    let bound = d.evidence.bound_log_e / ln10;
    let highest = h
        .checks
        .iter()
        .flat_map(|c| [Some(c.log_e_errors), c.log_e_slow])
        .flatten()
        .map(|v| v / ln10)
        .fold(bound, f64::max);
    let evidence = Chart {
        id: "chart-evidence",
        title: "Evidence against the canary: log₁₀ E per check vs the bound 1/α".into(),
        y_unit: "",
        series: vec![
            series("5xx e-value (log₁₀ E)", "evidence", &|c| {
                Some((c.log_e_errors / ln10).max(-4.0))
            }),
            series(
                "slow-request e-value (log₁₀ E)",
                "evidence-slow",
                &|c| c.log_e_slow.map(|v| (v / ln10).max(-4.0)),
            ),
        ],
        hlines: vec![HLine {
            y: bound,
            label: format!("bound 1/α = {}", fmt_num((1.0 / d.evidence.alpha).round())),
            class: "bound",
        }],
        markers: vec![],
        y_range: Some((-4.0, (highest * 1.2).clamp(bound + 1.0, 40.0))),
        x_labels: labels,
    };
    vec![weight, success, latency, evidence]
}

fn checks_table(h: &RolloutHistory) -> String {
    let mut s = String::from(
        "<table class=\"checks\"><thead><tr><th>Time</th><th>Weight</th><th>Verdict</th><th>Decision</th>\
         <th>Success canary / stable</th><th>p99 canary / stable</th><th>Canary requests</th><th>log₁₀ E (5xx / slow)</th><th>Reason</th></tr></thead><tbody>",
    );
    for c in h.checks.iter().rev() {
        let class = match c.verdict {
            "fail" => "bad",
            "pass" => "good",
            _ => "muted",
        };
        let _ = write!(
            s,
            "<tr class=\"check\"><td>{at}</td><td class=\"num\">{w}%</td><td class=\"{class}\">{v}</td><td>{dec}</td>\
             <td class=\"vs\"><span class=\"c\">{cs}</span> / <span class=\"s\">{ss}</span></td>\
             <td class=\"vs\"><span class=\"c\">{cp}</span> / <span class=\"s\">{sp}</span></td><td class=\"num\">{n:.0}</td>\
             <td class=\"num\">{e} / {es}</td><td>{reason}</td></tr>",
            at = clock(&c.at.at),
            w = c.weight,
            v = esc(c.verdict),
            dec = esc(c.decision.unwrap_or("")),
            cs = esc(&pct(c.canary_success)),
            ss = esc(&pct(c.stable_success)),
            cp = esc(&ms(c.canary_p99_ms)),
            sp = esc(&ms(c.stable_p99_ms)),
            n = c.canary_requests,
            e = esc(&format!("{:.2}", c.log_e_errors / std::f64::consts::LN_10)),
            es = esc(
                &c.log_e_slow
                    .map(|v| format!("{:.2}", v / std::f64::consts::LN_10))
                    .unwrap_or_else(|| "n/a".into())
            ),
            reason = esc(&c.reason),
        );
    }
    if h.checks.is_empty() {
        s.push_str("<tr><td colspan=\"9\" class=\"muted\">no check yet</td></tr>");
    }
    s.push_str("</tbody></table>");
    s
}

/// The part of a rollout page that changes while it runs (replaced by `dashboard.js`).
pub fn live(d: &RolloutDetail) -> String {
    let r = &d.rollout;
    let h = &d.history;
    let mut s = String::new();
    let _ = write!(
        s,
        "<div class=\"cols\"><dl class=\"kv\" id=\"summary\">\
         <dt>Phase</dt><dd><span class=\"phase phase-{phase}\" id=\"phase\">{phase}</span></dd>\
         <dt>Weight</dt><dd>{bar} <span id=\"weight\">{w}%</span> <span class=\"muted\">(steps of {step} % to {max} %)</span></dd>\
         <dt>Checks</dt><dd><span class=\"good\">{passed} passed</span> · <span class=\"bad\">{failed} failed</span> of {threshold} · {inc} inconclusive</dd>\
         <dt>Age</dt><dd>{age} (since {started})</dd>\
         <dt>Revisions</dt><dd>canary <code>{cr}</code> against stable <code>{sr}</code></dd>\
         <dt>Last gates</dt><dd>{gates}</dd>\
         <dt>Message</dt><dd id=\"message\">{msg}</dd></dl>",
        phase = esc(&r.phase),
        bar = weight_bar(r.weight, r.max_weight),
        w = r.weight,
        step = r.step_weight,
        max = r.max_weight,
        passed = r.passed_checks,
        failed = r.failed_checks,
        threshold = r.threshold,
        inc = r.inconclusive_checks,
        age = esc(&age(r.age_seconds)),
        started = esc(&r.started_at),
        cr = esc(&r.canary_revision),
        sr = esc(&r.stable_revision),
        gates = esc(&r.gates),
        msg = esc(&r.message),
    );
    let e = &d.evidence;
    let ln10 = std::f64::consts::LN_10;
    let failing: Vec<&CheckPoint> = h.checks.iter().filter(|c| c.verdict == "fail").collect();
    let _ = write!(
        s,
        "<div class=\"evidence-box\" id=\"evidence\" data-decisive=\"{decisive}\"><strong>Evidence</strong> \
         <span class=\"note\">(always-valid sequential test on cumulative counts, src/judge.rs)</span>\
         <dl class=\"kv\"><dt>5xx, canary vs stable</dt><dd><span id=\"e-errors\">E = {ee}</span> (log₁₀ E = {le:.2})</dd>\
         <dt>slow requests (&gt; p99 limit)</dt><dd>{slow}</dd>\
         <dt>decision bound</dt><dd>1/α = {bound} (α = {alpha}: false-rollback probability over the whole rollout)</dd>\
         <dt>verdict</dt><dd class=\"{vclass}\">{verdict}</dd></dl>{fail}</div></div>",
        decisive = e.decisive,
        ee = esc(&fmt_e(e.log_e_errors)),
        le = e.log_e_errors / ln10,
        slow = e
            .log_e_slow
            .map(|l| format!("E = {} (log₁₀ E = {:.2})", esc(&fmt_e(l)), l / ln10))
            .unwrap_or_else(|| "not measured".into()),
        bound = esc(&fmt_num((1.0 / e.alpha).round())),
        alpha = esc(&fmt_num((e.alpha * 1e6).round() / 1e6)),
        vclass = if e.decisive { "bad" } else { "good" },
        verdict = if e.decisive {
            "decisive evidence against the canary (E ≥ 1/α)"
        } else {
            "not decisive (E < 1/α)"
        },
        fail = if failing.is_empty() {
            String::new()
        } else {
            let mut f = String::from("<p id=\"failing\"><strong class=\"bad\">Failing gate:</strong> ");
            let reasons: Vec<String> = failing.iter().rev().take(3).map(|c| esc(&c.reason)).collect();
            f.push_str(&reasons.join("<br>"));
            f.push_str("</p>");
            f
        }
    );
    s.push_str("<h2>Charts</h2><div class=\"charts\">");
    for chart in charts(d) {
        s.push_str(&svg::render(&chart));
    }
    s.push_str("</div><h2>Checks</h2>");
    s.push_str(&checks_table(h));
    s.push_str("<h2>Events</h2><table class=\"events\"><thead><tr><th>Time</th><th>Type</th><th>Reason</th><th>Message</th></tr></thead><tbody>");
    for ev in h.events.iter().rev() {
        let _ = write!(
            s,
            "<tr class=\"event\"><td>{at}</td><td class=\"{c}\">{k}</td><td>{r}</td><td>{m}</td></tr>",
            at = clock(&ev.at.at),
            c = if ev.warning { "bad" } else { "muted" },
            k = if ev.warning { "Warning" } else { "Normal" },
            r = esc(&ev.reason),
            m = esc(&ev.message),
        );
    }
    if h.events.is_empty() {
        s.push_str("<tr><td colspan=\"4\" class=\"muted\">no event seen by this process");
        if h.restored {
            s.push_str(" (it started during the rollout: see <code>kubectl describe</code>)");
        }
        s.push_str("</td></tr>");
    }
    s.push_str("</tbody></table>");
    s
}

/// `22:24:58` of an RFC 3339 timestamp (UTC), for tables; the full one is in the title.
pub fn clock(at: &str) -> String {
    let t = at.split_once('T').map_or(at, |(_, t)| t);
    let t = t.split(['.', 'Z', '+']).next().unwrap_or(t);
    format!(
        "<time datetime=\"{}\" title=\"{}\">{}</time>",
        esc(at),
        esc(at),
        esc(t)
    )
}

/// E from its logarithm, readable at any size.
pub fn fmt_e(log_e: f64) -> String {
    let l10 = log_e / std::f64::consts::LN_10;
    if !(-3.0..=6.0).contains(&l10) {
        format!("10^{l10:.1}")
    } else {
        let e = log_e.exp();
        if e >= 100.0 {
            format!("{e:.0}")
        } else {
            format!("{e:.3}")
        }
    }
}

/// `/rollouts/<ns>/<name>`.
pub fn rollout_page(d: &RolloutDetail) -> String {
    let r = &d.rollout;
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>{ns}/{name}</h1><p class=\"noprint note\"><a href=\"/\">← all rollouts</a> · <a href=\"/api/rollouts/{uns}/{uname}\">JSON</a></p>\
         <section id=\"live\" data-version=\"{v}\">{live}</section>",
        ns = esc(&r.namespace),
        name = esc(&r.name),
        uns = esc(&super::path_segment(&r.namespace)),
        uname = esc(&super::path_segment(&r.name)),
        v = esc(&d.version),
        live = live(d),
    );
    body.push_str("<div class=\"cols\"><div><h2>Plan</h2><p>");
    body.push_str(&esc(&d.plan));
    body.push_str("</p><h2>Settings</h2><dl class=\"kv\">");
    for (k, v) in &d.settings {
        let _ = write!(body, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
    }
    body.push_str("</dl></div><div><h2>kubectl</h2><pre class=\"kubectl\">");
    for c in &d.kubectl {
        let _ = writeln!(body, "$ {}", esc(c));
    }
    body.push_str("</pre></div></div><h2>PromQL run at each check</h2><p class=\"note\">Over one interval for this rollout; the analyzer batches every rollout with the same window into one query per gate.</p>");
    for q in &d.queries {
        let _ = write!(
            body,
            "<h3 class=\"note\">{}</h3><pre class=\"promql\">{}</pre>",
            esc(&q.gate),
            esc(&q.promql)
        );
    }
    layout(&format!("{}/{}", r.namespace, r.name), "rollout", &body)
}

pub fn not_found(what: &str) -> String {
    layout(
        "not found",
        "error",
        &format!(
            "<h1>Not found</h1><p>{}</p><p><a href=\"/\">all rollouts</a></p>",
            esc(what)
        ),
    )
}

pub fn unavailable(why: &str) -> String {
    layout(
        "unavailable",
        "error",
        &format!(
            "<h1>Cluster unavailable</h1><p class=\"bad\">{}</p><p><a href=\"/\">all rollouts</a></p>",
            esc(why)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_a_hostile_annotation() {
        let hostile = r#"</td><script>alert('x')</script><img src=x onerror="alert(1)">&amp;`"#;
        let e = esc(hostile);
        assert_eq!(
            e,
            "&lt;/td&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;amp;&#96;"
        );
        for bad in ['<', '>', '"', '\''] {
            assert!(!e.contains(bad), "{bad} left in {e}");
        }
        assert_eq!(esc("podinfo-6.0.1 ≥ 99 %"), "podinfo-6.0.1 ≥ 99 %");
    }

    #[test]
    fn a_hostile_message_stays_text_in_the_list() {
        let r = RolloutSummary {
            namespace: "shop".into(),
            name: "podinfo".into(),
            phase: "Failed".into(),
            weight: 0,
            max_weight: 50,
            step_weight: 10,
            threshold: 5,
            started_at: "2026-01-01T00:00:00Z".into(),
            phase_since: "2026-01-01T00:00:00Z".into(),
            age_seconds: 75,
            failed_checks: 1,
            passed_checks: 2,
            inconclusive_checks: 0,
            canary_revision: "c".into(),
            stable_revision: "s".into(),
            gates: "<b>bold</b>".into(),
            message: "<script>alert(1)</script>".into(),
            min_success_rate: 99.0,
            max_p99_ms: 500.0,
            last_check: None,
            url: "/rollouts/shop/podinfo".into(),
        };
        let page = list_page(&RolloutList {
            version: "v".into(),
            generated_at: "now".into(),
            rollouts: vec![r],
            error: None,
        });
        assert!(!page.contains("<script>alert"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&lt;b&gt;bold&lt;/b&gt;"));
        assert!(page.contains("1m15s"));
    }

    #[test]
    fn weight_bar_and_e_formatting() {
        assert!(weight_bar(30, 50).contains("class=\"fill\" width=\"30\""));
        assert!(weight_bar(300, 50).contains("width=\"100\""));
        assert_eq!(fmt_e(0.0), "1.000");
        assert_eq!(fmt_e(100.0_f64.ln()), "100");
        assert_eq!(fmt_e(30.0), "10^13.0");
        assert!(clock("2026-12-01T22:24:58.623166254Z").contains(">22:24:58</time>"));
    }
}
