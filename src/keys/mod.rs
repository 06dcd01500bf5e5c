//! Tier-2 data keys (DEKs): made from a CSPRNG, stored only wrapped by the tenant's
//! HSM-held KEK, unwrapped on demand and kept in a bounded, expiring cache.
//!
//! Invariants: a [`DataKey`] cannot be printed, cloned or serialised and wipes itself
//! on drop; plaintext ([`Plaintext`]) and ciphertext ([`Sealed`]) are different types and
//! only `Sealed` is accepted by the store; every key operation takes the caller's
//! [`TenantScope`](crate::auth::TenantScope), so it cannot act for another tenant.

mod cache;
mod data_key;
pub mod rotation;
mod service;

pub use cache::DekCache;
pub use data_key::{dek_aad, record_aad, DataKey, DekId, OpenError, Plaintext, SealError, Sealed, WrappedDek};
pub use service::{KeyError, KeyService};
