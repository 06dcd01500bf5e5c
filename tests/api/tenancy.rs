//! Tenant isolation: another tenant's records are invisible (404 / empty list), writing to
//! the same entity id makes a separate entity, operators read no records; every refusal
//! is audited as `access_denied`.

use serde_json::{json, Value};

use crate::harness::TestServer;

#[tokio::test]
async fn tenants_cannot_see_or_touch_each_others_records() {
    let s = TestServer::start();
    s.create_tenant("tenant-a").await;
    s.create_tenant("tenant-b").await;
    let a = s.tenant_token("tenant-a", &["records:read", "records:write"]).await;
    let b = s.tenant_token("tenant-b", &["records:read", "records:write"]).await;

    let b_data = json!({"owner": "b", "zq-b-only-field": "zq-b-only-value"});
    s.write_records(
        &b,
        "shared-e",
        json!([{"id": "r1", "timestamp": "2025-02-01T00:00:00Z", "data": b_data}]),
    )
    .await;
    let b_record = s.get("/v1/entities/shared-e/records/r1", Some(&b)).await;
    b_record.expect(200);
    let b_list_before = s.get("/v1/entities/shared-e/records", Some(&b)).await;
    b_list_before.expect(200);

    // A cannot read B's record: 404, the same as a record that does not exist at all.
    let r = s.get("/v1/entities/shared-e/records/r1", Some(&a)).await;
    r.expect_error(404, "not_found");
    assert!(!r.text.contains("zq-b-only"), "{}", r.text);
    let e = s.expect_event(&r, "access_denied", "denied");
    assert_eq!(e.event.tenant_id.as_deref(), Some("tenant-a"));
    assert_eq!(e.event.resource, "entity:shared-e/record:r1");
    let missing = s.get("/v1/entities/no-such-entity/records/r1", Some(&a)).await;
    missing.expect_error(404, "not_found");
    // A's own audit view cannot tell B's entity from a missing one either.
    let m = s.expect_event(&missing, "access_denied", "denied");
    assert_eq!(m.event.tenant_id, e.event.tenant_id);
    assert_eq!(
        m.event.details, e.event.details,
        "same details for a cross-tenant and a plain miss"
    );
    assert_eq!(
        r.json["error"]["message"], missing.json["error"]["message"],
        "a cross-tenant 404 looks exactly like a plain 404"
    );

    // A's listing of B's entity is empty.
    let r = s.get("/v1/entities/shared-e/records", Some(&a)).await;
    r.expect(200);
    assert_eq!(r.json, json!({"records": [], "next_cursor": null}));
    // Audited like the listing of an empty entity of A's own: nothing to tell them apart.
    let e = s.expect_event(&r, "data_access", "allowed");
    assert_eq!(e.event.tenant_id.as_deref(), Some("tenant-a"));
    assert_eq!(e.event.details["count"], 0);
    let r = s
        .get(
            "/v1/entities/shared-e/records?start=2025-01-01T00:00:00Z&limit=1000",
            Some(&a),
        )
        .await;
    r.expect(200);
    assert_eq!(r.json, json!({"records": [], "next_cursor": null}));

    // A writing to the same entity id creates A's own entity, even with the same record id.
    let a_data = json!({"owner": "a"});
    let ids = s
        .write_records(
            &a,
            "shared-e",
            json!([{"id": "r1", "data": a_data}, {"id": "r2", "data": {"x": 1}}]),
        )
        .await;
    assert_eq!(ids, vec!["r1".to_owned(), "r2".to_owned()]);
    let r = s.get("/v1/entities/shared-e/records/r1", Some(&a)).await;
    r.expect(200);
    assert_eq!(r.json["data"], a_data);
    let a_list = s.get("/v1/entities/shared-e/records", Some(&a)).await;
    a_list.expect(200);
    let a_ids: Vec<&str> = a_list.json["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(a_ids, vec!["r1", "r2"], "A sees only its own records");
    assert!(
        !a_list.text.contains("zq-b-only"),
        "A's listing leaks B's data: {}",
        a_list.text
    );

    // B's data is unchanged, and B does not see A's records.
    let r = s.get("/v1/entities/shared-e/records/r1", Some(&b)).await;
    r.expect(200);
    assert_eq!(r.json, b_record.json, "B's record is unchanged");
    assert_eq!(r.json["data"], b_data);
    let r = s.get("/v1/entities/shared-e/records", Some(&b)).await;
    r.expect(200);
    assert_eq!(r.json, b_list_before.json, "B's listing is unchanged");
    let r = s.get("/v1/entities/shared-e/records/r2", Some(&b)).await;
    r.expect_error(404, "not_found");
    s.expect_event(&r, "access_denied", "denied");

    // The operator token reads and writes no records at all: 403 on every record endpoint.
    let op = s.operator().to_owned();
    let denied = [
        s.get("/v1/entities/shared-e/records/r1", Some(&op)).await,
        s.get("/v1/entities/shared-e/records", Some(&op)).await,
        s.post(
            "/v1/entities/shared-e/records",
            Some(&op),
            &json!({"records": [{"data": {"op": true}}]}),
        )
        .await,
        s.post(
            "/v1/entities/op-new/records",
            Some(&op),
            &json!({"records": [{"data": {"op": true}}]}),
        )
        .await,
    ];
    for r in &denied {
        r.expect_error(403, "forbidden");
        let e = s.expect_event(r, "access_denied", "denied");
        assert_eq!(e.event.actor, "operator:bootstrap");
        assert_eq!(e.event.tenant_id, None);
    }
    // Nothing changed for either tenant.
    let r = s.get("/v1/entities/shared-e/records", Some(&b)).await;
    assert_eq!(r.json, b_list_before.json);
    let r = s.get("/v1/entities/shared-e/records", Some(&a)).await;
    assert_eq!(r.json, a_list.json);
    let r = s.get("/v1/entities/op-new/records", Some(&a)).await;
    assert_eq!(r.json, json!({"records": [], "next_cursor": null}));

    // The refusals are all in the log, as denials; nothing in it carries record data.
    let events = s.verified_audit_log();
    let denials: Vec<&Value> = events
        .iter()
        .filter(|e| e.action() == "access_denied")
        .map(|e| &e.json)
        .collect();
    assert!(denials.iter().all(|e| e["outcome"] == "denied"), "{denials:#?}");
    assert!(denials.len() >= 7, "every refusal is logged: {denials:#?}");
    for e in &events {
        let text = String::from_utf8_lossy(&e.bytes);
        assert!(!text.contains("zq-b-only"), "record data in the audit log: {text}");
    }
}
