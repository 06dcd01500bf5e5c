//! Typed errors of governance. Invariant: each `Display` is the exact message the API
//! answers (and the config loader prints), so callers never format their own.

use crate::privacy::epsilon::EpsilonError;
use crate::store::{CommitError, StoreError};

use super::operation::MAX_REASON_LEN;
use super::quorum::MAX_APPROVERS;

/// Why an approver entry or a quorum was refused.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// Not `name:alg:key`.
    #[error("approver {entry:?} must be name:ed25519:<base64 of a raw 32-byte public key>")]
    Malformed {
        /// The entry as given.
        entry: String,
    },
    /// Name outside `[A-Za-z0-9._-]{1,64}`.
    #[error("approver name {name:?} must match [A-Za-z0-9._-]{{1,64}}")]
    BadName {
        /// The name.
        name: String,
    },
    /// A key type other than `ed25519`.
    #[error("approver {name}: key type {alg:?} is not supported; use ed25519")]
    KeyType {
        /// Approver.
        name: String,
        /// The key type given.
        alg: String,
    },
    /// The key is not standard base64.
    #[error("approver {name}: the key is not standard base64 ({source})")]
    NotBase64 {
        /// Approver.
        name: String,
        /// Decoder error.
        #[source]
        source: base64::DecodeError,
    },
    /// The key is not 32 bytes.
    #[error("approver {name}: the key is {len} bytes, expected 32")]
    KeyLength {
        /// Approver.
        name: String,
        /// Decoded length.
        len: usize,
    },
    /// Not a point on the curve.
    #[error("approver {name}: not a valid Ed25519 public key")]
    InvalidKey {
        /// Approver.
        name: String,
    },
    /// A small-order key.
    #[error("approver {name}: weak (small-order) Ed25519 public key")]
    WeakKey {
        /// Approver.
        name: String,
    },
    /// No approvers.
    #[error("approvers must not be empty")]
    NoApprovers,
    /// More than [`MAX_APPROVERS`].
    #[error("at most {MAX_APPROVERS} approvers")]
    TooMany,
    /// Two entries with one name.
    #[error("approver {0} is listed twice")]
    DuplicateName(String),
    /// Two entries with one key.
    #[error("approver {0} has the same key as another approver")]
    DuplicateKey(String),
    /// `threshold` outside `1..=approvers`.
    #[error("threshold must be from 1 to the number of approvers ({approvers}), got {threshold}")]
    Threshold {
        /// Given threshold.
        threshold: u32,
        /// Number of approvers.
        approvers: usize,
    },
    /// The stored form is not JSON of a quorum.
    #[error("stored quorum: {0}")]
    Stored(#[source] serde_json::Error),
}

/// Why `operation` + `params` were refused (400 `invalid_request`).
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    /// Params do not match the operation's shape.
    #[error("invalid params for {operation}: {source}")]
    Params {
        /// Wire name.
        operation: &'static str,
        /// Serde's reason.
        #[source]
        source: serde_json::Error,
    },
    /// `set_quorum` with an invalid quorum.
    #[error("invalid params for set_quorum: {0}")]
    Quorum(#[source] QuorumError),
    /// `raise_budget` with an invalid ε.
    #[error("invalid params for raise_budget: {0}")]
    Epsilon(#[source] EpsilonError),
    /// `acknowledge_alarm` with an empty, long or control-character reason.
    #[error(
        "invalid params for acknowledge_alarm: reason must be 1 to {MAX_REASON_LEN} characters without control characters"
    )]
    Reason,
    /// Not a governed operation.
    #[error(
        "unknown operation {0:?}; expected destroy_tenant, set_quorum, raise_budget, rotate_signing_key or acknowledge_alarm"
    )]
    Unknown(String),
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
