//! The key service: tenant KEKs in the HSM, DEK creation, unwrap-through-cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use strongroom_hsm::{HsmError, HsmWorker, KekRef, KeyBackend};

use super::cache::DekCache;
use super::data_key::{dek_aad, DataKey, DekId, WrappedDek};
use crate::auth::{OperatorScope, TenantScope};
use crate::domain::{EntityId, TenantId};
use crate::random::Random;
use crate::telemetry::Metrics;

/// Key-service failures.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The HSM refused or is unreachable.
    #[error("HSM: {0}")]
    Hsm(#[from] HsmError),
    /// The unwrapped key has the wrong length (tampered store).
    #[error("unwrapped data key is malformed")]
    Malformed,
}

/// Tier-1 and tier-2 key operations for the rest of the appliance.
#[derive(Clone)]
pub struct KeyService {
    hsm: HsmWorker<dyn KeyBackend>,
    cache: Arc<DekCache>,
    metrics: Arc<Metrics>,
    random: Random,
}

impl KeyService {
    /// A service over an HSM worker; data keys are drawn from `random`.
    pub fn new(
        hsm: HsmWorker<dyn KeyBackend>,
        capacity: usize,
        ttl: Duration,
        metrics: Arc<Metrics>,
        random: Random,
    ) -> Self {
        Self {
            hsm,
            cache: Arc::new(DekCache::new(capacity, ttl)),
            metrics,
            random,
        }
    }

    /// The worker, for system operations outside this service (checkpoint signing).
    pub fn hsm(&self) -> &HsmWorker<dyn KeyBackend> {
        &self.hsm
    }

    async fn call<R, F>(&self, op: &'static str, f: F) -> Result<R, KeyError>
    where
        R: Send + 'static,
        F: FnOnce(&mut (dyn KeyBackend + 'static)) -> Result<R, HsmError> + Send + 'static,
    {
        let started = Instant::now();
        let result = self.hsm.call(f).await.and_then(|r| r);
        self.metrics
            .hsm_latency
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .hsm_calls
            .with_label_values(&[op, if result.is_ok() { "ok" } else { "error" }])
            .inc();
        Ok(result?)
    }

    /// Generate a tenant's KEK version in the HSM.
    pub async fn create_kek(&self, _scope: &OperatorScope, tenant: &TenantId, version: u32) -> Result<(), KeyError> {
        let t = tenant.as_str().to_owned();
        self.call("create_kek", move |b| {
            b.create_tenant_key(KekRef { tenant_id: &t, version })
        })
        .await
    }

    /// Whether the HSM holds this KEK version.
    pub async fn kek_exists(&self, tenant: &TenantId, version: u32) -> Result<bool, KeyError> {
        let t = tenant.as_str().to_owned();
        self.call("kek_exists", move |b| {
            b.tenant_key_exists(KekRef { tenant_id: &t, version })
        })
        .await
    }

    /// Destroy a tenant's KEK version in the HSM (undo of a failed creation, or the end
    /// of a retention window).
    pub async fn destroy_kek(&self, _scope: &OperatorScope, tenant: &TenantId, version: u32) -> Result<(), KeyError> {
        let t = tenant.as_str().to_owned();
        self.cache.evict_tenant(tenant);
        self.call("destroy_kek", move |b| {
            b.destroy_tenant_key(KekRef { tenant_id: &t, version })
        })
        .await
    }

    /// A fresh DEK for an entity of the caller's tenant, and its wrapped form.
    pub async fn new_data_key(
        &self,
        scope: &TenantScope,
        entity: &EntityId,
        kek_version: u32,
    ) -> Result<(Arc<DataKey>, WrappedDek), KeyError> {
        let key = Arc::new(DataKey::generate(&self.random));
        let aad = dek_aad(scope.tenant(), entity, kek_version);
        let t = scope.tenant().as_str().to_owned();
        let k = key.clone();
        let wrapped = self
            .call("wrap", move |b| {
                b.wrap(
                    KekRef {
                        tenant_id: &t,
                        version: kek_version,
                    },
                    k.material(),
                    &aad,
                )
            })
            .await?;
        Ok((
            key.clone(),
            WrappedDek {
                dek_id: key.id(),
                kek_version,
                wrapped,
            },
        ))
    }

    /// The cached DEK of an entity, if it is of generation `want`.
    pub fn cached(&self, scope: &TenantScope, entity: &EntityId, want: Option<DekId>) -> Option<Arc<DataKey>> {
        let hit = self.cache.get(scope.tenant(), entity, want);
        if hit.is_some() {
            self.metrics.dek_cache_hits.inc();
        }
        hit
    }

    /// Remember a DEK (after its wrapped form is durable).
    pub fn remember(&self, scope: &TenantScope, entity: &EntityId, key: Arc<DataKey>) {
        self.cache.insert(scope.tenant(), entity, key);
    }

    /// Forget an entity's DEK (erasure).
    pub fn forget(&self, scope: &TenantScope, entity: &EntityId) {
        self.cache.evict_entity(scope.tenant(), entity);
    }

    /// Unwrap an entity's DEK, through the cache.
    pub async fn data_key(
        &self,
        scope: &TenantScope,
        entity: &EntityId,
        wrapped: &WrappedDek,
    ) -> Result<Arc<DataKey>, KeyError> {
        if let Some(k) = self.cached(scope, entity, Some(wrapped.dek_id)) {
            return Ok(k);
        }
        self.metrics.dek_cache_misses.inc();
        let aad = dek_aad(scope.tenant(), entity, wrapped.kek_version);
        let t = scope.tenant().as_str().to_owned();
        let (version, blob) = (wrapped.kek_version, wrapped.wrapped.clone());
        let material = self
            .call("unwrap", move |b| {
                b.unwrap(KekRef { tenant_id: &t, version }, &blob, &aad)
            })
            .await?;
        let key = Arc::new(DataKey::from_material(wrapped.dek_id, &material).ok_or(KeyError::Malformed)?);
        self.cache.insert(scope.tenant(), entity, key.clone());
        Ok(key)
    }

    /// Rewrap an entity's DEK under another KEK version of its tenant, inside the HSM
    /// worker (the key material never leaves that thread).
    pub async fn rewrap(
        &self,
        scope: &TenantScope,
        entity: &EntityId,
        old: &WrappedDek,
        new_version: u32,
    ) -> Result<WrappedDek, KeyError> {
        let t = scope.tenant().as_str().to_owned();
        let old_aad = dek_aad(scope.tenant(), entity, old.kek_version);
        let new_aad = dek_aad(scope.tenant(), entity, new_version);
        let (old_version, blob) = (old.kek_version, old.wrapped.clone());
        let wrapped = self
            .call("rewrap", move |b| {
                let material = b.unwrap(
                    KekRef {
                        tenant_id: &t,
                        version: old_version,
                    },
                    &blob,
                    &old_aad,
                )?;
                b.wrap(
                    KekRef {
                        tenant_id: &t,
                        version: new_version,
                    },
                    &material,
                    &new_aad,
                )
            })
            .await?;
        Ok(WrappedDek {
            dek_id: old.dek_id,
            kek_version: new_version,
            wrapped,
        })
    }

    /// HSM liveness for `/readyz`.
    pub async fn ping(&self) -> bool {
        self.call("ping", |b| b.ping()).await.is_ok()
    }
}
