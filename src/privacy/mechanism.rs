//! The discrete Laplace mechanism over an aggregate: how ε is split between the parts
//! of an answer, the exact noise scale of each part, and the noisy release.
//!
//! Invariant: a [`Plan`] is computed from the validated query and ε alone (never from
//! data), each part's scale is exactly its declared sensitivity / its ε, and the parts'
//! ε add up to exactly the ε charged (basic composition; a histogram's bins are disjoint,
//! so its L1 sensitivity covers all of them at once). No floating-point arithmetic.
#![forbid(clippy::float_arithmetic)]

use super::aggregate::{Kind, Query, Values};
use super::epsilon::Epsilon;
use super::sampler::{add_noise, NoiseRng, SamplerError, Scale};

/// The name reported in answers.
pub const MECHANISM: &str = "discrete_laplace";

/// A query ready to run: what it costs and how each released integer is noised.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The validated query.
    pub query: Query,
    /// Total ε charged.
    pub epsilon: Epsilon,
    /// ε and scale of the count part (count, histogram bins, mean's count).
    pub count: Option<Part>,
    /// ε and scale of the sum part (sum, mean's sum), in units.
    pub sum: Option<Part>,
}

/// One noised component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// ε spent on it.
    pub epsilon: Epsilon,
    /// Declared L1 sensitivity.
    pub sensitivity: u128,
    /// Noise scale = sensitivity / ε.
    pub scale: Scale,
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// `mean` splits ε in two; 0.000001 cannot be split.
    #[error("mean splits epsilon between a sum and a count; it needs at least \"0.000002\"")]
    EpsilonTooSmallToSplit,
    /// Scale out of range.
    #[error("{0}")]
    Scale(#[from] SamplerError),
}

impl Part {
    fn new(epsilon: Epsilon, sensitivity: u128) -> Result<Self, SamplerError> {
        Ok(Self {
            epsilon,
            sensitivity,
            scale: Scale::for_sensitivity(sensitivity, epsilon)?,
        })
    }
}

impl Plan {
    /// Split ε and compute the scales.
    pub fn new(query: Query, epsilon: Epsilon) -> Result<Self, PlanError> {
        let s = query.sensitivity();
        let (count, sum) = match query.kind {
            Kind::Count | Kind::Histogram => (Some(Part::new(epsilon, s.count)?), None),
            Kind::Sum => (None, Some(Part::new(epsilon, s.sum)?)),
            Kind::Mean => {
                let half = Epsilon::from_micros(epsilon.micros() / 2);
                let rest = Epsilon::from_micros(epsilon.micros() - half.micros());
                if half == Epsilon::ZERO {
                    return Err(PlanError::EpsilonTooSmallToSplit);
                }
                (Some(Part::new(rest, s.count)?), Some(Part::new(half, s.sum)?))
            }
        };
        Ok(Self {
            query,
            epsilon,
            count,
            sum,
        })
    }

    /// Add independent discrete Laplace noise to every released integer.
    pub fn release<R: NoiseRng + ?Sized>(&self, exact: &Values, rng: &mut R) -> Result<Values, SamplerError> {
        let part = |p: &Option<Part>| p.map(|p| p.scale).ok_or(SamplerError::NotPositive);
        Ok(match exact {
            Values::Count(c) => Values::Count(add_noise(rng, *c, part(&self.count)?)?),
            Values::Sum(s) => Values::Sum(add_noise(rng, *s, part(&self.sum)?)?),
            Values::Mean { sum, count } => Values::Mean {
                sum: add_noise(rng, *sum, part(&self.sum)?)?,
                count: add_noise(rng, *count, part(&self.count)?)?,
            },
            Values::Histogram(bins) => {
                let scale = part(&self.count)?;
                let mut out = Vec::with_capacity(bins.len());
                for b in bins {
                    out.push(add_noise(rng, *b, scale)?);
                }
                Values::Histogram(out)
            }
        })
    }
}
