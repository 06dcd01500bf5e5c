//! The records service: validate a batch, seal it under the entity's DEK, commit it with
//! its `data_write` event; read records back, committing a `data_access` event before
//! answering.
//!
//! Invariant: every function takes `Authorized<TenantScope>`, so it acts on the token's
//! own tenant only; plaintext exists only between `seal`/`open` and the JSON layer;
//! record ids and nonces come from the injected [`Random`]; bad timestamps are a typed
//! [`TimestampError`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::PendingEvent;
use crate::auth::{Authorized, TenantScope};
use crate::clock::{from_unix_nanos, rfc3339, unix_nanos, Clock};
use crate::domain::{EntityId, RecordId};
use crate::keys::{record_aad, DataKey, KeyError, KeyService, Plaintext, SealError, WrappedDek};
use crate::random::Random;
use crate::store::{ChangeError, CommitError, Committed, KeyOrigin, NewRecord, Store, StoreError, StoredRecord};

/// Most records in one write batch.
pub const MAX_BATCH_RECORDS: usize = 1000;
/// Default and maximum page size of a listing.
pub const DEFAULT_LIMIT: usize = 100;
/// Maximum page size.
pub const MAX_LIMIT: usize = 1000;

/// Records-service failures.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// Bad input (400).
    #[error("{0}")]
    Invalid(String),
    /// No such record/entity in the caller's tenant (404). Audited as `access_denied`
    /// whether or not another tenant uses the id, so neither the answer nor the caller's
    /// own audit log tells the two apart (SPEC §5: existence is not leaked).
    #[error("not found")]
    NotFound,
    /// Duplicate record id (409).
    #[error("{0}")]
    Conflict(String),
    /// Stored bytes failed authentication (tampering) — an integrity error.
    #[error("record {0} failed authentication")]
    Tampered(String),
    /// Key hardware.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Commit.
    #[error(transparent)]
    Commit(CommitError),
    /// Encryption failed (nothing was written).
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// One record of a write batch, as the client sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordIn {
    /// Optional client id.
    pub id: Option<RecordId>,
    /// Optional RFC 3339 timestamp (default now).
    pub timestamp: Option<String>,
    /// The record's data (a JSON object).
    pub data: Value,
}

/// `POST /v1/entities/{id}/records` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteBatch {
    /// 1..=1000 records.
    pub records: Vec<RecordIn>,
}

/// A record as returned.
#[derive(Debug, Serialize)]
pub struct RecordOut {
    /// Id.
    pub id: RecordId,
    /// Entity.
    pub entity_id: EntityId,
    /// RFC 3339 UTC.
    pub timestamp: String,
    /// Data.
    pub data: Value,
}

/// A page of records.
#[derive(Debug, Serialize)]
pub struct RecordList {
    /// Records, ascending by timestamp.
    pub records: Vec<RecordOut>,
    /// Opaque cursor for the next page, or null.
    pub next_cursor: Option<String>,
}

/// Listing parameters, already parsed.
pub struct ListParams {
    /// Inclusive start, Unix nanos.
    pub start: u64,
    /// Exclusive end, Unix nanos.
    pub end: u64,
    /// Page size.
    pub limit: usize,
    /// Continue after this position.
    pub after: Option<(u64, RecordId)>,
}

/// The service.
#[derive(Clone)]
pub struct RecordService {
    store: Store,
    keys: KeyService,
    clock: Clock,
    random: Random,
    /// Records decrypted since start (lets tests prove a path read no data).
    pub decrypted: Arc<std::sync::atomic::AtomicU64>,
}

/// Why a timestamp parameter was refused (the message is the client-facing text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// Not RFC 3339.
    #[error("invalid timestamp {0:?}: expected RFC 3339, e.g. 2026-03-08T14:22:01Z")]
    Malformed(String),
    /// Before the Unix epoch.
    #[error("timestamp {0:?} is before 1970")]
    BeforeEpoch(String),
}

impl From<TimestampError> for String {
    fn from(e: TimestampError) -> Self {
        e.to_string()
    }
}

/// Parse an RFC 3339 timestamp into Unix nanos (≥ 1970).
pub fn parse_timestamp(s: &str) -> Result<u64, TimestampError> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| TimestampError::Malformed(s.to_owned()))?;
    u64::try_from(t.unix_timestamp_nanos()).map_err(|_| TimestampError::BeforeEpoch(s.to_owned()))
}

fn new_record_id(random: &Random) -> RecordId {
    let b: [u8; 12] = random.bytes();
    // Hex of random bytes always matches the id charset.
    RecordId::parse(format!("rec-{}", hex::encode(b))).unwrap_or_else(|_| unreachable_id())
}

#[allow(clippy::panic)]
fn unreachable_id() -> RecordId {
    panic!("hex record id failed validation")
}

impl RecordService {
    /// A service over the store and key service; ids and nonces come from `random`.
    pub fn new(store: Store, keys: KeyService, clock: Clock, random: Random) -> Self {
        Self {
            store,
            keys,
            clock,
            random,
            decrypted: Arc::default(),
        }
    }

    /// Validate, seal and commit a batch. All or nothing.
    pub async fn write(
        &self,
        auth: &Authorized<TenantScope>,
        entity: &EntityId,
        batch: WriteBatch,
        event: PendingEvent,
    ) -> Result<Committed<Vec<RecordId>>, RecordsError> {
        let scope = auth.scope();
        if batch.records.is_empty() || batch.records.len() > MAX_BATCH_RECORDS {
            return Err(RecordsError::Invalid(format!(
                "records must hold 1 to {MAX_BATCH_RECORDS} records"
            )));
        }
        let now = unix_nanos(self.clock.now());
        let mut prepared = Vec::with_capacity(batch.records.len());
        let mut seen = std::collections::HashSet::new();
        for r in batch.records {
            if !r.data.is_object() {
                return Err(RecordsError::Invalid("data must be a JSON object".into()));
            }
            let ts = match &r.timestamp {
                Some(s) => parse_timestamp(s).map_err(|e| RecordsError::Invalid(e.into()))?,
                None => now,
            };
            let id = r.id.unwrap_or_else(|| new_record_id(&self.random));
            if !seen.insert(id.clone()) {
                return Err(RecordsError::Invalid(format!(
                    "record id {id} appears twice in the batch"
                )));
            }
            let plain = Plaintext::new(serde_json::to_vec(&r.data).map_err(|e| RecordsError::Invalid(e.to_string()))?);
            prepared.push((id, ts, plain));
        }
        let event = event.detail("count", prepared.len());
        // A concurrent erasure or first write may change the entity's key between our
        // read and the commit; the writer then refuses (StaleKey) and we retry.
        for _attempt in 0..3 {
            let (key, wrapped, fresh) = self.key_for_write(scope, entity).await?;
            let origin = if fresh { KeyOrigin::Fresh } else { KeyOrigin::Stored };
            let records = prepared
                .iter()
                .map(|(id, ts, plain)| {
                    Ok(NewRecord {
                        id: id.clone(),
                        ts_nanos: *ts,
                        sealed: key.seal(
                            &self.random,
                            plain,
                            &record_aad(scope.tenant(), entity, id, *ts, key.id()),
                        )?,
                    })
                })
                .collect::<Result<Vec<NewRecord>, SealError>>()?;
            let ids: Vec<RecordId> = prepared.iter().map(|(id, _, _)| id.clone()).collect();
            let (scope2, entity2) = (scope.clone(), entity.clone());
            let result = self
                .store
                .commit(event.clone(), move |txn, _ev| {
                    txn.put_records(&scope2, &entity2, &wrapped, origin, &records)?;
                    Ok(ids)
                })
                .await;
            match result {
                Ok(c) => {
                    if fresh {
                        self.keys.remember(scope, entity, key);
                    }
                    return Ok(c);
                }
                Err(CommitError::StaleKey) => {
                    self.keys.forget(scope, entity);
                    continue;
                }
                Err(CommitError::Refused(ChangeError::Conflict(m), _)) => return Err(RecordsError::Conflict(m)),
                Err(e) => return Err(RecordsError::Commit(e)),
            }
        }
        Err(RecordsError::Commit(CommitError::StaleKey))
    }

    /// The entity's DEK for writing: cached, unwrapped from the store, or new.
    async fn key_for_write(
        &self,
        scope: &TenantScope,
        entity: &EntityId,
    ) -> Result<(Arc<DataKey>, WrappedDek, bool), RecordsError> {
        let (stored, kek_version) = {
            let txn = self.store.read()?;
            let tenant = txn.tenant(scope.tenant())?.ok_or(RecordsError::NotFound)?;
            (txn.wrapped_dek(scope, entity)?, tenant.key_version)
        };
        match stored {
            Some(wrapped) => {
                let key = self.keys.data_key(scope, entity, &wrapped).await?;
                Ok((key, wrapped, false))
            }
            None => {
                let (key, wrapped) = self.keys.new_data_key(scope, entity, kek_version).await?;
                Ok((key, wrapped, true))
            }
        }
    }

    fn open(
        &self,
        scope: &TenantScope,
        entity: &EntityId,
        key: &DataKey,
        r: StoredRecord,
    ) -> Result<RecordOut, RecordsError> {
        let plain = key
            .open(
                &r.sealed,
                &record_aad(scope.tenant(), entity, &r.id, r.ts_nanos, r.sealed.dek_id()),
            )
            .map_err(|_| RecordsError::Tampered(r.id.to_string()))?;
        self.decrypted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let data = serde_json::from_slice(plain.as_bytes()).map_err(|_| RecordsError::Tampered(r.id.to_string()))?;
        Ok(RecordOut {
            id: r.id,
            entity_id: entity.clone(),
            timestamp: rfc3339(from_unix_nanos(r.ts_nanos)),
            data,
        })
    }

    async fn read_key(
        &self,
        scope: &TenantScope,
        entity: &EntityId,
        want: crate::keys::DekId,
    ) -> Result<Arc<DataKey>, RecordsError> {
        if let Some(k) = self.keys.cached(scope, entity, Some(want)) {
            return Ok(k);
        }
        let wrapped = self.store.read()?.wrapped_dek(scope, entity)?;
        match wrapped {
            Some(w) if w.dek_id == want => {
                let key = self.keys.data_key(scope, entity, &w).await?;
                // An erasure may have committed while the HSM unwrapped: do not leave the
                // erased key in the cache.
                if self.store.read()?.wrapped_dek(scope, entity)?.map(|s| s.dek_id) != Some(want) {
                    self.keys.forget(scope, entity);
                }
                Ok(key)
            }
            // A record whose key is gone or different: the store was tampered with.
            _ => Err(RecordsError::Tampered("(key mismatch)".into())),
        }
    }

    /// Read one record; its `data_access` event is durable before this returns.
    pub async fn get(
        &self,
        auth: &Authorized<TenantScope>,
        entity: &EntityId,
        id: &RecordId,
        event: PendingEvent,
    ) -> Result<RecordOut, RecordsError> {
        let scope = auth.scope();
        let stored = self.store.read()?.record(scope, entity, id)?;
        let Some(stored) = stored else {
            return Err(RecordsError::NotFound);
        };
        let key = self.read_key(scope, entity, stored.sealed.dek_id()).await?;
        let out = self.open(scope, entity, &key, stored)?;
        self.store.record(event).await.map_err(RecordsError::Commit)?;
        Ok(out)
    }

    /// List records; the `data_access` event is durable before this returns. An entity
    /// with no records in the caller's tenant gives an empty page (SPEC §9).
    pub async fn list(
        &self,
        auth: &Authorized<TenantScope>,
        entity: &EntityId,
        params: ListParams,
        event: PendingEvent,
    ) -> Result<(Vec<RecordOut>, Option<(u64, RecordId)>), RecordsError> {
        let scope = auth.scope();
        let page = self
            .store
            .read()?
            .records(scope, entity, params.start, params.end, params.after, params.limit)?;
        let mut out = Vec::with_capacity(page.records.len());
        let mut key: Option<Arc<DataKey>> = None;
        for r in page.records {
            let k = match &key {
                Some(k) if k.id() == r.sealed.dek_id() => k.clone(),
                _ => {
                    let k = self.read_key(scope, entity, r.sealed.dek_id()).await?;
                    key = Some(k.clone());
                    k
                }
            };
            out.push(self.open(scope, entity, &k, r)?);
        }
        let event = event.detail("count", out.len());
        self.store.record(event).await.map_err(RecordsError::Commit)?;
        Ok((out, page.next))
    }
}
