//! `/v1/admin/tenants` — operator tokens with `tenants:manage`.
//!
//! The lifecycle rules (KEK first, undo on a failed commit, no id reuse) are the tenants
//! service's (`crate::tenants`); these handlers only parse and answer.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::body::read_json;
use super::ctx::{resource_id, Ctx, OperatorOnly, Refusal, RouteSpec};
use super::error::ApiError;
use super::AppState;
use crate::audit::Action;
use crate::auth::Permission;
use crate::domain::TenantId;
use crate::keys::rotation::RotationError;
use crate::tenants::TenantError;

/// `POST /v1/admin/tenants` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    tenant_id: String,
}

const CREATE: RouteSpec<OperatorOnly> = RouteSpec::new(Action::TenantCreate, OperatorOnly(Permission::TenantsManage));
const LIST: RouteSpec<OperatorOnly> = RouteSpec::new(Action::DataAccess, OperatorOnly(Permission::TenantsManage));
const ROTATE: RouteSpec<OperatorOnly> = RouteSpec::new(Action::KeyRotate, OperatorOnly(Permission::KeysRotate));

fn refusal(e: TenantError) -> Refusal {
    match e {
        e @ (TenantError::Exists(_) | TenantError::Destroyed(_) | TenantError::KeyExists(_)) => {
            Refusal::conflict(e.to_string())
        }
        TenantError::Hsm(e) => Refusal::Backend(format!("KEK creation failed: {e}")),
        // The writer recorded the `failed` event with the refused change.
        TenantError::Refused(m) => Refusal::Recorded(ApiError::conflict(m)),
        TenantError::Commit(e) => Refusal::commit(&e),
        TenantError::Store(e) => Refusal::internal(e),
    }
}

/// `POST /v1/admin/tenants`
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (mut ctx, auth) = Ctx::open(&req, &state, &CREATE, "tenant:*".to_owned()).await?;
    let result = async {
        let body: CreateTenant = read_json(payload, state.max_body).await.map_err(Refusal::Failed)?;
        ctx.set_resource(format!("tenant:{}", resource_id(&body.tenant_id)));
        let tenant = TenantId::parse(body.tenant_id).map_err(Refusal::invalid)?;
        let record = state
            .tenants
            .create(&auth, tenant, ctx.event())
            .await
            .map_err(refusal)?;
        Ok(HttpResponse::Created().json(&record))
    }
    .await;
    ctx.finish(result).await
}

/// `GET /v1/admin/tenants`
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (ctx, _) = Ctx::open(&req, &state, &LIST, "tenant:*".to_owned()).await?;
    let result = match state.tenants.list() {
        Ok(tenants) => Ok((
            ctx.event().detail("count", tenants.len()),
            HttpResponse::Ok().json(json!({ "tenants": tenants })),
        )),
        Err(e) => Err(Refusal::internal(e)),
    };
    ctx.record_and_answer(result).await
}

/// `POST /v1/admin/tenants/{tenant_id}/rotate` — operator `keys:rotate`. Creates KEK
/// version n+1, rewraps every DEK (records untouched), retires version n for the
/// retention window. Synchronous: answers when every DEK is rewrapped.
pub async fn rotate(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let raw = path.into_inner();
    let (ctx, _) = Ctx::open(&req, &state, &ROTATE, format!("tenant:{}", resource_id(&raw))).await?;
    let result = async {
        let tenant = TenantId::parse(raw).map_err(Refusal::invalid)?;
        let event = ctx.event().tenant(Some(tenant.clone()));
        match state.tenants.rotate(&tenant, event).await {
            Ok(report) => Ok(HttpResponse::Ok().json(report)),
            Err(RotationError::NotFound) => Err(Refusal::not_found(format!("tenant {tenant} not found"))),
            Err(RotationError::ForeignKey(label)) => Err(Refusal::conflict(format!(
                "the HSM already holds a key labelled {label} that this appliance did not create; an operator must inspect it"
            ))),
            Err(RotationError::Key(e)) => Err(Refusal::Backend(format!("rotation: HSM failure: {e}"))),
            Err(e) => Err(Refusal::internal(e)),
        }
    }
    .await;
    ctx.finish(result).await
}
