//! Tamper evidence of the audit log (SPEC §6, §7): edits, forged chains, truncation,
//! reordering, dropped checkpoints and restored old copies of the data directory are all
//! detected, raise the integrity alarm everywhere it is reported, and are themselves
//! logged; a crash between checkpoint commit and TPM increment recovers cleanly; the
//! offline verifier accepts a genuine export and names the first bad event of a tampered
//! one; the audit API scopes, filters, pages and logs its own reads.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::harness::{TestServer, BIN};
use crate::integrity_support::{
    alarm_gauge, assert_alarm, assert_healthy, backup_path, copy_dir, event, event_json, events_with_action,
    eventually, forge_chain, head_op, names_seq, restore_dir, scrape_metrics, tpm_counter, verify,
    with_one_char_changed, Raw, ServeProc, DETECT_TIMEOUT,
};

/// A server with a tenant, a data token (`records:read`, `records:write`) and some
/// records, stopped cleanly so that a checkpoint seals everything but its own
/// `checkpoint_seal` event. Returns the stopped server and the token.
async fn sealed_server() -> (TestServer, String) {
    let mut s = TestServer::start();
    s.create_tenant("acme").await;
    let t = s.tenant_token("acme", &["records:read", "records:write"]).await;
    for i in 0..6 {
        s.write_records(
            &t,
            &format!("e{i}"),
            json!([{"data": {"i": i}}, {"data": {"i": i + 1}}]),
        )
        .await;
    }
    assert_healthy(&s, &t).await;
    s.stop();
    (s, t)
}

/// The seq of the `n`-th `data_write` event.
fn data_write_seq(raw: &Raw, n: usize) -> u64 {
    let events = raw.events();
    events
        .iter()
        .filter(|(_, b)| event_json(b)["action"] == "data_write")
        .nth(n)
        .expect("data_write event")
        .0
}

// ---------------------------------------------------------------------------------------
// 1. One byte changed in a stored event
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn byte_flipped_at_rest_raises_the_alarm_at_start() {
    let (mut s, t) = sealed_server().await;
    let seq = {
        let raw = Raw::open(s.data_dir());
        let seq = data_write_seq(&raw, 2);
        let (_, size) = raw.latest_checkpoint();
        assert!(seq + 1 < size, "the edited event is sealed");
        let bytes = raw.events()[usize::try_from(seq).unwrap()].1.clone();
        raw.write(&[("audit", seq.to_be_bytes().to_vec(), Some(with_one_char_changed(&bytes)))]);
        seq
    };
    s.start_again();

    let v = assert_alarm(&s, &t, "chain_verify_failed", "audit chain broken").await;
    let failure = v["failure"].as_str().unwrap();
    assert!(
        names_seq(failure, &[seq, seq + 1]),
        "failure names seq {seq}: {failure}"
    );
    // Nothing past the break counts as verified, and nothing is sealed under the alarm.
    assert!(
        v["verified_through_seq"].as_u64().is_none_or(|n| n <= seq),
        "verified prefix stops before the break: {v}"
    );
    let before = Raw::open(s.data_dir()).checkpoints().len();
    s.stop();
    assert_eq!(
        Raw::open(s.data_dir()).checkpoints().len(),
        before,
        "no checkpoint is sealed over a broken chain"
    );
}

#[tokio::test]
async fn byte_flipped_while_running_is_caught_by_the_background_verifier() {
    let mut s = TestServer::start_with_env(&[("STRONGROOM_AUDIT__VERIFY_INTERVAL_SECS", "1")]);
    s.create_tenant("acme").await;
    let t = s.tenant_token("acme", &["records:read", "records:write"]).await;
    for i in 0..4 {
        s.write_records(&t, &format!("e{i}"), json!([{"data": {"i": i}}])).await;
    }
    let seq = data_write_seq(&Raw::open(s.data_dir()), 1);
    // The server has verified past the event before it is touched.
    eventually("the verifier to pass the event", DETECT_TIMEOUT, || async {
        let v = verify(&s).await;
        (v["chain_verified"] == true && v["verified_through_seq"].as_u64() > Some(seq + 1)).then_some(())
    })
    .await;
    assert_healthy(&s, &t).await;

    // A second process edits the event in place while the server runs.
    {
        let raw = Raw::open(s.data_dir());
        let bytes = raw.events()[usize::try_from(seq).unwrap()].1.clone();
        raw.write(&[("audit", seq.to_be_bytes().to_vec(), Some(with_one_char_changed(&bytes)))]);
    }
    let v = eventually("the background verifier to raise the alarm", DETECT_TIMEOUT, || async {
        let v = verify(&s).await;
        (v["chain_verified"] == false).then_some(v)
    })
    .await;
    let failure = v["failure"].as_str().unwrap_or_default();
    assert!(names_seq(failure, &[seq, seq + 1]), "failure names seq {seq}: {v}");
    // The alarm is raised right after the failure is recorded: allow it to land.
    eventually("the alarm gauge", DETECT_TIMEOUT, || async {
        (alarm_gauge(&scrape_metrics(&s).await) == Some(1)).then_some(())
    })
    .await;
    assert_alarm(&s, &t, "chain_verify_failed", "audit chain broken").await;
    s.stop();
}

// ---------------------------------------------------------------------------------------
// 2. A forged chain (links recomputed, checkpoints not re-signable)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn rewritten_event_with_recomputed_links_fails_the_signed_checkpoint() {
    let (mut s, t) = sealed_server().await;
    let size = {
        let raw = Raw::open(s.data_dir());
        let seq = data_write_seq(&raw, 1);
        let (_, size) = raw.latest_checkpoint();
        assert!(seq < size, "the rewritten event is sealed");
        let mut e = event(&raw.events()[usize::try_from(seq).unwrap()].1);
        drop(raw);
        e.resource = "entity:someone-else".into();
        e.details.insert("count".into(), json!(1000));
        forge_chain(s.data_dir(), seq, e);
        size
    };
    // The forgery is internally consistent: every link and the stored head recompute.
    let forged = crate::harness::verify_chain(s.data_dir());
    assert!(forged.iter().any(|e| e.event.resource == "entity:someone-else"));

    s.start_again();
    let v = assert_alarm(&s, &t, "chain_verify_failed", "signed checkpoint").await;
    let failure = v["failure"].as_str().unwrap();
    assert!(
        names_seq(failure, &[size - 1]),
        "fails where the checkpoint ends: {failure}"
    );
    s.stop();
}

// ---------------------------------------------------------------------------------------
// 3. Truncation, reordering, a dropped checkpoint
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn deleted_sealed_tail_is_detected_at_start() {
    let (mut s, t) = sealed_server().await;
    {
        let raw = Raw::open(s.data_dir());
        let events = raw.events();
        let (_, size) = raw.latest_checkpoint();
        let keep = events.len() - 4;
        assert!((keep as u64) < size - 1, "sealed events are deleted");
        let mut ops: Vec<_> = events[keep..]
            .iter()
            .map(|(seq, _)| ("audit", seq.to_be_bytes().to_vec(), None))
            .collect();
        ops.push(head_op(
            keep as u64,
            &strongroom::audit::chain_hash(&events[keep - 1].1),
        ));
        raw.write(&ops);
    }
    // What is left is a consistent chain: only the checkpoint can tell.
    crate::harness::verify_chain(s.data_dir());

    s.start_again();
    assert_alarm(&s, &t, "chain_verify_failed", "checkpoint").await;
    s.stop();
}

#[tokio::test]
async fn swapped_events_are_detected_at_start() {
    let (mut s, t) = sealed_server().await;
    let seq = {
        let raw = Raw::open(s.data_dir());
        let seq = data_write_seq(&raw, 3);
        let events = raw.events();
        let (a, b) = (
            &events[usize::try_from(seq).unwrap()],
            &events[usize::try_from(seq + 1).unwrap()],
        );
        raw.write(&[
            ("audit", a.0.to_be_bytes().to_vec(), Some(b.1.clone())),
            ("audit", b.0.to_be_bytes().to_vec(), Some(a.1.clone())),
        ]);
        seq
    };
    s.start_again();
    let v = assert_alarm(&s, &t, "chain_verify_failed", "audit chain broken").await;
    let failure = v["failure"].as_str().unwrap();
    assert!(names_seq(failure, &[seq]), "failure names seq {seq}: {failure}");
    s.stop();
}

#[tokio::test]
async fn dropped_newest_checkpoint_is_detected_at_start() {
    let (mut s, t) = sealed_server().await;
    let tpm = tpm_counter(&s);
    {
        let raw = Raw::open(s.data_dir());
        let (counter, _) = raw.latest_checkpoint();
        assert_eq!(counter, tpm, "the newest checkpoint is sealed to the TPM's value");
        raw.write(&[("checkpoints", counter.to_be_bytes().to_vec(), None)]);
    }
    s.start_again();
    let v = assert_alarm(&s, &t, "rollback_detected", "rollback").await;
    assert_eq!(v["tpm_counter"], tpm);
    let failure = v["failure"].as_str().unwrap();
    assert!(
        failure.contains(&format!("counter {}", tpm - 1)) && failure.contains(&format!("at {tpm}")),
        "names both counters: {failure}"
    );
    s.stop();
}

// ---------------------------------------------------------------------------------------
// 4. Rollback: an old copy of the data directory restored
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn restored_old_copies_of_the_data_dir_are_rollbacks() {
    let mut s = TestServer::start();
    s.create_tenant("acme").await;
    let t = s.tenant_token("acme", &["records:read", "records:write"]).await;
    s.stop();
    let oldest = backup_path(&s, "oldest");
    copy_dir(s.data_dir(), &oldest);
    let oldest_counter = Raw::open(&oldest).latest_checkpoint().0;

    // Three more runs, each with a token creation and writes; each clean stop seals.
    let mut one_old = None;
    for run in 0..3 {
        s.start_again();
        s.tenant_token("acme", &["records:read"]).await;
        s.write_records(&t, &format!("run{run}"), json!([{"data": {"run": run}}]))
            .await;
        s.stop();
        if run == 1 {
            let p = backup_path(&s, "one-old");
            copy_dir(s.data_dir(), &p);
            one_old = Some(p);
        }
    }
    let one_old = one_old.unwrap();
    let latest = backup_path(&s, "latest");
    copy_dir(s.data_dir(), &latest);
    let tpm = tpm_counter(&s);
    assert_eq!(Raw::open(&latest).latest_checkpoint().0, tpm);
    let one_old_counter = Raw::open(&one_old).latest_checkpoint().0;
    assert_eq!(one_old_counter, tpm - 1, "one checkpoint old");
    assert!(oldest_counter + 3 <= tpm, "several checkpoints old");

    for (copy, counter) in [(&one_old, one_old_counter), (&oldest, oldest_counter)] {
        restore_dir(copy, s.data_dir());
        s.start_again();
        let v = assert_alarm(&s, &t, "rollback_detected", "rollback detected").await;
        let failure = v["failure"].as_str().unwrap();
        assert!(
            failure.contains(&format!("TPM counter {counter} but the TPM is at {tpm}")),
            "{failure}"
        );
        assert_eq!(v["tpm_counter"], tpm);
        s.stop();
        assert_eq!(tpm_counter(&s), tpm, "nothing is sealed during a rollback alarm");
    }

    // Control: the current copy starts clean on the same TPM.
    restore_dir(&latest, s.data_dir());
    s.start_again();
    assert_healthy(&s, &t).await;
    s.stop();
}

// ---------------------------------------------------------------------------------------
// 5. Crash between checkpoint commit and TPM increment
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn crash_between_checkpoint_commit_and_counter_increment_recovers() {
    let mut s = TestServer::start();
    s.create_tenant("acme").await;
    let t = s.tenant_token("acme", &["records:read", "records:write"]).await;
    s.stop();
    let before = tpm_counter(&s);
    assert_eq!(Raw::open(s.data_dir()).latest_checkpoint().0, before);

    // (a) A seal triggered by a token creation (no rate limit) crashes after its commit.
    let mut p = ServeProc::spawn(
        &s,
        &[
            ("STRONGROOM_TEST_FAULT", "after_checkpoint_commit"),
            ("STRONGROOM_AUDIT__MIN_SEAL_INTERVAL_SECS", "0"),
        ],
    );
    let created = p
        .post(
            "/v1/admin/tokens",
            s.operator(),
            &json!({"actor": "user:crash", "tenant_id": "acme", "permissions": ["records:read"]}),
        )
        .await;
    // The seal runs right after the commit: the process may die before it answers.
    assert!(matches!(created, Ok((201, _)) | Err(_)), "{created:?}");
    let exit = p.wait_exit(Duration::from_secs(30));
    assert_eq!(exit.code(), Some(86), "the injected fault fires: {exit}");
    drop(p);
    let events = Raw::open(s.data_dir()).events();
    let seals = events_with_action(&events, "checkpoint_seal");
    assert!(
        events_with_action(&events, "token_create")
            .iter()
            .any(|e| e["details"]["subject_actor"] == "user:crash"),
        "the token creation committed"
    );
    assert_eq!(seals.last().unwrap()["details"]["reason"], "critical_event");
    let (stored, _) = Raw::open(s.data_dir()).latest_checkpoint();
    assert_eq!(stored, before + 1, "the checkpoint was committed");
    assert_eq!(tpm_counter(&s), before, "the TPM was not incremented");

    s.start_again();
    let v = verify(&s).await;
    assert_eq!(v["chain_verified"], true, "{v}");
    assert_eq!(v["tpm_counter"], stored, "{v}");
    assert_eq!(v["checkpoint"]["tpm_counter"], stored, "{v}");
    assert_healthy(&s, &t).await;
    assert!(
        s.server_log().contains("finishing a TPM increment"),
        "start-up finished the increment"
    );
    let events = Raw::open(s.data_dir()).events();
    assert!(events_with_action(&events, "rollback_detected").is_empty());
    assert!(events_with_action(&events, "chain_verify_failed").is_empty());
    s.stop();

    // (b) The shutdown seal (SIGTERM) crashes after its commit.
    let before = tpm_counter(&s);
    let mut p = ServeProc::spawn(&s, &[("STRONGROOM_TEST_FAULT", "after_checkpoint_commit")]);
    let created = p
        .post("/v1/admin/tenants", s.operator(), &json!({"tenant_id": "beta"}))
        .await;
    assert!(matches!(created, Ok((201, _))), "{created:?}");
    p.sigterm();
    let exit = p.wait_exit(Duration::from_secs(30));
    assert_eq!(
        exit.code(),
        Some(86),
        "the injected fault fires at the shutdown seal: {exit}"
    );
    drop(p);
    let events = Raw::open(s.data_dir()).events();
    let seals = events_with_action(&events, "checkpoint_seal");
    assert_eq!(seals.last().unwrap()["details"]["reason"], "shutdown");
    let (stored, _) = Raw::open(s.data_dir()).latest_checkpoint();
    assert_eq!((stored, tpm_counter(&s)), (before + 1, before));

    s.start_again();
    let v = verify(&s).await;
    assert_eq!(v["chain_verified"], true, "{v}");
    assert_eq!(v["tpm_counter"], stored, "{v}");
    assert_eq!(v["checkpoint"]["tpm_counter"], stored, "{v}");
    assert_healthy(&s, &t).await;
    s.stop();
    assert_eq!(
        tpm_counter(&s),
        stored + 1,
        "sealing goes on from the recovered counter"
    );
}

// ---------------------------------------------------------------------------------------
// 6. Offline verifier
// ---------------------------------------------------------------------------------------

/// Run `strongroom audit verify`; returns (exit code, stdout, stderr).
fn offline_verify(dir: &std::path::Path, export: &str, checkpoint: Option<(&str, &str)>) -> (i32, String, String) {
    let export_path = dir.join("export.ndjson");
    std::fs::write(&export_path, export).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["audit", "verify", "--export"]).arg(&export_path);
    if let Some((note, vkey)) = checkpoint {
        let (c, k) = (dir.join("checkpoint.txt"), dir.join("public-key.txt"));
        std::fs::write(&c, note).unwrap();
        std::fs::write(&k, vkey).unwrap();
        cmd.arg("--checkpoint").arg(c).arg("--public-key").arg(k);
    }
    let out = cmd.env("NO_COLOR", "1").output().expect("run strongroom audit verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
fn assert_rejected(result: &(i32, String, String), seq: Option<u64>, what: &str) {
    let (code, _, stderr) = result;
    assert_eq!(*code, 1, "{what}: exit 1 expected; stderr: {stderr}");
    let line = stderr.trim();
    assert!(line.contains("verification FAILED"), "{what}: {line}");
    if let Some(seq) = seq {
        assert!(names_seq(line, &[seq]), "{what}: should name seq {seq}: {line}");
    }
}

#[tokio::test]
async fn offline_verifier_accepts_the_export_and_names_tampering() {
    let mut s = TestServer::start();
    s.create_tenant("acme").await;
    let t = s.tenant_token("acme", &["records:write"]).await;
    for i in 0..5 {
        s.write_records(&t, &format!("e{i}"), json!([{"data": {"i": i}}])).await;
    }
    s.restart(); // the shutdown seals everything so far
    let op = s.operator().to_owned();
    let note = s
        .get("/v1/admin/audit/checkpoint", Some(&op))
        .await
        .expect(200)
        .text
        .clone();
    let vkey = s
        .get("/v1/admin/audit/public-key", Some(&op))
        .await
        .expect(200)
        .text
        .clone();
    let export = s.get("/v1/admin/audit/export", Some(&op)).await;
    export.expect(200);
    let export = export.text;
    let dir = s.dir().join("offline");
    std::fs::create_dir_all(&dir).unwrap();
    let size = usize::try_from(crate::integrity_support::note_size(&note)).unwrap();
    let lines: Vec<&str> = export.lines().collect();
    assert!(
        size > 8 && lines.len() > size,
        "export ({}) extends past the checkpoint ({size})",
        lines.len()
    );
    let join = |ls: &[&str]| ls.join("\n") + "\n";

    // The checkpoint is a C2SP signed note over the export's first `size` events.
    let note_lines: Vec<&str> = note.lines().collect();
    let origin = note_lines[0];
    assert!(origin.starts_with("strongroom/"), "{note}");
    let head = sha256_chain_hash(lines[size - 1]);
    assert_eq!(note_lines[3], format!("chain {head}"), "{note}");
    assert!(note_lines[4].starts_with("tpm 0x01500016 "), "{note}");
    assert_eq!(note_lines[5], "", "{note}");
    assert!(note_lines[6].starts_with(&format!("\u{2014} {origin} ")), "{note}");
    let vkey_parts: Vec<&str> = vkey.trim().splitn(3, '+').collect();
    assert_eq!(vkey_parts[0], origin, "key name is the origin: {vkey}");
    assert_eq!(vkey_parts[1].len(), 8, "hex key id: {vkey}");

    // Genuine.
    let (code, stdout, stderr) = offline_verify(&dir, &export, Some((&note, &vkey)));
    assert_eq!(code, 0, "genuine export: {stderr}");
    assert!(stdout.contains(&format!("{} events verified", lines.len())), "{stdout}");
    assert!(stdout.contains(&format!("tree size {size}")), "{stdout}");
    let (code, _, stderr) = offline_verify(&dir, &export, None);
    assert_eq!(code, 0, "{stderr}");

    // An edited field: the next line's link breaks.
    let n = size / 2;
    let mut edited = lines.clone();
    let changed = edited[n].replacen("\"outcome\":\"allowed\"", "\"outcome\":\"denied\"", 1);
    assert_ne!(changed, edited[n], "line {n} has an allowed outcome");
    edited[n] = &changed;
    assert_rejected(
        &offline_verify(&dir, &join(&edited), Some((&note, &vkey))),
        Some(n as u64 + 1),
        "edited field",
    );
    assert_rejected(
        &offline_verify(&dir, &join(&edited), None),
        Some(n as u64 + 1),
        "edited field",
    );

    // A dropped line.
    let mut dropped = lines.clone();
    dropped.remove(n);
    assert_rejected(
        &offline_verify(&dir, &join(&dropped), Some((&note, &vkey))),
        Some(n as u64),
        "dropped line",
    );

    // Two lines swapped.
    let mut swapped = lines.clone();
    swapped.swap(n, n + 1);
    assert_rejected(
        &offline_verify(&dir, &join(&swapped), Some((&note, &vkey))),
        Some(n as u64),
        "swapped lines",
    );

    // The tail cut below the checkpoint: consistent alone, not with the checkpoint.
    let cut = join(&lines[..size - 2]);
    let (code, _, stderr) = offline_verify(&dir, &cut, None);
    assert_eq!(code, 0, "a prefix alone is consistent: {stderr}");
    assert_rejected(
        &offline_verify(&dir, &cut, Some((&note, &vkey))),
        Some(size as u64 - 2),
        "truncated tail",
    );

    // An export whose links were all recomputed after an edit: only the checkpoint tells.
    let mut forged = String::new();
    let mut prev = strongroom::audit::GENESIS_PREV.to_owned();
    for (i, line) in lines.iter().enumerate() {
        let mut e = event(format!("{}{line}", strongroom::audit::EVENT_PREFIX).as_bytes());
        if i == n {
            e.actor = "user:nobody".into();
        }
        e.prev = prev;
        let bytes = e.to_bytes();
        prev = strongroom::audit::hash_hex(&strongroom::audit::chain_hash(&bytes));
        forged.push_str(std::str::from_utf8(&bytes[strongroom::audit::EVENT_PREFIX.len()..]).unwrap());
        forged.push('\n');
    }
    let (code, _, stderr) = offline_verify(&dir, &forged, None);
    assert_eq!(code, 0, "a forged chain is internally consistent: {stderr}");
    assert_rejected(
        &offline_verify(&dir, &forged, Some((&note, &vkey))),
        Some(size as u64 - 1),
        "forged chain",
    );

    // The checkpoint's signed text edited.
    let bumped = note.replacen(&format!("\n{size}\n"), &format!("\n{}\n", size - 1), 1);
    assert_ne!(bumped, note);
    let r = offline_verify(&dir, &export, Some((&bumped, &vkey)));
    assert_rejected(&r, None, "edited checkpoint");
    assert!(r.2.contains("signature"), "{}", r.2);

    // Another key of the same name.
    let name = vkey.split('+').next().unwrap();
    let other = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32])
        .verifying_key()
        .to_bytes();
    let wrong = strongroom::audit::checkpoint::verifier_key(name, &other);
    let r = offline_verify(&dir, &export, Some((&note, &wrong)));
    assert_rejected(&r, None, "wrong public key");
    assert!(r.2.contains("not signed by the appliance key"), "{}", r.2);
    s.stop();
}

// ---------------------------------------------------------------------------------------
// 7. Audit API
// ---------------------------------------------------------------------------------------

fn sha256_chain_hash(line: &str) -> String {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(strongroom::audit::EVENT_PREFIX.as_bytes());
    h.update(line.as_bytes());
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Raw events (seq, JSON) with seq below `below`.
fn raw_before(s: &TestServer, below: u64) -> Vec<(u64, Value)> {
    Raw::open(s.data_dir())
        .events()
        .into_iter()
        .filter(|(seq, _)| *seq < below)
        .map(|(seq, b)| (seq, event_json(&b)))
        .collect()
}

/// The seq of the event a request wrote (exactly one, with this action).
#[track_caller]
fn own_event(s: &TestServer, r: &crate::harness::Resp, action: &str) -> u64 {
    s.expect_event(r, action, "allowed").event.seq
}

fn seqs(events: &Value) -> Vec<u64> {
    events
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect()
}

/// Page through `/v1/admin/audit?{query}` with `limit`; returns (seqs, totals seen).
async fn page_all(s: &TestServer, token: &str, query: &str, limit: usize) -> (Vec<u64>, Vec<u64>) {
    let (mut out, mut totals) = (Vec::new(), Vec::new());
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut path = format!("/v1/admin/audit?limit={limit}&{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = s.get(&path, Some(token)).await;
        r.expect(200);
        let page = seqs(&r.json["events"]);
        assert!(page.len() <= limit, "page over limit: {}", r.text);
        out.extend(page);
        totals.push(r.json["total"].as_u64().expect("total"));
        match &r.json["next_cursor"] {
            Value::Null => return (out, totals),
            Value::String(c) => cursor = Some(c.clone()),
            other => panic!("next_cursor: {other}"),
        }
    }
    panic!("paging did not end");
}

fn check_shape(body: &Value) {
    for key in ["events", "total", "next_cursor", "chain_verified", "sealed_through_seq"] {
        assert!(body.get(key).is_some(), "response lacks {key}: {body}");
    }
    assert!(body["total"].is_u64());
    assert!(body["chain_verified"].is_boolean());
    assert!(body["sealed_through_seq"].is_u64(), "{body}");
    for e in body["events"].as_array().unwrap() {
        for key in [
            "event_id",
            "seq",
            "timestamp",
            "action",
            "actor",
            "tenant_id",
            "resource",
            "outcome",
            "chain_hash",
        ] {
            assert!(e.get(key).is_some(), "event lacks {key}: {e}");
        }
        assert!(e["event_id"].as_str().unwrap().starts_with("evt-"));
        assert!(e["chain_hash"].as_str().unwrap().starts_with("sha256:"));
        assert!(e["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}

#[tokio::test]
async fn audit_api_scopes_tenants_and_logs_every_read() {
    let s = TestServer::start();
    let op = s.operator().to_owned();
    s.create_tenant("acme").await;
    s.create_tenant("beta").await;
    let acme = s.tenant_token("acme", &["records:write", "audit:read"]).await;
    let acme_blind = s.tenant_token("acme", &["records:write"]).await;
    let beta = s.tenant_token("beta", &["records:write", "audit:read"]).await;
    s.write_records(&acme, "a1", json!([{"data": {}}, {"data": {}}])).await;
    s.write_records(&beta, "b1", json!([{"data": {}}])).await;
    s.write_records(&acme_blind, "a2", json!([{"data": {}}])).await;

    // Tenant view: only its tenant's events, all of them.
    let r = s.get("/v1/admin/audit?limit=1000", Some(&acme)).await;
    r.expect(200);
    check_shape(&r.json);
    assert_eq!(r.json["chain_verified"], true, "{}", r.text);
    let own = own_event(&s, &r, "audit_read");
    let expect: Vec<u64> = raw_before(&s, own)
        .into_iter()
        .filter(|(_, e)| e["tenant_id"] == "acme")
        .map(|(seq, _)| seq)
        .collect();
    assert!(expect.len() >= 4, "acme has events: {expect:?}");
    assert_eq!(seqs(&r.json["events"]), expect);
    assert_eq!(r.json["total"], expect.len());
    assert!(r.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["tenant_id"] == "acme"));
    assert!(!r.text.contains("entity:b1"), "no beta event leaks");
    // Filters cannot widen the scope.
    let r = s.get("/v1/admin/audit?resource=entity:b1", Some(&acme)).await;
    r.expect(200);
    assert_eq!(
        (r.json["total"].clone(), r.json["events"].clone()),
        (json!(0), json!([]))
    );
    let r = s.get("/v1/admin/audit?resource=entity:b1", Some(&beta)).await;
    r.expect(200);
    assert_eq!(r.json["total"], 1);

    // Without audit:read: 403, audited as access_denied.
    let r = s.get("/v1/admin/audit", Some(&acme_blind)).await;
    r.expect_error(403, "forbidden");
    s.expect_event(&r, "access_denied", "denied");
    let r = s.get("/v1/admin/audit/verify", Some(&acme_blind)).await;
    r.expect_error(403, "forbidden");
    // Tenant tokens with audit:read may verify, fetch the checkpoint and the key...
    for path in [
        "/v1/admin/audit/verify",
        "/v1/admin/audit/checkpoint",
        "/v1/admin/audit/public-key",
    ] {
        let r = s.get(path, Some(&acme)).await;
        r.expect(200);
        s.expect_event(&r, "audit_read", "allowed");
    }
    // ...but not export.
    let r = s.get("/v1/admin/audit/export", Some(&acme)).await;
    r.expect_error(403, "forbidden");
    s.expect_event(&r, "access_denied", "denied");

    // Operator: everything.
    let r = s.get("/v1/admin/audit?limit=1000", Some(&op)).await;
    r.expect(200);
    check_shape(&r.json);
    let own = own_event(&s, &r, "audit_read");
    let all: Vec<u64> = (0..own).collect();
    assert_eq!(seqs(&r.json["events"]), all, "operator sees every event");
    assert_eq!(r.json["total"], own);
    assert_eq!(r.json["next_cursor"], Value::Null);

    // Each returned chain_hash is SHA-256(0x00 || prefix || export line).
    let export = s.get("/v1/admin/audit/export", Some(&op)).await;
    export.expect(200);
    s.expect_event(&export, "audit_export", "allowed");
    let by_seq: BTreeMap<u64, &str> = export
        .text
        .lines()
        .map(|l| (serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap(), l))
        .collect();
    for e in r.json["events"].as_array().unwrap() {
        let seq = e["seq"].as_u64().unwrap();
        assert_eq!(
            e["chain_hash"],
            sha256_chain_hash(by_seq[&seq]),
            "chain_hash of seq {seq}"
        );
        let line: Value = serde_json::from_str(by_seq[&seq]).unwrap();
        for (api, stored) in [
            ("event_id", "event_id"),
            ("timestamp", "ts"),
            ("action", "action"),
            ("actor", "actor"),
            ("tenant_id", "tenant_id"),
            ("resource", "resource"),
            ("outcome", "outcome"),
        ] {
            assert_eq!(e[api], line[stored], "{api} of seq {seq}");
        }
    }
    // The export's lines are exactly the stored events' JSON.
    let raw = Raw::open(s.data_dir()).events();
    for (seq, bytes) in &raw {
        if let Some(line) = by_seq.get(seq) {
            assert_eq!(line.as_bytes(), &bytes[strongroom::audit::EVENT_PREFIX.len()..]);
        }
    }
    let r = s.get("/v1/admin/audit/export?from_seq=3", Some(&op)).await;
    r.expect(200);
    assert_eq!(
        r.text
            .lines()
            .next()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].clone()),
        Some(json!(3))
    );
}

#[tokio::test]
async fn audit_api_filters_and_pages() {
    let s = TestServer::start();
    let op = s.operator().to_owned();
    s.create_tenant("acme").await;
    let r = s
        .post(
            "/v1/admin/tokens",
            Some(&op),
            &json!({"actor": "user:writer", "tenant_id": "acme", "permissions": ["records:write", "audit:read"]}),
        )
        .await;
    r.expect(201);
    let writer = r.json["token"].as_str().unwrap().to_owned();
    let other = s.tenant_token("acme", &["records:write"]).await;

    // Three batches in three distinct seconds.
    let mut batch_ts = Vec::new();
    for batch in 0..3 {
        if batch > 0 {
            let last = batch_ts.last().cloned().unwrap();
            eventually("the next second", Duration::from_secs(5), || async {
                (strongroom_now() != last).then_some(())
            })
            .await;
        }
        for i in 0..3 {
            s.write_records(&writer, &format!("w{batch}"), json!([{"data": {"i": i}}]))
                .await;
        }
        s.write_records(&other, "o1", json!([{"data": {}}])).await;
        let events = Raw::open(s.data_dir()).events();
        batch_ts.push(event_json(&events.last().unwrap().1)["ts"].as_str().unwrap().to_owned());
    }

    let check = async |query: &str, keep: &dyn Fn(&Value) -> bool| {
        let r = s.get(&format!("/v1/admin/audit?limit=1000&{query}"), Some(&op)).await;
        r.expect(200);
        check_shape(&r.json);
        let own = own_event(&s, &r, "audit_read");
        let expect: Vec<u64> = raw_before(&s, own)
            .into_iter()
            .filter(|(_, e)| keep(e))
            .map(|(seq, _)| seq)
            .collect();
        assert!(!expect.is_empty(), "{query} matches something");
        assert_eq!(seqs(&r.json["events"]), expect, "{query}");
        assert_eq!(r.json["total"], expect.len(), "{query}");
        expect
    };
    let writes = check("action=data_write", &|e| e["action"] == "data_write").await;
    assert_eq!(writes.len(), 12);
    let by_writer = check("actor=user:writer", &|e| e["actor"] == "user:writer").await;
    assert_eq!(by_writer.len(), 9);
    check("resource=entity:w1", &|e| e["resource"] == "entity:w1").await;
    check("action=data_write&actor=user:writer&resource=entity:w2", &|e| {
        e["action"] == "data_write" && e["actor"] == "user:writer" && e["resource"] == "entity:w2"
    })
    .await;
    check("action=tenant_create", &|e| e["action"] == "tenant_create").await;
    // Time window: start inclusive, end exclusive, second precision.
    let (t1, t2) = (batch_ts[1].clone(), batch_ts[2].clone());
    let window = check(&format!("start={t1}&end={t2}"), &|e| {
        let ts = e["ts"].as_str().unwrap();
        ts >= t1.as_str() && ts < t2.as_str()
    })
    .await;
    assert!(
        window.iter().any(|seq| writes.contains(seq)),
        "batch 1 is in the window"
    );
    let w = check(&format!("action=data_write&start={t1}&end={t2}"), &|e| {
        let ts = e["ts"].as_str().unwrap();
        e["action"] == "data_write" && ts >= t1.as_str() && ts < t2.as_str()
    })
    .await;
    assert_eq!(w.len(), 4, "batch 1's writes only");
    check(&format!("start={t2}&action=data_write"), &|e| {
        e["action"] == "data_write" && e["ts"].as_str().unwrap() >= t2.as_str()
    })
    .await;

    // Cursor paging: pages of 2 add up to the whole answer, total stays put.
    let (paged, totals) = page_all(&s, &op, "action=data_write", 2).await;
    assert_eq!(paged, writes);
    assert!(totals.iter().all(|t| *t == writes.len() as u64), "{totals:?}");
    // A tenant token pages through its tenant's writes (all of them are acme's).
    let (paged, _) = page_all(&s, &writer, "action=data_write", 4).await;
    assert_eq!(paged, writes);
    let r = s.get("/v1/admin/audit?limit=5", Some(&op)).await;
    r.expect(200);
    assert_eq!(seqs(&r.json["events"]), vec![0, 1, 2, 3, 4]);
    let cursor = r.json["next_cursor"].as_str().expect("more pages").to_owned();
    let r = s
        .get(&format!("/v1/admin/audit?limit=5&cursor={cursor}"), Some(&op))
        .await;
    r.expect(200);
    assert_eq!(seqs(&r.json["events"]), vec![5, 6, 7, 8, 9]);

    // Limits and bad parameters: 400, each audited.
    let r = s.get("/v1/admin/audit?limit=1000", Some(&op)).await;
    r.expect(200);
    for bad in [
        "limit=1001",
        "limit=0",
        "limit=x",
        "action=nope",
        "start=yesterday",
        "cursor=%21%21",
        "bogus=1",
    ] {
        let r = s.get(&format!("/v1/admin/audit?{bad}"), Some(&op)).await;
        r.expect_error(400, "invalid_request");
        s.expect_event(&r, "audit_read", "failed");
    }
}

/// The current UTC second as an event `ts` renders it.
fn strongroom_now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Sealing policy
// ---------------------------------------------------------------------------------------

/// Number of stored checkpoints and the reason of the newest `checkpoint_seal` event.
fn seal_state(s: &TestServer) -> (usize, Value) {
    let raw = Raw::open(s.data_dir());
    let events = raw.events();
    let reason = events_with_action(&events, "checkpoint_seal")
        .last()
        .map_or(Value::Null, |e| e["details"]["reason"].clone());
    (raw.checkpoints().len(), reason)
}

#[tokio::test]
async fn activity_is_sealed_every_interval_and_idleness_is_not() {
    // The default minimum seal interval (60 s) for critical events is longer than the
    // checkpoint interval: the token creation must not hold interval sealing back.
    let s = TestServer::start_with_env(&[("STRONGROOM_AUDIT__CHECKPOINT_INTERVAL_SECS", "1")]);
    s.create_tenant("acme").await;
    let t = s.tenant_token("acme", &["records:read", "records:write"]).await;
    for round in 0..2 {
        s.write_records(&t, &format!("e{round}"), json!([{"data": {}}])).await;
        let write_seq = Raw::open(s.data_dir()).events().last().unwrap().0;
        eventually("a seal covering the write", DETECT_TIMEOUT, || async {
            let (_, size) = Raw::open(s.data_dir()).latest_checkpoint();
            (size > write_seq).then_some(())
        })
        .await;
    }
    assert_eq!(seal_state(&s).1, "interval");
    // Idle (nothing but the seal's own event): no new checkpoint, the TPM is not worn.
    let (idle_start, _) = seal_state(&s);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(seal_state(&s).0, idle_start, "no seal without activity");
    assert_healthy(&s, &t).await;
}

#[tokio::test]
async fn token_creation_is_sealed_promptly() {
    let s = TestServer::start_with_env(&[("STRONGROOM_AUDIT__MIN_SEAL_INTERVAL_SECS", "1")]);
    s.create_tenant("acme").await;
    let t = s.tenant_token("acme", &["records:read", "records:write"]).await;
    eventually("a critical-event seal", DETECT_TIMEOUT, || async {
        (seal_state(&s).1 == "critical_event").then_some(())
    })
    .await;
    let (before, _) = seal_state(&s);
    let (_, token_id) = s.tenant_token_with_id("acme", &["records:read"]).await;
    eventually("a second critical-event seal", DETECT_TIMEOUT, || async {
        (seal_state(&s).0 > before).then_some(())
    })
    .await;
    assert_eq!(seal_state(&s).1, "critical_event");
    let v = verify(&s).await;
    let token_event = Raw::open(s.data_dir())
        .events()
        .into_iter()
        .find(|(_, b)| event_json(b)["resource"] == format!("token:{token_id}"))
        .expect("token_create event")
        .0;
    assert!(
        v["sealed_through_seq"].as_u64() >= Some(token_event),
        "the token creation is sealed: {v}"
    );
    assert_healthy(&s, &t).await;
}
