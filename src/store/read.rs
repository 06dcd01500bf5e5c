//! Read transactions: consistent snapshots, typed lookups. Functions that touch tenant
//! data take `&TenantScope`, so they can only read the caller's own tenant.

use lmdb::{Cursor, Database, RoTransaction, Transaction};
use serde::{Deserialize, Serialize};

use super::backend;
use super::layout::{self, META_AUDIT_HEAD};
use super::table::{KeyCodec, Table, ValueCodec};
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
    /// Current KEK version (new DEKs are wrapped under it).
    pub key_version: u32,
    /// RFC 3339.
    pub created_at: String,
    /// Set (with its event) before a rotation creates KEK version `key_version + 1`, so an
    /// interrupted rotation knows the key under that label is its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_version: Option<u32>,
    /// Set (in the erasure's own transaction) when an erasure needs a rotation to become
    /// final; cleared when a rotation starts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rotation_required: bool,
    /// Set while DEKs are being rewrapped from older versions to `key_version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_started_at: Option<String>,
    /// Older KEK versions still in the HSM, each destroyed after its retention window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<RetiredKek>,
}

/// A KEK version replaced by a rotation, kept until `destroy_after` (Unix seconds) so
/// backups remain restorable for the retention window, then destroyed in the HSM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetiredKek {
    /// Version.
    pub version: u32,
    /// Unix seconds after which the key is destroyed.
    pub destroy_after: i64,
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

/// Filters of an audit query (SPEC §6). `tenant` is forced for tenant tokens.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    /// Inclusive start, Unix seconds.
    pub start: Option<u64>,
    /// Exclusive end, Unix seconds.
    pub end: Option<u64>,
    /// Action name.
    pub action: Option<String>,
    /// Actor.
    pub actor: Option<String>,
    /// Resource.
    pub resource: Option<String>,
    /// Only this tenant's events.
    pub tenant: Option<TenantId>,
    /// Continue after this seq.
    pub after_seq: Option<u64>,
    /// Page size.
    pub limit: usize,
}

/// A page of audit events.
pub struct AuditPage {
    /// (seq, canonical bytes), ascending.
    pub events: Vec<(u64, Vec<u8>)>,
    /// Matching events in all pages.
    pub total: u64,
    /// More pages follow.
    pub has_more: bool,
}

/// A read snapshot.
pub struct ReadTxn<'env> {
    txn: RoTransaction<'env>,
    dbs: &'env Dbs,
}

fn get<'t>(txn: &'t RoTransaction<'_>, db: Database, key: &[u8]) -> Result<Option<&'t [u8]>, StoreError> {
    Ok(backend::lmdb::get(txn, db, key)?)
}

pub(super) fn audit_head(txn: &impl Transaction, meta: Database) -> Result<(u64, ChainHash), StoreError> {
    match backend::lmdb::get(txn, meta, META_AUDIT_HEAD)? {
        Some(v) if v.len() == 40 => {
            let seq = u64::from_be_bytes(v[..8].try_into().map_err(|_| StoreError::Corrupt("audit head"))?);
            let hash: ChainHash = v[8..].try_into().map_err(|_| StoreError::Corrupt("audit head"))?;
            Ok((seq, hash))
        }
        Some(_) => Err(StoreError::Corrupt("audit head")),
        None => Ok((0, [0u8; 32])),
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

    /// The newest stored checkpoint: (counter, note).
    pub fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, StoreError> {
        let cursor = self.txn.open_ro_cursor(self.dbs.checkpoints)?;
        let found = match backend::lmdb::last(&cursor)? {
            Some((k, v)) => Some(Self::checkpoint_entry(k, v)?),
            None => None,
        };
        drop(cursor);
        Ok(found)
    }

    /// Every stored checkpoint, by counter.
    pub fn checkpoints(&self) -> Result<Vec<(u64, String)>, StoreError> {
        let mut cursor = self.txn.open_ro_cursor(self.dbs.checkpoints)?;
        let mut out = Vec::new();
        for item in cursor.iter_start() {
            let (k, v) = item?;
            out.push(Self::checkpoint_entry(k, v)?);
        }
        drop(cursor);
        Ok(out)
    }

    fn checkpoint_entry(k: &[u8], v: &[u8]) -> Result<(u64, String), StoreError> {
        let counter = u64::from_be_bytes(k.try_into().map_err(|_| StoreError::Corrupt("checkpoints key"))?);
        let note = String::from_utf8(v.to_vec()).map_err(|_| StoreError::Corrupt("checkpoints"))?;
        Ok((counter, note))
    }

    /// One event's bytes.
    pub fn audit_event(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(get(&self.txn, self.dbs.audit, &layout::audit_key(seq))?.map(<[u8]>::to_vec))
    }

    /// Seqs listed by one index under `prefix`, keys `prefix ‖ ... ‖ seq(8)`, limited to
    /// keys in `[from, to)` when given.
    fn index_seqs(&self, db: Database, from: &[u8], to: Option<&[u8]>, prefix: &[u8]) -> Result<Vec<u64>, StoreError> {
        let mut cursor = self.txn.open_ro_cursor(db)?;
        let mut out = Vec::new();
        for item in cursor.iter_from(from) {
            let (k, _) = item?;
            if !k.starts_with(prefix) || to.is_some_and(|t| k >= t) {
                break;
            }
            let seq = k
                .len()
                .checked_sub(8)
                .map(|i| &k[i..])
                .ok_or(StoreError::Corrupt("audit index"))?;
            out.push(u64::from_be_bytes(
                seq.try_into().map_err(|_| StoreError::Corrupt("audit index"))?,
            ));
        }
        drop(cursor);
        Ok(out)
    }

    /// Audit query: candidates from the most selective index (tenant, action, time),
    /// remaining filters applied to the candidates only.
    pub fn audit_query(&self, f: &AuditFilter) -> Result<AuditPage, StoreError> {
        use crate::audit::AuditEvent;
        let after = f.after_seq.map_or(0, |s| s.saturating_add(1));
        let unfiltered = f.tenant.is_none()
            && f.action.is_none()
            && f.actor.is_none()
            && f.resource.is_none()
            && f.start.is_none()
            && f.end.is_none();
        if unfiltered {
            let total = self.audit_head()?.0;
            let mut events: Vec<(u64, Vec<u8>)> = Vec::new();
            for bytes in self.audit_events(after, f.limit + 1)? {
                events.push((after + events.len() as u64, bytes));
            }
            let has_more = events.len() > f.limit;
            events.truncate(f.limit);
            return Ok(AuditPage {
                events,
                total,
                has_more,
            });
        }
        let mut seqs = if let Some(t) = &f.tenant {
            let p = layout::audit_tenant_prefix(t.as_str());
            self.index_seqs(self.dbs.audit_by_tenant, &p, None, &p)?
        } else if let Some(a) = &f.action {
            let p = layout::audit_action_prefix(a);
            self.index_seqs(self.dbs.audit_by_action, &p, None, &p)?
        } else if f.start.is_some() || f.end.is_some() {
            let from = layout::audit_time_key(f.start.unwrap_or(0), 0);
            let to = layout::audit_time_key(f.end.unwrap_or(u64::MAX), 0);
            self.index_seqs(self.dbs.audit_by_time, &from, Some(&to), &[])?
        } else {
            (0..self.audit_head()?.0).collect()
        };
        seqs.sort_unstable();
        seqs.dedup();
        let mut page = AuditPage {
            events: Vec::new(),
            total: 0,
            has_more: false,
        };
        for seq in seqs {
            let Some(bytes) = get(&self.txn, self.dbs.audit, &layout::audit_key(seq))? else {
                continue;
            };
            // An event that does not parse cannot be attributed; the verifier flags it.
            let Some(e) = AuditEvent::from_bytes(bytes) else {
                continue;
            };
            let ts = time::OffsetDateTime::parse(&e.ts, &time::format_description::well_known::Rfc3339)
                .map(|t| u64::try_from(t.unix_timestamp()).unwrap_or(0))
                .unwrap_or(0);
            let keep = f
                .tenant
                .as_ref()
                .is_none_or(|t| e.tenant_id.as_deref() == Some(t.as_str()))
                && f.action
                    .as_deref()
                    .is_none_or(|a| crate::audit::action_name(e.action) == a)
                && f.actor.as_deref().is_none_or(|a| e.actor == a)
                && f.resource.as_deref().is_none_or(|r| e.resource == r)
                && f.start.is_none_or(|s| ts >= s)
                && f.end.is_none_or(|end| ts < end);
            if !keep {
                continue;
            }
            page.total += 1;
            if seq >= after {
                if page.events.len() < f.limit {
                    page.events.push((seq, bytes.to_vec()));
                } else {
                    page.has_more = true;
                }
            }
        }
        Ok(page)
    }

    /// Visit events from `from_seq` in key order with their stored key; stop when `f`
    /// returns false. A key that is not 8 bytes is reported as `u64::MAX`.
    pub fn for_each_event(&self, from_seq: u64, mut f: impl FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError> {
        let mut cursor = self.txn.open_ro_cursor(self.dbs.audit)?;
        for item in cursor.iter_from(layout::audit_key(from_seq)) {
            let (k, v) = item?;
            let seq = k.try_into().map(u64::from_be_bytes).unwrap_or(u64::MAX);
            if !f(seq, v) {
                break;
            }
        }
        drop(cursor);
        Ok(())
    }

    /// (next seq, last chain hash).
    pub fn audit_head(&self) -> Result<(u64, ChainHash), StoreError> {
        audit_head(&self.txn, self.dbs.meta)
    }
}

impl ReadTxn<'_> {
    /// The erasure tombstone of one of the caller's entities.
    pub fn tombstone(&self, scope: &TenantScope, entity: &EntityId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(get(
            &self.txn,
            self.dbs.erased,
            &layout::entity_prefix(scope.tenant(), entity),
        )?
        .map(<[u8]>::to_vec))
    }

    /// Every wrapped DEK of the caller's tenant, with its entity (for rotation).
    pub fn tenant_deks(&self, scope: &TenantScope) -> Result<Vec<(EntityId, WrappedDek)>, StoreError> {
        let prefix = layout::tenant_prefix(scope.tenant());
        let mut cursor = self.txn.open_ro_cursor(self.dbs.deks)?;
        let mut out = Vec::new();
        for item in cursor.iter_from(&prefix) {
            let (k, v) = item?;
            let Some(rest) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            let entity = rest
                .split_first()
                .and_then(|(len, e)| (usize::from(*len) == e.len()).then_some(e))
                .and_then(|e| std::str::from_utf8(e).ok())
                .and_then(|e| EntityId::parse(e).ok())
                .ok_or(StoreError::Corrupt("deks key"))?;
            out.push((entity, WrappedDek::from_bytes(v).ok_or(StoreError::Corrupt("deks"))?));
        }
        drop(cursor);
        Ok(out)
    }
}

/// One record met by [`ReadTxn::scan_tenant_records`]: its clear-text position, and its
/// sealed bytes, parsed only on [`TenantRecordRef::load`].
pub struct TenantRecordRef<'a> {
    /// The record's entity.
    pub entity: &'a EntityId,
    /// Timestamp, Unix nanoseconds.
    pub ts_nanos: u64,
    suffix: &'a [u8],
    value: &'a [u8],
}

impl TenantRecordRef<'_> {
    /// The sealed record.
    pub fn load(&self) -> Result<StoredRecord, StoreError> {
        let (ts, id) = layout::split_record_suffix(self.suffix).ok_or(StoreError::Corrupt("records key"))?;
        let sealed = Sealed::from_bytes(self.value).ok_or(StoreError::Corrupt("records"))?;
        Ok(StoredRecord {
            id,
            ts_nanos: ts,
            sealed,
        })
    }
}

/// Differential-privacy scans (see `crate::privacy`).
impl ReadTxn<'_> {
    /// Visit every record of the caller's tenant in key order: entity by entity, each
    /// entity's records in timestamp order. Only the caller's tenant prefix is walked.
    pub fn scan_tenant_records<E: From<StoreError>>(
        &self,
        scope: &TenantScope,
        mut visit: impl FnMut(TenantRecordRef<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let prefix = layout::tenant_prefix(scope.tenant());
        let mut cursor = self.txn.open_ro_cursor(self.dbs.records).map_err(StoreError::from)?;
        let mut current: Option<(Vec<u8>, EntityId)> = None;
        for item in cursor.iter_from(&prefix) {
            let (k, v) = item.map_err(StoreError::from)?;
            let Some(rest) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            let (len, rest) = rest.split_first().ok_or(StoreError::Corrupt("records key"))?;
            let len = usize::from(*len);
            if rest.len() < len {
                return Err(StoreError::Corrupt("records key").into());
            }
            let (entity_bytes, suffix) = rest.split_at(len);
            if current.as_ref().map(|(b, _)| b.as_slice()) != Some(entity_bytes) {
                let entity = std::str::from_utf8(entity_bytes)
                    .ok()
                    .and_then(|e| EntityId::parse(e).ok())
                    .ok_or(StoreError::Corrupt("records key"))?;
                current = Some((entity_bytes.to_vec(), entity));
            }
            let Some((_, entity)) = current.as_ref() else {
                continue;
            };
            let ts_nanos = suffix
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or(StoreError::Corrupt("records key"))?;
            visit(TenantRecordRef {
                entity,
                ts_nanos,
                suffix,
                value: v,
            })?;
        }
        drop(cursor);
        Ok(())
    }
}

impl ReadTxn<'_> {
    /// Ids of unrevoked, unexpired operator tokens holding `tokens:manage`.
    pub fn active_token_admins(&self, now: i64) -> Result<Vec<String>, StoreError> {
        token_admins(&self.txn, self.dbs.tokens, now)
    }
}

/// Ids of unrevoked, unexpired operator tokens holding `tokens:manage`, in any
/// transaction (a revocation checks it inside its own write transaction).
pub(super) fn token_admins(txn: &impl Transaction, tokens: Database, now: i64) -> Result<Vec<String>, StoreError> {
    let mut cursor = txn.open_ro_cursor(tokens)?;
    let mut out = Vec::new();
    for item in cursor.iter_start() {
        let (_, v) = item?;
        let t: TokenRecord = serde_json::from_slice(v).map_err(|_| StoreError::Corrupt("tokens"))?;
        if t.tenant_id.is_none()
            && t.revoked_at.is_none()
            && t.expires_at > now
            && t.permissions.contains(&crate::auth::Permission::TokensManage)
        {
            out.push(t.token_id);
        }
    }
    drop(cursor);
    Ok(out)
}

/// Typed tables (see [`super::table`]).
impl ReadTxn<'_> {
    /// The value under `key`, if any.
    pub fn get<K: KeyCodec, V: ValueCodec>(
        &self,
        table: &Table<K, V>,
        key: K::Key<'_>,
    ) -> Result<Option<V::Value>, StoreError> {
        match get(&self.txn, table.db(self.dbs), &table.key(key))? {
            Some(bytes) => V::decode(bytes).map(Some).ok_or(StoreError::Corrupt(table.name())),
            None => Ok(None),
        }
    }

    /// Every value of the table in key order; `None` for one that does not decode (the
    /// caller decides whether that is fatal).
    pub fn values<K: KeyCodec, V: ValueCodec>(&self, table: &Table<K, V>) -> Result<Vec<Option<V::Value>>, StoreError> {
        let mut cursor = self.txn.open_ro_cursor(table.db(self.dbs))?;
        let mut out = Vec::new();
        for item in cursor.iter_start() {
            let (_, v) = item?;
            out.push(V::decode(v));
        }
        drop(cursor);
        Ok(out)
    }
}

/// Governance (see `crate::governance`).
impl ReadTxn<'_> {
    /// Whether `tenant` was destroyed by governance (its id is not reused).
    pub fn tenant_destroyed(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        Ok(get(&self.txn, self.dbs.meta, &layout::destroyed_tenant_key(tenant))?.is_some())
    }
}
