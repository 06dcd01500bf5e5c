//! `/v1/admin/proposals` — multi-party governance (SPEC §6, §9; `crate::governance`).
//!
//! - `POST /v1/admin/proposals`: operator token with `governance:propose`.
//! - `POST /v1/admin/proposals/{id}/approvals`: any valid token; the Ed25519 signature
//!   over the proposal's digest is the authority.
//! - `GET /v1/admin/proposals/{id}`: any valid token (approvers need the digest).
//!
//! Invariant: every request leaves exactly one audit event of its own
//! (`proposal_create`, `proposal_approve`, or `data_access` for a read; refusals through
//! [`Ctx::reject`]). An approval that completes the quorum is followed by the execution's
//! own system events (`proposal_execute`, and `tenant_destroy` for `destroy_tenant`).
//! Under an integrity alarm these endpoints stay available, but only for
//! `acknowledge_alarm` proposals (everything else → 503 `integrity_alarm`).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;

use super::body::read_json;
use super::ctx::{resource_id, Ctx};
use super::error::ApiError;
use super::AppState;
use crate::audit::Action;
use crate::auth::Permission;
use crate::governance::{GovError, Operation};

/// `POST /v1/admin/proposals` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProposal {
    operation: String,
    #[serde(default)]
    params: Value,
}

/// `POST /v1/admin/proposals/{id}/approvals` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approve {
    approver: String,
    signature: String,
}

/// Map a governance error to an answer; errors whose event is not yet durable are
/// audited here.
async fn refuse(ctx: &Ctx, e: GovError) -> ApiError {
    match e {
        GovError::NotConfigured => ctx.reject(ApiError::conflict(e.to_string())).await,
        GovError::NotFound(m) => ctx.reject(ApiError::not_found(m)).await,
        GovError::InvalidSignature(m) => ctx.reject(ApiError::invalid_signature(m)).await,
        GovError::Alarm(m) => ctx.reject(ApiError::integrity_alarm(m)).await,
        // The request's event (outcome `failed`) is already durable.
        GovError::Conflict(m) => ApiError::conflict(m).with_request_id(&ctx.request_id),
        GovError::Commit(e) => ctx.commit_failed(&e).await,
        GovError::Store(e) => ctx.internal(&e).await,
    }
}

/// `POST /v1/admin/proposals`
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let proposal_id = state.governance.new_proposal_id();
    let mut ctx = Ctx::new(&req, &state, Action::ProposalCreate, format!("proposal:{proposal_id}"));
    ctx.alarm_exempt = true;
    let principal = ctx.authenticate(&req).await?;
    if let Err(d) = principal.operator(Permission::GovernancePropose) {
        return Err(ctx.deny(d).await);
    }
    let body: CreateProposal = match read_json(payload, state.max_body).await {
        Ok(b) => b,
        Err(e) => return Err(ctx.reject(e).await),
    };
    let op = match Operation::parse(&body.operation, body.params) {
        Ok(op) => op,
        Err(m) => return Err(ctx.reject(ApiError::invalid(m.to_string())).await),
    };
    if let (Some(alarm), false) = (state.alarm(), matches!(op, Operation::AcknowledgeAlarm(_))) {
        return Err(ctx
            .reject(ApiError::integrity_alarm(format!(
                "{alarm} (only acknowledge_alarm can be proposed under an integrity alarm)"
            )))
            .await);
    }
    let event = ctx.event();
    match state
        .governance
        .propose(proposal_id, op, principal.actor().as_str(), event)
        .await
    {
        Ok(p) => Ok(HttpResponse::Created().json(serde_json::json!({
            "proposal_id": p.proposal_id,
            "digest": p.digest,
            "expires_at": p.expires_at,
            "approvals_needed": p.approvals_needed,
            "operation": p.op.name(),
            "params": p.op.params(),
        }))),
        Err(e) => Err(refuse(&ctx, e).await),
    }
}

/// `POST /v1/admin/proposals/{id}/approvals`
pub async fn approve(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let mut ctx = Ctx::new(
        &req,
        &state,
        Action::ProposalApprove,
        format!("proposal:{}", resource_id(&id)),
    );
    ctx.alarm_exempt = true;
    ctx.authenticate(&req).await?;
    let body: Approve = match read_json(payload, state.max_body).await {
        Ok(b) => b,
        Err(e) => return Err(ctx.reject(e).await),
    };
    if body.approver.len() > 64 || body.signature.len() > 256 {
        return Err(ctx
            .reject(ApiError::invalid_signature("approver or signature too long"))
            .await);
    }
    let event = ctx.event();
    match state
        .governance
        .approve(&id, &body.approver, &body.signature, event)
        .await
    {
        Ok(p) => Ok(HttpResponse::Ok().json(p.view(state.governance.now_unix()))),
        Err(e) => Err(refuse(&ctx, e).await),
    }
}

/// `GET /v1/admin/proposals/{id}`
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let mut ctx = Ctx::new(
        &req,
        &state,
        Action::DataAccess,
        format!("proposal:{}", resource_id(&id)),
    );
    ctx.alarm_exempt = true;
    ctx.authenticate(&req).await?;
    let proposal = match state.governance.get(&id) {
        Ok(Some(p)) => p,
        Ok(None) => {
            return Err(ctx
                .reject(ApiError::not_found(format!("proposal {} not found", resource_id(&id))))
                .await)
        }
        Err(e) => return Err(ctx.internal(&e).await),
    };
    let view = proposal.view(state.governance.now_unix());
    let event = ctx.event().detail("status", view["status"].clone());
    if let Err(e) = state.store.record(event).await {
        return Err(ctx.internal(&e).await);
    }
    Ok(HttpResponse::Ok().json(view))
}
