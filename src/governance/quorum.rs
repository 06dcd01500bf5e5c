//! The approver quorum: `name:ed25519:<base64>` entries, the threshold, and the stored
//! form (`meta` key `governance_quorum`, also the `set_quorum` params).
//!
//! Invariant: a [`Quorum`] value is valid (1 to 64 approvers, distinct names and keys,
//! `1 ≤ threshold ≤ approvers`) and carries its canonical bytes, computed once at
//! construction, so its stored form and fingerprint cannot fail or drift.

use base64::Engine;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::digest::json_string;
use super::error::QuorumError;

/// Most approvers a quorum may list.
pub const MAX_APPROVERS: usize = 64;

/// One approver: a name and a raw Ed25519 public key.
#[derive(Debug, Clone)]
pub struct Approver {
    /// Name used in approvals (`alice`).
    pub name: String,
    /// Public key.
    pub key: VerifyingKey,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parse `name:ed25519:<standard base64 of a raw 32-byte key>`.
pub fn parse_approver(entry: &str) -> Result<Approver, QuorumError> {
    let mut parts = entry.splitn(3, ':');
    let (Some(name), Some(alg), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(QuorumError::Malformed {
            entry: entry.to_owned(),
        });
    };
    let name = name.to_owned();
    if !valid_name(&name) {
        return Err(QuorumError::BadName { name });
    }
    if alg != "ed25519" {
        let alg = alg.to_owned();
        return Err(QuorumError::KeyType { name, alg });
    }
    let raw = match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(raw) => raw,
        Err(source) => return Err(QuorumError::NotBase64 { name, source }),
    };
    let raw: [u8; 32] = match raw.try_into() {
        Ok(raw) => raw,
        Err(v) => return Err(QuorumError::KeyLength { name, len: v.len() }),
    };
    let Ok(key) = VerifyingKey::from_bytes(&raw) else {
        return Err(QuorumError::InvalidKey { name });
    };
    if key.is_weak() {
        return Err(QuorumError::WeakKey { name });
    }
    Ok(Approver { name, key })
}

/// The approvers and how many of them must sign.
#[derive(Debug, Clone)]
pub struct Quorum {
    threshold: u32,
    approvers: Vec<Approver>,
    /// The approver entries as given (config string form).
    entries: Vec<String>,
    /// Canonical bytes of the stored form.
    bytes: Vec<u8>,
}

/// The stored form of a quorum (`meta` key `governance_quorum`) and `set_quorum` params.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QuorumSpec {
    /// Approvals needed.
    pub threshold: u32,
    /// `name:ed25519:<base64>` entries.
    pub approvers: Vec<String>,
}

impl QuorumSpec {
    /// Compact JSON in field order, exactly as `serde_json::to_vec` writes it.
    fn canonical(&self) -> Vec<u8> {
        let entries: Vec<String> = self.approvers.iter().map(|e| json_string(e)).collect();
        format!(
            "{{\"threshold\":{},\"approvers\":[{}]}}",
            self.threshold,
            entries.join(",")
        )
        .into_bytes()
    }
}

impl TryFrom<QuorumSpec> for Quorum {
    type Error = QuorumError;
    fn try_from(spec: QuorumSpec) -> Result<Self, QuorumError> {
        Self::new(spec.threshold, &spec.approvers)
    }
}

impl From<Quorum> for QuorumSpec {
    fn from(q: Quorum) -> Self {
        q.spec()
    }
}

fn check_distinct(approvers: &[Approver]) -> Result<(), QuorumError> {
    for (i, a) in approvers.iter().enumerate() {
        if approvers[..i].iter().any(|b| b.name == a.name) {
            return Err(QuorumError::DuplicateName(a.name.clone()));
        }
        if approvers[..i].iter().any(|b| b.key == a.key) {
            return Err(QuorumError::DuplicateKey(a.name.clone()));
        }
    }
    Ok(())
}

impl Quorum {
    /// Validate a quorum: 1 to 64 approvers with distinct names and keys, and
    /// `1 ≤ threshold ≤ approvers`.
    pub fn new(threshold: u32, entries: &[String]) -> Result<Self, QuorumError> {
        if entries.is_empty() {
            return Err(QuorumError::NoApprovers);
        }
        if entries.len() > MAX_APPROVERS {
            return Err(QuorumError::TooMany);
        }
        let approvers = entries
            .iter()
            .map(|e| parse_approver(e))
            .collect::<Result<Vec<_>, _>>()?;
        check_distinct(&approvers)?;
        if threshold == 0 || threshold as usize > approvers.len() {
            return Err(QuorumError::Threshold {
                threshold,
                approvers: approvers.len(),
            });
        }
        let spec = QuorumSpec {
            threshold,
            approvers: entries.to_vec(),
        };
        Ok(Self {
            threshold,
            approvers,
            bytes: spec.canonical(),
            entries: spec.approvers,
        })
    }

    /// Approvals needed.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// The approvers.
    pub fn approvers(&self) -> &[Approver] {
        &self.approvers
    }

    /// The stored form.
    pub fn spec(&self) -> QuorumSpec {
        QuorumSpec {
            threshold: self.threshold,
            approvers: self.entries.clone(),
        }
    }

    /// A quorum from its stored form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, QuorumError> {
        let spec: QuorumSpec = serde_json::from_slice(bytes).map_err(QuorumError::Stored)?;
        Self::try_from(spec)
    }

    /// Canonical bytes of the stored form (compact JSON of [`QuorumSpec`]).
    pub fn to_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// `sha256:<hex>` of the canonical form: what a proposal is bound to.
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(&self.bytes)))
    }

    /// The approver called `name`.
    pub fn approver(&self, name: &str) -> Option<&Approver> {
        self.approvers.iter().find(|a| a.name == name)
    }

    /// `2 of 3 approvers (alice, bob, carol)`.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.approvers.iter().map(|a| a.name.as_str()).collect();
        format!(
            "{} of {} approvers ({})",
            self.threshold,
            self.approvers.len(),
            names.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use ed25519_dalek::SigningKey;

    pub(crate) fn entry(name: &str, seed: u8) -> (String, SigningKey) {
        let sk = SigningKey::from_bytes(&[seed; 32]);
        let b64 = base64::engine::general_purpose::STANDARD.encode(sk.verifying_key().as_bytes());
        (format!("{name}:ed25519:{b64}"), sk)
    }

    #[test]
    fn approver_entries_are_parsed_strictly() {
        let (e, sk) = entry("alice", 1);
        let a = parse_approver(&e).unwrap();
        assert_eq!(a.name, "alice");
        assert_eq!(a.key, sk.verifying_key());
        for bad in [
            "alice",
            "alice:ed25519",
            "alice:rsa:AAAA",
            ":ed25519:AAAA",
            "al ice:ed25519:AAAA",
            "alice:ed25519:not base64!",
            "alice:ed25519:AAAA",
        ] {
            assert!(parse_approver(bad).is_err(), "{bad}");
        }
        // The identity point is a weak key.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let w = base64::engine::general_purpose::STANDARD.encode(weak);
        assert!(parse_approver(&format!("x:ed25519:{w}")).is_err());
    }

    #[test]
    fn quorum_rules() {
        let (a, _) = entry("alice", 1);
        let (b, _) = entry("bob", 2);
        let (a2, _) = entry("alice", 3);
        let (b_same_key, _) = entry("carol", 2);
        assert!(Quorum::new(2, &[a.clone(), b.clone()]).is_ok());
        assert!(Quorum::new(0, &[a.clone(), b.clone()]).is_err());
        assert!(Quorum::new(3, &[a.clone(), b.clone()]).is_err());
        assert!(Quorum::new(1, &[]).is_err());
        assert!(Quorum::new(1, &[a.clone(), a2]).is_err());
        assert!(Quorum::new(1, &[b.clone(), b_same_key]).is_err());
        let q = Quorum::new(1, &[a.clone(), b.clone()]).unwrap();
        let back = Quorum::from_bytes(q.to_bytes()).unwrap();
        assert_eq!(back.fingerprint(), q.fingerprint());
        assert_ne!(Quorum::new(2, &[a, b]).unwrap().fingerprint(), q.fingerprint());
    }

    #[test]
    fn canonical_bytes_are_serde_json_bytes() {
        let (a, _) = entry("alice", 1);
        let (b, _) = entry("b.o_b-2", 2);
        let q = Quorum::new(2, &[a, b]).unwrap();
        assert_eq!(q.to_bytes(), serde_json::to_vec(&q.spec()).unwrap().as_slice());
    }

    #[test]
    fn messages_are_unchanged() {
        let e = Quorum::new(3, &[entry("alice", 1).0]).unwrap_err().to_string();
        assert_eq!(e, "threshold must be from 1 to the number of approvers (1), got 3");
        let e = parse_approver("alice:ed25519:AAAA").unwrap_err().to_string();
        assert_eq!(e, "approver alice: the key is 3 bytes, expected 32");
    }
}
