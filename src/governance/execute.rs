//! Running an approved proposal's operation: `destroy_tenant`, `set_quorum`,
//! `raise_budget`, `rotate_signing_key`, `acknowledge_alarm`; and resuming at start.
//!
//! Invariant: each operation's effect, the proposal's final status and its
//! `proposal_execute` event share one transaction ([`Governance::finish`]); only a
//! proposal still `approved` inside that transaction runs, so it runs at most once.

use super::error::GovError;
use super::operation::{Operation, RaiseBudget};
use super::proposal::{PendingKeks, Proposal, Status};
use super::quorum::Quorum;
use super::service::Governance;
use super::tables;
use crate::audit::{Action, Outcome, PendingEvent};
use crate::auth::system_scope;
use crate::domain::TenantId;
use crate::privacy::epsilon::MAX_EPSILON_MICROS;
use crate::privacy::Epsilon;
use crate::store::{ChangeError, DestroyCounts, StoreError, WriteTxn};

/// Result of `rotate_signing_key` in this version.
pub const ROTATE_SIGNING_KEY_UNSUPPORTED: &str = "rotate_signing_key is not supported in this version: the audit checkpoint signing key stays the one created at init";

fn succeed(p: &mut Proposal, result: String) -> Result<(), ChangeError> {
    p.status = Status::Executed;
    p.result = Some(result);
    Ok(())
}

fn fail(p: &mut Proposal, result: String) -> Result<(), ChangeError> {
    p.status = Status::Failed;
    p.result = Some(result);
    Ok(())
}

fn set_quorum(txn: &mut WriteTxn<'_, '_>, p: &mut Proposal, q: &Quorum) -> Result<(), ChangeError> {
    tables::put_quorum(txn, q)?;
    let done = format!("quorum is now {}; proposals still pending are superseded", q.describe());
    succeed(p, done)
}

fn raise_budget(txn: &mut WriteTxn<'_, '_>, p: &mut Proposal, r: &RaiseBudget) -> Result<(), ChangeError> {
    if !tables::tenant_exists_in(txn, &r.tenant_id)? {
        return fail(p, format!("tenant {} no longer exists", r.tenant_id));
    }
    let extra = tables::budget_extra(txn, &r.tenant_id)?;
    let Some(after) = extra
        .checked_add(r.epsilon.micros())
        .filter(|a| *a <= MAX_EPSILON_MICROS)
    else {
        return fail(p, "the raised budget would exceed the largest amount accepted".into());
    };
    tables::set_budget_extra(txn, &r.tenant_id, after)?;
    let done = format!(
        "privacy budget of tenant {} raised by {}; governed extra now {} on top of privacy.tenant_epsilon_budget",
        r.tenant_id,
        r.epsilon,
        Epsilon::from_micros(after)
    );
    succeed(p, done)
}

fn destroy_data(
    txn: &mut WriteTxn<'_, '_>,
    ev: &mut PendingEvent,
    p: &mut Proposal,
    t: &TenantId,
    now: i64,
) -> Result<(), ChangeError> {
    let counts: DestroyCounts = match tables::destroy_tenant(txn, t, now) {
        Ok(c) => c,
        Err(ChangeError::NotFound(_)) => return fail(p, format!("tenant {t} no longer exists")),
        Err(e) => return Err(e),
    };
    let top = counts
        .tenant
        .key_version
        .max(counts.tenant.pending_version.unwrap_or(0));
    let versions: Vec<u32> = (1..=top).collect();
    for (k, v) in [
        ("records_deleted", counts.records),
        ("index_entries_deleted", counts.index_entries),
        ("deks_deleted", counts.deks),
        ("tombstones_deleted", counts.tombstones),
        ("ledger_entries_deleted", counts.ledger_entries),
        ("tokens_revoked", counts.tokens_revoked),
    ] {
        ev.details.insert(k.into(), v.into());
    }
    p.pending_keks = Some(PendingKeks {
        tenant_id: t.clone(),
        versions: versions.clone(),
    });
    succeed(
        p,
        format!(
            "tenant {t} destroyed: {} tokens revoked, {} records, {} data keys and {} tombstones deleted; KEK versions {versions:?} destroyed in the HSM",
            counts.tokens_revoked, counts.records, counts.deks, counts.tombstones
        ),
    )
}

/// Record the outcome in the event: `status`, and `result` when there is one.
fn describe_outcome(ev: &mut PendingEvent, p: &Proposal) {
    let failed = p.status == Status::Failed;
    if failed {
        ev.outcome = Outcome::Failed;
    }
    ev.details
        .insert("status".into(), if failed { "failed" } else { "executed" }.into());
    if let Some(r) = &p.result {
        ev.details.insert("result".into(), r.clone().into());
    }
}

impl Governance {
    fn execute_event(&self, p: &Proposal) -> PendingEvent {
        let mut ev = PendingEvent::new(
            Action::ProposalExecute,
            "system:governance",
            format!("proposal:{}", p.proposal_id),
            p.proposal_id.clone(),
        )
        .detail("operation", p.op.name())
        .detail("approvers", p.approvers());
        if let Some(t) = p.op.tenant() {
            ev = ev.detail("target_tenant", t.as_str());
        }
        ev
    }

    /// Finish `p` (status `approved`): run its operation and record the outcome. Never
    /// fails: a failure is the proposal's `failed` status with its `result`, or (storage
    /// trouble) the proposal stays `approved` and is retried at the next start.
    pub async fn execute(&self, p: Proposal) -> Proposal {
        let id = p.proposal_id.clone();
        match self.run(p).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(proposal = %id, error = %e, "executing a governance proposal failed; it is retried at the next start");
                self.get(&id)
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| Proposal::unrecorded(&id))
            }
        }
    }

    /// Commit the outcome of an operation whose effect is `effect` (run in the same
    /// transaction as the status change and the `proposal_execute` event).
    async fn finish<F>(&self, p: &Proposal, effect: F) -> Result<Proposal, GovError>
    where
        F: FnOnce(&mut WriteTxn<'_, '_>, &mut PendingEvent, &mut Proposal) -> Result<(), ChangeError> + Send + 'static,
    {
        let id = p.proposal_id.clone();
        let c = self
            .store
            .commit(self.execute_event(p), move |txn, ev| {
                let mut p = tables::load(txn, &id)?;
                if p.status != Status::Approved {
                    return Ok(p);
                }
                effect(txn, ev, &mut p)?;
                describe_outcome(ev, &p);
                tables::save(txn, &p)?;
                Ok(p)
            })
            .await?;
        Ok(c.value)
    }

    async fn run(&self, p: Proposal) -> Result<Proposal, GovError> {
        if p.status != Status::Approved {
            return Ok(p);
        }
        if let (Some(alarm), false) = (
            self.integrity.alarm().reason(),
            matches!(p.op, Operation::AcknowledgeAlarm(_)),
        ) {
            let why = format!("not executed: the integrity alarm is raised ({alarm})");
            return self.finish(&p, move |_, _, p| fail(p, why)).await;
        }
        match p.op.clone() {
            Operation::SetQuorum(q) => self.finish(&p, move |txn, _, p| set_quorum(txn, p, &q)).await,
            Operation::RaiseBudget(r) => self.finish(&p, move |txn, _, p| raise_budget(txn, p, &r)).await,
            Operation::RotateSigningKey(_) => {
                self.finish(&p, |_, _, p| fail(p, ROTATE_SIGNING_KEY_UNSUPPORTED.to_owned()))
                    .await
            }
            Operation::AcknowledgeAlarm(a) => {
                let outcome = self.integrity.acknowledge_rollback(&a.reason, &p.proposal_id).await;
                self.finish(&p, move |_, _, p| match outcome {
                    Ok(r) => succeed(p, r),
                    Err(why) => fail(p, why.to_string()),
                })
                .await
            }
            Operation::DestroyTenant(d) => self.destroy_tenant(p, d.tenant_id).await,
        }
    }

    async fn destroy_tenant(&self, p: Proposal, tenant: TenantId) -> Result<Proposal, GovError> {
        // No tenant creation or rotation of this tenant meanwhile.
        let _admin = self.tenant_admin.lock().await;
        let lock = self.rotation.tenant_lock(&tenant);
        let _rotation = lock.lock().await;
        let now = self.now().unix_timestamp();
        let done = self
            .finish(&p, move |txn, ev, p| destroy_data(txn, ev, p, &tenant, now))
            .await?;
        if done.pending_keks.is_some() {
            crate::audit::integrity::inject_fault("after_tenant_destroy_commit");
        }
        self.destroy_keks(done).await
    }

    /// Destroy the KEKs a committed `destroy_tenant` left to destroy, then record
    /// `tenant_destroy` and clear them from the proposal.
    async fn destroy_keks(&self, p: Proposal) -> Result<Proposal, GovError> {
        let Some(pending) = p.pending_keks.clone() else {
            return Ok(p);
        };
        let tenant = pending.tenant_id.clone();
        let mut failures = Vec::new();
        for v in &pending.versions {
            if let Err(e) = self.keys.destroy_kek(&system_scope(), &tenant, *v).await {
                failures.push(format!("v{v}: {e}"));
            }
        }
        let mut ev = PendingEvent::new(
            Action::TenantDestroy,
            "system:governance",
            format!("tenant:{tenant}"),
            p.proposal_id.clone(),
        )
        .tenant(Some(tenant.clone()))
        .detail("proposal_id", p.proposal_id.as_str())
        .detail("kek_versions", pending.versions.clone());
        if !failures.is_empty() {
            tracing::error!(%tenant, ?failures, "destroying a destroyed tenant's KEKs failed; retried at the next start");
            ev.outcome = Outcome::Failed;
            ev = ev.detail("error", failures.join("; "));
            self.store.record(ev).await?;
            return Ok(p);
        }
        let id = p.proposal_id.clone();
        let c = self
            .store
            .commit(ev, move |txn, _| {
                let mut p = tables::load(txn, &id)?;
                p.pending_keks = None;
                tables::save(txn, &p)?;
                Ok(p)
            })
            .await?;
        tracing::warn!(%tenant, proposal = %c.value.proposal_id, "tenant destroyed by governance");
        Ok(c.value)
    }

    /// At start: finish proposals approved but not executed, and KEK destructions not
    /// finished, when the process stopped.
    pub async fn resume(&self) -> Result<(), StoreError> {
        for p in tables::all(&self.store)? {
            if p.status == Status::Approved {
                tracing::warn!(proposal = %p.proposal_id, "finishing an approved governance proposal");
                self.execute(p).await;
            } else if p.pending_keks.is_some() {
                let id = p.proposal_id.clone();
                if let Err(e) = self.destroy_keks(p).await {
                    tracing::error!(proposal = %id, error = %e, "destroying a destroyed tenant's KEKs failed");
                }
            }
        }
        Ok(())
    }
}
