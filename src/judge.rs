//! Canary judgement: an always-valid sequential error-rate gate and a simple p99 latency gate.
//!
//! Every analysis interval the analyzer asks Prometheus for the **cumulative** request and 5xx
//! counts of the canary and of the stable workload since the canary started, and calls
//! [`judge_errors`]. The answer is a [`Verdict`]: step the weight up (`Pass`), hold it
//! (`NotEnoughData`, `Undecided`, `StableDegraded`) or roll back (`Fail`).
//!
//! # Why not a fixed threshold
//!
//! "Success rate ≥ 99 % over the last 30 s, 5 failed checks → rollback" rolls back healthy
//! canaries on low traffic (one 5xx in 60 requests is 98.3 %) and lets a badly broken canary
//! hurt users for `threshold × interval`. Re-testing a fixed-sample test every interval is no
//! cure either: with repeated looks its false-alarm rate grows without bound.
//!
//! # The test: a one-sided mixture SPRT (an e-process), valid under continuous monitoring
//!
//! Notation: `n` cumulative requests, `S` cumulative errors, `F = n − S`, `p̂ = S / n`,
//! `α = 1 − confidence`. Requests are modelled as Bernoulli trials (error or not).
//!
//! **Canary, evidence that its error probability is above a bound `b`** (H0: `p ≤ b`):
//!
//! ```text
//!   E⁺ₙ(b) = (1/K) · Σₖ (pₖ / b)^S · ((1 − pₖ) / (1 − b))^F,   pₖ = min(κₖ · b, 1)
//!   κ ∈ {1.5, 2, 3, 5, 10, 25}, K = 6            (see `KAPPAS`)
//! ```
//!
//! Each summand is Wald's likelihood ratio of the simple alternative `pₖ` against `b`
//! (A. Wald, "Sequential tests of statistical hypotheses", Ann. Math. Statist. 16, 1945).
//! For one request, `E[ratio] = p·pₖ/b + (1−p)(1−pₖ)/(1−b)`, which is linear in `p`, equals 1
//! at `p = b` and is ≤ 1 for every `p ≤ b`. So under the *composite* null — every request's
//! conditional error probability is ≤ `b`, whatever happened before — `E⁺ₙ(b)` is a
//! nonnegative supermartingale starting at 1, and so is the mixture over the finite prior on
//! the alternatives (H. Robbins, "Statistical methods related to the law of the iterated
//! logarithm", Ann. Math. Statist. 41, 1970: the method of mixtures). Ville's maximal
//! inequality (J. Ville, *Étude critique de la notion de collectif*, 1939) then gives
//!
//! ```text
//!   P( ∃ n : E⁺ₙ(b) ≥ 1/a ) ≤ a        for any stopping rule, any number of looks.
//! ```
//!
//! This is the "always valid" / anytime-valid property of mixture SPRTs (R. Johari,
//! P. Koomen, L. Pekelis, D. Walsh, "Always valid inference: continuous monitoring of A/B
//! tests", Operations Research 2022; S. Howard, A. Ramdas, J. McAuliffe, J. Sekhon,
//! "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 49,
//! 2021). `E⁺ₙ(b)` is nonincreasing in `b` (the factor `S·ln κ` does not depend on `b` and
//! `(1 − κb)/(1 − b)` decreases in `b`), so `{b : E⁺ₙ(b) < 1/a}` is an interval
//! `[L, 1]`: `L` is a time-uniform lower confidence bound ([`lower_confidence_bound`]).
//!
//! **Stable, evidence that its error probability is below `q`** (H0: `p ≥ q`), the mirror
//! image with alternatives `q / κₖ`:
//!
//! ```text
//!   E⁻ₙ(q) = (1/K) · Σₖ κₖ^(−S) · ((1 − q/κₖ) / (1 − q))^F,   nondecreasing in q,
//!   Uₙ = inf { q : E⁻ₙ(q) ≥ 2/α }      a time-uniform upper confidence bound (level α/2).
//! ```
//!
//! The discrete one-sided mixture was chosen over the two-sided beta-binomial (conjugate)
//! mixture because it pays `ln K ≈ 1.8` nats for not knowing the alternative instead of the
//! ≈ 2.5–3.5 nats Occam term of a continuous prior plus `ln 2` for two-sidedness; in this
//! regime that makes a subtly broken canary fail roughly 25 % sooner, with the same guarantee.
//!
//! # The decision (per interval, on cumulative counts)
//!
//! With `thr = 2/α` (the error budget α is split: α/2 for the canary, α/2 for the stable bound):
//!
//! 1. `NotEnoughData` while the canary has fewer than `min_requests` requests (or the inputs
//!    are not finite and non-negative).
//! 2. **Relative fail**: `E⁺(B_rel) ≥ thr` with `B_rel = (1 + tolerance)·U_stable + abs_floor`
//!    — the canary's error rate is significantly above `1.5 ×` stable's (plus the floor).
//!    The absolute floor `abs_floor` (default 0.002 = 0.2 percentage points) keeps "0 % vs
//!    0.2 %" from being "infinitely worse": below `abs_floor` nothing is ever a relative
//!    failure. If the stable workload has no data, `U_stable = 1` and only the absolute
//!    check remains.
//! 3. **Absolute fail**: `E⁺(max_error_rate) ≥ thr` — unless the stable workload itself
//!    breaches the maximum (point estimate above `max_error_rate` on at least `min_requests`
//!    requests): then `StableDegraded` (the canary is not significantly worse than stable,
//!    otherwise step 2 would have fired; platform trouble, hold).
//! 4. **Pass** unless the canary looks *suspicious*: with the pass limit
//!    `L = min(max_error_rate, (1 + tolerance)·p̂_stable + abs_floor)` and the signed-root
//!    likelihood-ratio statistic `z = sign(p̂ − L)·√(2·n·KL(p̂ ‖ L))` (`KL` the Bernoulli
//!    Kullback–Leibler divergence; ≈ a fixed-sample one-sided z score), the canary passes
//!    iff `z ≤ hold_z` (default 1.0). Otherwise `Undecided` (or `StableDegraded` when the
//!    stable breaches the maximum): the weight holds and more evidence accumulates at the
//!    current weight. This is a heuristic brake, not a test — holding is always safe — and it
//!    is what keeps a subtly broken canary (1.5 % vs 0.1 %) from stepping to max weight
//!    before the sequential test has enough evidence to roll it back, while a healthy canary
//!    (whose `z` is negative most of the time) steps once per interval.
//!
//! **Guarantee.** Call the canary *acceptable* if `p_c ≤ max_error_rate` and
//! `p_c ≤ (1 + tolerance)·p_s + abs_floor`. Then `P(judge_errors ever returns Fail) ≤ α`,
//! over the whole rollout, however often it is called. Proof: with probability ≥ 1 − α/2,
//! `Uₜ ≥ p_s` at all times; then both bounds `B` tested in steps 2–3 are ≥
//! `B* = min(max_error_rate, (1+tolerance)·p_s + abs_floor) ≥ p_c`, so by monotonicity
//! `E⁺(B) ≤ E⁺(B*)`, and `E⁺(B*)` crosses `2/α` with probability ≤ α/2. The absolute check
//! only needs the canary's requests to have conditional error probability ≤ the bound (it
//! holds for drifting traffic); the relative check assumes a stationary stable error rate.
//! A `Fail` is therefore decisive: the caller should roll back at once, not count it.
//!
//! Fractional counts (Prometheus `increase()` extrapolates) are used as-is: the formulas are
//! smooth in `n` and `S`; `errors > total` (scrape skew) is clamped to `total`.
//!
//! # Latency
//!
//! [`judge_latency`] is a per-window rule on p99 values (no counts, so no sequential test):
//! `Fail` means one failed check and the caller applies its failure threshold. For a
//! sequential latency gate, feed [`judge_errors`] with "errors" = requests slower than the
//! limit (`total − bucket{le="500"}` of `istio_request_duration_milliseconds_bucket`) and
//! `max_error_rate = 0.01`: p99 ≤ 500 ms ⇔ at most 1 % of requests are slower than 500 ms.
#![forbid(unsafe_code)]

use std::fmt;

/// Cumulative requests and 5xx errors since the canary started. `f64` because Prometheus
/// `increase()` yields fractional counts.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Counts {
    /// Requests (all response codes).
    pub total: f64,
    /// Requests answered with a 5xx.
    pub errors: f64,
}

impl Counts {
    /// Convenience constructor.
    pub fn new(total: f64, errors: f64) -> Self {
        Counts { total, errors }
    }
}

/// Tuning of the gates. `Default` is the reference scenario: 99 % confidence, 50 canary
/// requests before any judgement, canary may be 1.5 × stable's error rate + 0.2 pp, at most
/// 1 % errors.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeConfig {
    /// `1 − α`, α being the bound on the false-rollback probability over a whole rollout.
    /// Open interval (0, 1); default 0.99.
    pub confidence: f64,
    /// Cumulative canary requests needed before any judgement; ≥ 0; default 50.
    pub min_requests: f64,
    /// Relative tolerance: the canary may have up to `(1 + tolerance) ×` stable's error rate
    /// (plus `abs_floor`); ≥ 0; default 0.5.
    pub tolerance: f64,
    /// Absolute slack (a rate, 0.002 = 0.2 percentage points) added to the stable-based limit
    /// so that 0 % vs 0.2 % on few requests is not "infinitely worse"; [0, 1); default 0.002.
    pub abs_floor: f64,
    /// Maximum acceptable error rate, `1 − min success rate`; [0, 1); default 0.01.
    pub max_error_rate: f64,
    /// Added field. Pass-brake: the canary passes only if its signed-root likelihood-ratio
    /// statistic against the pass limit is ≤ `hold_z` (a one-sided z score; 0 = "point
    /// estimate within the limit", larger = more lenient). Finite, ≥ 0; default 1.0.
    pub hold_z: f64,
    /// Added field. Latency: the canary p99 may exceed stable's p99 by this fraction before it
    /// counts as a regression; ≥ 0; default 0.5.
    pub latency_tolerance: f64,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig {
            confidence: 0.99,
            min_requests: 50.0,
            tolerance: 0.5,
            abs_floor: 0.002,
            max_error_rate: 0.01,
            hold_z: 1.0,
            latency_tolerance: 0.5,
        }
    }
}

impl JudgeConfig {
    /// Checks every field; the message names the bad field, its value and the allowed range.
    pub fn validate(&self) -> Result<(), String> {
        fn check(name: &str, v: f64, ok: bool, range: &str) -> Result<(), String> {
            if ok && v.is_finite() {
                Ok(())
            } else {
                Err(format!("{name} must be {range}, got {v}"))
            }
        }
        let c = self.confidence;
        check(
            "confidence",
            c,
            c > 0.0 && c < 1.0,
            "in the open interval (0, 1), e.g. 0.99",
        )?;
        check(
            "min_requests",
            self.min_requests,
            self.min_requests >= 0.0,
            "a finite number >= 0",
        )?;
        check(
            "tolerance",
            self.tolerance,
            self.tolerance >= 0.0,
            "a finite number >= 0 (0.5 = canary may have 1.5 x stable's error rate)",
        )?;
        check(
            "abs_floor",
            self.abs_floor,
            (0.0..1.0).contains(&self.abs_floor),
            "in [0, 1) (a rate: 0.002 = 0.2 percentage points)",
        )?;
        check(
            "max_error_rate",
            self.max_error_rate,
            (0.0..1.0).contains(&self.max_error_rate),
            "in [0, 1) (a rate: 0.01 = 99 % success)",
        )?;
        check(
            "hold_z",
            self.hold_z,
            self.hold_z >= 0.0,
            "a finite number >= 0",
        )?;
        check(
            "latency_tolerance",
            self.latency_tolerance,
            self.latency_tolerance >= 0.0,
            "a finite number >= 0 (0.5 = canary p99 may be 1.5 x stable's)",
        )
    }

    /// `α = 1 − confidence`.
    pub fn alpha(&self) -> f64 {
        1.0 - self.confidence
    }
}

/// The answer of a gate for one interval.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Too few canary requests to judge (`have < need`), or unusable inputs (NaN, negative,
    /// infinite: reported as `have: 0`). For latency: no canary p99 (`have: 0, need: 1`).
    /// The weight holds.
    NotEnoughData { have: f64, need: f64 },
    /// The canary is not worse: step the weight up (or promote at max weight).
    Pass,
    /// Enough data, but not decisive either way: the weight holds this interval.
    Undecided,
    /// The canary is bad. From [`judge_errors`] this is decisive (false-rollback probability
    /// ≤ α over the rollout): roll back now. From [`judge_latency`] it is one failed check.
    Fail { reason: String },
    /// The stable workload itself breaches the limit and the canary is not significantly
    /// worse: platform trouble, don't blame the canary, hold the weight.
    StableDegraded { reason: String },
    /// Added variant. The configuration (or the latency limit) is invalid; the message is the
    /// one of [`JudgeConfig::validate`]. Callers that validate up front never see it. Hold.
    InvalidConfig { reason: String },
}

impl Verdict {
    /// `true` for `Pass`.
    pub fn is_pass(&self) -> bool {
        matches!(self, Verdict::Pass)
    }
    /// `true` for `Fail`.
    pub fn is_fail(&self) -> bool {
        matches!(self, Verdict::Fail { .. })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::NotEnoughData { have, need } => {
                write!(f, "not enough data ({have:.0} of {need:.0} requests)")
            }
            Verdict::Pass => f.write_str("pass"),
            Verdict::Undecided => f.write_str("undecided"),
            Verdict::Fail { reason } => write!(f, "fail: {reason}"),
            Verdict::StableDegraded { reason } => write!(f, "stable degraded: {reason}"),
            Verdict::InvalidConfig { reason } => write!(f, "invalid config: {reason}"),
        }
    }
}

/// Per-window p99 latencies (e.g. `histogram_quantile(0.99, …)`); `None` when there were no
/// requests (Prometheus returns NaN, which is treated the same way).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LatencyObservation {
    pub canary_p99_ms: Option<f64>,
    pub stable_p99_ms: Option<f64>,
}

/// Multipliers `κ` of the alternatives mixed in the e-processes (uniform weights 1/K).
/// Ratios of interest: ≈ 1.5–3 (subtly broken vs the stable-based limit), 5–25 (broken),
/// more (all requests fail — 25 already rejects in a handful of errors).
pub const KAPPAS: [f64; 6] = [1.5, 2.0, 3.0, 5.0, 10.0, 25.0];

/// `x · l` with the convention `0 · (±∞) = 0` (so `0 · ln 0 = 0`).
fn x_times(x: f64, l: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else {
        x * l
    }
}

/// `ln((1 − a) / (1 − b))`, accurate for small rates.
fn ln_ratio_complement(a: f64, b: f64) -> f64 {
    (-a).ln_1p() - (-b).ln_1p()
}

/// `ln( (1/K) Σ exp(tₖ) )`, robust to ±∞ terms.
fn log_mean_exp(terms: &[f64]) -> f64 {
    let m = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY || m == f64::INFINITY {
        return m;
    }
    let sum: f64 = terms.iter().map(|t| (t - m).exp()).sum();
    m + sum.ln() - (terms.len() as f64).ln()
}

/// `ln E⁺ₙ(b)`: log evidence against H0 "error probability ≤ b" (see the module docs).
/// Nonincreasing in `b`. `n`, `s` must be sanitized (finite, `0 ≤ s ≤ n`).
pub fn log_evidence_above(n: f64, s: f64, b: f64) -> f64 {
    if b.is_nan() || b >= 1.0 {
        return f64::NEG_INFINITY; // nothing can be above 1
    }
    if b <= 0.0 {
        // H0: no request ever fails; one error refutes it with certainty.
        return if s > 0.0 { f64::INFINITY } else { 0.0 };
    }
    let f = n - s;
    let mut terms = [0.0; KAPPAS.len()];
    for (t, k) in terms.iter_mut().zip(KAPPAS) {
        let p1 = (k * b).min(1.0);
        *t = x_times(s, (p1 / b).ln()) + x_times(f, ln_ratio_complement(p1, b));
    }
    log_mean_exp(&terms)
}

/// `ln E⁻ₙ(q)`: log evidence against H0 "error probability ≥ q". Nondecreasing in `q`.
pub fn log_evidence_below(n: f64, s: f64, q: f64) -> f64 {
    if q.is_nan() || q <= 0.0 {
        return f64::NEG_INFINITY; // every rate is ≥ 0
    }
    let f = n - s;
    if q >= 1.0 {
        // H0: every request fails; one success refutes it.
        return if f > 0.0 { f64::INFINITY } else { 0.0 };
    }
    let mut terms = [0.0; KAPPAS.len()];
    for (t, k) in terms.iter_mut().zip(KAPPAS) {
        *t = x_times(s, -k.ln()) + x_times(f, ln_ratio_complement(q / k, q));
    }
    log_mean_exp(&terms)
}

/// `(n, s)` with `n` finite ≥ 0 and `s` clamped into `[0, n]`, or `None` for unusable input
/// (NaN, ±∞, negative).
fn sanitize(c: Counts) -> Option<(f64, f64)> {
    let ok = |v: f64| v.is_finite() && v >= 0.0;
    if ok(c.total) && ok(c.errors) {
        Some((c.total, c.errors.min(c.total)))
    } else {
        None
    }
}

const BISECTION_STEPS: u32 = 50;

/// Time-uniform lower confidence bound of the error rate at level `a` (the probability that
/// it is ever above the true rate, over all looks, is ≤ `a`). 0 for unusable input.
pub fn lower_confidence_bound(c: Counts, a: f64) -> f64 {
    let Some((n, s)) = sanitize(c) else {
        return 0.0;
    };
    if n <= 0.0 || s <= 0.0 || !(a > 0.0 && a < 1.0) {
        return 0.0;
    }
    let thr = (1.0 / a).ln();
    // E⁺(0) = ∞ (s > 0) and E⁺(p̂) ≤ 1 < 1/a: the crossing lies in (0, p̂).
    let (mut lo, mut hi) = (0.0, s / n);
    for _ in 0..BISECTION_STEPS {
        let mid = 0.5 * (lo + hi);
        if log_evidence_above(n, s, mid) >= thr {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Time-uniform upper confidence bound of the error rate at level `a`. 1 for no data or
/// unusable input.
pub fn upper_confidence_bound(c: Counts, a: f64) -> f64 {
    let Some((n, s)) = sanitize(c) else {
        return 1.0;
    };
    if n <= 0.0 || s >= n || !(a > 0.0 && a < 1.0) {
        return 1.0;
    }
    let thr = (1.0 / a).ln();
    // E⁻(p̂) ≤ 1 < 1/a and E⁻(1) = ∞ (some success): the crossing lies in (p̂, 1).
    let (mut lo, mut hi) = (s / n, 1.0);
    for _ in 0..BISECTION_STEPS {
        let mid = 0.5 * (lo + hi);
        if log_evidence_below(n, s, mid) >= thr {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// Bernoulli Kullback–Leibler divergence `KL(a ‖ b)`, `b` in (0, 1).
fn bernoulli_kl(a: f64, b: f64) -> f64 {
    let kl = x_times(a, (a / b).ln()) + x_times(1.0 - a, ln_ratio_complement(a, b));
    kl.max(0.0)
}

/// Signed-root likelihood-ratio statistic of `p̂ = s/n` against the rate `limit`:
/// `sign(p̂ − limit)·√(2·n·KL(p̂ ‖ limit))`, ≈ a one-sided z score for a fixed sample.
pub fn signed_root_statistic(n: f64, s: f64, limit: f64) -> f64 {
    if n <= 0.0 || limit.is_nan() {
        return 0.0;
    }
    if limit <= 0.0 {
        return if s > 0.0 { f64::INFINITY } else { 0.0 };
    }
    if limit >= 1.0 {
        return f64::NEG_INFINITY;
    }
    let p_hat = s / n;
    let z = (2.0 * n * bernoulli_kl(p_hat, limit)).sqrt();
    if p_hat > limit {
        z
    } else {
        -z
    }
}

fn pct(rate: f64) -> String {
    format!("{:.2} %", rate * 100.0)
}

/// Judges the canary's error rate on cumulative counts since the canary started.
///
/// See the module documentation for the test, the decision order and the guarantee:
/// `P(Fail ever, for an acceptable canary) ≤ 1 − confidence`. Never panics; unusable canary
/// counts (NaN, ±∞, negative) give `NotEnoughData { have: 0, .. }`; unusable stable counts
/// are treated as "no stable data" (absolute check only).
pub fn judge_errors(canary: Counts, stable: Counts, cfg: &JudgeConfig) -> Verdict {
    if let Err(reason) = cfg.validate() {
        return Verdict::InvalidConfig { reason };
    }
    let need = cfg.min_requests;
    let Some((n_c, s_c)) = sanitize(canary) else {
        return Verdict::NotEnoughData { have: 0.0, need };
    };
    if n_c < need || n_c <= 0.0 {
        return Verdict::NotEnoughData { have: n_c, need };
    }
    let (n_s, s_s) = sanitize(stable).unwrap_or((0.0, 0.0));
    let alpha = cfg.alpha();
    let thr = (2.0 / alpha).ln();
    let p_c = s_c / n_c;
    let canary_desc = format!("canary {} ({s_c:.0}/{n_c:.0})", pct(p_c));
    let stable_desc = if n_s > 0.0 {
        format!("stable {} ({s_s:.0}/{n_s:.0})", pct(s_s / n_s))
    } else {
        "no stable data".to_string()
    };
    let stable_breach = n_s > 0.0 && n_s >= need && s_s / n_s > cfg.max_error_rate;

    // 2. Relative: significantly worse than (1 + tolerance) × stable's upper bound + floor.
    let u_s = upper_confidence_bound(Counts::new(n_s, s_s), alpha / 2.0);
    let rel_bound = (1.0 + cfg.tolerance) * u_s + cfg.abs_floor;
    if rel_bound < 1.0 && log_evidence_above(n_c, s_c, rel_bound) >= thr {
        let l_c = lower_confidence_bound(Counts::new(n_c, s_c), alpha / 2.0);
        return Verdict::Fail {
            reason: format!(
                "{canary_desc} is significantly worse than {stable_desc}: lower bound {} > \
                 {:.2} x stable upper bound {} + {} = {} (confidence {})",
                pct(l_c),
                1.0 + cfg.tolerance,
                pct(u_s),
                pct(cfg.abs_floor),
                pct(rel_bound),
                cfg.confidence
            ),
        };
    }

    // 3. Absolute: significantly above max_error_rate.
    if log_evidence_above(n_c, s_c, cfg.max_error_rate) >= thr {
        let l_c = lower_confidence_bound(Counts::new(n_c, s_c), alpha / 2.0);
        let what = format!(
            "{canary_desc} is significantly above the maximum {}: lower bound {} (confidence {})",
            pct(cfg.max_error_rate),
            pct(l_c),
            cfg.confidence
        );
        return if stable_breach {
            Verdict::StableDegraded {
                reason: format!("{stable_desc} breaches the maximum too; {what}"),
            }
        } else {
            Verdict::Fail { reason: what }
        };
    }

    // 4. Pass-brake on the point estimates.
    let limit = if n_s > 0.0 {
        cfg.max_error_rate
            .min((1.0 + cfg.tolerance) * (s_s / n_s) + cfg.abs_floor)
    } else {
        cfg.max_error_rate
    };
    let z = signed_root_statistic(n_c, s_c, limit);
    if z > cfg.hold_z {
        if stable_breach {
            return Verdict::StableDegraded {
                reason: format!(
                    "{stable_desc} breaches the maximum {}; {canary_desc} is not \
                     significantly worse",
                    pct(cfg.max_error_rate)
                ),
            };
        }
        return Verdict::Undecided;
    }
    Verdict::Pass
}

/// Fraction of the latency limit below which a relative p99 regression is not acted upon.
pub const LATENCY_RELATIVE_MIN_FRACTION: f64 = 0.5;

/// Judges per-window p99 latencies against `max_p99_ms` (default 500 ms in the design).
///
/// Rules, with `c` the canary p99, `s` the stable p99, `m = max_p99_ms`,
/// `t = cfg.latency_tolerance`:
/// - no usable `c` (None, NaN, negative) → `NotEnoughData { have: 0, need: 1 }`;
///   `+∞` is usable and means "slower than any bucket".
/// - `c > m`: `StableDegraded` if `s > m` and `c ≤ s·(1 + t)` (platform trouble), else
///   `Fail` (one failed check; a single window's p99 is noisy, so the caller applies its
///   failure threshold).
/// - `c ≤ m` but `c > s·(1 + t)` and `c > m/2` (`LATENCY_RELATIVE_MIN_FRACTION`): a real
///   regression within the SLO → `Undecided` (no promotion while it lasts, no rollback since
///   the SLO holds). Below `m/2` a relative regression is not actionable → `Pass`.
/// - otherwise `Pass`.
///
/// An invalid `max_p99_ms` (NaN, ≤ 0) or config gives `InvalidConfig`.
pub fn judge_latency(obs: LatencyObservation, max_p99_ms: f64, cfg: &JudgeConfig) -> Verdict {
    if let Err(reason) = cfg.validate() {
        return Verdict::InvalidConfig { reason };
    }
    if max_p99_ms.is_nan() || max_p99_ms <= 0.0 {
        return Verdict::InvalidConfig {
            reason: format!("max_p99_ms must be > 0, got {max_p99_ms}"),
        };
    }
    let usable = |v: Option<f64>| v.filter(|x| !x.is_nan() && *x >= 0.0);
    let Some(c) = usable(obs.canary_p99_ms) else {
        return Verdict::NotEnoughData {
            have: 0.0,
            need: 1.0,
        };
    };
    let s = usable(obs.stable_p99_ms);
    let tol = 1.0 + cfg.latency_tolerance;
    let stable_desc = match s {
        Some(s) => format!("stable p99 {s:.0} ms"),
        None => "no stable p99".to_string(),
    };
    if c > max_p99_ms {
        if let Some(s) = s {
            if s > max_p99_ms && c <= s * tol {
                return Verdict::StableDegraded {
                    reason: format!(
                        "{stable_desc} > max {max_p99_ms:.0} ms too; canary p99 {c:.0} ms is \
                         within {tol:.2} x stable"
                    ),
                };
            }
        }
        return Verdict::Fail {
            reason: format!("canary p99 {c:.0} ms > max {max_p99_ms:.0} ms ({stable_desc})"),
        };
    }
    if let Some(s) = s {
        if c > s * tol && c > LATENCY_RELATIVE_MIN_FRACTION * max_p99_ms {
            return Verdict::Undecided;
        }
    }
    Verdict::Pass
}

/// Deterministic traffic simulator for tests and benchmarks (own PRNG, no dependencies).
pub mod sim {
    use super::{judge_errors, judge_latency, Counts, JudgeConfig, LatencyObservation, Verdict};

    /// splitmix64 (S. Vigna; G. Steele, D. Lea, C. Flood, "Fast splittable pseudorandom
    /// number generators", OOPSLA 2014). Deterministic, seeded, good enough for simulation.
    #[derive(Debug, Clone)]
    pub struct Rng {
        state: u64,
    }

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng { state: seed }
        }

        pub fn next_u64(&mut self) -> u64 {
            self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1), 53 random bits.
        pub fn next_f64(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
        }

        /// Uniform in (0, 1], safe for `ln`.
        fn open_f64(&mut self) -> f64 {
            ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
        }

        /// Poisson(λ), exact: inversion for λ < 10, otherwise PTRS (W. Hörmann, "The
        /// transformed rejection method for generating Poisson random variables",
        /// Insurance: Mathematics and Economics 12, 1993). λ ≤ 0 or NaN gives 0.
        pub fn poisson(&mut self, lambda: f64) -> f64 {
            if lambda.is_nan() || lambda <= 0.0 {
                return 0.0;
            }
            if lambda < 10.0 {
                let u = self.next_f64();
                let mut k = 0.0;
                let mut p = (-lambda).exp();
                let mut cdf = p;
                while u > cdf && k < 1000.0 {
                    k += 1.0;
                    p *= lambda / k;
                    cdf += p;
                }
                return k;
            }
            let slam = lambda.sqrt();
            let loglam = lambda.ln();
            let b = 0.931 + 2.53 * slam;
            let a = -0.059 + 0.02483 * b;
            let invalpha = 1.1239 + 1.1328 / (b - 3.4);
            let vr = 0.9277 - 3.6224 / (b - 2.0);
            loop {
                let u = self.next_f64() - 0.5;
                let v = self.open_f64();
                let us = 0.5 - u.abs();
                let k = ((2.0 * a / us + b) * u + lambda + 0.43).floor();
                if us >= 0.07 && v <= vr {
                    return k;
                }
                if k < 0.0 || (us < 0.013 && v > us) {
                    continue;
                }
                if v.ln() + invalpha.ln() - (a / (us * us) + b).ln()
                    <= -lambda + k * loglam - ln_factorial(k)
                {
                    return k;
                }
            }
        }

        /// Binomial(n, p), exact, by geometric skipping (O(n·min(p, 1−p)) work).
        pub fn binomial(&mut self, n: f64, p: f64) -> f64 {
            if n.is_nan() || n < 1.0 || p.is_nan() || p <= 0.0 {
                return 0.0;
            }
            let n = n.floor();
            if p >= 1.0 {
                return n;
            }
            if p > 0.5 {
                return n - self.binomial(n, 1.0 - p);
            }
            let log_q = (-p).ln_1p();
            let mut successes = 0.0;
            let mut position = 0.0;
            loop {
                // Failures before the next success: Geometric(p).
                position += (self.open_f64().ln() / log_q).floor() + 1.0;
                if position > n {
                    return successes;
                }
                successes += 1.0;
            }
        }
    }

    /// `ln k!` for integer-valued `k ≥ 0` (table, then Stirling's series).
    fn ln_factorial(k: f64) -> f64 {
        if k < 16.0 {
            let mut acc = 0.0;
            let mut i = 2.0;
            while i <= k {
                acc += f64::ln(i);
                i += 1.0;
            }
            return acc;
        }
        let k2 = k * k;
        (k + 0.5) * k.ln() - k
            + 0.5 * (2.0 * std::f64::consts::PI).ln()
            + (1.0 / 12.0 - (1.0 / 360.0 - 1.0 / (1260.0 * k2)) / k2) / k
    }

    /// One traffic scenario: total request rate to the service and true per-workload
    /// behaviour.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Scenario {
        pub name: String,
        pub rps_total: f64,
        pub canary_error_rate: f64,
        pub stable_error_rate: f64,
        pub canary_p99_ms: f64,
        pub stable_p99_ms: f64,
    }

    fn scenario(name: &str, rps: f64, ce: f64, se: f64, cl: f64, sl: f64) -> Scenario {
        Scenario {
            name: name.to_string(),
            rps_total: rps,
            canary_error_rate: ce,
            stable_error_rate: se,
            canary_p99_ms: cl,
            stable_p99_ms: sl,
        }
    }

    /// The benchmark scenarios: healthy, badly broken, subtly broken, slow, low traffic,
    /// noisy platform (in that order).
    pub fn scenarios() -> Vec<Scenario> {
        vec![
            scenario("healthy", 20.0, 0.001, 0.001, 120.0, 120.0),
            scenario("badly-broken", 20.0, 0.10, 0.001, 120.0, 120.0),
            scenario("subtly-broken", 20.0, 0.015, 0.001, 120.0, 120.0),
            scenario("slow", 20.0, 0.001, 0.001, 900.0, 120.0),
            scenario("low-traffic", 1.0, 0.001, 0.001, 120.0, 120.0),
            scenario("noisy-platform", 20.0, 0.02, 0.02, 120.0, 120.0),
        ]
    }

    /// What Prometheus would report for one window.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct WindowSample {
        pub canary: Counts,
        pub stable: Counts,
        pub canary_p99_ms: Option<f64>,
        pub stable_p99_ms: Option<f64>,
    }

    /// Samples one window: requests ~ Poisson(rps × share × seconds), errors ~ Binomial(n,
    /// rate), p99 = the scenario value × (1 ± 5 % uniform noise), `None` without requests.
    /// The weight is clamped to [0, 100] (NaN → 0).
    pub fn sample_window(
        s: &Scenario,
        canary_weight_pct: f64,
        seconds: f64,
        rng: &mut Rng,
    ) -> WindowSample {
        let w = if canary_weight_pct.is_nan() {
            0.0
        } else {
            canary_weight_pct.clamp(0.0, 100.0) / 100.0
        };
        let n_c = rng.poisson(s.rps_total * w * seconds);
        let n_s = rng.poisson(s.rps_total * (1.0 - w) * seconds);
        let e_c = rng.binomial(n_c, s.canary_error_rate);
        let e_s = rng.binomial(n_s, s.stable_error_rate);
        let mut p99 = |n: f64, v: f64| {
            let noise = 1.0 + 0.1 * (rng.next_f64() - 0.5);
            (n > 0.0).then_some(v * noise)
        };
        let canary_p99_ms = p99(n_c, s.canary_p99_ms);
        let stable_p99_ms = p99(n_s, s.stable_p99_ms);
        WindowSample {
            canary: Counts::new(n_c, e_c),
            stable: Counts::new(n_s, e_s),
            canary_p99_ms,
            stable_p99_ms,
        }
    }

    /// Rollout policy for [`simulate_rollout`] (defaults: the reference scenario).
    #[derive(Debug, Clone, PartialEq)]
    pub struct RolloutParams {
        pub interval_s: f64,
        pub step_pct: f64,
        pub max_weight_pct: f64,
        /// Give up ("stalled") after this many intervals.
        pub max_intervals: u32,
        pub max_p99_ms: f64,
        /// Failed latency checks (not necessarily consecutive) that roll back. Error `Fail`
        /// verdicts roll back at once (they are decisive).
        pub latency_fail_threshold: u32,
    }

    impl Default for RolloutParams {
        fn default() -> Self {
            RolloutParams {
                interval_s: 30.0,
                step_pct: 10.0,
                max_weight_pct: 50.0,
                max_intervals: 40,
                max_p99_ms: 500.0,
                latency_fail_threshold: 2,
            }
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Outcome {
        Promoted,
        RolledBack,
        Stalled,
    }

    #[derive(Debug, Clone, PartialEq)]
    pub struct RolloutResult {
        pub outcome: Outcome,
        /// Intervals evaluated (the last one decided the outcome).
        pub intervals: u32,
        /// Highest canary weight reached.
        pub max_weight_reached_pct: f64,
        /// Cumulative canary requests (and errors) at the end.
        pub canary: Counts,
        /// Intervals that held the weight (NotEnoughData, Undecided, StableDegraded).
        pub holds: u32,
        /// Intervals with a `StableDegraded` error verdict.
        pub stable_degraded: u32,
        pub last_reason: Option<String>,
    }

    /// Simulates one rollout: start at `step_pct`, every interval sample a window, judge the
    /// cumulative error counts and the window's p99; both pass → step up (promote when
    /// passing at max weight), an error `Fail` → roll back, latency fails count towards
    /// `latency_fail_threshold`, anything else holds.
    pub fn simulate_rollout(
        s: &Scenario,
        cfg: &JudgeConfig,
        p: &RolloutParams,
        rng: &mut Rng,
    ) -> RolloutResult {
        let mut weight = p.step_pct.min(p.max_weight_pct);
        let mut stable = Counts::default();
        let mut latency_fails = 0;
        let mut r = RolloutResult {
            outcome: Outcome::Stalled,
            intervals: 0,
            max_weight_reached_pct: weight,
            canary: Counts::default(),
            holds: 0,
            stable_degraded: 0,
            last_reason: None,
        };
        for interval in 1..=p.max_intervals {
            r.intervals = interval;
            let w = sample_window(s, weight, p.interval_s, rng);
            r.canary.total += w.canary.total;
            r.canary.errors += w.canary.errors;
            stable.total += w.stable.total;
            stable.errors += w.stable.errors;
            let errors = judge_errors(r.canary, stable, cfg);
            let latency = judge_latency(
                LatencyObservation {
                    canary_p99_ms: w.canary_p99_ms,
                    stable_p99_ms: w.stable_p99_ms,
                },
                p.max_p99_ms,
                cfg,
            );
            if let Verdict::Fail { reason } = errors {
                r.outcome = Outcome::RolledBack;
                r.last_reason = Some(reason);
                return r;
            }
            if let Verdict::Fail { reason } = &latency {
                latency_fails += 1;
                r.last_reason = Some(reason.clone());
                if latency_fails >= p.latency_fail_threshold {
                    r.outcome = Outcome::RolledBack;
                    return r;
                }
            }
            if let Verdict::StableDegraded { reason } = &errors {
                r.stable_degraded += 1;
                r.last_reason = Some(reason.clone());
            }
            if errors.is_pass() && latency.is_pass() {
                if weight >= p.max_weight_pct {
                    r.outcome = Outcome::Promoted;
                    return r;
                }
                weight = (weight + p.step_pct).min(p.max_weight_pct);
                r.max_weight_reached_pct = r.max_weight_reached_pct.max(weight);
            } else {
                r.holds += 1;
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::sim::*;
    use super::*;

    fn cfg() -> JudgeConfig {
        JudgeConfig::default()
    }

    fn scenario(name: &str) -> Scenario {
        scenarios()
            .into_iter()
            .find(|s| s.name == name)
            .expect("scenario exists")
    }

    #[test]
    fn defaults_and_validation() {
        let c = cfg();
        assert_eq!(
            (
                c.confidence,
                c.min_requests,
                c.tolerance,
                c.abs_floor,
                c.max_error_rate
            ),
            (0.99, 50.0, 0.5, 0.002, 0.01)
        );
        assert_eq!(c.validate(), Ok(()));
        let bad: Vec<(&str, JudgeConfig)> = vec![
            (
                "confidence",
                JudgeConfig {
                    confidence: 99.0,
                    ..cfg()
                },
            ),
            (
                "confidence",
                JudgeConfig {
                    confidence: 1.0,
                    ..cfg()
                },
            ),
            (
                "confidence",
                JudgeConfig {
                    confidence: f64::NAN,
                    ..cfg()
                },
            ),
            (
                "min_requests",
                JudgeConfig {
                    min_requests: -1.0,
                    ..cfg()
                },
            ),
            (
                "tolerance",
                JudgeConfig {
                    tolerance: f64::INFINITY,
                    ..cfg()
                },
            ),
            (
                "abs_floor",
                JudgeConfig {
                    abs_floor: 1.0,
                    ..cfg()
                },
            ),
            (
                "max_error_rate",
                JudgeConfig {
                    max_error_rate: -0.01,
                    ..cfg()
                },
            ),
            (
                "hold_z",
                JudgeConfig {
                    hold_z: f64::NAN,
                    ..cfg()
                },
            ),
            (
                "latency_tolerance",
                JudgeConfig {
                    latency_tolerance: -1.0,
                    ..cfg()
                },
            ),
        ];
        for (field, c) in bad {
            let err = c.validate().expect_err(field);
            assert!(err.starts_with(field), "{err}");
            assert!(err.contains("must be"), "{err}");
            // The judges refuse it too, without panicking.
            let v = judge_errors(Counts::new(100.0, 0.0), Counts::new(100.0, 0.0), &c);
            assert!(matches!(v, Verdict::InvalidConfig { .. }), "{v:?}");
        }
        let zero_max = JudgeConfig {
            max_error_rate: 0.0,
            ..cfg()
        };
        assert_eq!(zero_max.validate(), Ok(()));
    }

    #[test]
    fn unusable_or_small_inputs_give_not_enough_data() {
        let good = Counts::new(1000.0, 1.0);
        let weird = [
            f64::NAN,
            -1.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            0.0,
        ];
        for &t in &weird {
            for &e in &[0.0, 1.0, f64::NAN, -5.0, f64::INFINITY] {
                let v = judge_errors(Counts::new(t, e), good, &cfg());
                match v {
                    Verdict::NotEnoughData { have, need } => {
                        assert_eq!(need, 50.0);
                        assert!(have == 0.0, "{t} {e} {have}");
                    }
                    other => panic!("{t} {e}: {other:?}"),
                }
            }
        }
        // Valid total, unusable errors.
        let v = judge_errors(Counts::new(500.0, f64::NAN), good, &cfg());
        assert_eq!(
            v,
            Verdict::NotEnoughData {
                have: 0.0,
                need: 50.0
            }
        );
        // Below min_requests.
        let v = judge_errors(Counts::new(49.5, 10.0), good, &cfg());
        assert_eq!(
            v,
            Verdict::NotEnoughData {
                have: 49.5,
                need: 50.0
            }
        );
        // min_requests = 0 still needs some traffic.
        let c0 = JudgeConfig {
            min_requests: 0.0,
            ..cfg()
        };
        assert!(matches!(
            judge_errors(Counts::default(), good, &c0),
            Verdict::NotEnoughData { .. }
        ));
        // Unusable stable counts: judged on the absolute limit alone, no panic.
        for st in [
            Counts::new(f64::NAN, 0.0),
            Counts::new(-3.0, 1.0),
            Counts::new(f64::INFINITY, f64::INFINITY),
            Counts::default(),
        ] {
            assert_eq!(judge_errors(Counts::new(300.0, 0.0), st, &cfg()), Verdict::Pass);
            assert!(judge_errors(Counts::new(300.0, 60.0), st, &cfg()).is_fail());
        }
        // errors > total (scrape skew) is clamped, fractional counts are fine.
        assert!(judge_errors(Counts::new(80.5, 95.2), good, &cfg()).is_fail());
        assert_eq!(
            judge_errors(Counts::new(60.7, 0.3), Counts::new(540.2, 0.6), &cfg()),
            Verdict::Pass
        );
        // Bound helpers never panic on junk.
        assert_eq!(lower_confidence_bound(Counts::new(f64::NAN, 1.0), 0.01), 0.0);
        assert_eq!(upper_confidence_bound(Counts::new(-1.0, 1.0), 0.01), 1.0);
        assert_eq!(upper_confidence_bound(Counts::new(10.0, 10.0), 0.01), 1.0);
    }

    #[test]
    fn evidence_is_monotone_and_bounds_bracket_the_estimate() {
        for &(n, s) in &[(60.0, 6.0), (900.0, 13.5), (10_000.0, 10.0), (50.0, 0.0)] {
            let mut prev_above = f64::INFINITY;
            let mut prev_below = f64::NEG_INFINITY;
            for i in 1..200 {
                let b = i as f64 / 200.0;
                let a = log_evidence_above(n, s, b);
                let be = log_evidence_below(n, s, b);
                assert!(a <= prev_above + 1e-9, "above not monotone at {b}");
                assert!(be >= prev_below - 1e-9, "below not monotone at {b}");
                prev_above = a;
                prev_below = be;
            }
            let c = Counts::new(n, s);
            let (lo, hi) = (
                lower_confidence_bound(c, 0.005),
                upper_confidence_bound(c, 0.005),
            );
            assert!(lo <= s / n && s / n <= hi && hi < 1.0, "{lo} {hi}");
        }
        // Known values (regression guard for the formulas).
        let lo = lower_confidence_bound(Counts::new(60.0, 6.0), 0.005);
        assert!((0.014..0.025).contains(&lo), "{lo}");
        let hi = upper_confidence_bound(Counts::new(10_000.0, 10.0), 0.005);
        assert!((0.0022..0.0032).contains(&hi), "{hi}");
        // max_error_rate = 0: any error is decisive, none passes.
        let strict = JudgeConfig {
            max_error_rate: 0.0,
            ..cfg()
        };
        assert!(judge_errors(Counts::new(100.0, 1.0), Counts::default(), &strict).is_fail());
        assert!(judge_errors(Counts::new(100.0, 0.0), Counts::default(), &strict).is_pass());
    }

    /// Time-uniform coverage under continuous monitoring: look after every 10 requests up to
    /// 3,000 and count runs where the bound is *ever* violated. Must stay ≤ the level.
    #[test]
    fn confidence_sequences_are_time_uniform() {
        let level: f64 = 0.05; // a larger level makes the check informative with few runs
        let thr = (1.0 / level).ln();
        let runs = 1000;
        let mut rng = Rng::new(7);
        for &p in &[0.01, 0.1] {
            let (mut above_missed, mut below_missed) = (0, 0);
            for _ in 0..runs {
                let (mut n, mut s) = (0.0, 0.0);
                let (mut a_hit, mut b_hit) = (false, false);
                for _ in 0..300 {
                    n += 10.0;
                    s += rng.binomial(10.0, p);
                    a_hit |= log_evidence_above(n, s, p) >= thr; // LCB > p
                    b_hit |= log_evidence_below(n, s, p) >= thr; // UCB < p
                }
                above_missed += a_hit as u32;
                below_missed += b_hit as u32;
            }
            let (fa, fb) = (
                above_missed as f64 / runs as f64,
                below_missed as f64 / runs as f64,
            );
            assert!(fa <= level, "p={p}: lower bound crossed in {fa}");
            assert!(fb <= level, "p={p}: upper bound crossed in {fb}");
        }
    }

    fn run_many(name: &str, runs: u32, seed: u64, c: &JudgeConfig) -> Vec<RolloutResult> {
        let s = scenario(name);
        let mut rng = Rng::new(seed);
        let p = RolloutParams::default();
        (0..runs)
            .map(|_| simulate_rollout(&s, c, &p, &mut rng))
            .collect()
    }

    /// 2,000 healthy rollouts of (up to) 10 checks at 20 rps, 10 → 50 %: false rollbacks
    /// must be ≤ α = 1 %. Also at the least favourable boundary: canary exactly at the
    /// maximum (1 %) with stable at 0.6 % (relative limit 1.1 %), 10 checks at 30 % weight.
    #[test]
    fn false_rollback_rate_is_bounded_by_alpha() {
        let c = cfg();
        let healthy = scenario("healthy");
        let mut rng = Rng::new(1);
        let p = RolloutParams {
            max_intervals: 10,
            ..RolloutParams::default()
        };
        let runs = 2000;
        let fails = (0..runs)
            .filter(|_| {
                simulate_rollout(&healthy, &c, &p, &mut rng).outcome == Outcome::RolledBack
            })
            .count();
        assert!(fails as f64 / runs as f64 <= c.alpha(), "healthy: {fails}");

        for (ce, se) in [(0.01, 0.006), (0.005, 0.002)] {
            let boundary = Scenario {
                canary_error_rate: ce,
                stable_error_rate: se,
                ..healthy.clone()
            };
            let mut fails = 0;
            for _ in 0..runs {
                let (mut cc, mut sc) = (Counts::default(), Counts::default());
                let mut failed = false;
                for _ in 0..10 {
                    let w = sample_window(&boundary, 30.0, 30.0, &mut rng);
                    cc = Counts::new(cc.total + w.canary.total, cc.errors + w.canary.errors);
                    sc = Counts::new(sc.total + w.stable.total, sc.errors + w.stable.errors);
                    failed |= judge_errors(cc, sc, &c).is_fail();
                }
                fails += failed as u32;
            }
            assert!(
                fails as f64 / runs as f64 <= c.alpha(),
                "boundary {ce}/{se}: {fails}"
            );
        }
    }

    #[test]
    fn healthy_canary_progresses_one_step_per_interval() {
        let results = run_many("healthy", 500, 2, &cfg());
        assert!(results.iter().all(|r| r.outcome == Outcome::Promoted));
        let on_time = results.iter().filter(|r| r.intervals == 5).count();
        let within_7 = results.iter().filter(|r| r.intervals <= 7).count();
        assert!(on_time >= 400, "only {on_time}/500 promoted in 5 intervals");
        assert!(within_7 >= 480, "only {within_7}/500 promoted in 7 intervals");
    }

    /// 10 % 5xx with 2 rps to the canary (20 rps × 10 %): one 30-s window is ~60 requests.
    #[test]
    fn badly_broken_fails_within_the_first_window_or_two() {
        // The expected window itself: 6 errors in 60 requests, stable 1 in 540.
        let v = judge_errors(
            Counts::new(60.0, 6.0),
            Counts::new(540.0, 1.0),
            &cfg(),
        );
        assert!(v.is_fail(), "{v:?}");
        let results = run_many("badly-broken", 1000, 3, &cfg());
        assert!(results.iter().all(|r| r.outcome == Outcome::RolledBack));
        let first = results.iter().filter(|r| r.intervals == 1).count();
        let two = results.iter().filter(|r| r.intervals <= 2).count();
        assert!(first >= 700, "first window: {first}/1000");
        assert!(two >= 980, "two windows: {two}/1000");
        assert!(results.iter().all(|r| r.max_weight_reached_pct <= 20.0));
    }

    /// 1.5 % vs 0.1 % at 20 rps: caught (rolled back) within ~10 minutes, never promoted.
    #[test]
    fn subtly_broken_is_caught_before_max_weight() {
        let results = run_many("subtly-broken", 300, 4, &cfg());
        let promoted = results
            .iter()
            .filter(|r| r.outcome == Outcome::Promoted)
            .count();
        let in_10_min = results
            .iter()
            .filter(|r| r.outcome == Outcome::RolledBack && r.intervals <= 20)
            .count();
        let at_max = results
            .iter()
            .filter(|r| r.max_weight_reached_pct >= 50.0)
            .count();
        assert!(promoted <= 6, "promoted {promoted}/300");
        assert!(at_max <= 15, "reached max weight {at_max}/300");
        assert!(in_10_min >= 270, "rolled back within 10 min: {in_10_min}/300");
    }

    #[test]
    fn slow_canary_fails_on_latency() {
        let results = run_many("slow", 200, 5, &cfg());
        assert!(results
            .iter()
            .all(|r| r.outcome == Outcome::RolledBack && r.intervals == 2));
        assert!(results
            .iter()
            .all(|r| r.last_reason.as_deref().unwrap_or("").contains("p99")));
    }

    #[test]
    fn low_traffic_waits_for_data_and_never_rolls_back() {
        let p = RolloutParams {
            max_intervals: 60,
            ..RolloutParams::default()
        };
        let s = scenario("low-traffic");
        let mut rng = Rng::new(6);
        let mut promoted = 0;
        for _ in 0..300 {
            let r = simulate_rollout(&s, &cfg(), &p, &mut rng);
            assert_ne!(r.outcome, Outcome::RolledBack, "{r:?}");
            promoted += (r.outcome == Outcome::Promoted) as u32;
        }
        assert!(promoted >= 270, "promoted {promoted}/300");
        // First window at 10 % of 1 rps: ~3 requests → NotEnoughData.
        let w = sample_window(&s, 10.0, 30.0, &mut rng);
        assert!(matches!(
            judge_errors(w.canary, w.stable, &cfg()),
            Verdict::NotEnoughData { .. }
        ));
    }

    #[test]
    fn noisy_platform_is_stable_degraded_not_a_rollback() {
        // Deterministic: both at 2 % with plenty of data.
        let v = judge_errors(
            Counts::new(3000.0, 60.0),
            Counts::new(12_000.0, 240.0),
            &cfg(),
        );
        assert!(matches!(v, Verdict::StableDegraded { .. }), "{v:?}");
        // Same stable, canary clearly worse than the degraded stable: its own fault.
        let v = judge_errors(
            Counts::new(3000.0, 300.0),
            Counts::new(12_000.0, 240.0),
            &cfg(),
        );
        assert!(v.is_fail(), "{v:?}");
        // Same canary, healthy stable: fail.
        let v = judge_errors(
            Counts::new(3000.0, 60.0),
            Counts::new(12_000.0, 12.0),
            &cfg(),
        );
        assert!(v.is_fail(), "{v:?}");
        // Canary healthy while stable degraded: the canary itself is fine.
        let v = judge_errors(
            Counts::new(3000.0, 3.0),
            Counts::new(12_000.0, 240.0),
            &cfg(),
        );
        assert_eq!(v, Verdict::Pass);

        let results = run_many("noisy-platform", 300, 8, &cfg());
        let rolled_back = results
            .iter()
            .filter(|r| r.outcome == Outcome::RolledBack)
            .count();
        let promoted = results
            .iter()
            .filter(|r| r.outcome == Outcome::Promoted)
            .count();
        assert!(rolled_back <= 3, "rolled back {rolled_back}/300");
        assert!(promoted <= 15, "promoted {promoted}/300");
        assert!(results.iter().filter(|r| r.stable_degraded > 0).count() >= 250);
    }

    #[test]
    fn latency_rules() {
        let c = cfg();
        let obs = |c: Option<f64>, s: Option<f64>| LatencyObservation {
            canary_p99_ms: c,
            stable_p99_ms: s,
        };
        assert_eq!(
            judge_latency(obs(Some(120.0), Some(118.0)), 500.0, &c),
            Verdict::Pass
        );
        assert!(judge_latency(obs(Some(900.0), Some(120.0)), 500.0, &c).is_fail());
        assert!(judge_latency(obs(Some(900.0), None), 500.0, &c).is_fail());
        assert!(judge_latency(obs(Some(f64::INFINITY), Some(120.0)), 500.0, &c).is_fail());
        assert!(matches!(
            judge_latency(obs(Some(700.0), Some(650.0)), 500.0, &c),
            Verdict::StableDegraded { .. }
        ));
        // Canary much slower than an already slow stable: its own fault.
        assert!(judge_latency(obs(Some(2000.0), Some(650.0)), 500.0, &c).is_fail());
        // Regression within the SLO: hold above max/2, ignore below.
        assert_eq!(
            judge_latency(obs(Some(400.0), Some(120.0)), 500.0, &c),
            Verdict::Undecided
        );
        assert_eq!(
            judge_latency(obs(Some(240.0), Some(120.0)), 500.0, &c),
            Verdict::Pass
        );
        for bad in [None, Some(f64::NAN), Some(-1.0), Some(f64::NEG_INFINITY)] {
            assert_eq!(
                judge_latency(obs(bad, Some(120.0)), 500.0, &c),
                Verdict::NotEnoughData {
                    have: 0.0,
                    need: 1.0
                }
            );
        }
        assert_eq!(
            judge_latency(obs(Some(120.0), Some(f64::NAN)), 500.0, &c),
            Verdict::Pass
        );
        for bad_max in [f64::NAN, 0.0, -5.0] {
            assert!(matches!(
                judge_latency(obs(Some(120.0), Some(120.0)), bad_max, &c),
                Verdict::InvalidConfig { .. }
            ));
        }
        assert_eq!(
            judge_latency(obs(Some(1e9), Some(120.0)), f64::INFINITY, &c),
            Verdict::Pass
        );
    }

    #[test]
    fn simulator_is_deterministic_and_sane() {
        let s = scenario("healthy");
        let a: Vec<_> = {
            let mut r = Rng::new(42);
            (0..5).map(|_| sample_window(&s, 30.0, 30.0, &mut r)).collect()
        };
        let b: Vec<_> = {
            let mut r = Rng::new(42);
            (0..5).map(|_| sample_window(&s, 30.0, 30.0, &mut r)).collect()
        };
        assert_eq!(a, b);
        let mut r = Rng::new(9);
        for &lambda in &[0.5, 3.0, 60.0, 540.0] {
            let k = 4000;
            let xs: Vec<f64> = (0..k).map(|_| r.poisson(lambda)).collect();
            let mean = xs.iter().sum::<f64>() / k as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / k as f64;
            let se = (lambda / k as f64).sqrt();
            assert!((mean - lambda).abs() < 5.0 * se, "{lambda}: mean {mean}");
            assert!((var / lambda - 1.0).abs() < 0.15, "{lambda}: var {var}");
        }
        let xs: Vec<f64> = (0..4000).map(|_| r.binomial(600.0, 0.02)).collect();
        let mean = xs.iter().sum::<f64>() / 4000.0;
        assert!((mean - 12.0).abs() < 0.3, "binomial mean {mean}");
        assert_eq!(r.binomial(10.0, 1.0), 10.0);
        assert_eq!(r.binomial(0.0, 0.5), 0.0);
        assert!((0.0..=10.0).contains(&r.binomial(10.0, 0.9)));
        assert_eq!(r.poisson(f64::NAN), 0.0);
        // No requests → no p99.
        let w = sample_window(&s, 0.0, 30.0, &mut r);
        assert_eq!((w.canary.total, w.canary_p99_ms), (0.0, None));
        let w = sample_window(&s, f64::NAN, 30.0, &mut r);
        assert_eq!(w.canary.total, 0.0);
        assert_eq!(scenarios().len(), 6);
    }
}
