//! `DELETE /v1/admin/entity/{entity_id}` — GDPR erasure (tenant token with
//! `entity:erase`; operators hold no such permission).

use actix_web::{web, HttpRequest, HttpResponse};

use super::ctx::{resource_id, Ctx};
use super::error::ApiError;
use super::AppState;
use crate::audit::Action;
use crate::auth::Permission;
use crate::domain::EntityId;
use crate::erasure::ErasureError;

/// `DELETE /v1/admin/entity/{entity_id}`
pub async fn erase(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let raw = path.into_inner();
    let mut ctx = Ctx::new(
        &req,
        &state,
        Action::EntityErase,
        format!("entity:{}", resource_id(&raw)),
    );
    let principal = ctx.authenticate(&req).await?;
    let auth = match principal.tenant(Permission::EntityErase) {
        Ok(a) => a,
        Err(d) => return Err(ctx.deny(d).await),
    };
    let entity = match EntityId::parse(raw) {
        Ok(e) => e,
        Err(e) => return Err(ctx.reject(ApiError::invalid(e.to_string())).await),
    };
    match state.erasure.erase(&auth, &entity, ctx.event()).await {
        Ok(report) => Ok(HttpResponse::Ok().json(report)),
        Err(ErasureError::NotFound) => Err(ctx.reject_not_found().await),
        Err(ErasureError::Commit(e)) => Err(ctx.commit_failed(&e).await),
        Err(e) => Err(ctx.internal(&e).await),
    }
}
