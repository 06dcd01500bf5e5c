//! `/v1/admin/tokens` — create and revoke bearer tokens.
//!
//! Rules (no privilege escalation): an operator may create operator tokens with a subset
//! of its own permissions and tenant tokens for an existing tenant with any
//! tenant-grantable permission; a tenant token may only create tokens for its own tenant
//! with a subset of its own permissions. Operator tokens never hold record permissions.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::body::read_json;
use super::ctx::{resource_id, Ctx};
use super::error::ApiError;
use super::AppState;
use crate::audit::Action;
use crate::auth::tokens::{mint, reveal};
use crate::auth::{Permission, Principal, TokenKind, TokenRecord};
use crate::clock::rfc3339;
use crate::domain::{Actor, TenantId};
use crate::store::{ChangeError, CommitError};

/// Default token lifetime.
pub const DEFAULT_TTL_SECS: i64 = 24 * 3600;
/// Longest token lifetime.
pub const MAX_TTL_SECS: i64 = 366 * 24 * 3600;

/// `POST /v1/admin/tokens` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    actor: Actor,
    #[serde(default)]
    tenant_id: Option<TenantId>,
    permissions: Vec<Permission>,
    #[serde(default)]
    ttl_secs: Option<i64>,
}

/// Check a token request against the creator's own authority.
fn check_grant(creator: &Principal, req: &CreateToken) -> Result<(), ApiError> {
    if req.permissions.is_empty() {
        return Err(ApiError::invalid("permissions must not be empty"));
    }
    // Actor names the appliance uses for itself cannot be minted, so audit events by
    // `system:*` are the appliance's own; `operator:*` names belong to operator tokens.
    let actor = req.actor.as_str();
    if actor.starts_with("system:") || actor == "system" || actor == "anonymous" {
        return Err(ApiError::invalid(format!(
            "actor {actor} is reserved for the appliance"
        )));
    }
    if req.tenant_id.is_some() && actor.starts_with("operator:") {
        return Err(ApiError::invalid("operator:* actors are for operator tokens"));
    }
    match (&req.tenant_id, creator.kind()) {
        (None, TokenKind::Operator) => {
            if let Some(p) = req.permissions.iter().find(|p| p.tenant_only()) {
                return Err(ApiError::invalid(format!("operator tokens cannot hold {}", p.as_str())));
            }
            if let Some(p) = req.permissions.iter().find(|p| !creator.has(**p)) {
                return Err(ApiError::forbidden(format!(
                    "cannot grant {} which this token lacks",
                    p.as_str()
                )));
            }
        }
        (Some(_), TokenKind::Operator) => {
            if let Some(p) = req.permissions.iter().find(|p| p.operator_only()) {
                return Err(ApiError::invalid(format!("tenant tokens cannot hold {}", p.as_str())));
            }
        }
        (None, TokenKind::Tenant(_)) => return Err(ApiError::forbidden("tenant tokens cannot create operator tokens")),
        (Some(t), TokenKind::Tenant(own)) => {
            if t != own {
                return Err(ApiError::forbidden(
                    "tenant tokens can only create tokens for their own tenant",
                ));
            }
            if let Some(p) = req.permissions.iter().find(|p| !creator.has(**p)) {
                return Err(ApiError::forbidden(format!(
                    "cannot grant {} which this token lacks",
                    p.as_str()
                )));
            }
        }
    }
    Ok(())
}

/// `POST /v1/admin/tokens`
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let mut ctx = Ctx::new(&req, &state, Action::TokenCreate, "token:*".to_owned());
    let principal = ctx.authenticate(&req).await?;
    if let Err(d) = principal.either(Permission::TokensManage) {
        return Err(ctx.deny(d).await);
    }
    let body: CreateToken = match read_json(payload, state.max_body).await {
        Ok(b) => b,
        Err(e) => return Err(ctx.reject(e).await),
    };
    if let Err(e) = check_grant(&principal, &body) {
        return Err(ctx.reject(e).await);
    }
    let ttl = body.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    if !(1..=MAX_TTL_SECS).contains(&ttl) {
        return Err(ctx
            .reject(ApiError::invalid(format!("ttl_secs must be from 1 to {MAX_TTL_SECS}")))
            .await);
    }
    if let Some(t) = &body.tenant_id {
        match state.store.read().and_then(|txn| txn.tenant(t)) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(ctx.reject(ApiError::not_found(format!("tenant {t} not found"))).await),
            Err(e) => return Err(ctx.internal(&e).await),
        }
    }
    let now = state.clock.now();
    // A token never outlives the token that made it.
    let ttl = ttl
        .min(principal.expires_at().saturating_sub(now.unix_timestamp()))
        .max(0);
    let minted = mint(&crate::random::Random::os());
    ctx.resource = format!("token:{}", minted.token_id);
    let record = TokenRecord {
        token_id: minted.token_id.clone(),
        actor: body.actor,
        tenant_id: body.tenant_id,
        permissions: body.permissions,
        created_at: now.unix_timestamp(),
        expires_at: now.unix_timestamp() + ttl,
        revoked_at: None,
    };
    // From the stored value (whole seconds), so what is shown is what is enforced.
    let expires_at = rfc3339(time::OffsetDateTime::from_unix_timestamp(record.expires_at).unwrap_or(now));
    let perms: Vec<&str> = record.permissions.iter().map(|p| p.as_str()).collect();
    let mut event = ctx
        .event()
        .detail("subject_actor", record.actor.as_str())
        .detail("permissions", perms)
        .detail("expires_at", expires_at.clone());
    if let Some(t) = &record.tenant_id {
        event = event.tenant(Some(t.clone()));
    }
    let hash = minted.hash;
    let rec = record.clone();
    match state
        .store
        .commit(event, move |txn, _| txn.insert_token(&hash, &rec))
        .await
    {
        Ok(_) => {
            // A new credential is security-critical: seal soon (rate limited).
            state.integrity.critical_event();
            Ok(HttpResponse::Created().json(json!({
            "token_id": record.token_id,
            "token": reveal(&minted),
            "expires_at": expires_at,
            })))
        }
        Err(e) => Err(ctx.commit_failed(&e).await),
    }
}

/// `DELETE /v1/admin/tokens/{token_id}`
pub async fn revoke(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let token_id = path.into_inner();
    let mut ctx = Ctx::new(
        &req,
        &state,
        Action::TokenRevoke,
        format!("token:{}", resource_id(&token_id)),
    );
    let principal = ctx.authenticate(&req).await?;
    if let Err(d) = principal.either(Permission::TokensManage) {
        return Err(ctx.deny(d).await);
    }
    // Tenant tokens see only their tenant's tokens; anything else is "not found".
    let target = match state.store.read().and_then(|t| t.token_by_id(&token_id)) {
        Ok(t) => t,
        Err(e) => return Err(ctx.internal(&e).await),
    };
    let visible = match (&target, principal.tenant_id()) {
        (Some(_), None) => true,
        (Some(t), Some(own)) => t.tenant_id.as_ref() == Some(own),
        (None, _) => false,
    };
    if !visible {
        return Err(ctx
            .reject(ApiError::not_found(format!(
                "token {} not found",
                resource_id(&token_id)
            )))
            .await);
    }
    let at = state.clock.now().unix_timestamp();
    if let Some(t) = target.as_ref().filter(|t| t.tenant_id.is_none()) {
        // Operator tokens: no revoking a more powerful one, and never the last one that
        // can manage tokens (nothing could make a new one: init runs once).
        if let Some(p) = t.permissions.iter().find(|p| !principal.has(**p)) {
            return Err(ctx
                .reject(ApiError::forbidden(format!(
                    "cannot revoke a token holding {} which this token lacks",
                    p.as_str()
                )))
                .await);
        }
        let admins = match state.store.read().and_then(|txn| txn.active_token_admins(at)) {
            Ok(ids) => ids,
            Err(e) => return Err(ctx.internal(&e).await),
        };
        if admins.len() == 1 && admins[0] == t.token_id {
            return Err(ctx
                .reject(ApiError::conflict(
                    "this is the last operator token able to manage tokens; create another one first",
                ))
                .await);
        }
    }
    let mut event = ctx.event();
    if let Some(t) = target.and_then(|t| t.tenant_id) {
        event = event.tenant(Some(t));
    }
    match state
        .store
        .commit(event, move |txn, _| txn.revoke_token(&token_id, at))
        .await
    {
        Ok(_) => {
            // Losing a revocation to a restored backup would revive the token: seal soon.
            state.integrity.critical_event();
            Ok(HttpResponse::NoContent().finish())
        }
        Err(CommitError::Refused(ChangeError::NotFound(m), _)) => {
            Err(ApiError::not_found(m).with_request_id(&ctx.request_id))
        }
        Err(e) => Err(ctx.commit_failed(&e).await),
    }
}
