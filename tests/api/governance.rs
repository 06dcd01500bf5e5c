//! Multi-party governance over the API (SPEC §6 "Governance", §9): proposals, Ed25519
//! approvals over the digest, the threshold (never before), approver rules, every
//! operation's effect (`raise_budget`, `destroy_tenant`, `set_quorum`,
//! `rotate_signing_key`, `acknowledge_alarm`), expiry, and the audit trail.

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use rand::RngCore;
use serde_json::{json, Value};

use crate::harness::{Resp, TestServer};
use crate::integrity_support::{
    assert_healthy, backup_path, copy_dir, events_with_action, eventually, restore_dir, tpm_counter, Raw, ServeProc,
};

const PROPOSALS: &str = "/v1/admin/proposals";

/// A named approver key.
struct Key {
    name: String,
    sk: SigningKey,
}

impl Key {
    fn new(name: &str) -> Self {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        Self {
            name: name.to_owned(),
            sk: SigningKey::from_bytes(&seed),
        }
    }
    /// The config form `name:ed25519:<base64>`.
    fn entry(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.sk.verifying_key().as_bytes());
        format!("{}:ed25519:{b64}", self.name)
    }
    fn sign(&self, digest: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.sk.sign(digest.as_bytes()).to_bytes())
    }
}

/// TOML array literal of the keys' entries (env values parse as TOML).
fn approvers_env(keys: &[&Key]) -> String {
    let items: Vec<String> = keys.iter().map(|k| format!("\"{}\"", k.entry())).collect();
    format!("[{}]", items.join(", "))
}

fn start(threshold: u32, keys: &[&Key], extra: &[(&str, &str)]) -> TestServer {
    let threshold = threshold.to_string();
    let approvers = approvers_env(keys);
    let mut env = vec![
        ("STRONGROOM_GOVERNANCE__THRESHOLD", threshold.as_str()),
        ("STRONGROOM_GOVERNANCE__APPROVERS", approvers.as_str()),
    ];
    env.extend_from_slice(extra);
    TestServer::start_with_env(&env)
}

async fn propose(s: &TestServer, operation: &str, params: Value) -> Resp {
    s.post(
        PROPOSALS,
        Some(s.operator()),
        &json!({"operation": operation, "params": params}),
    )
    .await
}

/// Propose (asserting 201); returns (id, digest).
async fn proposed(s: &TestServer, operation: &str, params: Value) -> (String, String) {
    let r = propose(s, operation, params).await;
    r.expect(201);
    let id = r.json["proposal_id"].as_str().expect("proposal_id").to_owned();
    let digest = r.json["digest"].as_str().expect("digest").to_owned();
    (id, digest)
}

async fn approve(s: &TestServer, token: &str, id: &str, key: &Key, digest: &str) -> Resp {
    s.post(
        &format!("{PROPOSALS}/{id}/approvals"),
        Some(token),
        &json!({"approver": key.name, "signature": key.sign(digest)}),
    )
    .await
}

fn approvers_of(p: &Value) -> Vec<String> {
    p["approvals"]
        .as_array()
        .expect("approvals")
        .iter()
        .map(|a| a["approver"].as_str().expect("approver").to_owned())
        .collect()
}

async fn count_query(s: &TestServer, token: &str, epsilon: &str) -> Resp {
    s.post(
        "/v1/query",
        Some(token),
        &json!({"aggregate": "count", "epsilon": epsilon}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_signatures_over_the_digest_and_the_threshold_is_respected() {
    let (alice, bob, carol) = (Key::new("alice"), Key::new("bob"), Key::new("carol"));
    let s = start(2, &[&alice, &bob, &carol], &[]);
    s.create_tenant("acme").await;
    let tenant = s.tenant_token("acme", &["records:read"]).await;

    // Who may propose, and what.
    s.post(
        PROPOSALS,
        Some(&tenant),
        &json!({"operation": "rotate_signing_key", "params": {}}),
    )
    .await
    .expect_error(403, "forbidden");
    propose(&s, "rotate_root", json!({}))
        .await
        .expect_error(400, "invalid_request");
    propose(&s, "destroy_tenant", json!({"tenant_id": "acme", "extra": 1}))
        .await
        .expect_error(400, "invalid_request");
    propose(&s, "raise_budget", json!({"tenant_id": "acme", "epsilon": "-1"}))
        .await
        .expect_error(400, "invalid_request");
    propose(&s, "set_quorum", json!({"threshold": 3, "approvers": [alice.entry()]}))
        .await
        .expect_error(400, "invalid_request");
    s.post(
        PROPOSALS,
        Some(s.operator()),
        &json!({"operation": "rotate_signing_key", "params": {}, "bogus": true}),
    )
    .await
    .expect_error(400, "invalid_request");
    propose(&s, "destroy_tenant", json!({"tenant_id": "nobody"}))
        .await
        .expect_error(404, "not_found");

    // Identical proposals differ (server nonce, id).
    let r = propose(&s, "rotate_signing_key", json!({})).await;
    r.expect(201);
    assert_eq!(r.json["approvals_needed"], 2);
    let digest = r.json["digest"].as_str().unwrap().to_owned();
    assert!(
        digest.len() == 7 + 64 && digest.starts_with("sha256:") && digest[7..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{digest}"
    );
    assert!(
        r.json["expires_at"].as_str().is_some_and(|e| e.ends_with('Z')),
        "{}",
        r.text
    );
    let id = r.json["proposal_id"].as_str().unwrap().to_owned();
    let (id2, digest2) = proposed(&s, "rotate_signing_key", json!({})).await;
    assert_ne!(id, id2);
    assert_ne!(digest, digest2, "two identical proposals have different digests");

    // Bad signatures: another key's, another proposal's digest, garbage, unknown approver.
    let mallory = Key::new("mallory");
    let forged = json!({"approver": "alice", "signature": mallory.sign(&digest)});
    s.post(&format!("{PROPOSALS}/{id}/approvals"), Some(&tenant), &forged)
        .await
        .expect_error(400, "invalid_signature");
    let replayed = json!({"approver": "alice", "signature": alice.sign(&digest2)});
    s.post(&format!("{PROPOSALS}/{id}/approvals"), Some(&tenant), &replayed)
        .await
        .expect_error(400, "invalid_signature");
    let garbage = json!({"approver": "alice", "signature": "not base64!"});
    s.post(&format!("{PROPOSALS}/{id}/approvals"), Some(&tenant), &garbage)
        .await
        .expect_error(400, "invalid_signature");
    approve(&s, &tenant, &id, &mallory, &digest)
        .await
        .expect_error(400, "invalid_signature");
    s.post(
        &format!("{PROPOSALS}/{id}/approvals"),
        Some(&tenant),
        &json!({"approver": "alice", "signature": alice.sign(&digest), "extra": 1}),
    )
    .await
    .expect_error(400, "invalid_request");
    approve(&s, "srt_not-a-token", &id, &alice, &digest)
        .await
        .expect_error(401, "unauthorized");
    approve(&s, &tenant, "prop-0000000000000000", &alice, &digest)
        .await
        .expect_error(404, "not_found");

    // A tenant token may approve: the signature is the authority. One approval: pending.
    let r = approve(&s, &tenant, &id, &alice, &digest).await;
    r.expect(200);
    assert_eq!(r.json["status"], "pending", "{}", r.text);
    assert_eq!(approvers_of(&r.json), ["alice"]);
    assert_eq!(r.json["result"], Value::Null);
    // The same approver again: 409.
    approve(&s, s.operator(), &id, &alice, &digest)
        .await
        .expect_error(409, "conflict");
    let g = s.get(&format!("{PROPOSALS}/{id}"), Some(&tenant)).await;
    g.expect(200);
    assert_eq!(g.json["status"], "pending");
    assert_eq!(g.json["operation"], "rotate_signing_key");
    assert_eq!(g.json["params"], json!({}));
    assert_eq!(g.json["digest"], digest);
    assert_eq!(g.json["approvals_needed"], 2);

    // The second distinct approver completes the quorum: rotate_signing_key runs and
    // fails (not supported in this version).
    let r = approve(&s, s.operator(), &id, &bob, &digest).await;
    r.expect(200);
    assert_eq!(r.json["status"], "failed", "{}", r.text);
    assert!(
        r.json["result"].as_str().is_some_and(|m| m.contains("not supported")),
        "{}",
        r.text
    );
    assert_eq!(approvers_of(&r.json), ["alice", "bob"]);
    assert!(r.json["approvals"][1]["at"].as_str().is_some_and(|t| t.ends_with('Z')));
    // Done: no more approvals.
    approve(&s, s.operator(), &id, &carol, &digest)
        .await
        .expect_error(409, "conflict");

    // The audit trail: create, approvals (allowed and refused), then the execution.
    let events = s.audit_events();
    let on = |action: &str| {
        events
            .iter()
            .filter(|e| e.action() == action && e.json["resource"] == format!("proposal:{id}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(on("proposal_create").len(), 1);
    let approvals = on("proposal_approve");
    assert_eq!(
        approvals.iter().filter(|e| e.outcome() == "allowed").count(),
        2,
        "two approvals recorded"
    );
    assert!(approvals
        .iter()
        .any(|e| e.json["details"]["error"] == "invalid_signature"));
    let exec = on("proposal_execute");
    assert_eq!(exec.len(), 1, "one execution");
    assert_eq!(exec[0].outcome(), "failed");
    assert_eq!(exec[0].json["actor"], "system:governance");
    let last_approve = approvals
        .iter()
        .filter(|e| e.outcome() == "allowed")
        .map(|e| e.event.seq)
        .max()
        .unwrap();
    assert!(exec[0].event.seq > last_approve, "executed after the approving event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_approvers_there_is_no_governance() {
    let s = TestServer::start();
    let r = propose(&s, "rotate_signing_key", json!({})).await;
    r.expect_error(409, "conflict");
    assert!(r.text.contains("not configured"), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raise_budget_lets_an_exhausted_tenant_query_again_only_once_approved() {
    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    let s = start(
        2,
        &[&alice, &bob],
        &[
            ("STRONGROOM_PRIVACY__TENANT_EPSILON_BUDGET", "\"1.0\""),
            ("STRONGROOM_PRIVACY__MAX_QUERY_EPSILON", "\"1.0\""),
        ],
    );
    s.create_tenant("acme").await;
    let t = s.tenant_token("acme", &["records:write", "query:aggregate"]).await;
    s.write_records(&t, "v1", json!([{"data": {"speed": 1}}])).await;
    count_query(&s, &t, "1.0").await.expect(200);
    count_query(&s, &t, "0.5")
        .await
        .expect_error(403, "privacy_budget_exhausted");

    let (id, digest) = proposed(&s, "raise_budget", json!({"tenant_id": "acme", "epsilon": "5.0"})).await;
    let r = approve(&s, &t, &id, &alice, &digest).await;
    r.expect(200);
    assert_eq!(r.json["status"], "pending");
    // Never before the threshold.
    count_query(&s, &t, "0.5")
        .await
        .expect_error(403, "privacy_budget_exhausted");
    let r = approve(&s, &t, &id, &bob, &digest).await;
    r.expect(200);
    assert_eq!(r.json["status"], "executed", "{}", r.text);
    assert_eq!(r.json["params"], json!({"tenant_id": "acme", "epsilon": "5.0"}));
    let q = count_query(&s, &t, "1.0").await;
    q.expect(200);
    assert_eq!(q.json["budget_remaining"], "4.0", "1 + 5 total, 2 spent: {}", q.text);
    // The raise survives a restart (it lives in LMDB).
    let mut s = s;
    s.restart();
    let q = count_query(&s, &t, "1.0").await;
    assert_eq!(q.expect(200).json["budget_remaining"], "3.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_tenant_revokes_tokens_deletes_data_and_destroys_every_kek() {
    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    let mut s = start(2, &[&alice, &bob], &[]);
    s.create_tenant("acme").await;
    s.create_tenant("other").await;
    let (t, _) = s
        .tenant_token_with_id("acme", &["records:write", "records:read", "entity:erase"])
        .await;
    let keeper = s.tenant_token("other", &["records:write", "records:read"]).await;
    s.write_records(&t, "car-1", json!([{"id": "r1", "data": {"x": 1}}, {"data": {"x": 2}}]))
        .await;
    s.write_records(&t, "car-2", json!([{"data": {"x": 3}}])).await;
    s.write_records(&keeper, "car-1", json!([{"id": "r1", "data": {"y": 1}}]))
        .await;
    // An erasure leaves a tombstone (and rotates to KEK v2); a rotation makes v3 (v1 and
    // v2 retired, still in the HSM).
    s.delete("/v1/admin/entity/car-2", Some(&t)).await.expect(200);
    s.post("/v1/admin/tenants/acme/rotate", Some(s.operator()), &json!({}))
        .await
        .expect(200);

    let labels = hsm_secret_key_labels(&s);
    for v in 1..=3 {
        assert!(labels.contains(&format!("strongroom/tenant/acme/v{v}")), "{labels:?}");
    }

    let (id, digest) = proposed(&s, "destroy_tenant", json!({"tenant_id": "acme"})).await;
    let r = approve(&s, s.operator(), &id, &alice, &digest).await;
    assert_eq!(r.expect(200).json["status"], "pending");
    s.get("/v1/entities/car-1/records/r1", Some(&t)).await.expect(200);
    let r = approve(&s, &keeper, &id, &bob, &digest).await;
    r.expect(200);
    assert_eq!(r.json["status"], "executed", "{}", r.text);

    // The tenant's tokens are dead; the other tenant is untouched.
    s.get("/v1/entities/car-1/records/r1", Some(&t))
        .await
        .expect_error(401, "unauthorized");
    let kept = s.get("/v1/entities/car-1/records/r1", Some(&keeper)).await;
    assert_eq!(kept.expect(200).json["data"], json!({"y": 1}));
    let tenants = s.get("/v1/admin/tenants", Some(s.operator())).await;
    let ids: Vec<&str> = tenants.expect(200).json["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["other"]);

    // The audit trail: execute (with counts), then tenant_destroy once the KEKs are gone.
    let events = s.audit_events();
    let exec = events
        .iter()
        .find(|e| e.action() == "proposal_execute")
        .expect("proposal_execute");
    assert_eq!(exec.json["details"]["tokens_revoked"], 1);
    assert_eq!(exec.json["details"]["records_deleted"], 2);
    assert_eq!(exec.json["details"]["tombstones_deleted"], 1);
    let destroy = events
        .iter()
        .find(|e| e.action() == "tenant_destroy")
        .expect("tenant_destroy");
    assert_eq!(destroy.outcome(), "allowed");
    assert_eq!(destroy.json["tenant_id"], "acme");
    assert_eq!(destroy.json["details"]["kek_versions"], json!([1, 2, 3]));
    assert!(destroy.event.seq > exec.event.seq);

    // Nothing of acme is left in LMDB.
    s.stop();
    let raw = Raw::open(s.data_dir());
    let mut prefix = vec![4u8];
    prefix.extend_from_slice(b"acme");
    for db in [
        "records",
        "record_index",
        "deks",
        "erased",
        "dp_budget",
        "dp_idempotency",
    ] {
        let left: Vec<_> = raw
            .entries(db)
            .into_iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .collect();
        assert!(left.is_empty(), "{db} still holds acme keys: {left:?}");
    }
    assert!(raw.entries("tenants").iter().all(|(k, _)| k != b"acme"));
    assert!(!raw.entries("records").is_empty(), "other's record is kept");
    drop(raw);
    s.start_again();

    // Every KEK version is gone from the HSM; the other tenant's key is there.
    let labels = hsm_secret_key_labels(&s);
    assert!(
        !labels.iter().any(|l| l.starts_with("strongroom/tenant/acme/")),
        "{labels:?}"
    );
    assert!(labels.iter().any(|l| l == "strongroom/tenant/other/v1"), "{labels:?}");
    // The id is not reused (its audit history stays filed under it).
    let r = s
        .post("/v1/admin/tenants", Some(s.operator()), &json!({"tenant_id": "acme"}))
        .await;
    r.expect_error(409, "conflict");
    assert!(r.text.contains("not reused"), "{}", r.text);
    s.get("/v1/entities/car-1/records", Some(&t))
        .await
        .expect_error(401, "unauthorized");
}

/// Labels of the secret keys on the server's SoftHSM token (`pkcs11-tool`, opensc).
fn hsm_secret_key_labels(s: &TestServer) -> Vec<String> {
    let text = std::fs::read_to_string(s.dir().join("strongroom.toml")).expect("config");
    let config: toml::Value = toml::from_str(&text).expect("config TOML");
    let module = config["hsm"]["module"].as_str().expect("hsm.module");
    let token = config["hsm"]["token_label"].as_str().expect("hsm.token_label");
    let pin = std::fs::read_to_string(s.hsm_dir().join("pin")).expect("pin");
    let out = std::process::Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", s.hsm_dir().join("softhsm2.conf"))
        .args([
            "--module",
            module,
            "--token-label",
            token,
            "--login",
            "--pin",
            pin.trim(),
        ])
        .args(["--list-objects", "--type", "secrkey"])
        .output()
        .expect("run pkcs11-tool (package opensc)");
    assert!(
        out.status.success(),
        "pkcs11-tool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("label:"))
        .map(|l| l.trim().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_quorum_changes_the_next_proposal_and_supersedes_pending_ones() {
    let (alice, bob, dave) = (Key::new("alice"), Key::new("bob"), Key::new("dave"));
    let s = start(2, &[&alice, &bob], &[]);
    s.create_tenant("acme").await;
    let (old_id, old_digest) = proposed(&s, "raise_budget", json!({"tenant_id": "acme", "epsilon": "1"})).await;
    let (id, digest) = proposed(
        &s,
        "set_quorum",
        json!({"threshold": 1, "approvers": [alice.entry(), dave.entry()]}),
    )
    .await;
    approve(&s, s.operator(), &id, &alice, &digest).await.expect(200);
    // Not yet a member.
    approve(&s, s.operator(), &id, &dave, &digest)
        .await
        .expect_error(400, "invalid_signature");
    let r = approve(&s, s.operator(), &id, &bob, &digest).await;
    r.expect(200);
    assert_eq!(r.json["status"], "executed", "{}", r.text);

    // The next proposal needs one approval from the new set.
    let r = propose(&s, "raise_budget", json!({"tenant_id": "acme", "epsilon": "2"})).await;
    assert_eq!(r.expect(201).json["approvals_needed"], 1);
    let (next, next_digest) = (
        r.json["proposal_id"].as_str().unwrap().to_owned(),
        r.json["digest"].as_str().unwrap().to_owned(),
    );
    approve(&s, s.operator(), &next, &bob, &next_digest)
        .await
        .expect_error(400, "invalid_signature");
    let r = approve(&s, s.operator(), &next, &dave, &next_digest).await;
    assert_eq!(r.expect(200).json["status"], "executed", "{}", r.text);

    // A proposal made under the old quorum is superseded.
    approve(&s, s.operator(), &old_id, &alice, &old_digest)
        .await
        .expect_error(409, "conflict");
    let g = s.get(&format!("{PROPOSALS}/{old_id}"), Some(s.operator())).await;
    assert_eq!(g.expect(200).json["status"], "failed");
    assert!(g.json["result"].as_str().unwrap().contains("quorum changed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_expire_after_a_day() {
    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    let mut s = start(2, &[&alice, &bob], &[]);
    let (id, digest) = proposed(&s, "rotate_signing_key", json!({})).await;
    approve(&s, s.operator(), &id, &alice, &digest).await.expect(200);
    s.stop();
    s.set_serve_env("STRONGROOM_TEST_CLOCK_OFFSET_SECS", "90000");
    s.start_again();
    let g = s.get(&format!("{PROPOSALS}/{id}"), Some(s.operator())).await;
    assert_eq!(g.expect(200).json["status"], "expired");
    approve(&s, s.operator(), &id, &bob, &digest)
        .await
        .expect_error(409, "conflict");
    let g = s.get(&format!("{PROPOSALS}/{id}"), Some(s.operator())).await;
    assert_eq!(g.expect(200).json["status"], "expired");
    assert_eq!(approvers_of(&g.json), ["alice"], "the late approval is not recorded");
    assert!(!s.audit_events().iter().any(|e| e.action() == "proposal_execute"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledge_alarm_accepts_a_restored_copy_after_a_rollback() {
    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    let mut s = start(2, &[&alice, &bob], &[]);
    s.create_tenant("acme").await;
    let t = s.tenant_token("acme", &["records:read", "records:write"]).await;
    s.write_records(&t, "e1", json!([{"data": {"x": 1}}])).await;
    s.stop();
    let old = backup_path(&s, "old");
    copy_dir(s.data_dir(), &old);
    s.start_again();
    s.write_records(&t, "e2", json!([{"data": {"x": 2}}])).await;
    s.stop();
    let tpm = tpm_counter(&s);
    restore_dir(&old, s.data_dir());
    s.start_again();

    // Rollback alarm: data refused; only acknowledge_alarm may be proposed.
    s.get("/v1/entities/e1/records", Some(&t))
        .await
        .expect_error(503, "integrity_alarm");
    propose(&s, "raise_budget", json!({"tenant_id": "acme", "epsilon": "1"}))
        .await
        .expect_error(503, "integrity_alarm");
    let (id, digest) = proposed(&s, "acknowledge_alarm", json!({"reason": "restored after disk loss"})).await;
    let r = approve(&s, &t, &id, &alice, &digest).await;
    assert_eq!(r.expect(200).json["status"], "pending");
    s.get("/v1/entities/e1/records", Some(&t))
        .await
        .expect_error(503, "integrity_alarm");
    let r = approve(&s, &t, &id, &bob, &digest).await;
    r.expect(200);
    assert_eq!(r.json["status"], "executed", "{}", r.text);
    assert!(
        r.json["result"].as_str().unwrap().contains("acknowledged"),
        "{}",
        r.text
    );
    assert_eq!(tpm_counter(&s), tpm + 1, "sealed to the TPM's value + 1");

    // Serving again, with a chain anchored to the TPM; and after a restart too.
    let r = s.get("/v1/entities/e1/records", Some(&t)).await;
    assert_eq!(r.expect(200).json["records"].as_array().unwrap().len(), 1);
    assert_healthy(&s, &t).await;
    s.restart();
    assert_healthy(&s, &t).await;
    // The restored copy does not hold e2.
    let r = s.get("/v1/entities/e2/records", Some(&t)).await;
    assert_eq!(r.expect(200).json["records"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_verification_failure_cannot_be_acknowledged() {
    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    let mut s = start(2, &[&alice, &bob], &[]);
    s.create_tenant("acme").await;
    let t = s.tenant_token("acme", &["records:read", "records:write"]).await;
    for i in 0..3 {
        s.write_records(&t, &format!("e{i}"), json!([{"data": {"i": i}}])).await;
    }
    s.stop();
    {
        let raw = Raw::open(s.data_dir());
        let events = raw.events();
        let (seq, bytes) = events
            .iter()
            .find(|(_, b)| crate::integrity_support::event_json(b)["action"] == "data_write")
            .expect("a data_write event")
            .clone();
        raw.write(&[(
            "audit",
            seq.to_be_bytes().to_vec(),
            Some(crate::integrity_support::with_one_char_changed(&bytes)),
        )]);
    }
    s.start_again();
    s.get("/v1/entities/e1/records", Some(&t))
        .await
        .expect_error(503, "integrity_alarm");
    let (id, digest) = proposed(&s, "acknowledge_alarm", json!({"reason": "looks fine to me"})).await;
    approve(&s, &t, &id, &alice, &digest).await.expect(200);
    let r = approve(&s, &t, &id, &bob, &digest).await;
    r.expect(200);
    assert_eq!(r.json["status"], "failed", "{}", r.text);
    assert!(
        r.json["result"].as_str().unwrap().contains("cannot be acknowledged"),
        "{}",
        r.text
    );
    // Still refused.
    s.get("/v1/entities/e1/records", Some(&t))
        .await
        .expect_error(503, "integrity_alarm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destruction_interrupted_after_its_commit_is_finished_at_the_next_start() {
    let (alice, bob) = (Key::new("alice"), Key::new("bob"));
    let mut s = start(2, &[&alice, &bob], &[]);
    s.create_tenant("acme").await;
    let t = s.tenant_token("acme", &["records:write"]).await;
    s.write_records(&t, "e1", json!([{"data": {"x": 1}}])).await;
    let (id, digest) = proposed(&s, "destroy_tenant", json!({"tenant_id": "acme"})).await;
    approve(&s, s.operator(), &id, &alice, &digest).await.expect(200);
    s.stop();

    // The approval that completes the quorum commits the destruction, then the process
    // dies before the HSM keys are destroyed.
    let approvers = approvers_env(&[&alice, &bob]);
    let mut p = ServeProc::spawn(
        &s,
        &[
            ("STRONGROOM_GOVERNANCE__THRESHOLD", "2"),
            ("STRONGROOM_GOVERNANCE__APPROVERS", approvers.as_str()),
            ("STRONGROOM_TEST_FAULT", "after_tenant_destroy_commit"),
        ],
    );
    let body = json!({"approver": "bob", "signature": bob.sign(&digest)});
    let r = p
        .post(&format!("{PROPOSALS}/{id}/approvals"), s.operator(), &body)
        .await;
    assert!(r.is_err(), "the process dies before answering: {r:?}");
    let exit = p.wait_exit(std::time::Duration::from_secs(30));
    assert_eq!(exit.code(), Some(86), "the injected fault fires: {exit}");
    drop(p);
    let events = Raw::open(s.data_dir()).events();
    assert_eq!(events_with_action(&events, "proposal_execute").len(), 1);
    assert!(events_with_action(&events, "tenant_destroy").is_empty());

    // The next start finishes it: KEKs destroyed, tenant_destroy recorded.
    s.start_again();
    let data_dir = s.data_dir().to_path_buf();
    eventually(
        "tenant_destroy after restart",
        std::time::Duration::from_secs(30),
        || {
            let dir = data_dir.clone();
            async move {
                let events = Raw::open(&dir).events();
                (!events_with_action(&events, "tenant_destroy").is_empty()).then_some(())
            }
        },
    )
    .await;
    let g = s.get(&format!("{PROPOSALS}/{id}"), Some(s.operator())).await;
    assert_eq!(g.expect(200).json["status"], "executed");
    s.get("/v1/entities/e1/records", Some(&t))
        .await
        .expect_error(401, "unauthorized");
    let labels = hsm_secret_key_labels(&s);
    assert!(
        !labels.iter().any(|l| l.starts_with("strongroom/tenant/acme/")),
        "{labels:?}"
    );
}
