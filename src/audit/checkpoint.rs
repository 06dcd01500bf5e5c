//! Checkpoints: C2SP `tlog-checkpoint` signed notes with two extension lines,
//! `chain sha256:<hex head>` and `tpm <nv_index> <counter>`, signed with the HSM's
//! Ed25519 key (signature type 0x01).
//!
//! ```text
//! strongroom/<appliance id>
//! <tree size>
//! <base64 root>
//! chain sha256:<hex chain hash of event size-1>
//! tpm 0x01500016 <counter>
//!
//! — strongroom/<appliance id> <base64(key id(4) || signature(64))>
//! ```
//!
//! Invariant: [`Checkpoint::parse_verified`] only returns a checkpoint whose signature
//! by the given key verifies over exactly the note text.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use super::{hash_hex, parse_hash, ChainHash};

/// Signed-note signature type for Ed25519.
const SIG_TYPE_ED25519: u8 = 0x01;

/// The content of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// `strongroom/<appliance id>`.
    pub origin: String,
    /// Number of events covered (events `0..size`).
    pub size: u64,
    /// RFC 6962 root over their chain hashes.
    pub root: ChainHash,
    /// Chain hash of event `size - 1`.
    pub chain_head: ChainHash,
    /// TPM NV index.
    pub nv_index: u32,
    /// TPM counter value this checkpoint is sealed to.
    pub counter: u64,
}

/// Why a checkpoint was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    /// Not a well-formed note.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// No signature by the expected key.
    #[error("checkpoint is not signed by the appliance key")]
    UnknownKey,
    /// A signature by the expected key does not verify.
    #[error("checkpoint signature does not verify")]
    BadSignature,
}

/// The signed-note key id: `SHA-256(name || "\n" || 0x01 || pubkey)[:4]`.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([SIG_TYPE_ED25519]);
    h.update(public_key);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// The C2SP verifier key string `name+hex(key id)+base64(0x01 || pubkey)`.
pub fn verifier_key(name: &str, public_key: &[u8; 32]) -> String {
    let mut typed = vec![SIG_TYPE_ED25519];
    typed.extend_from_slice(public_key);
    format!("{name}+{}+{}", hex::encode(key_id(name, public_key)), B64.encode(typed))
}

/// Parse a verifier key string into (name, public key), checking its key id.
pub fn parse_verifier_key(vkey: &str) -> Option<(String, [u8; 32])> {
    // Names contain no '+', base64 may: split from the left (as Go's sumdb/note does).
    let mut parts = vkey.trim().splitn(3, '+');
    let (name, id_hex, b64) = (parts.next()?, parts.next()?, parts.next()?);
    let typed = B64.decode(b64).ok()?;
    if typed.len() != 33 || typed[0] != SIG_TYPE_ED25519 {
        return None;
    }
    let key: [u8; 32] = typed[1..].try_into().ok()?;
    (hex::encode(key_id(name, &key)) == id_hex).then(|| (name.to_owned(), key))
}

impl Checkpoint {
    /// The note text that is signed (ends with `\n`).
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\nchain {}\ntpm {:#010x} {}\n",
            self.origin,
            self.size,
            B64.encode(self.root),
            hash_hex(&self.chain_head),
            self.nv_index,
            self.counter
        )
    }

    /// The full signed note given the signature over [`Checkpoint::body`].
    pub fn signed_note(&self, public_key: &[u8; 32], signature: &[u8; 64]) -> String {
        let mut sig = key_id(&self.origin, public_key).to_vec();
        sig.extend_from_slice(signature);
        format!("{}\n\u{2014} {} {}\n", self.body(), self.origin, B64.encode(sig))
    }

    /// Parse a signed note and verify its signature by `public_key` (key name = origin).
    pub fn parse_verified(note: &str, public_key: &[u8; 32]) -> Result<Self, CheckpointError> {
        let (body, sigs) = note
            .split_once("\n\n")
            .ok_or(CheckpointError::Malformed("no blank line"))?;
        let body = format!("{body}\n");
        let cp = Self::parse_body(&body)?;
        let want_id = key_id(&cp.origin, public_key);
        let vk = VerifyingKey::from_bytes(public_key).map_err(|_| CheckpointError::UnknownKey)?;
        let mut found = false;
        for line in sigs.lines().filter(|l| !l.is_empty()) {
            let rest = line
                .strip_prefix("\u{2014} ")
                .ok_or(CheckpointError::Malformed("signature line"))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or(CheckpointError::Malformed("signature line"))?;
            let raw = B64
                .decode(b64)
                .map_err(|_| CheckpointError::Malformed("signature base64"))?;
            if name != cp.origin || raw.len() != 68 || raw[..4] != want_id {
                continue; // another key's signature: ignored (C2SP signed-note)
            }
            let sig = Signature::from_slice(&raw[4..]).map_err(|_| CheckpointError::BadSignature)?;
            vk.verify(body.as_bytes(), &sig)
                .map_err(|_| CheckpointError::BadSignature)?;
            found = true;
        }
        if found {
            Ok(cp)
        } else {
            Err(CheckpointError::UnknownKey)
        }
    }

    /// Parse a note WITHOUT checking any signature (for an auditor who has no verifier
    /// key at hand: the content can still be compared with an export, but nothing
    /// proves who wrote it).
    pub fn parse_unverified(note: &str) -> Result<Self, CheckpointError> {
        let (body, _) = note
            .split_once("\n\n")
            .ok_or(CheckpointError::Malformed("no blank line"))?;
        Self::parse_body(&format!("{body}\n"))
    }

    fn parse_body(body: &str) -> Result<Self, CheckpointError> {
        let lines: Vec<&str> = body.strip_suffix('\n').unwrap_or(body).split('\n').collect();
        let [origin, size, root, chain, tpm] = lines.as_slice() else {
            return Err(CheckpointError::Malformed("expected 5 lines"));
        };
        let size = size.parse().map_err(|_| CheckpointError::Malformed("tree size"))?;
        let root: ChainHash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or(CheckpointError::Malformed("root hash"))?;
        let chain_head = chain
            .strip_prefix("chain ")
            .and_then(parse_hash)
            .ok_or(CheckpointError::Malformed("chain line"))?;
        let mut tpm_parts = tpm
            .strip_prefix("tpm ")
            .ok_or(CheckpointError::Malformed("tpm line"))?
            .split(' ');
        let nv_index = tpm_parts
            .next()
            .and_then(|s| s.strip_prefix("0x"))
            .and_then(|s| u32::from_str_radix(s, 16).ok())
            .ok_or(CheckpointError::Malformed("tpm nv index"))?;
        let counter = tpm_parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or(CheckpointError::Malformed("tpm counter"))?;
        Ok(Self {
            origin: (*origin).to_owned(),
            size,
            root,
            chain_head,
            nv_index,
            counter,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn c2sp_example_verifier_key_parses() {
        // From the C2SP signed-note specification.
        let vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
        let (name, key) = parse_verifier_key(vkey).unwrap();
        assert_eq!(name, "example.com/foo");
        assert_eq!(verifier_key(&name, &key), vkey);
    }

    #[test]
    fn sign_parse_and_reject_tampering() {
        let sk = SigningKey::from_bytes(&[7u8; 32]);
        let pk = sk.verifying_key().to_bytes();
        let cp = Checkpoint {
            origin: "strongroom/abc".into(),
            size: 42,
            root: [1; 32],
            chain_head: [2; 32],
            nv_index: 0x0150_0016,
            counter: 7,
        };
        let note = cp.signed_note(&pk, &sk.sign(cp.body().as_bytes()).to_bytes());
        assert!(note.contains("\ntpm 0x01500016 7\n\n\u{2014} strongroom/abc "));
        assert_eq!(Checkpoint::parse_verified(&note, &pk).unwrap(), cp);
        let tampered = note.replace("\n42\n", "\n43\n");
        assert_eq!(
            Checkpoint::parse_verified(&tampered, &pk),
            Err(CheckpointError::BadSignature)
        );
        let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key().to_bytes();
        assert_eq!(
            Checkpoint::parse_verified(&note, &other),
            Err(CheckpointError::UnknownKey)
        );
    }
}
