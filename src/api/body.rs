//! Request input: bodies size-limited (413) and strictly parsed (400 naming the problem;
//! unknown fields are refused by `deny_unknown_fields` on every body type), and the
//! query parameters several endpoints share (`limit`, time bounds).

use actix_web::web;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Read the whole body, refusing more than `limit` bytes, and parse it as `T`.
pub async fn read_json<T: DeserializeOwned>(mut payload: web::Payload, limit: usize) -> Result<T, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => ApiError::too_large(limit),
            e => ApiError::invalid(format!("cannot read request body: {e}")),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    if body.is_empty() {
        return Err(ApiError::invalid("request body is empty; expected JSON"));
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
}

/// Parse a `limit` query parameter: absent or empty (`limit=`) → `default`, else an integer in `1..=max`.
pub fn page_limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match raw.filter(|r| !r.is_empty()) {
        None => Ok(default),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid(format!("limit must be an integer from 1 to {max}"))),
        },
    }
}

/// Parse an optional RFC 3339 time parameter into Unix nanoseconds (empty = absent, as
/// in SPEC's `?start=&end=` templates).
pub fn time_param(raw: Option<&str>) -> Result<Option<u64>, ApiError> {
    raw.filter(|r| !r.is_empty())
        .map(crate::records::parse_timestamp)
        .transpose()
        .map_err(ApiError::invalid)
}
