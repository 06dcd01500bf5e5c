//! The proposal digest approvers sign, and the canonical JSON text it is built from.
//!
//! Invariant: the encoding is length-prefixed and domain-separated, so no two distinct
//! (id, operation, params, expiry, nonce) tuples share a digest; the bytes are those of
//! `strongroom/proposal/v1` as stored in existing proposals (never change them).

use sha2::{Digest, Sha256};

use super::operation::Operation;

/// Domain separation of the digest encoding.
pub const DIGEST_DOMAIN: &[u8] = b"strongroom/proposal/v1\n";

/// `s` as a JSON string literal, escaped exactly as `serde_json` escapes it.
pub fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// `sha256:<hex>` of `DIGEST_DOMAIN ‖ lp(id) ‖ lp(operation) ‖ lp(params JSON) ‖
/// lp(expires_at) ‖ lp(nonce)`, where `lp(x)` = 4-byte big-endian length ‖ x.
pub fn digest(proposal_id: &str, op: &Operation, expires_at: &str, nonce: &[u8; 32]) -> String {
    let params = op.params_json();
    let mut h = Sha256::new();
    h.update(DIGEST_DOMAIN);
    for part in [
        proposal_id.as_bytes(),
        op.name().as_bytes(),
        params.as_bytes(),
        expires_at.as_bytes(),
        nonce.as_slice(),
    ] {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    use serde_json::{json, Value};

    #[test]
    fn digests_bind_every_field_and_signatures_verify() {
        let op = Operation::parse("rotate_signing_key", Value::Null).unwrap();
        let n1 = [1u8; 32];
        let n2 = [2u8; 32];
        let d = digest("prop-1", &op, "2026-01-01T00:00:00Z", &n1);
        assert!(d.starts_with("sha256:") && d.len() == 7 + 64);
        assert_ne!(d, digest("prop-1", &op, "2026-01-01T00:00:00Z", &n2));
        assert_ne!(d, digest("prop-2", &op, "2026-01-01T00:00:00Z", &n1));
        assert_ne!(d, digest("prop-1", &op, "2026-01-01T00:00:01Z", &n1));
        let other = Operation::parse("acknowledge_alarm", json!({"reason": "x"})).unwrap();
        assert_ne!(d, digest("prop-1", &other, "2026-01-01T00:00:00Z", &n1));
        let sk = SigningKey::from_bytes(&[1u8; 32]);
        let sig = sk.sign(d.as_bytes());
        assert!(sk.verifying_key().verify_strict(d.as_bytes(), &sig).is_ok());
    }

    #[test]
    fn json_strings_match_serde() {
        for s in ["", "a\"b\\c", "tab\there", "é ☃ \u{7f}", "\u{1}\u{1f}"] {
            assert_eq!(json_string(s), serde_json::to_string(s).unwrap());
        }
    }
}
