//! `/v1/entities/{entity_id}/records...` — tenant tokens only.

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use super::body::{page_limit, read_json, time_param};
use super::ctx::{resource_id, Ctx, Refusal, RouteSpec, TenantOnly};
use super::error::ApiError;
use super::AppState;
use crate::audit::Action;
use crate::auth::Permission;
use crate::domain::{EntityId, RecordId};
use crate::keys::KeyError;
use crate::records::{ListParams, RecordList, RecordsError, WriteBatch, DEFAULT_LIMIT, MAX_LIMIT};

/// Routes.
const WRITE: RouteSpec<TenantOnly> = RouteSpec::new(Action::DataWrite, TenantOnly(Permission::RecordsWrite));
const READ: RouteSpec<TenantOnly> = RouteSpec::new(Action::DataAccess, TenantOnly(Permission::RecordsRead));

fn refusal(e: RecordsError) -> Refusal {
    match e {
        RecordsError::Invalid(m) => Refusal::invalid(m),
        RecordsError::NotFound => Refusal::HiddenNotFound,
        // Only made from a change the writer refused: its event (outcome `failed`) is
        // already durable, so answer without recording a second one.
        RecordsError::Conflict(m) => Refusal::Recorded(ApiError::conflict(m)),
        RecordsError::Commit(e @ crate::store::CommitError::Refused(..)) => {
            Refusal::RecordedInternal(format!("write refused by the store: {e}"))
        }
        // A wrapped DEK that fails authentication was tampered with or moved: an
        // integrity failure, not an unavailable HSM.
        RecordsError::Key(k @ (KeyError::Malformed | KeyError::Hsm(strongroom_hsm::HsmError::UnwrapFailed))) => {
            Refusal::internal(k)
        }
        RecordsError::Key(k) => Refusal::Backend(format!("key service failure: {k}")),
        e => Refusal::internal(e),
    }
}

fn entity_resource(raw_entity: &str) -> String {
    format!("entity:{}", resource_id(raw_entity))
}

/// `POST /v1/entities/{entity_id}/records`
pub async fn write(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let raw_entity = path.into_inner();
    let (ctx, auth) = Ctx::open(&req, &state, &WRITE, entity_resource(&raw_entity)).await?;
    let result = async {
        let entity = EntityId::parse(raw_entity).map_err(Refusal::invalid)?;
        let batch: WriteBatch = read_json(payload, state.max_body).await.map_err(Refusal::Failed)?;
        let c = state
            .records
            .write(&auth, &entity, batch, ctx.event())
            .await
            .map_err(refusal)?;
        Ok(HttpResponse::Created().json(json!({"ids": c.value})))
    }
    .await;
    ctx.finish(result).await
}

/// `GET /v1/entities/{entity_id}/records/{record_id}`
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (raw_entity, raw_record) = path.into_inner();
    let resource = format!("{}/record:{}", entity_resource(&raw_entity), resource_id(&raw_record));
    let (ctx, auth) = Ctx::open(&req, &state, &READ, resource).await?;
    let result = async {
        let entity = EntityId::parse(raw_entity).map_err(Refusal::invalid)?;
        let record = RecordId::parse(raw_record).map_err(Refusal::invalid)?;
        let r = state
            .records
            .get(&auth, &entity, &record, ctx.event())
            .await
            .map_err(refusal)?;
        Ok(HttpResponse::Ok().json(r))
    }
    .await;
    ctx.finish(result).await
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
    let (ctx, auth) = Ctx::open(&req, &state, &READ, entity_resource(&raw_entity)).await?;
    let result = async {
        let entity = EntityId::parse(raw_entity).map_err(Refusal::invalid)?;
        let query = web::Query::<ListQuery>::from_query(req.query_string())
            .map_err(|e| Refusal::invalid(format!("invalid query: {e}")))?;
        let params = parse_list(query.into_inner()).map_err(Refusal::Failed)?;
        let (records, next) = state
            .records
            .list(&auth, &entity, params, ctx.event())
            .await
            .map_err(refusal)?;
        Ok(HttpResponse::Ok().json(RecordList {
            records,
            next_cursor: next.map(|(ts, id)| encode_cursor(ts, &id)),
        }))
    }
    .await;
    ctx.finish(result).await
}
