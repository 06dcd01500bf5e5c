//! Contract tests of the hardware backends against real devices: a fresh SoftHSM token per
//! PKCS#11 test (one module per process, see `testing::SoftHsmProcess`) and a fresh swtpm
//! per TPM test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;

use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use secrecy::SecretString;
use strongroom_hsm::pkcs11::{Pkcs11Backend, Pkcs11Config, SIGNING_KEY_LABEL};
use strongroom_hsm::testing::{softhsm_module_path, SoftHsm, SoftHsmProcess, Swtpm, TestToken};
use strongroom_hsm::tpm::{TpmConfig, TpmCounter};
use strongroom_hsm::{HsmError, HsmWorker, KekRef, KeyBackend, MonotonicCounter};

const ACME1: KekRef<'static> = KekRef {
    tenant_id: "acme",
    version: 1,
};
const ACME2: KekRef<'static> = KekRef {
    tenant_id: "acme",
    version: 2,
};
const GLOBEX1: KekRef<'static> = KekRef {
    tenant_id: "globex",
    version: 1,
};
const AAD: &[u8] = b"strongroom/dek/v1|acme|patient-7|1";

/// Every test starts here, so `SOFTHSM2_CONF` is set (once) before any test thread runs
/// native code.
fn hsm() -> &'static SoftHsmProcess {
    SoftHsmProcess::get().unwrap()
}

fn token() -> (TestToken, Pkcs11Backend) {
    let hsm = hsm();
    let tok = hsm.new_token().unwrap();
    let backend = hsm.open(&tok).unwrap();
    (tok, backend)
}

fn dek() -> [u8; 32] {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = i as u8 ^ 0xa5;
    }
    k
}

// ---------------------------------------------------------------- PKCS#11

#[test]
fn create_exists_and_duplicate() {
    let (_tok, mut b) = token();
    assert!(!b.tenant_key_exists(ACME1).unwrap());
    b.create_tenant_key(ACME1).unwrap();
    assert!(b.tenant_key_exists(ACME1).unwrap());
    assert!(!b.tenant_key_exists(ACME2).unwrap());
    assert!(!b.tenant_key_exists(GLOBEX1).unwrap());
    match b.create_tenant_key(ACME1) {
        Err(HsmError::KeyExists(label)) => assert_eq!(label, "strongroom/tenant/acme/v1"),
        other => panic!("expected KeyExists, got {other:?}"),
    }
    b.create_tenant_key(ACME2).unwrap();
    b.create_tenant_key(GLOBEX1).unwrap();
    assert!(b.tenant_key_exists(ACME2).unwrap());
    b.ping().unwrap();
}

#[test]
fn wrap_unwrap_roundtrip() {
    let (_tok, mut b) = token();
    b.create_tenant_key(ACME1).unwrap();
    let wrapped = b.wrap(ACME1, &dek(), AAD).unwrap();
    assert_eq!(wrapped.len(), 12 + 32 + 16);
    assert!(!wrapped.windows(32).any(|w| w == dek()), "DEK visible in the blob");
    let again = b.wrap(ACME1, &dek(), AAD).unwrap();
    assert_ne!(wrapped[..12], again[..12], "nonce reused");
    assert_ne!(wrapped, again);
    assert_eq!(b.unwrap(ACME1, &wrapped, AAD).unwrap().as_slice(), dek());
    assert_eq!(b.unwrap(ACME1, &again, AAD).unwrap().as_slice(), dek());
    // Empty AAD and other lengths work too.
    let w = b.wrap(ACME1, b"x", b"").unwrap();
    assert_eq!(b.unwrap(ACME1, &w, b"").unwrap().as_slice(), b"x");
    // A fresh backend (new session, empty handle cache) unwraps the same blob.
    let tok = _tok;
    drop(b);
    let mut b2 = hsm().open(&tok).unwrap();
    assert_eq!(b2.unwrap(ACME1, &wrapped, AAD).unwrap().as_slice(), dek());
}

#[test]
fn unwrap_with_wrong_aad_fails() {
    let (_tok, mut b) = token();
    b.create_tenant_key(ACME1).unwrap();
    let wrapped = b.wrap(ACME1, &dek(), AAD).unwrap();
    for aad in [
        &b"strongroom/dek/v1|acme|patient-8|1"[..],
        b"",
        b"strongroom/dek/v1|acme|patient-7|2",
    ] {
        assert!(matches!(b.unwrap(ACME1, &wrapped, aad), Err(HsmError::UnwrapFailed)));
    }
    // The session is still usable after the failures.
    assert_eq!(b.unwrap(ACME1, &wrapped, AAD).unwrap().as_slice(), dek());
}

#[test]
fn unwrap_with_other_tenant_or_version_fails() {
    let (_tok, mut b) = token();
    for k in [ACME1, ACME2, GLOBEX1] {
        b.create_tenant_key(k).unwrap();
    }
    let wrapped = b.wrap(ACME1, &dek(), AAD).unwrap();
    assert!(matches!(b.unwrap(GLOBEX1, &wrapped, AAD), Err(HsmError::UnwrapFailed)));
    assert!(matches!(b.unwrap(ACME2, &wrapped, AAD), Err(HsmError::UnwrapFailed)));
    // Same label on another token is another key.
    let (_tok2, mut other) = token();
    other.create_tenant_key(ACME1).unwrap();
    assert!(matches!(
        other.unwrap(ACME1, &wrapped, AAD),
        Err(HsmError::UnwrapFailed)
    ));
    assert_eq!(b.unwrap(ACME1, &wrapped, AAD).unwrap().as_slice(), dek());
}

#[test]
fn unwrap_of_tampered_blob_fails() {
    let (_tok, mut b) = token();
    b.create_tenant_key(ACME1).unwrap();
    let wrapped = b.wrap(ACME1, &dek(), AAD).unwrap();
    // Flip one bit in the nonce, the ciphertext and the tag.
    for i in [0, 11, 12, 30, 43, 44, 59] {
        let mut t = wrapped.clone();
        t[i] ^= 0x01;
        assert!(
            matches!(b.unwrap(ACME1, &t, AAD), Err(HsmError::UnwrapFailed)),
            "byte {i}"
        );
    }
    // Truncated, extended, too short, empty.
    for t in [
        &wrapped[..wrapped.len() - 1],
        &wrapped[..28],
        &wrapped[..27],
        &wrapped[..5],
        &[][..],
    ] {
        assert!(
            matches!(b.unwrap(ACME1, t, AAD), Err(HsmError::UnwrapFailed)),
            "len {}",
            t.len()
        );
    }
    let mut longer = wrapped.clone();
    longer.push(0);
    assert!(matches!(b.unwrap(ACME1, &longer, AAD), Err(HsmError::UnwrapFailed)));
    assert_eq!(b.unwrap(ACME1, &wrapped, AAD).unwrap().as_slice(), dek());
}

#[test]
fn destroy_is_final_and_idempotent() {
    let (tok, mut b) = token();
    b.create_tenant_key(ACME1).unwrap();
    b.create_tenant_key(ACME2).unwrap();
    let wrapped = b.wrap(ACME1, &dek(), AAD).unwrap();
    let wrapped2 = b.wrap(ACME2, &dek(), AAD).unwrap();
    b.destroy_tenant_key(ACME1).unwrap();
    assert!(!b.tenant_key_exists(ACME1).unwrap());
    match b.unwrap(ACME1, &wrapped, AAD) {
        Err(HsmError::KeyNotFound(label)) => assert_eq!(label, "strongroom/tenant/acme/v1"),
        other => panic!("expected KeyNotFound, got {other:?}"),
    }
    assert!(matches!(b.wrap(ACME1, &dek(), AAD), Err(HsmError::KeyNotFound(_))));
    b.destroy_tenant_key(ACME1).unwrap();
    b.destroy_tenant_key(GLOBEX1).unwrap(); // never existed
                                            // Other keys are untouched.
    assert_eq!(b.unwrap(ACME2, &wrapped2, AAD).unwrap().as_slice(), dek());
    // Gone for a fresh session too.
    let mut b2 = hsm().open(&tok).unwrap();
    assert!(!b2.tenant_key_exists(ACME1).unwrap());
    // A new key under the same label is a different key: the old blob stays dead.
    b.create_tenant_key(ACME1).unwrap();
    assert!(matches!(b.unwrap(ACME1, &wrapped, AAD), Err(HsmError::UnwrapFailed)));
}

#[test]
fn destroy_by_another_session_invalidates_the_cache() {
    let (tok, mut b) = token();
    b.create_tenant_key(ACME1).unwrap();
    let wrapped = b.wrap(ACME1, &dek(), AAD).unwrap(); // handle now cached
    let mut b2 = hsm().open(&tok).unwrap();
    b2.destroy_tenant_key(ACME1).unwrap();
    assert!(matches!(b.unwrap(ACME1, &wrapped, AAD), Err(HsmError::KeyNotFound(_))));
    // Recreated elsewhere: the stale cached handle is replaced by the new object.
    b2.create_tenant_key(ACME1).unwrap();
    let w2 = b2.wrap(ACME1, &dek(), AAD).unwrap();
    assert_eq!(b.unwrap(ACME1, &w2, AAD).unwrap().as_slice(), dek());
}

#[test]
fn tenant_keys_are_sensitive_and_non_extractable() {
    let (_tok, mut b) = token();
    b.create_tenant_key(ACME1).unwrap();
    let a = b.tenant_key_attributes(ACME1).unwrap();
    assert!(
        a.token && a.private && a.sensitive && a.always_sensitive && a.local,
        "{a:?}"
    );
    assert!(!a.extractable && a.never_extractable, "{a:?}");
    assert!(a.destroyable, "{a:?}");
    assert!(!a.copyable && !a.modifiable, "{a:?}");
    assert!(!a.value_readable, "{a:?}");

    // Attack from a second session of the same (logged-in) application.
    let session = hsm().context().open_rw_session(cryptoki_slot(&_tok)).unwrap();
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(ACME1.label().into_bytes()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1);
    let h = found[0];
    let value = session.get_attributes(h, &[AttributeType::Value]).unwrap();
    assert!(value.is_empty(), "CKA_VALUE readable: {value:?}");
    assert!(session.update_attributes(h, &[Attribute::Extractable(true)]).is_err());
    assert!(session.update_attributes(h, &[Attribute::Sensitive(false)]).is_err());
    assert!(session
        .update_attributes(h, &[Attribute::Label(GLOBEX1.label().into_bytes())])
        .is_err());
    assert!(
        session.copy_object(h, &[Attribute::Token(false)]).is_err(),
        "copy of a non-copyable KEK"
    );
    assert!(session.copy_object(h, &[Attribute::Extractable(true)]).is_err());
}

fn cryptoki_slot(tok: &TestToken) -> cryptoki::slot::Slot {
    strongroom_hsm::pkcs11::find_token_slot(&hsm().context(), &tok.label).unwrap()
}

#[test]
fn signing_key_signs_and_is_stable() {
    let (tok, mut b) = token();
    let pk = b.signing_public_key().unwrap();
    assert_eq!(b.signing_public_key().unwrap(), pk);
    let vk = VerifyingKey::from_bytes(&pk).unwrap();
    let msg = b"strongroom.example/log\n42\nAAAA\n";
    let sig = b.sign(msg).unwrap();
    let sig = Signature::from_bytes(&sig);
    vk.verify(msg, &sig).unwrap();
    vk.verify_strict(msg, &sig).unwrap();
    assert!(vk.verify(b"another message", &sig).is_err());
    // Ed25519 is deterministic.
    assert_eq!(b.sign(msg).unwrap(), sig.to_bytes());

    let a = b.signing_key_attributes().unwrap();
    assert!(
        a.token && a.private && a.sensitive && !a.extractable && a.never_extractable,
        "{a:?}"
    );
    assert!(!a.copyable && !a.modifiable && !a.value_readable, "{a:?}");

    // Stable across re-open (new session, no cache) and usable from there.
    drop(b);
    let mut b2 = hsm().open(&tok).unwrap();
    assert_eq!(b2.signing_public_key().unwrap(), pk);
    let sig2 = b2.sign(b"second").unwrap();
    vk.verify(b"second", &Signature::from_bytes(&sig2)).unwrap();
    // sign() without a prior signing_public_key() call.
    let mut b3 = hsm().open(&tok).unwrap();
    let sig3 = b3.sign(b"third").unwrap();
    vk.verify(b"third", &Signature::from_bytes(&sig3)).unwrap();

    // Exactly one pair on the token.
    let session = hsm().context().open_ro_session(cryptoki_slot(&tok)).unwrap();
    let found = session
        .find_objects(&[Attribute::Label(SIGNING_KEY_LABEL.as_bytes().to_vec())])
        .unwrap();
    assert_eq!(found.len(), 2);
}

#[test]
fn signing_keys_differ_per_token() {
    let (_t1, mut a) = token();
    let (_t2, mut b) = token();
    assert_ne!(a.signing_public_key().unwrap(), b.signing_public_key().unwrap());
}

#[test]
fn backend_works_through_the_worker() {
    let hsm = hsm();
    let tok = hsm.new_token().unwrap();
    let cfg = tok.config();
    let worker: HsmWorker<dyn KeyBackend> = HsmWorker::spawn("hsm-test", move || {
        Ok(Box::new(Pkcs11Backend::open(&cfg)?) as Box<dyn KeyBackend>)
    })
    .unwrap();
    worker.call_blocking(|b| b.create_tenant_key(ACME1)).unwrap().unwrap();
    let wrapped = worker.call_blocking(|b| b.wrap(ACME1, &dek(), AAD)).unwrap().unwrap();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let w = worker.clone();
            let wrapped = wrapped.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let wrapped = wrapped.clone();
                    let plain = w
                        .call_blocking(move |b| b.unwrap(ACME1, &wrapped, AAD))
                        .unwrap()
                        .unwrap();
                    assert_eq!(plain.as_slice(), dek());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let pk = worker.call_blocking(|b| b.signing_public_key()).unwrap().unwrap();
    let sig = worker.call_blocking(|b| b.sign(b"via worker")).unwrap().unwrap();
    VerifyingKey::from_bytes(&pk)
        .unwrap()
        .verify(b"via worker", &Signature::from_bytes(&sig))
        .unwrap();
    worker.call_blocking(|b| b.ping()).unwrap().unwrap();

    // A failing open is reported by spawn.
    let bad = Pkcs11Config {
        module: softhsm_module_path(),
        token_label: "no-such-token".to_owned(),
        pin: SecretString::from("1234"),
    };
    let err = HsmWorker::<dyn KeyBackend>::spawn("hsm-bad", move || {
        Ok(Box::new(Pkcs11Backend::open(&bad)?) as Box<dyn KeyBackend>)
    });
    assert!(matches!(err, Err(HsmError::TokenNotFound(_))));
}

#[test]
fn open_errors_are_mapped() {
    let hsm = hsm();
    let tok = hsm.new_token().unwrap();
    let mut cfg = tok.config();
    cfg.pin = SecretString::from("wrong-pin");
    assert!(matches!(Pkcs11Backend::open(&cfg), Err(HsmError::Login(_))));
    cfg.token_label = "missing".to_owned();
    assert!(matches!(Pkcs11Backend::open(&cfg), Err(HsmError::TokenNotFound(l)) if l == "missing"));
    cfg.module = "/nonexistent/libpkcs11.so".into();
    let err = Pkcs11Backend::open(&cfg).unwrap_err();
    assert!(matches!(err, HsmError::Module { .. }), "{err:?}");
    // The right PIN still works (one failure does not lock the token).
    let mut b = Pkcs11Backend::open(&tok.config()).unwrap();
    b.ping().unwrap();
    // Nothing secret in error or config output.
    let shown = format!("{:?} {}", tok.config(), HsmError::Login("PinIncorrect".to_owned()));
    assert!(!shown.contains(&tok.pin), "{shown}");
}

#[test]
fn softhsm_helper_makes_a_token_for_other_processes() {
    let _ = hsm();
    let s = SoftHsm::new("helper-token").unwrap();
    assert_eq!(std::fs::read_to_string(s.pin_path()).unwrap(), s.pin());
    assert!(s.conf_path().exists());
    assert!(s.module_path().exists());
    let out = std::process::Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", s.conf_path())
        .arg("--show-slots")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("helper-token"));
    let dir = s.dir().to_path_buf();
    drop(s);
    assert!(!dir.exists());
}

// ---------------------------------------------------------------- TPM

const NV: u32 = 0x0150_0020;

fn tpm_cfg(t: &Swtpm, nv_index: u32) -> TpmConfig {
    TpmConfig {
        tcti: t.tcti(),
        nv_index,
    }
}

fn swtpm() -> Swtpm {
    let _ = hsm(); // see hsm(): environment set before native code runs in parallel
    Swtpm::start().unwrap()
}

/// Define an NV index by hand with the given attribute tweaks.
fn define_by_hand(
    t: &Swtpm,
    index: u32,
    tweak: impl FnOnce(tss_esapi::attributes::NvIndexAttributesBuilder) -> tss_esapi::attributes::NvIndexAttributesBuilder,
) {
    use tss_esapi::attributes::NvIndexAttributesBuilder;
    use tss_esapi::constants::NvIndexType;
    use tss_esapi::handles::NvIndexTpmHandle;
    use tss_esapi::interface_types::algorithm::HashingAlgorithm;
    use tss_esapi::interface_types::resource_handles::Provision;
    use tss_esapi::interface_types::session_handles::AuthSession;
    use tss_esapi::structures::NvPublicBuilder;

    let mut ctx = tss_esapi::Context::new(tss_esapi::TctiNameConf::from_str(&t.tcti()).unwrap()).unwrap();
    ctx.set_sessions((Some(AuthSession::Password), None, None));
    let attrs = tweak(
        NvIndexAttributesBuilder::new()
            .with_nv_index_type(NvIndexType::Counter)
            .with_owner_read(true)
            .with_owner_write(true)
            .with_auth_read(true)
            .with_auth_write(true)
            .with_no_da(true),
    )
    .build()
    .unwrap();
    let public = NvPublicBuilder::new()
        .with_nv_index(NvIndexTpmHandle::new(index).unwrap())
        .with_index_name_algorithm(HashingAlgorithm::Sha256)
        .with_index_attributes(attrs)
        .with_data_area_size(8)
        .build()
        .unwrap();
    ctx.nv_define_space(Provision::Owner, None, public).unwrap();
}

fn undefine_by_hand(t: &Swtpm, index: u32) {
    use tss_esapi::handles::{NvIndexTpmHandle, TpmHandle};
    use tss_esapi::interface_types::resource_handles::Provision;
    use tss_esapi::interface_types::session_handles::AuthSession;

    let mut ctx = tss_esapi::Context::new(tss_esapi::TctiNameConf::from_str(&t.tcti()).unwrap()).unwrap();
    let h = ctx
        .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::NvIndex(NvIndexTpmHandle::new(index).unwrap())))
        .unwrap();
    ctx.set_sessions((Some(AuthSession::Password), None, None));
    ctx.nv_undefine_space(Provision::Owner, h.into()).unwrap();
}

#[test]
fn counter_define_read_increment() {
    let t = swtpm();
    let mut c = TpmCounter::define(&tpm_cfg(&t, NV)).unwrap();
    assert_eq!(c.nv_index(), NV);
    // define increments once: a fresh TPM's first counter value is 1.
    assert_eq!(c.read().unwrap(), 1);
    assert_eq!(c.increment().unwrap(), 2);
    assert_eq!(c.increment().unwrap(), 3);
    assert_eq!(c.read().unwrap(), 3);
    c.ping().unwrap();
    // open sees the same counter.
    let mut o = TpmCounter::open(&tpm_cfg(&t, NV)).unwrap();
    assert_eq!(o.read().unwrap(), 3);
    assert_eq!(o.increment().unwrap(), 4);
    assert_eq!(c.read().unwrap(), 4);
}

#[test]
fn counter_survives_swtpm_restart() {
    let mut t = swtpm();
    let cfg = tpm_cfg(&t, NV);
    let mut c = TpmCounter::define(&cfg).unwrap();
    for _ in 0..9 {
        c.increment().unwrap();
    }
    assert_eq!(c.read().unwrap(), 10);
    drop(c);

    // Crash (SIGKILL) and restart on the same state dir: exact value, no ORDERLY jump.
    t.restart().unwrap();
    let mut c = TpmCounter::open(&cfg).unwrap();
    assert_eq!(c.read().unwrap(), 10);
    assert_eq!(c.increment().unwrap(), 11);
    drop(c);

    // Graceful stop, then a new swtpm process on the same dir and port.
    let dir = t.state_dir().to_path_buf();
    let port = t.port();
    t.stop().unwrap();
    assert!(!t.is_running());
    let mut t2 = Swtpm::start_in(&dir, port).unwrap();
    let mut c = TpmCounter::open(&cfg).unwrap();
    assert_eq!(c.read().unwrap(), 11);
    c.ping().unwrap();
    drop(c);
    t2.kill();
    drop(t2);
    assert!(dir.exists(), "start_in must not remove a directory it does not own");
    drop(t);
    assert!(!dir.exists());
}

#[test]
fn open_of_missing_index_is_counter_missing() {
    let t = swtpm();
    assert!(matches!(TpmCounter::open(&tpm_cfg(&t, NV)), Err(HsmError::CounterMissing(i)) if i == NV));
    // Removing the index under an open counter is reported the same way.
    let mut c = TpmCounter::define(&tpm_cfg(&t, NV)).unwrap();
    undefine_by_hand(&t, NV);
    assert!(matches!(c.read(), Err(HsmError::CounterMissing(i)) if i == NV));
    assert!(matches!(c.increment(), Err(HsmError::CounterMissing(_))));
    assert!(matches!(c.ping(), Err(HsmError::CounterMissing(_))));
}

#[test]
fn define_twice_fails() {
    let t = swtpm();
    let cfg = tpm_cfg(&t, NV);
    let mut c = TpmCounter::define(&cfg).unwrap();
    c.increment().unwrap();
    assert!(matches!(TpmCounter::define(&cfg), Err(HsmError::CounterExists(i)) if i == NV));
    assert_eq!(c.read().unwrap(), 2, "a failed define must not touch the counter");
    // Another index on the same TPM is fine, and starts above every counter so far.
    let mut d = TpmCounter::define(&tpm_cfg(&t, NV + 1)).unwrap();
    assert!(d.read().unwrap() >= 1);
}

#[test]
fn redefined_counter_does_not_go_back() {
    let t = swtpm();
    let cfg = tpm_cfg(&t, NV);
    let mut c = TpmCounter::define(&cfg).unwrap();
    for _ in 0..4 {
        c.increment().unwrap();
    }
    assert_eq!(c.read().unwrap(), 5);
    drop(c);
    undefine_by_hand(&t, NV);
    let mut c = TpmCounter::define(&cfg).unwrap();
    let v = c.read().unwrap();
    assert!(v > 5, "undefine + define rolled the counter back to {v}");
}

#[test]
fn foreign_indexes_are_counter_replaced() {
    let t = swtpm();
    // ORDERLY counter.
    define_by_hand(&t, NV, |b| b.with_orderly(true));
    assert!(matches!(TpmCounter::open(&tpm_cfg(&t, NV)), Err(HsmError::CounterReplaced(i)) if i == NV));
    // Ordinary (non-counter) index.
    define_by_hand(&t, NV + 1, |b| {
        b.with_nv_index_type(tss_esapi::constants::NvIndexType::Ordinary)
    });
    assert!(matches!(
        TpmCounter::open(&tpm_cfg(&t, NV + 1)),
        Err(HsmError::CounterReplaced(_))
    ));
    // A counter with other access rules (no auth read/write, DA protected).
    define_by_hand(&t, NV + 2, |b| {
        b.with_auth_read(false).with_auth_write(false).with_no_da(false)
    });
    assert!(matches!(
        TpmCounter::open(&tpm_cfg(&t, NV + 2)),
        Err(HsmError::CounterReplaced(_))
    ));
    // The exact attributes, defined by hand but never incremented: accepted by open, and
    // read says why it cannot answer.
    define_by_hand(&t, NV + 3, |b| b);
    let mut c = TpmCounter::open(&tpm_cfg(&t, NV + 3)).unwrap();
    match c.read() {
        Err(HsmError::Tpm(msg)) => assert!(msg.contains("never incremented"), "{msg}"),
        other => panic!("expected an uninitialised-counter error, got {other:?}"),
    }
    assert!(c.increment().unwrap() >= 1);
}

#[test]
fn counter_works_through_the_worker() {
    let t = swtpm();
    let cfg = tpm_cfg(&t, NV);
    TpmCounter::define(&cfg).unwrap();
    let worker: HsmWorker<dyn MonotonicCounter> = HsmWorker::spawn("tpm-test", move || {
        Ok(Box::new(TpmCounter::open(&cfg)?) as Box<dyn MonotonicCounter>)
    })
    .unwrap();
    assert_eq!(worker.call_blocking(|c| c.read()).unwrap().unwrap(), 1);
    assert_eq!(worker.call_blocking(|c| c.increment()).unwrap().unwrap(), 2);
}

#[test]
fn tpm_connection_errors() {
    let _ = hsm();
    let cfg = TpmConfig {
        tcti: "bogus:xyz".to_owned(),
        nv_index: NV,
    };
    assert!(matches!(TpmCounter::open(&cfg), Err(HsmError::Tpm(_))));
    let t = swtpm();
    let cfg = TpmConfig {
        tcti: t.tcti(),
        nv_index: 0x8000_0000,
    };
    assert!(matches!(TpmCounter::open(&cfg), Err(HsmError::Tpm(_))));
}
