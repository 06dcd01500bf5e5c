//! Governance's tables and every store call governance makes, in one place: proposals
//! (`proposals` database, JSON of [`Proposal`]) and the stored quorum (`meta` key
//! `governance_quorum`) as typed tables, and the effects of governed operations (tenant
//! destruction; budget extras through the privacy domain's table).
//!
//! Invariant: this is the only file of `governance/` that touches the store; a value that
//! does not decode is `Corrupt("proposals")` / `Corrupt("governance_quorum")`.

use super::proposal::Proposal;
use super::quorum::Quorum;
use crate::auth::{system_scope, system_tenant_scope};
use crate::domain::TenantId;
use crate::store::layout::META_GOVERNANCE_QUORUM;
use crate::store::table::{KeyCodec, Table, ValueCodec};
use crate::store::{ChangeError, DestroyCounts, Store, StoreError, WriteTxn};

/// Key of the `proposals` table: the proposal id.
pub struct ProposalId;

impl KeyCodec for ProposalId {
    type Key<'a> = &'a str;
    fn encode(id: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(id.as_bytes());
    }
}

/// The single `meta` key of the stored quorum.
pub struct QuorumKey;

impl KeyCodec for QuorumKey {
    type Key<'a> = ();
    fn encode((): (), out: &mut Vec<u8>) {
        out.extend_from_slice(META_GOVERNANCE_QUORUM);
    }
}

/// A proposal as stored (JSON of [`Proposal`]).
pub struct ProposalCodec;

impl ValueCodec for ProposalCodec {
    type Value = Proposal;
    fn encode(p: &Proposal) -> Option<Vec<u8>> {
        p.to_bytes().ok()
    }
    fn decode(bytes: &[u8]) -> Option<Proposal> {
        Proposal::from_bytes(bytes).ok()
    }
}

/// The stored quorum (canonical JSON of its spec, validated on load).
pub struct QuorumCodec;

impl ValueCodec for QuorumCodec {
    type Value = Quorum;
    fn encode(q: &Quorum) -> Option<Vec<u8>> {
        Some(q.to_bytes().to_vec())
    }
    fn decode(bytes: &[u8]) -> Option<Quorum> {
        Quorum::from_bytes(bytes).ok()
    }
}

/// Governance proposals by id.
const PROPOSALS: Table<ProposalId, ProposalCodec> = Table::new("proposals", |d| d.proposals);
/// The quorum set by `set_quorum` (`meta` key `governance_quorum`).
const QUORUM: Table<QuorumKey, QuorumCodec> = Table::new("governance_quorum", |d| d.meta);

/// The quorum in force at the latest snapshot: stored, else `config`.
pub fn quorum(store: &Store, config: Option<&Quorum>) -> Result<Option<Quorum>, StoreError> {
    Ok(store.read()?.get(&QUORUM, ())?.or_else(|| config.cloned()))
}

/// The quorum in force inside a write transaction: stored, else `config`.
pub fn quorum_in(txn: &WriteTxn<'_, '_>, config: Option<&Quorum>) -> Result<Option<Quorum>, ChangeError> {
    Ok(txn.get(&QUORUM, ())?.or_else(|| config.cloned()))
}

/// Replace the stored quorum.
pub fn put_quorum(txn: &mut WriteTxn<'_, '_>, q: &Quorum) -> Result<(), ChangeError> {
    txn.put(&QUORUM, (), q)
}

/// A stored proposal at the latest snapshot.
pub fn get(store: &Store, id: &str) -> Result<Option<Proposal>, StoreError> {
    store.read()?.get(&PROPOSALS, id)
}

/// Every stored proposal (unreadable ones are logged and skipped).
pub fn all(store: &Store) -> Result<Vec<Proposal>, StoreError> {
    let stored = store.read()?.values(&PROPOSALS)?;
    Ok(stored
        .into_iter()
        .filter_map(|p| {
            if p.is_none() {
                tracing::error!("unreadable governance proposal in the store");
            }
            p
        })
        .collect())
}

/// Proposal `id` inside a write transaction (`NotFound` if absent).
pub fn load(txn: &WriteTxn<'_, '_>, id: &str) -> Result<Proposal, ChangeError> {
    txn.get(&PROPOSALS, id)?
        .ok_or_else(|| ChangeError::NotFound(format!("proposal {id} not found")))
}

/// Store a new proposal (`Conflict` if its id is taken).
pub fn insert(txn: &mut WriteTxn<'_, '_>, p: &Proposal) -> Result<(), ChangeError> {
    if txn.get(&PROPOSALS, &p.proposal_id)?.is_some() {
        return Err(ChangeError::Conflict(format!("proposal {} exists", p.proposal_id)));
    }
    save(txn, p)
}

/// Store `p` over its previous version.
pub fn save(txn: &mut WriteTxn<'_, '_>, p: &Proposal) -> Result<(), ChangeError> {
    txn.put(&PROPOSALS, &p.proposal_id, p)
}

/// Whether `tenant` exists at the latest snapshot.
pub fn tenant_exists(store: &Store, tenant: &TenantId) -> Result<bool, StoreError> {
    Ok(store.read()?.tenant(tenant)?.is_some())
}

/// Whether `tenant` exists inside a write transaction.
pub fn tenant_exists_in(txn: &WriteTxn<'_, '_>, tenant: &TenantId) -> Result<bool, ChangeError> {
    Ok(txn.tenant_record(tenant)?.is_some())
}

/// The governed extra budget of `tenant` (micro-ε).
pub fn budget_extra(txn: &WriteTxn<'_, '_>, tenant: &TenantId) -> Result<u64, ChangeError> {
    Ok(txn
        .get(&crate::privacy::tables::EXTRA, &system_tenant_scope(tenant))?
        .unwrap_or(0))
}

/// Set the governed extra budget of `tenant` (micro-ε).
pub fn set_budget_extra(txn: &mut WriteTxn<'_, '_>, tenant: &TenantId, micros: u64) -> Result<(), ChangeError> {
    txn.put(&crate::privacy::tables::EXTRA, &system_tenant_scope(tenant), &micros)
}

/// Revoke the tenant's tokens and delete its data (`NotFound` if it does not exist).
pub fn destroy_tenant(txn: &mut WriteTxn<'_, '_>, tenant: &TenantId, at: i64) -> Result<DestroyCounts, ChangeError> {
    txn.destroy_tenant(&system_scope(), tenant, at)
}
