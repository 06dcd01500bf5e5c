//! The token service (top-level so `auth` stays below `audit`): minting and revoking bearer tokens under the delegation rules.
//!
//! Invariants (no privilege escalation, SPEC §6):
//! - an operator may create operator tokens with a subset of its own permissions and
//!   tenant tokens for an existing tenant with any tenant-grantable permission; a tenant
//!   token only tokens for its own tenant with a subset of its own; operator tokens never
//!   hold record permissions; `system:*`/`anonymous` actors are the appliance's own;
//! - a token never outlives the token that made it;
//! - revocation cannot remove a token more powerful than the revoker, nor the last
//!   operator token able to manage tokens — checked inside the revocation's own write
//!   transaction, so two concurrent revocations cannot both pass it;
//! - token creation and revocation are critical events: a seal follows soon.

use std::sync::Arc;

use crate::audit::integrity::Integrity;
use crate::audit::PendingEvent;
use crate::auth::tokens::{mint, MintedToken};
use crate::auth::{Permission, Principal, TokenKind, TokenRecord};
use crate::clock::{rfc3339, Clock};
use crate::domain::{Actor, TenantId};
use crate::random::Random;
use crate::store::{ChangeError, CommitError, Store, StoreError};

/// Default token lifetime.
pub const DEFAULT_TTL_SECS: i64 = 24 * 3600;
/// Longest token lifetime.
pub const MAX_TTL_SECS: i64 = 366 * 24 * 3600;

/// What a caller asks to mint: the `POST /v1/admin/tokens` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Actor name of the new token.
    pub actor: Actor,
    /// Tenant of a tenant token; `None` for an operator token.
    #[serde(default)]
    pub tenant_id: Option<TenantId>,
    /// Its permissions.
    pub permissions: Vec<Permission>,
    /// Requested lifetime.
    #[serde(default)]
    pub ttl_secs: Option<i64>,
}

/// Why a token was not created or revoked.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The request is invalid (400).
    #[error("{0}")]
    Invalid(String),
    /// The caller's authority does not cover it (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such tenant or token visible to the caller (404).
    #[error("{0}")]
    NotFound(String),
    /// The store refused the change; its `failed` event is durable (404/409).
    #[error("{1}")]
    Refused(ChangeError, String),
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The commit failed.
    #[error(transparent)]
    Commit(CommitError),
}

/// A created token: the record, its one-time secret, and its expiry as shown.
pub struct Created {
    /// What is stored.
    pub record: TokenRecord,
    /// The minted secret (shown once).
    pub minted: MintedToken,
    /// RFC 3339, from the stored whole seconds.
    pub expires_at: String,
}

/// A checked token request with its minted secret, not yet stored.
pub struct Prepared {
    req: TokenRequest,
    ttl: i64,
    minted: MintedToken,
}

impl Prepared {
    /// The id the token will have.
    pub fn token_id(&self) -> &str {
        &self.minted.token_id
    }
}

/// The service.
#[derive(Clone)]
pub struct TokenService {
    store: Store,
    clock: Clock,
    random: Random,
    integrity: Arc<Integrity>,
}

impl TokenService {
    /// A service over the store.
    pub fn new(store: Store, clock: Clock, random: Random, integrity: Arc<Integrity>) -> Self {
        Self {
            store,
            clock,
            random,
            integrity,
        }
    }

    /// Check `req` against `creator`'s authority and mint its secret; nothing is stored
    /// yet (the new token's id then names the request's resource).
    pub fn prepare(&self, creator: &Principal, req: TokenRequest) -> Result<Prepared, TokenError> {
        check_grant(creator, &req)?;
        let ttl = req.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
        if !(1..=MAX_TTL_SECS).contains(&ttl) {
            return Err(TokenError::Invalid(format!(
                "ttl_secs must be from 1 to {MAX_TTL_SECS}"
            )));
        }
        if let Some(t) = &req.tenant_id {
            if self.store.read()?.tenant(t)?.is_none() {
                return Err(TokenError::NotFound(format!("tenant {t} not found")));
            }
        }
        Ok(Prepared {
            req,
            ttl,
            minted: mint(&self.random),
        })
    }

    /// Store a prepared token with `event`.
    pub async fn create(
        &self,
        creator: &Principal,
        prepared: Prepared,
        event: PendingEvent,
    ) -> Result<Created, TokenError> {
        let Prepared { req, ttl, minted } = prepared;
        let now = self.clock.now();
        // A token never outlives the token that made it.
        let ttl = ttl
            .min(creator.expires_at().saturating_sub(now.unix_timestamp()))
            .max(0);
        let record = TokenRecord {
            token_id: minted.token_id.clone(),
            actor: req.actor,
            tenant_id: req.tenant_id,
            permissions: req.permissions,
            created_at: now.unix_timestamp(),
            expires_at: now.unix_timestamp() + ttl,
            revoked_at: None,
        };
        // From the stored value (whole seconds), so what is shown is what is enforced.
        let expires_at = rfc3339(time::OffsetDateTime::from_unix_timestamp(record.expires_at).unwrap_or(now));
        let event = creation_event(event, &record, &expires_at);
        let (hash, rec) = (minted.hash, record.clone());
        self.store
            .commit(event, move |txn, _| txn.insert_token(&hash, &rec))
            .await
            .map_err(TokenError::Commit)?;
        // A new credential is security-critical: seal soon (rate limited).
        self.integrity.critical_event();
        Ok(Created {
            record,
            minted,
            expires_at,
        })
    }

    /// Revoke `token_id` on behalf of `revoker`; `event` is committed with it.
    pub async fn revoke(&self, revoker: &Principal, token_id: String, event: PendingEvent) -> Result<(), TokenError> {
        // Tenant tokens see only their tenant's tokens; anything else is "not found".
        let target = self
            .store
            .read()?
            .token_by_id(&token_id)?
            .filter(|t| revoker.tenant_id().is_none_or(|own| t.tenant_id.as_ref() == Some(own)));
        let Some(target) = target else {
            return Err(TokenError::NotFound(format!(
                "token {} not found",
                crate::domain::loggable_id(&token_id)
            )));
        };
        let operator_target = target.tenant_id.is_none();
        if operator_target {
            if let Some(p) = target.permissions.iter().find(|p| !revoker.has(**p)) {
                return Err(TokenError::Forbidden(format!(
                    "cannot revoke a token holding {} which this token lacks",
                    p.as_str()
                )));
            }
        }
        let event = match target.tenant_id {
            Some(t) => event.tenant(Some(t)),
            None => event,
        };
        let at = self.clock.now().unix_timestamp();
        let change = move |txn: &mut crate::store::WriteTxn<'_, '_>, _: &mut PendingEvent| {
            // Never the last operator token able to manage tokens (nothing could make a
            // new one: init runs once) — decided in this transaction.
            if operator_target {
                let admins = txn.active_token_admins(at)?;
                if admins.len() == 1 && admins[0] == token_id {
                    return Err(ChangeError::Conflict(
                        "this is the last operator token able to manage tokens; create another one first".into(),
                    ));
                }
            }
            txn.revoke_token(&token_id, at).map(|_| ())
        };
        match self.store.commit(event, change).await {
            Ok(_) => {
                // Losing a revocation to a restored backup would revive the token: seal soon.
                self.integrity.critical_event();
                Ok(())
            }
            Err(CommitError::Refused(e @ (ChangeError::NotFound(_) | ChangeError::Conflict(_)), _)) => {
                let m = e.to_string();
                Err(TokenError::Refused(e, m))
            }
            Err(e) => Err(TokenError::Commit(e)),
        }
    }
}

fn creation_event(event: PendingEvent, record: &TokenRecord, expires_at: &str) -> PendingEvent {
    let perms: Vec<&str> = record.permissions.iter().map(|p| p.as_str()).collect();
    let event = event
        .detail("subject_actor", record.actor.as_str())
        .detail("permissions", perms)
        .detail("expires_at", expires_at);
    match &record.tenant_id {
        Some(t) => event.tenant(Some(t.clone())),
        None => event,
    }
}

/// Check a token request against the creator's own authority.
fn check_grant(creator: &Principal, req: &TokenRequest) -> Result<(), TokenError> {
    if req.permissions.is_empty() {
        return Err(TokenError::Invalid("permissions must not be empty".into()));
    }
    // Actor names the appliance uses for itself cannot be minted, so audit events by
    // `system:*` are the appliance's own; `operator:*` names belong to operator tokens.
    let actor = req.actor.as_str();
    if actor.starts_with("system:") || actor == "system" || actor == "anonymous" {
        return Err(TokenError::Invalid(format!(
            "actor {actor} is reserved for the appliance"
        )));
    }
    if req.tenant_id.is_some() && actor.starts_with("operator:") {
        return Err(TokenError::Invalid("operator:* actors are for operator tokens".into()));
    }
    let lacking = || req.permissions.iter().find(|p| !creator.has(**p));
    let cannot_grant =
        |p: &Permission| TokenError::Forbidden(format!("cannot grant {} which this token lacks", p.as_str()));
    match (&req.tenant_id, creator.kind()) {
        (None, TokenKind::Operator) => {
            if let Some(p) = req.permissions.iter().find(|p| p.tenant_only()) {
                return Err(TokenError::Invalid(format!(
                    "operator tokens cannot hold {}",
                    p.as_str()
                )));
            }
            lacking().map_or(Ok(()), |p| Err(cannot_grant(p)))
        }
        (Some(_), TokenKind::Operator) => match req.permissions.iter().find(|p| p.operator_only()) {
            Some(p) => Err(TokenError::Invalid(format!("tenant tokens cannot hold {}", p.as_str()))),
            None => Ok(()),
        },
        (None, TokenKind::Tenant(_)) => Err(TokenError::Forbidden(
            "tenant tokens cannot create operator tokens".into(),
        )),
        (Some(t), TokenKind::Tenant(own)) if t != own => Err(TokenError::Forbidden(
            "tenant tokens can only create tokens for their own tenant".into(),
        )),
        (Some(_), TokenKind::Tenant(_)) => lacking().map_or(Ok(()), |p| Err(cannot_grant(p))),
    }
}
