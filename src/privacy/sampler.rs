//! The discrete Laplace sampler of Canonne, Kamath & Steinke 2020 ("The Discrete Gaussian
//! for Differential Privacy", arXiv 2004.00010, Algorithms 1 and 2), in exact integer
//! arithmetic.
//!
//! Invariant: nothing here is a float. Every step uses only uniform random integers from a
//! cryptographically secure generator ([`NoiseRng`]), integer comparisons and exact
//! fractions held as `u128` pairs with checked arithmetic, so there is no rounding for a
//! Mironov-style attack to exploit. Floating-point arithmetic is forbidden by lint in this
//! module; the caller turns the integer result into display values elsewhere.
//!
//! The output X has `P(X = x) = (1 − p)/(1 + p) · p^|x|` with `p = e^(−den/num)`, i.e. the
//! discrete Laplace distribution with scale `num/den`. Adding it to an integer query of L1
//! sensitivity Δ with scale Δ/ε gives ε-differential privacy.
#![forbid(clippy::float_arithmetic)]
#![deny(
    clippy::float_cmp,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

use rand::{CryptoRng, RngCore};

use super::epsilon::Epsilon;

/// The randomness the sampler accepts: a cryptographically secure generator. Production
/// seeds one from the operating system per query; tests pass a seeded one.
pub trait NoiseRng: RngCore + CryptoRng {}
impl<T: RngCore + CryptoRng + ?Sized> NoiseRng for T {}

/// Largest scale numerator accepted, so `t·v` and the output stay far inside `u128`/`i128`.
pub const MAX_SCALE_NUM: u128 = 1 << 100;

/// Why a scale or a draw was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SamplerError {
    /// A zero numerator or denominator.
    #[error("the noise scale must be a positive fraction")]
    NotPositive,
    /// The scale's numerator is above [`MAX_SCALE_NUM`].
    #[error("the noise scale is too large")]
    TooLarge,
    /// An intermediate product overflowed (impossible within the accepted scales).
    #[error("sampler arithmetic overflowed")]
    Overflow,
}

/// A noise scale `num/den > 0` as an exact fraction in lowest terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    num: u128,
    den: u128,
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Scale {
    /// `num/den`, reduced.
    pub fn new(num: u128, den: u128) -> Result<Self, SamplerError> {
        if num == 0 || den == 0 {
            return Err(SamplerError::NotPositive);
        }
        let g = gcd(num, den);
        let (num, den) = (num / g, den / g);
        if num > MAX_SCALE_NUM {
            return Err(SamplerError::TooLarge);
        }
        Ok(Self { num, den })
    }

    /// The scale that makes a query of L1 sensitivity `sensitivity` ε-DP: Δ/ε, exactly
    /// (ε = p/q gives Δ·q/p).
    pub fn for_sensitivity(sensitivity: u128, epsilon: Epsilon) -> Result<Self, SamplerError> {
        let (p, q) = epsilon.as_fraction();
        let num = sensitivity.checked_mul(u128::from(q)).ok_or(SamplerError::TooLarge)?;
        Self::new(num, u128::from(p))
    }

    /// Numerator.
    pub fn num(&self) -> u128 {
        self.num
    }

    /// Denominator.
    pub fn den(&self) -> u128 {
        self.den
    }
}

/// A uniform integer in `0..d` (`d > 0`), by rejection: a draw in the biased top zone is
/// thrown away.
pub fn uniform_below<R: NoiseRng + ?Sized>(rng: &mut R, d: u128) -> u128 {
    debug_assert!(d > 0);
    if let Ok(d64) = u64::try_from(d) {
        // 2^64 mod d = (u64::MAX mod d + 1) mod d; accept x < 2^64 − that.
        let rem = (u64::MAX % d64 + 1) % d64;
        loop {
            let x = rng.next_u64();
            if rem == 0 || x <= u64::MAX - rem {
                return u128::from(x % d64);
            }
        }
    }
    let rem = (u128::MAX % d + 1) % d;
    loop {
        let x = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
        if rem == 0 || x <= u128::MAX - rem {
            return x % d;
        }
    }
}

/// Bernoulli(n/d), `0 ≤ n ≤ d`, `d > 0`.
pub fn bernoulli<R: NoiseRng + ?Sized>(rng: &mut R, n: u128, d: u128) -> bool {
    uniform_below(rng, d) < n
}

/// Bernoulli(e^(−n/d)) for `0 ≤ n/d ≤ 1` (CKS20 Algorithm 1, first case): flip
/// Bernoulli(γ/k) coins for k = 1, 2, … until one fails; true iff that k is odd.
pub fn bernoulli_exp_minus_unit<R: NoiseRng + ?Sized>(rng: &mut R, n: u128, d: u128) -> Result<bool, SamplerError> {
    debug_assert!(n <= d && d > 0);
    let mut k: u128 = 1;
    loop {
        let dk = d.checked_mul(k).ok_or(SamplerError::Overflow)?;
        if !bernoulli(rng, n, dk) {
            return Ok(k % 2 == 1);
        }
        k += 1;
    }
}

/// Bernoulli(e^(−n/d)) for any `n/d ≥ 0` (CKS20 Algorithm 1): ⌊γ⌋ coins of e^(−1) must
/// all succeed, then one coin of e^(−(γ − ⌊γ⌋)).
pub fn bernoulli_exp_minus<R: NoiseRng + ?Sized>(rng: &mut R, n: u128, d: u128) -> Result<bool, SamplerError> {
    if d == 0 {
        return Err(SamplerError::NotPositive);
    }
    let whole = n / d;
    let mut i: u128 = 0;
    while i < whole {
        if !bernoulli_exp_minus_unit(rng, 1, 1)? {
            return Ok(false);
        }
        i += 1;
    }
    bernoulli_exp_minus_unit(rng, n % d, d)
}

/// One draw of the discrete Laplace distribution with scale `t/s` (CKS20 Algorithm 2).
pub fn sample_discrete_laplace<R: NoiseRng + ?Sized>(rng: &mut R, scale: Scale) -> Result<i128, SamplerError> {
    let (t, s) = (scale.num, scale.den);
    loop {
        // U uniform in 0..t, kept with probability e^(−U/t).
        let u = uniform_below(rng, t);
        if !bernoulli_exp_minus_unit(rng, u, t)? {
            continue;
        }
        // V = number of successive Bernoulli(e^(−1)) successes.
        let mut v: u128 = 0;
        while bernoulli_exp_minus_unit(rng, 1, 1)? {
            v += 1;
        }
        // X = U + t·V is geometric with parameter 1 − e^(−1/t); Y = ⌊X/s⌋ is geometric
        // with parameter 1 − e^(−s/t).
        let x = t
            .checked_mul(v)
            .and_then(|tv| tv.checked_add(u))
            .ok_or(SamplerError::Overflow)?;
        let y = i128::try_from(x / s).map_err(|_| SamplerError::Overflow)?;
        // A fair sign; "−0" is rejected so that zero is not counted twice.
        let negative = rng.next_u32() & 1 == 1;
        if negative && y == 0 {
            continue;
        }
        return Ok(if negative { -y } else { y });
    }
}

/// `value + noise`, the noise drawn with `scale`.
pub fn add_noise<R: NoiseRng + ?Sized>(rng: &mut R, value: i128, scale: Scale) -> Result<i128, SamplerError> {
    let noise = sample_discrete_laplace(rng, scale)?;
    value.checked_add(noise).ok_or(SamplerError::Overflow)
}
