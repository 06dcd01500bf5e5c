//! The audit log's vocabulary and format (SPEC §7, §8).
//!
//! Invariant: an event's bytes are `audit-event/v1\n` + compact JSON with the fields in
//! the order of SPEC §7, `details` keys sorted; `chain_hash = SHA-256(0x00 || bytes)` and
//! each event's `prev` is the previous event's `chain_hash`. Events are only ever
//! appended by the store's writer, in the same transaction as the change they record.

pub mod checkpoint;
mod event;
pub mod integrity;
pub mod merkle;
pub mod offline;
pub mod verifier;

pub use event::{
    action_name, chain_hash, hash_hex, parse_hash, Action, AuditEvent, ChainHash, Outcome, PendingEvent, EVENT_PREFIX,
    GENESIS_PREV,
};
