//! Tokens: 401 for missing/garbage/expired/revoked tokens, 403 for missing permissions,
//! tenant-delegated token creation without escalation; every refusal is audited.

use serde_json::json;

use crate::harness::TestServer;

#[tokio::test]
async fn authentication_failures_are_401_and_audited() {
    let s = TestServer::start();
    s.create_tenant("acme").await;
    let (rw, _) = s.tenant_token_with_id("acme", &["records:read", "records:write"]).await;
    s.write_records(&rw, "e1", json!([{"id": "r1", "data": {"v": 1}}]))
        .await;
    let path = "/v1/entities/e1/records/r1";
    s.get(path, Some(&rw)).await.expect(200);

    // Missing header.
    let r = s.get(path, None).await;
    r.expect_error(401, "unauthorized");
    let e = s.expect_event(&r, "auth_denied", "denied");
    assert_eq!(e.event.actor, "anonymous");
    assert_eq!(e.json["details"]["reason"], "missing_token");

    // Not a bearer header / garbage / a token-shaped string that was never issued.
    let basic = s
        .send(
            s.client()
                .get(format!("{}{path}", s.base()))
                .header("authorization", "Basic dXNlcjpwYXNz"),
        )
        .await;
    basic.expect_error(401, "unauthorized");
    s.expect_event(&basic, "auth_denied", "denied");
    for garbage in [
        "garbage",
        "srt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        &format!("{rw}x"),
        &rw[..rw.len() - 1],
    ] {
        let r = s.get(path, Some(garbage)).await;
        r.expect_error(401, "unauthorized");
        let e = s.expect_event(&r, "auth_denied", "denied");
        assert_eq!(e.json["details"]["reason"], "invalid_token");
        assert!(
            !String::from_utf8_lossy(&e.bytes).contains(garbage),
            "the presented token is not logged"
        );
    }

    // Expired: a 1-second token, used after it expired.
    let body = json!({"actor": "user:short", "tenant_id": "acme", "permissions": ["records:read"], "ttl_secs": 1});
    let created = s.post("/v1/admin/tokens", Some(s.operator()), &body).await;
    created.expect(201);
    let short = created.json["token"].as_str().expect("token").to_owned();
    let expires = created.json["expires_at"].as_str().expect("expires_at");
    assert!(expires.ends_with('Z'), "expires_at is RFC 3339 UTC: {expires}");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = s.get(path, Some(&short)).await;
    r.expect_error(401, "unauthorized");
    let e = s.expect_event(&r, "auth_denied", "denied");
    assert_eq!(e.json["details"]["reason"], "expired_token");

    // Revoked: works, DELETE → 204, then 401.
    let (victim, victim_id) = s.tenant_token_with_id("acme", &["records:read"]).await;
    s.get(path, Some(&victim)).await.expect(200);
    let del = s
        .delete(&format!("/v1/admin/tokens/{victim_id}"), Some(s.operator()))
        .await;
    del.expect(204);
    assert!(del.text.is_empty(), "204 has no body");
    s.expect_event(&del, "token_revoke", "allowed");
    let r = s.get(path, Some(&victim)).await;
    r.expect_error(401, "unauthorized");
    let e = s.expect_event(&r, "auth_denied", "denied");
    assert_eq!(e.json["details"]["reason"], "revoked_token");
    // Revoking an unknown token is a 404.
    s.delete("/v1/admin/tokens/tok-0000000000000000", Some(s.operator()))
        .await
        .expect_error(404, "not_found");

    // 401 on every authenticated endpoint, not only records.
    for r in [
        s.get("/v1/admin/tenants", None).await,
        s.post("/v1/admin/tenants", Some("nope"), &json!({"tenant_id": "x"}))
            .await,
        s.post(
            "/v1/admin/tokens",
            None,
            &json!({"actor": "user:x", "permissions": ["audit:read"]}),
        )
        .await,
        s.delete(&format!("/v1/admin/tokens/{victim_id}"), Some(&victim)).await,
        s.post(
            "/v1/entities/e1/records",
            Some(&short),
            &json!({"records": [{"data": {}}]}),
        )
        .await,
        s.get("/v1/entities/e1/records", Some("")).await,
    ] {
        r.expect_error(401, "unauthorized");
        s.expect_event(&r, "auth_denied", "denied");
    }
    // The tenant list was not touched by the refused creation.
    let tenants = s.get("/v1/admin/tenants", Some(s.operator())).await;
    tenants.expect(200);
    assert_eq!(tenants.json["tenants"].as_array().map(Vec::len), Some(1));

    s.get(path, Some(&rw)).await.expect(200);
    s.verified_audit_log();
}

#[tokio::test]
async fn permissions_and_delegation() {
    let s = TestServer::start();
    s.create_tenant("acme").await;
    s.create_tenant("globex").await;
    let writer = s.tenant_token("acme", &["records:write"]).await;
    let reader = s.tenant_token("acme", &["records:read"]).await;
    s.write_records(&writer, "e1", json!([{"id": "r1", "data": {"v": 1}}]))
        .await;

    // Missing permission → 403, audited as access_denied.
    for r in [
        s.get("/v1/entities/e1/records/r1", Some(&writer)).await,
        s.get("/v1/entities/e1/records", Some(&writer)).await,
        s.post(
            "/v1/entities/e1/records",
            Some(&reader),
            &json!({"records": [{"id": "r2", "data": {}}]}),
        )
        .await,
        s.post(
            "/v1/admin/tokens",
            Some(&reader),
            &json!({"actor": "user:x", "tenant_id": "acme", "permissions": ["records:read"]}),
        )
        .await,
        s.post("/v1/admin/tenants", Some(&reader), &json!({"tenant_id": "evil"}))
            .await,
        s.get("/v1/admin/tenants", Some(&writer)).await,
    ] {
        r.expect_error(403, "forbidden");
        let e = s.expect_event(&r, "access_denied", "denied");
        assert_eq!(e.event.tenant_id.as_deref(), Some("acme"));
    }
    // The refused write wrote nothing.
    let r = s.get("/v1/entities/e1/records", Some(&reader)).await;
    r.expect(200);
    assert_eq!(r.json["records"].as_array().map(Vec::len), Some(1));
    // An operator token without tenants:manage cannot create tenants.
    let body = json!({"actor": "ops:auditor", "tenant_id": null, "permissions": ["audit:read"]});
    let r = s.post("/v1/admin/tokens", Some(s.operator()), &body).await;
    r.expect(201);
    let auditor = r.json["token"].as_str().expect("token").to_owned();
    let r = s
        .post("/v1/admin/tenants", Some(&auditor), &json!({"tenant_id": "evil"}))
        .await;
    r.expect_error(403, "forbidden");
    s.expect_event(&r, "access_denied", "denied");
    let tenants = s.get("/v1/admin/tenants", Some(s.operator())).await;
    assert_eq!(
        tenants.json["tenants"].as_array().map(Vec::len),
        Some(2),
        "{}",
        tenants.text
    );

    // Delegation: a tenant token with tokens:manage.
    let manager = s
        .tenant_token("acme", &["tokens:manage", "records:read", "records:write"])
        .await;
    // A subset of its own permissions, for its own tenant → 201, and the token works as granted.
    let sub = json!({"actor": "svc:ingest", "tenant_id": "acme", "permissions": ["records:read"], "ttl_secs": 600});
    let r = s.post("/v1/admin/tokens", Some(&manager), &sub).await;
    r.expect(201);
    let e = s.expect_event(&r, "token_create", "allowed");
    assert_eq!(e.event.tenant_id.as_deref(), Some("acme"));
    let child = r.json["token"].as_str().expect("token").to_owned();
    assert_ne!(child, manager);
    assert!(r.json["token_id"].as_str().is_some_and(|id| !id.is_empty()));
    let got = s.get("/v1/entities/e1/records/r1", Some(&child)).await;
    got.expect(200);
    assert_eq!(got.json["data"], json!({"v": 1}));
    s.post(
        "/v1/entities/e1/records",
        Some(&child),
        &json!({"records": [{"data": {}}]}),
    )
    .await
    .expect_error(403, "forbidden");
    // The whole set is a subset too.
    let same = json!({"actor": "svc:same", "tenant_id": "acme", "permissions": ["tokens:manage", "records:read", "records:write"]});
    s.post("/v1/admin/tokens", Some(&manager), &same).await.expect(201);

    // A superset → 403.
    let superset = json!({"actor": "svc:more", "tenant_id": "acme", "permissions": ["records:read", "entity:erase"]});
    let r = s.post("/v1/admin/tokens", Some(&manager), &superset).await;
    r.expect_error(403, "forbidden");
    s.expect_event(&r, "access_denied", "denied");
    // Another tenant → 403.
    let foreign = json!({"actor": "svc:spy", "tenant_id": "globex", "permissions": ["records:read"]});
    let r = s.post("/v1/admin/tokens", Some(&manager), &foreign).await;
    r.expect_error(403, "forbidden");
    s.expect_event(&r, "access_denied", "denied");
    // An operator token → 403.
    let operator = json!({"actor": "svc:root", "tenant_id": null, "permissions": ["tokens:manage"]});
    let r = s.post("/v1/admin/tokens", Some(&manager), &operator).await;
    r.expect_error(403, "forbidden");
    s.expect_event(&r, "access_denied", "denied");
    // The child cannot delegate at all (no tokens:manage).
    let r = s.post("/v1/admin/tokens", Some(&child), &sub).await;
    r.expect_error(403, "forbidden");

    s.verified_audit_log();
}
