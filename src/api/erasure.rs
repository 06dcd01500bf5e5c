//! `DELETE /v1/admin/entity/{entity_id}` — GDPR erasure (tenant token with
//! `entity:erase`; operators hold no such permission).

use actix_web::{web, HttpRequest, HttpResponse};

use super::ctx::{resource_id, Ctx, Refusal, RouteSpec, TenantOnly};
use super::error::ApiError;
use super::AppState;
use crate::audit::Action;
use crate::auth::Permission;
use crate::domain::EntityId;
use crate::erasure::ErasureError;

const ERASE: RouteSpec<TenantOnly> = RouteSpec::new(Action::EntityErase, TenantOnly(Permission::EntityErase));

/// `DELETE /v1/admin/entity/{entity_id}`
pub async fn erase(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let raw = path.into_inner();
    let (ctx, auth) = Ctx::open(&req, &state, &ERASE, format!("entity:{}", resource_id(&raw))).await?;
    let result = async {
        let entity = EntityId::parse(raw).map_err(Refusal::invalid)?;
        match state.erasure.erase(&auth, &entity, ctx.event()).await {
            Ok(report) => Ok(HttpResponse::Ok().json(report)),
            Err(ErasureError::NotFound) => Err(Refusal::HiddenNotFound),
            Err(ErasureError::Commit(e)) => Err(Refusal::commit(&e)),
            Err(e) => Err(Refusal::internal(e)),
        }
    }
    .await;
    ctx.finish(result).await
}
