//! Benchmark of the issue (not a pass/fail test; ignored by default): private count and
//! sum over 100 000 sealed records of 1 000 entities, beside a plain (non-private) scan
//! that decrypts and sums every record, plus the budget charge (one durable commit).
//!
//! `cargo test --release --lib privacy::bench_tests -- --ignored --nocapture`
//!
//! Keys are held in memory (no HSM), so this measures the store scan, decryption,
//! aggregation and noise — the part that grows with the data.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::float_arithmetic,
    clippy::cast_precision_loss
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::{OsRng, StdRng};
use rand::SeedableRng;
use serde_json::{json, Value};

use super::aggregate::{Kind, Query};
use super::budget::{charge, Charge};
use super::epsilon::Epsilon;
use super::mechanism::Plan;
use super::scan;
use crate::audit::{Action, PendingEvent};
use crate::domain::{EntityId, RecordId, TenantId};
use crate::keys::{record_aad, DataKey, Plaintext, WrappedDek};
use crate::store::{NewRecord, Store};
use crate::telemetry::Metrics;

const ENTITIES: usize = 1000;
const PER_ENTITY: usize = 100;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

#[test]
#[ignore]
fn query_latency_over_100k_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        Arc::new(Metrics::new().unwrap()),
        crate::clock::Clock::system(),
    )
    .unwrap();
    let tenant = TenantId::parse("bench").unwrap();
    let scope = crate::auth::system_tenant_scope(&tenant);
    let record = crate::store::TenantRecord {
        tenant_id: tenant.clone(),
        key_version: 1,
        created_at: "2026-01-01T00:00:00Z".into(),
        pending_version: None,
        rotation_required: false,
        rotation_started_at: None,
        retired: Vec::new(),
    };
    store
        .commit_blocking(
            PendingEvent::new(Action::TenantCreate, "bench", "bench", "bench"),
            move |txn, _| txn.insert_tenant(&crate::auth::system_scope(), &record),
        )
        .unwrap();
    let mut keys: HashMap<EntityId, Arc<DataKey>> = HashMap::new();
    for chunk in 0..ENTITIES / 100 {
        let mut batch = Vec::new();
        for e in chunk * 100..(chunk + 1) * 100 {
            let entity = EntityId::parse(format!("entity-{e:04}")).unwrap();
            let key = Arc::new(DataKey::generate(&crate::random::Random::os()));
            let wrapped = WrappedDek {
                dek_id: key.id(),
                kek_version: 1,
                wrapped: vec![0; 60],
            };
            let records: Vec<NewRecord> = (0..PER_ENTITY)
                .map(|i| {
                    let id = RecordId::parse(format!("r{i:03}")).unwrap();
                    let data = json!({"speed": (e * 7 + i) % 200, "region": if e % 2 == 0 { "eu" } else { "us" }});
                    let plain = Plaintext::new(serde_json::to_vec(&data).unwrap());
                    let ts_nanos = 1_700_000_000_000_000_000 + i as u64;
                    NewRecord {
                        sealed: key
                            .seal(
                                &crate::random::Random::os(),
                                &plain,
                                &record_aad(&tenant, &entity, &id, ts_nanos, key.id()),
                            )
                            .unwrap(),
                        id,
                        ts_nanos,
                    }
                })
                .collect();
            keys.insert(entity.clone(), key);
            batch.push((entity, wrapped, records));
        }
        let s = scope.clone();
        store
            .commit_blocking(
                PendingEvent::new(Action::DataWrite, "bench", "bench", "bench"),
                move |txn, _| {
                    for (entity, wrapped, records) in &batch {
                        txn.put_records(&s, entity, wrapped, crate::store::KeyOrigin::Fresh, records)?;
                    }
                    Ok(())
                },
            )
            .unwrap();
    }

    // Plain scan: decrypt and sum every record, no privacy.
    let plain = time(5, || {
        let txn = store.read().unwrap();
        let mut total = 0i64;
        txn.scan_tenant_records(&scope, |r| {
            let stored = r.load()?;
            let key = &keys[r.entity];
            let plain = key
                .open(
                    &stored.sealed,
                    &record_aad(&tenant, r.entity, &stored.id, stored.ts_nanos, stored.sealed.dek_id()),
                )
                .unwrap();
            let v: Value = serde_json::from_slice(plain.as_bytes()).unwrap();
            total += v["speed"].as_i64().unwrap_or(0);
            Ok::<(), crate::store::StoreError>(())
        })
        .unwrap();
        assert!(total > 0);
    });

    let query = |kind: Kind, k: u32| Query {
        kind,
        field: (kind != Kind::Count).then(|| "speed".to_owned()),
        filter: None,
        start: 0,
        end: u64::MAX,
        bounds: (kind != Kind::Count).then_some((0, 200_000)),
        max_records_per_entity: k,
        bins: Vec::new(),
    };
    let eps = Epsilon::parse_positive("0.5").unwrap();
    let private = |kind: Kind, k: u32| {
        let plan = Plan::new(query(kind, k), eps).unwrap();
        time(5, || {
            let mut opened = 0;
            let exact = scan(&store, &scope, &keys, &plan.query, &mut opened).unwrap();
            let mut rng = StdRng::from_rng(OsRng).unwrap();
            let _ = plan.release(&exact, &mut rng).unwrap();
        })
    };
    let count_1 = private(Kind::Count, 1);
    let count_100 = private(Kind::Count, 100);
    let sum_1 = private(Kind::Sum, 1);
    let sum_100 = private(Kind::Sum, 100);

    let big = Epsilon::parse_positive("1000000").unwrap();
    let charge_time = time(20, || {
        let s = scope.clone();
        let c = store
            .commit_blocking(
                PendingEvent::new(Action::DataQuery, "bench", "bench", "bench"),
                move |txn, ev| charge(txn, ev, &s, eps, big, None),
            )
            .unwrap();
        assert!(matches!(c.value, Charge::Charged { .. }));
    });

    println!(
        "records: {} ({ENTITIES} entities × {PER_ENTITY})",
        ENTITIES * PER_ENTITY
    );
    println!("plain scan, decrypt + sum all:        {plain:?}");
    println!("private count, k = 1 (no decryption): {count_1:?}");
    println!("private count, k = 100:               {count_100:?}");
    println!("private sum,   k = 1:                 {sum_1:?}");
    println!("private sum,   k = 100:               {sum_100:?}");
    println!("budget charge (one durable commit):   {charge_time:?}");
}
