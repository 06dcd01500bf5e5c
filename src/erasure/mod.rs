//! GDPR erasure of one entity (SPEC §6 `DELETE /v1/admin/entity/{id}`).
//!
//! One LMDB write transaction removes the entity's records, its record-id index entries
//! and its wrapped DEK, writes a tombstone and the `entity_erase` event; after commit the
//! cached DEK is evicted (and wiped when its last user drops it). The cost is the
//! entity's own key ranges, never a scan of the database. A KEK rotation of the tenant
//! follows at once, so every old copy of the wrapped DEK (LMDB free pages, backups)
//! becomes undecryptable when the previous KEK is destroyed after the retention window:
//! that date is `crypto_erasure_final_by`.
//!
//! Invariants: a repeated erasure of an erased entity returns the original event id and
//! zero counts; writing to an erased entity id later starts a fresh entity with a fresh
//! DEK (records sealed under the old one can never be opened by it: the DEK id is in
//! every record's AAD).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::audit::integrity::Integrity;
use crate::audit::PendingEvent;
use crate::auth::{Authorized, TenantScope};
use crate::clock::{rfc3339, Clock};
use crate::domain::EntityId;
use crate::keys::rotation::Rotation;
use crate::keys::KeyService;
use crate::store::{CommitError, Store, StoreError};

/// Margin added to the retention window for the rotation that follows an erasure and
/// the reaper's period.
const FINALITY_MARGIN_SECS: i64 = 3600;

/// What `DELETE` answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErasureReport {
    /// Entity.
    pub entity_id: EntityId,
    /// Records deleted.
    pub records_deleted: u64,
    /// Compressed segments purged (none in this engine).
    pub segments_purged: u64,
    /// Record-id index entries deleted.
    pub index_entries_deleted: u64,
    /// The `entity_erase` event.
    pub audit_event_id: String,
    /// RFC 3339.
    pub completed_at: String,
    /// When the previous KEK (the last key able to unwrap old copies of this entity's
    /// DEK) will have been destroyed in the HSM.
    pub crypto_erasure_final_by: String,
}

/// Erasure failures.
#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    /// Nothing of this entity in the caller's tenant (and never erased).
    #[error("not found")]
    NotFound,
    /// Store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Commit.
    #[error(transparent)]
    Commit(#[from] CommitError),
}

/// The erasure service.
#[derive(Clone)]
pub struct ErasureService {
    store: Store,
    keys: KeyService,
    rotation: Rotation,
    integrity: Arc<Integrity>,
    clock: Clock,
}

impl ErasureService {
    /// A service.
    pub fn new(store: Store, keys: KeyService, rotation: Rotation, integrity: Arc<Integrity>, clock: Clock) -> Self {
        Self {
            store,
            keys,
            rotation,
            integrity,
            clock,
        }
    }

    /// Erase one of the caller's entities. `event` is the request's `entity_erase` event.
    pub async fn erase(
        &self,
        auth: &Authorized<TenantScope>,
        entity: &EntityId,
        event: PendingEvent,
    ) -> Result<ErasureReport, ErasureError> {
        let scope = auth.scope();
        let (live, tombstone) = {
            let txn = self.store.read()?;
            (txn.wrapped_dek(scope, entity)?.is_some(), txn.tombstone(scope, entity)?)
        };
        if !live {
            let Some(previous) = tombstone.and_then(|t| serde_json::from_slice::<ErasureReport>(&t).ok()) else {
                return Err(ErasureError::NotFound);
            };
            // Idempotent repeat: the original event, zero counts; still audited.
            let event = event.detail("repeat_of", previous.audit_event_id.clone());
            self.store.record(event).await?;
            return Ok(ErasureReport {
                records_deleted: 0,
                segments_purged: 0,
                index_entries_deleted: 0,
                ..previous
            });
        }
        let now = self.clock.now();
        let final_by = now + time::Duration::seconds(self.rotation.retention_secs() + FINALITY_MARGIN_SECS);
        let mut report = ErasureReport {
            entity_id: entity.clone(),
            records_deleted: 0,
            segments_purged: 0,
            index_entries_deleted: 0,
            audit_event_id: event.event_id.clone(),
            completed_at: rfc3339(now),
            crypto_erasure_final_by: rfc3339(final_by),
        };
        let (s, e, r) = (scope.clone(), entity.clone(), report.clone());
        let committed = self
            .store
            .commit(event, move |txn, ev| {
                let tombstone = serde_json::to_vec(&r).map_err(|_| crate::store::ChangeError::Corrupt("tombstone"))?;
                let counts = txn.erase_entity(&s, &e, &tombstone)?;
                ev.details.insert("records_deleted".into(), counts.records.into());
                ev.details
                    .insert("index_entries_deleted".into(), counts.index_entries.into());
                ev.details.insert("segments_purged".into(), counts.segments.into());
                ev.details.insert("key_deleted".into(), counts.key_deleted.into());
                Ok(counts)
            })
            .await?;
        self.keys.forget(scope, entity);
        report.records_deleted = committed.value.records;
        report.index_entries_deleted = committed.value.index_entries;
        report.segments_purged = committed.value.segments;
        // Make it final: seal soon, and rotate the tenant's KEK in the background.
        self.integrity.critical_event();
        let (rotation, tenant) = (self.rotation.clone(), scope.tenant().clone());
        tokio::spawn(async move {
            let ev = PendingEvent::new(
                crate::audit::Action::KeyRotate,
                "system:erasure",
                format!("tenant:{tenant}"),
                "erasure",
            )
            .tenant(Some(tenant.clone()))
            .detail("reason", "entity_erase");
            if let Err(e) = rotation.rotate_if_required(&tenant, ev).await {
                tracing::error!(%tenant, error = %e, "post-erasure key rotation failed; it is retried every 10 minutes and at start");
            }
        });
        Ok(report)
    }
}
