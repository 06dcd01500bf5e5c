//! Bearer tokens: 256-bit random, shown once, stored only as a hash.
//!
//! Invariant: the token string exists only in the response that creates it (and the
//! bootstrap file); the store keys tokens by `SHA-256("strongroom/token/v1\n" || token)`;
//! token secrets and ids are drawn from the caller's [`Random`].

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Permission;
use crate::domain::{Actor, TenantId};
use crate::random::Random;

/// Prefix that makes Strongroom tokens recognisable to secret scanners.
pub const TOKEN_PREFIX: &str = "srt_";

/// Operator (system scope) or bound to one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// System scope.
    Operator,
    /// Exactly one tenant.
    Tenant(TenantId),
}

/// A token as stored (no secret inside).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// Public id, used to revoke.
    pub token_id: String,
    /// Principal.
    pub actor: Actor,
    /// Bound tenant, or none for operator tokens.
    pub tenant_id: Option<TenantId>,
    /// Granted permissions.
    pub permissions: Vec<Permission>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; the token is refused from this instant.
    pub expires_at: i64,
    /// Unix seconds of revocation, if revoked.
    pub revoked_at: Option<i64>,
}

impl TokenRecord {
    /// Operator or tenant.
    pub fn kind(&self) -> TokenKind {
        match &self.tenant_id {
            None => TokenKind::Operator,
            Some(t) => TokenKind::Tenant(t.clone()),
        }
    }
}

/// SHA-256 of a token, the key it is stored under.
pub type TokenHash = [u8; 32];

/// A freshly minted token: the secret (to show once) and what to store.
pub struct MintedToken {
    /// The bearer token. Shown once.
    pub secret: SecretString,
    /// Its hash.
    pub hash: TokenHash,
    /// Its public id.
    pub token_id: String,
}

/// Make a new random token.
pub fn mint(random: &Random) -> MintedToken {
    let raw: [u8; 32] = random.bytes();
    let secret = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let hash = hash_token(&secret);
    let id: [u8; 8] = random.bytes();
    MintedToken {
        secret: SecretString::from(secret),
        hash,
        token_id: format!("tok-{}", hex::encode(id)),
    }
}

/// The stored hash of a presented token.
pub fn hash_token(token: &str) -> TokenHash {
    let mut h = Sha256::new();
    h.update(b"strongroom/token/v1\n");
    h.update(token.as_bytes());
    h.finalize().into()
}

/// Expose a minted token for the one response that shows it.
pub fn reveal(t: &MintedToken) -> &str {
    t.secret.expose_secret()
}
