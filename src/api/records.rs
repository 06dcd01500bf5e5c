//! `/v1/entities/{entity_id}/records...` — tenant tokens only.

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use super::body::{page_limit, read_json, time_param};
use super::ctx::{resource_id, Ctx};
use super::error::ApiError;
use super::AppState;
use crate::audit::Action;
use crate::auth::Permission;
use crate::domain::{EntityId, RecordId};
use crate::keys::KeyError;
use crate::records::{ListParams, RecordList, RecordsError, WriteBatch, DEFAULT_LIMIT, MAX_LIMIT};

async fn map_err(ctx: &Ctx, e: RecordsError) -> ApiError {
    match e {
        RecordsError::Invalid(m) => ctx.reject(ApiError::invalid(m)).await,
        RecordsError::NotFound => ctx.reject_not_found().await,
        // Only made from a change the writer refused: its event (outcome `failed`) is
        // already durable, so answer without recording a second one.
        RecordsError::Conflict(m) => ApiError::conflict(m).with_request_id(&ctx.request_id),
        RecordsError::Commit(e @ crate::store::CommitError::Refused(..)) => {
            tracing::error!(request_id = %ctx.request_id, error = %e, "write refused by the store");
            ApiError::internal().with_request_id(&ctx.request_id)
        }
        // A wrapped DEK that fails authentication was tampered with or moved: an
        // integrity failure, not an unavailable HSM.
        RecordsError::Key(k @ (KeyError::Malformed | KeyError::Hsm(strongroom_hsm::HsmError::UnwrapFailed))) => {
            ctx.internal(&k).await
        }
        RecordsError::Key(k) => {
            tracing::error!(request_id = %ctx.request_id, error = %k, "key service failure");
            ctx.reject(ApiError::backend_unavailable()).await
        }
        e => ctx.internal(&e).await,
    }
}

/// `POST /v1/entities/{entity_id}/records`
pub async fn write(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let raw_entity = path.into_inner();
    let mut ctx = Ctx::new(
        &req,
        &state,
        Action::DataWrite,
        format!("entity:{}", resource_id(&raw_entity)),
    );
    let principal = ctx.authenticate(&req).await?;
    let auth = match principal.tenant(Permission::RecordsWrite) {
        Ok(a) => a,
        Err(d) => return Err(ctx.deny(d).await),
    };
    let entity = match EntityId::parse(raw_entity) {
        Ok(e) => e,
        Err(e) => return Err(ctx.reject(ApiError::invalid(e.to_string())).await),
    };
    let batch: WriteBatch = match read_json(payload, state.max_body).await {
        Ok(b) => b,
        Err(e) => return Err(ctx.reject(e).await),
    };
    match state.records.write(&auth, &entity, batch, ctx.event()).await {
        Ok(c) => Ok(HttpResponse::Created().json(json!({"ids": c.value}))),
        Err(e) => Err(map_err(&ctx, e).await),
    }
}

/// `GET /v1/entities/{entity_id}/records/{record_id}`
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (raw_entity, raw_record) = path.into_inner();
    let resource = format!(
        "entity:{}/record:{}",
        resource_id(&raw_entity),
        resource_id(&raw_record)
    );
    let mut ctx = Ctx::new(&req, &state, Action::DataAccess, resource);
    let principal = ctx.authenticate(&req).await?;
    let auth = match principal.tenant(Permission::RecordsRead) {
        Ok(a) => a,
        Err(d) => return Err(ctx.deny(d).await),
    };
    let (entity, record) = match (EntityId::parse(raw_entity), RecordId::parse(raw_record)) {
        (Ok(e), Ok(r)) => (e, r),
        (Err(e), _) | (_, Err(e)) => return Err(ctx.reject(ApiError::invalid(e.to_string())).await),
    };
    match state.records.get(&auth, &entity, &record, ctx.event()).await {
        Ok(r) => Ok(HttpResponse::Ok().json(r)),
        Err(e) => Err(map_err(&ctx, e).await),
    }
}

/// Query string of a listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    start: Option<String>,
    end: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn parse_list(q: ListQuery) -> Result<ListParams, ApiError> {
    let start = time_param(q.start.as_deref())?.unwrap_or(0);
    let end = time_param(q.end.as_deref())?.unwrap_or(u64::MAX);
    let limit = page_limit(q.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let after = q
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(decode_cursor)
        .transpose()?;
    Ok(ListParams {
        start,
        end,
        limit,
        after,
    })
}

/// The cursor is the position (timestamp, record id) of the last record returned. It is
/// only ever applied inside the caller's own entity range, so it grants nothing.
fn encode_cursor(ts: u64, id: &RecordId) -> String {
    let mut b = ts.to_be_bytes().to_vec();
    b.extend_from_slice(id.as_str().as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn decode_cursor(s: &str) -> Result<(u64, RecordId), ApiError> {
    let bad = || ApiError::invalid("invalid cursor");
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad())?;
    crate::store::layout::split_record_suffix(&b).ok_or_else(bad)
}

/// `GET /v1/entities/{entity_id}/records?start=&end=&limit=&cursor=`
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let raw_entity = path.into_inner();
    let mut ctx = Ctx::new(
        &req,
        &state,
        Action::DataAccess,
        format!("entity:{}", resource_id(&raw_entity)),
    );
    let principal = ctx.authenticate(&req).await?;
    let auth = match principal.tenant(Permission::RecordsRead) {
        Ok(a) => a,
        Err(d) => return Err(ctx.deny(d).await),
    };
    let entity = match EntityId::parse(raw_entity) {
        Ok(e) => e,
        Err(e) => return Err(ctx.reject(ApiError::invalid(e.to_string())).await),
    };
    let params = match web::Query::<ListQuery>::from_query(req.query_string()) {
        Ok(q) => match parse_list(q.into_inner()) {
            Ok(p) => p,
            Err(e) => return Err(ctx.reject(e).await),
        },
        Err(e) => return Err(ctx.reject(ApiError::invalid(format!("invalid query: {e}"))).await),
    };
    match state.records.list(&auth, &entity, params, ctx.event()).await {
        Ok((records, next)) => Ok(HttpResponse::Ok().json(RecordList {
            records,
            next_cursor: next.map(|(ts, id)| encode_cursor(ts, &id)),
        })),
        Err(e) => Err(map_err(&ctx, e).await),
    }
}
