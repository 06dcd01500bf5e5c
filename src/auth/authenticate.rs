//! Bearer-token authentication: `Authorization: Bearer <token>` → [`Principal`].
//!
//! Invariant: a missing, unknown, expired or revoked token never yields a principal;
//! the token itself is only hashed, never logged or stored.

use super::tokens::hash_token;
use super::Principal;
use crate::clock::Clock;
use crate::store::{Store, StoreError};

/// Why authentication failed (all are 401 to the client; the reason goes to the audit
/// log's details).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer` header.
    Missing,
    /// Unknown token.
    Invalid,
    /// Past `expires_at`.
    Expired,
    /// Revoked.
    Revoked,
}

impl AuthFailure {
    /// Short reason for the audit log.
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing_token",
            AuthFailure::Invalid => "invalid_token",
            AuthFailure::Expired => "expired_token",
            AuthFailure::Revoked => "revoked_token",
        }
    }
}

/// Check the `Authorization` header value against the token store.
pub fn authenticate(
    store: &Store,
    clock: &Clock,
    authorization: Option<&str>,
) -> Result<Result<Principal, AuthFailure>, StoreError> {
    let Some(token) = authorization
        .and_then(|h| {
            h.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t)
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return Ok(Err(AuthFailure::Missing));
    };
    let record = store.read()?.token_by_hash(&hash_token(token))?;
    let Some(record) = record else {
        return Ok(Err(AuthFailure::Invalid));
    };
    if record.revoked_at.is_some() {
        return Ok(Err(AuthFailure::Revoked));
    }
    if clock.now().unix_timestamp() >= record.expires_at {
        return Ok(Err(AuthFailure::Expired));
    }
    Ok(Ok(Principal::from_record(&record)))
}
