//! The permission vocabulary of SPEC §5.

use serde::{Deserialize, Serialize};

/// One permission a token may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Write records.
    #[serde(rename = "records:write")]
    RecordsWrite,
    /// Read records.
    #[serde(rename = "records:read")]
    RecordsRead,
    /// Differentially private aggregates.
    #[serde(rename = "query:aggregate")]
    QueryAggregate,
    /// Read the audit log.
    #[serde(rename = "audit:read")]
    AuditRead,
    /// Erase an entity.
    #[serde(rename = "entity:erase")]
    EntityErase,
    /// Create and revoke tokens.
    #[serde(rename = "tokens:manage")]
    TokensManage,
    /// Create tenants (operator only).
    #[serde(rename = "tenants:manage")]
    TenantsManage,
    /// Rotate tenant keys (operator only).
    #[serde(rename = "keys:rotate")]
    KeysRotate,
    /// Propose governed operations (operator only).
    #[serde(rename = "governance:propose")]
    GovernancePropose,
}

impl Permission {
    /// Permissions only operator tokens may hold.
    pub fn operator_only(self) -> bool {
        matches!(
            self,
            Permission::TenantsManage | Permission::KeysRotate | Permission::GovernancePropose
        )
    }

    /// Permissions only tenant tokens may hold (operators read no records).
    pub fn tenant_only(self) -> bool {
        matches!(
            self,
            Permission::RecordsWrite | Permission::RecordsRead | Permission::QueryAggregate | Permission::EntityErase
        )
    }

    /// The bootstrap operator token's permissions (SPEC §9).
    pub const BOOTSTRAP: [Permission; 5] = [
        Permission::TenantsManage,
        Permission::TokensManage,
        Permission::KeysRotate,
        Permission::GovernancePropose,
        Permission::AuditRead,
    ];

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::RecordsWrite => "records:write",
            Permission::RecordsRead => "records:read",
            Permission::QueryAggregate => "query:aggregate",
            Permission::AuditRead => "audit:read",
            Permission::EntityErase => "entity:erase",
            Permission::TokensManage => "tokens:manage",
            Permission::TenantsManage => "tenants:manage",
            Permission::KeysRotate => "keys:rotate",
            Permission::GovernancePropose => "governance:propose",
        }
    }
}
