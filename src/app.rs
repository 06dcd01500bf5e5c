//! The composition root: every service of the appliance is built here, once, from the
//! opened hardware, store and configuration, with the clock and randomness injected.
//!
//! Invariant: nothing else constructs a service that `AppState` holds, and nothing
//! replaces one after construction; a service that needs another gets the same instance
//! (one rotation, one integrity, one tenant-admin lock shared by tenants and governance).

use std::sync::Arc;

use crate::api::AppState;
use crate::audit::integrity::Integrity;
use crate::clock::Clock;
use crate::erasure::ErasureService;
use crate::governance::{Governance, Quorum};
use crate::keys::rotation::Rotation;
use crate::keys::KeyService;
use crate::privacy::{PrivacyPolicy, PrivacyService};
use crate::random::Random;
use crate::records::RecordService;
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::tenants::TenantService;
use crate::tokens::TokenService;

/// What the services are built from: opened components and parsed configuration.
pub struct Parts {
    /// The opened store (its writer running).
    pub store: Store,
    /// The key service over the HSM worker.
    pub keys: KeyService,
    /// Checkpoints, verification, alarm.
    pub integrity: Arc<Integrity>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Time.
    pub clock: Clock,
    /// Randomness.
    pub random: Random,
    /// Request body limit.
    pub max_body: usize,
    /// Retired KEK retention.
    pub kek_retention_secs: i64,
    /// `[privacy]`, parsed.
    pub privacy_policy: PrivacyPolicy,
    /// `[governance]`, parsed.
    pub quorum: Option<Quorum>,
}

/// Build every service once.
pub fn compose(p: Parts) -> AppState {
    let Parts {
        store,
        keys,
        integrity,
        metrics,
        clock,
        random,
        max_body,
        kek_retention_secs,
        privacy_policy,
        quorum,
    } = p;
    let records = RecordService::new(store.clone(), keys.clone(), clock.clone(), random);
    let rotation = Rotation::new(store.clone(), keys.clone(), clock.clone(), kek_retention_secs);
    let erasure = ErasureService::new(
        store.clone(),
        keys.clone(),
        rotation.clone(),
        integrity.clone(),
        clock.clone(),
    );
    let privacy = PrivacyService::new(store.clone(), keys.clone(), random, &metrics).with_policy(privacy_policy);
    let tenant_admin: Arc<tokio::sync::Mutex<()>> = Arc::default();
    let governance = Governance::new(
        store.clone(),
        keys.clone(),
        integrity.clone(),
        rotation.clone(),
        clock.clone(),
        random,
        tenant_admin.clone(),
    )
    .with_config_quorum(quorum);
    let tenants = TenantService::new(
        store.clone(),
        keys.clone(),
        rotation.clone(),
        integrity.clone(),
        clock.clone(),
        tenant_admin.clone(),
    );
    let tokens = TokenService::new(store.clone(), clock.clone(), random, integrity.clone());
    AppState {
        tokens,
        store,
        keys,
        records,
        metrics,
        clock,
        max_body,
        integrity,
        rotation,
        erasure,
        privacy,
        governance,
        tenants,
        random,
    }
}
