//! Key encodings. Every tenant-data key starts with the entity prefix
//! `len(tenant) ‖ tenant ‖ len(entity) ‖ entity` (ids are ≤ 128 bytes of a fixed
//! charset, so one length byte is unambiguous), which keeps one entity's data in one
//! contiguous range of each database and makes a range bound to one tenant.
//!
//! Invariant: the `len(id) ‖ id` segment is built in one place ([`push_id`]); the tenant
//! prefix, the entity prefix and the audit-by-tenant prefix are all made from it.

/// Append the `len(id) ‖ id` segment (ids are ≤ 128 bytes, so one length byte).
fn push_id(k: &mut Vec<u8>, id: &[u8]) {
    k.push(id.len() as u8);
    k.extend_from_slice(id);
}

use crate::domain::{EntityId, RecordId, TenantId};

/// `len(tenant) tenant len(entity) entity`.
pub fn entity_prefix(tenant: &TenantId, entity: &EntityId) -> Vec<u8> {
    let (t, e) = (tenant.as_str().as_bytes(), entity.as_str().as_bytes());
    let mut k = Vec::with_capacity(2 + t.len() + e.len() + 8 + 128);
    push_id(&mut k, t);
    push_id(&mut k, e);
    k
}

/// Key in `records`: entity prefix ‖ timestamp nanos (BE) ‖ record id.
pub fn record_key(prefix: &[u8], ts_nanos: u64, record: &RecordId) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&ts_nanos.to_be_bytes());
    k.extend_from_slice(record.as_str().as_bytes());
    k
}

/// Split a `records` key's suffix (after the prefix) into timestamp and record id.
pub fn split_record_suffix(suffix: &[u8]) -> Option<(u64, RecordId)> {
    if suffix.len() < 9 {
        return None;
    }
    let ts = u64::from_be_bytes(suffix[..8].try_into().ok()?);
    let id = RecordId::parse(std::str::from_utf8(&suffix[8..]).ok()?).ok()?;
    Some((ts, id))
}

/// Key in `record_index`: entity prefix ‖ record id.
pub fn record_index_key(prefix: &[u8], record: &RecordId) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(record.as_str().as_bytes());
    k
}

/// Key in `audit`.
pub fn audit_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// `meta` key of the chain head (`next_seq(8) ‖ last hash(32)`).
pub const META_AUDIT_HEAD: &[u8] = b"audit_head";
/// `meta` key of the appliance id.
pub const META_APPLIANCE_ID: &[u8] = b"appliance_id";

/// `meta` key of the governance quorum set by a `set_quorum` proposal (JSON).
pub const META_GOVERNANCE_QUORUM: &[u8] = b"governance_quorum";

/// `meta` key marking a tenant id destroyed by governance (ids are not reused: the audit
/// log files events by tenant id, and a new tenant must not inherit another's history).
pub fn destroyed_tenant_key(tenant: &TenantId) -> Vec<u8> {
    let mut k = b"destroyed_tenant/".to_vec();
    k.extend_from_slice(tenant.as_str().as_bytes());
    k
}

/// `len(tenant) tenant`: the prefix of every key of one tenant's data (records, index,
/// DEKs, tombstones, privacy ledger) and the key of its per-tenant values.
pub fn tenant_prefix(tenant: &TenantId) -> Vec<u8> {
    audit_tenant_prefix(tenant.as_str())
}

/// Key in `audit_by_time`.
pub fn audit_time_key(unix_secs: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&unix_secs.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Prefix of `audit_by_action` keys of one action.
pub fn audit_action_prefix(action: &str) -> Vec<u8> {
    let mut k = action.as_bytes().to_vec();
    k.push(0);
    k
}

/// Prefix of `audit_by_tenant` keys of one tenant.
/// (the same `len(tenant) tenant` as [`tenant_prefix`]; audit events hold the id as text).
pub fn audit_tenant_prefix(tenant: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + tenant.len() + 8);
    push_id(&mut k, tenant.as_bytes());
    k
}

/// Key in `checkpoints`.
pub fn checkpoint_key(counter: u64) -> [u8; 8] {
    counter.to_be_bytes()
}
