//! The governance service: propose, approve, read; execution is in [`super::execute`].
//!
//! Invariant: an approval is counted only after its signature verified under the quorum
//! in force, and the transaction that counts it re-checks the proposal's status, expiry
//! and quorum fingerprint; the transaction that reaches the threshold moves the
//! proposal to `approved`, and only that request executes it.

use std::sync::Arc;

use base64::Engine;
use ed25519_dalek::Signature;

use super::digest::digest;
use super::error::GovError;
use super::operation::Operation;
use super::proposal::{Approval, Proposal, Status};
use super::quorum::Quorum;
use super::tables;
use crate::audit::integrity::Integrity;
use crate::audit::{Outcome, PendingEvent};
use crate::clock::{rfc3339, Clock};
use crate::keys::rotation::Rotation;
use crate::keys::KeyService;
use crate::random::Random;
use crate::store::{ChangeError, CommitError, Store, StoreError, WriteTxn};

/// Default lifetime of a proposal.
pub const DEFAULT_TTL_SECS: i64 = 24 * 3600;

/// What an approval did.
enum Approved {
    Recorded(Box<Proposal>),
    /// Refused with a state change (expired / superseded): 409, event recorded.
    Closed(String),
}

/// A verified approval, to be counted in the proposal's transaction.
struct Counted {
    id: String,
    approver: String,
    signature: String,
    /// Fingerprint of the quorum the signature verified under.
    verified_under: String,
    config: Option<Quorum>,
    now: time::OffsetDateTime,
}

/// The governance service.
#[derive(Clone)]
pub struct Governance {
    pub(super) store: Store,
    pub(super) keys: KeyService,
    pub(super) integrity: Arc<Integrity>,
    pub(super) rotation: Rotation,
    pub(super) clock: Clock,
    pub(super) random: Random,
    pub(super) tenant_admin: Arc<tokio::sync::Mutex<()>>,
    pub(super) config_quorum: Option<Quorum>,
}

impl Governance {
    /// A service with no configured quorum (see [`Governance::with_config_quorum`]).
    pub fn new(
        store: Store,
        keys: KeyService,
        integrity: Arc<Integrity>,
        rotation: Rotation,
        clock: Clock,
        random: Random,
        tenant_admin: Arc<tokio::sync::Mutex<()>>,
    ) -> Self {
        Self {
            store,
            keys,
            integrity,
            rotation,
            clock,
            random,
            tenant_admin,
            config_quorum: None,
        }
    }

    /// Use the `[governance]` quorum (until a `set_quorum` proposal replaces it).
    pub fn with_config_quorum(mut self, quorum: Option<Quorum>) -> Self {
        self.config_quorum = quorum;
        self
    }

    pub(super) fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    /// Unix seconds now.
    pub fn now_unix(&self) -> i64 {
        self.now().unix_timestamp()
    }

    /// A fresh `prop-<16 hex>` id.
    pub fn new_proposal_id(&self) -> String {
        format!("prop-{}", hex::encode(self.random.bytes::<8>()))
    }

    /// The quorum in force: the stored one, else the config's.
    pub fn quorum(&self) -> Result<Option<Quorum>, StoreError> {
        tables::quorum(&self.store, self.config_quorum.as_ref())
    }

    /// A stored proposal.
    pub fn get(&self, id: &str) -> Result<Option<Proposal>, StoreError> {
        tables::get(&self.store, id)
    }

    /// A new pending proposal for `op` under `quorum`.
    fn draft(&self, proposal_id: String, op: Operation, created_by: &str, quorum: &Quorum) -> Proposal {
        let now = self.now();
        let expires = time::OffsetDateTime::from_unix_timestamp(now.unix_timestamp() + DEFAULT_TTL_SECS).unwrap_or(now);
        let expires_at = rfc3339(expires);
        let nonce = self.random.bytes::<32>();
        Proposal {
            digest: digest(&proposal_id, &op, &expires_at, &nonce),
            proposal_id,
            op,
            nonce: hex::encode(nonce),
            created_at: rfc3339(now),
            created_by: created_by.to_owned(),
            expires_at,
            expires_at_unix: expires.unix_timestamp(),
            approvals_needed: quorum.threshold(),
            quorum: quorum.fingerprint(),
            approvals: Vec::new(),
            status: Status::Pending,
            result: None,
            pending_keks: None,
        }
    }

    /// Create proposal `proposal_id` (from [`Governance::new_proposal_id`]); `event` is
    /// the request's `proposal_create` event.
    pub async fn propose(
        &self,
        proposal_id: String,
        op: Operation,
        created_by: &str,
        event: PendingEvent,
    ) -> Result<Proposal, GovError> {
        let quorum = self.quorum()?.ok_or(GovError::NotConfigured)?;
        if let Some(t) = op.tenant() {
            if !tables::tenant_exists(&self.store, t)? {
                return Err(GovError::NotFound(format!("tenant {t} not found")));
            }
        }
        let proposal = self.draft(proposal_id, op, created_by, &quorum);
        let mut event = event
            .detail("operation", proposal.op.name())
            .detail("digest", proposal.digest.as_str())
            .detail("approvals_needed", proposal.approvals_needed)
            .detail("expires_at", proposal.expires_at.as_str());
        if let Some(t) = proposal.op.tenant() {
            event = event.detail("target_tenant", t.as_str());
        }
        let p = proposal.clone();
        self.store.commit(event, move |txn, _| tables::insert(txn, &p)).await?;
        Ok(proposal)
    }

    /// Check `signature_b64` by `approver` over `proposal`'s digest under `quorum`.
    fn verify(
        &self,
        proposal: &Proposal,
        quorum: &Quorum,
        approver: &str,
        signature_b64: &str,
    ) -> Result<(), GovError> {
        if self.integrity.alarm().reason().is_some() && !matches!(proposal.op, Operation::AcknowledgeAlarm(_)) {
            return Err(GovError::Alarm(
                "integrity alarm raised: only acknowledge_alarm proposals can be approved".into(),
            ));
        }
        let key = quorum
            .approver(approver)
            .ok_or_else(|| {
                GovError::InvalidSignature(format!("{approver:?} is not an approver of the quorum in force"))
            })?
            .key;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(signature_b64)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .ok_or_else(|| {
                GovError::InvalidSignature(
                    "signature must be the standard base64 of a 64-byte Ed25519 signature".into(),
                )
            })?;
        key.verify_strict(proposal.digest.as_bytes(), &Signature::from_bytes(&sig))
            .map_err(|_| {
                GovError::InvalidSignature(format!(
                    "the signature of {approver} does not verify over this proposal's digest"
                ))
            })
    }

    /// Record an approval; when it completes the quorum, execute the operation. Returns
    /// the proposal as it is afterwards. `event` is the request's `proposal_approve`.
    pub async fn approve(
        &self,
        id: &str,
        approver: &str,
        signature_b64: &str,
        event: PendingEvent,
    ) -> Result<Proposal, GovError> {
        let proposal = self
            .get(id)?
            .ok_or_else(|| GovError::NotFound(format!("proposal {id} not found")))?;
        let quorum = self.quorum()?.ok_or(GovError::NotConfigured)?;
        self.verify(&proposal, &quorum, approver, signature_b64)?;
        let counted = Counted {
            id: id.to_owned(),
            approver: approver.to_owned(),
            signature: signature_b64.to_owned(),
            verified_under: quorum.fingerprint(),
            config: self.config_quorum.clone(),
            now: self.now(),
        };
        let event = event.detail("approver", approver);
        let committed = self
            .store
            .commit(event, move |txn, ev| count_approval(txn, ev, counted))
            .await;
        match committed {
            Ok(c) => match c.value {
                Approved::Closed(why) => Err(GovError::Conflict(why)),
                Approved::Recorded(p) if p.status == Status::Approved => Ok(self.execute(*p).await),
                Approved::Recorded(p) => Ok(*p),
            },
            Err(CommitError::Refused(ChangeError::Conflict(m) | ChangeError::NotFound(m), _)) => {
                Err(GovError::Conflict(m))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Refuse with a state change: the proposal is closed with `status` and `why`, and the
/// request's event records the conflict.
fn close(p: &mut Proposal, ev: &mut PendingEvent, status: Status, why: String) -> String {
    p.status = status;
    p.result = Some(why.clone());
    ev.outcome = Outcome::Failed;
    ev.details.insert("error".into(), "conflict".into());
    ev.details.insert("reason".into(), why.clone().into());
    why
}

/// Why `p` no longer takes approvals (a plain conflict: nothing changes).
fn closed(p: &Proposal, now: i64) -> Option<ChangeError> {
    match p.status {
        Status::Pending => None,
        Status::Approved | Status::Executed | Status::Failed => Some(ChangeError::Conflict(format!(
            "proposal {} has already reached its quorum ({})",
            p.proposal_id,
            p.visible_status(now)
        ))),
        Status::Expired => Some(ChangeError::Conflict(format!(
            "proposal {} expired at {}",
            p.proposal_id, p.expires_at
        ))),
    }
}

/// The approval's transaction: re-check the proposal, count the approval, and move it
/// to `approved` when this approval reaches the threshold.
fn count_approval(txn: &mut WriteTxn<'_, '_>, ev: &mut PendingEvent, c: Counted) -> Result<Approved, ChangeError> {
    let mut p = tables::load(txn, &c.id)?;
    let now = c.now.unix_timestamp();
    if let Some(e) = closed(&p, now) {
        return Err(e);
    }
    if now >= p.expires_at_unix {
        let why = format!("proposal expired at {} before reaching its quorum", p.expires_at);
        let why = close(&mut p, ev, Status::Expired, why);
        tables::save(txn, &p)?;
        return Ok(Approved::Closed(why));
    }
    let current = tables::quorum_in(txn, c.config.as_ref())?.map(|q| q.fingerprint());
    if current.as_deref() != Some(p.quorum.as_str()) || c.verified_under != p.quorum {
        let why = "superseded: the approver quorum changed after this proposal was made; propose it again";
        let why = close(&mut p, ev, Status::Failed, why.into());
        tables::save(txn, &p)?;
        return Ok(Approved::Closed(why));
    }
    if p.approvals.iter().any(|a| a.approver == c.approver) {
        return Err(ChangeError::Conflict(format!(
            "{} has already approved proposal {}",
            c.approver, p.proposal_id
        )));
    }
    p.approvals.push(Approval {
        approver: c.approver,
        at: rfc3339(c.now),
        signature: c.signature,
    });
    ev.details.insert("approvals".into(), p.approvals.len().into());
    ev.details.insert("approvals_needed".into(), p.approvals_needed.into());
    if p.approvals.len() >= p.approvals_needed as usize {
        p.status = Status::Approved;
        ev.details.insert("quorum_reached".into(), true.into());
    }
    tables::save(txn, &p)?;
    Ok(Approved::Recorded(Box::new(p)))
}
