//! `POST /v1/query` — differentially private aggregates (tenant tokens with
//! `query:aggregate`; operators cannot query).
//!
//! Invariant: every request ends in its audit event. Refusals before the charge (401,
//! 403, 400) are recorded by [`Ctx`]; a charged, replayed, exhausted or conflicting query
//! is recorded by the charging transaction itself (`data_query`, with `epsilon_charged`),
//! so those answers add no second event. Two cases add one on purpose: storing the answer
//! of an `Idempotency-Key` query (a write, so it carries its own `data_query` event with
//! `idempotency: "answer_stored"`), and a failure after the charge (HSM, tampered record:
//! a `data_query` event with outcome `failed`, the charge standing).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::body::read_json;
use super::ctx::Ctx;
use super::error::{ApiError, ErrorCode};
use super::AppState;
use crate::audit::Action;
use crate::auth::Permission;
use crate::privacy::{parse_idempotency_key, PrivacyError, QueryRequest};

fn error(status: StatusCode, code: ErrorCode, message: String) -> ApiError {
    ApiError::new(status, code, message)
}

async fn map_err(ctx: &Ctx, e: PrivacyError) -> ApiError {
    let rid = ctx.request_id.as_str();
    match e {
        PrivacyError::Invalid(m) => ctx.reject(ApiError::invalid(m)).await,
        PrivacyError::OverCap(m) => {
            ctx.reject(error(StatusCode::BAD_REQUEST, ErrorCode::EpsilonOverCap, m))
                .await
        }
        e @ PrivacyError::Exhausted { .. } => {
            error(StatusCode::FORBIDDEN, ErrorCode::PrivacyBudgetExhausted, e.to_string()).with_request_id(rid)
        }
        PrivacyError::Conflict(m) => ApiError::conflict(m).with_request_id(rid),
        PrivacyError::Key(k) => {
            tracing::error!(request_id = %rid, error = %k, "key service failure during a private query");
            ctx.reject(ApiError::backend_unavailable()).await
        }
        e if e.recorded() => {
            tracing::error!(request_id = %rid, error = %e, "private query refused by the store");
            ApiError::internal().with_request_id(rid)
        }
        e => ctx.internal(&e).await,
    }
}

/// `POST /v1/query`
pub async fn query(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let mut ctx = Ctx::new(&req, &state, Action::DataQuery, "tenant:<unknown>".to_owned());
    let principal = ctx.authenticate(&req).await?;
    if let Some(t) = principal.tenant_id() {
        ctx.resource = format!("tenant:{t}");
    }
    let auth = match principal.tenant(Permission::QueryAggregate) {
        Ok(a) => a,
        Err(d) => return Err(ctx.deny(d).await),
    };
    let key = match req.headers().get("idempotency-key") {
        None => None,
        Some(v) => match parse_idempotency_key(v.as_bytes()) {
            Ok(k) => Some(k),
            Err(e) => return Err(map_err(&ctx, e).await),
        },
    };
    let request: QueryRequest = match read_json(payload, state.max_body).await {
        Ok(r) => r,
        Err(e) => return Err(ctx.reject(e).await),
    };
    match state.privacy.query(&auth, request, key, ctx.event()).await {
        Ok(body) => Ok(HttpResponse::Ok().content_type("application/json").body(body)),
        Err(e) => Err(map_err(&ctx, e).await),
    }
}
