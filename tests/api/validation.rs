//! Bad input: each gets its documented status and JSON error body, and changes nothing.

use serde_json::{json, Value};

use crate::harness::{Resp, TestServer};

async fn snapshot(s: &TestServer, token: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for entity in ["e1", "e2"] {
        let r = s
            .get(&format!("/v1/entities/{entity}/records?limit=1000"), Some(token))
            .await;
        r.expect(200);
        out.push(r.json);
    }
    let r = s.get("/v1/admin/tenants", Some(s.operator())).await;
    r.expect(200);
    out.push(r.json);
    out
}

#[tokio::test]
async fn bad_input_is_refused_with_the_documented_error_and_changes_nothing() {
    let s = TestServer::start();
    s.create_tenant("acme").await;
    let t = s.tenant_token("acme", &["records:write", "records:read"]).await;
    s.write_records(
        &t,
        "e1",
        json!([{"id": "r1", "timestamp": "2025-01-01T00:00:00Z", "data": {"v": 1}}]),
    )
    .await;
    let before = snapshot(&s, &t).await;
    let events_before = s.audit_events().len();

    let w = "/v1/entities/e1/records";
    let long_id = "a".repeat(129);
    let max_id = "b".repeat(128);
    let mut cases: Vec<(&str, Resp, u16, &str)> = vec![
        (
            "malformed JSON",
            s.post_raw(w, Some(&t), "{\"records\": [").await,
            400,
            "invalid_request",
        ),
        (
            "not JSON",
            s.post_raw(w, Some(&t), "records=1").await,
            400,
            "invalid_request",
        ),
        ("empty body", s.post_raw(w, Some(&t), "").await, 400, "invalid_request"),
        (
            "JSON array body",
            s.post(w, Some(&t), &json!([{"data": {}}])).await,
            400,
            "invalid_request",
        ),
        (
            "unknown top-level field",
            s.post(w, Some(&t), &json!({"records": [{"data": {}}], "extra": 1}))
                .await,
            400,
            "invalid_request",
        ),
        (
            "unknown record field",
            s.post(w, Some(&t), &json!({"records": [{"data": {}, "colour": "red"}]}))
                .await,
            400,
            "invalid_request",
        ),
        (
            "missing records",
            s.post(w, Some(&t), &json!({})).await,
            400,
            "invalid_request",
        ),
        (
            "empty records",
            s.post(w, Some(&t), &json!({"records": []})).await,
            400,
            "invalid_request",
        ),
        (
            "missing data",
            s.post(w, Some(&t), &json!({"records": [{"id": "x"}]})).await,
            400,
            "invalid_request",
        ),
        (
            "entity id with a space",
            s.post(
                "/v1/entities/bad%20id/records",
                Some(&t),
                &json!({"records": [{"data": {}}]}),
            )
            .await,
            400,
            "invalid_request",
        ),
        (
            "entity id of 129 chars",
            s.post(
                &format!("/v1/entities/{long_id}/records"),
                Some(&t),
                &json!({"records": [{"data": {}}]}),
            )
            .await,
            400,
            "invalid_request",
        ),
        (
            "entity id with a slash",
            s.post(
                "/v1/entities/a%2Fb/records",
                Some(&t),
                &json!({"records": [{"data": {}}]}),
            )
            .await,
            400,
            "invalid_request",
        ),
        (
            "record id with a space",
            s.post(w, Some(&t), &json!({"records": [{"id": "bad id", "data": {}}]}))
                .await,
            400,
            "invalid_request",
        ),
        (
            "record id of 129 chars",
            s.post(w, Some(&t), &json!({"records": [{"id": long_id, "data": {}}]}))
                .await,
            400,
            "invalid_request",
        ),
        (
            "empty record id",
            s.post(w, Some(&t), &json!({"records": [{"id": "", "data": {}}]})).await,
            400,
            "invalid_request",
        ),
        (
            "record id not a string",
            s.post(w, Some(&t), &json!({"records": [{"id": 7, "data": {}}]})).await,
            400,
            "invalid_request",
        ),
        (
            "a valid record batched with a bad one",
            s.post(
                w,
                Some(&t),
                &json!({"records": [{"id": "ok-1", "data": {"v": 2}}, {"id": "bad!", "data": {}}]}),
            )
            .await,
            400,
            "invalid_request",
        ),
        (
            "data is an array",
            s.post(w, Some(&t), &json!({"records": [{"data": [1, 2]}]})).await,
            400,
            "invalid_request",
        ),
        (
            "data is a string",
            s.post(w, Some(&t), &json!({"records": [{"data": "x"}]})).await,
            400,
            "invalid_request",
        ),
        (
            "data is null",
            s.post(w, Some(&t), &json!({"records": [{"data": null}]})).await,
            400,
            "invalid_request",
        ),
        (
            "bad timestamp",
            s.post(
                w,
                Some(&t),
                &json!({"records": [{"data": {}, "timestamp": "yesterday"}]}),
            )
            .await,
            400,
            "invalid_request",
        ),
        (
            "timestamp without zone",
            s.post(
                w,
                Some(&t),
                &json!({"records": [{"data": {}, "timestamp": "2025-01-01T00:00:00"}]}),
            )
            .await,
            400,
            "invalid_request",
        ),
        (
            "timestamp before 1970",
            s.post(
                w,
                Some(&t),
                &json!({"records": [{"data": {}, "timestamp": "1969-12-31T23:59:59Z"}]}),
            )
            .await,
            400,
            "invalid_request",
        ),
        (
            "duplicate id inside a batch",
            s.post(
                w,
                Some(&t),
                &json!({"records": [{"id": "dup", "data": {}}, {"id": "dup", "data": {}}]}),
            )
            .await,
            400,
            "invalid_request",
        ),
        (
            "record id that exists",
            s.post(
                w,
                Some(&t),
                &json!({"records": [{"id": "new-1", "data": {}}, {"id": "r1", "data": {"v": 9}}]}),
            )
            .await,
            409,
            "conflict",
        ),
        (
            "limit=0",
            s.get(&format!("{w}?limit=0"), Some(&t)).await,
            400,
            "invalid_request",
        ),
        (
            "limit=1001",
            s.get(&format!("{w}?limit=1001"), Some(&t)).await,
            400,
            "invalid_request",
        ),
        (
            "limit=-1",
            s.get(&format!("{w}?limit=-1"), Some(&t)).await,
            400,
            "invalid_request",
        ),
        (
            "limit=abc",
            s.get(&format!("{w}?limit=abc"), Some(&t)).await,
            400,
            "invalid_request",
        ),
        (
            "bad start",
            s.get(&format!("{w}?start=2025-13-01T00:00:00Z"), Some(&t)).await,
            400,
            "invalid_request",
        ),
        (
            "bad end",
            s.get(&format!("{w}?end=soon"), Some(&t)).await,
            400,
            "invalid_request",
        ),
        (
            "bad cursor",
            s.get(&format!("{w}?cursor=%%%"), Some(&t)).await,
            400,
            "invalid_request",
        ),
        (
            "garbage cursor",
            s.get(&format!("{w}?cursor=AAAA"), Some(&t)).await,
            400,
            "invalid_request",
        ),
        (
            "unknown query parameter",
            s.get(&format!("{w}?colour=red"), Some(&t)).await,
            400,
            "invalid_request",
        ),
        (
            "get: bad record id",
            s.get("/v1/entities/e1/records/bad%21id", Some(&t)).await,
            400,
            "invalid_request",
        ),
        (
            "get: bad entity id",
            s.get("/v1/entities/bad%20id/records/r1", Some(&t)).await,
            400,
            "invalid_request",
        ),
        (
            "list: entity id of 129 chars",
            s.get(&format!("/v1/entities/{long_id}/records"), Some(&t)).await,
            400,
            "invalid_request",
        ),
        (
            "duplicate tenant",
            s.post("/v1/admin/tenants", Some(s.operator()), &json!({"tenant_id": "acme"}))
                .await,
            409,
            "conflict",
        ),
        (
            "invalid tenant id",
            s.post("/v1/admin/tenants", Some(s.operator()), &json!({"tenant_id": "a b"}))
                .await,
            400,
            "invalid_request",
        ),
        (
            "tenant: unknown field",
            s.post(
                "/v1/admin/tenants",
                Some(s.operator()),
                &json!({"tenant_id": "fresh", "plan": "gold"}),
            )
            .await,
            400,
            "invalid_request",
        ),
        (
            "token for a tenant that does not exist",
            s.post(
                "/v1/admin/tokens",
                Some(s.operator()),
                &json!({"actor": "user:x", "tenant_id": "nope", "permissions": ["records:read"]}),
            )
            .await,
            404,
            "not_found",
        ),
        (
            "token: unknown permission",
            s.post(
                "/v1/admin/tokens",
                Some(s.operator()),
                &json!({"actor": "user:x", "tenant_id": "acme", "permissions": ["records:delete"]}),
            )
            .await,
            400,
            "invalid_request",
        ),
        (
            "token: ttl 0",
            s.post(
                "/v1/admin/tokens",
                Some(s.operator()),
                &json!({"actor": "user:x", "tenant_id": "acme", "permissions": ["records:read"], "ttl_secs": 0}),
            )
            .await,
            400,
            "invalid_request",
        ),
    ];

    // Bodies over the 1 MiB limit → 413, whether the limit is crossed by a huge record or
    // by a huge batch.
    let big = "x".repeat(1024 * 1024 + 1);
    cases.push((
        "oversized body",
        s.post(
            w,
            Some(&t),
            &json!({"records": [{"id": "huge", "data": {"blob": big}}]}),
        )
        .await,
        413,
        "payload_too_large",
    ));
    let many: Vec<Value> = (0..1000)
        .map(|i| json!({"id": format!("m{i}"), "data": {"pad": "y".repeat(1100)}}))
        .collect();
    cases.push((
        "oversized batch",
        s.post(w, Some(&t), &json!({"records": many})).await,
        413,
        "payload_too_large",
    ));
    let max_len = s
        .post(w, Some(&t), &json!({"records": [{"id": max_id, "data": {}}]}))
        .await;

    let mut failures = Vec::new();
    for (name, resp, status, code) in &cases {
        let ok = std::panic::catch_unwind(|| {
            resp.expect_error(*status, code);
        });
        if ok.is_err() {
            failures.push(format!("{name}: got {} {}", resp.status, resp.text));
        }
    }
    assert!(failures.is_empty(), "wrong answers:\n{}", failures.join("\n"));

    // Exactly one audit event per refused request, none of them `allowed`.
    let events = s.audit_events();
    for (name, resp, _, _) in &cases {
        let rid = resp.rid();
        let mine: Vec<_> = events.iter().filter(|e| e.event.request_id == rid).collect();
        assert_eq!(mine.len(), 1, "{name}: one audit event, got {mine:#?}");
        assert_ne!(
            mine[0].outcome(),
            "allowed",
            "{name}: {}",
            String::from_utf8_lossy(&mine[0].bytes)
        );
    }
    assert_eq!(
        events.len(),
        events_before + cases.len() + 1,
        "one event per request, nothing else"
    );

    // The 128-char id (the maximum) was fine; apart from it nothing changed.
    max_len.expect(201);
    let r = s
        .get(&format!("/v1/entities/e1/records/{}", "b".repeat(128)), Some(&t))
        .await;
    r.expect(200);
    let r = s
        .get(&format!("/v1/entities/{}/records", "c".repeat(128)), Some(&t))
        .await;
    r.expect(200);
    let mut after = snapshot(&s, &t).await;
    let e1 = after[0]["records"].as_array_mut().expect("records");
    let before_len = e1.len();
    e1.retain(|r| r["id"] != "b".repeat(128));
    assert_eq!(e1.len() + 1, before_len);
    assert_eq!(after, before, "refused requests changed nothing");
    for id in ["new-1", "ok-1", "huge", "m0", "dup", "x"] {
        s.get(&format!("/v1/entities/e1/records/{id}"), Some(&t))
            .await
            .expect_error(404, "not_found");
    }
    let r = s.get("/v1/entities/e1/records/r1", Some(&t)).await;
    assert_eq!(
        r.json["data"],
        json!({"v": 1}),
        "the existing record was not overwritten"
    );

    // The server is still fine.
    s.get("/healthz", None).await.expect(200);
    s.verified_audit_log();
}
