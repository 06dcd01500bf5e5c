//! Distribution tests of the discrete Laplace sampler: χ² goodness of fit against the
//! exact pmf, symmetry, mean and variance, Bernoulli(e^(−γ)) coins and the uniform draw.
//!
//! Invariant: every test is seeded (deterministic in CI) and uses critical values at
//! α ≈ 10⁻⁶ (z = 5 for normal approximations), so a correct sampler never fails by
//! chance while a wrong distribution fails by a wide margin. Floats live only here, on
//! the checking side.
#![allow(
    clippy::unwrap_used,
    clippy::float_arithmetic,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation
)]

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::sampler::{bernoulli_exp_minus, sample_discrete_laplace, uniform_below, Scale, MAX_SCALE_NUM};

/// Upper 10⁻⁶ point of the standard normal.
const Z_1E6: f64 = 4.753_424;
/// z used for normal-approximation checks.
const Z: f64 = 5.0;

/// χ² critical value at upper tail 10⁻⁶ (Wilson–Hilferty).
fn chi2_critical(df: usize) -> f64 {
    let k = df as f64;
    let a = 2.0 / (9.0 * k);
    k * (1.0 - a + Z_1E6 * a.sqrt()).powi(3)
}

/// `ln p` for scale num/den (p = e^(−den/num)).
fn ln_p(scale: Scale) -> f64 {
    -(scale.den() as f64) / (scale.num() as f64)
}

/// P(X ≤ x).
fn cdf(lnp: f64, x: i128) -> f64 {
    let one_plus_p = 1.0 + lnp.exp();
    if x >= 0 {
        1.0 - ((x + 1) as f64 * lnp).exp() / one_plus_p
    } else {
        ((-x) as f64 * lnp).exp() / one_plus_p
    }
}

/// P(lo ≤ X < hi).
fn mass(lnp: f64, lo: i128, hi: i128) -> f64 {
    cdf(lnp, hi - 1) - cdf(lnp, lo - 1)
}

fn draws(scale: Scale, n: usize, seed: u64) -> Vec<i128> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| sample_discrete_laplace(&mut rng, scale).unwrap())
        .collect()
}

/// χ² statistic and degrees of freedom over symmetric bins of width w, with both tails
/// lumped, every bin expecting at least 20 draws.
fn chi2(scale: Scale, xs: &[i128]) -> (f64, usize) {
    let lnp = ln_p(scale);
    let n = xs.len() as f64;
    let b = scale.num() as f64 / scale.den() as f64;
    let w = ((b / 4.0).floor() as i128).max(1);
    // Number of bins per side: while the next one expects ≥ 20.
    let mut per_side = 0i128;
    while mass(lnp, per_side * w, (per_side + 1) * w).min(mass(lnp, -(per_side + 1) * w, -per_side * w)) * n >= 20.0
        && per_side < 400
    {
        per_side += 1;
    }
    assert!(per_side >= 1, "scale {b}: no bin expects 20 draws");
    // Layout: left tail, neg[per_side−1] … neg[0], pos[0] … pos[per_side−1], right tail,
    // with neg[i] = [−(i+1)w, −iw) and pos[i] = [iw, (i+1)w).
    let bins = 2 * per_side as usize + 2;
    let mut observed = vec![0f64; bins];
    let index = |x: i128| -> usize {
        if x >= 0 {
            let i = x / w;
            if i < per_side {
                (per_side + 1 + i) as usize
            } else {
                bins - 1
            }
        } else {
            let i = (-x - 1) / w;
            if i < per_side {
                (per_side - i) as usize
            } else {
                0
            }
        }
    };
    for x in xs {
        observed[index(*x)] += 1.0;
    }
    let mut expected = vec![0f64; bins];
    for i in 0..per_side {
        expected[(per_side + 1 + i) as usize] = mass(lnp, i * w, (i + 1) * w) * n;
        expected[(per_side - i) as usize] = mass(lnp, -(i + 1) * w, -i * w) * n;
    }
    expected[0] = cdf(lnp, -per_side * w - 1) * n;
    expected[bins - 1] = (1.0 - cdf(lnp, per_side * w - 1)) * n;
    let stat = observed.iter().zip(&expected).map(|(o, e)| (o - e) * (o - e) / e).sum();
    (stat, bins - 1)
}

const SCALES: &[(u128, u128)] = &[
    (1, 2),                           // ε = 2, Δ = 1
    (2, 1),                           // ε = 0.5
    (20, 1),                          // ε = 0.05
    (1000, 3),                        // non-integer scale
    (1_000_000, 1),                   // ε = 0.000001
    (100_000_000_000_000_000_000, 7), // > 2^64: the u128 draw path
];

#[test]
fn chi_square_goodness_of_fit_at_several_scales() {
    for (i, (num, den)) in SCALES.iter().enumerate() {
        let scale = Scale::new(*num, *den).unwrap();
        let xs = draws(scale, 100_000, 1000 + i as u64);
        let (stat, df) = chi2(scale, &xs);
        let critical = chi2_critical(df);
        eprintln!("scale {num}/{den}: χ² = {stat:.1}, df {df}, critical {critical:.1}");
        assert!(
            stat < critical,
            "scale {num}/{den}: χ² = {stat:.1} ≥ {critical:.1} (df {df})"
        );
    }
}

#[test]
fn chi_square_rejects_a_wrong_scale() {
    // The same test has power: draws at scale 2 do not fit scale 2.2.
    let xs = draws(Scale::new(2, 1).unwrap(), 100_000, 7);
    let (stat, df) = chi2(Scale::new(11, 5).unwrap(), &xs);
    eprintln!(
        "wrong scale: χ² = {stat:.1}, df {df}, critical {:.1}",
        chi2_critical(df)
    );
    assert!(stat > chi2_critical(df), "χ² = {stat:.1} should reject the wrong scale");
}

#[test]
fn symmetric_with_zero_mean_and_the_exact_variance() {
    for (i, (num, den)) in SCALES.iter().enumerate() {
        let scale = Scale::new(*num, *den).unwrap();
        let xs = draws(scale, 100_000, 2000 + i as u64);
        let n = xs.len() as f64;
        let pos = xs.iter().filter(|x| **x > 0).count() as f64;
        let neg = xs.iter().filter(|x| **x < 0).count() as f64;
        let z_sym = (pos - neg) / (pos + neg).sqrt();
        assert!(z_sym.abs() < Z, "scale {num}/{den}: asymmetric, z = {z_sym:.2}");

        let lnp = ln_p(scale);
        let p = lnp.exp();
        let var = 2.0 * p / (lnp.exp_m1() * lnp.exp_m1());
        let b = *num as f64 / *den as f64;
        // Normalise by the scale so huge scales stay in range.
        let norm = b.max(1.0);
        let ys: Vec<f64> = xs.iter().map(|x| *x as f64 / norm).collect();
        let mean = ys.iter().sum::<f64>() / n;
        let var_n = var / (norm * norm);
        let z_mean = mean / (var_n / n).sqrt();
        assert!(z_mean.abs() < Z, "scale {num}/{den}: mean z = {z_mean:.2}");
        let s2 = ys.iter().map(|y| (y - mean) * (y - mean)).sum::<f64>() / (n - 1.0);
        // Fourth moment: exact sum for moderate scales, Laplace's (kurtosis 6) otherwise.
        let mu4 = if b <= 1000.0 {
            let c = (1.0 - p) / (1.0 + p);
            let top = (60.0 * b).ceil() as i64 + 10;
            (1..=top)
                .map(|x| 2.0 * c * ((x as f64) * lnp).exp() * (x as f64 / norm).powi(4))
                .sum::<f64>()
        } else {
            6.0 * var_n * var_n
        };
        let sd_s2 = ((mu4 - var_n * var_n) / n).sqrt();
        let z_var = (s2 - var_n) / sd_s2;
        assert!(
            z_var.abs() < Z,
            "scale {num}/{den}: variance {s2:.4} vs {var_n:.4} (z = {z_var:.2})"
        );
    }
}

/// Wilson score interval at z.
fn wilson(successes: f64, n: f64, z: f64) -> (f64, f64) {
    let p = successes / n;
    let d = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / d;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / d;
    (centre - half, centre + half)
}

#[test]
fn bernoulli_exp_minus_matches_e_to_the_minus_gamma() {
    let mut rng = StdRng::seed_from_u64(3);
    let n = 50_000;
    for (num, den) in [
        (0u128, 1u128),
        (1, 4),
        (1, 2),
        (1, 1),
        (3, 2),
        (3, 1),
        (7, 2),
        (10, 1),
        (999, 1000),
    ] {
        let hits = (0..n)
            .filter(|_| bernoulli_exp_minus(&mut rng, num, den).unwrap())
            .count() as f64;
        let truth = (-(num as f64) / den as f64).exp();
        let (lo, hi) = wilson(hits, n as f64, Z);
        assert!(
            lo <= truth && truth <= hi,
            "γ = {num}/{den}: e^-γ = {truth:.5} outside [{lo:.5}, {hi:.5}]"
        );
    }
}

#[test]
fn uniform_below_is_uniform_on_both_paths() {
    let mut rng = StdRng::seed_from_u64(4);
    for (d, buckets, divisor) in [(6u128, 6usize, 1u128), (3u128 << 64, 3, 1u128 << 64)] {
        let n = 60_000;
        let mut counts = vec![0f64; buckets];
        for _ in 0..n {
            let x = uniform_below(&mut rng, d);
            assert!(x < d);
            counts[(x / divisor) as usize] += 1.0;
        }
        let e = n as f64 / buckets as f64;
        let stat: f64 = counts.iter().map(|o| (o - e) * (o - e) / e).sum();
        assert!(stat < chi2_critical(buckets - 1), "d = {d}: χ² = {stat:.1}");
    }
}

#[test]
fn seeded_draws_are_reproducible_and_scales_are_checked() {
    let s = Scale::new(4, 2).unwrap();
    assert_eq!((s.num(), s.den()), (2, 1), "reduced");
    assert_eq!(draws(s, 50, 9), draws(s, 50, 9));
    assert_ne!(draws(s, 50, 9), draws(s, 50, 10));
    assert!(Scale::new(0, 1).is_err());
    assert!(Scale::new(1, 0).is_err());
    assert!(Scale::new(MAX_SCALE_NUM + 1, 1).is_err());
    assert!(Scale::new(MAX_SCALE_NUM, 1).is_ok());
}

/// Cost per sample (not a pass/fail test): `cargo test --release --lib sampler_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn sampler_cost() {
    for (num, den) in [(1u128, 1u128), (2, 1), (20, 1), (400_000, 1)] {
        let scale = Scale::new(num, den).unwrap();
        let n = 1_000_000;
        let started = std::time::Instant::now();
        let xs = draws(scale, n, 5);
        let elapsed = started.elapsed();
        println!(
            "scale {num}/{den}: {:.0} ns/sample (checksum {})",
            elapsed.as_nanos() as f64 / n as f64,
            xs.iter().sum::<i128>()
        );
    }
}
