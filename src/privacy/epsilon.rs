//! Exact ε amounts: decimal strings (`"0.5"`) parsed into integer micro-ε (`u64`), never
//! into a float.
//!
//! Invariant: an [`Epsilon`] is a whole number of micro-ε (10⁻⁶ ε); parsing accepts only
//! plain decimals with at most six fractional digits, so `"0.1"` ten times adds up to
//! exactly `"1.0"` and a budget check `spent + ε ≤ total` is an exact integer comparison.
#![forbid(clippy::float_arithmetic)]

use std::fmt;

/// Micro-ε per ε.
pub const MICROS_PER_EPSILON: u64 = 1_000_000;
/// Most fractional digits an ε string may have.
pub const MAX_DECIMALS: usize = 6;
/// Largest ε amount accepted anywhere (budgets included): 10⁹ ε, so sums of amounts
/// never overflow `u64` micro-ε.
pub const MAX_EPSILON_MICROS: u64 = 1_000_000_000 * MICROS_PER_EPSILON;

/// An amount of ε, in micro-ε.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epsilon(u64);

/// Why an ε string was refused (the message names the rule).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EpsilonError(pub String);

impl Epsilon {
    /// Zero ε (an unspent budget; never a valid query ε).
    pub const ZERO: Epsilon = Epsilon(0);

    /// From micro-ε.
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros)
    }

    /// The amount in micro-ε.
    pub const fn micros(self) -> u64 {
        self.0
    }

    /// Parse a query ε: a positive decimal string (`"0.5"`, `"1"`, `"0.000001"`).
    pub fn parse_positive(s: &str) -> Result<Self, EpsilonError> {
        let e = Self::parse_amount(s)?;
        if e.0 == 0 {
            return Err(EpsilonError(format!("epsilon must be greater than zero, got {s:?}")));
        }
        Ok(e)
    }

    /// Parse an amount that may be zero (a budget): `digits[.digits]`, at most six
    /// decimals, no sign, no exponent, no spaces, at most 10⁹.
    pub fn parse_amount(s: &str) -> Result<Self, EpsilonError> {
        let bad = |why: &str| {
            EpsilonError(format!(
                "epsilon {s:?} is not a valid amount: {why}; write a plain decimal string like \"0.5\""
            ))
        };
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.starts_with('-') {
            return Err(bad("it is negative"));
        }
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (s, None),
        };
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) {
            return Err(bad("expected digits before the decimal point"));
        }
        let frac = match frac {
            None => "",
            Some(f) if digits(f) => f,
            Some(_) => return Err(bad("expected digits after the decimal point")),
        };
        if frac.len() > MAX_DECIMALS {
            return Err(bad("more than 6 decimal places"));
        }
        let int = int.trim_start_matches('0');
        // More than 10 integer digits is above the maximum whatever they are.
        if int.len() > 10 {
            return Err(bad("larger than 1000000000"));
        }
        let whole: u64 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad("not a number"))?
        };
        let mut frac_micros: u64 = 0;
        for (i, b) in frac.bytes().enumerate() {
            let digit = u64::from(b - b'0');
            frac_micros += digit * 10u64.pow((MAX_DECIMALS - 1 - i) as u32);
        }
        let micros = whole
            .checked_mul(MICROS_PER_EPSILON)
            .and_then(|w| w.checked_add(frac_micros))
            .filter(|m| *m <= MAX_EPSILON_MICROS)
            .ok_or_else(|| bad("larger than 1000000000"))?;
        Ok(Self(micros))
    }

    /// `self + other`, if it does not overflow.
    pub fn checked_add(self, other: Epsilon) -> Option<Epsilon> {
        self.0.checked_add(other.0).map(Epsilon)
    }

    /// `self − other`, floored at zero.
    pub fn saturating_sub(self, other: Epsilon) -> Epsilon {
        Epsilon(self.0.saturating_sub(other.0))
    }

    /// ε as an exact fraction `(numerator, denominator)` in lowest terms.
    pub fn as_fraction(self) -> (u64, u64) {
        let g = gcd(self.0, MICROS_PER_EPSILON).max(1);
        (self.0 / g, MICROS_PER_EPSILON / g)
    }
}

/// Greatest common divisor.
pub fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl fmt::Display for Epsilon {
    /// Shortest decimal with at least one fractional digit: `0.5`, `10.0`, `0.000001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / MICROS_PER_EPSILON;
        let frac = format!("{:06}", self.0 % MICROS_PER_EPSILON);
        let frac = frac.trim_end_matches('0');
        write!(f, "{whole}.{}", if frac.is_empty() { "0" } else { frac })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_plain_decimals_exactly() {
        assert_eq!(Epsilon::parse_positive("0.5").unwrap().micros(), 500_000);
        assert_eq!(Epsilon::parse_positive("1").unwrap().micros(), 1_000_000);
        assert_eq!(Epsilon::parse_positive("10.0").unwrap().micros(), 10_000_000);
        assert_eq!(Epsilon::parse_positive("0.000001").unwrap().micros(), 1);
        assert_eq!(Epsilon::parse_positive("007.250").unwrap().micros(), 7_250_000);
        assert_eq!(Epsilon::parse_amount("0").unwrap(), Epsilon::ZERO);
    }

    #[test]
    fn ten_tenths_are_exactly_one() {
        let tenth = Epsilon::parse_positive("0.1").unwrap();
        let mut sum = Epsilon::ZERO;
        for _ in 0..10 {
            sum = sum.checked_add(tenth).unwrap();
        }
        assert_eq!(sum, Epsilon::parse_positive("1.0").unwrap());
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "NaN",
            "nan",
            "inf",
            "-0.5",
            "-0",
            "+0.5",
            "0",
            "0.0",
            "0.000000",
            "0.1234567",
            "1e-3",
            "1E3",
            " 0.5",
            "0.5 ",
            ".5",
            "5.",
            "0x1",
            "1,5",
            "١",
            "0.5.1",
            "10000000000",
            "1000000000.000001",
        ] {
            assert!(Epsilon::parse_positive(bad).is_err(), "{bad:?} must be rejected");
        }
        assert!(Epsilon::parse_amount("1000000000").is_ok());
    }

    #[test]
    fn displays_shortest_form() {
        for (s, shown) in [
            ("0.5", "0.5"),
            ("9.5", "9.5"),
            ("10", "10.0"),
            ("0.000001", "0.000001"),
            ("2.50", "2.5"),
        ] {
            assert_eq!(Epsilon::parse_positive(s).unwrap().to_string(), shown);
        }
        assert_eq!(Epsilon::ZERO.to_string(), "0.0");
    }

    #[test]
    fn fraction_is_reduced() {
        assert_eq!(Epsilon::parse_positive("0.5").unwrap().as_fraction(), (1, 2));
        assert_eq!(Epsilon::parse_positive("0.3").unwrap().as_fraction(), (3, 10));
        assert_eq!(Epsilon::parse_positive("2").unwrap().as_fraction(), (2, 1));
    }
}
