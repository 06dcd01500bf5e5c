//! Tenant KEK rotation and retirement: what makes crypto-erasure final.
//!
//! Rotation creates KEK version n+1 in the HSM, records it (new DEKs use it at once),
//! rewraps every live DEK of the tenant in batches (no record is re-encrypted), then
//! retires version n with a destroy-after date. The reaper destroys retired versions in
//! the HSM once their window has passed and no DEK uses them. After that, a wrapped DEK
//! recovered from any old copy of the data directory can no longer be unwrapped.
//!
//! Invariants: one rotation per tenant at a time; every step is committed with an audit
//! event; a rotation interrupted at any point is resumed (at start, or by the next
//! rotate call) from what the store says; a KEK is never destroyed while a stored DEK
//! still needs it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::{KeyError, KeyService, WrappedDek};
use crate::audit::{Action, PendingEvent};
use crate::auth::{system_scope, system_tenant_scope};
use crate::clock::{rfc3339, Clock};
use crate::domain::{EntityId, TenantId};
use crate::store::{ChangeError, CommitError, RetiredKek, Store, StoreError, TenantRecord};

/// DEKs rewrapped per commit.
const REWRAP_BATCH: usize = 256;

/// Rotation failures.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// No such tenant.
    #[error("tenant not found")]
    NotFound,
    /// The HSM already holds a key under the next version's label that this appliance
    /// did not make (another appliance sharing the token?). Never adopted.
    #[error("the HSM already holds a key labelled {0} that this appliance did not create")]
    ForeignKey(String),
    /// HSM.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Commit.
    #[error(transparent)]
    Commit(#[from] CommitError),
}

/// What a rotation did.
#[derive(Debug, Clone, Serialize)]
pub struct RotationReport {
    /// Tenant.
    pub tenant_id: TenantId,
    /// The new current KEK version.
    pub key_version: u32,
    /// The version it replaced.
    pub previous_version: u32,
    /// DEKs rewrapped.
    pub rewrapped: u64,
    /// When the previous version is destroyed in the HSM (RFC 3339).
    pub previous_version_destroy_after: String,
}

/// The rotation service.
#[derive(Clone)]
pub struct Rotation {
    store: Store,
    keys: KeyService,
    clock: Clock,
    retention_secs: i64,
    locks: Arc<Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>>>,
}

fn system_event(phase: &str, tenant: &TenantId) -> PendingEvent {
    PendingEvent::new(
        Action::KeyRotate,
        "system:rotation",
        format!("tenant:{tenant}"),
        "rotation",
    )
    .tenant(Some(tenant.clone()))
    .detail("phase", phase)
}

impl Rotation {
    /// A rotation service; retired KEKs are kept `retention_secs`.
    pub fn new(store: Store, keys: KeyService, clock: Clock, retention_secs: i64) -> Self {
        Self {
            store,
            keys,
            clock,
            retention_secs,
            locks: Arc::default(),
        }
    }

    /// The retention window in seconds.
    pub fn retention_secs(&self) -> i64 {
        self.retention_secs
    }

    fn lock_for(&self, tenant: &TenantId) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(tenant.clone()).or_default().clone()
    }

    /// The lock that serialises key work on `tenant` (rotation, reaping); tenant
    /// destruction holds it too.
    pub fn tenant_lock(&self, tenant: &TenantId) -> Arc<tokio::sync::Mutex<()>> {
        self.lock_for(tenant)
    }

    fn tenant(&self, tenant: &TenantId) -> Result<TenantRecord, RotationError> {
        self.store.read()?.tenant(tenant)?.ok_or(RotationError::NotFound)
    }

    async fn save(&self, record: TenantRecord, event: PendingEvent) -> Result<(), RotationError> {
        let scope = system_scope();
        self.store
            .commit(event, move |txn, _| txn.update_tenant(&scope, &record))
            .await?;
        Ok(())
    }

    /// Rotate `tenant`'s KEK (or finish an interrupted rotation). `request_event` is the
    /// caller's `key_rotate` event, committed with the first step.
    pub async fn rotate(
        &self,
        tenant: &TenantId,
        request_event: PendingEvent,
    ) -> Result<RotationReport, RotationError> {
        let lock = self.lock_for(tenant);
        let _serial = lock.lock().await;
        let record = self.tenant(tenant)?;
        self.rotate_locked(tenant, record, request_event).await
    }

    /// Rotate only if an erasure asked for it (or a rotation is unfinished) and no
    /// rotation has started since: many erasures in a row cost one rotation.
    pub async fn rotate_if_required(
        &self,
        tenant: &TenantId,
        event: PendingEvent,
    ) -> Result<Option<RotationReport>, RotationError> {
        let lock = self.lock_for(tenant);
        let _serial = lock.lock().await;
        let record = self.tenant(tenant)?;
        let unfinished = record.rotation_started_at.is_some() || record.pending_version.is_some();
        if !record.rotation_required && !unfinished {
            return Ok(None);
        }
        self.rotate_locked(tenant, record, event).await.map(Some)
    }

    /// The rotation itself; the caller holds the tenant's rotation lock.
    async fn rotate_locked(
        &self,
        tenant: &TenantId,
        mut record: TenantRecord,
        request_event: PendingEvent,
    ) -> Result<RotationReport, RotationError> {
        let request_event = if record.rotation_started_at.is_some() {
            // Interrupted earlier: the new version is already current; just finish.
            self.store
                .record(
                    request_event
                        .detail("phase", "resume")
                        .detail("key_version", record.key_version),
                )
                .await?;
            None
        } else {
            Some(request_event)
        };
        if let Some(event) = request_event {
            self.start_next_version(tenant, &mut record, event).await?;
        }
        let rewrapped = self.rewrap_all(tenant, record.key_version).await?;
        // Retire: every version below the current one gets its window from now.
        let destroy_after = self.clock.now().unix_timestamp() + self.retention_secs;
        for r in &mut record.retired {
            if r.destroy_after == i64::MAX {
                r.destroy_after = destroy_after;
            }
        }
        record.rotation_started_at = None;
        let previous_version = record.key_version.saturating_sub(1);
        let event = system_event("completed", tenant)
            .detail("key_version", record.key_version)
            .detail("rewrapped", rewrapped)
            .detail("destroy_after", destroy_after);
        self.save(record.clone(), event).await?;
        Ok(RotationReport {
            tenant_id: tenant.clone(),
            key_version: record.key_version,
            previous_version,
            rewrapped,
            previous_version_destroy_after: rfc3339(crate::clock::from_unix_nanos(
                u64::try_from(destroy_after).unwrap_or(0).saturating_mul(1_000_000_000),
            )),
        })
    }

    /// Phase one of a rotation: commit the intent (`pending_version`), create KEK
    /// version n+1 in the HSM (a key already under that label is adopted only when our
    /// own intent says it is ours), make it current and retire version n (window set
    /// when the rewrap completes).
    async fn start_next_version(
        &self,
        tenant: &TenantId,
        record: &mut TenantRecord,
        event: PendingEvent,
    ) -> Result<(), RotationError> {
        let scope = system_scope();
        let previous = record.key_version;
        let next = previous + 1;
        let event = event.detail("key_version", next).detail("previous_version", previous);
        if record.pending_version == Some(next) {
            // Prepared earlier and interrupted: a key under that label is ours.
            self.store.record(event.detail("phase", "resume")).await?;
        } else {
            // The label must be free now; a key already there is not ours (another
            // appliance on the token) and is never adopted.
            let label = strongroom_hsm::KekRef {
                tenant_id: tenant.as_str(),
                version: next,
            }
            .label();
            if self.keys.kek_exists(tenant, next).await? {
                return Err(RotationError::ForeignKey(label));
            }
            record.pending_version = Some(next);
            self.save(record.clone(), event.detail("phase", "prepared")).await?;
        }
        match self.keys.create_kek(&scope, tenant, next).await {
            Ok(()) => {}
            Err(KeyError::Hsm(strongroom_hsm::HsmError::KeyExists(_))) => {
                tracing::warn!(%tenant, version = next, "using the KEK created before an interruption");
            }
            Err(e) => return Err(e.into()),
        }
        record.key_version = next;
        record.pending_version = None;
        // Erasures from now on need another rotation; earlier ones are covered by
        // this one (every DEK is rewrapped under `next`, older versions retire).
        record.rotation_required = false;
        record.rotation_started_at = Some(rfc3339(self.clock.now()));
        record.retired.push(RetiredKek {
            version: previous,
            destroy_after: i64::MAX,
        });
        let started = system_event("started", tenant)
            .detail("key_version", next)
            .detail("previous_version", previous);
        self.save(record.clone(), started).await?;
        Ok(())
    }

    /// Rewrap every DEK of the tenant not yet under `version`, in batches. Entities
    /// erased or rewritten concurrently are skipped (compare-and-swap).
    async fn rewrap_all(&self, tenant: &TenantId, version: u32) -> Result<u64, RotationError> {
        let scope = system_tenant_scope(tenant);
        let pending: Vec<(EntityId, WrappedDek)> = self
            .store
            .read()?
            .tenant_deks(&scope)?
            .into_iter()
            .filter(|(_, w)| w.kek_version != version)
            .collect();
        let mut done = 0u64;
        for chunk in pending.chunks(REWRAP_BATCH) {
            let mut batch = Vec::with_capacity(chunk.len());
            for (entity, old) in chunk {
                let new = self.keys.rewrap(&scope, entity, old, version).await?;
                batch.push((entity.clone(), old.clone(), new));
            }
            let s = scope.clone();
            let event = system_event("rewrap", tenant).detail("batch", batch.len());
            let replaced = self
                .store
                .commit(event, move |txn, ev| {
                    let mut n = 0u64;
                    for (entity, old, new) in &batch {
                        if txn.rewrap_dek(&s, entity, old, new)? {
                            n += 1;
                        }
                    }
                    ev.details.insert("rewrapped".into(), n.into());
                    Ok::<u64, ChangeError>(n)
                })
                .await?;
            done += replaced.value;
        }
        Ok(done)
    }

    /// Finish rotations interrupted by a crash and run those erasures asked for but that
    /// never ran (called at start and periodically).
    pub async fn resume_all(&self) -> Result<(), RotationError> {
        let tenants = self.store.read()?.tenants()?;
        let due = tenants
            .into_iter()
            .filter(|t| t.rotation_started_at.is_some() || t.pending_version.is_some() || t.rotation_required);
        for t in due {
            tracing::warn!(tenant = %t.tenant_id, "running an outstanding key rotation");
            match self
                .rotate_if_required(&t.tenant_id, system_event("resume", &t.tenant_id))
                .await
            {
                // Destroyed (governance) since the listing.
                Ok(_) | Err(RotationError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Destroy retired KEK versions whose window has passed and which no DEK uses.
    /// Returns how many were destroyed.
    pub async fn reap(&self) -> Result<u64, RotationError> {
        let now = self.clock.now().unix_timestamp();
        let mut destroyed = 0;
        let tenants = self.store.read()?.tenants()?;
        for t in tenants {
            if !t.retired.iter().any(|r| r.destroy_after <= now) {
                continue;
            }
            let lock = self.lock_for(&t.tenant_id);
            let _serial = lock.lock().await;
            let mut record = match self.tenant(&t.tenant_id) {
                Ok(r) => r,
                // Destroyed (governance) since the listing.
                Err(RotationError::NotFound) => continue,
                Err(e) => return Err(e),
            };
            let deks = self.store.read()?.tenant_deks(&system_tenant_scope(&t.tenant_id))?;
            let in_use: Vec<u32> = deks.into_iter().map(|(_, w)| w.kek_version).collect();
            let due: Vec<u32> = record
                .retired
                .iter()
                .filter(|r| r.destroy_after <= now && r.version < record.key_version && !in_use.contains(&r.version))
                .map(|r| r.version)
                .collect();
            for version in due {
                // Destroy first, then record: a crash in between leaves a retired entry
                // whose key is already gone, and destroying again is a no-op.
                self.keys.destroy_kek(&system_scope(), &t.tenant_id, version).await?;
                record.retired.retain(|r| r.version != version);
                let event = system_event("destroyed", &t.tenant_id).detail("destroyed_version", version);
                self.save(record.clone(), event).await?;
                tracing::info!(tenant = %t.tenant_id, version, "retired KEK destroyed in the HSM");
                destroyed += 1;
            }
        }
        Ok(destroyed)
    }
}
