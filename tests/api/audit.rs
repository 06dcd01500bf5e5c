//! The audit chain: one event per request, seq without gaps, every link recomputes,
//! canonical bytes, batch writes logged once with their count.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;
use time::format_description::well_known::Rfc3339;

use crate::harness::{Resp, StoredEvent, TestServer};

struct Expect {
    resp: Resp,
    status: u16,
    action: &'static str,
    outcome: &'static str,
}

fn check_event_fields(e: &StoredEvent) {
    let ts = time::OffsetDateTime::parse(&e.event.ts, &Rfc3339).unwrap_or_else(|_| panic!("ts {}", e.event.ts));
    assert_eq!(ts.offset(), time::UtcOffset::UTC, "ts is UTC: {}", e.event.ts);
    assert!(e.event.event_id.starts_with("evt-"), "{}", e.event.event_id);
    let keys: Vec<&str> = e.json.as_object().expect("object").keys().map(String::as_str).collect();
    let mut expected = vec![
        "seq",
        "prev",
        "ts",
        "event_id",
        "action",
        "actor",
        "tenant_id",
        "resource",
        "outcome",
        "request_id",
        "details",
    ];
    expected.sort_unstable();
    let mut got = keys.clone();
    got.sort_unstable();
    assert_eq!(got, expected, "event fields");
    assert!(e.json["details"].is_object());
    assert!(
        e.bytes.starts_with(b"audit-event/v1\n{\"seq\":"),
        "field order starts with seq"
    );
}

#[tokio::test]
async fn every_request_is_one_event_in_an_unbroken_chain() {
    let mut s = TestServer::start();

    // Genesis: seq 0, prev = zeros, written by init.
    let events = s.verified_audit_log();
    assert_eq!(events[0].action(), "service_start");
    assert_eq!(events[0].json["details"]["genesis"], true);
    let before = events.len();

    let op = s.operator().to_owned();
    let mut sent: Vec<Expect> = Vec::new();
    macro_rules! req {
        ($resp:expr, $status:expr, $action:expr, $outcome:expr) => {{
            let resp: Resp = $resp;
            assert_eq!(resp.status, $status, "{} → {}", $action, resp.text);
            sent.push(Expect {
                resp: resp.clone(),
                status: $status,
                action: $action,
                outcome: $outcome,
            });
            resp
        }};
    }

    req!(
        s.post("/v1/admin/tenants", Some(&op), &json!({"tenant_id": "acme"}))
            .await,
        201,
        "tenant_create",
        "allowed"
    );
    let tok = req!(
        s.post(
            "/v1/admin/tokens",
            Some(&op),
            &json!({"actor": "user:jdoe", "tenant_id": "acme", "permissions": ["records:write", "records:read"]})
        )
        .await,
        201,
        "token_create",
        "allowed"
    );
    let t = tok.json["token"].as_str().expect("token").to_owned();
    let ro = req!(
        s.post(
            "/v1/admin/tokens",
            Some(&op),
            &json!({"actor": "user:ro", "tenant_id": "acme", "permissions": ["records:read"]})
        )
        .await,
        201,
        "token_create",
        "allowed"
    );
    let ro_id = ro.json["token_id"].as_str().expect("token_id").to_owned();
    let ro = ro.json["token"].as_str().expect("token").to_owned();
    let k = 4;
    let batch: Vec<_> = (0..k)
        .map(|i| json!({"id": format!("r{i}"), "data": {"i": i}}))
        .collect();
    let w4 = req!(
        s.post("/v1/entities/e1/records", Some(&t), &json!({"records": batch}))
            .await,
        201,
        "data_write",
        "allowed"
    );
    let w1 = req!(
        s.post(
            "/v1/entities/e2/records",
            Some(&t),
            &json!({"records": [{"data": {"one": 1}}]})
        )
        .await,
        201,
        "data_write",
        "allowed"
    );
    req!(
        s.get("/v1/entities/e1/records/r0", Some(&ro)).await,
        200,
        "data_access",
        "allowed"
    );
    let list = req!(
        s.get("/v1/entities/e1/records?limit=3", Some(&t)).await,
        200,
        "data_access",
        "allowed"
    );
    req!(
        s.get("/v1/entities/e1/records", None).await,
        401,
        "auth_denied",
        "denied"
    );
    req!(
        s.get("/v1/entities/e1/records", Some("srt_nope")).await,
        401,
        "auth_denied",
        "denied"
    );
    req!(
        s.post(
            "/v1/entities/e1/records",
            Some(&ro),
            &json!({"records": [{"data": {}}]})
        )
        .await,
        403,
        "access_denied",
        "denied"
    );
    req!(
        s.get("/v1/entities/e1/records", Some(&op)).await,
        403,
        "access_denied",
        "denied"
    );
    req!(
        s.post_raw("/v1/entities/e1/records", Some(&t), "{not json").await,
        400,
        "data_write",
        "failed"
    );
    req!(
        s.post(
            "/v1/entities/e1/records",
            Some(&t),
            &json!({"records": [{"id": "r1", "data": {}}]})
        )
        .await,
        409,
        "data_write",
        "failed"
    );
    req!(
        s.get("/v1/entities/e1/records/missing", Some(&t)).await,
        404,
        "access_denied",
        "denied"
    );
    req!(
        s.get("/v1/entities/e1/records?limit=0", Some(&t)).await,
        400,
        "data_access",
        "failed"
    );
    req!(
        s.post("/v1/admin/tenants", Some(&op), &json!({"tenant_id": "acme"}))
            .await,
        409,
        "tenant_create",
        "failed"
    );
    req!(
        s.get("/v1/admin/tenants", Some(&op)).await,
        200,
        "data_access",
        "allowed"
    );
    req!(
        s.delete(&format!("/v1/admin/tokens/{ro_id}"), Some(&op)).await,
        204,
        "token_revoke",
        "allowed"
    );
    req!(
        s.get("/v1/entities/e1/records/r0", Some(&ro)).await,
        401,
        "auth_denied",
        "denied"
    );
    let n = sent.len();

    let events = s.verified_audit_log();
    let new: Vec<&StoredEvent> = events[before..]
        .iter()
        .filter(|e| !e.event.actor.starts_with("system"))
        .collect();
    assert_eq!(
        new.len(),
        n,
        "exactly one new event per request: {:#?}",
        new.iter().map(|e| &e.json).collect::<Vec<_>>()
    );

    // Each request's event, found by its request id, says what happened.
    let by_rid: BTreeMap<&str, &StoredEvent> = new.iter().map(|e| (e.event.request_id.as_str(), *e)).collect();
    assert_eq!(by_rid.len(), n, "request ids are distinct");
    for x in &sent {
        let rid = x.resp.rid();
        let e = by_rid
            .get(rid.as_str())
            .unwrap_or_else(|| panic!("no event for {} ({rid})", x.action));
        assert_eq!(
            (e.action(), e.outcome()),
            (x.action, x.outcome),
            "event of a {} answer: {}",
            x.status,
            e.json
        );
        if x.status >= 400 {
            assert_eq!(x.resp.json["error"]["request_id"], rid.as_str());
        }
    }
    // Events appear in request order (the requests were sequential).
    let order: Vec<u64> = sent.iter().map(|x| by_rid[x.resp.rid().as_str()].event.seq).collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "seq follows request order: {order:?}"
    );

    // A batch write is one data_write with details.count = k; a listing carries its count.
    let e = by_rid[w4.rid().as_str()];
    assert_eq!(e.json["details"]["count"], k, "{}", e.json);
    assert_eq!(e.json["resource"], "entity:e1");
    assert_eq!(e.json["tenant_id"], "acme");
    assert_eq!(e.json["actor"], "user:jdoe");
    assert_eq!(by_rid[w1.rid().as_str()].json["details"]["count"], 1);
    assert_eq!(by_rid[list.rid().as_str()].json["details"]["count"], 3);
    assert_eq!(by_rid[tok.rid().as_str()].json["tenant_id"], "acme");

    for e in &events {
        check_event_fields(e);
    }
    let ids: BTreeSet<&str> = events.iter().map(|e| e.event.event_id.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique");
    // No secret in the log: neither token nor record data.
    for e in &events {
        let text = String::from_utf8_lossy(&e.bytes);
        assert!(
            !text.contains(&t) && !text.contains(&op),
            "a token is in the audit log: {text}"
        );
    }

    // A restart continues the same chain: service_stop, service_start, then new events.
    s.restart();
    s.get("/v1/entities/e1/records/r1", Some(&t)).await.expect(200);
    let after = s.verified_audit_log();
    for (old, new) in events.iter().zip(&after) {
        assert_eq!(old.bytes, new.bytes, "history is unchanged");
    }
    let tail: Vec<&str> = after[events.len()..].iter().map(StoredEvent::action).collect();
    assert!(
        tail.contains(&"service_stop") && tail.contains(&"service_start"),
        "{tail:?}"
    );
    let last_request = after[events.len()..]
        .iter()
        .rfind(|e| !e.event.actor.starts_with("system"));
    assert_eq!(last_request.map(StoredEvent::action), Some("data_access"));
    s.stop();
    let last = s.verified_audit_log();
    let tail: Vec<&str> = last[after.len()..].iter().map(StoredEvent::action).collect();
    assert!(tail.contains(&"service_stop"), "a clean stop is logged: {tail:?}");
}
