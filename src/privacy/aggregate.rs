//! The pre-noise pipeline of a private query: time range → equality filter → per-entity
//! truncation → clamping → fixed-point aggregation, all in integers.
//!
//! Invariant (what makes the declared sensitivity true): records arrive grouped by entity
//! and, within an entity, in timestamp order; an [`Accumulator`] takes at most
//! `max_records_per_entity` eligible records from each entity, and every numeric value
//! is converted *exactly* from its JSON text to integer units of [`RESOLUTION`] and
//! clamped to the bounds before it is added. So removing one entity changes a count by at
//! most k, a sum by at most k·max(|lower|, |upper|) units and a histogram by at most k in
//! L1 norm ([`Query::sensitivity`]). No floating-point arithmetic happens here.
#![forbid(clippy::float_arithmetic)]

use serde_json::{Number, Value};

/// Decimal places of the fixed-point resolution: one unit is 0.001 of the field's value.
pub const RESOLUTION_DECIMALS: u32 = 3;
/// The resolution as text, for documentation and answers.
pub const RESOLUTION: &str = "0.001";
/// Units per 1.0.
pub const UNITS_PER_ONE: i128 = 1000;
/// Largest |bound| or |bin edge| accepted, in the field's own units (10¹²).
pub const MAX_ABS_BOUND: i128 = 1_000_000_000_000;
/// Largest `max_records_per_entity`.
pub const MAX_RECORDS_PER_ENTITY: u32 = 1000;
/// Most histogram bins (edges − 1).
pub const MAX_BINS: usize = 1000;
/// Values beyond ±10³⁰ units saturate before clamping (they are clamped anyway).
const SATURATE: i128 = 1_000_000_000_000_000_000_000_000_000_000;

/// Which aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Number of records.
    Count,
    /// Sum of a field.
    Sum,
    /// Mean of a field (noisy sum / noisy count).
    Mean,
    /// Counts per caller-given bin of a field.
    Histogram,
}

impl Kind {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Count => "count",
            Kind::Sum => "sum",
            Kind::Mean => "mean",
            Kind::Histogram => "histogram",
        }
    }

    /// Parse the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "count" => Kind::Count,
            "sum" => Kind::Sum,
            "mean" => Kind::Mean,
            "histogram" => Kind::Histogram,
            _ => return None,
        })
    }
}

/// A validated query: everything needed before any data is read.
#[derive(Debug, Clone)]
pub struct Query {
    /// Aggregate.
    pub kind: Kind,
    /// Top-level field of the record data aggregated (required except for `count`, where
    /// it restricts the count to records that have the field, non-null).
    pub field: Option<String>,
    /// Equality filter: top-level field and the JSON value it must equal.
    pub filter: Option<(String, Value)>,
    /// Inclusive start, Unix nanoseconds.
    pub start: u64,
    /// Exclusive end, Unix nanoseconds.
    pub end: u64,
    /// Clamp bounds in units (required for sum and mean; optional for histogram).
    pub bounds: Option<(i128, i128)>,
    /// Truncation: records taken per entity.
    pub max_records_per_entity: u32,
    /// Histogram bin edges in units, strictly ascending, at least two.
    pub bins: Vec<i128>,
}

/// L1 sensitivities of the parts of an aggregate, in units of the released integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sensitivity {
    /// Of the record count (count, mean's count, histogram in L1).
    pub count: u128,
    /// Of the sum in units (sum, mean's sum); 0 when there is no sum.
    pub sum: u128,
}

/// Pre-noise (or, after the mechanism, noisy) values of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Values {
    /// A count.
    Count(i128),
    /// A sum in units.
    Sum(i128),
    /// A sum in units and a count.
    Mean {
        /// Sum in units.
        sum: i128,
        /// Count.
        count: i128,
    },
    /// Counts per bin.
    Histogram(Vec<i128>),
}

impl Query {
    /// The declared sensitivities, from public parameters only.
    pub fn sensitivity(&self) -> Sensitivity {
        let k = u128::from(self.max_records_per_entity);
        let sum = match (self.kind, self.bounds) {
            (Kind::Sum | Kind::Mean, Some((lo, hi))) => k * lo.unsigned_abs().max(hi.unsigned_abs()).max(1),
            _ => 0,
        };
        Sensitivity { count: k, sum }
    }

    /// Whether records must be decrypted (a filter or a field is looked at). A plain
    /// count needs only the clear-text keys (entity, timestamp).
    pub fn needs_data(&self) -> bool {
        self.filter.is_some() || self.field.is_some()
    }

    fn eligible_value(&self, data: Option<&Value>) -> Option<i128> {
        if let Some((field, equals)) = &self.filter {
            let got = data.and_then(|d| d.get(field))?;
            if !json_equal(got, equals) {
                return None;
            }
        }
        match (&self.field, self.kind) {
            (None, _) => Some(0),
            (Some(f), Kind::Count) => data.and_then(|d| d.get(f)).filter(|v| !v.is_null()).map(|_| 0),
            (Some(f), _) => match data.and_then(|d| d.get(f)) {
                Some(Value::Number(n)) => Some(number_to_units(n)),
                _ => None,
            },
        }
    }
}

/// JSON equality, except that numbers compare by value (`1` equals `1.0`).
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let exact = |n: &Number| normalized_decimal(&n.to_string());
            match (exact(x), exact(y)) {
                (Some(dx), Some(dy)) => dx == dy,
                _ => x == y,
            }
        }
        _ => a == b,
    }
}

/// Feeds records of one tenant through truncation and aggregation.
///
/// Protocol: for each record, in entity-grouped timestamp order, call
/// [`Accumulator::wants`]; only if it answers true, read (decrypt) the record and call
/// [`Accumulator::push`] with its data (or `None` when [`Query::needs_data`] is false).
pub struct Accumulator<'q> {
    query: &'q Query,
    entity: Option<String>,
    taken: u32,
    count: i128,
    sum: i128,
    bins: Vec<i128>,
}

impl<'q> Accumulator<'q> {
    /// An empty accumulator.
    pub fn new(query: &'q Query) -> Self {
        Self {
            query,
            entity: None,
            taken: 0,
            count: 0,
            sum: 0,
            bins: vec![0; query.bins.len().saturating_sub(1)],
        }
    }

    /// Whether the next record (of `entity`, at `ts`) should be read: it is in the time
    /// range and its entity has not yet given its quota.
    pub fn wants(&mut self, entity: &str, ts: u64) -> bool {
        if self.entity.as_deref() != Some(entity) {
            self.entity = Some(entity.to_owned());
            self.taken = 0;
        }
        ts >= self.query.start && ts < self.query.end && self.taken < self.query.max_records_per_entity
    }

    /// Add the record last accepted by [`Accumulator::wants`].
    pub fn push(&mut self, data: Option<&Value>) {
        let q = self.query;
        let Some(raw) = q.eligible_value(data) else {
            return;
        };
        self.taken += 1;
        let value = match q.bounds {
            Some((lo, hi)) => raw.clamp(lo, hi),
            None => raw,
        };
        match q.kind {
            Kind::Count => self.count += 1,
            Kind::Sum => self.sum += value,
            Kind::Mean => {
                self.sum += value;
                self.count += 1;
            }
            Kind::Histogram => {
                if let Some(i) = bin_index(&q.bins, value) {
                    self.bins[i] += 1;
                }
            }
        }
    }

    /// The exact (pre-noise) aggregate.
    pub fn finish(self) -> Values {
        match self.query.kind {
            Kind::Count => Values::Count(self.count),
            Kind::Sum => Values::Sum(self.sum),
            Kind::Mean => Values::Mean {
                sum: self.sum,
                count: self.count,
            },
            Kind::Histogram => Values::Histogram(self.bins),
        }
    }
}

/// The bin of `v`: `[e_i, e_{i+1})`, the last bin also holding its upper edge; `None`
/// outside `[e_0, e_last]`.
pub fn bin_index(edges: &[i128], v: i128) -> Option<usize> {
    let (first, last) = (*edges.first()?, *edges.last()?);
    if v < first || v > last {
        return None;
    }
    if v == last {
        return edges.len().checked_sub(2);
    }
    // Number of edges ≤ v, minus one.
    Some(edges.partition_point(|e| *e <= v) - 1)
}

/// A pre-noise aggregate over an in-memory dataset: entities with their records as
/// (timestamp, data). Same pipeline as the store scan (used by tests and benchmarks).
pub fn evaluate(query: &Query, dataset: &[(String, Vec<(u64, Value)>)]) -> Values {
    let mut acc = Accumulator::new(query);
    for (entity, records) in dataset {
        let mut records: Vec<&(u64, Value)> = records.iter().collect();
        records.sort_by_key(|(ts, _)| *ts);
        for (ts, data) in records {
            if acc.wants(entity, *ts) {
                acc.push(if query.needs_data() { Some(data) } else { None });
            }
        }
    }
    acc.finish()
}

/// A JSON number in units of [`RESOLUTION`], converted exactly from its decimal text and
/// rounded half away from zero; beyond ±10³⁰ units it saturates.
pub fn number_to_units(n: &Number) -> i128 {
    if let Some(i) = n.as_i64() {
        return i128::from(i) * UNITS_PER_ONE;
    }
    if let Some(u) = n.as_u64() {
        return i128::from(u) * UNITS_PER_ONE;
    }
    decimal_to_units(&n.to_string()).map_or(0, |(u, _)| u)
}

/// A JSON number given by the caller (bound, bin edge) in units, only if it is exact at
/// the resolution and within ±[`MAX_ABS_BOUND`].
pub fn exact_units(n: &Number) -> Option<i128> {
    let (units, exact) = decimal_to_units(&n.to_string())?;
    (exact && units.abs() <= MAX_ABS_BOUND * UNITS_PER_ONE).then_some(units)
}

/// Parse `[-]digits[.digits][(e|E)[+-]digits]` into units of 10^-[`RESOLUTION_DECIMALS`]:
/// (rounded value, whether it was exact).
pub fn decimal_to_units(s: &str) -> Option<(i128, bool)> {
    decimal_scaled(s, RESOLUTION_DECIMALS)
}

/// A canonical text of a decimal's exact value (`-25e-1` for `-2.50`), for equality.
fn normalized_decimal(s: &str) -> Option<String> {
    let (neg, mantissa, exp) = split_decimal(s)?;
    let digits = mantissa.trim_start_matches('0');
    if digits.is_empty() {
        return Some("0".to_owned());
    }
    let trimmed = digits.trim_end_matches('0');
    let exp = exp + (digits.len() - trimmed.len()) as i64;
    Some(format!("{}{trimmed}e{exp}", if neg { "-" } else { "" }))
}

/// (negative, all mantissa digits, exponent such that value = mantissa × 10^exponent).
fn split_decimal(s: &str) -> Option<(bool, String, i64)> {
    let (neg, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (num, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if exp.unsigned_abs() > 100_000 {
        return None;
    }
    let mantissa = format!("{int}{frac}");
    Some((neg, mantissa, exp - frac.len() as i64))
}

fn decimal_scaled(s: &str, decimals: u32) -> Option<(i128, bool)> {
    let (neg, mantissa, exp) = split_decimal(s)?;
    let digits = mantissa.trim_start_matches('0');
    // value × 10^decimals = digits × 10^shift
    let shift = exp + i64::from(decimals);
    let (magnitude, exact) = if digits.is_empty() {
        (0i128, true)
    } else if shift >= 0 {
        if digits.len() as i64 + shift > 31 {
            (SATURATE, true)
        } else {
            let m: i128 = digits.parse().ok()?;
            (m * 10i128.pow(u32::try_from(shift).ok()?), true)
        }
    } else {
        let drop = usize::try_from(-shift).ok()?;
        let (kept, dropped) = if drop >= digits.len() {
            ("", format!("{}{digits}", "0".repeat(drop - digits.len())))
        } else {
            let (k, d) = digits.split_at(digits.len() - drop);
            (k, d.to_owned())
        };
        let base: i128 = if kept.is_empty() {
            0
        } else if kept.len() > 31 {
            SATURATE
        } else {
            kept.parse().ok()?
        };
        let round_up = dropped.as_bytes().first().is_some_and(|b| *b >= b'5');
        let exact = dropped.bytes().all(|b| b == b'0');
        ((base + i128::from(round_up)).min(SATURATE), exact)
    };
    Some((if neg { -magnitude } else { magnitude }, exact))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn n(v: Value) -> Number {
        match v {
            Value::Number(n) => n,
            _ => unreachable!(),
        }
    }

    #[test]
    fn numbers_convert_exactly() {
        assert_eq!(number_to_units(&n(json!(12))), 12_000);
        assert_eq!(number_to_units(&n(json!(-3))), -3_000);
        assert_eq!(number_to_units(&n(json!(0.1))), 100);
        assert_eq!(number_to_units(&n(json!(12.3456))), 12_346);
        assert_eq!(number_to_units(&n(json!(-12.3455))), -12_346);
        assert_eq!(number_to_units(&n(json!(0.0004))), 0);
        assert_eq!(number_to_units(&n(json!(1e300))), SATURATE);
        assert_eq!(number_to_units(&n(json!(-1e300))), -SATURATE);
        assert_eq!(number_to_units(&n(json!(1.5e-7))), 0);
        assert_eq!(number_to_units(&n(json!(2.5e3))), 2_500_000);
        assert_eq!(exact_units(&n(json!(200))), Some(200_000));
        assert_eq!(exact_units(&n(json!(0.125))), Some(125));
        assert_eq!(exact_units(&n(json!(0.1255))), None);
        assert_eq!(exact_units(&n(json!(1e13))), None);
    }

    #[test]
    fn numeric_equality_ignores_representation() {
        assert!(json_equal(&json!(1), &json!(1.0)));
        assert!(json_equal(&json!(-2.50), &json!(-2.5)));
        assert!(!json_equal(&json!(1), &json!(1.5)));
        assert!(!json_equal(&json!("1"), &json!(1)));
        assert!(json_equal(&json!({"a": [1, "x"]}), &json!({"a": [1, "x"]})));
    }

    #[test]
    fn bins_are_half_open_with_a_closed_last_bin() {
        let e = [0, 10, 20];
        assert_eq!(bin_index(&e, -1), None);
        assert_eq!(bin_index(&e, 0), Some(0));
        assert_eq!(bin_index(&e, 9), Some(0));
        assert_eq!(bin_index(&e, 10), Some(1));
        assert_eq!(bin_index(&e, 20), Some(1));
        assert_eq!(bin_index(&e, 21), None);
    }

    fn query(kind: Kind) -> Query {
        Query {
            kind,
            field: (kind != Kind::Count).then(|| "v".to_owned()),
            filter: None,
            start: 0,
            end: u64::MAX,
            bounds: Some((0, 10_000)),
            max_records_per_entity: 2,
            bins: vec![0, 5_000, 10_000],
        }
    }

    #[test]
    fn truncates_per_entity_in_timestamp_order_and_clamps() {
        let data = vec![
            (
                "a".to_owned(),
                vec![(3, json!({"v": 100})), (1, json!({"v": 1})), (2, json!({"v": 2}))],
            ),
            (
                "b".to_owned(),
                vec![(1, json!({"v": -5})), (2, json!({"w": 1})), (3, json!({"v": 7}))],
            ),
        ];
        // a: first two by time are 1 and 2; b: -5 (clamped to 0) and 7 ("w" is not eligible).
        assert_eq!(evaluate(&query(Kind::Sum), &data), Values::Sum(10_000));
        assert_eq!(evaluate(&query(Kind::Count), &data), Values::Count(4));
        assert_eq!(
            evaluate(&query(Kind::Mean), &data),
            Values::Mean { sum: 10_000, count: 4 }
        );
        assert_eq!(evaluate(&query(Kind::Histogram), &data), Values::Histogram(vec![3, 1]));
        let mut q = query(Kind::Count);
        q.filter = Some(("v".to_owned(), json!(7.0)));
        assert_eq!(evaluate(&q, &data), Values::Count(1));
        q.filter = None;
        q.start = 2;
        q.end = 3;
        assert_eq!(evaluate(&q, &data), Values::Count(2));
    }
}
