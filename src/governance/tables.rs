//! Every store call governance makes, in one place: proposals (`proposals` database,
//! JSON of [`Proposal`]), the stored quorum (`meta` key `governance_quorum`), and the
//! effects of governed operations (tenant destruction, budget extras).
//!
//! Invariant: this is the only file of `governance/` that names `ReadTxn`/`WriteTxn`
//! methods, so re-pointing governance at typed tables touches this file alone.

use super::proposal::Proposal;
use super::quorum::Quorum;
use crate::auth::{system_scope, system_tenant_scope};
use crate::domain::TenantId;
use crate::store::{ChangeError, DestroyCounts, Store, StoreError, WriteTxn};

/// The stored quorum, if `set_quorum` ever ran.
fn decode_quorum(bytes: Option<Vec<u8>>) -> Result<Option<Quorum>, ChangeError> {
    bytes
        .map(|b| Quorum::from_bytes(&b).map_err(|_| ChangeError::Corrupt("governance_quorum")))
        .transpose()
}

/// The quorum in force at the latest snapshot: stored, else `config`.
pub fn quorum(store: &Store, config: Option<&Quorum>) -> Result<Option<Quorum>, StoreError> {
    let stored =
        decode_quorum(store.read()?.governance_quorum()?).map_err(|_| StoreError::Corrupt("governance_quorum"))?;
    Ok(stored.or_else(|| config.cloned()))
}

/// The quorum in force inside a write transaction: stored, else `config`.
pub fn quorum_in(txn: &WriteTxn<'_, '_>, config: Option<&Quorum>) -> Result<Option<Quorum>, ChangeError> {
    Ok(decode_quorum(txn.governance_quorum()?)?.or_else(|| config.cloned()))
}

/// Replace the stored quorum.
pub fn put_quorum(txn: &mut WriteTxn<'_, '_>, q: &Quorum) -> Result<(), ChangeError> {
    txn.set_governance_quorum(&system_scope(), q.to_bytes())
}

/// A stored proposal at the latest snapshot.
pub fn get(store: &Store, id: &str) -> Result<Option<Proposal>, StoreError> {
    store
        .read()?
        .proposal(id)?
        .map(|b| Proposal::from_bytes(&b).map_err(|_| StoreError::Corrupt("proposals")))
        .transpose()
}

/// Every stored proposal (unreadable ones are logged and skipped).
pub fn all(store: &Store) -> Result<Vec<Proposal>, StoreError> {
    let stored = store.read()?.proposals()?;
    Ok(stored
        .iter()
        .filter_map(|b| match Proposal::from_bytes(b) {
            Ok(p) => Some(p),
            Err(_) => {
                tracing::error!("unreadable governance proposal in the store");
                None
            }
        })
        .collect())
}

/// Proposal `id` inside a write transaction (`NotFound` if absent).
pub fn load(txn: &WriteTxn<'_, '_>, id: &str) -> Result<Proposal, ChangeError> {
    let bytes = txn
        .proposal(id)?
        .ok_or_else(|| ChangeError::NotFound(format!("proposal {id} not found")))?;
    Proposal::from_bytes(&bytes)
}

/// Store a new proposal (`Conflict` if its id is taken).
pub fn insert(txn: &mut WriteTxn<'_, '_>, p: &Proposal) -> Result<(), ChangeError> {
    if txn.proposal(&p.proposal_id)?.is_some() {
        return Err(ChangeError::Conflict(format!("proposal {} exists", p.proposal_id)));
    }
    save(txn, p)
}

/// Store `p` over its previous version.
pub fn save(txn: &mut WriteTxn<'_, '_>, p: &Proposal) -> Result<(), ChangeError> {
    txn.put_proposal(&p.proposal_id, &p.to_bytes()?)
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
