//! Authentication and authorisation (SPEC §5).
//!
//! A bearer token is hashed and looked up ([`tokens`]); the result is a [`Principal`].
//! A principal is turned into an [`Authorized`] scope only through [`Principal::tenant`]
//! or [`Principal::operator`], which check the permission. [`TenantScope`] and
//! [`OperatorScope`] have private fields and no public constructor, so code that reads
//! or writes a tenant's data cannot be written without having passed this check, and
//! it can only name the tenant the token is bound to.

mod authenticate;
mod permissions;
pub mod tokens;

pub use authenticate::{authenticate, AuthFailure};
pub use permissions::Permission;
pub use tokens::{TokenKind, TokenRecord};

use crate::domain::{Actor, TenantId};

/// Who is calling: the token's actor and what the token may do.
#[derive(Debug, Clone)]
pub struct Principal {
    token_id: String,
    actor: Actor,
    kind: TokenKind,
    permissions: Vec<Permission>,
    expires_at: i64,
}

/// Why a principal may not do something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The token lacks the permission → 403.
    MissingPermission(Permission),
    /// An operator token asked for tenant data, or a tenant token for system scope → 403.
    WrongKind,
}

impl Principal {
    pub(crate) fn from_record(rec: &TokenRecord) -> Self {
        Self {
            token_id: rec.token_id.clone(),
            actor: rec.actor.clone(),
            kind: rec.kind(),
            permissions: rec.permissions.clone(),
            expires_at: rec.expires_at,
        }
    }

    /// When the token expires (Unix seconds); tokens it creates expire no later.
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }

    /// The actor, e.g. `user:jdoe`.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }
    /// The token's id (never the token).
    pub fn token_id(&self) -> &str {
        &self.token_id
    }
    /// The bound tenant, for tenant tokens.
    pub fn tenant_id(&self) -> Option<&TenantId> {
        match &self.kind {
            TokenKind::Tenant(t) => Some(t),
            TokenKind::Operator => None,
        }
    }
    /// Operator or tenant.
    pub fn kind(&self) -> &TokenKind {
        &self.kind
    }
    /// Whether the token holds `p`.
    pub fn has(&self, p: Permission) -> bool {
        self.permissions.contains(&p)
    }
    /// The permissions held.
    pub fn permissions(&self) -> &[Permission] {
        &self.permissions
    }

    /// Authorise an action on the token's own tenant.
    pub fn tenant(&self, needed: Permission) -> Result<Authorized<TenantScope>, Denial> {
        let TokenKind::Tenant(tenant) = &self.kind else {
            return Err(Denial::WrongKind);
        };
        if !self.has(needed) {
            return Err(Denial::MissingPermission(needed));
        }
        Ok(Authorized {
            principal: self.clone(),
            scope: TenantScope { tenant: tenant.clone() },
        })
    }

    /// Authorise a system-scope action.
    pub fn operator(&self, needed: Permission) -> Result<Authorized<OperatorScope>, Denial> {
        if self.kind != TokenKind::Operator {
            return Err(Denial::WrongKind);
        }
        if !self.has(needed) {
            return Err(Denial::MissingPermission(needed));
        }
        Ok(Authorized {
            principal: self.clone(),
            scope: OperatorScope { _private: () },
        })
    }

    /// Authorise an action that either kind of token may do with the permission
    /// (audit reads, token management).
    pub fn either(&self, needed: Permission) -> Result<Authorized<AnyScope>, Denial> {
        if !self.has(needed) {
            return Err(Denial::MissingPermission(needed));
        }
        let scope = match &self.kind {
            TokenKind::Operator => AnyScope::Operator(OperatorScope { _private: () }),
            TokenKind::Tenant(t) => AnyScope::Tenant(TenantScope { tenant: t.clone() }),
        };
        Ok(Authorized {
            principal: self.clone(),
            scope,
        })
    }
}

/// Proof that the caller passed authorisation for scope `S`. No public constructor.
#[derive(Debug)]
pub struct Authorized<S> {
    principal: Principal,
    scope: S,
}

impl<S> Authorized<S> {
    /// The authorised principal.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
    /// The scope.
    pub fn scope(&self) -> &S {
        &self.scope
    }
}

/// Authority over exactly one tenant's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantScope {
    tenant: TenantId,
}

impl TenantScope {
    /// The one tenant this scope may touch.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }
}

/// Authority over system-wide resources (tenants, tokens, keys). Grants no record
/// access: no record function accepts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorScope {
    _private: (),
}

/// Either scope, for endpoints both kinds of token may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyScope {
    /// System scope.
    Operator(OperatorScope),
    /// One tenant.
    Tenant(TenantScope),
}

impl AnyScope {
    /// The tenant, when tenant-scoped.
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            AnyScope::Operator(_) => None,
            AnyScope::Tenant(t) => Some(t.tenant()),
        }
    }
}

/// Tenant scope used by the appliance itself for system work on one tenant's keys
/// (rotation, KEK retirement). Only this crate can make one; no request path does.
pub(crate) fn system_tenant_scope(tenant: &TenantId) -> TenantScope {
    TenantScope { tenant: tenant.clone() }
}

/// Scope used by the appliance itself for system work (startup, bootstrap, background
/// jobs). Only `cli` and background tasks inside this crate can make one.
pub(crate) fn system_scope() -> OperatorScope {
    OperatorScope { _private: () }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn principal(kind: TokenKind, perms: &[Permission]) -> Principal {
        Principal {
            token_id: "tok".into(),
            actor: Actor::parse("user:x").unwrap(),
            kind,
            permissions: perms.to_vec(),
            expires_at: i64::MAX,
        }
    }

    #[test]
    fn tenant_scope_needs_a_tenant_token_with_the_permission() {
        let t = TenantId::parse("acme").unwrap();
        let p = principal(TokenKind::Tenant(t.clone()), &[Permission::RecordsRead]);
        assert_eq!(p.tenant(Permission::RecordsRead).unwrap().scope().tenant(), &t);
        assert_eq!(
            p.tenant(Permission::RecordsWrite).unwrap_err(),
            Denial::MissingPermission(Permission::RecordsWrite)
        );
        assert_eq!(p.operator(Permission::RecordsRead).unwrap_err(), Denial::WrongKind);
        let op = principal(
            TokenKind::Operator,
            &[Permission::RecordsRead, Permission::TenantsManage],
        );
        assert_eq!(
            op.tenant(Permission::RecordsRead).unwrap_err(),
            Denial::WrongKind,
            "operators read no records"
        );
        assert!(op.operator(Permission::TenantsManage).is_ok());
    }
}
