//! Multi-party governance (SPEC §6 "Governance", §9): operations that no single operator
//! may perform alone run only once `threshold` distinct approvers have signed the
//! proposal's digest with their Ed25519 keys.
//!
//! A proposal is made by an operator token with `governance:propose`; it gets a random
//! id, a 32-byte random server nonce and an expiry (default 24 h), and its digest is
//! `sha256:<hex>` of a canonical, length-prefixed encoding of (id, operation, params,
//! expiry, nonce) — see [`digest::digest`] — so two identical proposals have different digests.
//! An approval carries `{approver, signature}`: a `verify_strict` Ed25519 signature over
//! the ASCII bytes of the digest string. Any valid token may post one: the signature is
//! the authority.
//!
//! Modules: [`quorum`] (approvers, threshold, stored form, fingerprint), [`operation`]
//! (typed operations, strict parse), [`digest`], [`proposal`] (stored record, status,
//! view), [`service`] (propose / approve / get), [`execute`] (running each operation,
//! resume), [`error`] (typed errors), `tables` (every store call governance makes).
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

pub mod digest;
pub mod error;
pub mod execute;
pub mod operation;
pub mod proposal;
pub mod quorum;
pub mod service;
mod tables;

pub use digest::{digest, DIGEST_DOMAIN};
pub use error::{GovError, OperationError, QuorumError};
pub use execute::ROTATE_SIGNING_KEY_UNSUPPORTED;
pub use operation::{
    AcknowledgeAlarm, DestroyTenant, NoParams, Operation, RaiseBudget, RaiseBudgetParams, MAX_REASON_LEN,
};
pub use proposal::{Approval, PendingKeks, Proposal, Status};
pub use quorum::{parse_approver, Approver, Quorum, QuorumSpec, MAX_APPROVERS};
pub use service::{Governance, DEFAULT_TTL_SECS};
