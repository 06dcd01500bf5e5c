//! Audit events: what a request asks to be recorded ([`PendingEvent`]) and what the
//! writer makes of it once it has a place in the chain ([`AuditEvent`]).
//!
//! Invariant: event ids are random (via [`Random`], the OS CSPRNG), never derived from
//! request data.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::domain::TenantId;
use crate::random::Random;

/// Prefix of every event's canonical bytes.
pub const EVENT_PREFIX: &str = "audit-event/v1\n";
/// `prev` of the genesis event.
pub const GENESIS_PREV: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// A SHA-256 chain hash.
pub type ChainHash = [u8; 32];

/// Actions of SPEC §8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Action {
    ServiceStart,
    ServiceStop,
    DataWrite,
    DataAccess,
    DataQuery,
    EntityErase,
    TenantCreate,
    TenantDestroy,
    KeyRotate,
    TokenCreate,
    TokenRevoke,
    AuthDenied,
    AccessDenied,
    AuditRead,
    AuditExport,
    CheckpointSeal,
    ChainVerifyFailed,
    RollbackDetected,
    ProposalCreate,
    ProposalApprove,
    ProposalExecute,
}

/// The wire name of an action (`data_write`...).
pub fn action_name(a: Action) -> &'static str {
    match a {
        Action::ServiceStart => "service_start",
        Action::ServiceStop => "service_stop",
        Action::DataWrite => "data_write",
        Action::DataAccess => "data_access",
        Action::DataQuery => "data_query",
        Action::EntityErase => "entity_erase",
        Action::TenantCreate => "tenant_create",
        Action::TenantDestroy => "tenant_destroy",
        Action::KeyRotate => "key_rotate",
        Action::TokenCreate => "token_create",
        Action::TokenRevoke => "token_revoke",
        Action::AuthDenied => "auth_denied",
        Action::AccessDenied => "access_denied",
        Action::AuditRead => "audit_read",
        Action::AuditExport => "audit_export",
        Action::CheckpointSeal => "checkpoint_seal",
        Action::ChainVerifyFailed => "chain_verify_failed",
        Action::RollbackDetected => "rollback_detected",
        Action::ProposalCreate => "proposal_create",
        Action::ProposalApprove => "proposal_approve",
        Action::ProposalExecute => "proposal_execute",
    }
}

/// What became of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Authorised and done.
    Allowed,
    /// Refused by authentication or authorisation.
    Denied,
    /// Authorised but not done (invalid input, conflict, not found, internal error).
    Failed,
}

/// An event as a request hands it to the store, before it has a place in the chain.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    /// `evt-<hex>`, chosen up front so a change can refer to its own event (erasure
    /// tombstones do).
    pub event_id: String,
    /// What happened.
    pub action: Action,
    /// Who asked (`anonymous` when unauthenticated).
    pub actor: String,
    /// The tenant concerned, if any.
    pub tenant_id: Option<TenantId>,
    /// `entity:<id>`, `tenant:<id>`, `token:<id>`, `audit`...
    pub resource: String,
    /// Result.
    pub outcome: Outcome,
    /// The request id echoed to the client.
    pub request_id: String,
    /// Extra facts (sorted keys when serialised). Never record contents or secrets.
    pub details: Map<String, Value>,
}

impl PendingEvent {
    /// A new event with outcome `allowed` and no details.
    pub fn new(
        action: Action,
        actor: impl Into<String>,
        resource: impl Into<String>,
        request_id: impl Into<String>,
    ) -> Self {
        let id: [u8; 8] = Random::os().bytes();
        Self {
            event_id: format!("evt-{}", hex::encode(id)),
            action,
            actor: actor.into(),
            tenant_id: None,
            resource: resource.into(),
            outcome: Outcome::Allowed,
            request_id: request_id.into(),
            details: Map::new(),
        }
    }

    /// Set the tenant.
    pub fn tenant(mut self, tenant: Option<TenantId>) -> Self {
        self.tenant_id = tenant;
        self
    }

    /// Add a detail.
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

/// A chained event, field order exactly as SPEC §7 (serde keeps declaration order;
/// `serde_json::Map` is a BTreeMap, so `details` keys come out sorted).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// Position in the chain, from 0, no gaps.
    pub seq: u64,
    /// Previous event's chain hash (`sha256:<hex>`).
    pub prev: String,
    /// RFC 3339 UTC.
    pub ts: String,
    /// `evt-<hex>`.
    pub event_id: String,
    /// Action.
    pub action: Action,
    /// Principal.
    pub actor: String,
    /// Tenant (null for system events).
    pub tenant_id: Option<String>,
    /// Resource.
    pub resource: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Request id.
    pub request_id: String,
    /// Details object.
    pub details: Map<String, Value>,
}

impl AuditEvent {
    /// The canonical bytes: prefix + compact JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = EVENT_PREFIX.as_bytes().to_vec();
        // Serialising a struct of strings, numbers and a Map cannot fail.
        if serde_json::to_writer(&mut out, self).is_err() {
            out.truncate(EVENT_PREFIX.len());
        }
        out
    }

    /// Parse canonical bytes, checking they re-serialise to exactly themselves (so a
    /// non-canonical encoding cannot hide a change).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let json = bytes.strip_prefix(EVENT_PREFIX.as_bytes())?;
        let event: AuditEvent = serde_json::from_slice(json).ok()?;
        (event.to_bytes() == bytes).then_some(event)
    }
}

/// `SHA-256(0x00 || event bytes)` — also the RFC 6962 leaf hash.
pub fn chain_hash(event_bytes: &[u8]) -> ChainHash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(event_bytes);
    h.finalize().into()
}

/// Render as `sha256:<hex>`.
pub fn hash_hex(hash: &ChainHash) -> String {
    format!("sha256:{}", hex::encode(hash))
}

/// Parse `sha256:<hex>`.
pub fn parse_hash(s: &str) -> Option<ChainHash> {
    let hex_part = s.strip_prefix("sha256:")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn canonical_bytes_have_spec_field_order_and_sorted_details() {
        let mut details = Map::new();
        details.insert("zeta".into(), 1.into());
        details.insert("alpha".into(), 2.into());
        let e = AuditEvent {
            seq: 0,
            prev: GENESIS_PREV.into(),
            ts: "2026-03-08T14:22:01Z".into(),
            event_id: "evt-1".into(),
            action: Action::DataWrite,
            actor: "user:a".into(),
            tenant_id: Some("acme".into()),
            resource: "entity:e".into(),
            outcome: Outcome::Allowed,
            request_id: "req-1".into(),
            details,
        };
        let bytes = e.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            format!("audit-event/v1\n{{\"seq\":0,\"prev\":\"{GENESIS_PREV}\",\"ts\":\"2026-03-08T14:22:01Z\",\"event_id\":\"evt-1\",\"action\":\"data_write\",\"actor\":\"user:a\",\"tenant_id\":\"acme\",\"resource\":\"entity:e\",\"outcome\":\"allowed\",\"request_id\":\"req-1\",\"details\":{{\"alpha\":2,\"zeta\":1}}}}")
        );
        assert_eq!(AuditEvent::from_bytes(&bytes), Some(e));
        let mut spaced = bytes.clone();
        spaced.extend_from_slice(b" ");
        assert_eq!(AuditEvent::from_bytes(&spaced), None);
        assert_eq!(parse_hash(&hash_hex(&chain_hash(&bytes))), Some(chain_hash(&bytes)));
    }
}
