//! The changes a write transaction may make. Only the writer thread creates a
//! [`WriteTxn`]; requests describe their change as a closure over it.

use lmdb::{Cursor, Database, RwTransaction, Transaction, WriteFlags};

use super::read::TenantRecord;
use super::table::{KeyCodec, Table, ValueCodec};
use super::{backend, layout};
use super::{Dbs, StoreError};
use crate::auth::tokens::TokenHash;
use crate::auth::{OperatorScope, TenantScope, TokenRecord};
use crate::domain::{EntityId, RecordId};
use crate::keys::{Sealed, WrappedDek};

/// Why a change was refused. The transaction's part for this change is rolled back.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The resource already exists.
    #[error("{0}")]
    Conflict(String),
    /// The resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The entity's data key changed since the caller read it (erased or created
    /// concurrently), or a new key was wrapped under a KEK version a rotation has
    /// replaced since; the caller retries with the stored key. Not audited.
    #[error("data key changed concurrently")]
    StaleKey,
    /// LMDB failure.
    #[error("storage: {0}")]
    Storage(#[from] lmdb::Error),
    /// Bytes in the store do not parse.
    #[error("corrupt stored value in {0}")]
    Corrupt(&'static str),
}

impl ChangeError {
    /// Stable code for the audit event's details.
    pub fn code(&self) -> &'static str {
        match self {
            ChangeError::Conflict(_) => "conflict",
            ChangeError::NotFound(_) => "not_found",
            ChangeError::StaleKey => "stale_key",
            ChangeError::Storage(_) | ChangeError::Corrupt(_) => "internal",
        }
    }
}

/// Where the data key handed to [`WriteTxn::put_records`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Just generated for this write: may become the entity's key.
    Fresh,
    /// Read from the store (or cache): must still be the entity's key.
    Stored,
}

/// What an erasure removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EraseCounts {
    /// Records deleted.
    pub records: u64,
    /// Record-id index entries deleted.
    pub index_entries: u64,
    /// Compressed segments purged (this engine stores no segments: always 0).
    pub segments: u64,
    /// Whether a wrapped DEK was deleted.
    pub key_deleted: bool,
}

/// A record ready to store: sealed, with its clear-text position.
pub struct NewRecord {
    /// Record id.
    pub id: RecordId,
    /// Timestamp, Unix nanoseconds.
    pub ts_nanos: u64,
    /// Sealed data.
    pub sealed: Sealed,
}

/// A write transaction, as seen by one change.
pub struct WriteTxn<'t, 'env> {
    txn: &'t mut RwTransaction<'env>,
    dbs: &'t Dbs,
}

fn exists(txn: &RwTransaction<'_>, db: Database, key: &[u8]) -> Result<bool, ChangeError> {
    Ok(backend::lmdb::get(txn, db, key)?.is_some())
}

impl<'t, 'env> WriteTxn<'t, 'env> {
    pub(super) fn new(txn: &'t mut RwTransaction<'env>, dbs: &'t Dbs) -> Self {
        Self { txn, dbs }
    }

    /// Store the appliance id (once, at `init`).
    pub fn set_appliance_id(&mut self, _scope: &OperatorScope, id: &str) -> Result<(), ChangeError> {
        self.txn
            .put(
                self.dbs.meta,
                &layout::META_APPLIANCE_ID,
                &id.as_bytes(),
                WriteFlags::NO_OVERWRITE,
            )
            .map_err(|e| match e {
                lmdb::Error::KeyExist => ChangeError::Conflict("appliance already initialised".into()),
                e => e.into(),
            })
    }

    /// Store a signed checkpoint under its TPM counter value (never overwritten).
    pub fn put_checkpoint(&mut self, _scope: &OperatorScope, counter: u64, note: &str) -> Result<(), ChangeError> {
        self.txn
            .put(
                self.dbs.checkpoints,
                &layout::checkpoint_key(counter),
                &note.as_bytes(),
                WriteFlags::NO_OVERWRITE,
            )
            .map_err(|e| match e {
                lmdb::Error::KeyExist => ChangeError::Conflict(format!("checkpoint for counter {counter} exists")),
                e => e.into(),
            })
    }

    /// Create a tenant; `Conflict` if it exists or its id was destroyed.
    pub fn insert_tenant(&mut self, _scope: &OperatorScope, tenant: &TenantRecord) -> Result<(), ChangeError> {
        if exists(
            self.txn,
            self.dbs.meta,
            &layout::destroyed_tenant_key(&tenant.tenant_id),
        )? {
            return Err(ChangeError::Conflict(format!(
                "tenant id {} belonged to a destroyed tenant; tenant ids are not reused",
                tenant.tenant_id
            )));
        }
        let value = serde_json::to_vec(tenant).map_err(|_| ChangeError::Corrupt("tenant"))?;
        self.txn
            .put(
                self.dbs.tenants,
                &tenant.tenant_id.as_str(),
                &value,
                WriteFlags::NO_OVERWRITE,
            )
            .map_err(|e| match e {
                lmdb::Error::KeyExist => ChangeError::Conflict(format!("tenant {} already exists", tenant.tenant_id)),
                e => e.into(),
            })
    }

    /// Store a new token.
    pub fn insert_token(&mut self, hash: &TokenHash, token: &TokenRecord) -> Result<(), ChangeError> {
        let value = serde_json::to_vec(token).map_err(|_| ChangeError::Corrupt("token"))?;
        self.txn.put(self.dbs.tokens, hash, &value, WriteFlags::NO_OVERWRITE)?;
        self.txn.put(
            self.dbs.token_ids,
            &token.token_id.as_str(),
            hash,
            WriteFlags::NO_OVERWRITE,
        )?;
        Ok(())
    }

    /// Ids of unrevoked, unexpired operator tokens holding `tokens:manage`, as of this
    /// transaction.
    pub fn active_token_admins(&self, now: i64) -> Result<Vec<String>, ChangeError> {
        super::read::token_admins(&*self.txn, self.dbs.tokens, now).map_err(|e| match e {
            StoreError::Lmdb(e) => ChangeError::Storage(e),
            _ => ChangeError::Corrupt("tokens"),
        })
    }

    /// Mark a token revoked (idempotent: a second revoke keeps the first time).
    pub fn revoke_token(&mut self, token_id: &str, at: i64) -> Result<TokenRecord, ChangeError> {
        let hash: TokenHash = match backend::lmdb::get(&*self.txn, self.dbs.token_ids, token_id.as_bytes())? {
            Some(h) => h.try_into().map_err(|_| ChangeError::Corrupt("token_ids"))?,
            None => return Err(ChangeError::NotFound(format!("token {token_id} not found"))),
        };
        let mut record: TokenRecord = serde_json::from_slice(self.txn.get(self.dbs.tokens, &hash)?)
            .map_err(|_| ChangeError::Corrupt("tokens"))?;
        if record.revoked_at.is_none() {
            record.revoked_at = Some(at);
            let value = serde_json::to_vec(&record).map_err(|_| ChangeError::Corrupt("token"))?;
            self.txn.put(self.dbs.tokens, &hash, &value, WriteFlags::empty())?;
        }
        Ok(record)
    }

    /// Store sealed records of one of the caller's entities, all or nothing.
    ///
    /// `dek` is the wrapped key the records were sealed under. A [`KeyOrigin::Fresh`] key
    /// is stored if the entity has none; a [`KeyOrigin::Stored`] key must still be the
    /// stored one (an erasure in between must not resurrect it). Otherwise
    /// [`ChangeError::StaleKey`] and the caller retries. A record id that exists → `Conflict`.
    pub fn put_records(
        &mut self,
        scope: &TenantScope,
        entity: &EntityId,
        dek: &WrappedDek,
        origin: KeyOrigin,
        records: &[NewRecord],
    ) -> Result<usize, ChangeError> {
        let tenant = scope.tenant();
        let prefix = layout::entity_prefix(tenant, entity);
        match backend::lmdb::get(&*self.txn, self.dbs.deks, &prefix)? {
            Some(stored) => {
                let stored = WrappedDek::from_bytes(stored).ok_or(ChangeError::Corrupt("deks"))?;
                if stored.dek_id != dek.dek_id {
                    return Err(ChangeError::StaleKey);
                }
            }
            None if origin == KeyOrigin::Stored => return Err(ChangeError::StaleKey),
            None => {
                // A new DEK must be wrapped under the tenant's current KEK: one wrapped
                // under the version a rotation just replaced would be missed by its
                // rewrap pass (which lists the DEKs after recording the new version).
                let current = match backend::lmdb::get(&*self.txn, self.dbs.tenants, tenant.as_str().as_bytes())? {
                    Some(v) => Some(
                        serde_json::from_slice::<TenantRecord>(v)
                            .map_err(|_| ChangeError::Corrupt("tenants"))?
                            .key_version,
                    ),
                    None => None,
                };
                // No tenant (destroyed by governance since the caller looked): no new
                // key, so nothing can be written under a destroyed tenant's prefix; the
                // caller retries and finds the tenant gone.
                if current.is_none_or(|v| v != dek.kek_version) {
                    return Err(ChangeError::StaleKey);
                }
                self.txn
                    .put(self.dbs.deks, &prefix, &dek.to_bytes(), WriteFlags::NO_OVERWRITE)?;
            }
        }
        for r in records {
            if r.sealed.dek_id() != dek.dek_id {
                return Err(ChangeError::StaleKey);
            }
            let index_key = layout::record_index_key(&prefix, &r.id);
            if exists(self.txn, self.dbs.record_index, &index_key)? {
                return Err(ChangeError::Conflict(format!("record {} already exists", r.id)));
            }
            self.txn.put(
                self.dbs.record_index,
                &index_key,
                &r.ts_nanos.to_be_bytes(),
                WriteFlags::empty(),
            )?;
            self.txn.put(
                self.dbs.records,
                &layout::record_key(&prefix, r.ts_nanos, &r.id),
                &r.sealed.to_bytes(),
                WriteFlags::empty(),
            )?;
        }
        Ok(records.len())
    }
}

impl WriteTxn<'_, '_> {
    /// Delete every key under `prefix` in `db`; returns how many. Cost is proportional to
    /// the range, not the database.
    fn delete_prefix(&mut self, db: Database, prefix: &[u8]) -> Result<u64, ChangeError> {
        let mut keys = Vec::new();
        {
            let mut cursor = self.txn.open_ro_cursor(db)?;
            for item in cursor.iter_from(prefix) {
                let (k, _) = item?;
                if !k.starts_with(prefix) {
                    break;
                }
                keys.push(k.to_vec());
            }
        }
        for k in &keys {
            self.txn.del(db, k, None)?;
        }
        Ok(keys.len() as u64)
    }

    /// Erase one of the caller's entities: its records, record-id index entries, wrapped
    /// DEK and tenant marker, and write `tombstone` (JSON) in their place.
    pub fn erase_entity(
        &mut self,
        scope: &TenantScope,
        entity: &EntityId,
        tombstone: &[u8],
    ) -> Result<EraseCounts, ChangeError> {
        let prefix = layout::entity_prefix(scope.tenant(), entity);
        let records = self.delete_prefix(self.dbs.records, &prefix)?;
        let index_entries = self.delete_prefix(self.dbs.record_index, &prefix)?;
        let key_deleted = backend::lmdb::delete(self.txn, self.dbs.deks, &prefix)?;
        self.txn
            .put(self.dbs.erased, &prefix, &tombstone, WriteFlags::empty())?;
        // The erased DEK's old wrapped copies (free pages, backups) die with the KEK
        // versions that wrapped them: record, in this same transaction, that the tenant
        // needs a rotation, so it happens even if the process stops right after.
        let tenant_key = scope.tenant().as_str().as_bytes();
        let mut tenant: TenantRecord = serde_json::from_slice(self.txn.get(self.dbs.tenants, &tenant_key)?)
            .map_err(|_| ChangeError::Corrupt("tenants"))?;
        tenant.rotation_required = true;
        let value = serde_json::to_vec(&tenant).map_err(|_| ChangeError::Corrupt("tenant"))?;
        self.txn
            .put(self.dbs.tenants, &tenant_key, &value, WriteFlags::empty())?;
        Ok(EraseCounts {
            records,
            index_entries,
            segments: 0,
            key_deleted,
        })
    }

    /// Replace a tenant's record (rotation state). The tenant must exist.
    pub fn update_tenant(&mut self, _scope: &OperatorScope, tenant: &TenantRecord) -> Result<(), ChangeError> {
        if !exists(self.txn, self.dbs.tenants, tenant.tenant_id.as_str().as_bytes())? {
            return Err(ChangeError::NotFound(format!("tenant {} not found", tenant.tenant_id)));
        }
        let value = serde_json::to_vec(tenant).map_err(|_| ChangeError::Corrupt("tenant"))?;
        self.txn.put(
            self.dbs.tenants,
            &tenant.tenant_id.as_str(),
            &value,
            WriteFlags::empty(),
        )?;
        Ok(())
    }

    /// Replace an entity's wrapped DEK by `new` (same key, rewrapped under another KEK
    /// version) if it is still `old`; returns whether it was replaced.
    pub fn rewrap_dek(
        &mut self,
        scope: &TenantScope,
        entity: &EntityId,
        old: &WrappedDek,
        new: &WrappedDek,
    ) -> Result<bool, ChangeError> {
        let prefix = layout::entity_prefix(scope.tenant(), entity);
        let current = match backend::lmdb::get(&*self.txn, self.dbs.deks, &prefix)? {
            Some(v) => WrappedDek::from_bytes(v).ok_or(ChangeError::Corrupt("deks"))?,
            None => return Ok(false),
        };
        if current != *old || new.dek_id != old.dek_id {
            return Ok(false);
        }
        self.txn
            .put(self.dbs.deks, &prefix, &new.to_bytes(), WriteFlags::empty())?;
        Ok(true)
    }
}

/// `len(tenant) tenant`: the key of a tenant's privacy budget, and the prefix of its
/// idempotency-ledger keys.
/// Typed tables (see [`super::table`]): the accessors every domain's tables share.
impl WriteTxn<'_, '_> {
    /// The value under `key`, if any.
    pub fn get<K: KeyCodec, V: ValueCodec>(
        &self,
        table: &Table<K, V>,
        key: K::Key<'_>,
    ) -> Result<Option<V::Value>, ChangeError> {
        match backend::lmdb::get(&*self.txn, table.db(self.dbs), &table.key(key))? {
            Some(bytes) => V::decode(bytes).map(Some).ok_or(ChangeError::Corrupt(table.name())),
            None => Ok(None),
        }
    }

    /// Store `value` under `key` (replacing any).
    pub fn put<K: KeyCodec, V: ValueCodec>(
        &mut self,
        table: &Table<K, V>,
        key: K::Key<'_>,
        value: &V::Value,
    ) -> Result<(), ChangeError> {
        let bytes = V::encode(value).ok_or(ChangeError::Corrupt(table.name()))?;
        self.txn
            .put(table.db(self.dbs), &table.key(key), &bytes, WriteFlags::empty())?;
        Ok(())
    }
}

/// What destroying a tenant removed (see [`WriteTxn::destroy_tenant`]).
#[derive(Debug, Clone)]
pub struct DestroyCounts {
    /// The tenant record as it was (its KEK versions are destroyed after the commit).
    pub tenant: TenantRecord,
    /// Records deleted.
    pub records: u64,
    /// Record-id index entries deleted.
    pub index_entries: u64,
    /// Wrapped DEKs deleted.
    pub deks: u64,
    /// Erasure tombstones deleted.
    pub tombstones: u64,
    /// Idempotency-ledger entries deleted.
    pub ledger_entries: u64,
    /// Tokens of the tenant revoked by this change.
    pub tokens_revoked: u64,
}

/// Governance (see `crate::governance`): tenant destruction (its proposals and stored
/// quorum are typed tables in `governance/tables.rs`).
impl WriteTxn<'_, '_> {
    /// A tenant's record, if it exists.
    pub fn tenant_record(&self, tenant: &crate::domain::TenantId) -> Result<Option<TenantRecord>, ChangeError> {
        match backend::lmdb::get(&*self.txn, self.dbs.tenants, tenant.as_str().as_bytes())? {
            Some(v) => Ok(Some(
                serde_json::from_slice(v).map_err(|_| ChangeError::Corrupt("tenants"))?,
            )),
            None => Ok(None),
        }
    }

    /// Destroy a tenant's data in one transaction: revoke every token bound to it, delete
    /// its records, record-id index, wrapped DEKs, tombstones, privacy ledger and budget
    /// entries (all under the tenant prefix `len(tenant) tenant`), and its tenant record.
    /// `NotFound` if the tenant does not exist. Its KEKs are the caller's to destroy in the
    /// HSM once this is durable.
    pub fn destroy_tenant(
        &mut self,
        _scope: &OperatorScope,
        tenant: &crate::domain::TenantId,
        at: i64,
    ) -> Result<DestroyCounts, ChangeError> {
        let record: TenantRecord = match backend::lmdb::get(&*self.txn, self.dbs.tenants, tenant.as_str().as_bytes())? {
            Some(v) => serde_json::from_slice(v).map_err(|_| ChangeError::Corrupt("tenants"))?,
            None => return Err(ChangeError::NotFound(format!("tenant {tenant} not found"))),
        };
        let mut revoke = Vec::new();
        {
            let mut cursor = self.txn.open_ro_cursor(self.dbs.tokens)?;
            for item in cursor.iter_start() {
                let (k, v) = item?;
                let t: TokenRecord = serde_json::from_slice(v).map_err(|_| ChangeError::Corrupt("tokens"))?;
                if t.tenant_id.as_ref() == Some(tenant) && t.revoked_at.is_none() {
                    revoke.push((k.to_vec(), t));
                }
            }
        }
        let tokens_revoked = revoke.len() as u64;
        for (hash, mut t) in revoke {
            t.revoked_at = Some(at);
            let value = serde_json::to_vec(&t).map_err(|_| ChangeError::Corrupt("token"))?;
            self.txn.put(self.dbs.tokens, &hash, &value, WriteFlags::empty())?;
        }
        let prefix = layout::tenant_prefix(tenant);
        let records = self.delete_prefix(self.dbs.records, &prefix)?;
        let index_entries = self.delete_prefix(self.dbs.record_index, &prefix)?;
        let deks = self.delete_prefix(self.dbs.deks, &prefix)?;
        let tombstones = self.delete_prefix(self.dbs.erased, &prefix)?;
        let ledger_entries = self.delete_prefix(self.dbs.dp_idempotency, &prefix)?;
        for db in [self.dbs.dp_budget, self.dbs.dp_budget_extra] {
            backend::lmdb::delete(self.txn, db, &prefix)?;
        }
        self.txn.del(self.dbs.tenants, &tenant.as_str(), None)?;
        self.txn.put(
            self.dbs.meta,
            &layout::destroyed_tenant_key(tenant),
            &at.to_be_bytes(),
            WriteFlags::empty(),
        )?;
        Ok(DestroyCounts {
            tenant: record,
            records,
            index_entries,
            deks,
            tombstones,
            ledger_entries,
            tokens_revoked,
        })
    }
}
