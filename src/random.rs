//! Randomness as a dependency: every random byte the appliance draws (ids, nonces, data
//! keys, token secrets, DP noise seeds) comes from a [`Random`] handed in by the
//! composition root, so where randomness enters is visible in each service's fields.
//!
//! Invariant: the only source is the operating system's CSPRNG; there is no seedable or
//! deterministic variant in this crate (tests of the DP sampler seed their own RNG).

use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};

/// The OS CSPRNG. Zero-sized and cheap to clone.
#[derive(Clone, Copy, Default, Debug)]
pub struct Random {
    _private: (),
}

impl Random {
    /// The operating system's CSPRNG (`getrandom`).
    pub fn os() -> Self {
        Self { _private: () }
    }

    /// Fill `buf` with random bytes.
    pub fn fill(&self, buf: &mut [u8]) {
        OsRng.fill_bytes(buf);
    }

    /// `N` random bytes.
    pub fn bytes<const N: usize>(&self) -> [u8; N] {
        let mut b = [0u8; N];
        self.fill(&mut b);
        b
    }

    /// A CSPRNG handle for APIs that take an `RngCore` (e.g. seeding a ChaCha stream).
    pub fn rng(&self) -> impl RngCore + CryptoRng {
        OsRng
    }
}
