//! Governed operations and their params, parsed strictly once into typed values.
//!
//! Invariant: an [`Operation`] holds validated values (a [`Quorum`], an [`Epsilon`], a
//! checked reason); its wire form (`{"operation", "params"}` in stored proposals) and
//! its canonical params JSON (what the digest covers) are byte-identical to the params
//! as the proposer's fields were validated, so stored proposals and digests stay valid.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::digest::json_string;
use super::error::OperationError;
use super::quorum::{Quorum, QuorumSpec};
use crate::domain::TenantId;
use crate::privacy::Epsilon;

/// Longest `acknowledge_alarm` reason.
pub const MAX_REASON_LEN: usize = 1000;

/// `destroy_tenant` params.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DestroyTenant {
    /// The tenant.
    pub tenant_id: TenantId,
}

/// `raise_budget` params as sent and stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RaiseBudgetParams {
    /// The tenant.
    pub tenant_id: TenantId,
    /// ε added to its total (decimal string).
    pub epsilon: String,
}

/// `raise_budget`, validated: a positive ε (and its text as given, which the digest
/// covers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaiseBudget {
    /// The tenant.
    pub tenant_id: TenantId,
    /// ε added to its total.
    pub epsilon: Epsilon,
    text: String,
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "OperationWire", into = "OperationWire")]
pub enum Operation {
    /// Revoke the tenant's tokens, delete its data and destroy its KEKs.
    DestroyTenant(DestroyTenant),
    /// Replace the quorum.
    SetQuorum(Quorum),
    /// Add ε to a tenant's privacy budget.
    RaiseBudget(RaiseBudget),
    /// Not supported in this version (executes as `failed`).
    RotateSigningKey(NoParams),
    /// Accept the current state after a rollback alarm.
    AcknowledgeAlarm(AcknowledgeAlarm),
}

/// The wire and stored form of an [`Operation`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "operation", content = "params", rename_all = "snake_case")]
enum OperationWire {
    DestroyTenant(DestroyTenant),
    SetQuorum(QuorumSpec),
    RaiseBudget(RaiseBudgetParams),
    RotateSigningKey(NoParams),
    AcknowledgeAlarm(AcknowledgeAlarm),
}

impl TryFrom<OperationWire> for Operation {
    type Error = OperationError;
    fn try_from(w: OperationWire) -> Result<Self, OperationError> {
        Ok(match w {
            OperationWire::DestroyTenant(d) => Operation::DestroyTenant(d),
            OperationWire::SetQuorum(q) => Operation::SetQuorum(Quorum::try_from(q).map_err(OperationError::Quorum)?),
            OperationWire::RaiseBudget(r) => Operation::RaiseBudget(RaiseBudget {
                epsilon: Epsilon::parse_positive(&r.epsilon).map_err(OperationError::Epsilon)?,
                tenant_id: r.tenant_id,
                text: r.epsilon,
            }),
            OperationWire::RotateSigningKey(p) => Operation::RotateSigningKey(p),
            OperationWire::AcknowledgeAlarm(a) => {
                let len = a.reason.chars().count();
                if a.reason.trim().is_empty() || len > MAX_REASON_LEN || a.reason.chars().any(char::is_control) {
                    return Err(OperationError::Reason);
                }
                Operation::AcknowledgeAlarm(a)
            }
        })
    }
}

impl From<Operation> for OperationWire {
    fn from(op: Operation) -> Self {
        match op {
            Operation::DestroyTenant(d) => OperationWire::DestroyTenant(d),
            Operation::SetQuorum(q) => OperationWire::SetQuorum(q.spec()),
            Operation::RaiseBudget(r) => OperationWire::RaiseBudget(RaiseBudgetParams {
                tenant_id: r.tenant_id,
                epsilon: r.text,
            }),
            Operation::RotateSigningKey(p) => OperationWire::RotateSigningKey(p),
            Operation::AcknowledgeAlarm(a) => OperationWire::AcknowledgeAlarm(a),
        }
    }
}

fn params_of<T: serde::de::DeserializeOwned>(operation: &'static str, params: Value) -> Result<T, OperationError> {
    let params = match params {
        Value::Null => json!({}),
        p => p,
    };
    serde_json::from_value(params).map_err(|source| OperationError::Params { operation, source })
}

impl Operation {
    /// Parse and validate `operation` + `params` (missing params = `{}`).
    pub fn parse(operation: &str, params: Value) -> Result<Self, OperationError> {
        let wire = match operation {
            "destroy_tenant" => OperationWire::DestroyTenant(params_of("destroy_tenant", params)?),
            "set_quorum" => OperationWire::SetQuorum(params_of("set_quorum", params)?),
            "raise_budget" => OperationWire::RaiseBudget(params_of("raise_budget", params)?),
            "rotate_signing_key" => OperationWire::RotateSigningKey(params_of("rotate_signing_key", params)?),
            "acknowledge_alarm" => OperationWire::AcknowledgeAlarm(params_of("acknowledge_alarm", params)?),
            other => return Err(OperationError::Unknown(other.to_owned())),
        };
        Self::try_from(wire)
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

    /// The params as canonical compact JSON (fields in declaration order), exactly as
    /// `serde_json` writes the wire params.
    pub fn params_json(&self) -> String {
        match self {
            Operation::DestroyTenant(p) => format!("{{\"tenant_id\":{}}}", json_string(p.tenant_id.as_str())),
            Operation::SetQuorum(q) => String::from_utf8_lossy(q.to_bytes()).into_owned(),
            Operation::RaiseBudget(r) => format!(
                "{{\"tenant_id\":{},\"epsilon\":{}}}",
                json_string(r.tenant_id.as_str()),
                json_string(&r.text)
            ),
            Operation::RotateSigningKey(_) => "{}".to_owned(),
            Operation::AcknowledgeAlarm(a) => format!("{{\"reason\":{}}}", json_string(&a.reason)),
        }
    }

    /// The params as a JSON value (for answers).
    pub fn params(&self) -> Value {
        let mut m = Map::new();
        match self {
            Operation::DestroyTenant(p) => {
                m.insert("tenant_id".into(), p.tenant_id.as_str().into());
            }
            Operation::SetQuorum(q) => {
                let spec = q.spec();
                m.insert("threshold".into(), spec.threshold.into());
                m.insert("approvers".into(), spec.approvers.into());
            }
            Operation::RaiseBudget(r) => {
                m.insert("tenant_id".into(), r.tenant_id.as_str().into());
                m.insert("epsilon".into(), r.text.as_str().into());
            }
            Operation::RotateSigningKey(_) => {}
            Operation::AcknowledgeAlarm(a) => {
                m.insert("reason".into(), a.reason.as_str().into());
            }
        }
        Value::Object(m)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use base64::Engine;

    fn entry(name: &str, seed: u8) -> String {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let b64 = base64::engine::general_purpose::STANDARD.encode(sk.verifying_key().as_bytes());
        format!("{name}:ed25519:{b64}")
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
        let q = Operation::parse("set_quorum", json!({"threshold": 1, "approvers": [entry("alice", 1)]})).unwrap();
        assert_eq!(q.params()["threshold"], 1);
    }

    #[test]
    fn canonical_params_and_wire_form_match_serde() {
        let ops = [
            Operation::parse("destroy_tenant", json!({"tenant_id": "acme"})).unwrap(),
            Operation::parse(
                "set_quorum",
                json!({"threshold": 1, "approvers": [entry("a", 1), entry("b", 2)]}),
            )
            .unwrap(),
            Operation::parse("raise_budget", json!({"tenant_id": "acme", "epsilon": "5.0"})).unwrap(),
            Operation::parse("rotate_signing_key", Value::Null).unwrap(),
            Operation::parse("acknowledge_alarm", json!({"reason": "restored \"backup\" é"})).unwrap(),
        ];
        for op in ops {
            let wire = serde_json::to_value(&op).unwrap();
            assert_eq!(wire["operation"], op.name());
            assert_eq!(serde_json::to_string(&wire["params"]).unwrap(), op.params().to_string());
            let wire_params = match OperationWire::from(op.clone()) {
                OperationWire::DestroyTenant(p) => serde_json::to_string(&p),
                OperationWire::SetQuorum(p) => serde_json::to_string(&p),
                OperationWire::RaiseBudget(p) => serde_json::to_string(&p),
                OperationWire::RotateSigningKey(p) => serde_json::to_string(&p),
                OperationWire::AcknowledgeAlarm(p) => serde_json::to_string(&p),
            };
            assert_eq!(op.params_json(), wire_params.unwrap());
            let back: Operation = serde_json::from_value(wire).unwrap();
            assert_eq!(back.params_json(), op.params_json());
        }
    }

    #[test]
    fn messages_are_unchanged() {
        let e = Operation::parse("rotate_root", json!({})).unwrap_err().to_string();
        assert!(
            e.starts_with("unknown operation \"rotate_root\"; expected destroy_tenant"),
            "{e}"
        );
        let e = Operation::parse("raise_budget", json!({"tenant_id": "acme", "epsilon": "0"}))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid params for raise_budget: epsilon must be greater than zero, got \"0\""
        );
    }
}
