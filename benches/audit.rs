//! Audit-chain benchmark (not a test): append cost per event under group commit, full
//! verification speed on one core, and raw SHA-256 over the same bytes as the baseline.
//!   cargo bench --bench audit -- [EVENTS]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use strongroom::audit::verifier::ChainVerifier;
use strongroom::audit::{Action, PendingEvent};
use strongroom::store::Store;
use strongroom::telemetry::Metrics;

fn main() {
    let n: u64 = std::env::args()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        Arc::new(Metrics::new().unwrap()),
        strongroom::clock::Clock::system(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    // 1. Append: N events through the group-commit writer, 512 requests in flight.
    let started = Instant::now();
    rt.block_on(async {
        let mut inflight = tokio::task::JoinSet::new();
        for i in 0..n {
            let s = store.clone();
            inflight.spawn(async move {
                let ev = PendingEvent::new(
                    Action::DataAccess,
                    "user:bench",
                    format!("entity:e{}", i % 1000),
                    "req-bench",
                )
                .detail("count", 1);
                s.record(ev).await.unwrap();
            });
            if inflight.len() >= 512 {
                inflight.join_next().await;
            }
        }
        while inflight.join_next().await.is_some() {}
    });
    let append = started.elapsed();
    println!(
        "append: {n} events in {:.2?} = {:.0} events/s ({:.2} µs/event, durable, 512 in flight)",
        append,
        n as f64 / append.as_secs_f64(),
        append.as_secs_f64() * 1e6 / n as f64
    );

    // 2. Baseline: raw SHA-256 over the same event bytes (one core).
    let txn = store.read().unwrap();
    let mut all = Vec::with_capacity(n as usize);
    txn.for_each_event(0, |_, b| {
        all.push(b.to_vec());
        true
    })
    .unwrap();
    drop(txn);
    let bytes: usize = all.iter().map(Vec::len).sum();
    let started = Instant::now();
    let mut acc = 0u8;
    for b in &all {
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(b);
        acc ^= h.finalize()[0];
    }
    let sha = started.elapsed();
    println!(
        "sha256: {} events ({} B avg) in {:.2?} = {:.0} hashes/s (x{acc:02x})",
        all.len(),
        bytes / all.len().max(1),
        sha,
        all.len() as f64 / sha.as_secs_f64()
    );

    // 3. Full verification sweep (links, seq, chain hashes, Merkle frontier) on one core.
    let verifier = ChainVerifier::new(store.clone(), [0u8; 32], "strongroom/bench".into(), 0);
    let started = Instant::now();
    let result = verifier.full_sweep().unwrap();
    let verify = started.elapsed();
    assert!(result.is_ok(), "{result:?}");
    println!(
        "verify: {n} events in {:.2?} = {:.0} events/s; ratio to raw SHA-256 = {:.2}",
        verify,
        n as f64 / verify.as_secs_f64(),
        sha.as_secs_f64() / verify.as_secs_f64()
    );
}
