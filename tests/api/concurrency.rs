//! Concurrency smoke test: many writers at once through the group-commit writer.

use std::collections::BTreeSet;

use serde_json::json;

use crate::harness::TestServer;

const WRITES: usize = 50;
const ENTITIES: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_writes() {
    let s = TestServer::start();
    s.create_tenant("acme").await;
    let t = s.tenant_token("acme", &["records:write", "records:read"]).await;
    let before = s.audit_events().len();

    // 50 writes to 5 fresh entities at once: the first write of each entity races to
    // create its DEK.
    let client = s.client();
    let base = s.base().to_owned();
    let mut tasks = Vec::new();
    for i in 0..WRITES {
        let (client, base, t) = (client.clone(), base.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            let entity = format!("ce-{}", i % ENTITIES);
            let body = json!({"records": [
                {"id": format!("w{i}-a"), "data": {"writer": i, "part": "a"}},
                {"id": format!("w{i}-b"), "data": {"writer": i, "part": "b"}},
            ]});
            let r = client
                .post(format!("{base}/v1/entities/{entity}/records"))
                .bearer_auth(&t)
                .json(&body)
                .send()
                .await;
            let r = r.expect("request");
            let status = r.status().as_u16();
            let text = r.text().await.expect("body");
            (i, entity, status, text)
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task"));
    }
    for (i, _, status, text) in &results {
        assert_eq!(*status, 201, "write {i}: {text}");
        let v: serde_json::Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(v["ids"], json!([format!("w{i}-a"), format!("w{i}-b")]));
    }

    // Everything is readable, by id and by listing, with the right data.
    for (i, entity, _, _) in &results {
        for part in ["a", "b"] {
            let r = s
                .get(&format!("/v1/entities/{entity}/records/w{i}-{part}"), Some(&t))
                .await;
            r.expect(200);
            assert_eq!(r.json["data"], json!({"writer": i, "part": part}));
        }
    }
    let mut listed = BTreeSet::new();
    for e in 0..ENTITIES {
        let all = s.list_all(&t, &format!("ce-{e}"), "", 1000).await;
        assert_eq!(all.len(), 2 * WRITES / ENTITIES, "entity ce-{e}");
        listed.extend(all.iter().map(|r| r["id"].as_str().expect("id").to_owned()));
    }
    assert_eq!(listed.len(), 2 * WRITES);

    // The chain is intact and holds exactly one data_write per request.
    let events = s.verified_audit_log();
    let writes: Vec<_> = events[before..].iter().filter(|e| e.action() == "data_write").collect();
    assert_eq!(writes.len(), WRITES, "one data_write event per request");
    assert!(writes
        .iter()
        .all(|e| e.outcome() == "allowed" && e.json["details"]["count"] == 2));
    let rids: BTreeSet<&str> = writes.iter().map(|e| e.event.request_id.as_str()).collect();
    assert_eq!(rids.len(), WRITES);
}
