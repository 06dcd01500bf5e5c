//! The `POST /v1/query` body and its validation into a [`Plan`].
//!
//! Invariant: every check here looks only at the request and the policy (never at data),
//! and a request that fails any of them is refused before the budget is touched — so a
//! rejected query never spends or closes the budget.

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use super::aggregate::{exact_units, Kind, Query, MAX_ABS_BOUND, MAX_BINS, MAX_RECORDS_PER_ENTITY, RESOLUTION};
use super::epsilon::Epsilon;
use super::mechanism::Plan;
use super::PrivacyError;
use crate::records::parse_timestamp;

/// The request body (SPEC §6). Unknown fields are refused.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// `count`, `sum`, `mean` or `histogram`.
    pub aggregate: String,
    /// Top-level field of the record data.
    #[serde(default)]
    pub field: Option<String>,
    /// Equality filter.
    #[serde(default)]
    pub filter: Option<Filter>,
    /// Inclusive RFC 3339 start.
    #[serde(default)]
    pub start: Option<String>,
    /// Exclusive RFC 3339 end.
    #[serde(default)]
    pub end: Option<String>,
    /// Clamp bounds.
    #[serde(default)]
    pub bounds: Option<Bounds>,
    /// Truncation per entity (default 1).
    #[serde(default)]
    pub max_records_per_entity: Option<u64>,
    /// Histogram bin edges.
    #[serde(default)]
    pub bins: Option<Vec<Number>>,
    /// ε as a decimal string (kept as raw JSON to name a wrong type precisely).
    pub epsilon: Value,
}

/// `{"field","equals"}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Top-level field.
    pub field: String,
    /// JSON value it must equal (numbers compare by value).
    pub equals: Value,
}

/// `{"lower","upper"}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    /// Lower clamp bound.
    pub lower: Number,
    /// Upper clamp bound.
    pub upper: Number,
}

/// Per-tenant budget and per-query cap (from `[privacy]`, parsed by `crate::config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrivacyPolicy {
    /// Lifetime ε of each tenant.
    pub tenant_budget: Epsilon,
    /// Largest ε of one query.
    pub max_query_epsilon: Epsilon,
}

impl Default for PrivacyPolicy {
    fn default() -> Self {
        Self {
            tenant_budget: Epsilon::from_micros(10_000_000),
            max_query_epsilon: Epsilon::from_micros(1_000_000),
        }
    }
}

fn invalid(m: impl Into<String>) -> PrivacyError {
    PrivacyError::Invalid(m.into())
}

fn field_name(what: &str, f: &str) -> Result<String, PrivacyError> {
    if f.is_empty() || f.len() > 256 {
        return Err(invalid(format!("{what} must be a field name of 1 to 256 bytes")));
    }
    Ok(f.to_owned())
}

fn bound_units(what: &str, n: &Number) -> Result<i128, PrivacyError> {
    exact_units(n).ok_or_else(|| {
        invalid(format!(
            "{what} must be a number with at most 3 decimals (resolution {RESOLUTION}) within ±{MAX_ABS_BOUND}"
        ))
    })
}

impl QueryRequest {
    /// Parse ε: a JSON string holding a positive decimal with at most 6 decimals.
    pub fn epsilon(&self) -> Result<Epsilon, PrivacyError> {
        match &self.epsilon {
            Value::String(s) => Epsilon::parse_positive(s).map_err(|e| invalid(e.0)),
            other => Err(invalid(format!(
                "epsilon must be a JSON string holding a decimal, like \"0.5\"; got {}",
                match other {
                    Value::Null => "null",
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    Value::Array(_) => "an array",
                    Value::Object(_) => "an object",
                    Value::String(_) => "a string",
                }
            ))),
        }
    }

    /// Validate against the policy and plan the query. Fields that do not apply to the
    /// aggregate (`bins` outside a histogram, `bounds` of a count) are ignored.
    pub fn plan(&self, policy: &PrivacyPolicy) -> Result<Plan, PrivacyError> {
        let kind = Kind::parse(&self.aggregate)
            .ok_or_else(|| invalid("aggregate must be one of count, sum, mean, histogram"))?;
        let epsilon = self.epsilon()?;
        if epsilon > policy.max_query_epsilon {
            return Err(PrivacyError::OverCap(format!(
                "epsilon {epsilon} is over the per-query cap of {}",
                policy.max_query_epsilon
            )));
        }
        let field = self.field.as_deref().map(|f| field_name("field", f)).transpose()?;
        if field.is_none() && kind != Kind::Count {
            return Err(invalid(format!("{} needs a numeric field", kind.name())));
        }
        let filter = self
            .filter
            .as_ref()
            .map(|f| Ok::<_, PrivacyError>((field_name("filter.field", &f.field)?, f.equals.clone())))
            .transpose()?;
        let (start, end) = self.window()?;
        let max_records_per_entity = match self.max_records_per_entity {
            None => 1,
            Some(k) if (1..=u64::from(MAX_RECORDS_PER_ENTITY)).contains(&k) => k as u32,
            Some(_) => {
                return Err(invalid(format!(
                    "max_records_per_entity must be an integer from 1 to {MAX_RECORDS_PER_ENTITY}"
                )))
            }
        };
        let query = Query {
            kind,
            field,
            filter,
            start,
            end,
            bounds: self.bounds_for(kind)?,
            max_records_per_entity,
            bins: self.bins_for(kind)?,
        };
        Plan::new(query, epsilon).map_err(|e| invalid(e.to_string()))
    }

    /// `[start, end)` in Unix nanoseconds (open ends by default).
    fn window(&self) -> Result<(u64, u64), PrivacyError> {
        let start = self
            .start
            .as_deref()
            .map(parse_timestamp)
            .transpose()
            .map_err(invalid)?
            .unwrap_or(0);
        let end = self
            .end
            .as_deref()
            .map(parse_timestamp)
            .transpose()
            .map_err(invalid)?
            .unwrap_or(u64::MAX);
        if start > end {
            return Err(invalid("start must not be after end"));
        }
        Ok((start, end))
    }

    /// Clamp bounds in units (none for a count).
    fn bounds_for(&self, kind: Kind) -> Result<Option<(i128, i128)>, PrivacyError> {
        Ok(match (&self.bounds, kind) {
            (_, Kind::Count) => None,
            (None, Kind::Sum | Kind::Mean) => {
                return Err(invalid(format!("{} needs bounds {{\"lower\",\"upper\"}}", kind.name())))
            }
            (None, Kind::Histogram) => None,
            (Some(b), _) => {
                let (lo, hi) = (
                    bound_units("bounds.lower", &b.lower)?,
                    bound_units("bounds.upper", &b.upper)?,
                );
                if lo > hi {
                    return Err(invalid("bounds.lower must not be above bounds.upper"));
                }
                Some((lo, hi))
            }
        })
    }

    /// Histogram edges in units (none outside a histogram).
    fn bins_for(&self, kind: Kind) -> Result<Vec<i128>, PrivacyError> {
        Ok(match (&self.bins, kind) {
            (None, Kind::Histogram) => {
                return Err(invalid("histogram needs bins: at least two ascending edges"));
            }
            (Some(edges), Kind::Histogram) => {
                if edges.len() < 2 || edges.len() > MAX_BINS + 1 {
                    return Err(invalid(format!("bins must hold 2 to {} ascending edges", MAX_BINS + 1)));
                }
                let units = edges
                    .iter()
                    .map(|e| bound_units("each bin edge", e))
                    .collect::<Result<Vec<_>, _>>()?;
                if units.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(invalid("bins must be strictly ascending"));
                }
                units
            }
            (_, _) => Vec::new(),
        })
    }
}
