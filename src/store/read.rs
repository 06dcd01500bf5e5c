//! Read transactions: consistent snapshots, typed lookups. Functions that touch tenant
//! data take `&TenantScope`, so they can only read the caller's own tenant.

use lmdb::{Cursor, Database, RoTransaction, Transaction};
use serde::{Deserialize, Serialize};

use super::layout::{self, META_AUDIT_HEAD};
use super::{Dbs, StoreError};
use crate::audit::ChainHash;
use crate::auth::tokens::TokenHash;
use crate::auth::{TenantScope, TokenRecord};
use crate::domain::{EntityId, RecordId, TenantId};
use crate::keys::{Sealed, WrappedDek};

/// A tenant as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TenantRecord {
    /// Id.
    pub tenant_id: TenantId,
    /// Current KEK version.
    pub key_version: u32,
    /// RFC 3339.
    pub created_at: String,
}

/// A record as stored: sealed, with its clear-text position.
pub struct StoredRecord {
    /// Record id.
    pub id: RecordId,
    /// Timestamp, Unix nanoseconds.
    pub ts_nanos: u64,
    /// Sealed data.
    pub sealed: Sealed,
}

/// One page of a record listing.
pub struct RecordPage {
    /// Records in timestamp order.
    pub records: Vec<StoredRecord>,
    /// Position to continue after, when more records may follow.
    pub next: Option<(u64, RecordId)>,
}

/// A read snapshot.
pub struct ReadTxn<'env> {
    txn: RoTransaction<'env>,
    dbs: &'env Dbs,
}

fn get<'t>(txn: &'t RoTransaction<'_>, db: Database, key: &[u8]) -> Result<Option<&'t [u8]>, StoreError> {
    match txn.get(db, &key) {
        Ok(v) => Ok(Some(v)),
        Err(lmdb::Error::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn audit_head(txn: &impl Transaction, meta: Database) -> Result<(u64, ChainHash), StoreError> {
    match txn.get(meta, &META_AUDIT_HEAD) {
        Ok(v) if v.len() == 40 => {
            let seq = u64::from_be_bytes(v[..8].try_into().map_err(|_| StoreError::Corrupt("audit head"))?);
            let hash: ChainHash = v[8..].try_into().map_err(|_| StoreError::Corrupt("audit head"))?;
            Ok((seq, hash))
        }
        Ok(_) => Err(StoreError::Corrupt("audit head")),
        Err(lmdb::Error::NotFound) => Ok((0, [0u8; 32])),
        Err(e) => Err(e.into()),
    }
}

impl<'env> ReadTxn<'env> {
    pub(super) fn new(txn: RoTransaction<'env>, dbs: &'env Dbs) -> Self {
        Self { txn, dbs }
    }

    /// The appliance id, once initialised.
    pub fn appliance_id(&self) -> Result<Option<String>, StoreError> {
        Ok(get(&self.txn, self.dbs.meta, layout::META_APPLIANCE_ID)?.map(|v| String::from_utf8_lossy(v).into_owned()))
    }

    /// One tenant.
    pub fn tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>, StoreError> {
        get(&self.txn, self.dbs.tenants, id.as_str().as_bytes())?
            .map(|v| serde_json::from_slice(v).map_err(|_| StoreError::Corrupt("tenants")))
            .transpose()
    }

    /// All tenants, by id.
    pub fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let mut cursor = self.txn.open_ro_cursor(self.dbs.tenants)?;
        let mut out = Vec::new();
        for item in cursor.iter_start() {
            let (_, v) = item?;
            out.push(serde_json::from_slice(v).map_err(|_| StoreError::Corrupt("tenants"))?);
        }
        Ok(out)
    }

    /// A token by the hash of its secret.
    pub fn token_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        get(&self.txn, self.dbs.tokens, hash)?
            .map(|v| serde_json::from_slice(v).map_err(|_| StoreError::Corrupt("tokens")))
            .transpose()
    }

    /// A token by its public id.
    pub fn token_by_id(&self, token_id: &str) -> Result<Option<TokenRecord>, StoreError> {
        match get(&self.txn, self.dbs.token_ids, token_id.as_bytes())? {
            None => Ok(None),
            Some(hash) => {
                let hash: TokenHash = hash.try_into().map_err(|_| StoreError::Corrupt("token_ids"))?;
                self.token_by_hash(&hash)
            }
        }
    }

    /// The wrapped DEK of one of the caller's entities.
    pub fn wrapped_dek(&self, scope: &TenantScope, entity: &EntityId) -> Result<Option<WrappedDek>, StoreError> {
        get(&self.txn, self.dbs.deks, &layout::entity_prefix(scope.tenant(), entity))?
            .map(|v| WrappedDek::from_bytes(v).ok_or(StoreError::Corrupt("deks")))
            .transpose()
    }

    /// One record of one of the caller's entities.
    pub fn record(
        &self,
        scope: &TenantScope,
        entity: &EntityId,
        id: &RecordId,
    ) -> Result<Option<StoredRecord>, StoreError> {
        let prefix = layout::entity_prefix(scope.tenant(), entity);
        let Some(ts) = get(&self.txn, self.dbs.record_index, &layout::record_index_key(&prefix, id))? else {
            return Ok(None);
        };
        let ts = u64::from_be_bytes(ts.try_into().map_err(|_| StoreError::Corrupt("record_index"))?);
        let Some(v) = get(&self.txn, self.dbs.records, &layout::record_key(&prefix, ts, id))? else {
            return Err(StoreError::Corrupt("record_index points to a missing record"));
        };
        let sealed = Sealed::from_bytes(v).ok_or(StoreError::Corrupt("records"))?;
        Ok(Some(StoredRecord {
            id: id.clone(),
            ts_nanos: ts,
            sealed,
        }))
    }

    /// Records of one of the caller's entities with `start <= ts < end`, strictly after
    /// `after`, at most `limit`.
    pub fn records(
        &self,
        scope: &TenantScope,
        entity: &EntityId,
        start: u64,
        end: u64,
        after: Option<(u64, RecordId)>,
        limit: usize,
    ) -> Result<RecordPage, StoreError> {
        let prefix = layout::entity_prefix(scope.tenant(), entity);
        let from = match &after {
            Some((ts, id)) => {
                let mut k = layout::record_key(&prefix, *ts, id);
                k.push(0); // strictly after
                k
            }
            None => {
                let mut k = prefix.clone();
                k.extend_from_slice(&start.to_be_bytes());
                k
            }
        };
        let mut cursor = self.txn.open_ro_cursor(self.dbs.records)?;
        let mut records = Vec::new();
        let mut next = None;
        for item in cursor.iter_from(&from) {
            let (k, v) = item?;
            let Some(suffix) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            let (ts, id) = layout::split_record_suffix(suffix).ok_or(StoreError::Corrupt("records key"))?;
            if ts < start {
                continue;
            }
            if ts >= end {
                break;
            }
            if records.len() == limit {
                next = records.last().map(|r: &StoredRecord| (r.ts_nanos, r.id.clone()));
                break;
            }
            let sealed = Sealed::from_bytes(v).ok_or(StoreError::Corrupt("records"))?;
            records.push(StoredRecord {
                id,
                ts_nanos: ts,
                sealed,
            });
        }
        drop(cursor);
        Ok(RecordPage { records, next })
    }

    /// Whether a tenant other than the caller's uses this entity id (to audit a
    /// cross-tenant probe as `access_denied`; the caller still gets a plain 404).
    pub fn entity_used_by_other_tenant(&self, scope: &TenantScope, entity: &EntityId) -> Result<bool, StoreError> {
        let prefix = layout::entity_tenants_prefix(entity);
        let mine = layout::entity_tenant_key(scope.tenant(), entity);
        let mut cursor = self.txn.open_ro_cursor(self.dbs.entity_tenants)?;
        let mut found = false;
        for item in cursor.iter_from(&prefix) {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            if k != mine.as_slice() {
                found = true;
                break;
            }
        }
        drop(cursor);
        Ok(found)
    }

    /// Canonical bytes of events `from_seq..` (at most `limit`).
    pub fn audit_events(&self, from_seq: u64, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut cursor = self.txn.open_ro_cursor(self.dbs.audit)?;
        let mut out = Vec::new();
        for item in cursor.iter_from(layout::audit_key(from_seq)) {
            let (_, v) = item?;
            if out.len() == limit {
                break;
            }
            out.push(v.to_vec());
        }
        drop(cursor);
        Ok(out)
    }

    /// (next seq, last chain hash).
    pub fn audit_head(&self) -> Result<(u64, ChainHash), StoreError> {
        audit_head(&self.txn, self.dbs.meta)
    }
}
