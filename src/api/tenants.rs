//! `/v1/admin/tenants` — operator tokens with `tenants:manage`.
//!
//! Creating a tenant follows "undo half-finished key work": generate the KEK in the HSM,
//! then commit the tenant + its `tenant_create` event; if the commit fails, destroy the
//! KEK we just made. A key that already exists under the label is never destroyed or
//! adopted (409): it may belong to another appliance sharing the token. Creations are
//! serialised.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::body::read_json;
use super::ctx::{resource_id, Ctx};
use super::error::ApiError;
use super::AppState;
use crate::audit::Action;
use crate::auth::Permission;
use crate::clock::rfc3339;
use crate::domain::TenantId;
use crate::keys::rotation::RotationError;
use crate::keys::KeyError;
use crate::store::{ChangeError, CommitError, TenantRecord};

/// `POST /v1/admin/tenants` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    tenant_id: String,
}

/// `POST /v1/admin/tenants`
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let mut ctx = Ctx::new(&req, &state, Action::TenantCreate, "tenant:*".to_owned());
    let principal = ctx.authenticate(&req).await?;
    let auth = match principal.operator(Permission::TenantsManage) {
        Ok(a) => a,
        Err(d) => return Err(ctx.deny(d).await),
    };
    let body: CreateTenant = match read_json(payload, state.max_body).await {
        Ok(b) => b,
        Err(e) => return Err(ctx.reject(e).await),
    };
    ctx.resource = format!("tenant:{}", resource_id(&body.tenant_id));
    let tenant = match TenantId::parse(body.tenant_id) {
        Ok(t) => t,
        Err(e) => return Err(ctx.reject(ApiError::invalid(e.to_string())).await),
    };

    let _serial = state.tenant_admin.lock().await;
    let (exists, destroyed) = match state
        .store
        .read()
        .and_then(|t| Ok((t.tenant(&tenant)?.is_some(), t.tenant_destroyed(&tenant)?)))
    {
        Ok(e) => e,
        Err(e) => return Err(ctx.internal(&e).await),
    };
    if exists {
        return Err(ctx
            .reject(ApiError::conflict(format!("tenant {tenant} already exists")))
            .await);
    }
    if destroyed {
        // Checked before any HSM key is made; `insert_tenant` checks again.
        return Err(ctx
            .reject(ApiError::conflict(format!(
                "tenant id {tenant} belonged to a destroyed tenant; tenant ids are not reused"
            )))
            .await);
    }
    let version = 1;
    let scope = auth.scope();
    match state.keys.create_kek(scope, &tenant, version).await {
        Ok(()) => {}
        Err(KeyError::Hsm(strongroom_hsm::HsmError::KeyExists(label))) => {
            // Never destroy a key we cannot prove is ours: it may belong to another
            // appliance sharing the token, or be an orphan of an interrupted creation.
            tracing::error!(%tenant, %label, "the HSM already holds this tenant's KEK label");
            return Err(ctx
                .reject(ApiError::conflict(format!(
                    "the HSM already holds a key labelled {label} (another appliance on this token, or an interrupted creation); an operator must inspect and remove it"
                )))
                .await);
        }
        Err(e) => {
            tracing::error!(request_id = %ctx.request_id, error = %e, "KEK creation failed");
            return Err(ctx.reject(ApiError::backend_unavailable()).await);
        }
    }
    let record = TenantRecord {
        tenant_id: tenant.clone(),
        key_version: version,
        created_at: rfc3339(state.clock.now()),
        pending_version: None,
        rotation_required: false,
        rotation_started_at: None,
        retired: Vec::new(),
    };
    let (rec, op_scope) = (record.clone(), scope.clone());
    let event = ctx.event().tenant(Some(tenant.clone())).detail("key_version", version);
    match state
        .store
        .commit(event, move |txn, _| txn.insert_tenant(&op_scope, &rec))
        .await
    {
        Ok(_) => Ok(HttpResponse::Created().json(&record)),
        Err(e) => {
            if let Err(undo) = state.keys.destroy_kek(scope, &tenant, version).await {
                tracing::error!(error = %undo, %tenant, "could not destroy the KEK of a failed tenant creation");
            }
            Err(match e {
                CommitError::Refused(ChangeError::Conflict(m), _) => {
                    ApiError::conflict(m).with_request_id(&ctx.request_id)
                }
                e => ctx.commit_failed(&e).await,
            })
        }
    }
}

/// `GET /v1/admin/tenants`
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut ctx = Ctx::new(&req, &state, Action::DataAccess, "tenant:*".to_owned());
    let principal = ctx.authenticate(&req).await?;
    if let Err(d) = principal.operator(Permission::TenantsManage) {
        return Err(ctx.deny(d).await);
    }
    let tenants = match state.store.read().and_then(|t| t.tenants()) {
        Ok(t) => t,
        Err(e) => return Err(ctx.internal(&e).await),
    };
    let event = ctx.event().detail("count", tenants.len());
    if let Err(e) = state.store.record(event).await {
        return Err(ctx.internal(&e).await);
    }
    Ok(HttpResponse::Ok().json(json!({ "tenants": tenants })))
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
    let mut ctx = Ctx::new(&req, &state, Action::KeyRotate, format!("tenant:{}", resource_id(&raw)));
    let principal = ctx.authenticate(&req).await?;
    if let Err(d) = principal.operator(Permission::KeysRotate) {
        return Err(ctx.deny(d).await);
    }
    let tenant = match TenantId::parse(raw) {
        Ok(t) => t,
        Err(e) => return Err(ctx.reject(ApiError::invalid(e.to_string())).await),
    };
    let event = ctx.event().tenant(Some(tenant.clone()));
    match state.rotation.rotate(&tenant, event).await {
        Ok(report) => {
            state.integrity.critical_event();
            Ok(HttpResponse::Ok().json(report))
        }
        Err(RotationError::NotFound) => Err(ctx
            .reject(ApiError::not_found(format!("tenant {tenant} not found")))
            .await),
        Err(RotationError::ForeignKey(label)) => Err(ctx
            .reject(ApiError::conflict(format!(
                "the HSM already holds a key labelled {label} that this appliance did not create; an operator must inspect it"
            )))
            .await),
        Err(RotationError::Key(e)) => {
            tracing::error!(request_id = %ctx.request_id, error = %e, "rotation: HSM failure");
            Err(ctx.reject(ApiError::backend_unavailable()).await)
        }
        Err(e) => Err(ctx.internal(&e).await),
    }
}
