//! Typed tables: a table is one named database together with the codec of its keys and
//! the codec of its values, so a domain declares its data format once (a `const`
//! [`Table`] next to the code that owns it) and reads and writes values, not bytes.
//!
//! Invariant: the bytes a table writes are exactly its codecs' output; a value that does
//! not decode is `Corrupt(<table name>)`, never a default. Key codecs that address tenant
//! data take the caller's scope, so a typed key cannot name another tenant's range.

use std::marker::PhantomData;

use lmdb::Database;

use super::Dbs;

/// How a table's keys become bytes.
pub trait KeyCodec {
    /// The typed key (may borrow).
    type Key<'a>;
    /// Append the key's bytes to `out`.
    fn encode(key: Self::Key<'_>, out: &mut Vec<u8>);
}

/// How a table's values become bytes and back.
pub trait ValueCodec {
    /// The typed value.
    type Value;
    /// The stored bytes.
    fn encode(value: &Self::Value) -> Option<Vec<u8>>;
    /// Parse stored bytes; `None` if they are not a valid value.
    fn decode(bytes: &[u8]) -> Option<Self::Value>;
}

/// A `u64` stored as 8 big-endian bytes.
pub struct U64Be;

impl ValueCodec for U64Be {
    type Value = u64;
    fn encode(value: &u64) -> Option<Vec<u8>> {
        Some(value.to_be_bytes().to_vec())
    }
    fn decode(bytes: &[u8]) -> Option<u64> {
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    }
}

/// A serde value stored as compact JSON.
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T: serde::Serialize + serde::de::DeserializeOwned> ValueCodec for Json<T> {
    type Value = T;
    fn encode(value: &T) -> Option<Vec<u8>> {
        serde_json::to_vec(value).ok()
    }
    fn decode(bytes: &[u8]) -> Option<T> {
        serde_json::from_slice(bytes).ok()
    }
}

/// A named database with typed keys and values.
pub struct Table<K, V> {
    name: &'static str,
    db: fn(&Dbs) -> Database,
    _codecs: PhantomData<fn() -> (K, V)>,
}

impl<K: KeyCodec, V: ValueCodec> Table<K, V> {
    /// The table stored in the named database `db` selects (its LMDB name is `name`).
    pub const fn new(name: &'static str, db: fn(&Dbs) -> Database) -> Self {
        Self {
            name,
            db,
            _codecs: PhantomData,
        }
    }

    /// The database's name (for `Corrupt` errors).
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub(super) fn db(&self, dbs: &Dbs) -> Database {
        (self.db)(dbs)
    }

    pub(super) fn key(&self, key: K::Key<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        K::encode(key, &mut out);
        out
    }
}
