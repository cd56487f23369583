//! Inline SVG charts, rendered on the server: no script, no external resource, printable.
//! Every data point is a `<circle class="pt pt-<series>">` (the browser test counts them).

use std::fmt::Write as _;

use super::html::esc;

pub const WIDTH: f64 = 720.0;
pub const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// One series: `class` names it in CSS and in the point classes.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub class: &'static str,
    /// (x, y, tooltip)
    pub points: Vec<(f64, f64, String)>,
    /// Hold each value until the next point (a step line: the weight).
    pub steps: bool,
}

/// A horizontal reference line (threshold, limit, decision bound).
#[derive(Debug, Clone, PartialEq)]
pub struct HLine {
    pub y: f64,
    pub label: String,
    pub class: &'static str,
}

/// A vertical marker (a decision on the timeline).
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub x: f64,
    pub label: String,
    pub class: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub id: &'static str,
    pub title: String,
    pub y_unit: &'static str,
    pub series: Vec<Series>,
    pub hlines: Vec<HLine>,
    pub markers: Vec<Marker>,
    /// Fixed y range; otherwise fitted to the data and lines.
    pub y_range: Option<(f64, f64)>,
    /// x labels: (x, text)
    pub x_labels: Vec<(f64, String)>,
}

/// Maps data coordinates to the plot area.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub x0: f64,
    pub x1: f64,
    pub y0: f64,
    pub y1: f64,
}

impl Scale {
    pub fn x(&self, x: f64) -> f64 {
        let span = if self.x1 > self.x0 {
            self.x1 - self.x0
        } else {
            1.0
        };
        LEFT + (x - self.x0) / span * (WIDTH - LEFT - RIGHT)
    }
    pub fn y(&self, y: f64) -> f64 {
        let span = if self.y1 > self.y0 {
            self.y1 - self.y0
        } else {
            1.0
        };
        let y = y.clamp(self.y0, self.y1);
        HEIGHT - BOTTOM - (y - self.y0) / span * (HEIGHT - TOP - BOTTOM)
    }
}

/// Two decimals at most, no trailing zeros: compact and stable path data.
pub fn num(v: f64) -> String {
    let s = format!("{:.2}", v);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// The `d` of a path through the points; `steps` holds each y until the next x.
pub fn path_d(points: &[(f64, f64)], steps: bool) -> String {
    let mut d = String::new();
    let mut last_y = None;
    for (i, (x, y)) in points.iter().enumerate() {
        if i == 0 {
            let _ = write!(d, "M{} {}", num(*x), num(*y));
        } else if steps {
            if let Some(ly) = last_y {
                let _ = write!(d, " L{} {}", num(*x), num(ly));
            }
            let _ = write!(d, " L{} {}", num(*x), num(*y));
        } else {
            let _ = write!(d, " L{} {}", num(*x), num(*y));
        }
        last_y = Some(*y);
    }
    d
}

fn fit(chart: &Chart) -> (f64, f64, f64, f64) {
    let xs = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(chart.markers.iter().map(|m| m.x));
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    for x in xs {
        x0 = x0.min(x);
        x1 = x1.max(x);
    }
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let (y0, y1) = chart.y_range.unwrap_or_else(|| {
        let ys = chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(chart.hlines.iter().map(|h| h.y));
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for y in ys {
            lo = lo.min(y);
            hi = hi.max(y);
        }
        if !lo.is_finite() {
            return (0.0, 1.0);
        }
        let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.01).max(0.5);
        (lo - pad, hi + pad)
    });
    (x0, x1, y0, y1)
}

/// The chart as an `<svg>` element with a legend below it.
pub fn render(chart: &Chart) -> String {
    let (x0, x1, y0, y1) = fit(chart);
    let sc = Scale { x0, x1, y0, y1 };
    let mut s = String::new();
    let _ = write!(
        s,
        "<figure class=\"chart\" id=\"{id}\"><figcaption>{title}</figcaption>\
         <svg viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{title}\" preserveAspectRatio=\"xMidYMid meet\">",
        id = chart.id,
        title = esc(&chart.title),
        w = num(WIDTH),
        h = num(HEIGHT)
    );
    // Axes and y ticks.
    let _ = write!(
        s,
        "<g class=\"axis\"><line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{b}\"/><line x1=\"{l}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/>",
        l = num(LEFT),
        t = num(TOP),
        b = num(HEIGHT - BOTTOM),
        r = num(WIDTH - RIGHT)
    );
    for i in 0..=4 {
        let v = y0 + (y1 - y0) * f64::from(i) / 4.0;
        let y = sc.y(v);
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"{l}\" y1=\"{y}\" x2=\"{r}\" y2=\"{y}\"/><text x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\">{v}{u}</text>",
            l = num(LEFT),
            r = num(WIDTH - RIGHT),
            y = num(y),
            tx = num(LEFT - 4.0),
            ty = num(y + 4.0),
            v = esc(&num(v)),
            u = esc(chart.y_unit)
        );
    }
    let last = chart.x_labels.len().saturating_sub(1);
    for (i, (x, label)) in chart.x_labels.iter().enumerate() {
        let anchor = match i {
            0 => "start",
            i if i == last => "end",
            _ => "middle",
        };
        let _ = write!(
            s,
            "<text x=\"{x}\" y=\"{y}\" text-anchor=\"{anchor}\">{t}</text>",
            x = num(sc.x(*x)),
            y = num(HEIGHT - 8.0),
            t = esc(label)
        );
    }
    s.push_str("</g>");
    for m in &chart.markers {
        let x = num(sc.x(m.x));
        let _ = write!(
            s,
            "<g class=\"marker {c}\"><line x1=\"{x}\" y1=\"{t}\" x2=\"{x}\" y2=\"{b}\"/><text x=\"{x}\" y=\"{ty}\" text-anchor=\"middle\">{l}</text><title>{l}</title></g>",
            c = m.class,
            t = num(TOP),
            b = num(HEIGHT - BOTTOM),
            ty = num(TOP + 8.0),
            l = esc(&m.label)
        );
    }
    for h in &chart.hlines {
        let y = num(sc.y(h.y));
        let _ = write!(
            s,
            "<g class=\"hline {c}\"><line x1=\"{l}\" y1=\"{y}\" x2=\"{r}\" y2=\"{y}\"/><text x=\"{r}\" y=\"{ty}\" text-anchor=\"end\">{t}</text></g>",
            c = h.class,
            l = num(LEFT),
            r = num(WIDTH - RIGHT),
            ty = num(sc.y(h.y) - 3.0),
            t = esc(&h.label)
        );
    }
    for series in &chart.series {
        let pts: Vec<(f64, f64)> = series
            .points
            .iter()
            .map(|(x, y, _)| (sc.x(*x), sc.y(*y)))
            .collect();
        let mut pts_line = pts.clone();
        if series.steps {
            // The last value holds until the right edge.
            if let Some(&(_, y)) = pts.last() {
                pts_line.push((sc.x(x1), y));
            }
        }
        let _ = write!(
            s,
            "<g class=\"series {c}\"><path d=\"{d}\"/>",
            c = series.class,
            d = path_d(&pts_line, series.steps)
        );
        for ((x, y), (_, _, tip)) in pts.iter().zip(&series.points) {
            let _ = write!(
                s,
                "<circle class=\"pt pt-{c}\" cx=\"{x}\" cy=\"{y}\" r=\"3\"><title>{t}</title></circle>",
                c = series.class,
                x = num(*x),
                y = num(*y),
                t = esc(tip)
            );
        }
        s.push_str("</g>");
    }
    s.push_str("</svg><div class=\"legend\">");
    for series in &chart.series {
        let _ = write!(
            s,
            "<span class=\"key {c}\">{l}</span>",
            c = series.class,
            l = esc(&series.label)
        );
    }
    for h in &chart.hlines {
        let _ = write!(
            s,
            "<span class=\"key {c}\">{l}</span>",
            c = h.class,
            l = esc(&h.label)
        );
    }
    s.push_str("</div></figure>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_lines_or_steps() {
        let p = [(0.0, 10.0), (5.0, 20.5), (10.0, 20.5)];
        assert_eq!(path_d(&p, false), "M0 10 L5 20.5 L10 20.5");
        assert_eq!(path_d(&p, true), "M0 10 L5 10 L5 20.5 L10 20.5 L10 20.5");
        assert_eq!(path_d(&[], false), "");
        assert_eq!(num(-0.001), "0");
        assert_eq!(num(1.23456), "1.23");
    }

    #[test]
    fn scale_maps_and_clamps_into_the_plot() {
        let sc = Scale {
            x0: 0.0,
            x1: 10.0,
            y0: 0.0,
            y1: 100.0,
        };
        assert_eq!(sc.x(0.0), LEFT);
        assert_eq!(sc.x(10.0), WIDTH - RIGHT);
        assert_eq!(sc.y(0.0), HEIGHT - BOTTOM);
        assert_eq!(sc.y(100.0), TOP);
        assert_eq!(sc.y(1e9), TOP, "clamped");
    }

    #[test]
    fn one_circle_per_point_and_labels_escaped() {
        let chart = Chart {
            id: "c",
            title: "<b>t</b>".into(),
            y_unit: "%",
            series: vec![Series {
                label: "canary".into(),
                class: "canary",
                points: vec![(0.0, 1.0, "a<".into()), (1.0, 2.0, "b".into())],
                steps: false,
            }],
            hlines: vec![HLine {
                y: 1.5,
                label: "limit".into(),
                class: "limit",
            }],
            markers: vec![Marker {
                x: 0.5,
                label: "rollback \"x\"".into(),
                class: "bad",
            }],
            y_range: None,
            x_labels: vec![],
        };
        let svg = render(&chart);
        assert_eq!(svg.matches("class=\"pt pt-canary\"").count(), 2);
        assert!(svg.contains("&lt;b&gt;t&lt;/b&gt;") && !svg.contains("<b>"));
        assert!(svg.contains("rollback &quot;x&quot;"));
        assert!(svg.contains("a&lt;"));
    }
}
