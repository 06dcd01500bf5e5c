//! AAD binding: sealed records and wrapped DEKs moved to another place in LMDB (by an
//! attacker with write access to the data directory) fail to decrypt.

use serde_json::json;
use strongroom::domain::{EntityId, RecordId, TenantId};
use strongroom::store::layout;

use crate::harness::{RawStore, Resp, TestServer};

fn prefix(tenant: &str, entity: &str) -> Vec<u8> {
    layout::entity_prefix(
        &TenantId::parse(tenant).expect("tenant"),
        &EntityId::parse(entity).expect("entity"),
    )
}

/// The `records` key of a record (found through `record_index`).
fn record_key(raw: &RawStore, tenant: &str, entity: &str, record: &str) -> Vec<u8> {
    let p = prefix(tenant, entity);
    let id = RecordId::parse(record).expect("record id");
    let ts = raw
        .get("record_index", &layout::record_index_key(&p, &id))
        .expect("record index entry");
    let ts = u64::from_be_bytes(ts.as_slice().try_into().expect("8-byte timestamp"));
    let key = layout::record_key(&p, ts, &id);
    assert!(raw.get("records", &key).is_some(), "record {record} found at its key");
    key
}

/// A stored DEK with its generation id (bytes 1..17) replaced by `id_from`'s.
fn with_dek_id(wrapped: &[u8], id_from: &[u8]) -> Vec<u8> {
    assert!(
        wrapped.len() > 21 && id_from.len() > 21 && wrapped[0] == 1 && id_from[0] == 1,
        "stored DEK format v1"
    );
    let mut out = wrapped.to_vec();
    out[1..17].copy_from_slice(&id_from[1..17]);
    out
}

#[track_caller]
fn assert_unreadable(r: &Resp, leaked: &[&str]) {
    assert!(
        (500..600).contains(&r.status),
        "tampered data must not read: {} {}",
        r.status,
        r.text
    );
    for l in leaked {
        assert!(!r.text.contains(l), "response leaks {l}: {}", r.text);
    }
}

#[tokio::test]
async fn records_and_deks_moved_in_lmdb_fail_to_decrypt() {
    let mut s = TestServer::start();
    s.create_tenant("acme").await;
    s.create_tenant("other").await;
    let t = s.tenant_token("acme", &["records:write", "records:read"]).await;
    let o = s.tenant_token("other", &["records:write", "records:read"]).await;

    let recs = json!([
        {"id": "r1", "timestamp": "2025-03-01T00:00:01Z", "data": {"v": "value-one"}},
        {"id": "r2", "timestamp": "2025-03-01T00:00:02Z", "data": {"v": "value-two"}},
        {"id": "r3", "timestamp": "2025-03-01T00:00:03Z", "data": {"v": "value-three"}},
    ]);
    s.write_records(&t, "e-rec", recs).await;
    s.write_records(&t, "e-src", json!([{"id": "s1", "data": {"v": "value-src"}}]))
        .await;
    s.write_records(&t, "e-dst", json!([{"id": "d1", "data": {"v": "value-dst"}}]))
        .await;
    s.write_records(&t, "e-dst2", json!([{"id": "d2", "data": {"v": "value-dst2"}}]))
        .await;
    s.write_records(&t, "e-dst3", json!([{"id": "d3", "data": {"v": "value-dst3"}}]))
        .await;
    s.write_records(&o, "e-x", json!([{"id": "x1", "data": {"v": "value-x"}}]))
        .await;
    for (entity, id) in [("e-rec", "r2"), ("e-dst", "d1"), ("e-dst2", "d2"), ("e-dst3", "d3")] {
        s.get(&format!("/v1/entities/{entity}/records/{id}"), Some(&t))
            .await
            .expect(200);
    }

    s.stop();
    {
        let raw = RawStore::open(s.data_dir());
        // 1. r1's sealed value over r2's (same entity and key, different record id).
        let k1 = record_key(&raw, "acme", "e-rec", "r1");
        let k2 = record_key(&raw, "acme", "e-rec", "r2");
        let v1 = raw.get("records", &k1).expect("r1 value");
        assert_ne!(raw.get("records", &k2).expect("r2 value"), v1);
        raw.put("records", &k2, &v1);

        // 2. e-src's wrapped DEK copied over e-dst's, as is.
        let src = raw.get("deks", &prefix("acme", "e-src")).expect("e-src DEK");
        let dst = raw.get("deks", &prefix("acme", "e-dst")).expect("e-dst DEK");
        assert_ne!(src, dst, "entities have their own DEKs");
        raw.put("deks", &prefix("acme", "e-dst"), &src);

        // 3. e-src's wrapped DEK over e-dst2's, relabelled with e-dst2's DEK id, so only the
        //    HSM's AAD check (tenant|entity|kek version) can tell.
        let dst2 = raw.get("deks", &prefix("acme", "e-dst2")).expect("e-dst2 DEK");
        raw.put("deks", &prefix("acme", "e-dst2"), &with_dek_id(&src, &dst2));

        // 4. Another tenant's wrapped DEK over e-dst3's, relabelled likewise.
        let x = raw.get("deks", &prefix("other", "e-x")).expect("e-x DEK");
        let dst3 = raw.get("deks", &prefix("acme", "e-dst3")).expect("e-dst3 DEK");
        raw.put("deks", &prefix("acme", "e-dst3"), &with_dek_id(&x, &dst3));
    }
    s.start_again();

    // The moved record fails; it never reads as the record it was copied from.
    let r = s.get("/v1/entities/e-rec/records/r2", Some(&t)).await;
    assert_unreadable(&r, &["value-one", "value-two"]);
    let e = s.events_for(&r.rid());
    assert_eq!(e.len(), 1, "one audit event: {e:#?}");
    assert_ne!(e[0].outcome(), "allowed");
    assert_unreadable(
        &s.get("/v1/entities/e-rec/records", Some(&t)).await,
        &["value-one", "value-two"],
    );
    // Untouched neighbours still read.
    let r = s.get("/v1/entities/e-rec/records/r1", Some(&t)).await;
    r.expect(200);
    assert_eq!(r.json["data"], json!({"v": "value-one"}));
    let r = s.get("/v1/entities/e-rec/records/r3", Some(&t)).await;
    r.expect(200);
    assert_eq!(r.json["data"], json!({"v": "value-three"}));

    // Entities whose DEK was replaced fail to read, whichever way it was moved.
    for (entity, id) in [("e-dst", "d1"), ("e-dst2", "d2"), ("e-dst3", "d3")] {
        let leaks = ["value-src", "value-x", "value-dst"];
        let r = s.get(&format!("/v1/entities/{entity}/records/{id}"), Some(&t)).await;
        assert_unreadable(&r, &leaks);
        let e = s.events_for(&r.rid());
        assert_eq!(e.len(), 1, "one audit event: {e:#?}");
        assert_ne!(e[0].outcome(), "allowed");
        assert_unreadable(
            &s.get(&format!("/v1/entities/{entity}/records"), Some(&t)).await,
            &leaks,
        );
        // Nor can new data be written under the foreign key.
        let w = s
            .post(
                &format!("/v1/entities/{entity}/records"),
                Some(&t),
                &json!({"records": [{"data": {}}]}),
            )
            .await;
        assert!(
            (500..600).contains(&w.status),
            "write under a moved DEK: {} {}",
            w.status,
            w.text
        );
    }

    // The source entities are intact.
    let r = s.get("/v1/entities/e-src/records/s1", Some(&t)).await;
    r.expect(200);
    assert_eq!(r.json["data"], json!({"v": "value-src"}));
    let r = s.get("/v1/entities/e-x/records/x1", Some(&o)).await;
    r.expect(200);
    assert_eq!(r.json["data"], json!({"v": "value-x"}));
    s.stop();
}
