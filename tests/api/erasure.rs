//! GDPR erasure (`DELETE /v1/admin/entity/{id}`) and the tenant KEK rotation that makes
//! it final (`POST /v1/admin/tenants/{id}/rotate`, resume at start, the reaper).
//!
//! Each test runs a real appliance (SoftHSM token, swtpm, HTTPS) and checks the API
//! answers against the LMDB contents (read-only while the server runs, read-write only
//! while it is stopped) and the audit chain. Only
//! [`erased_entitys_saved_wrapped_dek_cannot_be_unwrapped_after_the_retention_window`]
//! loads the PKCS#11 module into the test process.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};
use strongroom::domain::{EntityId, TenantId};
use strongroom::keys::{dek_aad, WrappedDek};
use strongroom_hsm::pkcs11::load_module;
use strongroom_hsm::{HsmError, KekRef, KeyBackend, Pkcs11Backend, Pkcs11Config};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::harness::{
    contains, files_under, random_hex, read_file, verify_chain, RawStore, Resp, StoredEvent, TestServer,
};
use crate::raw_store::{entity_prefix, tenant_prefix};

/// The appliance's default `keys.kek_retention_secs` (7 days).
const DEFAULT_RETENTION_SECS: i64 = 7 * 24 * 3600;
/// `crypto_erasure_final_by` = `completed_at` + retention + this margin.
const FINALITY_MARGIN_SECS: i64 = 3600;
/// Same map size as the appliance, so a reader never sees a resize.
const POLL_TIMEOUT: Duration = Duration::from_secs(60);
const RW: [&str; 2] = ["records:write", "records:read"];
const RW_ERASE: [&str; 3] = ["records:write", "records:read", "entity:erase"];

// ---------------------------------------------------------------------------------------
// LMDB helpers (read-only: safe while the server runs)
// ---------------------------------------------------------------------------------------

/// Every (key, value) of a named database whose key starts with `prefix`, in one snapshot.
fn db_range(data_dir: &Path, db: &str, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    RawStore::open_read_only(data_dir).range(db, prefix)
}

/// Every key of one entity in `db` (the length bytes make the prefix exact: no other
/// entity's keys start with it).
fn entity_range(data_dir: &Path, db: &str, tenant: &str, entity: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    db_range(data_dir, db, &entity_prefix(tenant, entity))
}

/// The raw `deks` value of one entity.
fn raw_dek(data_dir: &Path, tenant: &str, entity: &str) -> Option<Vec<u8>> {
    let prefix = entity_prefix(tenant, entity);
    db_range(data_dir, "deks", &prefix)
        .into_iter()
        .find(|(k, _)| *k == prefix)
        .map(|(_, v)| v)
}

/// Every wrapped DEK of a tenant, by entity id.
fn tenant_deks(data_dir: &Path, tenant: &str) -> BTreeMap<String, WrappedDek> {
    let prefix = tenant_prefix(tenant);
    db_range(data_dir, "deks", &prefix)
        .into_iter()
        .map(|(k, v)| {
            let rest = &k[prefix.len()..];
            assert_eq!(usize::from(rest[0]), rest.len() - 1, "deks key layout");
            let entity = String::from_utf8(rest[1..].to_vec()).expect("entity id");
            let w = WrappedDek::from_bytes(&v).unwrap_or_else(|| panic!("deks value of {entity} does not parse"));
            (entity, w)
        })
        .collect()
}

/// Everything stored for one entity in the databases that hold its data.
fn entity_snapshot(data_dir: &Path, tenant: &str, entity: &str) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let prefix = entity_prefix(tenant, entity);
    let mut out = Vec::new();
    for db in ["records", "record_index", "deks"] {
        for (k, v) in db_range(data_dir, db, &prefix) {
            out.push((db.to_owned(), k, v));
        }
    }
    out
}

/// Copy every regular file of `from` into `to` (flat: the data dir has no subdirectories).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("backup dir");
    for f in files_under(from) {
        let rel = f.strip_prefix(from).expect("under the data dir");
        let dest = to.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).expect("backup subdir");
        }
        std::fs::copy(&f, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", f.display()));
    }
}

// ---------------------------------------------------------------------------------------
// API helpers
// ---------------------------------------------------------------------------------------

/// A field that is missing or null.
fn absent(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

fn parse_time(v: &Value) -> OffsetDateTime {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("expected an RFC 3339 string, got {v}"));
    OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
}

async fn erase(s: &TestServer, token: &str, entity: &str) -> Resp {
    s.delete(&format!("/v1/admin/entity/{entity}"), Some(token)).await
}

async fn rotate(s: &TestServer, tenant: &str) -> Resp {
    s.post(
        &format!("/v1/admin/tenants/{tenant}/rotate"),
        Some(s.operator()),
        &json!({}),
    )
    .await
}

/// The tenant as `GET /v1/admin/tenants` shows it.
async fn tenant_info(s: &TestServer, tenant: &str) -> Value {
    let r = s.get("/v1/admin/tenants", Some(s.operator())).await;
    r.expect(200);
    r.json["tenants"]
        .as_array()
        .expect("tenants array")
        .iter()
        .find(|t| t["tenant_id"] == tenant)
        .cloned()
        .unwrap_or_else(|| panic!("tenant {tenant} not listed: {}", r.text))
}

/// Poll until the tenant's current KEK is `version`, no rotation is in progress and every
/// DEK of the tenant is wrapped under `version`. Returns the tenant record.
async fn wait_rotated(s: &TestServer, tenant: &str, version: u64) -> Value {
    let deadline = Instant::now() + POLL_TIMEOUT;
    loop {
        let info = tenant_info(s, tenant).await;
        let deks = tenant_deks(s.data_dir(), tenant);
        let settled = info["key_version"] == version
            && absent(info.get("rotation_started_at"))
            && deks.values().all(|w| u64::from(w.kek_version) == version);
        if settled {
            return info;
        }
        if Instant::now() > deadline {
            let versions: BTreeMap<_, _> = deks.iter().map(|(e, w)| (e.clone(), w.kek_version)).collect();
            panic!("rotation of {tenant} to v{version} did not settle: {info}; DEK versions {versions:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The events of `action` concerning `tenant`.
fn events_of(s: &TestServer, action: &str, tenant: &str) -> Vec<StoredEvent> {
    s.audit_events()
        .into_iter()
        .filter(|e| e.action() == action && e.json["tenant_id"] == tenant)
        .collect()
}

/// Records of an entity as `id → data`, through the API (all pages).
async fn records_by_id(s: &TestServer, token: &str, entity: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for r in s.list_all(token, entity, "", 100).await {
        assert_eq!(r["entity_id"], entity, "record of another entity listed: {r}");
        let id = r["id"].as_str().expect("record id").to_owned();
        assert!(out.insert(id.clone(), r["data"].clone()).is_none(), "{id} listed twice");
    }
    out
}

#[track_caller]
fn assert_report_shape(r: &Resp, entity: &str) {
    let keys: BTreeSet<&str> = r
        .json
        .as_object()
        .unwrap_or_else(|| panic!("erasure answer is not an object: {}", r.text))
        .keys()
        .map(String::as_str)
        .collect();
    let want: BTreeSet<&str> = [
        "entity_id",
        "records_deleted",
        "segments_purged",
        "index_entries_deleted",
        "audit_event_id",
        "completed_at",
        "crypto_erasure_final_by",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, want, "erasure answer fields: {}", r.text);
    assert_eq!(r.json["entity_id"], entity);
    assert!(
        r.json["audit_event_id"].as_str().is_some_and(|s| !s.is_empty()),
        "audit_event_id: {}",
        r.text
    );
}

// ---------------------------------------------------------------------------------------
// 1. Erasure of an entity with records
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn erasure_removes_the_entity_and_nothing_else() {
    let mut s = TestServer::start();
    s.create_tenant("acme").await;
    s.create_tenant("globex").await;
    let acme = s.tenant_token("acme", &RW_ERASE).await;
    let globex = s.tenant_token("globex", &RW).await;

    let victim = format!("user-eu-{}", random_hex(4));
    let keep = format!("keep-{}", random_hex(4));
    let later = format!("later-{}", random_hex(4));
    let canary = random_hex(16);
    let big = format!("{canary}{}", "y".repeat(6000));

    // Five records in two batches, the canary in three of them.
    let mut ids = s
        .write_records(
            &acme,
            &victim,
            json!([
                { "data": { "secret": canary, "n": 1 } },
                { "data": { "n": 2 } },
                { "id": format!("r3-{}", random_hex(4)), "data": { "n": 3, "note": [canary] } },
            ]),
        )
        .await;
    ids.extend(
        s.write_records(
            &acme,
            &victim,
            json!([{ "data": { "n": 4 } }, { "data": { "n": 5, "blob": big } }]),
        )
        .await,
    );
    assert_eq!(ids.len(), 5);
    // The same entity id in another tenant, and another entity in each tenant.
    s.write_records(
        &globex,
        &victim,
        json!([{ "id": "g-1", "data": { "g": 1 } }, { "id": "g-2", "data": { "g": 2 } }]),
    )
    .await;
    s.write_records(&globex, &keep, json!([{ "data": { "gk": 1 } }])).await;
    s.write_records(&acme, &keep, json!([{ "data": { "k": 1 } }, { "data": { "k": 2 } }]))
        .await;

    // The canary really is reachable through the API before the erasure (so the file scan
    // below can fail).
    let r = s
        .get(&format!("/v1/entities/{victim}/records/{}", ids[0]), Some(&acme))
        .await;
    r.expect(200);
    assert!(r.text.contains(&canary), "{}", r.text);
    let before = records_by_id(&s, &acme, &victim).await;
    assert_eq!(before.len(), 5);
    assert_eq!(
        before.keys().cloned().collect::<BTreeSet<_>>(),
        ids.iter().cloned().collect()
    );
    assert_eq!(
        entity_range(s.data_dir(), "record_index", "acme", &victim).len(),
        5,
        "five index entries stored"
    );

    // What must not change: the other entities through the API and byte for byte.
    let others = [
        ("acme", &acme, &keep),
        ("globex", &globex, &victim),
        ("globex", &globex, &keep),
    ];
    let mut api_before = Vec::new();
    let mut raw_before = Vec::new();
    for (tenant, token, entity) in others {
        api_before.push(s.list_all(token, entity, "", 100).await);
        raw_before.push(entity_snapshot(s.data_dir(), tenant, entity));
    }
    let acme_keep_dek = WrappedDek::from_bytes(&raw_dek(s.data_dir(), "acme", &keep).expect("keep DEK")).unwrap();

    let r = erase(&s, &acme, &victim).await;
    r.expect(200);
    assert_report_shape(&r, &victim);
    assert_eq!(r.json["records_deleted"], 5, "{}", r.text);
    assert_eq!(r.json["index_entries_deleted"], 5, "{}", r.text);
    assert_eq!(r.json["segments_purged"], 0, "{}", r.text);
    let completed = parse_time(&r.json["completed_at"]);
    let final_by = parse_time(&r.json["crypto_erasure_final_by"]);
    assert!(
        (completed - OffsetDateTime::now_utc()).whole_seconds().abs() < 120,
        "completed_at is now: {}",
        r.text
    );
    assert_eq!(
        (final_by - completed).whole_seconds(),
        DEFAULT_RETENTION_SECS + FINALITY_MARGIN_SECS,
        "crypto_erasure_final_by = completed_at + retention + 1 h: {}",
        r.text
    );

    // Gone through the API.
    for id in &ids {
        s.get(&format!("/v1/entities/{victim}/records/{id}"), Some(&acme))
            .await
            .expect_error(404, "not_found");
    }
    let r = s.get(&format!("/v1/entities/{victim}/records"), Some(&acme)).await;
    r.expect(200);
    assert_eq!(r.json, json!({ "records": [], "next_cursor": null }), "{}", r.text);
    // Gone from the store: records, index entries, DEK; a tombstone instead.
    for db in ["records", "record_index"] {
        assert!(
            entity_range(s.data_dir(), db, "acme", &victim).is_empty(),
            "{db} still holds the erased entity"
        );
    }
    assert_eq!(
        raw_dek(s.data_dir(), "acme", &victim),
        None,
        "the wrapped DEK is deleted"
    );
    let tomb = db_range(s.data_dir(), "erased", &entity_prefix("acme", &victim));
    assert_eq!(tomb.len(), 1, "one tombstone");

    // A small follow-up write, then the post-erasure rotation runs to its end.
    s.write_records(&acme, &later, json!([{ "data": { "after": true } }]))
        .await;
    wait_rotated(&s, "acme", 2).await;

    // Everything else untouched: the same records through the API and the same bytes in
    // the store (a rotation rewraps DEKs, never records; globex is not rotated at all).
    for (i, (tenant, token, entity)) in others.into_iter().enumerate() {
        assert_eq!(
            s.list_all(token, entity, "", 100).await,
            api_before[i],
            "{tenant}/{entity} reads back the same"
        );
        let now = entity_snapshot(s.data_dir(), tenant, entity);
        if tenant == "acme" {
            let strip = |v: &[(String, Vec<u8>, Vec<u8>)]| -> Vec<(String, Vec<u8>, Vec<u8>)> {
                v.iter().filter(|(db, _, _)| db != "deks").cloned().collect()
            };
            assert_eq!(
                strip(&now),
                strip(&raw_before[i]),
                "{tenant}/{entity} records are byte-identical"
            );
        } else {
            assert_eq!(now, raw_before[i], "{tenant}/{entity} is byte-identical, DEK included");
        }
    }
    let rewrapped = WrappedDek::from_bytes(&raw_dek(s.data_dir(), "acme", &keep).unwrap()).unwrap();
    assert_eq!(rewrapped.dek_id, acme_keep_dek.dek_id, "same DEK, rewrapped");
    assert_eq!((acme_keep_dek.kek_version, rewrapped.kek_version), (1, 2));
    assert_eq!(
        tenant_info(&s, "globex").await["key_version"],
        1,
        "globex is not rotated"
    );

    // The canary is nowhere on disk: data dir, config/log dir, HSM token, TPM state.
    s.stop();
    let data_files = files_under(s.data_dir());
    assert!(data_files.iter().any(|f| f.ends_with("data.mdb")), "{data_files:?}");
    for dir in [s.dir(), s.hsm_dir(), s.tpm_dir()] {
        for f in files_under(dir) {
            assert!(
                !contains(&read_file(&f), canary.as_bytes()),
                "the erased entity's canary is in {}",
                f.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 2. Tenant isolation and permissions
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn erasure_is_confined_to_the_callers_tenant_and_permission() {
    let s = TestServer::start();
    s.create_tenant("tenant-a").await;
    s.create_tenant("tenant-b").await;
    let a_erase = s.tenant_token("tenant-a", &RW_ERASE).await;
    let a_plain = s.tenant_token("tenant-a", &RW).await;
    let b_plain = s.tenant_token("tenant-b", &RW).await;

    let b_entity = format!("b-only-{}", random_hex(4));
    let a_entity = format!("a-own-{}", random_hex(4));
    s.write_records(
        &b_plain,
        &b_entity,
        json!([{ "data": { "b": 1 } }, { "data": { "b": 2 } }, { "data": { "b": 3 } }]),
    )
    .await;
    s.write_records(&a_plain, &a_entity, json!([{ "data": { "a": 1 } }]))
        .await;
    let b_api = s.list_all(&b_plain, &b_entity, "", 100).await;
    let b_raw = entity_snapshot(s.data_dir(), "tenant-b", &b_entity);
    let a_api = s.list_all(&a_plain, &a_entity, "", 100).await;
    let a_raw = entity_snapshot(s.data_dir(), "tenant-a", &a_entity);
    assert_eq!(b_raw.len(), 7, "3 records, 3 index entries, 1 DEK");

    // Tenant A cannot erase tenant B's entity: a plain 404, audited as access_denied.
    let r = erase(&s, &a_erase, &b_entity).await;
    r.expect_error(404, "not_found");
    assert!(
        !r.text.contains("tenant-b"),
        "the answer does not reveal the other tenant: {}",
        r.text
    );
    let ev = s.expect_event(&r, "access_denied", "denied");
    assert_eq!(
        ev.json["details"]["attempted"],
        "entity_erase",
        "{}",
        String::from_utf8_lossy(&ev.bytes)
    );
    assert_eq!(ev.json["resource"], format!("entity:{b_entity}"));

    // An operator token holds no entity:erase.
    let r = erase(&s, s.operator(), &b_entity).await;
    r.expect_error(403, "forbidden");
    s.expect_event(&r, "access_denied", "denied");
    // A tenant token without entity:erase, on its own entity and on the other tenant's.
    let r = erase(&s, &a_plain, &a_entity).await;
    r.expect_error(403, "forbidden");
    s.expect_event(&r, "access_denied", "denied");
    let r = erase(&s, &b_plain, &b_entity).await;
    r.expect_error(403, "forbidden");
    s.expect_event(&r, "access_denied", "denied");
    // No token at all.
    let r = s.delete(&format!("/v1/admin/entity/{b_entity}"), None).await;
    r.expect_error(401, "unauthorized");
    // An entity nobody has: the same 404 and the same access_denied as B's entity, so
    // A cannot tell them apart.
    let r = erase(&s, &a_erase, &format!("nobody-{}", random_hex(4))).await;
    r.expect_error(404, "not_found");
    s.expect_event(&r, "access_denied", "denied");

    // Nothing changed: same data, same bytes, no tombstone, no erasure, no rotation.
    assert_eq!(s.list_all(&b_plain, &b_entity, "", 100).await, b_api);
    assert_eq!(s.list_all(&a_plain, &a_entity, "", 100).await, a_api);
    assert_eq!(entity_snapshot(s.data_dir(), "tenant-b", &b_entity), b_raw);
    assert_eq!(entity_snapshot(s.data_dir(), "tenant-a", &a_entity), a_raw);
    assert!(db_range(s.data_dir(), "erased", &[]).is_empty(), "no tombstone written");
    let allowed_erasures: Vec<_> = s
        .audit_events()
        .into_iter()
        .filter(|e| e.action() == "entity_erase" && e.outcome() == "allowed")
        .collect();
    assert!(allowed_erasures.is_empty(), "{allowed_erasures:#?}");
    // Give a (wrongly) spawned rotation a moment to show itself.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for t in ["tenant-a", "tenant-b"] {
        let info = tenant_info(&s, t).await;
        assert_eq!(info["key_version"], 1, "{t} not rotated: {info}");
        assert!(events_of(&s, "key_rotate", t).is_empty(), "no key_rotate for {t}");
    }
    verify_chain(s.data_dir());
}

// ---------------------------------------------------------------------------------------
// 3. Idempotency and the audit event
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn repeated_erasure_is_idempotent_and_audited() {
    let s = TestServer::start();
    s.create_tenant("acme").await;
    let token = s
        .tenant_token("acme", &["records:write", "records:read", "entity:erase", "audit:read"])
        .await;
    let entity = format!("subject-{}", random_hex(4));
    let canary = random_hex(16);
    s.write_records(
        &token,
        &entity,
        json!([
            { "data": { "c": canary } }, { "data": { "i": 2 } },
            { "data": { "i": 3 } }, { "data": { "i": 4 } },
        ]),
    )
    .await;
    s.write_records(
        &token,
        &entity,
        json!([{ "data": { "i": 5 } }, { "data": { "i": 6 } }, { "data": { "i": 7 } }]),
    )
    .await;

    let first = erase(&s, &token, &entity).await;
    first.expect(200);
    assert_report_shape(&first, &entity);
    assert_eq!(
        (
            &first.json["records_deleted"],
            &first.json["index_entries_deleted"],
            &first.json["segments_purged"]
        ),
        (&json!(7), &json!(7), &json!(0)),
        "{}",
        first.text
    );
    let event_id = first.json["audit_event_id"].as_str().unwrap().to_owned();

    let mut repeats = Vec::new();
    for _ in 0..2 {
        let again = erase(&s, &token, &entity).await;
        again.expect(200);
        assert_report_shape(&again, &entity);
        assert_eq!(
            again.json["audit_event_id"],
            event_id.as_str(),
            "the original event id: {}",
            again.text
        );
        for k in ["records_deleted", "index_entries_deleted", "segments_purged"] {
            assert_eq!(again.json[k], 0, "{k} on a repeat: {}", again.text);
        }
        assert_eq!(again.json["completed_at"], first.json["completed_at"]);
        assert_eq!(
            again.json["crypto_erasure_final_by"],
            first.json["crypto_erasure_final_by"]
        );
        repeats.push(again);
    }

    // One rotation only (from the first erasure).
    wait_rotated(&s, "acme", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        tenant_info(&s, "acme").await["key_version"],
        2,
        "repeats do not rotate again"
    );

    // The audit chain: whole, the event present with the answer's counts.
    let events = verify_chain(s.data_dir());
    let original: Vec<&StoredEvent> = events.iter().filter(|e| e.event.event_id == event_id).collect();
    assert_eq!(original.len(), 1, "exactly one event {event_id}");
    let ev = original[0];
    let shown = String::from_utf8_lossy(&ev.bytes).into_owned();
    assert_eq!(ev.action(), "entity_erase", "{shown}");
    assert_eq!(ev.outcome(), "allowed", "{shown}");
    assert_eq!(ev.json["tenant_id"], "acme", "{shown}");
    assert_eq!(ev.json["resource"], format!("entity:{entity}"), "{shown}");
    assert_eq!(ev.event.request_id, first.rid(), "{shown}");
    let d = &ev.json["details"];
    for k in ["records_deleted", "index_entries_deleted", "segments_purged"] {
        assert_eq!(d[k], first.json[k], "details.{k} = the answer's: {shown}");
    }
    assert_eq!(d["key_deleted"], true, "{shown}");
    for again in &repeats {
        let e = s.expect_event(again, "entity_erase", "allowed");
        assert_eq!(
            e.json["details"]["repeat_of"],
            event_id.as_str(),
            "{}",
            String::from_utf8_lossy(&e.bytes)
        );
    }
    assert_eq!(
        events.iter().filter(|e| e.action() == "entity_erase").count(),
        3,
        "one event per DELETE"
    );
    // The rotation that followed is audited, start to end.
    let rot = events_of(&s, "key_rotate", "acme");
    let phases: Vec<&str> = rot
        .iter()
        .map(|e| e.json["details"]["phase"].as_str().unwrap_or(""))
        .collect();
    // "prepared" (the intent, committed before the HSM key is made), then "started".
    assert_eq!(phases.first(), Some(&"prepared"), "{phases:?}");
    assert_eq!(phases.get(1), Some(&"started"), "{phases:?}");
    assert_eq!(rot[0].json["details"]["reason"], "entity_erase");
    assert_eq!(phases.last(), Some(&"completed"), "{phases:?}");
    assert_eq!(rot.last().unwrap().json["details"]["key_version"], 2);
    // Nothing of the data in the log.
    for e in &events {
        assert!(!contains(&e.bytes, canary.as_bytes()), "record data in the audit log");
    }

    // The API agrees: the tenant sees the event, and the chain verifies.
    let r = s.get("/v1/admin/audit?action=entity_erase", Some(&token)).await;
    r.expect(200);
    let listed: Vec<&str> = r.json["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert!(listed.contains(&event_id.as_str()), "{}", r.text);
    let deadline = Instant::now() + POLL_TIMEOUT;
    loop {
        let v = s.get("/v1/admin/audit/verify", Some(s.operator())).await;
        v.expect(200);
        if v.json["chain_verified"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "chain never verified: {}", v.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------
// 4. Writing to an erased entity id starts a fresh entity
// ---------------------------------------------------------------------------------------

/// The re-created entity holds exactly the new generation.
async fn check_reborn(s: &TestServer, token: &str, entity: &str) {
    let recs = records_by_id(s, token, entity).await;
    assert_eq!(
        recs,
        BTreeMap::from([
            ("a1".to_owned(), json!({ "gen": 2, "reused": true })),
            ("b1".to_owned(), json!({ "gen": 2 })),
            ("b2".to_owned(), json!({ "gen": 2 })),
        ]),
        "only the new generation"
    );
    for old in ["a2", "a3"] {
        s.get(&format!("/v1/entities/{entity}/records/{old}"), Some(token))
            .await
            .expect_error(404, "not_found");
    }
    let r = s.get(&format!("/v1/entities/{entity}/records/a1"), Some(token)).await;
    r.expect(200);
    assert_eq!(r.json["data"], json!({ "gen": 2, "reused": true }));
}

#[tokio::test]
async fn writing_to_an_erased_entity_starts_a_fresh_one() {
    let mut s = TestServer::start();
    s.create_tenant("acme").await;
    let token = s.tenant_token("acme", &RW_ERASE).await;
    let entity = format!("reborn-{}", random_hex(4));
    s.write_records(
        &token,
        &entity,
        json!([
            { "id": "a1", "data": { "gen": 1, "i": 1 } },
            { "id": "a2", "data": { "gen": 1, "i": 2 } },
            { "id": "a3", "data": { "gen": 1, "i": 3 } },
        ]),
    )
    .await;
    let old_dek = WrappedDek::from_bytes(&raw_dek(s.data_dir(), "acme", &entity).expect("DEK")).unwrap();

    let first = erase(&s, &token, &entity).await;
    first.expect(200);
    assert_eq!(first.json["records_deleted"], 3);

    // A new generation, reusing one old record id (it is free again).
    s.write_records(
        &token,
        &entity,
        json!([{ "id": "b1", "data": { "gen": 2 } }, { "id": "b2", "data": { "gen": 2 } }]),
    )
    .await;
    s.write_records(
        &token,
        &entity,
        json!([{ "id": "a1", "data": { "gen": 2, "reused": true } }]),
    )
    .await;

    check_reborn(&s, &token, &entity).await;
    let new_dek = WrappedDek::from_bytes(&raw_dek(s.data_dir(), "acme", &entity).expect("new DEK")).unwrap();
    assert_ne!(new_dek.dek_id, old_dek.dek_id, "a fresh DEK");
    assert_ne!(new_dek.wrapped, old_dek.wrapped);
    // Every stored record of the entity is sealed under the new DEK: the same 3 records
    // and 3 index entries, nothing left over.
    assert_eq!(entity_range(s.data_dir(), "records", "acme", &entity).len(), 3);
    assert_eq!(entity_range(s.data_dir(), "record_index", "acme", &entity).len(), 3);

    // Cold caches: the new DEK is unwrapped from the store.
    wait_rotated(&s, "acme", 2).await;
    s.restart();
    check_reborn(&s, &token, &entity).await;

    // The new generation is an entity like any other: erasing it counts its records and
    // is a new event; repeating returns that new event.
    let second = erase(&s, &token, &entity).await;
    second.expect(200);
    assert_eq!(second.json["records_deleted"], 3, "{}", second.text);
    assert_eq!(second.json["index_entries_deleted"], 3, "{}", second.text);
    assert_ne!(second.json["audit_event_id"], first.json["audit_event_id"]);
    let third = erase(&s, &token, &entity).await;
    third.expect(200);
    assert_eq!(third.json["audit_event_id"], second.json["audit_event_id"]);
    assert_eq!(third.json["records_deleted"], 0);
}

// ---------------------------------------------------------------------------------------
// 5. Rotation under concurrent reads and writes loses nothing
// ---------------------------------------------------------------------------------------

const PRELOADED_ENTITIES: usize = 300;
const WRITERS: usize = 3;
const READERS: usize = 3;

type Expected = Arc<Mutex<BTreeMap<String, BTreeMap<String, Value>>>>;

struct Load {
    client: reqwest::Client,
    base: String,
    token: String,
    expected: Expected,
    stop: Arc<AtomicBool>,
    rotating: Arc<AtomicBool>,
    during: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Load {
    async fn write(&self, entity: &str, records: Vec<(String, Value)>) -> Result<(), String> {
        let body =
            json!({ "records": records.iter().map(|(id, d)| json!({ "id": id, "data": d })).collect::<Vec<_>>() });
        let r = self
            .client
            .post(format!("{}/v1/entities/{entity}/records", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("write {entity}: {e}"))?;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        if status != 201 {
            return Err(format!("write {entity}: {status} {text}"));
        }
        let mut exp = self.expected.lock().unwrap();
        let e = exp.entry(entity.to_owned()).or_default();
        for (id, d) in records {
            e.insert(id, d);
        }
        Ok(())
    }

    async fn read(&self, entity: &str, id: &str, want: &Value) -> Result<(), String> {
        let r = self
            .client
            .get(format!("{}/v1/entities/{entity}/records/{id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("read {entity}/{id}: {e}"))?;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status != 200 || v["data"] != *want {
            return Err(format!("read {entity}/{id}: {status} {text}, wanted {want}"));
        }
        Ok(())
    }

    fn note(&self, started_rotating: bool, result: Result<(), String>) {
        match result {
            Ok(()) => {
                if started_rotating && self.rotating.load(Ordering::SeqCst) {
                    self.during.fetch_add(1, Ordering::SeqCst);
                }
            }
            Err(e) => self.errors.lock().unwrap().push(e),
        }
    }

    async fn writer(self: Arc<Self>, w: usize) {
        let (mut n, mut fresh) = (0usize, false);
        while !self.stop.load(Ordering::SeqCst) {
            n += 1;
            // Every other write creates an entity (and its DEK) while a rotation may run.
            fresh = !fresh;
            let entity = if fresh {
                format!("new-{w}-{n}")
            } else {
                format!("pre-{}", rand::thread_rng().gen_range(0..PRELOADED_ENTITIES))
            };
            let records = (0..1 + n % 3)
                .map(|k| {
                    (
                        format!("w{w}-{n}-{k}"),
                        json!({ "w": w, "n": n, "k": k, "v": random_hex(4) }),
                    )
                })
                .collect();
            let was = self.rotating.load(Ordering::SeqCst);
            let result = self.write(&entity, records).await;
            self.note(was, result);
        }
    }

    async fn reader(self: Arc<Self>) {
        while !self.stop.load(Ordering::SeqCst) {
            let pick = {
                let exp = self.expected.lock().unwrap();
                let i = rand::thread_rng().gen_range(0..exp.len());
                exp.iter().nth(i).and_then(|(e, recs)| {
                    let j = rand::thread_rng().gen_range(0..recs.len());
                    recs.iter().nth(j).map(|(id, d)| (e.clone(), id.clone(), d.clone()))
                })
            };
            let Some((entity, id, want)) = pick else { continue };
            let was = self.rotating.load(Ordering::SeqCst);
            let result = self.read(&entity, &id, &want).await;
            self.note(was, result);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_under_concurrent_reads_and_writes_loses_nothing() {
    let mut s = TestServer::start();
    s.create_tenant("rot").await;
    let token = s.tenant_token("rot", &RW).await;
    let load = Arc::new(Load {
        client: s.client(),
        base: s.base().to_owned(),
        token: token.clone(),
        expected: Arc::default(),
        stop: Arc::default(),
        rotating: Arc::default(),
        during: Arc::default(),
        errors: Arc::default(),
    });

    // Preload entities (several writers at once), every DEK under v1.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for part in 0..4 {
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            for i in (part..PRELOADED_ENTITIES).step_by(4) {
                let records = vec![
                    (format!("p{i}-a"), json!({ "i": i, "part": "a" })),
                    (
                        format!("p{i}-b"),
                        json!({ "i": i, "part": "b", "pad": "z".repeat(200) }),
                    ),
                ];
                load.write(&format!("pre-{i}"), records).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("preloaded {PRELOADED_ENTITIES} entities in {:?}", started.elapsed());
    assert!(tenant_deks(s.data_dir(), "rot").values().all(|w| w.kek_version == 1));

    let mut workers = Vec::new();
    for w in 0..WRITERS {
        workers.push(tokio::spawn(load.clone().writer(w)));
    }
    for _ in 0..READERS {
        workers.push(tokio::spawn(load.clone().reader()));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut reports = Vec::new();
    for version in [2u64, 3] {
        let rotation_started = Instant::now();
        load.rotating.store(true, Ordering::SeqCst);
        let r = rotate(&s, "rot").await;
        load.rotating.store(false, Ordering::SeqCst);
        r.expect(200);
        eprintln!("rotation to v{version}: {:?}, {}", rotation_started.elapsed(), r.text);
        assert_eq!(r.json["tenant_id"], "rot");
        assert_eq!(r.json["key_version"], version, "{}", r.text);
        assert_eq!(r.json["previous_version"], version - 1, "{}", r.text);
        assert!(
            r.json["rewrapped"].as_u64().unwrap() >= PRELOADED_ENTITIES as u64,
            "every preloaded DEK rewrapped: {}",
            r.text
        );
        parse_time(&r.json["previous_version_destroy_after"]);
        reports.push(r.json.clone());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    load.stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let errors = load.errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} failed operations during rotation: {errors:#?}",
        errors.len()
    );
    let during = load.during.load(Ordering::SeqCst);
    eprintln!("{during} reads/writes completed while a rotation ran");
    assert!(during > 0, "some reads/writes ran during the rotations");

    // Every DEK of the tenant (preloaded and created during the rotations) is under v3,
    // one per entity written.
    let expected = load.expected.lock().unwrap().clone();
    let deks = tenant_deks(s.data_dir(), "rot");
    assert_eq!(
        deks.keys().cloned().collect::<BTreeSet<_>>(),
        expected.keys().cloned().collect::<BTreeSet<_>>(),
        "one DEK per entity"
    );
    let stale: BTreeMap<&String, u32> = deks
        .iter()
        .filter(|(_, w)| w.kek_version != 3)
        .map(|(e, w)| (e, w.kek_version))
        .collect();
    assert!(stale.is_empty(), "DEKs not under the current KEK v3: {stale:?}");
    let info = tenant_info(&s, "rot").await;
    assert_eq!(info["key_version"], 3, "{info}");
    assert!(absent(info.get("rotation_started_at")), "{info}");
    let retired: Vec<u64> = info["retired"]
        .as_array()
        .expect("retired list")
        .iter()
        .map(|r| r["version"].as_u64().unwrap())
        .collect();
    assert_eq!(retired, vec![1, 2], "{info}");

    // Every record reads back, first from the warm server, then after a restart (cold
    // DEK cache: each rewrapped DEK is unwrapped under v3 in the HSM).
    let total: usize = expected.values().map(BTreeMap::len).sum();
    eprintln!("{} entities, {total} records", expected.len());
    for pass in ["warm", "cold"] {
        if pass == "cold" {
            s.restart();
        }
        for (entity, recs) in &expected {
            assert_eq!(&records_by_id(&s, &token, entity).await, recs, "{pass}: {entity}");
        }
    }
    let completed: Vec<Value> = events_of(&s, "key_rotate", "rot")
        .iter()
        .filter(|e| e.json["details"]["phase"] == "completed")
        .map(|e| e.json["details"].clone())
        .collect();
    assert_eq!(completed.len(), 2, "{completed:#?}");
    for (c, r) in completed.iter().zip(&reports) {
        assert_eq!(c["key_version"], r["key_version"]);
        assert_eq!(c["rewrapped"], r["rewrapped"]);
    }
    verify_chain(s.data_dir());
}

// ---------------------------------------------------------------------------------------
// 6. An interrupted rotation resumes at start
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn interrupted_rotation_resumes_at_start() {
    const ENTITIES: usize = 12;
    const ROLLED_BACK: usize = 6;
    let mut s = TestServer::start();
    s.create_tenant("res").await;
    let token = s.tenant_token("res", &RW).await;
    let mut expected = BTreeMap::new();
    for i in 0..ENTITIES {
        let entity = format!("e{i:02}");
        let recs = [
            (format!("{entity}-a"), json!({ "i": i })),
            (format!("{entity}-b"), json!({ "i": i, "b": true })),
        ];
        s.write_records(
            &token,
            &entity,
            Value::Array(recs.iter().map(|(id, d)| json!({ "id": id, "data": d })).collect()),
        )
        .await;
        expected.insert(entity, recs.into_iter().collect::<BTreeMap<_, _>>());
    }
    let under_v1: BTreeMap<String, Vec<u8>> = tenant_deks(s.data_dir(), "res")
        .into_iter()
        .map(|(e, w)| {
            assert_eq!(w.kek_version, 1);
            (e, w.to_bytes())
        })
        .collect();
    assert_eq!(under_v1.len(), ENTITIES);

    let r = rotate(&s, "res").await;
    r.expect(200);
    assert_eq!(r.json["key_version"], 2);
    assert_eq!(r.json["rewrapped"], ENTITIES);
    s.stop();

    // Simulate the state a crash leaves mid-rewrap: half the DEKs still under v1 (their
    // exact earlier bytes; v1 is retained in the HSM), v1 retired with no window yet.
    let raw = RawStore::open(s.data_dir());
    let rolled_back: Vec<String> = under_v1.keys().take(ROLLED_BACK).cloned().collect();
    for e in &rolled_back {
        raw.put("deks", &entity_prefix("res", e), &under_v1[e]);
    }
    let mut rec: Value = serde_json::from_slice(&raw.get("tenants", b"res").expect("tenant")).unwrap();
    assert_eq!(rec["key_version"], 2, "{rec}");
    rec["retired"] = json!([{ "version": 1, "destroy_after": i64::MAX }]);
    raw.put("tenants", b"res", &serde_json::to_vec(&rec).unwrap());
    drop(raw);

    // Reads and writes work with DEKs under two KEK versions (no rotation running yet:
    // `rotation_started_at` is not set, so nothing rewraps them behind our back).
    s.start_again();
    for (entity, recs) in &expected {
        assert_eq!(
            &records_by_id(&s, &token, entity).await,
            recs,
            "mixed versions: {entity}"
        );
    }
    let extra_entity = rolled_back[0].clone();
    s.write_records(
        &token,
        &extra_entity,
        json!([{ "id": "mixed-write", "data": { "x": 1 } }]),
    )
    .await;
    expected
        .get_mut(&extra_entity)
        .unwrap()
        .insert("mixed-write".to_owned(), json!({ "x": 1 }));
    let versions: BTreeMap<String, u32> = tenant_deks(s.data_dir(), "res")
        .into_iter()
        .map(|(e, w)| (e, w.kek_version))
        .collect();
    assert_eq!(
        versions.values().filter(|v| **v == 1).count(),
        ROLLED_BACK,
        "{versions:?}"
    );
    s.stop();

    // Now mark the rotation as in progress, as the crash would have left it.
    let raw = RawStore::open(s.data_dir());
    let mut rec: Value = serde_json::from_slice(&raw.get("tenants", b"res").expect("tenant")).unwrap();
    rec["rotation_started_at"] = json!("2026-01-01T00:00:00Z");
    raw.put("tenants", b"res", &serde_json::to_vec(&rec).unwrap());
    drop(raw);
    let events_before = s.audit_events().len();

    s.start_again();
    // Reads at once, while the resume may still be running.
    for (entity, recs) in &expected {
        assert_eq!(
            &records_by_id(&s, &token, entity).await,
            recs,
            "during resume: {entity}"
        );
    }
    let info = wait_rotated(&s, "res", 2).await;
    let retired = info["retired"].as_array().expect("retired");
    assert_eq!(retired.len(), 1, "{info}");
    assert_eq!(retired[0]["version"], 1);
    let destroy_after = retired[0]["destroy_after"].as_i64().unwrap();
    let expect = OffsetDateTime::now_utc().unix_timestamp() + DEFAULT_RETENTION_SECS;
    assert!(
        (destroy_after - expect).abs() < 120,
        "v1 gets its retention window when the resumed rotation completes: {info}"
    );
    // The resume is audited and rewrapped exactly the rolled-back DEKs.
    let new_events: Vec<StoredEvent> = s
        .audit_events()
        .into_iter()
        .skip(events_before)
        .filter(|e| e.action() == "key_rotate")
        .collect();
    let phases: Vec<&str> = new_events
        .iter()
        .map(|e| e.json["details"]["phase"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(phases.first(), Some(&"resume"), "{phases:?}");
    let done = new_events
        .iter()
        .find(|e| e.json["details"]["phase"] == "completed")
        .unwrap_or_else(|| panic!("no completed phase: {phases:?}"));
    assert_eq!(
        done.json["details"]["rewrapped"],
        ROLLED_BACK,
        "{}",
        String::from_utf8_lossy(&done.bytes)
    );
    // Each rolled-back DEK is the same key, now under v2.
    let after = tenant_deks(s.data_dir(), "res");
    for e in &rolled_back {
        let old = WrappedDek::from_bytes(&under_v1[e]).unwrap();
        assert_eq!(after[e].dek_id, old.dek_id, "{e}: same DEK");
        assert_eq!(after[e].kek_version, 2, "{e}");
    }

    // Cold cache: every DEK unwraps under v2.
    s.restart();
    for (entity, recs) in &expected {
        assert_eq!(&records_by_id(&s, &token, entity).await, recs, "after resume: {entity}");
    }
    verify_chain(s.data_dir());
}

// ---------------------------------------------------------------------------------------
// 7. Crypto-finality: the old wrapped DEK is useless once the old KEK is destroyed
// ---------------------------------------------------------------------------------------

/// The HSM settings of the server's config, for an in-process backend.
fn hsm_config(s: &TestServer) -> (PathBuf, Pkcs11Config) {
    let cfg: toml::Value =
        toml::from_str(&std::fs::read_to_string(s.dir().join("strongroom.toml")).expect("config")).expect("TOML");
    let hsm = &cfg["hsm"];
    let pin_file = PathBuf::from(hsm["pin_file"].as_str().expect("pin_file"));
    let pin = std::fs::read_to_string(&pin_file)
        .expect("pin file")
        .trim_end()
        .to_owned();
    let conf = s.hsm_dir().join("softhsm2.conf");
    assert!(conf.is_file(), "SoftHSM config at {}", conf.display());
    (
        conf,
        Pkcs11Config {
            module: PathBuf::from(hsm["module"].as_str().expect("module")),
            token_label: hsm["token_label"].as_str().expect("token_label").to_owned(),
            pin: secrecy::SecretString::from(pin),
        },
    )
}

/// Labels of the token's secret keys, listed by `pkcs11-tool` in a child process.
fn secret_key_labels(conf: &Path, cfg: &Pkcs11Config) -> Vec<String> {
    use secrecy::ExposeSecret;
    let out = std::process::Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", conf)
        .arg("--module")
        .arg(&cfg.module)
        .args([
            "--token-label",
            &cfg.token_label,
            "--login",
            "--pin",
            cfg.pin.expose_secret(),
        ])
        .args(["--list-objects", "--type", "secrkey"])
        .output()
        .expect("run pkcs11-tool");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pkcs11-tool failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("label:"))
        .map(|l| l.trim().to_owned())
        .collect()
}

fn aad(tenant: &str, entity: &str, version: u32) -> Vec<u8> {
    dek_aad(
        &TenantId::parse(tenant).expect("tenant id"),
        &EntityId::parse(entity).expect("entity id"),
        version,
    )
}

#[tokio::test]
async fn erased_entitys_saved_wrapped_dek_cannot_be_unwrapped_after_the_retention_window() {
    const RETENTION: i64 = 2;
    let mut s = TestServer::start_with_env(&[("STRONGROOM_KEYS__KEK_RETENTION_SECS", "2")]);
    s.create_tenant("fin").await;
    let token = s.tenant_token("fin", &RW_ERASE).await;
    let victim = format!("gone-{}", random_hex(4));
    let keeper = format!("stays-{}", random_hex(4));
    s.write_records(
        &token,
        &victim,
        json!([{ "data": { "v": 1 } }, { "data": { "v": 2 } }, { "data": { "v": 3 } }]),
    )
    .await;
    s.write_records(&token, &keeper, json!([{ "id": "k1", "data": { "k": 1 } }]))
        .await;

    // A backup of the whole data directory before the erasure.
    s.stop();
    let backup = tempfile::Builder::new()
        .prefix("strongroom-erasure-backup-")
        .tempdir()
        .expect("backup dir");
    copy_dir(s.data_dir(), backup.path());
    let saved =
        WrappedDek::from_bytes(&raw_dek(backup.path(), "fin", &victim).expect("victim DEK in the backup")).unwrap();
    let saved_keeper = WrappedDek::from_bytes(&raw_dek(backup.path(), "fin", &keeper).expect("keeper DEK")).unwrap();
    assert_eq!((saved.kek_version, saved_keeper.kek_version), (1, 1));

    // Positive control, in-process: today the saved blob unwraps under v1. SoftHSM reads
    // SOFTHSM2_CONF once, at C_Initialize: set it first (no other test of this binary
    // loads the module; child processes get it explicitly from the harness).
    let (conf, hsm_cfg) = hsm_config(&s);
    let keeper_material: Vec<u8>;
    std::env::set_var("SOFTHSM2_CONF", &conf);
    {
        let ctx = load_module(&hsm_cfg.module).expect("load the PKCS#11 module in-process");
        let mut hsm = Pkcs11Backend::open_with(ctx.clone(), &hsm_cfg.token_label, &hsm_cfg.pin)
            .expect("open the server's SoftHSM token in-process");
        let kek = KekRef {
            tenant_id: "fin",
            version: 1,
        };
        assert!(hsm.tenant_key_exists(kek).unwrap());
        let dek = hsm
            .unwrap(kek, &saved.wrapped, &aad("fin", &victim, 1))
            .expect("the saved wrapped DEK unwraps before the erasure");
        assert_eq!(dek.len(), 32);
        keeper_material = hsm
            .unwrap(kek, &saved_keeper.wrapped, &aad("fin", &keeper, 1))
            .expect("the keeper's DEK unwraps")
            .to_vec();
        // C_Finalize: the next open re-reads the token as the server leaves it.
        drop(hsm);
        ctx.finalize().expect("C_Finalize");
    }
    s.start_again();

    let r = erase(&s, &token, &victim).await;
    r.expect(200);
    assert_eq!(r.json["records_deleted"], 3);
    let completed = parse_time(&r.json["completed_at"]);
    let final_by = parse_time(&r.json["crypto_erasure_final_by"]);
    assert_eq!(
        (final_by - completed).whole_seconds(),
        RETENTION + FINALITY_MARGIN_SECS,
        "{}",
        r.text
    );

    // The background rotation: v2 current, v1 retired with a short window.
    let info = wait_rotated(&s, "fin", 2).await;
    let retired = info["retired"].as_array().expect("retired").clone();
    assert_eq!(retired.len(), 1, "{info}");
    assert_eq!(retired[0]["version"], 1);
    let destroy_after = retired[0]["destroy_after"].as_i64().unwrap();
    assert!(
        destroy_after <= parse_time(&r.json["crypto_erasure_final_by"]).unix_timestamp(),
        "the old KEK is due before crypto_erasure_final_by: {info} vs {}",
        r.text
    );
    let rot = events_of(&s, "key_rotate", "fin");
    assert!(
        rot.iter()
            .any(|e| e.json["details"]["phase"] == "completed" && e.json["details"]["key_version"] == 2),
        "rotation completed event"
    );

    // Past the window; the reaper runs at start (then every 10 minutes).
    while OffsetDateTime::now_utc().unix_timestamp() <= destroy_after {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.restart();
    let deadline = Instant::now() + POLL_TIMEOUT;
    loop {
        let info = tenant_info(&s, "fin").await;
        let destroyed = events_of(&s, "key_rotate", "fin")
            .into_iter()
            .any(|e| e.json["details"]["phase"] == "destroyed" && e.json["details"]["destroyed_version"] == 1);
        let none_retired = absent(info.get("retired")) || info["retired"].as_array().is_some_and(Vec::is_empty);
        if destroyed && none_retired {
            break;
        }
        assert!(Instant::now() < deadline, "v1 never destroyed: {info}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The keeper is fine (its DEK is under v2); the victim stays gone.
    let r = s.get(&format!("/v1/entities/{keeper}/records/k1"), Some(&token)).await;
    r.expect(200);
    assert_eq!(r.json["data"], json!({ "k": 1 }));
    assert!(records_by_id(&s, &token, &victim).await.is_empty());
    s.stop();

    let live_keeper = WrappedDek::from_bytes(&raw_dek(s.data_dir(), "fin", &keeper).unwrap()).unwrap();
    assert_eq!(live_keeper.kek_version, 2);
    assert_eq!(live_keeper.dek_id, saved_keeper.dek_id);
    let live_file = read_file(&s.data_dir().join("data.mdb"));
    eprintln!(
        "old wrapped DEK bytes still in the live data.mdb (LMDB free pages): {}",
        contains(&live_file, &saved.wrapped)
    );

    // The token's secret keys as pkcs11-tool (another process) lists them.
    let labels = secret_key_labels(&conf, &hsm_cfg);
    assert!(!labels.contains(&"strongroom/tenant/fin/v1".to_owned()), "{labels:?}");
    assert!(labels.contains(&"strongroom/tenant/fin/v2".to_owned()), "{labels:?}");

    // The proof, with the HSM the server used: v1 is gone, v2 is there.
    let ctx = load_module(&hsm_cfg.module).expect("load the PKCS#11 module in-process");
    let mut hsm = Pkcs11Backend::open_with(ctx, &hsm_cfg.token_label, &hsm_cfg.pin)
        .expect("open the server's SoftHSM token in-process");
    let v1 = KekRef {
        tenant_id: "fin",
        version: 1,
    };
    let v2 = KekRef {
        tenant_id: "fin",
        version: 2,
    };
    assert!(!hsm.tenant_key_exists(v1).unwrap(), "KEK v1 is destroyed");
    assert!(hsm.tenant_key_exists(v2).unwrap(), "KEK v2 exists");
    // The saved wrapped DEK of the erased entity (from the pre-erasure backup) cannot be
    // unwrapped: its KEK no longer exists...
    match hsm.unwrap(v1, &saved.wrapped, &aad("fin", &victim, 1)) {
        Err(HsmError::KeyNotFound(label)) => assert_eq!(label, "strongroom/tenant/fin/v1"),
        Err(e) => panic!("expected KeyNotFound for v1, got {e:?}"),
        Ok(_) => panic!("the erased entity's saved DEK still unwraps under v1"),
    }
    // ...and no other key of the tenant opens it.
    for aad_version in [1, 2] {
        assert!(
            matches!(
                hsm.unwrap(v2, &saved.wrapped, &aad("fin", &victim, aad_version)),
                Err(HsmError::UnwrapFailed)
            ),
            "v2 does not open the old blob"
        );
    }
    // The same holds for every DEK of the backup (all under v1)...
    assert!(matches!(
        hsm.unwrap(v1, &saved_keeper.wrapped, &aad("fin", &keeper, 1)),
        Err(HsmError::KeyNotFound(_))
    ));
    // ...while the live, rewrapped DEK of the keeper unwraps to the same key as before:
    // the unwrap path itself works.
    let k = hsm
        .unwrap(v2, &live_keeper.wrapped, &aad("fin", &keeper, 2))
        .expect("the live DEK unwraps under v2");
    assert_eq!(k.as_slice(), keeper_material.as_slice(), "same DEK, rewrapped under v2");
}

// ---------------------------------------------------------------------------------------
// 8. The retention window on the injected clock
// ---------------------------------------------------------------------------------------

/// `crypto_erasure_final_by` is kept with the default 7-day window: before it the retired
/// KEK stays, once the (injected) clock is past the window the reaper destroys it — in time
/// for the promised date — and the token no longer holds the label.
#[tokio::test]
async fn the_old_kek_is_destroyed_once_the_injected_clock_passes_the_window() {
    let mut s = TestServer::start();
    s.create_tenant("clk").await;
    let token = s.tenant_token("clk", &RW_ERASE).await;
    let victim = format!("gone-{}", random_hex(4));
    let keeper = format!("stays-{}", random_hex(4));
    s.write_records(&token, &victim, json!([{ "data": { "v": 1 } }])).await;
    s.write_records(&token, &keeper, json!([{ "id": "k1", "data": { "k": 1 } }]))
        .await;

    let r = erase(&s, &token, &victim).await;
    r.expect(200);
    let final_by = parse_time(&r.json["crypto_erasure_final_by"]);
    let info = wait_rotated(&s, "clk", 2).await;
    let destroy_after = info["retired"][0]["destroy_after"].as_i64().expect("v1 retired");
    assert_eq!(info["retired"][0]["version"], 1, "{info}");
    assert!(destroy_after <= final_by.unix_timestamp(), "{info} vs {}", r.text);

    // Inside the window: a restart (the reaper runs at start) keeps v1.
    s.restart();
    s.get(&format!("/v1/entities/{keeper}/records/k1"), Some(&token))
        .await
        .expect(200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let info = tenant_info(&s, "clk").await;
    assert_eq!(info["retired"][0]["version"], 1, "v1 kept inside the window: {info}");
    s.stop();
    let (conf, hsm_cfg) = hsm_config(&s);
    let labels = secret_key_labels(&conf, &hsm_cfg);
    for v in ["v1", "v2"] {
        assert!(
            labels.contains(&format!("strongroom/tenant/clk/{v}")),
            "{v} present: {labels:?}"
        );
    }

    // Two minutes past the window (well before `crypto_erasure_final_by`).
    let offset = destroy_after - OffsetDateTime::now_utc().unix_timestamp() + 120;
    s.set_serve_env("STRONGROOM_TEST_CLOCK_OFFSET_SECS", &offset.to_string());
    s.start_again();
    let deadline = Instant::now() + POLL_TIMEOUT;
    let destroyed = loop {
        let found = events_of(&s, "key_rotate", "clk")
            .into_iter()
            .find(|e| e.json["details"]["phase"] == "destroyed" && e.json["details"]["destroyed_version"] == 1);
        if let Some(e) = found {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "v1 never destroyed: {}",
            tenant_info(&s, "clk").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let at = OffsetDateTime::parse(&destroyed.event.ts, &Rfc3339).expect("event ts");
    assert!(
        at.unix_timestamp() > destroy_after && at <= final_by,
        "destroyed at {} (server clock): after the window ({destroy_after}), by crypto_erasure_final_by {}",
        destroyed.event.ts,
        r.json["crypto_erasure_final_by"]
    );
    let info = tenant_info(&s, "clk").await;
    assert!(
        absent(info.get("retired")) || info["retired"].as_array().is_some_and(Vec::is_empty),
        "{info}"
    );
    assert_eq!(info["key_version"], 2);
    // The keeper still reads (a fresh token: the first one expired on the shifted clock).
    let fresh = s.tenant_token("clk", &RW).await;
    let r = s.get(&format!("/v1/entities/{keeper}/records/k1"), Some(&fresh)).await;
    r.expect(200);
    assert_eq!(r.json["data"], json!({ "k": 1 }));
    s.stop();
    let labels = secret_key_labels(&conf, &hsm_cfg);
    assert!(
        !labels.contains(&"strongroom/tenant/clk/v1".to_owned()),
        "v1 destroyed: {labels:?}"
    );
    assert!(
        labels.contains(&"strongroom/tenant/clk/v2".to_owned()),
        "v2 kept: {labels:?}"
    );
}
