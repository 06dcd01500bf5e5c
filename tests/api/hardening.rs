//! Regression tests for the findings of the security review: a junk checkpoint can
//! neither disable the rollback check nor push the TPM counter; tenant creation never
//! destroys a key it did not make; token management cannot escalate or lock operators
//! out; the offline verifier checks signatures even without `--public-key`; SPEC's empty
//! query templates are accepted.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::harness::{random_hex, TestServer};
use crate::integrity_support::{assert_alarm, tpm_counter, verify, Raw};

/// A junk note stored under TPM counter T+1 must not make start-up "finish the
/// increment" (which would brick every genuine copy of the data directory): it is a
/// tamper alarm and the TPM stays at T.
#[tokio::test]
async fn a_junk_checkpoint_raises_the_alarm_and_does_not_move_the_tpm() {
    let mut s = TestServer::start();
    s.create_tenant("acme").await;
    let t = s.tenant_token("acme", &["records:read", "records:write"]).await;
    s.stop();
    let before = tpm_counter(&s);
    let raw = Raw::open(s.data_dir());
    raw.write(&[(
        "checkpoints",
        (before + 1).to_be_bytes().to_vec(),
        Some(b"junk\n\nnot signed\n".to_vec()),
    )]);
    drop(raw);
    s.start_again();
    assert_alarm(&s, &t, "chain_verify_failed", "checkpoint").await;
    s.stop();
    assert_eq!(
        tpm_counter(&s),
        before,
        "the TPM counter must not move for an unsigned checkpoint"
    );
}

/// An unreadable checkpoint entry (a key that is not a counter) is an alarm, not a
/// check that silently could not run.
#[tokio::test]
async fn an_unreadable_checkpoint_entry_raises_the_alarm() {
    let mut s = TestServer::start();
    s.create_tenant("acme").await;
    let t = s.tenant_token("acme", &["records:read"]).await;
    s.stop();
    Raw::open(s.data_dir()).write(&[("checkpoints", vec![0xff; 9], Some(b"x".to_vec()))]);
    s.start_again();
    let v = verify(&s).await;
    assert_eq!(v["chain_verified"], false, "{v}");
    assert!(v["failure"].as_str().unwrap_or_default().contains("checkpoint"), "{v}");
    s.get("/v1/entities/e/records", Some(&t))
        .await
        .expect_error(503, "integrity_alarm");
    let ready = s.get("/readyz", None).await;
    ready.expect(503);
    assert_eq!(ready.json["checks"]["integrity"], false, "{}", ready.text);
}

fn hsm_conf(s: &TestServer) -> std::path::PathBuf {
    s.hsm_dir().join("softhsm2.conf")
}

fn pkcs11(s: &TestServer, args: &[&str]) -> String {
    let pin = std::fs::read_to_string(s.hsm_dir().join("pin")).expect("pin");
    let out = Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", hsm_conf(s))
        .args([
            "--module",
            "/usr/lib/softhsm/libsofthsm2.so",
            "--token-label",
            "strongroom",
            "--login",
        ])
        .args(["--pin", pin.trim()])
        .args(args)
        .output()
        .expect("run pkcs11-tool");
    assert!(
        out.status.success(),
        "pkcs11-tool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A key already under a tenant's label (another appliance on the token) is neither
/// destroyed nor adopted: 409, and the key is still there.
#[tokio::test]
async fn tenant_creation_never_destroys_a_key_it_did_not_make() {
    let s = TestServer::start();
    let label = "strongroom/tenant/foreign/v1";
    pkcs11(&s, &["--keygen", "--key-type", "AES:32", "--label", label]);
    assert!(pkcs11(&s, &["--list-objects", "--type", "secrkey"]).contains(label));
    let r = s
        .post(
            "/v1/admin/tenants",
            Some(s.operator()),
            &json!({"tenant_id": "foreign"}),
        )
        .await;
    r.expect_error(409, "conflict");
    assert!(
        pkcs11(&s, &["--list-objects", "--type", "secrkey"]).contains(label),
        "the foreign key must survive"
    );
    s.get("/v1/admin/tenants", Some(s.operator())).await.expect(200);
    let tenants = s.get("/v1/admin/tenants", Some(s.operator())).await.json;
    assert_eq!(tenants["tenants"], json!([]), "no tenant was created");
}

/// Token management cannot escalate or lock the operators out.
#[tokio::test]
async fn token_management_cannot_escalate_or_lock_out() {
    let s = TestServer::start();
    s.create_tenant("acme").await;
    let op = s.operator().to_owned();
    // A weaker operator token (tokens:manage only) cannot revoke the bootstrap token.
    let weak = s
        .post(
            "/v1/admin/tokens",
            Some(&op),
            &json!({"actor": "operator:weak", "tenant_id": null, "permissions": ["tokens:manage"], "ttl_secs": 600}),
        )
        .await;
    weak.expect(201);
    let weak_token = weak.json["token"].as_str().expect("token").to_owned();
    let boot_id = s
        .audit_events()
        .iter()
        .find(|e| e.event.details.get("bootstrap").is_some())
        .map(|e| e.event.resource.trim_start_matches("token:").to_owned());
    let boot_id = boot_id.expect("the bootstrap token_create event");
    s.delete(&format!("/v1/admin/tokens/{boot_id}"), Some(&weak_token))
        .await
        .expect_error(403, "forbidden");
    // Revoke the weak one; then the bootstrap token is the last token admin: refused.
    let weak_id = weak.json["token_id"].as_str().expect("id").to_owned();
    s.delete(&format!("/v1/admin/tokens/{weak_id}"), Some(&op))
        .await
        .expect(204);
    s.delete(&format!("/v1/admin/tokens/{boot_id}"), Some(&op))
        .await
        .expect_error(409, "conflict");
    s.get("/v1/admin/tenants", Some(&op)).await.expect(200);

    // Reserved actors cannot be minted.
    for actor in ["system:rotation", "operator:bootstrap"] {
        s.post(
            "/v1/admin/tokens",
            Some(&op),
            &json!({"actor": actor, "tenant_id": "acme", "permissions": ["records:read"], "ttl_secs": 60}),
        )
        .await
        .expect_error(400, "invalid_request");
    }

    // A child token never outlives its parent.
    let parent = s
        .post(
            "/v1/admin/tokens",
            Some(&op),
            &json!({"actor": "user:p", "tenant_id": "acme", "permissions": ["tokens:manage", "records:read"], "ttl_secs": 120}),
        )
        .await;
    parent.expect(201);
    let child = s
        .post(
            "/v1/admin/tokens",
            Some(parent.json["token"].as_str().expect("token")),
            &json!({"actor": "user:c", "tenant_id": "acme", "permissions": ["records:read"], "ttl_secs": 31_000_000}),
        )
        .await;
    child.expect(201);
    let (p, c) = (
        parent.json["expires_at"].as_str().unwrap(),
        child.json["expires_at"].as_str().unwrap(),
    );
    let ts = |v: &str| time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).unwrap();
    assert!(ts(c) <= ts(p), "child {c} must not outlive parent {p}");
}

fn strongroom(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(args)
        .output()
        .expect("run strongroom");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

/// SPEC's `audit verify --export F --checkpoint C` (no key) still checks the signature,
/// with the key the export's genesis event names, and prints it for comparison; a
/// checkpoint that does not match the export fails.
#[tokio::test]
async fn offline_verification_without_a_key_uses_the_genesis_key() {
    let s = TestServer::start();
    s.create_tenant("acme").await;
    let op = s.operator();
    let export = s.get("/v1/admin/audit/export", Some(op)).await.text;
    let note = s.get("/v1/admin/audit/checkpoint", Some(op)).await.text;
    let vkey = s.get("/v1/admin/audit/public-key", Some(op)).await.text;
    let dir = tempfile::tempdir().expect("tempdir");
    let (e, c) = (write(dir.path(), "e", &export), write(dir.path(), "c", &note));
    let (code, text) = strongroom(&["audit", "verify", "--export", &e, "--checkpoint", &c]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(vkey.trim()),
        "prints the genesis key for comparison: {text}"
    );
    assert!(text.contains("WARNING"), "{text}");
    // Forge: change the signature's last byte → rejected.
    let mut forged = note.trim_end().to_owned();
    let last = forged.pop().expect("char");
    forged.push(if last == 'A' { 'B' } else { 'A' });
    forged.push('\n');
    let f = write(dir.path(), "f", &forged);
    let (code, text) = strongroom(&["audit", "verify", "--export", &e, "--checkpoint", &f]);
    assert_eq!(code, 1, "{text}");
}

/// SPEC §6 writes `?start=&end=&limit=&cursor=` and `?from_seq=`: empty means absent.
#[tokio::test]
async fn empty_query_parameters_mean_absent() {
    let s = TestServer::start();
    s.create_tenant("acme").await;
    let t = s.tenant_token("acme", &["records:read", "records:write"]).await;
    let e = format!("e-{}", random_hex(4));
    s.write_records(&t, &e, json!([{"data": {"x": 1}}])).await;
    let r = s
        .get(
            &format!("/v1/entities/{e}/records?start=&end=&limit=&cursor="),
            Some(&t),
        )
        .await;
    r.expect(200);
    assert_eq!(r.json["records"].as_array().map(Vec::len), Some(1), "{}", r.text);
    s.get("/v1/admin/audit/export?from_seq=", Some(s.operator()))
        .await
        .expect(200);
    s.get("/v1/admin/audit?start=&end=&action=&limit=&cursor=", Some(s.operator()))
        .await
        .expect(200);
}

/// Events name the credential, not only the (caller-chosen) actor.
#[tokio::test]
async fn events_carry_the_token_id() {
    let s = TestServer::start();
    s.create_tenant("acme").await;
    let (token, token_id) = s.tenant_token_with_id("acme", &["records:read"]).await;
    let r = s.get("/v1/entities/e/records", Some(&token)).await;
    r.expect(200);
    let e = s.expect_event(&r, "data_access", "allowed");
    assert_eq!(
        e.event.details["token_id"],
        token_id.as_str(),
        "{}",
        String::from_utf8_lossy(&e.bytes)
    );
}

/// Attack: the last two token admins revoke each other at the same instant. Checked
/// outside the revocation's transaction, both saw two admins and both revocations
/// committed, leaving no token able to manage tokens (init runs once: a lock-out). The
/// check now runs inside the write transaction: at most one revocation commits; the other
/// is refused (409, audited) or, if it arrives after the first committed, its token is
/// already revoked (401). Several rounds, each with a fresh pair of last admins.
#[tokio::test]
async fn concurrent_mutual_revocation_cannot_lock_the_operators_out() {
    let s = TestServer::start();
    let mut admin = s.operator().to_owned();
    let mut admin_id = s
        .audit_events()
        .iter()
        .find(|e| e.event.details.get("bootstrap").is_some())
        .map(|e| e.event.resource.trim_start_matches("token:").to_owned())
        .expect("the bootstrap token_create event");
    let mut raced = 0;
    for round in 0..8 {
        // `admin` is the only token admin; it makes a peer with all of its permissions.
        let peer = s
            .post(
                "/v1/admin/tokens",
                Some(&admin),
                &json!({"actor": format!("operator:peer{round}"), "tenant_id": null,
                        "permissions": ["tenants:manage", "tokens:manage", "keys:rotate", "governance:propose", "audit:read"],
                        "ttl_secs": 3600}),
            )
            .await;
        peer.expect(201);
        let peer_token = peer.json["token"].as_str().expect("token").to_owned();
        let peer_id = peer.json["token_id"].as_str().expect("id").to_owned();
        let (revoke_admin, revoke_peer) = (
            format!("/v1/admin/tokens/{admin_id}"),
            format!("/v1/admin/tokens/{peer_id}"),
        );
        let (a, b) = tokio::join!(
            s.delete(&revoke_admin, Some(&peer_token)),
            s.delete(&revoke_peer, Some(&admin)),
        );
        assert!(
            !(a.status == 204 && b.status == 204),
            "round {round}: both last admins were revoked (operators locked out)"
        );
        let loser = if a.status == 204 { &b } else { &a };
        assert!(
            [204, 401, 409].contains(&a.status)
                && [204, 401, 409].contains(&b.status)
                && (a.status == 204 || b.status == 204),
            "round {round}: one revocation commits, the other is refused: {} / {}",
            a.status,
            b.status
        );
        if loser.status == 409 {
            raced += 1;
            loser.expect_error(409, "conflict");
            let e = s.expect_event(loser, "token_revoke", "failed");
            assert_eq!(e.json["details"]["error"], "conflict");
        }
        if a.status == 204 {
            (admin, admin_id) = (peer_token, peer_id);
        }
        // The survivor still manages tokens.
        s.get("/v1/admin/tenants", Some(&admin)).await.expect(200);
    }
    eprintln!("{raced} of 8 rounds raced into the in-transaction check");
}
