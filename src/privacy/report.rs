//! The answer of a private query: noisy integers turned into display values, and 95 %
//! confidence intervals derived from the mechanism alone.
//!
//! Invariant: everything here is post-processing of the noisy release and of public
//! parameters (scales, bounds), so it cannot weaken the guarantee; floats are allowed
//! here and only here. The interval half-width of a part depends only on its noise scale:
//! for discrete Laplace with `p = e^(−1/scale)`, `P(|X| ≥ k) = 2·p^k/(1 + p)` (k ≥ 1), and
//! the half-width is the smallest m with `P(|X| > m) ≤ 5 %`.

use serde_json::{json, Map, Value};

use super::aggregate::{Kind, UNITS_PER_ONE};
use super::epsilon::Epsilon;
use super::mechanism::{Plan, MECHANISM};
use super::sampler::Scale;

/// `P(|X| ≥ k)` for discrete Laplace noise with `ln p = ln_p`.
fn tail(ln_p: f64, k: u128) -> f64 {
    if k == 0 {
        return 1.0;
    }
    let p = ln_p.exp();
    2.0 * ((k as f64) * ln_p).exp() / (1.0 + p)
}

/// Smallest m ≥ 0 with `P(|X| > m) ≤ alpha` for noise of this scale.
pub fn half_width(scale: Scale, alpha: f64) -> u128 {
    let ln_p = -(scale.den() as f64) / (scale.num() as f64);
    let p = ln_p.exp();
    // (m + 1)·ln p ≤ ln(alpha·(1 + p)/2)
    let target = (alpha * (1.0 + p) / 2.0).ln();
    let estimate = (target / ln_p).ceil() - 1.0;
    let mut m = if estimate.is_finite() && estimate > 0.0 {
        estimate as u128
    } else {
        0
    };
    // Correct float rounding in either direction: a step or two where f64 can tell
    // neighbouring m apart. At huge scales it cannot, and stepping by one would loop
    // ~10^8 times on the request thread, so the correction is bounded; the estimate is
    // then as good as f64 allows.
    for _ in 0..4 {
        if tail(ln_p, m + 1) > alpha {
            m += 1;
        } else if m > 0 && tail(ln_p, m) <= alpha {
            m -= 1;
        } else {
            break;
        }
    }
    m
}

fn int_json(v: i128) -> Value {
    match i64::try_from(v) {
        Ok(i) => Value::from(i),
        Err(_) => Value::from(v as f64),
    }
}

/// Units (0.001) as a JSON number, via the exact decimal text.
fn units_f64(units: i128) -> f64 {
    let sign = if units < 0 { "-" } else { "" };
    let abs = units.unsigned_abs();
    let one = UNITS_PER_ONE.unsigned_abs();
    format!("{sign}{}.{:03}", abs / one, abs % one).parse().unwrap_or(0.0)
}

fn real_json(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

fn interval(lo: Value, hi: Value) -> Value {
    Value::Array(vec![lo, hi])
}

/// Build the JSON answer of SPEC §6 from the noisy values.
pub fn answer(plan: &Plan, noisy: &super::aggregate::Values, remaining: Epsilon) -> Value {
    use super::aggregate::Values;
    let count_m = plan.count.map(|p| half_width(p.scale, 0.05));
    let sum_m = plan.sum.map(|p| half_width(p.scale, 0.05));
    let (value, ci) = match noisy {
        Values::Count(c) => {
            let m = count_m.unwrap_or(0) as i128;
            (int_json(*c), interval(int_json(c - m), int_json(c + m)))
        }
        Values::Sum(s) => {
            let m = sum_m.unwrap_or(0) as i128;
            (
                real_json(units_f64(*s)),
                interval(real_json(units_f64(s - m)), real_json(units_f64(s + m))),
            )
        }
        Values::Histogram(bins) => {
            let m = count_m.unwrap_or(0) as i128;
            (
                Value::Array(bins.iter().map(|b| int_json(*b)).collect()),
                Value::Array(
                    bins.iter()
                        .map(|b| interval(int_json(b - m), int_json(b + m)))
                        .collect(),
                ),
            )
        }
        Values::Mean { sum, count } => mean_answer(plan, *sum, *count),
    };
    let mut out = Map::new();
    out.insert("value".into(), value);
    out.insert("mechanism".into(), MECHANISM.into());
    out.insert("epsilon_charged".into(), plan.epsilon.to_string().into());
    out.insert("budget_remaining".into(), remaining.to_string().into());
    out.insert("confidence_95".into(), ci);
    if plan.query.kind == Kind::Mean {
        out.insert(
            "epsilon_split".into(),
            json!({
                "sum": plan.sum.map(|p| p.epsilon.to_string()),
                "count": plan.count.map(|p| p.epsilon.to_string()),
            }),
        );
    }
    Value::Object(out)
}

/// Mean = noisy sum / max(1, noisy count), clamped to the bounds (post-processing).
/// Interval: each part's 97.5 % interval (so both hold together with ≥ 95 %), and the
/// range of sum/count over that box; when the count interval reaches below 1 the ratio is
/// unbounded and the interval is the bounds themselves.
fn mean_answer(plan: &Plan, sum: i128, count: i128) -> (Value, Value) {
    let (lo_b, hi_b) = plan.query.bounds.unwrap_or((0, 0));
    let (lo_b, hi_b) = (units_f64(lo_b), units_f64(hi_b));
    let s = units_f64(sum);
    let value = (s / count.max(1) as f64).clamp(lo_b, hi_b);
    let ms = plan.sum.map_or(0, |p| half_width(p.scale, 0.025)) as i128;
    let mc = plan.count.map_or(0, |p| half_width(p.scale, 0.025)) as i128;
    let ci = if count - mc >= 1 {
        let (a, b) = (units_f64(sum - ms), units_f64(sum + ms));
        let (c, d) = ((count - mc) as f64, (count + mc) as f64);
        interval(real_json((a / c).min(a / d)), real_json((b / c).max(b / d)))
    } else {
        interval(real_json(lo_b), real_json(hi_b))
    };
    (real_json(value), ci)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Exact tail by summing the pmf, for comparison.
    fn tail_by_sum(scale: f64, k: u128) -> f64 {
        let p = (-1.0 / scale).exp();
        let norm = (1.0 - p) / (1.0 + p);
        let inside: f64 = (0..k)
            .map(|x| if x == 0 { norm } else { 2.0 * norm * p.powi(x as i32) })
            .sum();
        1.0 - inside
    }

    #[test]
    fn half_width_is_the_smallest_covering_integer() {
        for (num, den) in [(1u128, 1u128), (2, 1), (1, 2), (20, 1), (1000, 3), (400_000, 1)] {
            let scale = Scale::new(num, den).unwrap();
            let m = half_width(scale, 0.05);
            let b = num as f64 / den as f64;
            if b < 1000.0 {
                assert!(tail_by_sum(b, m + 1) <= 0.05 + 1e-12, "scale {b}: m={m}");
                if m > 0 {
                    assert!(tail_by_sum(b, m) > 0.05 - 1e-12, "scale {b}: m={m} not minimal");
                }
            }
            // ≈ b·ln(20) for large b.
            if b >= 20.0 {
                let approx = b * 20f64.ln();
                assert!(
                    (m as f64 - approx).abs() / approx < 0.05,
                    "scale {b}: m={m}, approx {approx}"
                );
            }
        }
        // Scale 1/2: P(|X| ≥ 1) = 2e^-2/(1+e^-2) ≈ 0.238 > 5 %; P(|X| ≥ 2) ≈ 0.032.
        assert_eq!(half_width(Scale::new(1, 2).unwrap(), 0.05), 1);
        assert_eq!(half_width(Scale::new(1, 1000).unwrap(), 0.05), 0);
    }

    #[test]
    fn units_render_exactly() {
        assert_eq!(units_f64(12_345), 12.345);
        assert_eq!(units_f64(-5), -0.005);
        assert_eq!(units_f64(0), 0.0);
    }
}
