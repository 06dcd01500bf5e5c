//! LMDB storage: the only place bytes are persisted.
//!
//! Invariants:
//! - every write goes through the single group-commit writer ([`writer`]), and every
//!   write carries its audit event: [`Store::commit`] takes the event as an argument and
//!   the writer appends it in the same LMDB transaction as the change;
//! - record data is stored only as [`Sealed`](crate::keys::Sealed) bytes;
//! - an entity's records, index entries and wrapped DEK share one key prefix
//!   (`len(tenant) tenant len(entity) entity`), so its data is contiguous ranges.

mod backend;
pub mod layout;
mod read;
pub mod table;
mod write;
mod writer;

use std::path::Path;
use std::sync::Arc;

use lmdb::{Database, DatabaseFlags, Environment, EnvironmentFlags, Transaction};

pub use read::{AuditFilter, AuditPage, ReadTxn, RecordPage, RetiredKek, StoredRecord, TenantRecord, TenantRecordRef};
pub use write::{ChangeError, DestroyCounts, EraseCounts, KeyOrigin, NewRecord, WriteTxn};
pub use writer::{CommitError, Committed, EventReceipt};

use crate::audit::{ChainHash, PendingEvent};
use crate::clock::Clock;
use crate::telemetry::Metrics;

/// Storage-level failure (LMDB or corrupt bytes).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// LMDB returned an error.
    #[error("LMDB: {0}")]
    Lmdb(#[from] lmdb::Error),
    /// Bytes in the store do not parse.
    #[error("corrupt stored value in {0}")]
    Corrupt(&'static str),
    /// Filesystem error.
    #[error("data directory: {0}")]
    Io(#[from] std::io::Error),
    /// The batch's transaction failed to begin or commit; every job of the batch gets
    /// this (cloneable) reason.
    #[error("write transaction failed: {0}")]
    Commit(BatchFailure),
    /// Another process holds the data directory.
    #[error("the data directory is in use by another strongroom process")]
    InUse,
    /// The writer thread has stopped.
    #[error("the store writer has stopped")]
    WriterGone,
}

/// Why a whole batch was not committed: a copy of the [`StoreError`] that stopped it,
/// small and `Copy` so every job of the batch can be answered with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BatchFailure {
    /// LMDB returned an error.
    #[error("LMDB: {0}")]
    Lmdb(lmdb::Error),
    /// Bytes in the store do not parse.
    #[error("corrupt stored value in {0}")]
    Corrupt(&'static str),
    /// Filesystem error (its kind).
    #[error("data directory: {0}")]
    Io(std::io::ErrorKind),
    /// Another process holds the data directory.
    #[error("the data directory is in use by another strongroom process")]
    InUse,
    /// The writer thread has stopped.
    #[error("the store writer has stopped")]
    WriterGone,
}

impl From<&StoreError> for BatchFailure {
    fn from(e: &StoreError) -> Self {
        match e {
            StoreError::Lmdb(e) => Self::Lmdb(*e),
            StoreError::Corrupt(what) => Self::Corrupt(what),
            StoreError::Io(e) => Self::Io(e.kind()),
            StoreError::Commit(f) => *f,
            StoreError::InUse => Self::InUse,
            StoreError::WriterGone => Self::WriterGone,
        }
    }
}

/// The named databases.
#[derive(Clone, Copy)]
pub struct Dbs {
    /// Appliance metadata (`appliance_id`, `audit_head`...).
    pub meta: Database,
    /// tenant id → [`TenantRecord`] JSON.
    pub tenants: Database,
    /// entity prefix → wrapped DEK.
    pub deks: Database,
    /// entity prefix ‖ timestamp(8, BE) ‖ record id → sealed record.
    pub records: Database,
    /// entity prefix ‖ record id → timestamp(8, BE): the record-id index.
    pub record_index: Database,
    /// token hash → [`crate::auth::TokenRecord`] JSON.
    pub tokens: Database,
    /// token id → token hash.
    pub token_ids: Database,
    /// seq(8, BE) → canonical event bytes.
    pub audit: Database,
    /// Index: event second (8, BE) ‖ seq → empty.
    pub audit_by_time: Database,
    /// Index: action name ‖ 0 ‖ seq → empty.
    pub audit_by_action: Database,
    /// Index: `len(tenant) tenant` ‖ seq → empty.
    pub audit_by_tenant: Database,
    /// entity prefix → erasure tombstone JSON (original event id, times).
    pub erased: Database,
    /// TPM counter (8, BE) → signed checkpoint note.
    pub checkpoints: Database,
    /// `len(tenant) tenant` → ε spent by the tenant's private queries (micro-ε, u64 BE).
    pub dp_budget: Database,
    /// `len(tenant) tenant` ‖ Idempotency-Key → ledger entry JSON (query fingerprint and,
    /// once stored, the exact answer).
    pub dp_idempotency: Database,
    /// `len(tenant) tenant` → ε added to the tenant's configured budget by governance
    /// (`raise_budget`), micro-ε u64 BE.
    pub dp_budget_extra: Database,
    /// proposal id → governance proposal JSON (`crate::governance::Proposal`).
    pub proposals: Database,
}

/// Handle to the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// Exclusive lock on the data directory: one appliance process per directory (the
    /// writer keeps the chain head in memory).
    _lock: Arc<std::fs::File>,
    env: Arc<Environment>,
    dbs: Dbs,
    writer: writer::WriterHandle,
}

/// LMDB map size: the file grows sparsely up to this.
const MAP_SIZE: usize = 64 << 30;

impl Store {
    /// Open (creating if needed) the LMDB environment under `dir` and start the writer,
    /// which stamps events with `clock`.
    pub fn open(dir: &Path, metrics: Arc<Metrics>, clock: Clock) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("strongroom.lock"))?;
        lock.try_lock().map_err(|_| StoreError::InUse)?;
        let env = Environment::new()
            .set_max_dbs(32)
            .set_map_size(MAP_SIZE)
            .set_max_readers(512)
            // NO_TLS: read transactions are not tied to OS threads (actix workers hop).
            .set_flags(EnvironmentFlags::NO_TLS)
            .open_with_permissions(dir, 0o600)?;
        let create = |name| env.create_db(Some(name), DatabaseFlags::empty());
        let dbs = Dbs {
            meta: create("meta")?,
            tenants: create("tenants")?,
            deks: create("deks")?,
            records: create("records")?,
            record_index: create("record_index")?,
            tokens: create("tokens")?,
            token_ids: create("token_ids")?,
            audit: create("audit")?,
            audit_by_time: create("audit_by_time")?,
            audit_by_action: create("audit_by_action")?,
            audit_by_tenant: create("audit_by_tenant")?,
            checkpoints: create("checkpoints")?,
            erased: create("erased")?,
            dp_budget: create("dp_budget")?,
            dp_idempotency: create("dp_idempotency")?,
            dp_budget_extra: create("dp_budget_extra")?,
            proposals: create("proposals")?,
        };
        let env = Arc::new(env);
        let head = read::audit_head(&env.begin_ro_txn()?, dbs.meta)?;
        let writer = writer::WriterHandle::start(env.clone(), dbs, head, metrics, clock)?;
        Ok(Self {
            _lock: Arc::new(lock),
            env,
            dbs,
            writer,
        })
    }

    /// Begin a read transaction (a consistent snapshot).
    pub fn read(&self) -> Result<ReadTxn<'_>, StoreError> {
        Ok(ReadTxn::new(self.env.begin_ro_txn()?, &self.dbs))
    }

    /// Apply `change` and append `event` in one durable transaction, batched with other
    /// concurrent commits. If `change` fails, nothing of it is kept, the event is still
    /// recorded (outcome `failed`) and the error is returned once durable.
    pub async fn commit<R, F>(&self, event: PendingEvent, change: F) -> Result<Committed<R>, CommitError>
    where
        R: Send + 'static,
        F: FnOnce(&mut WriteTxn<'_, '_>, &mut PendingEvent) -> Result<R, ChangeError> + Send + 'static,
    {
        self.writer.commit(event, change).await
    }

    /// Record an event that accompanies no change (reads, denials), durably.
    pub async fn record(&self, event: PendingEvent) -> Result<EventReceipt, CommitError> {
        self.commit(event, |_, _| Ok(())).await.map(|c| c.event)
    }

    /// Blocking variant of [`Store::commit`] for code outside the async runtime (`init`).
    pub fn commit_blocking<R, F>(&self, event: PendingEvent, change: F) -> Result<Committed<R>, CommitError>
    where
        R: Send + 'static,
        F: FnOnce(&mut WriteTxn<'_, '_>, &mut PendingEvent) -> Result<R, ChangeError> + Send + 'static,
    {
        self.writer.commit_blocking(event, change)
    }

    /// The chain head: (next seq, hash of the last event).
    pub fn audit_head(&self) -> Result<(u64, ChainHash), StoreError> {
        let txn = self.env.begin_ro_txn()?;
        let head = read::audit_head(&txn, self.dbs.meta)?;
        txn.commit()?;
        Ok(head)
    }

    /// Whether the environment answers (for `/readyz`).
    pub fn ping(&self) -> bool {
        self.env.begin_ro_txn().map(|t| t.commit().is_ok()).unwrap_or(false)
    }
}
