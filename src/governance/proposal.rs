//! A proposal: its stored record (`proposals` database, JSON), its status machine and
//! the view clients get (SPEC §9).
//!
//! Invariant: the stored JSON format is unchanged (field names and order; `op` is
//! `{"operation", "params"}`, the wire form of [`Operation`]); the internal `approved` state is shown
//! as `pending`, and a pending proposal past its expiry is shown as `expired`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::operation::{NoParams, Operation};
use crate::domain::TenantId;
use crate::store::ChangeError;

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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Decode the stored JSON.
    pub fn from_bytes(b: &[u8]) -> Result<Self, ChangeError> {
        serde_json::from_slice(b).map_err(|_| ChangeError::Corrupt("proposals"))
    }

    /// Encode for storage.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ChangeError> {
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

    /// Names of the approvers so far.
    pub fn approvers(&self) -> Vec<String> {
        self.approvals.iter().map(|a| a.approver.clone()).collect()
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

    /// What [`super::Governance::execute`] answers when even re-reading `id` failed.
    pub fn unrecorded(id: &str) -> Self {
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
}
