//! `/healthz` (liveness, no auth) and `/readyz` (HSM, LMDB and integrity state).

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

/// Liveness: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: every backend reachable and no integrity alarm.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let hsm = state.keys.ping().await;
    let lmdb = state.store.ping();
    let tpm = state.integrity.status().await.tpm_counter.is_some();
    let alarm = state.alarm();
    let ready = hsm && lmdb && tpm && alarm.is_none();
    let body = json!({
        "ready": ready,
        "checks": {"hsm": hsm, "tpm": tpm, "lmdb": lmdb, "integrity": alarm.is_none()},
        "integrity_alarm": alarm,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
