//! Tenant lifecycle entry points: create (KEK in the HSM, then the tenant record with its
//! `tenant_create` event), list, rotate. Destruction is a governed operation
//! (`governance::execute`), rotation itself lives in `keys::rotation`.
//!
//! Invariants ("undo half-finished key work"): the KEK is generated first and the tenant
//! committed second; if the commit fails the KEK just made is destroyed. A key already
//! under the label is never destroyed or adopted (it may belong to another appliance
//! sharing the token, or be an orphan of an interrupted creation). Creations and
//! destructions are serialised by one lock shared with governance; the id of a destroyed
//! tenant is never reused.

use std::sync::Arc;

use crate::audit::integrity::Integrity;
use crate::audit::PendingEvent;
use crate::auth::{Authorized, OperatorScope};
use crate::clock::{rfc3339, Clock};
use crate::domain::TenantId;
use crate::keys::rotation::{Rotation, RotationError, RotationReport};
use crate::keys::{KeyError, KeyService};
use crate::store::{ChangeError, CommitError, Store, StoreError, TenantRecord};

/// Why a tenant operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// The tenant exists already.
    #[error("tenant {0} already exists")]
    Exists(TenantId),
    /// The id belonged to a destroyed tenant.
    #[error("tenant id {0} belonged to a destroyed tenant; tenant ids are not reused")]
    Destroyed(TenantId),
    /// The HSM already holds a key under the tenant's KEK label.
    #[error("the HSM already holds a key labelled {0} (another appliance on this token, or an interrupted creation); an operator must inspect and remove it")]
    KeyExists(String),
    /// KEK creation failed in the HSM.
    #[error("KEK creation failed: {0}")]
    Hsm(KeyError),
    /// The store refused the tenant (its `failed` event is durable).
    #[error("{0}")]
    Refused(String),
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The commit failed.
    #[error(transparent)]
    Commit(CommitError),
}

/// The tenants service.
#[derive(Clone)]
pub struct TenantService {
    store: Store,
    keys: KeyService,
    rotation: Rotation,
    integrity: Arc<Integrity>,
    clock: Clock,
    /// Serialises tenant creation and (governed) destruction.
    serial: Arc<tokio::sync::Mutex<()>>,
}

impl TenantService {
    /// A service over its collaborators; `serial` is shared with governance.
    pub fn new(
        store: Store,
        keys: KeyService,
        rotation: Rotation,
        integrity: Arc<Integrity>,
        clock: Clock,
        serial: Arc<tokio::sync::Mutex<()>>,
    ) -> Self {
        Self {
            store,
            keys,
            rotation,
            integrity,
            clock,
            serial,
        }
    }

    /// Create `tenant` with KEK version 1; `event` is committed with the tenant record.
    pub async fn create(
        &self,
        auth: &Authorized<OperatorScope>,
        tenant: TenantId,
        event: PendingEvent,
    ) -> Result<TenantRecord, TenantError> {
        let _serial = self.serial.lock().await;
        let (exists, destroyed) = {
            let read = self.store.read()?;
            (read.tenant(&tenant)?.is_some(), read.tenant_destroyed(&tenant)?)
        };
        if exists {
            return Err(TenantError::Exists(tenant));
        }
        if destroyed {
            // Checked before any HSM key is made; `insert_tenant` checks again.
            return Err(TenantError::Destroyed(tenant));
        }
        let version = 1;
        let scope = auth.scope();
        match self.keys.create_kek(scope, &tenant, version).await {
            Ok(()) => {}
            Err(KeyError::Hsm(strongroom_hsm::HsmError::KeyExists(label))) => {
                tracing::error!(%tenant, %label, "the HSM already holds this tenant's KEK label");
                return Err(TenantError::KeyExists(label));
            }
            Err(e) => return Err(TenantError::Hsm(e)),
        }
        let record = TenantRecord {
            tenant_id: tenant.clone(),
            key_version: version,
            created_at: rfc3339(self.clock.now()),
            pending_version: None,
            rotation_required: false,
            rotation_started_at: None,
            retired: Vec::new(),
        };
        let (rec, op_scope) = (record.clone(), scope.clone());
        let event = event.tenant(Some(tenant.clone())).detail("key_version", version);
        match self
            .store
            .commit(event, move |txn, _| txn.insert_tenant(&op_scope, &rec))
            .await
        {
            Ok(_) => Ok(record),
            Err(e) => {
                if let Err(undo) = self.keys.destroy_kek(scope, &tenant, version).await {
                    tracing::error!(error = %undo, %tenant, "could not destroy the KEK of a failed tenant creation");
                }
                Err(match e {
                    CommitError::Refused(ChangeError::Conflict(m), _) => TenantError::Refused(m),
                    e => TenantError::Commit(e),
                })
            }
        }
    }

    /// Every tenant.
    pub fn list(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.store.read()?.tenants()
    }

    /// Rotate the tenant's KEK (synchronous: every DEK rewrapped), then seal soon: a
    /// rotation lost to a restored backup would revive the old key's reach.
    pub async fn rotate(&self, tenant: &TenantId, event: PendingEvent) -> Result<RotationReport, RotationError> {
        let report = self.rotation.rotate(tenant, event).await?;
        self.integrity.critical_event();
        Ok(report)
    }
}
