//! Differential privacy on aggregate queries (`POST /v1/query`, SPEC §6): the only way to
//! aggregate a tenant's records.
//!
//! A query goes: validate ([`request`]) → plan ε and noise scales from public parameters
//! ([`mechanism`]) → **charge the budget** in the write transaction that also appends the
//! `data_query` event ([`budget`]) → only then read and decrypt the tenant's records and
//! aggregate them with per-entity truncation and clamping ([`aggregate`]) → add discrete
//! Laplace noise from an OS-seeded CSPRNG ([`sampler`]) → answer with a data-independent
//! 95 % interval ([`report`]).
//!
//! Invariants:
//! - the privacy unit is the entity: neighbouring datasets differ by all records of one
//!   entity, whose contribution is bounded before noise (see [`aggregate`]);
//! - no record is read before the charge is durable, and an exhausted budget reads none
//!   ([`PrivacyService::decrypted`] counts every record decrypted here, exported as
//!   `strongroom_dp_records_decrypted_total`);
//! - all noise arithmetic is on integers and exact fractions; floats appear only in
//!   [`report`] (post-processing).

pub mod aggregate;
pub mod budget;
pub mod epsilon;
pub mod mechanism;
pub mod report;
pub mod request;
pub mod sampler;
pub mod tables;

#[cfg(test)]
mod bench_tests;
#[cfg(test)]
mod privacy_loss_tests;
#[cfg(test)]
mod sampler_tests;
#[cfg(test)]
mod sensitivity_tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::audit::PendingEvent;
use crate::auth::{Authorized, TenantScope};
use crate::domain::EntityId;
use crate::keys::{record_aad, DataKey, KeyError, KeyService};
use crate::random::Random;
use crate::store::{CommitError, Store, StoreError};
use crate::telemetry::Metrics;
use aggregate::{Accumulator, Query, Values};
use budget::{Charge, Claim};
pub use epsilon::Epsilon;
pub use request::{PrivacyPolicy, QueryRequest};

/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Why a private query was not answered.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// Invalid request (400 `invalid_request`); nothing charged or recorded yet.
    #[error("{0}")]
    Invalid(String),
    /// ε over the per-query cap (400 `epsilon_over_cap`); nothing charged or recorded yet.
    #[error("{0}")]
    OverCap(String),
    /// Not enough budget (403 `privacy_budget_exhausted`); the denial is recorded.
    #[error("privacy budget exhausted: epsilon {requested} requested, {remaining} remaining")]
    Exhausted {
        /// ε asked for.
        requested: Epsilon,
        /// ε left.
        remaining: Epsilon,
    },
    /// Idempotency-Key conflict (409 `conflict`); recorded.
    #[error("{0}")]
    Conflict(&'static str),
    /// Key hardware, after the charge.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A stored record failed authentication, after the charge.
    #[error("a stored record failed authentication")]
    Tampered,
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Commit; `Refused` means the event (outcome `failed`) is recorded.
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// Anything else (sampler overflow, join failure).
    #[error("{0}")]
    Internal(String),
}

impl PrivacyError {
    /// Whether this request's audit event is already durable (so the API must not
    /// record a second one for the refusal).
    pub fn recorded(&self) -> bool {
        matches!(
            self,
            PrivacyError::Exhausted { .. } | PrivacyError::Conflict(_) | PrivacyError::Commit(CommitError::Refused(..))
        )
    }
}

/// The private-query service.
#[derive(Clone)]
pub struct PrivacyService {
    store: Store,
    keys: KeyService,
    policy: PrivacyPolicy,
    /// Seeds the noise stream of each answer.
    random: Random,
    /// Records decrypted by private queries since start.
    pub decrypted: Arc<AtomicU64>,
    metric: Option<prometheus::IntCounter>,
}

/// Check an `Idempotency-Key` header value: 1 to 255 visible ASCII characters.
pub fn parse_idempotency_key(raw: &[u8]) -> Result<String, PrivacyError> {
    if raw.is_empty() || raw.len() > MAX_IDEMPOTENCY_KEY || !raw.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(PrivacyError::Invalid(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        )));
    }
    Ok(String::from_utf8_lossy(raw).into_owned())
}

impl PrivacyService {
    /// A service with the default policy drawing noise seeds from `random`; registers
    /// its metric.
    pub fn new(store: Store, keys: KeyService, random: Random, metrics: &Metrics) -> Self {
        let metric = prometheus::IntCounter::new(
            "dp_records_decrypted_total",
            "Records decrypted by differentially private queries",
        )
        .ok()
        .filter(|c| match metrics.register(Box::new(c.clone())) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot register dp_records_decrypted_total");
                false
            }
        });
        Self {
            store,
            keys,
            policy: PrivacyPolicy::default(),
            random,
            decrypted: Arc::default(),
            metric,
        }
    }

    /// Use `policy` (from `[privacy]`).
    pub fn with_policy(mut self, policy: PrivacyPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The policy in force.
    pub fn policy(&self) -> PrivacyPolicy {
        self.policy
    }

    /// Answer a private query: the exact response body (a replay returns the stored
    /// bytes). `event` is the request's `data_query` event; it is committed with the
    /// charge, before any record is read.
    pub async fn query(
        &self,
        auth: &Authorized<TenantScope>,
        request: QueryRequest,
        idempotency_key: Option<String>,
        event: PendingEvent,
    ) -> Result<Vec<u8>, PrivacyError> {
        let plan = request.plan(&self.policy)?;
        let claim = match idempotency_key {
            Some(key) => {
                let canonical = serde_json::to_vec(&request).map_err(|e| PrivacyError::Internal(e.to_string()))?;
                Some(Claim {
                    key,
                    fingerprint: hex::encode(Sha256::digest(&canonical)),
                })
            }
            None => None,
        };
        let scope = auth.scope().clone();
        let event = event.detail("aggregate", plan.query.kind.name());
        let (epsilon, total) = (plan.epsilon, self.policy.tenant_budget);
        let (charge_scope, charge_claim) = (scope.clone(), claim.clone());
        let charged = self
            .store
            .commit(event.clone(), move |txn, ev| {
                budget::charge(txn, ev, &charge_scope, epsilon, total, charge_claim.as_ref())
            })
            .await?;
        let remaining = match charged.value {
            Charge::Charged { remaining } => remaining,
            Charge::Exhausted { remaining } => {
                return Err(PrivacyError::Exhausted {
                    requested: epsilon,
                    remaining,
                })
            }
            Charge::Replay(bytes) => return Ok(bytes),
            Charge::Conflict(why) => return Err(PrivacyError::Conflict(why)),
        };

        // The charge is durable: from here on data may be read.
        let exact = self.evaluate(&scope, &plan.query).await?;
        let mut rng = StdRng::from_rng(self.random.rng()).map_err(|e| PrivacyError::Internal(e.to_string()))?;
        let noisy = plan
            .release(&exact, &mut rng)
            .map_err(|e| PrivacyError::Internal(e.to_string()))?;
        let body = serde_json::to_vec(&report::answer(&plan, &noisy, remaining))
            .map_err(|e| PrivacyError::Internal(e.to_string()))?;

        if let Some(claim) = claim {
            let stored = event
                .detail("epsilon_charged", Epsilon::ZERO.to_string())
                .detail("idempotency", "answer_stored");
            let answer = body.clone();
            let result = self
                .store
                .commit(stored, move |txn, _| budget::store_answer(txn, &scope, &claim, &answer))
                .await;
            if let Err(e) = result {
                // The answer is still released: its charge is durable, and a retry with
                // this key is refused rather than answered with fresh noise.
                tracing::error!(error = %e, "cannot store the answer of an idempotent query");
            }
        }
        Ok(body)
    }

    /// The exact aggregate over the tenant's records (data read starts here).
    async fn evaluate(&self, scope: &TenantScope, query: &Query) -> Result<Values, PrivacyError> {
        let mut keys = HashMap::new();
        if query.needs_data() {
            let deks = self.store.read()?.tenant_deks(scope)?;
            for (entity, wrapped) in deks {
                let key = self.keys.data_key(scope, &entity, &wrapped).await?;
                keys.insert(entity, key);
            }
        }
        let (store, scope, query) = (self.store.clone(), scope.clone(), query.clone());
        let (decrypted, metric) = (self.decrypted.clone(), self.metric.clone());
        tokio::task::spawn_blocking(move || {
            let mut opened = 0u64;
            let result = scan(&store, &scope, &keys, &query, &mut opened);
            decrypted.fetch_add(opened, Ordering::Relaxed);
            if let Some(m) = metric {
                m.inc_by(opened);
            }
            result
        })
        .await
        .map_err(|e| PrivacyError::Internal(format!("query scan: {e}")))?
    }
}

/// Walk the tenant's records once through an [`Accumulator`], decrypting only the
/// records it asks for. Records of an entity whose key changed since `keys` was read
/// (erased or re-created meanwhile) are left out, as if the entity were absent.
pub fn scan(
    store: &Store,
    scope: &TenantScope,
    keys: &HashMap<EntityId, Arc<DataKey>>,
    query: &Query,
    opened: &mut u64,
) -> Result<Values, PrivacyError> {
    let txn = store.read()?;
    let mut acc = Accumulator::new(query);
    let needs_data = query.needs_data();
    txn.scan_tenant_records(scope, |r| {
        if !acc.wants(r.entity.as_str(), r.ts_nanos) {
            return Ok(());
        }
        if !needs_data {
            acc.push(None);
            return Ok(());
        }
        let stored = r.load()?;
        let Some(key) = keys.get(r.entity).filter(|k| k.id() == stored.sealed.dek_id()) else {
            return Ok(());
        };
        let aad = record_aad(
            scope.tenant(),
            r.entity,
            &stored.id,
            stored.ts_nanos,
            stored.sealed.dek_id(),
        );
        let plain = key.open(&stored.sealed, &aad).map_err(|_| PrivacyError::Tampered)?;
        *opened += 1;
        let data: Value = serde_json::from_slice(plain.as_bytes()).map_err(|_| PrivacyError::Tampered)?;
        acc.push(Some(&data));
        Ok::<(), PrivacyError>(())
    })?;
    drop(txn);
    Ok(acc.finish())
}
