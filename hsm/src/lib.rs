//! `strongroom-hsm`: everything that talks to key hardware.
//!
//! Two narrow traits, no HTTP or LMDB inside and no cryptoki/tss-esapi type in their
//! signatures:
//! - [`KeyBackend`]: tier-1 tenant keys (KEKs) that never leave the device, AES-GCM
//!   wrapping of data keys under them with an AAD, and the Ed25519 system signing key.
//! - [`MonotonicCounter`]: a hardware counter that only goes up (TPM NV counter), the
//!   anchor against rollback of the data directory.
//!
//! Hardware sessions are not `Sync` and SoftHSM dislikes parallel use of one session, so
//! a backend is owned by one worker thread ([`worker::HsmWorker`]); async callers await
//! replies.
#![forbid(unsafe_code)]

pub mod error;
pub mod pkcs11;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tpm;
pub mod worker;

pub use error::HsmError;
pub use pkcs11::{Pkcs11Backend, Pkcs11Config};
pub use tpm::{TpmConfig, TpmCounter};
pub use worker::HsmWorker;

use zeroize::Zeroizing;

/// Identifies one version of one tenant's key-encryption key.
///
/// The HSM object label is derived from it (`strongroom/tenant/<tenant>/v<version>`), so a
/// KEK cannot be addressed by anything but its tenant and version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KekRef<'a> {
    /// Tenant id, already validated by the caller (`[A-Za-z0-9._:-]{1,128}`).
    pub tenant_id: &'a str,
    /// KEK version, from 1.
    pub version: u32,
}

impl KekRef<'_> {
    /// The PKCS#11 `CKA_LABEL` of this key (SPEC §2).
    pub fn label(&self) -> String {
        format!("strongroom/tenant/{}/v{}", self.tenant_id, self.version)
    }
}

/// Length of an Ed25519 public key.
pub const ED25519_PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const ED25519_SIGNATURE_LEN: usize = 64;

/// Tier-1 key operations, implemented by the PKCS#11 backend (and any future one).
///
/// Every method runs on the backend's owning thread; see [`HsmWorker`].
pub trait KeyBackend: Send {
    /// Generate a new AES-256 KEK inside the device: token object, sensitive,
    /// non-extractable, destroyable. Fails with [`HsmError::KeyExists`] if that
    /// tenant/version already has a key.
    fn create_tenant_key(&mut self, kek: KekRef<'_>) -> Result<(), HsmError>;

    /// Whether the KEK exists in the device.
    fn tenant_key_exists(&mut self, kek: KekRef<'_>) -> Result<bool, HsmError>;

    /// Encrypt `key_material` (a data key) under the KEK with AES-GCM and `aad`.
    /// Output: `nonce(12) || ciphertext || tag(16)`.
    fn wrap(&mut self, kek: KekRef<'_>, key_material: &[u8], aad: &[u8]) -> Result<Vec<u8>, HsmError>;

    /// Reverse of [`KeyBackend::wrap`]. A wrong KEK, AAD or tampered blob fails with
    /// [`HsmError::UnwrapFailed`].
    fn unwrap(&mut self, kek: KekRef<'_>, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError>;

    /// Destroy the KEK in the device. Destroying a missing key is not an error (the
    /// operation is idempotent so interrupted work can be redone).
    fn destroy_tenant_key(&mut self, kek: KekRef<'_>) -> Result<(), HsmError>;

    /// Find or create the Ed25519 system signing key (`CKM_EDDSA`) and return its
    /// raw 32-byte public key.
    fn signing_public_key(&mut self) -> Result<[u8; ED25519_PUBLIC_KEY_LEN], HsmError>;

    /// Sign `message` with the system Ed25519 key (pure Ed25519, no prehash).
    fn sign(&mut self, message: &[u8]) -> Result<[u8; ED25519_SIGNATURE_LEN], HsmError>;

    /// Cheap liveness probe for `/readyz`.
    fn ping(&mut self) -> Result<(), HsmError>;
}

/// A hardware monotonic counter (TPM NV index of type counter, not ORDERLY).
pub trait MonotonicCounter: Send {
    /// Current value. [`HsmError::CounterMissing`] if the index is not defined.
    fn read(&mut self) -> Result<u64, HsmError>;
    /// Increment by one and return the new value.
    fn increment(&mut self) -> Result<u64, HsmError>;
}
