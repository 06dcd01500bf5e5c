//! The privacy domain's tables and their formats (LMDB names and bytes unchanged):
//! - `dp_budget`: tenant prefix → ε spent by the tenant's private queries (micro-ε, u64 BE);
//! - `dp_budget_extra`: tenant prefix → ε added by governed `raise_budget` (micro-ε, u64 BE);
//! - `dp_idempotency`: tenant prefix ‖ Idempotency-Key → ledger entry (JSON).
//!
//! Invariant: every key is built from the caller's [`TenantScope`], so a privacy ledger
//! entry can only be read or written within the caller's own tenant.

use crate::auth::TenantScope;
use crate::store::layout::tenant_prefix;
use crate::store::table::{Json, KeyCodec, Table, U64Be};

use super::budget::LedgerEntry;

/// Key: the caller's tenant prefix.
pub struct TenantKey;

impl KeyCodec for TenantKey {
    type Key<'a> = &'a TenantScope;
    fn encode(scope: &TenantScope, out: &mut Vec<u8>) {
        out.extend_from_slice(&tenant_prefix(scope.tenant()));
    }
}

/// Key: the caller's tenant prefix ‖ the Idempotency-Key.
pub struct IdempotencyKey;

impl KeyCodec for IdempotencyKey {
    type Key<'a> = (&'a TenantScope, &'a str);
    fn encode((scope, key): (&TenantScope, &str), out: &mut Vec<u8>) {
        out.extend_from_slice(&tenant_prefix(scope.tenant()));
        out.extend_from_slice(key.as_bytes());
    }
}

/// ε spent, per tenant (absent = 0).
pub const SPENT: Table<TenantKey, U64Be> = Table::new("dp_budget", |d| d.dp_budget);
/// ε added by governance, per tenant (absent = 0).
pub const EXTRA: Table<TenantKey, U64Be> = Table::new("dp_budget_extra", |d| d.dp_budget_extra);
/// The idempotency ledger.
pub(super) const IDEMPOTENCY: Table<IdempotencyKey, Json<LedgerEntry>> =
    Table::new("dp_idempotency", |d| d.dp_idempotency);
