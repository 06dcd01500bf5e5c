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
use super::ctx::{Ctx, Refusal, RouteSpec, TenantOnly};
use super::error::{ApiError, ErrorCode};
use super::AppState;
use crate::audit::Action;
use crate::auth::Permission;
use crate::privacy::{parse_idempotency_key, PrivacyError, QueryRequest};

const QUERY: RouteSpec<TenantOnly> =
    RouteSpec::new(Action::DataQuery, TenantOnly(Permission::QueryAggregate)).on_caller_tenant();

fn refusal(e: PrivacyError) -> Refusal {
    let error = |status, code, message| ApiError::new(status, code, message);
    match e {
        PrivacyError::Invalid(m) => Refusal::invalid(m),
        PrivacyError::OverCap(m) => Refusal::Failed(error(StatusCode::BAD_REQUEST, ErrorCode::EpsilonOverCap, m)),
        // Recorded by the charging transaction (`data_query`, outcome `denied`).
        e @ PrivacyError::Exhausted { .. } => Refusal::Recorded(error(
            StatusCode::FORBIDDEN,
            ErrorCode::PrivacyBudgetExhausted,
            e.to_string(),
        )),
        PrivacyError::Conflict(m) => Refusal::Recorded(ApiError::conflict(m)),
        PrivacyError::Key(k) => Refusal::Backend(format!("key service failure during a private query: {k}")),
        e if e.recorded() => Refusal::RecordedInternal(format!("private query refused by the store: {e}")),
        e => Refusal::internal(e),
    }
}

/// `POST /v1/query`
pub async fn query(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (ctx, auth) = Ctx::open(&req, &state, &QUERY, "tenant:<unknown>".to_owned()).await?;
    let result = async {
        let key = match req.headers().get("idempotency-key") {
            None => None,
            Some(v) => Some(parse_idempotency_key(v.as_bytes()).map_err(refusal)?),
        };
        let request: QueryRequest = read_json(payload, state.max_body).await.map_err(Refusal::Failed)?;
        let body = state
            .privacy
            .query(&auth, request, key, ctx.event())
            .await
            .map_err(refusal)?;
        Ok(HttpResponse::Ok().content_type("application/json").body(body))
    }
    .await;
    ctx.finish(result).await
}
