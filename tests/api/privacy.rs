//! Differential privacy over the API (`POST /v1/query`, SPEC §6 and §9): aggregates and
//! their answer shape, the per-tenant budget under concurrency, "an exhausted budget reads
//! no data" (proved with `strongroom_dp_records_decrypted_total`), Idempotency-Key
//! replays, input validation, and who may query.
//!
//! Exact answers are checked on a server whose cap allows a huge ε (noise of scale 0.01
//! is zero with probability 1 − 10⁻⁴³); elsewhere answers are only checked for shape.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::harness::{Resp, TestServer};

const QUERY: &str = "/v1/query";

async fn query(s: &TestServer, token: &str, body: &Value) -> Resp {
    s.post(QUERY, Some(token), body).await
}

async fn query_with_key(s: &TestServer, token: &str, key: &str, body: &Value) -> Resp {
    let req = s
        .client()
        .post(format!("{}{QUERY}", s.base()))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body);
    s.send(req).await
}

/// `strongroom_dp_records_decrypted_total` from the metrics endpoint.
async fn decrypted(s: &TestServer) -> u64 {
    let text = reqwest::get(s.metrics_url())
        .await
        .expect("metrics request")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|l| l.strip_prefix("strongroom_dp_records_decrypted_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no dp metric in:\n{text}"))
}

/// 20 entities × 3 records: speed = 10·i + j (j = 0, 1, 2 at seconds j), region eu for
/// even i, us for odd i.
async fn write_fleet(s: &TestServer, token: &str) {
    for i in 0..20 {
        let records: Vec<Value> = (0..3)
            .map(|j| {
                json!({
                    "timestamp": format!("2026-01-01T00:00:0{j}Z"),
                    "data": {"speed": 10 * i + j, "region": if i % 2 == 0 { "eu" } else { "us" }}
                })
            })
            .collect();
        s.write_records(token, &format!("v-{i:02}"), json!(records)).await;
    }
}

fn as_f64(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_filters_and_time_ranges_answer_exactly_at_huge_epsilon() {
    let s = TestServer::start_with_env(&[
        // Quoted: the config's ε values are decimal strings, and an env value that parses
        // as a TOML number stays a number when the file does not set the key.
        ("STRONGROOM_PRIVACY__MAX_QUERY_EPSILON", "\"1000\""),
        ("STRONGROOM_PRIVACY__TENANT_EPSILON_BUDGET", "\"100000\""),
    ]);
    s.create_tenant("acme").await;
    s.create_tenant("other").await;
    let t = s.tenant_token("acme", &["records:write", "query:aggregate"]).await;
    write_fleet(&s, &t).await;
    // Another tenant's records never count.
    let o = s.tenant_token("other", &["records:write", "query:aggregate"]).await;
    s.write_records(&o, "v-00", json!([{"data": {"speed": 5, "region": "eu"}}]))
        .await;

    // count: one record per entity by default.
    let r = query(&s, &t, &json!({"aggregate": "count", "epsilon": "100"})).await;
    r.expect(200);
    assert_eq!(r.json["value"], 20, "{}", r.text);
    assert_eq!(r.json["mechanism"], "discrete_laplace");
    assert_eq!(r.json["epsilon_charged"], "100.0");
    assert_eq!(r.json["budget_remaining"], "99900.0");
    assert_eq!(
        r.json["confidence_95"],
        json!([20, 20]),
        "scale 0.01: the 95 % interval is the value"
    );
    let e = s.expect_event(&r, "data_query", "allowed");
    assert_eq!(e.json["details"]["aggregate"], "count");
    assert_eq!(e.json["details"]["epsilon_charged"], "100.0");
    assert_eq!(e.json["resource"], "tenant:acme");

    // max_records_per_entity, filter, time range.
    let r = query(
        &s,
        &t,
        &json!({"aggregate": "count", "max_records_per_entity": 3, "epsilon": "100"}),
    )
    .await;
    assert_eq!(r.expect(200).json["value"], 60);
    let r = query(
        &s,
        &t,
        &json!({"aggregate": "count", "max_records_per_entity": 3,
                "filter": {"field": "region", "equals": "eu"}, "epsilon": "100"}),
    )
    .await;
    assert_eq!(r.expect(200).json["value"], 30);
    let r = query(
        &s,
        &t,
        &json!({"aggregate": "count", "max_records_per_entity": 3,
                "start": "2026-01-01T00:00:01Z", "end": "2026-01-01T00:00:02Z", "epsilon": "100"}),
    )
    .await;
    assert_eq!(r.expect(200).json["value"], 20, "start inclusive, end exclusive");
    let r = query(
        &s,
        &t,
        &json!({"aggregate": "count", "filter": {"field": "speed", "equals": 42.0}, "epsilon": "100"}),
    )
    .await;
    assert_eq!(
        r.expect(200).json["value"],
        1,
        "numbers compare by value; truncation keeps the first *matching* records (v-04's third)"
    );

    // sum: first record of each entity = 10·i, clamped to [0, 150]. Scale = 150/1000.
    let truth: f64 = (0..20).map(|i| f64::from((10 * i).min(150))).sum();
    let r = query(
        &s,
        &t,
        &json!({"aggregate": "sum", "field": "speed", "bounds": {"lower": 0, "upper": 150}, "epsilon": "1000"}),
    )
    .await;
    r.expect(200);
    let v = as_f64(&r.json["value"]);
    assert!((v - truth).abs() <= 5.0, "sum {v} vs {truth}: {}", r.text);
    let ci = r.json["confidence_95"].as_array().expect("interval");
    let (lo, hi) = (as_f64(&ci[0]), as_f64(&ci[1]));
    assert!(lo <= v && v <= hi && hi - lo < 2.0, "{}", r.text);

    // mean: ε split in two, reported.
    let r = query(
        &s,
        &t,
        &json!({"aggregate": "mean", "field": "speed", "bounds": {"lower": 0, "upper": 150},
                "max_records_per_entity": 3, "epsilon": "1000"}),
    )
    .await;
    r.expect(200);
    let truth = (0..20)
        .flat_map(|i| (0..3).map(move |j| f64::from((10 * i + j).min(150))))
        .sum::<f64>()
        / 60.0;
    let v = as_f64(&r.json["value"]);
    assert!((v - truth).abs() < 0.5, "mean {v} vs {truth}: {}", r.text);
    assert_eq!(r.json["epsilon_split"], json!({"sum": "500.0", "count": "500.0"}));
    assert_eq!(r.json["epsilon_charged"], "1000.0");
    let ci = r.json["confidence_95"].as_array().expect("interval");
    assert!(as_f64(&ci[0]) <= v && v <= as_f64(&ci[1]), "{}", r.text);

    // histogram: caller's bins, len(bins) − 1 noisy counts.
    let r = query(
        &s,
        &t,
        &json!({"aggregate": "histogram", "field": "speed", "bins": [0, 50, 100, 200],
                "max_records_per_entity": 3, "epsilon": "100"}),
    )
    .await;
    r.expect(200);
    // speeds 0..=192: [0,50) has i = 0..4 → 15; [50,100) → 15; [100,200] → 30.
    assert_eq!(r.json["value"], json!([15, 15, 30]), "{}", r.text);
    assert_eq!(r.json["confidence_95"], json!([[15, 15], [15, 15], [30, 30]]));

    // The other tenant sees only its own record.
    let r = query(&s, &o, &json!({"aggregate": "count", "epsilon": "100"})).await;
    assert_eq!(r.expect(200).json["value"], 1);

    // Operators cannot query; a token needs query:aggregate; no token is 401.
    let r = query(&s, s.operator(), &json!({"aggregate": "count", "epsilon": "1"})).await;
    r.expect_error(403, "forbidden");
    s.expect_event(&r, "access_denied", "denied");
    let reader = s.tenant_token("acme", &["records:read"]).await;
    query(&s, &reader, &json!({"aggregate": "count", "epsilon": "1"}))
        .await
        .expect_error(403, "forbidden");
    s.post(QUERY, None, &json!({"aggregate": "count", "epsilon": "1"}))
        .await
        .expect_error(401, "unauthorized");
    s.verified_audit_log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_queries_spend_exactly_the_budget_and_exhaustion_reads_nothing() {
    let mut s = TestServer::start_with_env(&[("STRONGROOM_PRIVACY__TENANT_EPSILON_BUDGET", "\"10.0\"")]);
    s.create_tenant("acme").await;
    let t = s.tenant_token("acme", &["records:write", "query:aggregate"]).await;
    for i in 0..5 {
        s.write_records(
            &t,
            &format!("e{i}"),
            json!([{"data": {"x": i}}, {"data": {"x": i + 1}}]),
        )
        .await;
    }
    let sum =
        |eps: &str| json!({"aggregate": "sum", "field": "x", "bounds": {"lower": 0, "upper": 10}, "epsilon": eps});
    let before = s.audit_events().len();

    let client = s.client();
    let url = format!("{}{QUERY}", s.base());
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (client, url, t, body) = (client.clone(), url.clone(), t.clone(), sum("0.3"));
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .bearer_auth(t)
                    .json(&body)
                    .send()
                    .await
                    .expect("request");
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.expect("JSON body"))
            })
        })
        .collect();
    let mut ok = Vec::new();
    let mut exhausted = 0;
    for task in tasks {
        let (status, body) = task.await.expect("task");
        match status {
            200 => ok.push(body),
            403 => {
                assert_eq!(body["error"]["code"], "privacy_budget_exhausted", "{body}");
                exhausted += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((ok.len(), exhausted), (33, 31), "33 × 0.3 = 9.9 ≤ 10 < 34 × 0.3");
    // Each success saw a different remaining budget: the charges were serialised.
    let remaining: BTreeSet<String> = ok
        .iter()
        .map(|b| b["budget_remaining"].as_str().expect("string").to_owned())
        .collect();
    let expected: BTreeSet<String> = (0..33)
        .map(|i| {
            let micros = 10_000_000 - 300_000 * (i + 1);
            let frac = format!("{:06}", micros % 1_000_000);
            let frac = frac.trim_end_matches('0');
            format!("{}.{}", micros / 1_000_000, if frac.is_empty() { "0" } else { frac })
        })
        .collect();
    assert_eq!(remaining, expected);
    let events = s.verified_audit_log();
    let queries: Vec<_> = events[before..].iter().filter(|e| e.action() == "data_query").collect();
    assert_eq!(queries.len(), 64, "one data_query event per request");
    let charged: Vec<_> = queries.iter().filter(|e| e.outcome() == "allowed").collect();
    assert_eq!(charged.len(), 33);
    assert!(charged.iter().all(|e| e.json["details"]["epsilon_charged"] == "0.3"));
    let denied: Vec<_> = queries.iter().filter(|e| e.outcome() == "denied").collect();
    assert_eq!(denied.len(), 31);
    assert!(denied
        .iter()
        .all(|e| e.json["details"]["error"] == "privacy_budget_exhausted"
            && e.json["details"]["epsilon_charged"] == "0.0"));

    // 0.1 is left. A refused 0.3 reads nothing and does not close the budget for 0.1.
    let read_before = decrypted(&s).await;
    assert!(read_before > 0, "the successful sums decrypted records");
    let r = query(&s, &t, &sum("0.3")).await;
    r.expect_error(403, "privacy_budget_exhausted");
    s.expect_event(&r, "data_query", "denied");
    assert_eq!(decrypted(&s).await, read_before, "an exhausted budget reads no data");
    let r = query(&s, &t, &sum("0.1")).await;
    assert_eq!(r.expect(200).json["budget_remaining"], "0.0");
    let read_after = decrypted(&s).await;
    assert!(read_after > read_before, "an answered sum reads records");
    let r = query(&s, &t, &sum("0.000001")).await;
    r.expect_error(403, "privacy_budget_exhausted");
    assert_eq!(decrypted(&s).await, read_after);

    // The spent budget is durable: still exhausted after a restart.
    s.stop();
    s.start_again();
    query(&s, &t, &json!({"aggregate": "count", "epsilon": "0.000001"}))
        .await
        .expect_error(403, "privacy_budget_exhausted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_replays_the_stored_answer_without_charging() {
    let s = TestServer::start();
    s.create_tenant("acme").await;
    let t = s.tenant_token("acme", &["records:write", "query:aggregate"]).await;
    write_fleet(&s, &t).await;
    let body = json!({"aggregate": "histogram", "field": "speed", "bins": [0, 100, 200], "epsilon": "0.5"});

    let first = query_with_key(&s, &t, "retry-1", &body).await;
    first.expect(200);
    assert_eq!(first.json["budget_remaining"], "9.5");
    let e = s.events_for(&first.rid());
    assert_eq!(e.len(), 2, "the charge, then the stored answer: {e:#?}");
    assert_eq!(e[0].json["details"]["epsilon_charged"], "0.5");
    assert_eq!(e[1].json["details"]["idempotency"], "answer_stored");

    let read = decrypted(&s).await;
    for _ in 0..3 {
        let again = query_with_key(&s, &t, "retry-1", &body).await;
        again.expect(200);
        assert_eq!(again.text, first.text, "a replay is byte-identical");
        let ev = s.expect_event(&again, "data_query", "allowed");
        assert_eq!(ev.json["details"]["epsilon_charged"], "0.0");
        assert_eq!(ev.json["details"]["replay"], true);
    }
    assert_eq!(decrypted(&s).await, read, "a replay reads no data");
    // Nothing was charged for the replays.
    let r = query(&s, &t, &json!({"aggregate": "count", "epsilon": "0.5"})).await;
    assert_eq!(r.expect(200).json["budget_remaining"], "9.0");

    // The key is bound to its query.
    let other = json!({"aggregate": "count", "epsilon": "0.5"});
    let r = query_with_key(&s, &t, "retry-1", &other).await;
    r.expect_error(409, "conflict");
    s.expect_event(&r, "data_query", "failed");
    // Keys are checked.
    let r = query_with_key(&s, &t, &"k".repeat(256), &other).await;
    r.expect_error(400, "invalid_request");
    // Still 9.0: neither refusal charged.
    let r = query(&s, &t, &json!({"aggregate": "count", "epsilon": "1.0"})).await;
    assert_eq!(r.expect(200).json["budget_remaining"], "8.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_queries_are_refused_before_the_budget_is_touched() {
    let s = TestServer::start();
    s.create_tenant("acme").await;
    let t = s.tenant_token("acme", &["records:write", "query:aggregate"]).await;
    s.write_records(&t, "e1", json!([{"data": {"x": 1}}])).await;
    let count = |eps: Value| json!({"aggregate": "count", "epsilon": eps});

    for eps in [
        json!(0.5),
        json!(null),
        json!(true),
        json!("NaN"),
        json!("nan"),
        json!("inf"),
        json!("-0.5"),
        json!("0"),
        json!("0.0"),
        json!("0.1234567"),
        json!("1e-1"),
        json!(""),
        json!(" 0.5"),
        json!("+0.5"),
        json!(".5"),
    ] {
        let r = query(&s, &t, &count(eps.clone())).await;
        r.expect_error(400, "invalid_request");
        s.expect_event(&r, "data_query", "failed");
        let _ = eps;
    }
    let r = query(&s, &t, &json!({"aggregate": "count"})).await;
    r.expect_error(400, "invalid_request");
    let r = query(&s, &t, &count(json!("1.5"))).await;
    r.expect_error(400, "epsilon_over_cap");
    s.expect_event(&r, "data_query", "failed");
    query(&s, &t, &count(json!("1.000001")))
        .await
        .expect_error(400, "epsilon_over_cap");

    let sum = |extra: Value| {
        let mut b = json!({"aggregate": "sum", "field": "x", "bounds": {"lower": 0, "upper": 10}, "epsilon": "0.5"});
        for (k, v) in extra.as_object().expect("object") {
            if v.is_null() {
                b.as_object_mut().expect("object").remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b
    };
    let hist = |bins: Value| json!({"aggregate": "histogram", "field": "x", "bins": bins, "epsilon": "0.5"});
    for (why, body) in [
        ("unknown field", sum(json!({"limit": 3}))),
        (
            "unknown filter field",
            sum(json!({"filter": {"field": "x", "equals": 1, "op": "eq"}})),
        ),
        (
            "unknown bounds field",
            sum(json!({"bounds": {"lower": 0, "upper": 1, "step": 1}})),
        ),
        ("unknown aggregate", sum(json!({"aggregate": "median"}))),
        ("sum without bounds", sum(json!({"bounds": null}))),
        ("sum without field", sum(json!({"field": null}))),
        ("bounds reversed", sum(json!({"bounds": {"lower": 5, "upper": 1}}))),
        ("bound as string", sum(json!({"bounds": {"lower": "0", "upper": 1}}))),
        (
            "bound finer than 0.001",
            sum(json!({"bounds": {"lower": 0, "upper": 1.0005}})),
        ),
        ("bound too large", sum(json!({"bounds": {"lower": 0, "upper": 1e13}}))),
        ("max_records 0", sum(json!({"max_records_per_entity": 0}))),
        ("max_records 1001", sum(json!({"max_records_per_entity": 1001}))),
        ("max_records negative", sum(json!({"max_records_per_entity": -1}))),
        ("bad start", sum(json!({"start": "yesterday"}))),
        (
            "start after end",
            sum(json!({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"})),
        ),
        ("empty field", sum(json!({"field": ""}))),
        (
            "histogram without bins",
            json!({"aggregate": "histogram", "field": "x", "epsilon": "0.5"}),
        ),
        ("one edge", hist(json!([1]))),
        ("no edges", hist(json!([]))),
        ("descending edges", hist(json!([10, 5]))),
        ("repeated edge", hist(json!([1, 1, 2]))),
        ("edge as string", hist(json!(["0", 1]))),
        ("bins not an array", hist(json!(5))),
        (
            "mean cannot split the smallest epsilon",
            json!({"aggregate": "mean", "field": "x",
            "bounds": {"lower": 0, "upper": 1}, "epsilon": "0.000001"}),
        ),
    ] {
        let r = query(&s, &t, &body).await;
        assert_eq!(r.status, 400, "{why}: {}", r.text);
        r.expect_error(400, "invalid_request");
    }
    let r = s.post_raw(QUERY, Some(&t), "{not json").await;
    r.expect_error(400, "invalid_request");

    // None of this spent anything, and a rejected query does not close the budget.
    let r = query(&s, &t, &count(json!("1.0"))).await;
    r.expect(200);
    assert_eq!(r.json["budget_remaining"], "9.0");
    assert_eq!(r.json["epsilon_charged"], "1.0");
    let r = query(&s, &t, &count(json!("0.000001"))).await;
    assert_eq!(r.expect(200).json["budget_remaining"], "8.999999");
}
