//! LMDB primitives for the store: point get, delete and last entry, with LMDB's
//! `NotFound` turned into an absent value.
//!
//! Invariant: this is the only place the `Ok / Err(NotFound) / Err(e)` match on an LMDB
//! result is written; values are borrowed from the transaction (no copies).

use lmdb::{Cursor, Database, RoCursor, RwTransaction, Transaction};

/// LMDB's `MDB_LAST` cursor operation (lmdb-rkv does not re-export the constant).
const MDB_LAST: u32 = 6;

/// The value stored under `key`, borrowed from `txn`; `None` if absent.
pub(crate) fn get<'t, T: Transaction>(txn: &'t T, db: Database, key: &[u8]) -> Result<Option<&'t [u8]>, lmdb::Error> {
    match txn.get(db, &key) {
        Ok(v) => Ok(Some(v)),
        Err(lmdb::Error::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Delete `key`; whether it was present.
pub(crate) fn delete(txn: &mut RwTransaction<'_>, db: Database, key: &[u8]) -> Result<bool, lmdb::Error> {
    match txn.del(db, &key, None) {
        Ok(()) => Ok(true),
        Err(lmdb::Error::NotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A (key, value) pair borrowed from a transaction.
pub(crate) type Entry<'t> = (&'t [u8], &'t [u8]);

/// The last (greatest-key) entry of the cursor's database, if any.
pub(crate) fn last<'t>(cursor: &RoCursor<'t>) -> Result<Option<Entry<'t>>, lmdb::Error> {
    match cursor.get(None, None, MDB_LAST) {
        Ok((Some(k), v)) => Ok(Some((k, v))),
        Ok((None, _)) | Err(lmdb::Error::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}
