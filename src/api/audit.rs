//! `/v1/admin/audit...` — reading and verifying the audit log. Operators see every
//! event; tenant tokens with `audit:read` see only their tenant's events. These
//! endpoints stay available under an integrity alarm.

use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{page_limit, time_param};
use super::ctx::{Ctx, EitherKind, OperatorOnly, Refusal, RouteSpec};
use super::error::ApiError;
use super::AppState;
use crate::audit::{chain_hash, hash_hex, Action, AuditEvent};
use crate::auth::{AnyScope, Permission};
use crate::store::AuditFilter;

/// Default and maximum page size.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// Audit reads stay available under an alarm: they are how operators see why.
const READ: RouteSpec<EitherKind> =
    RouteSpec::new(Action::AuditRead, EitherKind(Permission::AuditRead)).served_under_alarm();
const EXPORT: RouteSpec<OperatorOnly> =
    RouteSpec::new(Action::AuditExport, OperatorOnly(Permission::AuditRead)).served_under_alarm();

/// Query string of `GET /v1/admin/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    start: Option<String>,
    end: Option<String>,
    action: Option<String>,
    actor: Option<String>,
    resource: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn to_secs(nanos: u64) -> u64 {
    nanos / 1_000_000_000
}

fn parse_query(mut q: AuditQuery, scope: &AnyScope) -> Result<AuditFilter, ApiError> {
    // SPEC's `?start=&end=&action=...` templates: an empty parameter is an absent one.
    for field in [&mut q.action, &mut q.actor, &mut q.resource] {
        if field.as_deref() == Some("") {
            *field = None;
        }
    }
    let start = time_param(q.start.as_deref())?;
    let end = time_param(q.end.as_deref())?;
    let limit = page_limit(q.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    if let Some(a) = &q.action {
        if serde_json::from_value::<Action>(Value::String(a.clone())).is_err() {
            return Err(ApiError::invalid(format!("unknown action {a:?}")));
        }
    }
    let after_seq = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => {
            let b = URL_SAFE_NO_PAD
                .decode(c)
                .map_err(|_| ApiError::invalid("invalid cursor"))?;
            Some(u64::from_be_bytes(
                b.try_into().map_err(|_| ApiError::invalid("invalid cursor"))?,
            ))
        }
    };
    Ok(AuditFilter {
        // Events carry whole seconds: round the start up and the end up so that the
        // bounds stay inclusive/exclusive at second precision.
        start: start.map(|n| to_secs(n) + u64::from(n % 1_000_000_000 != 0)),
        end: end.map(|n| to_secs(n) + u64::from(n % 1_000_000_000 != 0)),
        action: q.action,
        actor: q.actor,
        resource: q.resource,
        tenant: scope.tenant().cloned(),
        after_seq,
        limit,
    })
}

fn event_json(seq: u64, bytes: &[u8]) -> Value {
    let hash = hash_hex(&chain_hash(bytes));
    match AuditEvent::from_bytes(bytes) {
        Some(e) => json!({
            "event_id": e.event_id, "seq": e.seq, "timestamp": e.ts, "action": e.action, "actor": e.actor,
            "tenant_id": e.tenant_id, "resource": e.resource, "outcome": e.outcome, "request_id": e.request_id,
            "details": e.details, "prev": e.prev, "chain_hash": hash,
        }),
        // Unparseable bytes are shown as such (the verifier has flagged them).
        None => json!({"seq": seq, "corrupt": true, "chain_hash": hash}),
    }
}

/// `GET /v1/admin/audit`
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (ctx, auth) = Ctx::open(&req, &state, &READ, "audit".to_owned()).await?;
    let result = async {
        let query = web::Query::<AuditQuery>::from_query(req.query_string())
            .map_err(|e| Refusal::invalid(format!("invalid query: {e}")))?;
        let filter = parse_query(query.into_inner(), auth.scope()).map_err(Refusal::Failed)?;
        let page = state
            .store
            .read()
            .and_then(|t| t.audit_query(&filter))
            .map_err(Refusal::internal)?;
        let status = state.integrity.status().await;
        let newest = page.events.last().map(|(seq, _)| *seq);
        let covered = newest.is_none_or(|s| s < status.verified.size);
        let next_cursor = page
            .has_more
            .then(|| {
                page.events
                    .last()
                    .map(|(seq, _)| URL_SAFE_NO_PAD.encode(seq.to_be_bytes()))
            })
            .flatten();
        let events: Vec<Value> = page.events.iter().map(|(seq, b)| event_json(*seq, b)).collect();
        let body = json!({
            "events": events,
            "total": page.total,
            "next_cursor": next_cursor,
            "chain_verified": status.chain_verified && covered,
            "sealed_through_seq": status.sealed_through_seq,
        });
        let ev = ctx.event().detail("count", events.len());
        Ok((ev, HttpResponse::Ok().json(body)))
    }
    .await;
    ctx.record_and_answer(result).await
}

/// `GET /v1/admin/audit/verify`
pub async fn verify(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (ctx, _) = Ctx::open(&req, &state, &READ, "audit".to_owned()).await?;
    let status = state.integrity.status().await;
    let failure = state
        .integrity
        .verifier()
        .failure()
        .map(|f| f.to_string())
        .or_else(|| state.alarm());
    let checkpoint = status.checkpoint.as_ref().map(|cp| {
        json!({
            "origin": cp.origin, "tree_size": cp.size, "root_hash": B64.encode(cp.root),
            "chain": hash_hex(&cp.chain_head), "tpm_nv_index": format!("{:#010x}", cp.nv_index),
            "tpm_counter": cp.counter,
        })
    });
    let body = json!({
        "chain_verified": status.chain_verified,
        "verified_through_seq": status.verified.size.checked_sub(1),
        "head": (status.verified.size > 0).then(|| hash_hex(&status.verified.head)),
        "checkpoint": checkpoint,
        "tpm_counter": status.tpm_counter,
        "sealed_through_seq": status.sealed_through_seq,
        "failure": failure,
    });
    let ev = ctx
        .event()
        .detail("endpoint", "verify")
        .detail("chain_verified", status.chain_verified);
    ctx.record_and_answer(Ok((ev, HttpResponse::Ok().json(body)))).await
}

/// `GET /v1/admin/audit/checkpoint`
pub async fn checkpoint(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (ctx, _) = Ctx::open(&req, &state, &READ, "audit".to_owned()).await?;
    let result = match state.integrity.latest_note() {
        None => Err(Refusal::not_found("no checkpoint has been sealed")),
        Some(note) => Ok((
            ctx.event().detail("endpoint", "checkpoint"),
            HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(note),
        )),
    };
    ctx.record_and_answer(result).await
}

/// `GET /v1/admin/audit/public-key`
pub async fn public_key(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (ctx, _) = Ctx::open(&req, &state, &READ, "audit".to_owned()).await?;
    let ev = ctx.event().detail("endpoint", "public-key");
    let vkey = state.integrity.verifier_key();
    let response = HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(vkey + "\n");
    ctx.record_and_answer(Ok((ev, response))).await
}

/// Query string of the export.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    from_seq: Option<String>,
}

/// `GET /v1/admin/audit/export?from_seq=` — operators only; one canonical event JSON a
/// line, so `chain_hash = SHA-256(0x00 || "audit-event/v1\n" || line)`.
pub async fn export(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (ctx, _) = Ctx::open(&req, &state, &EXPORT, "audit".to_owned()).await?;
    let result = async {
        let query = web::Query::<ExportQuery>::from_query(req.query_string())
            .map_err(|e| Refusal::invalid(format!("invalid query: {e}")))?;
        let from = query
            .from_seq
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(str::parse::<u64>)
            .transpose()
            .map_err(|_| Refusal::invalid("from_seq must be a non-negative integer"))?
            .unwrap_or(0);
        let mut out = Vec::new();
        let mut count = 0u64;
        let prefix = crate::audit::EVENT_PREFIX.as_bytes();
        state
            .store
            .read()
            .and_then(|t| {
                t.for_each_event(from, |_, bytes| {
                    out.extend_from_slice(bytes.strip_prefix(prefix).unwrap_or(bytes));
                    out.push(b'\n');
                    count += 1;
                    true
                })
            })
            .map_err(Refusal::internal)?;
        let ev = ctx.event().detail("from_seq", from).detail("count", count);
        Ok((ev, HttpResponse::Ok().content_type("application/x-ndjson").body(out)))
    }
    .await;
    ctx.record_and_answer(result).await
}
