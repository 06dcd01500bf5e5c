//! The ordered-KV backend boundary of the store (first step): the engine-specific
//! primitives the store's transactions are written against. Today only LMDB
//! ([`lmdb`]) implements them.
//!
//! Invariant: "key absent" is `Ok(None)` / `Ok(false)` here, never an engine error, so
//! no caller matches on an engine's not-found code.

pub(crate) mod lmdb;
