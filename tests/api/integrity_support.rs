//! Helpers for the tamper-evidence tests (`integrity.rs`): raw LMDB surgery on the
//! audit log that also works on corrupt events, a chain forger, a `serve` process run
//! outside the harness (for the injected crash, which exits 86), the TPM counter read
//! directly, the alarm and health assertions, and polling.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strongroom::audit::{chain_hash, hash_hex, AuditEvent, ChainHash, EVENT_PREFIX, GENESIS_PREV};
use strongroom_hsm::{MonotonicCounter, TpmConfig, TpmCounter};

use crate::harness::{TestServer, BIN};
use crate::raw_store::RawStore;

/// How long detection by a running server may take (verify interval 1 s).
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Raw LMDB
// ---------------------------------------------------------------------------------------

pub use crate::raw_store::Op;

/// Raw access to the data directory (the shared [`RawStore`], read-write) plus the
/// audit-log views the tamper-evidence tests read; tolerant of corrupt events.
pub struct Raw(RawStore);

impl std::ops::Deref for Raw {
    type Target = RawStore;
    fn deref(&self) -> &RawStore {
        &self.0
    }
}

impl Raw {
    /// Open `data_dir` read-write.
    pub fn open(data_dir: &Path) -> Self {
        Self(RawStore::open(data_dir))
    }

    /// Every audit event as (seq from its key, stored bytes).
    pub fn events(&self) -> Vec<(u64, Vec<u8>)> {
        self.entries("audit")
            .into_iter()
            .map(|(k, v)| (u64::from_be_bytes(k.as_slice().try_into().expect("8-byte key")), v))
            .collect()
    }

    /// Stored checkpoints as (TPM counter, note), ascending.
    pub fn checkpoints(&self) -> Vec<(u64, String)> {
        self.entries("checkpoints")
            .into_iter()
            .map(|(k, v)| {
                (
                    u64::from_be_bytes(k.as_slice().try_into().expect("8-byte key")),
                    String::from_utf8(v).expect("UTF-8 note"),
                )
            })
            .collect()
    }

    /// The newest stored checkpoint: (counter, tree size).
    pub fn latest_checkpoint(&self) -> (u64, u64) {
        let (counter, note) = self.checkpoints().pop().expect("a stored checkpoint");
        (counter, note_size(&note))
    }
}

/// The `meta/audit_head` write op for (next seq, last hash).
pub fn head_op(next: u64, last: &ChainHash) -> Op {
    let mut v = next.to_be_bytes().to_vec();
    v.extend_from_slice(last);
    ("meta", b"audit_head".to_vec(), Some(v))
}

/// The tree size line of a checkpoint note.
pub fn note_size(note: &str) -> u64 {
    note.lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("checkpoint note without a tree size: {note}"))
}

/// Parse canonical event bytes (panics on corrupt ones).
pub fn event(bytes: &[u8]) -> AuditEvent {
    AuditEvent::from_bytes(bytes).unwrap_or_else(|| panic!("not a canonical event: {}", String::from_utf8_lossy(bytes)))
}

/// The event JSON of canonical bytes (tolerant: `Null` if corrupt).
pub fn event_json(bytes: &[u8]) -> Value {
    bytes
        .strip_prefix(EVENT_PREFIX.as_bytes())
        .and_then(|j| serde_json::from_slice(j).ok())
        .unwrap_or(Value::Null)
}

/// Events (tolerantly parsed) with this action.
pub fn events_with_action(events: &[(u64, Vec<u8>)], action: &str) -> Vec<Value> {
    events
        .iter()
        .map(|(_, b)| event_json(b))
        .filter(|j| j["action"] == action)
        .collect()
}

/// The event bytes with one character of `actor` changed (still valid UTF-8 and still
/// canonical JSON): exactly one byte differs.
pub fn with_one_char_changed(bytes: &[u8]) -> Vec<u8> {
    let mut e = event(bytes);
    let last = e.actor.pop().expect("non-empty actor");
    e.actor.push(if last == 'x' { 'y' } else { 'x' });
    let out = e.to_bytes();
    assert_eq!(out.len(), bytes.len());
    assert_eq!(
        out.iter().zip(bytes).filter(|(a, b)| a != b).count(),
        1,
        "exactly one byte changed"
    );
    out
}

/// What an attacker without the signing key can do: replace event `seq` by `replacement`
/// and recompute every later `prev` link, the chain hashes and `meta/audit_head`, so the
/// chain alone is consistent again. Server stopped.
pub fn forge_chain(data_dir: &Path, seq: u64, replacement: AuditEvent) {
    let raw = Raw::open(data_dir);
    let events = raw.events();
    let mut prev = if seq == 0 {
        None
    } else {
        Some(chain_hash(&events[usize::try_from(seq - 1).expect("usize")].1))
    };
    let mut ops = Vec::new();
    for (s, bytes) in events.iter().filter(|(s, _)| *s >= seq) {
        let mut e = if *s == seq { replacement.clone() } else { event(bytes) };
        e.prev = prev.map_or_else(|| GENESIS_PREV.to_owned(), |h| hash_hex(&h));
        let new = e.to_bytes();
        prev = Some(chain_hash(&new));
        ops.push(("audit", s.to_be_bytes().to_vec(), Some(new)));
    }
    let next = events.len() as u64;
    ops.push(head_op(next, &prev.expect("at least one event")));
    raw.write(&ops);
}

/// Whether `text` names `seq N` (not a longer number) for one of `seqs`.
pub fn names_seq(text: &str, seqs: &[u64]) -> bool {
    seqs.iter().any(|n| {
        let needle = format!("seq {n}");
        text.match_indices(&needle).any(|(i, _)| {
            !text[i + needle.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
    })
}

// ---------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------

/// Copy a directory tree (the server must be stopped).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Replace `dir` by a copy of `backup` (the server must be stopped).
pub fn restore_dir(backup: &Path, dir: &Path) {
    std::fs::remove_dir_all(dir).expect("remove data dir");
    copy_dir(backup, dir);
}

// ---------------------------------------------------------------------------------------
// TPM
// ---------------------------------------------------------------------------------------

/// The NV counter's value, read from the swtpm directly (server stopped: swtpm serves
/// one client at a time).
pub fn tpm_counter(s: &TestServer) -> u64 {
    let text = std::fs::read_to_string(s.dir().join("strongroom.toml")).expect("config");
    let config: toml::Value = toml::from_str(&text).expect("config TOML");
    let tcti = config["tpm"]["tcti"].as_str().expect("tpm.tcti").to_owned();
    let nv_index = u32::try_from(config["tpm"]["nv_index"].as_integer().expect("tpm.nv_index")).expect("u32");
    let mut counter = TpmCounter::open(&TpmConfig { tcti, nv_index }).expect("open the TPM counter");
    counter.read().expect("read the TPM counter")
}

// ---------------------------------------------------------------------------------------
// A `serve` process outside the harness
// ---------------------------------------------------------------------------------------

/// `strongroom serve` on a [`TestServer`]'s config, token and TPM, run by the test itself
/// so that an abnormal exit (the injected crash, code 86) can be observed. The harness's
/// own server must be stopped. Its stderr goes to the harness's server log.
pub struct ServeProc {
    child: Option<Child>,
    _lines: mpsc::Receiver<String>,
    base: String,
    client: reqwest::Client,
}

impl ServeProc {
    /// Start `serve` with extra environment variables and wait until it listens.
    pub fn spawn(s: &TestServer, env: &[(&str, &str)]) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(s.dir().join("server.log"))
            .expect("server log");
        let mut cmd = Command::new(BIN);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("STRONGROOM_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("serve")
            .arg("--config")
            .arg(s.dir().join("strongroom.toml"))
            .env("SOFTHSM2_CONF", s.hsm_dir().join("softhsm2.conf"))
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("spawn strongroom serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let https: SocketAddr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let addr = line
                        .trim()
                        .strip_prefix("strongroom: serving https://")
                        .and_then(|r| r.split(' ').next())
                        .and_then(|a| a.parse().ok());
                    if let Some(a) = addr {
                        break a;
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("serve did not start ({e:?}); stderr:\n{}", s.server_log());
                }
            }
        };
        let ca = std::fs::read(s.dir().join("ca.pem")).expect("CA");
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
            .resolve("localhost", https)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        Self {
            child: Some(child),
            _lines: rx,
            base: format!("https://localhost:{}", https.port()),
            client,
        }
    }

    /// POST JSON with a bearer token: (status, body), or the transport error (the
    /// process may exit before it answers).
    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Result<(u16, Value), String> {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// SIGTERM (the process decides its exit code).
    pub fn sigterm(&mut self) {
        let pid = self.child.as_ref().expect("running").id();
        // Drop keep-alive connections so the graceful stop does not wait for them.
        self.client = reqwest::Client::new();
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -TERM {pid}");
    }

    /// Wait for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "serve did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServeProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Polling and assertions
// ---------------------------------------------------------------------------------------

/// Poll `f` every 100 ms until it returns `Some`, or panic after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /metrics` on the metrics listener (plain HTTP).
pub async fn scrape_metrics(s: &TestServer) -> String {
    let r = reqwest::get(s.metrics_url()).await.expect("scrape metrics");
    assert_eq!(r.status().as_u16(), 200);
    r.text().await.expect("metrics text")
}

/// The value of `strongroom_integrity_alarm` in a scrape.
pub fn alarm_gauge(metrics: &str) -> Option<i64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("strongroom_integrity_alarm "))
        .and_then(|v| v.trim().parse().ok())
}

/// `GET /v1/admin/audit/verify` with the operator token (asserts 200).
pub async fn verify(s: &TestServer) -> Value {
    let r = s.get("/v1/admin/audit/verify", Some(s.operator())).await;
    r.expect(200);
    r.json
}

/// Everything healthy: the chain verifies against a TPM-confirmed checkpoint, no alarm
/// anywhere, data endpoints serve. `data_token` holds `records:read`.
pub async fn assert_healthy(s: &TestServer, data_token: &str) {
    let v = verify(s).await;
    assert_eq!(v["chain_verified"], true, "healthy server: {v}");
    assert_eq!(v["failure"], Value::Null, "{v}");
    assert!(v["tpm_counter"].is_u64(), "{v}");
    assert_eq!(v["tpm_counter"], v["checkpoint"]["tpm_counter"], "{v}");
    assert_eq!(v["checkpoint"]["tpm_nv_index"], "0x01500016", "{v}");
    let size = v["checkpoint"]["tree_size"].as_u64().expect("checkpoint tree_size");
    assert_eq!(v["sealed_through_seq"], size - 1, "{v}");
    // `head` is the chain hash of the event at `verified_through_seq`.
    let through = v["verified_through_seq"].as_u64().expect("verified_through_seq");
    assert!(through + 1 >= size, "the verified prefix covers the checkpoint: {v}");
    let events = Raw::open(s.data_dir()).events();
    let at = &events[usize::try_from(through).expect("usize")];
    assert_eq!(at.0, through);
    assert_eq!(v["head"], hash_hex(&chain_hash(&at.1)), "{v}");
    let cp_head = &events[usize::try_from(size - 1).expect("usize")].1;
    assert_eq!(v["checkpoint"]["chain"], hash_hex(&chain_hash(cp_head)), "{v}");
    let r = s.get("/v1/admin/audit?limit=1", Some(s.operator())).await;
    r.expect(200);
    assert_eq!(r.json["chain_verified"], true, "{}", r.text);
    s.get("/v1/entities/probe/records", Some(data_token)).await.expect(200);
    s.get("/readyz", None).await.expect(200);
    assert_eq!(alarm_gauge(&scrape_metrics(s).await), Some(0));
}

/// The alarm is up for the reason `kind` (`chain_verify_failed` or `rollback_detected`):
/// the audit endpoints say why, data endpoints answer 503 `integrity_alarm`, `/readyz`
/// is 503 and names the reason, the metric is 1, and the detection is in the audit log.
/// `reason_has` must occur in the failure text. Returns `/verify`'s answer.
pub async fn assert_alarm(s: &TestServer, data_token: &str, kind: &str, reason_has: &str) -> Value {
    let v = verify(s).await;
    assert_eq!(v["chain_verified"], false, "{v}");
    let failure = v["failure"].as_str().unwrap_or_default().to_owned();
    assert!(
        failure.contains(reason_has),
        "verify's failure should mention {reason_has:?}: {v}"
    );
    let r = s.get("/v1/admin/audit", Some(s.operator())).await;
    r.expect(200);
    assert_eq!(r.json["chain_verified"], false, "{}", r.text);

    // Data endpoints (tenant and operator) refuse service; audit reads stay open.
    s.get("/v1/entities/probe/records", Some(data_token))
        .await
        .expect_error(503, "integrity_alarm");
    s.post(
        "/v1/entities/probe/records",
        Some(data_token),
        &json!({"records": [{"data": {"x": 1}}]}),
    )
    .await
    .expect_error(503, "integrity_alarm");
    s.post("/v1/admin/tenants", Some(s.operator()), &json!({"tenant_id": "late"}))
        .await
        .expect_error(503, "integrity_alarm");
    s.get("/v1/admin/audit/checkpoint", Some(s.operator()))
        .await
        .expect(200);

    let ready = s.get("/readyz", None).await;
    ready.expect(503);
    assert_eq!(ready.json["checks"]["integrity"], false, "{}", ready.text);
    let why = ready.json["integrity_alarm"].as_str().unwrap_or_default();
    assert!(
        why.contains(reason_has),
        "/readyz should name the alarm: {}",
        ready.text
    );
    if kind == "rollback_detected" {
        assert!(why.contains("rollback"), "/readyz should say rollback: {}", ready.text);
    }

    assert_eq!(
        alarm_gauge(&scrape_metrics(s).await),
        Some(1),
        "strongroom_integrity_alarm"
    );

    let events = Raw::open(s.data_dir()).events();
    let found = events_with_action(&events, kind);
    assert_eq!(found.len(), 1, "one {kind} event per process: {found:#?}");
    assert_eq!(found[0]["outcome"], "failed");
    assert_eq!(found[0]["actor"], "system:integrity");
    assert!(
        found[0]["details"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(reason_has)),
        "{kind} event reason: {}",
        found[0]
    );
    v
}

/// Where the test's copies of data directories go.
pub fn backup_path(s: &TestServer, name: &str) -> PathBuf {
    s.dir().join(format!("backup-{name}"))
}
