//! End-to-end empirical privacy loss: many runs of the real pipeline (filter → truncate →
//! clamp → aggregate → [`Plan::release`]) on two datasets that differ by one maximally
//! contributing entity. For every output event S (single values, value ranges, and the
//! tails), a confidence bound on ln(P[S | D] / P[S | D′]) must not exceed ε. The same
//! check run on a deliberately half-scaled mechanism (true ε doubled) must fail, so the
//! check can fail.
//!
//! Invariant checked: the released distribution is ε-DP for the entity as privacy unit.
//! Seeded; Wilson intervals at z = 5 per event keep the family-wise false-alarm
//! probability far below 10⁻³ even before seeding makes it deterministic.
#![allow(
    clippy::unwrap_used,
    clippy::float_arithmetic,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation
)]

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};

use super::aggregate::{evaluate, Kind, Query, Values};
use super::epsilon::Epsilon;
use super::mechanism::{Part, Plan};
use super::sampler::Scale;

type Dataset = Vec<(String, Vec<(u64, Value)>)>;

const RUNS: usize = 100_000;
const Z: f64 = 5.0;
/// Events observed fewer times than this (in both runs) are not judged.
const MIN_COUNT: f64 = 200.0;

fn wilson(successes: f64, n: f64) -> (f64, f64) {
    let p = successes / n;
    let d = 1.0 + Z * Z / n;
    let centre = (p + Z * Z / (2.0 * n)) / d;
    let half = Z * (p * (1.0 - p) / n + Z * Z / (4.0 * n * n)).sqrt() / d;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Histogram of a scalar output, bucketed by `bucket(value)`.
fn run(plan: &Plan, data: &Dataset, seed: u64, bucket: impl Fn(&Values) -> i128) -> BTreeMap<i128, f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = BTreeMap::new();
    for _ in 0..RUNS {
        let exact = evaluate(&plan.query, data);
        let noisy = plan.release(&exact, &mut rng).unwrap();
        *out.entry(bucket(&noisy)).or_insert(0.0) += 1.0;
    }
    out
}

/// The largest lower confidence bound of |ln(P[S]/Q[S])| over buckets, prefixes
/// (left tails) and suffixes (right tails).
fn empirical_loss(p: &BTreeMap<i128, f64>, q: &BTreeMap<i128, f64>) -> f64 {
    let keys: Vec<i128> = p
        .keys()
        .chain(q.keys())
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let n = RUNS as f64;
    let get = |m: &BTreeMap<i128, f64>, k: &i128| m.get(k).copied().unwrap_or(0.0);
    let mut events: Vec<(f64, f64)> = keys.iter().map(|k| (get(p, k), get(q, k))).collect();
    let (mut lp, mut lq) = (0.0, 0.0);
    for k in &keys {
        lp += get(p, k);
        lq += get(q, k);
        events.push((lp, lq));
        events.push((n - lp, n - lq));
    }
    let mut worst = 0f64;
    for (a, b) in events {
        if a < MIN_COUNT || b < MIN_COUNT || a > n - MIN_COUNT || b > n - MIN_COUNT {
            continue;
        }
        let ((alo, ahi), (blo, bhi)) = (wilson(a, n), wilson(b, n));
        worst = worst.max((alo / bhi).ln()).max((blo / ahi).ln());
    }
    worst
}

fn halve(part: Option<Part>) -> Option<Part> {
    part.map(|p| Part {
        scale: Scale::new(p.scale.num(), p.scale.den() * 2).unwrap(),
        ..p
    })
}

fn base_dataset() -> Dataset {
    (0..10)
        .map(|e| {
            let records = (0..3)
                .map(|i| (i, json!({"v": (e * 7 + i) % 5, "region": "eu"})))
                .collect();
            (format!("e{e}"), records)
        })
        .collect()
}

/// `base` plus one entity contributing maximally: more records than the limit, every
/// value beyond the upper bound.
fn with_maximal_entity(base: &Dataset) -> Dataset {
    let mut d = base.clone();
    d.push((
        "target".into(),
        (0..10).map(|i| (i, json!({"v": 1000, "region": "eu"}))).collect(),
    ));
    d
}

fn check(query: Query, epsilon: &str, bucket: impl Fn(&Values) -> i128 + Copy) {
    let epsilon = Epsilon::parse_positive(epsilon).unwrap();
    let plan = Plan::new(query, epsilon).unwrap();
    let (d, d2) = (base_dataset(), with_maximal_entity(&base_dataset()));
    let eps = epsilon.micros() as f64 / 1e6;

    let loss = empirical_loss(&run(&plan, &d, 11, bucket), &run(&plan, &d2, 12, bucket));
    eprintln!("{:?}: empirical loss {loss:.3} (ε = {eps})", plan.query.kind);
    assert!(
        loss <= eps,
        "{:?}: empirical loss {loss:.3} > ε = {eps}",
        plan.query.kind
    );
    assert!(
        loss > 0.5 * eps,
        "{:?}: the check has no power (loss {loss:.3})",
        plan.query.kind
    );

    let mut broken = plan.clone();
    broken.count = halve(broken.count);
    broken.sum = halve(broken.sum);
    let loss = empirical_loss(&run(&broken, &d, 13, bucket), &run(&broken, &d2, 14, bucket));
    eprintln!(
        "{:?} half-scaled: empirical loss {loss:.3} (ε = {eps})",
        plan.query.kind
    );
    assert!(
        loss > eps,
        "{:?}: a half-scaled mechanism passed the check (loss {loss:.3} ≤ ε = {eps})",
        plan.query.kind
    );
}

fn query(kind: Kind) -> Query {
    Query {
        kind,
        field: (kind != Kind::Count).then(|| "v".to_owned()),
        filter: Some(("region".into(), json!("eu"))),
        start: 0,
        end: u64::MAX,
        bounds: (kind != Kind::Count).then_some((0, 2_000)),
        max_records_per_entity: 3,
        bins: Vec::new(),
    }
}

#[test]
fn count_release_has_privacy_loss_at_most_epsilon() {
    check(query(Kind::Count), "0.5", |v| match v {
        Values::Count(c) => *c,
        _ => unreachable!(),
    });
}

#[test]
fn sum_release_has_privacy_loss_at_most_epsilon() {
    // Δ = 3 × 2000 units, scale 12000 units at ε = 0.5: bucket by 2000 units.
    check(query(Kind::Sum), "0.5", |v| match v {
        Values::Sum(s) => s.div_euclid(2_000),
        _ => unreachable!(),
    });
}

#[test]
fn histogram_release_has_privacy_loss_at_most_epsilon() {
    // The target's values clamp to 2, so all its records fall in the last bin; the
    // output event is that bin's noisy count (a marginal, so its loss is at most ε too).
    let mut q = query(Kind::Histogram);
    q.bounds = Some((0, 2_000));
    q.bins = vec![0, 1_000, 2_000, 3_000];
    check(q, "0.5", |v| match v {
        Values::Histogram(b) => b[2],
        _ => unreachable!(),
    });
}
