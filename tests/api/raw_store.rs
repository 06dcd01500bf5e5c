//! The one raw-LMDB helper of the integration tests: open a data directory's environment
//! (read-only, safe while the server runs; or read-write for tamper surgery), read a
//! named database whole or by key prefix, get, put and delete, and build the store's
//! key prefixes (`len(tenant) ‖ tenant [‖ len(entity) ‖ entity]`, src/store/layout.rs).
//!
//! Invariant: it never parses values — callers decide what the bytes must be, so it also
//! works on corrupt events. LMDB lets a second process write while the server runs: its
//! writer lock is shared through `lock.mdb` and the server's next read sees the commit.

use std::path::Path;

use lmdb::{Cursor, Database, DatabaseFlags, Environment, EnvironmentFlags, Transaction, WriteFlags};

/// Same map size as the appliance, so readers never see a resize.
const MAP_SIZE: usize = 64 << 30;

/// One raw write: (database, key, `Some(value)` to put or `None` to delete).
pub type Op = (&'static str, Vec<u8>, Option<Vec<u8>>);

/// (key, value) pairs in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Raw access to a data directory's LMDB environment.
pub struct RawStore {
    env: Environment,
    read_only: bool,
}

impl RawStore {
    /// Open `data_dir` read-write.
    pub fn open(data_dir: &Path) -> Self {
        Self::open_with(data_dir, false)
    }

    /// Open `data_dir` read-only.
    pub fn open_read_only(data_dir: &Path) -> Self {
        Self::open_with(data_dir, true)
    }

    fn open_with(data_dir: &Path, read_only: bool) -> Self {
        let mut flags = EnvironmentFlags::NO_TLS;
        if read_only {
            flags |= EnvironmentFlags::READ_ONLY;
        }
        let env = Environment::new()
            .set_max_dbs(16)
            .set_map_size(MAP_SIZE)
            .set_max_readers(512)
            .set_flags(flags)
            .open(data_dir)
            .unwrap_or_else(|e| panic!("open LMDB environment at {}: {e}", data_dir.display()));
        Self { env, read_only }
    }

    fn db(&self, name: &str) -> Database {
        let db = if self.read_only {
            self.env.open_db(Some(name))
        } else {
            self.env.create_db(Some(name), DatabaseFlags::empty())
        };
        db.unwrap_or_else(|e| panic!("db {name}: {e}"))
    }

    /// Every (key, value) of a database, in key order.
    pub fn entries(&self, name: &str) -> Entries {
        self.range(name, &[])
    }

    /// Every (key, value) of a database whose key starts with `prefix`, in one snapshot.
    pub fn range(&self, name: &str, prefix: &[u8]) -> Entries {
        let db = self.db(name);
        let txn = self.env.begin_ro_txn().expect("read txn");
        let out = scan(&txn, db, prefix);
        drop(txn);
        out
    }

    /// Every entry of `name` and the value of `other`/`key`, in one snapshot.
    pub fn entries_and_get(&self, name: &str, other: &str, key: &[u8]) -> (Entries, Option<Vec<u8>>) {
        let (db, other) = (self.db(name), self.db(other));
        let txn = self.env.begin_ro_txn().expect("read txn");
        let entries = scan(&txn, db, &[]);
        let value = get(&txn, other, key);
        drop(txn);
        (entries, value)
    }

    /// A value of a named database.
    pub fn get(&self, name: &str, key: &[u8]) -> Option<Vec<u8>> {
        let db = self.db(name);
        let txn = self.env.begin_ro_txn().expect("txn");
        let v = get(&txn, db, key);
        drop(txn);
        v
    }

    /// Overwrite a value of a named database.
    pub fn put(&self, name: &'static str, key: &[u8], value: &[u8]) {
        self.write(&[(name, key.to_vec(), Some(value.to_vec()))]);
    }

    /// Apply puts (`Some`) and deletes (`None`) in one write transaction.
    pub fn write(&self, ops: &[Op]) {
        let dbs: Vec<Database> = ops.iter().map(|(name, _, _)| self.db(name)).collect();
        let mut txn = self.env.begin_rw_txn().expect("write txn");
        for ((name, key, value), db) in ops.iter().zip(dbs) {
            match value {
                Some(v) => txn
                    .put(db, key, v, WriteFlags::empty())
                    .unwrap_or_else(|e| panic!("put into {name}: {e}")),
                None => txn
                    .del(db, key, None)
                    .unwrap_or_else(|e| panic!("delete from {name}: {e}")),
            }
        }
        txn.commit().expect("commit");
    }
}

fn scan(txn: &impl Transaction, db: Database, prefix: &[u8]) -> Entries {
    let mut out = Vec::new();
    let mut cursor = txn.open_ro_cursor(db).expect("cursor");
    let iter = if prefix.is_empty() {
        cursor.iter_start()
    } else {
        cursor.iter_from(prefix)
    };
    for item in iter {
        let (k, v) = item.expect("lmdb item");
        if !k.starts_with(prefix) {
            break;
        }
        out.push((k.to_vec(), v.to_vec()));
    }
    out
}

fn get(txn: &impl Transaction, db: Database, key: &[u8]) -> Option<Vec<u8>> {
    match txn.get(db, &key) {
        Ok(v) => Some(v.to_vec()),
        Err(lmdb::Error::NotFound) => None,
        Err(e) => panic!("lmdb get: {e}"),
    }
}

/// `len(tenant) ‖ tenant`: the start of every key of one tenant's data.
pub fn tenant_prefix(tenant: &str) -> Vec<u8> {
    let mut k = vec![u8::try_from(tenant.len()).expect("short id")];
    k.extend_from_slice(tenant.as_bytes());
    k
}

/// `len(tenant) ‖ tenant ‖ len(entity) ‖ entity`: the start of every key of one entity.
pub fn entity_prefix(tenant: &str, entity: &str) -> Vec<u8> {
    let mut k = tenant_prefix(tenant);
    k.push(u8::try_from(entity.len()).expect("short id"));
    k.extend_from_slice(entity.as_bytes());
    k
}
