//! `/v1/admin/tokens` — create and revoke bearer tokens.
//!
//! The delegation rules (no privilege escalation, last admin kept) are the token
//! service's (`crate::auth::service`); these handlers only parse and answer.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::body::read_json;
use super::ctx::{resource_id, Ctx, EitherKind, Refusal, RouteSpec};
use super::error::ApiError;
use super::AppState;
use crate::audit::Action;
use crate::auth::tokens::reveal;
use crate::auth::Permission;
use crate::store::ChangeError;
use crate::tokens::{TokenError, TokenRequest};

const MANAGE: RouteSpec<EitherKind> = RouteSpec::new(Action::TokenCreate, EitherKind(Permission::TokensManage));
const REVOKE: RouteSpec<EitherKind> = RouteSpec::new(Action::TokenRevoke, EitherKind(Permission::TokensManage));

fn refusal(e: TokenError) -> Refusal {
    match e {
        TokenError::Invalid(m) => Refusal::invalid(m),
        TokenError::Forbidden(m) => Refusal::forbidden(m),
        TokenError::NotFound(m) => Refusal::not_found(m),
        // The writer recorded the request's `failed` event with the refused change.
        TokenError::Refused(ChangeError::Conflict(_), m) => Refusal::Recorded(ApiError::conflict(m)),
        TokenError::Refused(_, m) => Refusal::Recorded(ApiError::not_found(m)),
        TokenError::Commit(e) => Refusal::commit(&e),
        TokenError::Store(e) => Refusal::internal(e),
    }
}

/// `POST /v1/admin/tokens`
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (mut ctx, auth) = Ctx::open(&req, &state, &MANAGE, "token:*".to_owned()).await?;
    let result = async {
        let request: TokenRequest = read_json(payload, state.max_body).await.map_err(Refusal::Failed)?;
        let prepared = state.tokens.prepare(auth.principal(), request).map_err(refusal)?;
        ctx.set_resource(format!("token:{}", prepared.token_id()));
        let created = state
            .tokens
            .create(auth.principal(), prepared, ctx.event())
            .await
            .map_err(refusal)?;
        Ok(HttpResponse::Created().json(json!({
            "token_id": created.record.token_id,
            "token": reveal(&created.minted),
            "expires_at": created.expires_at,
        })))
    }
    .await;
    ctx.finish(result).await
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
    let result = match state.tokens.revoke(auth.principal(), token_id, ctx.event()).await {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        Err(e) => Err(refusal(e)),
    };
    ctx.finish(result).await
}
