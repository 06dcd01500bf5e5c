//! Offline verification of an exported audit log by an auditor who does not trust the
//! server: every line's chain hash, `seq` continuity from 0, `prev` links, and — given a
//! checkpoint and the appliance's verifier key — the checkpoint's signature, its Merkle
//! root and chain head against the export.
//!
//! Invariant: success means every event of the export was recomputed; a failure names
//! the first bad sequence number.

use super::checkpoint::{parse_verifier_key, Checkpoint};
use super::merkle::Frontier;
use super::verifier::{seq_and_prev, VerifyFailure};
use super::{chain_hash, hash_hex, ChainHash, EVENT_PREFIX, GENESIS_PREV};

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Events verified.
    pub events: u64,
    /// Chain hash of the last one.
    pub head: Option<ChainHash>,
    /// The checkpoint that matched, if one was given.
    pub checkpoint: Option<Checkpoint>,
    /// The key the checkpoint's signature was verified with, and where it came from.
    pub key: Option<(String, KeySource)>,
}

/// Where the checkpoint verifier key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `--public-key`, obtained out of band.
    Given,
    /// The export's genesis event (self-certified: compare it with the published key).
    Genesis,
}

fn fail(seq: Option<u64>, reason: impl Into<String>) -> VerifyFailure {
    VerifyFailure {
        seq,
        reason: reason.into(),
    }
}

/// The verifier key named by the export's genesis event (`details.signing_public_key`,
/// origin `strongroom/<details.appliance_id>`), as a C2SP verifier key string.
pub fn genesis_verifier_key(export: &str) -> Option<String> {
    let first = export.split_terminator('\n').next()?;
    let genesis: serde_json::Value = serde_json::from_str(first).ok()?;
    let details = genesis.get("details")?;
    let key: [u8; 32] = hex::decode(details.get("signing_public_key")?.as_str()?)
        .ok()?
        .try_into()
        .ok()?;
    let id = details.get("appliance_id")?.as_str()?;
    Some(super::checkpoint::verifier_key(&format!("strongroom/{id}"), &key))
}

/// Check the checkpoint `note`'s signature and origin against `vkey`, or against the key
/// the export's genesis event names when no key is given.
fn verified_checkpoint(
    export: &str,
    note: &str,
    vkey: Option<&str>,
) -> Result<(Checkpoint, (String, KeySource)), VerifyFailure> {
    let (vkey, source) = match vkey {
        Some(k) => (k.trim().to_owned(), KeySource::Given),
        None => (
            genesis_verifier_key(export).ok_or_else(|| {
                fail(
                    Some(0),
                    "no --public-key given and the genesis event names no signing key",
                )
            })?,
            KeySource::Genesis,
        ),
    };
    let (name, key) =
        parse_verifier_key(&vkey).ok_or_else(|| fail(None, "the public key is not a valid verifier key"))?;
    let cp = Checkpoint::parse_verified(note, &key).map_err(|e| fail(None, e.to_string()))?;
    if cp.origin != name {
        return Err(fail(
            None,
            format!("checkpoint origin {} is not the key's name {name}", cp.origin),
        ));
    }
    Ok((cp, (vkey, source)))
}

/// Verify `export` (NDJSON, one canonical event JSON a line, starting at seq 0) and,
/// when given, a checkpoint note and its signature: by the verifier key `vkey` when
/// given (obtained out of band: the only proof against a server that rewrote
/// everything), else by the key the export's own genesis event names (proves the
/// checkpoint and the export agree; compare [`Report::key`] with the published key).
pub fn verify_export(export: &str, checkpoint: Option<&str>, vkey: Option<&str>) -> Result<Report, VerifyFailure> {
    let (cp, key) = match checkpoint {
        None => (None, None),
        Some(note) => {
            let (cp, key) = verified_checkpoint(export, note, vkey)?;
            (Some(cp), Some(key))
        }
    };
    let mut frontier = Frontier::new();
    let mut last: Option<ChainHash> = None;
    let mut next = 0u64;
    let mut matched = None;
    for line in export.split_terminator('\n') {
        let mut bytes = EVENT_PREFIX.as_bytes().to_vec();
        bytes.extend_from_slice(line.as_bytes());
        let (seq, prev) = seq_and_prev(&bytes).ok_or_else(|| fail(Some(next), "not a canonical audit event"))?;
        if seq != next {
            return Err(fail(
                Some(next),
                format!("expected seq {next}, found {seq} (missing, reordered or not starting at 0)"),
            ));
        }
        if crate::audit::AuditEvent::from_bytes(&bytes).is_none() {
            return Err(fail(Some(next), "event JSON is not in canonical form"));
        }
        let want_prev = last.map_or_else(|| GENESIS_PREV.to_owned(), |h| hash_hex(&h));
        if prev != want_prev.as_bytes() {
            return Err(fail(Some(next), "prev does not match the previous event's chain hash"));
        }
        let hash = chain_hash(&bytes);
        frontier.push(hash);
        last = Some(hash);
        next += 1;
        if let Some(cp) = &cp {
            if cp.size == next {
                if cp.root != frontier.root() || cp.chain_head != hash {
                    return Err(fail(
                        Some(next - 1),
                        "events do not match the signed checkpoint (root or chain head)",
                    ));
                }
                matched = Some(cp.clone());
            }
        }
    }
    if let Some(cp) = &cp {
        if matched.is_none() {
            return Err(fail(
                Some(next),
                format!(
                    "the checkpoint covers {} events but the export has only {next}",
                    cp.size
                ),
            ));
        }
    }
    Ok(Report {
        events: next,
        head: last,
        checkpoint: matched,
        key,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::audit::{Action, AuditEvent, Outcome};
    use ed25519_dalek::{Signer, SigningKey};

    fn export(n: u64) -> (String, Vec<ChainHash>) {
        let mut out = String::new();
        let mut hashes: Vec<ChainHash> = Vec::new();
        for seq in 0..n {
            let e = AuditEvent {
                seq,
                prev: hashes.last().map_or_else(|| GENESIS_PREV.to_owned(), hash_hex),
                ts: "2026-03-08T14:22:01Z".into(),
                event_id: format!("evt-{seq}"),
                action: Action::DataWrite,
                actor: "user:a".into(),
                tenant_id: Some("acme".into()),
                resource: "entity:e".into(),
                outcome: Outcome::Allowed,
                request_id: "r".into(),
                details: Default::default(),
            };
            let bytes = e.to_bytes();
            hashes.push(chain_hash(&bytes));
            out.push_str(std::str::from_utf8(&bytes[EVENT_PREFIX.len()..]).unwrap());
            out.push('\n');
        }
        (out, hashes)
    }

    #[test]
    fn accepts_good_and_names_the_first_bad_seq() {
        let (good, hashes) = export(10);
        let sk = SigningKey::from_bytes(&[9u8; 32]);
        let pk = sk.verifying_key().to_bytes();
        let origin = "strongroom/test".to_owned();
        let cp = Checkpoint {
            origin: origin.clone(),
            size: 8,
            root: crate::audit::merkle::root_of(&hashes[..8]),
            chain_head: hashes[7],
            nv_index: 1,
            counter: 3,
        };
        let note = cp.signed_note(&pk, &sk.sign(cp.body().as_bytes()).to_bytes());
        let vkey = crate::audit::checkpoint::verifier_key(&origin, &pk);
        assert_eq!(verify_export(&good, Some(&note), Some(&vkey)).unwrap().events, 10);

        let edited = good.replace("\"evt-4\"", "\"evt-X\"");
        assert_eq!(
            verify_export(&edited, None, None).unwrap_err().seq,
            Some(5),
            "the next link breaks"
        );
        let lines: Vec<&str> = good.lines().collect();
        let dropped = format!("{}\n{}\n", lines[..3].join("\n"), lines[4..].join("\n"));
        assert_eq!(verify_export(&dropped, None, None).unwrap_err().seq, Some(3));
        let mut swapped = lines.clone();
        swapped.swap(5, 6);
        assert_eq!(
            verify_export(&(swapped.join("\n") + "\n"), None, None).unwrap_err().seq,
            Some(5)
        );
        let truncated = lines[..6].join("\n") + "\n";
        assert!(
            verify_export(&truncated, None, None).is_ok(),
            "a prefix alone is consistent"
        );
        assert_eq!(
            verify_export(&truncated, Some(&note), Some(&vkey)).unwrap_err().seq,
            Some(6),
            "but not with the checkpoint"
        );
        let other_key = crate::audit::checkpoint::verifier_key(
            &origin,
            &SigningKey::from_bytes(&[1u8; 32]).verifying_key().to_bytes(),
        );
        assert!(verify_export(&good, Some(&note), Some(&other_key)).is_err());
    }
}
