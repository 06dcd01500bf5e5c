//! Multi-party governance (SPEC §6 "Governance", §9): operations that no single operator
//! may perform alone run only once `threshold` distinct approvers have signed the
//! proposal's digest with their Ed25519 keys.
//!
//! A proposal is made by an operator token with `governance:propose`; it gets a random
//! id, a 32-byte random server nonce and an expiry (default 24 h), and its digest is
//! `sha256:<hex>` of a canonical, length-prefixed encoding of (id, operation, params,
//! expiry, nonce) — see [`digest`] — so two identical proposals have different digests.
//! An approval carries `{approver, signature}`: a `verify_strict` Ed25519 signature over
//! the ASCII bytes of the digest string. Any valid token may post one: the signature is
//! the authority.
//!
//! Invariants:
//! - an operation runs only after the approval that brings the number of distinct,
//!   verified approvers to the threshold is durable, and at most once: that approval's
//!   transaction moves the proposal from `pending` to the internal `approved` state, and
//!   only the holder of that transition executes it; execution moves it to `executed` or
//!   `failed` in the same transaction as its effect and its `proposal_execute` event;
//! - the quorum (threshold + approver keys) in force is the one stored by `set_quorum`,
//!   else the config's; a proposal is bound to the quorum it was made under (its
//!   fingerprint), so a quorum change supersedes every proposal still pending;
//! - every change is committed through `Store::commit` with its audit event; an approval
//!   that triggers execution is recorded as its request's `proposal_approve` event, then
//!   the execution writes its own system `proposal_execute` event (`destroy_tenant`
//!   adds a `tenant_destroy` event once the tenant's KEKs are gone from the HSM);
//! - an operation approved but not finished when the process stopped (crash) is finished
//!   at the next start ([`Governance::resume`]).

use std::sync::Arc;

use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::audit::integrity::Integrity;
use crate::audit::{Action, Outcome, PendingEvent};
use crate::auth::{system_scope, system_tenant_scope};
use crate::clock::{rfc3339, Clock};
use crate::config::GovernanceConfig;
use crate::domain::TenantId;
use crate::keys::rotation::Rotation;
use crate::keys::KeyService;
use crate::privacy::epsilon::MAX_EPSILON_MICROS;
use crate::privacy::Epsilon;
use crate::store::{ChangeError, CommitError, Store, StoreError, WriteTxn};

/// Default lifetime of a proposal.
pub const DEFAULT_TTL_SECS: i64 = 24 * 3600;
/// Domain separation of the digest encoding.
pub const DIGEST_DOMAIN: &[u8] = b"strongroom/proposal/v1\n";
/// Most approvers a quorum may list.
pub const MAX_APPROVERS: usize = 64;
/// Longest `acknowledge_alarm` reason.
pub const MAX_REASON_LEN: usize = 1000;
/// Result of `rotate_signing_key` in this version.
pub const ROTATE_SIGNING_KEY_UNSUPPORTED: &str = "rotate_signing_key is not supported in this version: the audit checkpoint signing key stays the one created at init";

/// One approver: a name and a raw Ed25519 public key.
#[derive(Debug, Clone)]
pub struct Approver {
    /// Name used in approvals (`alice`).
    pub name: String,
    /// Public key.
    pub key: VerifyingKey,
}

/// Parse `name:ed25519:<standard base64 of a raw 32-byte key>`.
pub fn parse_approver(entry: &str) -> Result<Approver, String> {
    let mut parts = entry.splitn(3, ':');
    let (Some(name), Some(alg), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "approver {entry:?} must be name:ed25519:<base64 of a raw 32-byte public key>"
        ));
    };
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !name_ok {
        return Err(format!("approver name {name:?} must match [A-Za-z0-9._-]{{1,64}}"));
    }
    if alg != "ed25519" {
        return Err(format!(
            "approver {name}: key type {alg:?} is not supported; use ed25519"
        ));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|e| format!("approver {name}: the key is not standard base64 ({e})"))?;
    let raw: [u8; 32] = raw
        .try_into()
        .map_err(|v: Vec<u8>| format!("approver {name}: the key is {} bytes, expected 32", v.len()))?;
    let key = VerifyingKey::from_bytes(&raw).map_err(|_| format!("approver {name}: not a valid Ed25519 public key"))?;
    if key.is_weak() {
        return Err(format!("approver {name}: weak (small-order) Ed25519 public key"));
    }
    Ok(Approver {
        name: name.to_owned(),
        key,
    })
}

/// The approvers and how many of them must sign.
#[derive(Debug, Clone)]
pub struct Quorum {
    /// Approvals needed.
    pub threshold: u32,
    /// The approvers.
    pub approvers: Vec<Approver>,
    /// The approver entries as given (config string form).
    entries: Vec<String>,
}

/// The stored form of a quorum (`meta` key `governance_quorum`) and `set_quorum` params.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QuorumSpec {
    /// Approvals needed.
    pub threshold: u32,
    /// `name:ed25519:<base64>` entries.
    pub approvers: Vec<String>,
}

impl Quorum {
    /// Validate a quorum: 1 to 64 approvers with distinct names and keys, and
    /// `1 ≤ threshold ≤ approvers`.
    pub fn new(threshold: u32, entries: &[String]) -> Result<Self, String> {
        if entries.is_empty() {
            return Err("approvers must not be empty".into());
        }
        if entries.len() > MAX_APPROVERS {
            return Err(format!("at most {MAX_APPROVERS} approvers"));
        }
        let approvers = entries
            .iter()
            .map(|e| parse_approver(e))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, a) in approvers.iter().enumerate() {
            if approvers[..i].iter().any(|b| b.name == a.name) {
                return Err(format!("approver {} is listed twice", a.name));
            }
            if approvers[..i].iter().any(|b| b.key == a.key) {
                return Err(format!("approver {} has the same key as another approver", a.name));
            }
        }
        if threshold == 0 || threshold as usize > approvers.len() {
            return Err(format!(
                "threshold must be from 1 to the number of approvers ({}), got {threshold}",
                approvers.len()
            ));
        }
        Ok(Self {
            threshold,
            approvers,
            entries: entries.to_vec(),
        })
    }

    /// The `[governance]` section: `None` when no approvers are configured.
    pub fn from_config(c: &GovernanceConfig) -> Result<Option<Self>, String> {
        if c.approvers.is_empty() {
            return Ok(None);
        }
        Self::new(c.threshold, &c.approvers)
            .map(Some)
            .map_err(|e| format!("governance: {e}"))
    }

    /// The stored form.
    pub fn spec(&self) -> QuorumSpec {
        QuorumSpec {
            threshold: self.threshold,
            approvers: self.entries.clone(),
        }
    }

    /// A quorum from its stored form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let spec: QuorumSpec = serde_json::from_slice(bytes).map_err(|e| format!("stored quorum: {e}"))?;
        Self::new(spec.threshold, &spec.approvers)
    }

    /// Canonical bytes of the stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.spec()).unwrap_or_default()
    }

    /// `sha256:<hex>` of the canonical form: what a proposal is bound to.
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(self.to_bytes())))
    }

    /// The approver called `name`.
    pub fn approver(&self, name: &str) -> Option<&Approver> {
        self.approvers.iter().find(|a| a.name == name)
    }
}

/// `destroy_tenant` params.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DestroyTenant {
    /// The tenant.
    pub tenant_id: TenantId,
}

/// `raise_budget` params.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RaiseBudget {
    /// The tenant.
    pub tenant_id: TenantId,
    /// ε added to its total (decimal string).
    pub epsilon: String,
}

/// Params of operations that take none (`rotate_signing_key`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// `acknowledge_alarm` params.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AcknowledgeAlarm {
    /// Why the operators accept the current state.
    pub reason: String,
}

/// A governed operation with its validated params.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "operation", content = "params", rename_all = "snake_case")]
pub enum Operation {
    /// Revoke the tenant's tokens, delete its data and destroy its KEKs.
    DestroyTenant(DestroyTenant),
    /// Replace the quorum.
    SetQuorum(QuorumSpec),
    /// Add ε to a tenant's privacy budget.
    RaiseBudget(RaiseBudget),
    /// Not supported in this version (executes as `failed`).
    RotateSigningKey(NoParams),
    /// Accept the current state after a rollback alarm.
    AcknowledgeAlarm(AcknowledgeAlarm),
}

fn params_of<T: serde::de::DeserializeOwned>(op: &str, params: Value) -> Result<T, String> {
    let params = match params {
        Value::Null => json!({}),
        p => p,
    };
    serde_json::from_value(params).map_err(|e| format!("invalid params for {op}: {e}"))
}

impl Operation {
    /// Parse and validate `operation` + `params` (missing params = `{}`).
    pub fn parse(operation: &str, params: Value) -> Result<Self, String> {
        let op = match operation {
            "destroy_tenant" => Operation::DestroyTenant(params_of(operation, params)?),
            "set_quorum" => {
                let q: QuorumSpec = params_of(operation, params)?;
                Quorum::new(q.threshold, &q.approvers).map_err(|e| format!("invalid params for set_quorum: {e}"))?;
                Operation::SetQuorum(q)
            }
            "raise_budget" => {
                let r: RaiseBudget = params_of(operation, params)?;
                Epsilon::parse_positive(&r.epsilon).map_err(|e| format!("invalid params for raise_budget: {e}"))?;
                Operation::RaiseBudget(r)
            }
            "rotate_signing_key" => Operation::RotateSigningKey(params_of(operation, params)?),
            "acknowledge_alarm" => {
                let a: AcknowledgeAlarm = params_of(operation, params)?;
                let len = a.reason.chars().count();
                if a.reason.trim().is_empty() || len > MAX_REASON_LEN || a.reason.chars().any(char::is_control) {
                    return Err(format!(
                        "invalid params for acknowledge_alarm: reason must be 1 to {MAX_REASON_LEN} characters without control characters"
                    ));
                }
                Operation::AcknowledgeAlarm(a)
            }
            other => {
                return Err(format!(
                    "unknown operation {other:?}; expected destroy_tenant, set_quorum, raise_budget, rotate_signing_key or acknowledge_alarm"
                ))
            }
        };
        Ok(op)
    }

    /// The wire name.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::DestroyTenant(_) => "destroy_tenant",
            Operation::SetQuorum(_) => "set_quorum",
            Operation::RaiseBudget(_) => "raise_budget",
            Operation::RotateSigningKey(_) => "rotate_signing_key",
            Operation::AcknowledgeAlarm(_) => "acknowledge_alarm",
        }
    }

    /// The params as canonical compact JSON (fields in declaration order).
    pub fn params_json(&self) -> String {
        let r = match self {
            Operation::DestroyTenant(p) => serde_json::to_string(p),
            Operation::SetQuorum(p) => serde_json::to_string(p),
            Operation::RaiseBudget(p) => serde_json::to_string(p),
            Operation::RotateSigningKey(p) => serde_json::to_string(p),
            Operation::AcknowledgeAlarm(p) => serde_json::to_string(p),
        };
        r.unwrap_or_default()
    }

    /// The params as a JSON value (for answers).
    pub fn params(&self) -> Value {
        serde_json::from_str(&self.params_json()).unwrap_or(Value::Null)
    }

    /// The tenant the operation concerns, if any.
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            Operation::DestroyTenant(p) => Some(&p.tenant_id),
            Operation::RaiseBudget(p) => Some(&p.tenant_id),
            _ => None,
        }
    }
}

/// `sha256:<hex>` of `DIGEST_DOMAIN ‖ lp(id) ‖ lp(operation) ‖ lp(params JSON) ‖
/// lp(expires_at) ‖ lp(nonce)`, where `lp(x)` = 4-byte big-endian length ‖ x.
pub fn digest(proposal_id: &str, op: &Operation, expires_at: &str, nonce: &[u8; 32]) -> String {
    let params = op.params_json();
    let mut h = Sha256::new();
    h.update(DIGEST_DOMAIN);
    for part in [
        proposal_id.as_bytes(),
        op.name().as_bytes(),
        params.as_bytes(),
        expires_at.as_bytes(),
        nonce.as_slice(),
    ] {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Where a proposal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Collecting approvals.
    Pending,
    /// Threshold reached; executing (shown as `pending`).
    Approved,
    /// Ran.
    Executed,
    /// Expired before reaching the threshold.
    Expired,
    /// Ran and failed, or superseded.
    Failed,
}

/// One approval.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Approver name.
    pub approver: String,
    /// RFC 3339.
    pub at: String,
    /// The signature as given (base64), kept as evidence.
    pub signature: String,
}

/// KEKs of a destroyed tenant still to destroy in the HSM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PendingKeks {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Versions.
    pub versions: Vec<u32>,
}

/// A proposal as stored in the `proposals` database.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Proposal {
    /// `prop-<hex>`.
    pub proposal_id: String,
    /// Operation and params.
    pub op: Operation,
    /// `sha256:<hex>`, what approvers sign.
    pub digest: String,
    /// The server nonce (hex).
    pub nonce: String,
    /// RFC 3339.
    pub created_at: String,
    /// Actor of the proposing token.
    pub created_by: String,
    /// RFC 3339.
    pub expires_at: String,
    /// Unix seconds.
    pub expires_at_unix: i64,
    /// Threshold of the quorum it was made under.
    pub approvals_needed: u32,
    /// Fingerprint of that quorum.
    pub quorum: String,
    /// Approvals so far.
    pub approvals: Vec<Approval>,
    /// State.
    pub status: Status,
    /// What execution did or why it failed.
    pub result: Option<String>,
    /// `destroy_tenant`: KEKs not yet destroyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_keks: Option<PendingKeks>,
}

impl Proposal {
    fn from_bytes(b: &[u8]) -> Result<Self, ChangeError> {
        serde_json::from_slice(b).map_err(|_| ChangeError::Corrupt("proposals"))
    }
    fn to_bytes(&self) -> Result<Vec<u8>, ChangeError> {
        serde_json::to_vec(self).map_err(|_| ChangeError::Corrupt("proposal"))
    }

    /// The status clients see at `now` (Unix seconds).
    pub fn visible_status(&self, now: i64) -> &'static str {
        match self.status {
            Status::Pending if now >= self.expires_at_unix => "expired",
            Status::Pending | Status::Approved => "pending",
            Status::Executed => "executed",
            Status::Expired => "expired",
            Status::Failed => "failed",
        }
    }

    /// The answer of SPEC §9.
    pub fn view(&self, now: i64) -> Value {
        let approvals: Vec<Value> = self
            .approvals
            .iter()
            .map(|a| json!({"approver": a.approver, "at": a.at}))
            .collect();
        json!({
            "proposal_id": self.proposal_id,
            "operation": self.op.name(),
            "params": self.op.params(),
            "digest": self.digest,
            "status": self.visible_status(now),
            "approvals": approvals,
            "approvals_needed": self.approvals_needed,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "expires_at": self.expires_at,
            "result": self.result,
        })
    }
}

fn load(txn: &WriteTxn<'_, '_>, id: &str) -> Result<Proposal, ChangeError> {
    let bytes = txn
        .proposal(id)?
        .ok_or_else(|| ChangeError::NotFound(format!("proposal {id} not found")))?;
    Proposal::from_bytes(&bytes)
}

fn save(txn: &mut WriteTxn<'_, '_>, p: &Proposal) -> Result<(), ChangeError> {
    txn.put_proposal(&p.proposal_id, &p.to_bytes()?)
}

/// Why a governance request was refused.
#[derive(Debug, thiserror::Error)]
pub enum GovError {
    /// No approvers configured (409).
    #[error("governance is not configured: set [governance] approvers and threshold")]
    NotConfigured,
    /// No such proposal, or no such tenant (404).
    #[error("{0}")]
    NotFound(String),
    /// Unknown approver or bad signature (400 `invalid_signature`).
    #[error("{0}")]
    InvalidSignature(String),
    /// Refused under an integrity alarm (503).
    #[error("{0}")]
    Alarm(String),
    /// 409, already audited (the request's event is durable with outcome `failed`).
    #[error("{0}")]
    Conflict(String),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Commit (`Refused` = the event is durable).
    #[error(transparent)]
    Commit(#[from] CommitError),
}

/// What an approval did.
enum Approved {
    Recorded(Box<Proposal>),
    /// Refused with a state change (expired / superseded): 409, event recorded.
    Closed(String),
}

/// The governance service.
#[derive(Clone)]
pub struct Governance {
    store: Store,
    keys: KeyService,
    integrity: Arc<Integrity>,
    rotation: Rotation,
    clock: Clock,
    tenant_admin: Arc<tokio::sync::Mutex<()>>,
    config_quorum: Option<Quorum>,
}

impl Governance {
    /// A service with no configured quorum (see [`Governance::with_config_quorum`]).
    pub fn new(
        store: Store,
        keys: KeyService,
        integrity: Arc<Integrity>,
        rotation: Rotation,
        clock: Clock,
        tenant_admin: Arc<tokio::sync::Mutex<()>>,
    ) -> Self {
        Self {
            store,
            keys,
            integrity,
            rotation,
            clock,
            tenant_admin,
            config_quorum: None,
        }
    }

    /// Use the `[governance]` quorum (until a `set_quorum` proposal replaces it).
    pub fn with_config_quorum(mut self, quorum: Option<Quorum>) -> Self {
        self.config_quorum = quorum;
        self
    }

    fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    /// The quorum in force: the stored one, else the config's.
    pub fn quorum(&self) -> Result<Option<Quorum>, StoreError> {
        match self.store.read()?.governance_quorum()? {
            Some(bytes) => Quorum::from_bytes(&bytes)
                .map(Some)
                .map_err(|_| StoreError::Corrupt("governance_quorum")),
            None => Ok(self.config_quorum.clone()),
        }
    }

    fn quorum_in(txn: &WriteTxn<'_, '_>, config: Option<&Quorum>) -> Result<Option<Quorum>, ChangeError> {
        match txn.governance_quorum()? {
            Some(bytes) => Quorum::from_bytes(&bytes)
                .map(Some)
                .map_err(|_| ChangeError::Corrupt("governance_quorum")),
            None => Ok(config.cloned()),
        }
    }

    /// A stored proposal.
    pub fn get(&self, id: &str) -> Result<Option<Proposal>, StoreError> {
        self.store
            .read()?
            .proposal(id)?
            .map(|b| Proposal::from_bytes(&b).map_err(|_| StoreError::Corrupt("proposals")))
            .transpose()
    }

    /// Unix seconds now.
    pub fn now_unix(&self) -> i64 {
        self.now().unix_timestamp()
    }

    /// Create proposal `proposal_id` (from [`new_proposal_id`]); `event` is the request's
    /// `proposal_create` event.
    pub async fn propose(
        &self,
        proposal_id: String,
        op: Operation,
        created_by: &str,
        event: PendingEvent,
    ) -> Result<Proposal, GovError> {
        let quorum = self.quorum()?.ok_or(GovError::NotConfigured)?;
        if let Some(t) = op.tenant() {
            if self.store.read()?.tenant(t)?.is_none() {
                return Err(GovError::NotFound(format!("tenant {t} not found")));
            }
        }
        let now = self.now();
        let expires = time::OffsetDateTime::from_unix_timestamp(now.unix_timestamp() + DEFAULT_TTL_SECS).unwrap_or(now);
        let expires_at = rfc3339(expires);
        let mut nonce = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let proposal = Proposal {
            digest: digest(&proposal_id, &op, &expires_at, &nonce),
            proposal_id,
            op,
            nonce: hex::encode(nonce),
            created_at: rfc3339(now),
            created_by: created_by.to_owned(),
            expires_at,
            expires_at_unix: expires.unix_timestamp(),
            approvals_needed: quorum.threshold,
            quorum: quorum.fingerprint(),
            approvals: Vec::new(),
            status: Status::Pending,
            result: None,
            pending_keks: None,
        };
        let mut event = event
            .detail("operation", proposal.op.name())
            .detail("digest", proposal.digest.as_str())
            .detail("approvals_needed", proposal.approvals_needed)
            .detail("expires_at", proposal.expires_at.as_str());
        if let Some(t) = proposal.op.tenant() {
            event = event.detail("target_tenant", t.as_str());
        }
        let p = proposal.clone();
        self.store
            .commit(event, move |txn, _| {
                if txn.proposal(&p.proposal_id)?.is_some() {
                    return Err(ChangeError::Conflict(format!("proposal {} exists", p.proposal_id)));
                }
                save(txn, &p)
            })
            .await?;
        Ok(proposal)
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
            })?;

        let (id_owned, approver_owned, sig_owned) = (id.to_owned(), approver.to_owned(), signature_b64.to_owned());
        let verified_under = quorum.fingerprint();
        let config = self.config_quorum.clone();
        let now = self.now();
        let event = event.detail("approver", approver);
        let committed = self
            .store
            .commit(event, move |txn, ev| {
                let mut p = load(txn, &id_owned)?;
                match p.status {
                    Status::Pending => {}
                    Status::Approved | Status::Executed | Status::Failed => {
                        return Err(ChangeError::Conflict(format!(
                            "proposal {} has already reached its quorum ({})",
                            p.proposal_id,
                            p.visible_status(now.unix_timestamp())
                        )))
                    }
                    Status::Expired => {
                        return Err(ChangeError::Conflict(format!(
                            "proposal {} expired at {}",
                            p.proposal_id, p.expires_at
                        )))
                    }
                }
                let close = |p: &mut Proposal, ev: &mut PendingEvent, status: Status, why: String| {
                    p.status = status;
                    p.result = Some(why.clone());
                    ev.outcome = Outcome::Failed;
                    ev.details.insert("error".into(), "conflict".into());
                    ev.details.insert("reason".into(), why.clone().into());
                    why
                };
                if now.unix_timestamp() >= p.expires_at_unix {
                    let why = format!("proposal expired at {} before reaching its quorum", p.expires_at);
                    let why = close(&mut p, ev, Status::Expired, why);
                    save(txn, &p)?;
                    return Ok(Approved::Closed(why));
                }
                let current = Self::quorum_in(txn, config.as_ref())?.map(|q| q.fingerprint());
                if current.as_deref() != Some(p.quorum.as_str()) || verified_under != p.quorum {
                    let why = close(
                        &mut p,
                        ev,
                        Status::Failed,
                        "superseded: the approver quorum changed after this proposal was made; propose it again".into(),
                    );
                    save(txn, &p)?;
                    return Ok(Approved::Closed(why));
                }
                if p.approvals.iter().any(|a| a.approver == approver_owned) {
                    return Err(ChangeError::Conflict(format!(
                        "{approver_owned} has already approved proposal {}",
                        p.proposal_id
                    )));
                }
                p.approvals.push(Approval {
                    approver: approver_owned,
                    at: rfc3339(now),
                    signature: sig_owned,
                });
                ev.details.insert("approvals".into(), p.approvals.len().into());
                ev.details.insert("approvals_needed".into(), p.approvals_needed.into());
                if p.approvals.len() >= p.approvals_needed as usize {
                    p.status = Status::Approved;
                    ev.details.insert("quorum_reached".into(), true.into());
                }
                save(txn, &p)?;
                Ok(Approved::Recorded(Box::new(p)))
            })
            .await;
        match committed {
            Ok(c) => match c.value {
                Approved::Closed(why) => Err(GovError::Conflict(why)),
                Approved::Recorded(p) if p.status == Status::Approved => Ok(self.execute(*p).await),
                Approved::Recorded(p) => Ok(*p),
            },
            Err(CommitError::Refused(ChangeError::Conflict(m), _)) => Err(GovError::Conflict(m)),
            Err(CommitError::Refused(ChangeError::NotFound(m), _)) => Err(GovError::Conflict(m)),
            Err(e) => Err(e.into()),
        }
    }

    fn execute_event(&self, p: &Proposal) -> PendingEvent {
        let mut ev = PendingEvent::new(
            Action::ProposalExecute,
            "system:governance",
            format!("proposal:{}", p.proposal_id),
            p.proposal_id.clone(),
        )
        .detail("operation", p.op.name())
        .detail(
            "approvers",
            p.approvals.iter().map(|a| a.approver.clone()).collect::<Vec<_>>(),
        );
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
        let result = self.run(p).await;
        match result {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(proposal = %id, error = %e, "executing a governance proposal failed; it is retried at the next start");
                self.get(&id).ok().flatten().unwrap_or_else(|| placeholder(&id))
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
                let mut p = load(txn, &id)?;
                if p.status != Status::Approved {
                    return Ok(p);
                }
                effect(txn, ev, &mut p)?;
                if p.status == Status::Failed {
                    ev.outcome = Outcome::Failed;
                }
                ev.details.insert(
                    "status".into(),
                    if p.status == Status::Failed {
                        "failed"
                    } else {
                        "executed"
                    }
                    .into(),
                );
                if let Some(r) = &p.result {
                    ev.details.insert("result".into(), r.clone().into());
                }
                save(txn, &p)?;
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
            Operation::SetQuorum(spec) => {
                self.finish(&p, move |txn, _, p| {
                    let q = match Quorum::new(spec.threshold, &spec.approvers) {
                        Ok(q) => q,
                        Err(e) => return fail(p, format!("invalid quorum: {e}")),
                    };
                    txn.set_governance_quorum(&system_scope(), &q.to_bytes())?;
                    succeed(
                        p,
                        format!(
                            "quorum is now {} of {} approvers ({}); proposals still pending are superseded",
                            q.threshold,
                            q.approvers.len(),
                            q.approvers.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    )
                })
                .await
            }
            Operation::RaiseBudget(r) => {
                self.finish(&p, move |txn, _, p| {
                    let Ok(eps) = Epsilon::parse_positive(&r.epsilon) else {
                        return fail(p, format!("invalid epsilon {:?}", r.epsilon));
                    };
                    if !txn_tenant_exists(txn, &r.tenant_id)? {
                        return fail(p, format!("tenant {} no longer exists", r.tenant_id));
                    }
                    let scope = system_tenant_scope(&r.tenant_id);
                    let extra = txn.dp_extra(&scope)?;
                    let Some(after) = extra.checked_add(eps.micros()).filter(|a| *a <= MAX_EPSILON_MICROS) else {
                        return fail(p, "the raised budget would exceed the largest amount accepted".into());
                    };
                    txn.set_dp_extra(&scope, after)?;
                    succeed(
                        p,
                        format!(
                            "privacy budget of tenant {} raised by {eps}; governed extra now {} on top of privacy.tenant_epsilon_budget",
                            r.tenant_id,
                            Epsilon::from_micros(after)
                        ),
                    )
                })
                .await
            }
            Operation::RotateSigningKey(_) => {
                self.finish(&p, |_, _, p| fail(p, ROTATE_SIGNING_KEY_UNSUPPORTED.to_owned()))
                    .await
            }
            Operation::AcknowledgeAlarm(a) => {
                let outcome = self.integrity.acknowledge_rollback(&a.reason, &p.proposal_id).await;
                self.finish(&p, move |_, _, p| match outcome {
                    Ok(r) => succeed(p, r),
                    Err(why) => fail(p, why),
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
        let t = tenant.clone();
        let done = self
            .finish(&p, move |txn, ev, p| {
                let counts = match txn.destroy_tenant(&system_scope(), &t, now) {
                    Ok(c) => c,
                    Err(ChangeError::NotFound(_)) => return fail(p, format!("tenant {t} no longer exists")),
                    Err(e) => return Err(e),
                };
                let top = counts.tenant.key_version.max(counts.tenant.pending_version.unwrap_or(0));
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
            })
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
                let mut p = load(txn, &id)?;
                p.pending_keks = None;
                save(txn, &p)?;
                Ok(p)
            })
            .await?;
        tracing::warn!(%tenant, proposal = %c.value.proposal_id, "tenant destroyed by governance");
        Ok(c.value)
    }

    /// At start: finish proposals approved but not executed, and KEK destructions not
    /// finished, when the process stopped.
    pub async fn resume(&self) -> Result<(), StoreError> {
        let stored = self.store.read()?.proposals()?;
        for bytes in stored {
            let Ok(p) = Proposal::from_bytes(&bytes) else {
                tracing::error!("unreadable governance proposal in the store");
                continue;
            };
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

fn txn_tenant_exists(txn: &WriteTxn<'_, '_>, tenant: &TenantId) -> Result<bool, ChangeError> {
    Ok(txn.tenant_record(tenant)?.is_some())
}

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

/// A fresh `prop-<16 hex>` id.
pub fn new_proposal_id() -> String {
    let mut b = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("prop-{}", hex::encode(b))
}

fn placeholder(id: &str) -> Proposal {
    Proposal {
        proposal_id: id.to_owned(),
        op: Operation::RotateSigningKey(NoParams {}),
        digest: String::new(),
        nonce: String::new(),
        created_at: String::new(),
        created_by: String::new(),
        expires_at: String::new(),
        expires_at_unix: 0,
        approvals_needed: 0,
        quorum: String::new(),
        approvals: Vec::new(),
        status: Status::Approved,
        result: Some("execution could not be recorded; it is retried at the next start".into()),
        pending_keks: None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn entry(name: &str, seed: u8) -> (String, SigningKey) {
        let sk = SigningKey::from_bytes(&[seed; 32]);
        let b64 = base64::engine::general_purpose::STANDARD.encode(sk.verifying_key().as_bytes());
        (format!("{name}:ed25519:{b64}"), sk)
    }

    #[test]
    fn approver_entries_are_parsed_strictly() {
        let (e, sk) = entry("alice", 1);
        let a = parse_approver(&e).unwrap();
        assert_eq!(a.name, "alice");
        assert_eq!(a.key, sk.verifying_key());
        for bad in [
            "alice",
            "alice:ed25519",
            "alice:rsa:AAAA",
            ":ed25519:AAAA",
            "al ice:ed25519:AAAA",
            "alice:ed25519:not base64!",
            "alice:ed25519:AAAA",
        ] {
            assert!(parse_approver(bad).is_err(), "{bad}");
        }
        // The identity point is a weak key.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let w = base64::engine::general_purpose::STANDARD.encode(weak);
        assert!(parse_approver(&format!("x:ed25519:{w}")).is_err());
    }

    #[test]
    fn quorum_rules() {
        let (a, _) = entry("alice", 1);
        let (b, _) = entry("bob", 2);
        let (a2, _) = entry("alice", 3);
        let (b_same_key, _) = entry("carol", 2);
        assert!(Quorum::new(2, &[a.clone(), b.clone()]).is_ok());
        assert!(Quorum::new(0, &[a.clone(), b.clone()]).is_err());
        assert!(Quorum::new(3, &[a.clone(), b.clone()]).is_err());
        assert!(Quorum::new(1, &[]).is_err());
        assert!(Quorum::new(1, &[a.clone(), a2]).is_err());
        assert!(Quorum::new(1, &[b.clone(), b_same_key]).is_err());
        let q = Quorum::new(1, &[a.clone(), b.clone()]).unwrap();
        let back = Quorum::from_bytes(&q.to_bytes()).unwrap();
        assert_eq!(back.fingerprint(), q.fingerprint());
        assert_ne!(Quorum::new(2, &[a, b]).unwrap().fingerprint(), q.fingerprint());
        let none = GovernanceConfig::default();
        assert!(Quorum::from_config(&none).unwrap().is_none());
    }

    #[test]
    fn digests_bind_every_field_and_signatures_verify() {
        let op = Operation::parse("rotate_signing_key", Value::Null).unwrap();
        let n1 = [1u8; 32];
        let n2 = [2u8; 32];
        let d = digest("prop-1", &op, "2026-01-01T00:00:00Z", &n1);
        assert!(d.starts_with("sha256:") && d.len() == 7 + 64);
        assert_ne!(d, digest("prop-1", &op, "2026-01-01T00:00:00Z", &n2));
        assert_ne!(d, digest("prop-2", &op, "2026-01-01T00:00:00Z", &n1));
        assert_ne!(d, digest("prop-1", &op, "2026-01-01T00:00:01Z", &n1));
        let other = Operation::parse("acknowledge_alarm", json!({"reason": "x"})).unwrap();
        assert_ne!(d, digest("prop-1", &other, "2026-01-01T00:00:00Z", &n1));
        let (_, sk) = entry("alice", 1);
        let sig = sk.sign(d.as_bytes());
        assert!(sk.verifying_key().verify_strict(d.as_bytes(), &sig).is_ok());
    }

    #[test]
    fn operations_are_validated() {
        assert!(Operation::parse("destroy_tenant", json!({"tenant_id": "acme"})).is_ok());
        assert!(Operation::parse("destroy_tenant", json!({"tenant_id": "a b"})).is_err());
        assert!(Operation::parse("destroy_tenant", json!({"tenant_id": "acme", "x": 1})).is_err());
        assert!(Operation::parse("destroy_tenant", Value::Null).is_err());
        assert!(Operation::parse("raise_budget", json!({"tenant_id": "acme", "epsilon": "5.0"})).is_ok());
        assert!(Operation::parse("raise_budget", json!({"tenant_id": "acme", "epsilon": "0"})).is_err());
        assert!(Operation::parse("raise_budget", json!({"tenant_id": "acme", "epsilon": 5.0})).is_err());
        assert!(Operation::parse("rotate_signing_key", json!({})).is_ok());
        assert!(Operation::parse("rotate_signing_key", json!({"x": 1})).is_err());
        assert!(Operation::parse("acknowledge_alarm", json!({"reason": ""})).is_err());
        assert!(Operation::parse("acknowledge_alarm", json!({"reason": "restored backup"})).is_ok());
        assert!(Operation::parse("set_quorum", json!({"threshold": 1, "approvers": []})).is_err());
        assert!(Operation::parse("rotate_root", json!({})).is_err());
        let (a, _) = entry("alice", 1);
        let q = Operation::parse("set_quorum", json!({"threshold": 1, "approvers": [a]})).unwrap();
        assert_eq!(q.params()["threshold"], 1);
    }
}
