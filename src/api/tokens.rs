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
use super::ctx::{resource_id, Ctx, EitherKind, Refusal, RouteSpec};
use super::error::ApiError;
use super::AppState;
use crate::audit::{Action, PendingEvent};
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

const MANAGE: RouteSpec<EitherKind> = RouteSpec::new(Action::TokenCreate, EitherKind(Permission::TokensManage));
const REVOKE: RouteSpec<EitherKind> = RouteSpec::new(Action::TokenRevoke, EitherKind(Permission::TokensManage));

/// Check a token request against the creator's own authority.
fn check_grant(creator: &Principal, req: &CreateToken) -> Result<(), Refusal> {
    if req.permissions.is_empty() {
        return Err(Refusal::invalid("permissions must not be empty"));
    }
    // Actor names the appliance uses for itself cannot be minted, so audit events by
    // `system:*` are the appliance's own; `operator:*` names belong to operator tokens.
    let actor = req.actor.as_str();
    if actor.starts_with("system:") || actor == "system" || actor == "anonymous" {
        return Err(Refusal::invalid(format!("actor {actor} is reserved for the appliance")));
    }
    if req.tenant_id.is_some() && actor.starts_with("operator:") {
        return Err(Refusal::invalid("operator:* actors are for operator tokens"));
    }
    match (&req.tenant_id, creator.kind()) {
        (None, TokenKind::Operator) => {
            if let Some(p) = req.permissions.iter().find(|p| p.tenant_only()) {
                return Err(Refusal::invalid(format!("operator tokens cannot hold {}", p.as_str())));
            }
            if let Some(p) = req.permissions.iter().find(|p| !creator.has(**p)) {
                return Err(Refusal::forbidden(format!(
                    "cannot grant {} which this token lacks",
                    p.as_str()
                )));
            }
        }
        (Some(_), TokenKind::Operator) => {
            if let Some(p) = req.permissions.iter().find(|p| p.operator_only()) {
                return Err(Refusal::invalid(format!("tenant tokens cannot hold {}", p.as_str())));
            }
        }
        (None, TokenKind::Tenant(_)) => return Err(Refusal::forbidden("tenant tokens cannot create operator tokens")),
        (Some(t), TokenKind::Tenant(own)) => {
            if t != own {
                return Err(Refusal::forbidden(
                    "tenant tokens can only create tokens for their own tenant",
                ));
            }
            if let Some(p) = req.permissions.iter().find(|p| !creator.has(**p)) {
                return Err(Refusal::forbidden(format!(
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
    let (mut ctx, auth) = Ctx::open(&req, &state, &MANAGE, "token:*".to_owned()).await?;
    let result = async {
        let body: CreateToken = read_json(payload, state.max_body).await.map_err(Refusal::Failed)?;
        let principal = auth.principal();
        check_grant(principal, &body)?;
        let ttl = body.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
        if !(1..=MAX_TTL_SECS).contains(&ttl) {
            return Err(Refusal::invalid(format!("ttl_secs must be from 1 to {MAX_TTL_SECS}")));
        }
        if let Some(t) = &body.tenant_id {
            if state
                .store
                .read()
                .and_then(|txn| txn.tenant(t))
                .map_err(Refusal::internal)?
                .is_none()
            {
                return Err(Refusal::not_found(format!("tenant {t} not found")));
            }
        }
        let minted = mint(&state.random);
        ctx.set_resource(format!("token:{}", minted.token_id));
        let (record, expires_at) = token_record(&state, principal, body, ttl, minted.token_id.clone());
        let event = token_event(ctx.event(), &record, &expires_at);
        let (hash, rec) = (minted.hash, record.clone());
        state
            .store
            .commit(event, move |txn, _| txn.insert_token(&hash, &rec))
            .await
            .map_err(|e| Refusal::commit(&e))?;
        // A new credential is security-critical: seal soon (rate limited).
        state.integrity.critical_event();
        Ok(HttpResponse::Created().json(json!({
            "token_id": record.token_id,
            "token": reveal(&minted),
            "expires_at": expires_at,
        })))
    }
    .await;
    ctx.finish(result).await
}

/// The record of a new token: a token never outlives the token that made it. Returns it
/// with its expiry as shown, from the stored value (whole seconds), so what is shown is
/// what is enforced.
fn token_record(
    state: &AppState,
    creator: &Principal,
    body: CreateToken,
    ttl: i64,
    token_id: String,
) -> (TokenRecord, String) {
    let now = state.clock.now();
    let ttl = ttl
        .min(creator.expires_at().saturating_sub(now.unix_timestamp()))
        .max(0);
    let record = TokenRecord {
        token_id,
        actor: body.actor,
        tenant_id: body.tenant_id,
        permissions: body.permissions,
        created_at: now.unix_timestamp(),
        expires_at: now.unix_timestamp() + ttl,
        revoked_at: None,
    };
    let expires_at = rfc3339(time::OffsetDateTime::from_unix_timestamp(record.expires_at).unwrap_or(now));
    (record, expires_at)
}

fn token_event(event: PendingEvent, record: &TokenRecord, expires_at: &str) -> PendingEvent {
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

/// Operator tokens: no revoking a more powerful one, and never the last one that can
/// manage tokens (nothing could make a new one: init runs once).
fn check_revoke(state: &AppState, principal: &Principal, target: &TokenRecord, at: i64) -> Result<(), Refusal> {
    if let Some(p) = target.permissions.iter().find(|p| !principal.has(**p)) {
        return Err(Refusal::forbidden(format!(
            "cannot revoke a token holding {} which this token lacks",
            p.as_str()
        )));
    }
    let admins = state
        .store
        .read()
        .and_then(|txn| txn.active_token_admins(at))
        .map_err(Refusal::internal)?;
    if admins.len() == 1 && admins[0] == target.token_id {
        return Err(Refusal::conflict(
            "this is the last operator token able to manage tokens; create another one first",
        ));
    }
    Ok(())
}

/// `DELETE /v1/admin/tokens/{token_id}`
pub async fn revoke(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let token_id = path.into_inner();
    let resource = format!("token:{}", resource_id(&token_id));
    let (ctx, auth) = Ctx::open(&req, &state, &REVOKE, resource).await?;
    let result = async {
        let principal = auth.principal();
        // Tenant tokens see only their tenant's tokens; anything else is "not found".
        let target = state
            .store
            .read()
            .and_then(|t| t.token_by_id(&token_id))
            .map_err(Refusal::internal)?
            .filter(|t| {
                principal
                    .tenant_id()
                    .is_none_or(|own| t.tenant_id.as_ref() == Some(own))
            });
        let Some(target) = target else {
            return Err(Refusal::not_found(format!(
                "token {} not found",
                resource_id(&token_id)
            )));
        };
        let at = state.clock.now().unix_timestamp();
        if target.tenant_id.is_none() {
            check_revoke(&state, principal, &target, at)?;
        }
        let event = ctx.event();
        let event = match target.tenant_id {
            Some(t) => event.tenant(Some(t)),
            None => event,
        };
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
            Err(CommitError::Refused(ChangeError::NotFound(m), _)) => Err(Refusal::Recorded(ApiError::not_found(m))),
            Err(e) => Err(Refusal::commit(&e)),
        }
    }
    .await;
    ctx.finish(result).await
}
