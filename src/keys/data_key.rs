//! The data key and the two shapes of record data: [`Plaintext`] and [`Sealed`].
//!
//! Invariants: a [`DataKey`] never leaves this type except to the HSM for wrapping;
//! sealing either yields authenticated ciphertext or an error ([`SealError`]) — never
//! an empty or partial [`Sealed`]; nonces and keys come from the [`Random`] handed in.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::domain::{EntityId, RecordId, TenantId};
use crate::random::Random;

/// Random 128-bit identifier of one DEK generation of one entity. It is part of every
/// record's AAD, so a record written under an erased entity's old key cannot be
/// decrypted under the fresh key of a re-created entity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DekId(pub [u8; 16]);

impl DekId {
    fn random(random: &Random) -> Self {
        Self(random.bytes())
    }
    /// Hex form, as used in AADs.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// An unwrapped AES-256 data key. No `Debug`, `Clone` or `Serialize`; zeroised on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct DataKey {
    #[zeroize(skip)]
    id: DekId,
    bytes: [u8; 32],
}

/// Why opening a sealed value failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Sealed under another DEK generation.
    #[error("sealed under another data key")]
    WrongKey,
    /// Authentication failed: wrong AAD (moved record) or tampered bytes.
    #[error("record authentication failed")]
    Tampered,
}

/// Why sealing failed (AES-GCM refuses inputs over 64 GiB, far above the body limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("record encryption failed")]
pub struct SealError;

impl DataKey {
    /// A fresh key (and generation id) from `random`.
    pub fn generate(random: &Random) -> Self {
        Self {
            id: DekId::random(random),
            bytes: random.bytes(),
        }
    }

    /// Rebuild from unwrapped key material; `None` if it is not 32 bytes.
    pub(crate) fn from_material(id: DekId, material: &[u8]) -> Option<Self> {
        let bytes: [u8; 32] = material.try_into().ok()?;
        Some(Self { id, bytes })
    }

    /// This key's generation id.
    pub fn id(&self) -> DekId {
        self.id
    }

    /// The raw key, only for handing to the HSM for wrapping.
    pub(crate) fn material(&self) -> &[u8] {
        &self.bytes
    }

    /// Encrypt with AES-256-GCM, a fresh random 96-bit nonce and `aad`.
    pub fn seal(&self, random: &Random, plaintext: &Plaintext, aad: &[u8]) -> Result<Sealed, SealError> {
        let cipher = Aes256Gcm::new((&self.bytes).into());
        let nonce: [u8; 12] = random.bytes();
        let ciphertext = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: &plaintext.0, aad })
            .map_err(|_| SealError)?;
        Ok(Sealed {
            dek_id: self.id,
            nonce,
            ciphertext,
        })
    }

    /// Decrypt and authenticate.
    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<Plaintext, OpenError> {
        if sealed.dek_id != self.id {
            return Err(OpenError::WrongKey);
        }
        let cipher = Aes256Gcm::new((&self.bytes).into());
        cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad,
                },
            )
            .map(|v| Plaintext(Zeroizing::new(v)))
            .map_err(|_| OpenError::Tampered)
    }
}

/// Record contents in the clear. Wiped on drop; the store has no method that takes it.
pub struct Plaintext(Zeroizing<Vec<u8>>);

impl Plaintext {
    /// Wrap bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }
    /// Borrow the bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A value sealed by a [`DataKey`]: the only form of record data the store accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    dek_id: DekId,
    nonce: [u8; 12],
    ciphertext: Vec<u8>,
}

const SEALED_V1: u8 = 1;

impl Sealed {
    /// Stored form: `1 || dek_id(16) || nonce(12) || ciphertext+tag`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(29 + self.ciphertext.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&self.dek_id.0);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Parse the stored form.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() < 29 + 16 || b[0] != SEALED_V1 {
            return None;
        }
        Some(Self {
            dek_id: DekId(b[1..17].try_into().ok()?),
            nonce: b[17..29].try_into().ok()?,
            ciphertext: b[29..].to_vec(),
        })
    }

    /// The DEK generation this was sealed under.
    pub fn dek_id(&self) -> DekId {
        self.dek_id
    }
}

/// A DEK as stored: encrypted by the tenant KEK inside the HSM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedDek {
    /// DEK generation.
    pub dek_id: DekId,
    /// Version of the tenant KEK that wrapped it.
    pub kek_version: u32,
    /// `nonce || ciphertext || tag` from the HSM.
    pub wrapped: Vec<u8>,
}

const WRAPPED_V1: u8 = 1;

impl WrappedDek {
    /// Stored form: `1 || dek_id(16) || kek_version(4, BE) || wrapped`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![WRAPPED_V1];
        out.extend_from_slice(&self.dek_id.0);
        out.extend_from_slice(&self.kek_version.to_be_bytes());
        out.extend_from_slice(&self.wrapped);
        out
    }
    /// Parse the stored form.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() < 21 || b[0] != WRAPPED_V1 {
            return None;
        }
        Some(Self {
            dek_id: DekId(b[1..17].try_into().ok()?),
            kek_version: u32::from_be_bytes(b[17..21].try_into().ok()?),
            wrapped: b[21..].to_vec(),
        })
    }
}

/// AAD binding a wrapped DEK to its tenant, entity and KEK version (SPEC §2).
pub fn dek_aad(tenant: &TenantId, entity: &EntityId, kek_version: u32) -> Vec<u8> {
    format!("strongroom/dek/v1|{tenant}|{entity}|{kek_version}").into_bytes()
}

/// AAD binding a record to its tenant, entity, record id, timestamp (the clear-text
/// sort key, so a record cannot be moved in time) and DEK generation.
pub fn record_aad(tenant: &TenantId, entity: &EntityId, record: &RecordId, ts_nanos: u64, dek: DekId) -> Vec<u8> {
    format!(
        "strongroom/record/v2|{tenant}|{entity}|{record}|{ts_nanos}|{}",
        dek.hex()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn ids() -> (TenantId, EntityId, RecordId) {
        (
            TenantId::parse("t").unwrap(),
            EntityId::parse("e").unwrap(),
            RecordId::parse("r1").unwrap(),
        )
    }

    #[test]
    fn a_record_moved_to_another_id_or_key_fails_to_open() {
        let (t, e, r) = ids();
        let key = DataKey::generate(&Random::os());
        let aad = record_aad(&t, &e, &r, 7, key.id());
        let sealed = key
            .seal(&Random::os(), &Plaintext::new(b"secret".to_vec()), &aad)
            .unwrap();
        let roundtrip = Sealed::from_bytes(&sealed.to_bytes()).unwrap();
        assert_eq!(key.open(&roundtrip, &aad).unwrap().as_bytes(), b"secret");

        let other_record = record_aad(&t, &e, &RecordId::parse("r2").unwrap(), 7, key.id());
        assert!(matches!(key.open(&sealed, &other_record), Err(OpenError::Tampered)));
        let other_entity = record_aad(&t, &EntityId::parse("e2").unwrap(), &r, 7, key.id());
        assert!(matches!(key.open(&sealed, &other_entity), Err(OpenError::Tampered)));
        let other_time = record_aad(&t, &e, &r, 8, key.id());
        assert!(
            matches!(key.open(&sealed, &other_time), Err(OpenError::Tampered)),
            "moved in time"
        );
        assert!(matches!(
            DataKey::generate(&Random::os()).open(&sealed, &aad),
            Err(OpenError::WrongKey)
        ));

        let mut bytes = sealed.to_bytes();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            key.open(&Sealed::from_bytes(&bytes).unwrap(), &aad),
            Err(OpenError::Tampered)
        ));
    }

    #[test]
    fn nonces_are_fresh() {
        let key = DataKey::generate(&Random::os());
        let p = Plaintext::new(b"same".to_vec());
        assert_ne!(
            key.seal(&Random::os(), &p, b"a").unwrap().to_bytes(),
            key.seal(&Random::os(), &p, b"a").unwrap().to_bytes()
        );
    }
}
