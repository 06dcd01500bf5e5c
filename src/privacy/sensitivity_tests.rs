//! Sensitivity property test: on random (and adversarial) datasets, removing one entity
//! with all its records changes the pre-noise aggregate by at most the declared
//! sensitivity, for every aggregate, through the same pipeline the endpoint runs.
//!
//! Invariant checked: `|f(D) − f(D − e)|₁ ≤ Δ` for count, sum, both parts of mean and the
//! histogram vector, with entities at the truncation limit, values outside the bounds,
//! huge and non-numeric values, filters and time ranges. Seeded, so deterministic.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::aggregate::{evaluate, Kind, Query, Values};
use super::epsilon::Epsilon;
use super::mechanism::Plan;

type Dataset = Vec<(String, Vec<(u64, Value)>)>;

fn random_value(rng: &mut StdRng) -> Option<Value> {
    Some(match rng.gen_range(0..12) {
        0 => json!(1e300),
        1 => json!(-1e300),
        2 => json!("12"),
        3 => Value::Null,
        4 => return None,
        5 => json!(i64::MAX),
        6 => json!(i64::MIN),
        7 => json!(rng.gen_range(-300..300)),
        _ => {
            let milli: i64 = rng.gen_range(-300_000..300_000);
            serde_json::from_str(&format!("{}.{:03}", milli / 1000, (milli % 1000).abs())).unwrap()
        }
    })
}

fn random_dataset(rng: &mut StdRng, max_k: u32) -> Dataset {
    let entities = rng.gen_range(1..8);
    (0..entities)
        .map(|e| {
            // Some entities sit exactly at, or far beyond, the truncation limit.
            let n = match rng.gen_range(0..3) {
                0 => max_k as usize,
                1 => rng.gen_range(0..3),
                _ => rng.gen_range(0..(3 * max_k as usize + 3)),
            };
            let records = (0..n)
                .map(|_| {
                    let mut data = serde_json::Map::new();
                    if let Some(v) = random_value(rng) {
                        data.insert("v".into(), v);
                    }
                    let region = match rng.gen_range(0..4) {
                        0 => json!("eu"),
                        1 => json!("us"),
                        2 => json!(1),
                        _ => json!(1.0),
                    };
                    data.insert("region".into(), region);
                    (rng.gen_range(0..20u64), Value::Object(data))
                })
                .collect();
            (format!("e{e}"), records)
        })
        .collect()
}

fn random_query(rng: &mut StdRng) -> Query {
    let kind = [Kind::Count, Kind::Sum, Kind::Mean, Kind::Histogram][rng.gen_range(0..4)];
    let lo: i128 = rng.gen_range(-100_000..100_000);
    let hi = lo + rng.gen_range(0..200_000);
    let mut bins: Vec<i128> = (0..rng.gen_range(2..7))
        .map(|_| rng.gen_range(-100_000..300_000))
        .collect();
    bins.sort_unstable();
    bins.dedup();
    if bins.len() < 2 {
        bins = vec![0, 1000];
    }
    let start = rng.gen_range(0..10);
    Query {
        kind,
        field: match kind {
            Kind::Count if rng.gen_bool(0.5) => None,
            _ => Some("v".into()),
        },
        filter: match rng.gen_range(0..3) {
            0 => Some(("region".into(), json!("eu"))),
            1 => Some(("region".into(), json!(1))),
            _ => None,
        },
        start: if rng.gen_bool(0.3) { start } else { 0 },
        end: if rng.gen_bool(0.3) {
            start + rng.gen_range(0..12)
        } else {
            u64::MAX
        },
        bounds: match kind {
            Kind::Count => None,
            Kind::Histogram if rng.gen_bool(0.5) => None,
            _ => Some((lo, hi)),
        },
        max_records_per_entity: rng.gen_range(1..5),
        bins: if kind == Kind::Histogram { bins } else { Vec::new() },
    }
}

/// (count distance, sum distance) between two results; a histogram's count distance is
/// its L1 distance.
fn distance(a: &Values, b: &Values) -> (u128, u128) {
    match (a, b) {
        (Values::Count(x), Values::Count(y)) => ((x - y).unsigned_abs(), 0),
        (Values::Sum(x), Values::Sum(y)) => (0, (x - y).unsigned_abs()),
        (Values::Mean { sum: s1, count: c1 }, Values::Mean { sum: s2, count: c2 }) => {
            ((c1 - c2).unsigned_abs(), (s1 - s2).unsigned_abs())
        }
        (Values::Histogram(x), Values::Histogram(y)) => (x.iter().zip(y).map(|(p, q)| (p - q).unsigned_abs()).sum(), 0),
        _ => unreachable!("same query, same shape"),
    }
}

#[test]
fn removing_one_entity_moves_every_aggregate_by_at_most_its_sensitivity() {
    let mut rng = StdRng::seed_from_u64(0x5e45_1713);
    let mut tight = [false; 4];
    for _ in 0..5_000 {
        let query = random_query(&mut rng);
        let dataset = random_dataset(&mut rng, query.max_records_per_entity);
        let plan = Plan::new(query.clone(), Epsilon::from_micros(500_000)).unwrap();
        let full = evaluate(&query, &dataset);
        let declared = query.sensitivity();
        // The plan noises exactly the declared sensitivities.
        assert_eq!(
            plan.count.map(|p| p.sensitivity),
            (query.kind != Kind::Sum).then_some(declared.count)
        );
        assert_eq!(
            plan.sum.map(|p| p.sensitivity),
            matches!(query.kind, Kind::Sum | Kind::Mean).then_some(declared.sum)
        );
        for removed in 0..dataset.len() {
            let mut neighbour = dataset.clone();
            neighbour.remove(removed);
            let (dc, ds) = distance(&full, &evaluate(&query, &neighbour));
            assert!(
                dc <= declared.count && ds <= declared.sum,
                "query {query:?}\nremoving {} moved the aggregate by (count {dc}, sum {ds}) > {declared:?}",
                dataset[removed].0
            );
            let i = query.kind as usize;
            tight[i] |= dc == declared.count || (declared.sum > 0 && ds == declared.sum);
        }
    }
    assert!(
        tight.iter().all(|t| *t),
        "every aggregate reached its bound at least once: {tight:?}"
    );
}

#[test]
fn a_maximal_entity_reaches_the_bound_exactly() {
    // k records at the upper bound (and beyond it): the sum moves by exactly k·|upper|.
    let k = 3;
    let query = Query {
        kind: Kind::Sum,
        field: Some("v".into()),
        filter: None,
        start: 0,
        end: u64::MAX,
        bounds: Some((-2_000, 5_000)),
        max_records_per_entity: k,
        bins: Vec::new(),
    };
    let base: Dataset = vec![("a".into(), vec![(1, json!({"v": 1.5}))])];
    let mut with = base.clone();
    with.push(("max".into(), (0..10).map(|i| (i, json!({"v": 1e9}))).collect()));
    let (Values::Sum(s1), Values::Sum(s2)) = (evaluate(&query, &with), evaluate(&query, &base)) else {
        unreachable!()
    };
    assert_eq!((s1 - s2) as u128, query.sensitivity().sum);
    assert_eq!(query.sensitivity().sum, u128::from(k) * 5_000);
}
