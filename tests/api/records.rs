//! Records round trip: batch write, get, ordered and paged listing, survive a restart.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::harness::TestServer;

fn nanos(ts: &str) -> i128 {
    OffsetDateTime::parse(ts, &Rfc3339)
        .unwrap_or_else(|e| panic!("bad timestamp {ts}: {e}"))
        .unix_timestamp_nanos()
}

/// What a record should read back as.
#[derive(Debug, Clone)]
struct Expected {
    id: String,
    ts: String,
    data: Value,
}

fn sort_key(r: &Expected) -> (i128, String) {
    (nanos(&r.ts), r.id.clone())
}

fn check_record(got: &Value, want: &Expected, entity: &str) {
    assert_eq!(got["id"], want.id.as_str(), "id: {got}");
    assert_eq!(got["entity_id"], entity, "entity_id: {got}");
    assert_eq!(got["data"], want.data, "data of {}: {got}", want.id);
    let ts = got["timestamp"].as_str().expect("timestamp string");
    assert!(ts.ends_with('Z'), "timestamps are rendered in UTC: {ts}");
    assert_eq!(
        nanos(ts),
        nanos(&want.ts),
        "timestamp of {}: {ts} vs {}",
        want.id,
        want.ts
    );
    assert_eq!(
        got.as_object().map(|o| o.len()),
        Some(4),
        "record has exactly id, entity_id, timestamp, data: {got}"
    );
}

fn ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

async fn check_all(s: &TestServer, token: &str, entity: &str, expected: &[Expected]) {
    // Each record by id.
    for want in expected {
        let r = s
            .get(&format!("/v1/entities/{entity}/records/{}", want.id), Some(token))
            .await;
        r.expect(200);
        check_record(&r.json, want, entity);
    }

    let mut sorted = expected.to_vec();
    sorted.sort_by_key(sort_key);
    let by_id: BTreeMap<&str, &Expected> = expected.iter().map(|e| (e.id.as_str(), e)).collect();

    // Whole listing in one page (default limit 100), and paged by every small limit.
    let one = s.get(&format!("/v1/entities/{entity}/records"), Some(token)).await;
    one.expect(200);
    assert_eq!(
        one.json["next_cursor"],
        Value::Null,
        "everything fits in the default page"
    );
    let all = one.json["records"].as_array().expect("records").clone();
    assert_eq!(
        ids(&all),
        sorted.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        "ascending by (timestamp, id)"
    );
    for r in &all {
        check_record(r, by_id[r["id"].as_str().expect("id")], entity);
    }
    for limit in [1, 2, 3, 5] {
        let paged = s.list_all(token, entity, "", limit).await;
        assert_eq!(
            ids(&paged),
            ids(&all),
            "paging with limit={limit} gives the same sequence"
        );
    }

    // start inclusive, end exclusive, exactly at record timestamps.
    let start = "2025-01-01T00:00:02Z";
    let end = "2025-01-01T00:00:07Z";
    let window: Vec<String> = sorted
        .iter()
        .filter(|e| nanos(&e.ts) >= nanos(start) && nanos(&e.ts) < nanos(end))
        .map(|e| e.id.clone())
        .collect();
    assert!(window.len() >= 4, "the window holds several records: {window:?}");
    assert!(
        window.contains(&"t2".to_owned()) && !window.contains(&"t7".to_owned()),
        "{window:?}"
    );
    for limit in [1, 2, 100] {
        let q = format!("start={start}&end={end}");
        let got = s.list_all(token, entity, &q, limit).await;
        assert_eq!(ids(&got), window, "start/end window with limit={limit}");
    }
    // Only `start`, only `end`, and an empty window.
    let after: Vec<String> = sorted
        .iter()
        .filter(|e| nanos(&e.ts) >= nanos(end))
        .map(|e| e.id.clone())
        .collect();
    assert_eq!(ids(&s.list_all(token, entity, &format!("start={end}"), 2).await), after);
    let before: Vec<String> = sorted
        .iter()
        .filter(|e| nanos(&e.ts) < nanos(start))
        .map(|e| e.id.clone())
        .collect();
    assert_eq!(
        ids(&s.list_all(token, entity, &format!("end={start}"), 2).await),
        before
    );
    assert!(s
        .list_all(token, entity, &format!("start={start}&end={start}"), 10)
        .await
        .is_empty());

    // The cursor continues exactly after the last record of the previous page.
    let first = s
        .get(&format!("/v1/entities/{entity}/records?limit=3"), Some(token))
        .await;
    first.expect(200);
    assert_eq!(ids(first.json["records"].as_array().expect("records")), ids(&all[..3]));
    let cursor = first.json["next_cursor"]
        .as_str()
        .expect("a cursor after a full page")
        .to_owned();
    let second = s
        .get(
            &format!("/v1/entities/{entity}/records?limit=3&cursor={cursor}"),
            Some(token),
        )
        .await;
    second.expect(200);
    assert_eq!(
        ids(second.json["records"].as_array().expect("records")),
        ids(&all[3..6])
    );
}

#[tokio::test]
async fn round_trip_batch_get_list_paging_and_restart() {
    let mut s = TestServer::start();
    s.create_tenant("acme").await;
    let token = s.tenant_token("acme", &["records:write", "records:read"]).await;
    let entity = "vehicle-0042";

    // Client ids and timestamps out of order, equal timestamps, an offset timestamp,
    // and records with server-made ids and/or server timestamps.
    let batch1 = json!([
        {"id": "t5", "timestamp": "2025-01-01T00:00:05Z", "data": {"speed": 5, "nested": {"a": [1, 2, 3]}}},
        {"id": "t2", "timestamp": "2025-01-01T00:00:02Z", "data": {"speed": 2}},
        {"id": "t7", "timestamp": "2025-01-01T02:00:07+02:00", "data": {"speed": 7, "note": "offset"}},
        {"id": "same-b", "timestamp": "2025-01-01T00:00:03Z", "data": {"k": "b"}},
        {"id": "same-a", "timestamp": "2025-01-01T00:00:03Z", "data": {"k": "a"}},
        {"id": "same-c", "timestamp": "2025-01-01T00:00:03Z", "data": {"k": "c"}},
        {"timestamp": "2025-01-01T00:00:01Z", "data": {"server_id": true}},
        {"id": "t6.5", "timestamp": "2025-01-01T00:00:06.5Z", "data": {"frac": true}},
        {"id": "now-client", "data": {"server_ts": true}},
        {"data": {"server_both": "yes", "unicode": "Grüße ✓"}},
    ]);
    let before = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let ids1 = s.write_records(&token, entity, batch1.clone()).await;
    let after = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let batch2 = json!([
        {"id": "t9", "timestamp": "2025-01-01T00:00:09Z", "data": {"speed": 9}},
        {"id": "t0", "timestamp": "2025-01-01T00:00:00Z", "data": {"speed": 0}},
        {"timestamp": "2025-01-01T00:00:04Z", "data": {"server_id": 2}},
    ]);
    let ids2 = s.write_records(&token, entity, batch2.clone()).await;

    let inputs: Vec<Value> = batch1
        .as_array()
        .into_iter()
        .chain(batch2.as_array())
        .flatten()
        .cloned()
        .collect();
    let all_ids: Vec<String> = ids1.iter().chain(&ids2).cloned().collect();
    assert_eq!(all_ids.len(), inputs.len(), "one id per record, in order");
    let unique: std::collections::BTreeSet<&String> = all_ids.iter().collect();
    assert_eq!(unique.len(), all_ids.len(), "ids are unique: {all_ids:?}");

    // Learn server timestamps (checked to be "now") and build the expectations.
    let mut expected = Vec::new();
    for (input, id) in inputs.iter().zip(&all_ids) {
        if let Some(client_id) = input["id"].as_str() {
            assert_eq!(id, client_id, "client ids are kept");
        }
        let ts = match input["timestamp"].as_str() {
            Some(t) => t.to_owned(),
            None => {
                let r = s
                    .get(&format!("/v1/entities/{entity}/records/{id}"), Some(&token))
                    .await;
                r.expect(200);
                let t = r.json["timestamp"].as_str().expect("timestamp").to_owned();
                assert!(
                    (before..=after).contains(&nanos(&t)),
                    "a missing timestamp defaults to the time of writing: {t}"
                );
                t
            }
        };
        expected.push(Expected {
            id: id.clone(),
            ts,
            data: input["data"].clone(),
        });
    }

    check_all(&s, &token, entity, &expected).await;

    // Another entity of the same tenant is a separate listing.
    let other = s
        .write_records(&token, "vehicle-0043", json!([{"id": "t2", "data": {"other": true}}]))
        .await;
    assert_eq!(
        other,
        vec!["t2".to_owned()],
        "the same record id may exist in another entity"
    );
    let r = s.get("/v1/entities/vehicle-0043/records", Some(&token)).await;
    r.expect(200);
    assert_eq!(
        ids(r.json["records"].as_array().expect("records")),
        vec!["t2".to_owned()]
    );
    assert_eq!(r.json["records"][0]["data"], json!({"other": true}));

    // Everything survives a restart on the same data dir, HSM token and TPM.
    s.restart();
    check_all(&s, &token, entity, &expected).await;
    s.verified_audit_log();

    // The metrics endpoint (plain HTTP) counts the requests by route, never by id.
    let metrics = reqwest::get(s.metrics_url()).await.expect("metrics request");
    assert_eq!(metrics.status().as_u16(), 200);
    let text = metrics.text().await.expect("metrics body");
    assert!(text.contains("http_requests_total"), "{text}");
    assert!(
        !text.contains("vehicle-0042") && !text.contains(&token),
        "ids or tokens in metric labels"
    );
    s.stop();
}
