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
use super::ctx::{resource_id, AnyToken, Ctx, OperatorOnly, Refusal, RouteSpec};
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

// Governance stays available under an integrity alarm: a rollback alarm is acknowledged
// through it (the handlers allow only `acknowledge_alarm` then).
const PROPOSE: RouteSpec<OperatorOnly> =
    RouteSpec::new(Action::ProposalCreate, OperatorOnly(Permission::GovernancePropose)).served_under_alarm();
const APPROVE: RouteSpec<AnyToken> = RouteSpec::new(Action::ProposalApprove, AnyToken).served_under_alarm();
const READ: RouteSpec<AnyToken> = RouteSpec::new(Action::DataAccess, AnyToken).served_under_alarm();

/// Map a governance error to a refusal; errors whose event is already durable are not
/// recorded again.
fn refusal(e: GovError) -> Refusal {
    match e {
        GovError::NotConfigured => Refusal::conflict(e.to_string()),
        GovError::NotFound(m) => Refusal::not_found(m),
        GovError::InvalidSignature(m) => Refusal::Failed(ApiError::invalid_signature(m)),
        GovError::Alarm(m) => Refusal::Failed(ApiError::integrity_alarm(m)),
        // The request's event (outcome `failed`) is already durable.
        GovError::Conflict(m) => Refusal::Recorded(ApiError::conflict(m)),
        GovError::Commit(e) => Refusal::commit(&e),
        GovError::Store(e) => Refusal::internal(e),
    }
}

/// `POST /v1/admin/proposals`
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let proposal_id = state.governance.new_proposal_id();
    let (ctx, auth) = Ctx::open(&req, &state, &PROPOSE, format!("proposal:{proposal_id}")).await?;
    let result = async {
        let body: CreateProposal = read_json(payload, state.max_body).await.map_err(Refusal::Failed)?;
        let op = Operation::parse(&body.operation, body.params).map_err(Refusal::invalid)?;
        if let (Some(alarm), false) = (state.alarm(), matches!(op, Operation::AcknowledgeAlarm(_))) {
            return Err(Refusal::Failed(ApiError::integrity_alarm(format!(
                "{alarm} (only acknowledge_alarm can be proposed under an integrity alarm)"
            ))));
        }
        let actor = auth.principal().actor().as_str();
        let p = state
            .governance
            .propose(proposal_id, op, actor, ctx.event())
            .await
            .map_err(refusal)?;
        Ok(HttpResponse::Created().json(serde_json::json!({
            "proposal_id": p.proposal_id,
            "digest": p.digest,
            "expires_at": p.expires_at,
            "approvals_needed": p.approvals_needed,
            "operation": p.op.name(),
            "params": p.op.params(),
        })))
    }
    .await;
    ctx.finish(result).await
}

/// `POST /v1/admin/proposals/{id}/approvals`
pub async fn approve(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let (ctx, _) = Ctx::open(&req, &state, &APPROVE, format!("proposal:{}", resource_id(&id))).await?;
    let result = async {
        let body: Approve = read_json(payload, state.max_body).await.map_err(Refusal::Failed)?;
        if body.approver.len() > 64 || body.signature.len() > 256 {
            return Err(Refusal::Failed(ApiError::invalid_signature(
                "approver or signature too long",
            )));
        }
        let p = state
            .governance
            .approve(&id, &body.approver, &body.signature, ctx.event())
            .await
            .map_err(refusal)?;
        Ok(HttpResponse::Ok().json(p.view(state.governance.now_unix())))
    }
    .await;
    ctx.finish(result).await
}

/// `GET /v1/admin/proposals/{id}`
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let (ctx, _) = Ctx::open(&req, &state, &READ, format!("proposal:{}", resource_id(&id))).await?;
    let result = match state.governance.get(&id) {
        Ok(Some(proposal)) => {
            let view = proposal.view(state.governance.now_unix());
            let event = ctx.event().detail("status", view["status"].clone());
            Ok((event, HttpResponse::Ok().json(view)))
        }
        Ok(None) => Err(Refusal::not_found(format!("proposal {} not found", resource_id(&id)))),
        Err(e) => Err(Refusal::internal(e)),
    };
    ctx.record_and_answer(result).await
}
