//! A real `strongroom` appliance per test: its own temp dir, SoftHSM token, swtpm, TLS
//! CA + leaf certificate, config, `init`, then `serve` as a child process, spoken to over
//! HTTPS with a client that trusts only the test CA.
//!
//! On a failing test (panic while a [`TestServer`] is alive) the server's stderr is printed.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::RngCore;
use serde_json::{json, Value};
use strongroom::audit::{chain_hash, hash_hex, AuditEvent, GENESIS_PREV};
use strongroom_hsm::testing::{SoftHsm, Swtpm};
use tempfile::TempDir;

pub use crate::raw_store::RawStore;

/// The server binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_strongroom");
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP answer, read whole.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Body as JSON (`Null` when empty or not JSON).
    pub json: Value,
    /// Body as text.
    pub text: String,
    /// The `x-request-id` header.
    pub request_id: Option<String>,
}

impl Resp {
    /// Assert the status, printing the body otherwise.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        self
    }

    /// Assert a documented error answer: status, `{"error":{"code","message","request_id"}}`
    /// with a non-empty message and the request id of the `x-request-id` header.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Self {
        self.expect(status);
        let err = &self.json["error"];
        assert!(err.is_object(), "error body missing: {}", self.text);
        assert_eq!(err["code"], code, "wrong error code: {}", self.text);
        let message = err["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "empty error message: {}", self.text);
        let rid = err["request_id"].as_str().unwrap_or_default();
        assert!(!rid.is_empty(), "empty request_id: {}", self.text);
        assert_eq!(
            Some(rid),
            self.request_id.as_deref(),
            "body request_id != x-request-id header"
        );
        assert_eq!(
            err.as_object().map(|o| o.len()),
            Some(3),
            "error object has exactly code, message, request_id: {}",
            self.text
        );
        self
    }

    /// The request id (panics when the header is missing).
    #[track_caller]
    pub fn rid(&self) -> String {
        self.request_id.clone().expect("x-request-id header")
    }
}

/// A decoded audit event with its canonical bytes.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Canonical bytes as stored.
    pub bytes: Vec<u8>,
    /// Parsed.
    pub event: AuditEvent,
    /// The event as a JSON value (for `details`, `action`...).
    pub json: Value,
}

impl StoredEvent {
    /// `action` as text.
    pub fn action(&self) -> &str {
        self.json["action"].as_str().unwrap_or_default()
    }
    /// `outcome` as text.
    pub fn outcome(&self) -> &str {
        self.json["outcome"].as_str().unwrap_or_default()
    }
}

/// One running (or stopped) appliance and everything it needs.
pub struct TestServer {
    // Field order = drop order: the child goes first (see Drop), then the TPM, the
    // token, and the directory.
    child: Option<Child>,
    stdout_lines: Option<mpsc::Receiver<String>>,
    base: String,
    https: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    client: reqwest::Client,
    ca_pem: Vec<u8>,
    operator_token: String,
    config_path: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    extra_env: Vec<(String, String)>,
    tpm: Swtpm,
    hsm: SoftHsm,
    dir: TempDir,
}

fn tls_files(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "strongroom test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");

    let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("leaf params");
    leaf.distinguished_name.push(DnType::CommonName, "localhost");
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).expect("leaf cert");

    let cert_path = dir.join("tls-cert.pem");
    let key_path = dir.join("tls-key.pem");
    std::fs::write(&cert_path, leaf_cert.pem()).expect("write cert");
    std::fs::write(&key_path, leaf_key.serialize_pem()).expect("write key");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write CA");
    (cert_path, key_path, ca_cert.pem().into_bytes())
}

fn toml_str(p: &Path) -> String {
    // Paths of temp dirs have no quotes or backslashes; JSON string escaping is valid TOML.
    serde_json::to_string(&p.display().to_string()).expect("path string")
}

/// Random lowercase hex of `n` bytes.
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn clear_strongroom_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("STRONGROOM_") {
            cmd.env_remove(k);
        }
    }
}

impl TestServer {
    /// Provision and start a fresh appliance.
    pub fn start() -> Self {
        Self::start_with_env(&[])
    }

    /// Like [`TestServer::start`], with extra environment variables for `serve`.
    pub fn start_with_env(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("strongroom-api-test-")
            .tempdir()
            .expect("temp dir");
        let hsm = SoftHsm::new("strongroom").expect("SoftHSM token (is softhsm2 installed?)");
        let tpm = Swtpm::start().expect("swtpm (is swtpm installed?)");
        let (cert, key, ca_pem) = tls_files(dir.path());
        let data_dir = dir.path().join("data");
        let token_file = dir.path().join("bootstrap-token");
        let config = format!(
            "data_dir = {data}\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\ntls_cert = {cert}\n\
             tls_key = {key}\nbootstrap_token_file = {token}\n\n[hsm]\nbackend = \"pkcs11\"\nmodule = {module}\n\
             token_label = \"{label}\"\npin_file = {pin}\n\n[tpm]\ntcti = \"{tcti}\"\nnv_index = 0x01500016\n",
            data = toml_str(&data_dir),
            cert = toml_str(&cert),
            key = toml_str(&key),
            token = toml_str(&token_file),
            module = toml_str(hsm.module_path()),
            label = hsm.token_label(),
            pin = toml_str(hsm.pin_path()),
            tcti = tpm.tcti(),
        );
        let config_path = dir.path().join("strongroom.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log_path = dir.path().join("server.log");

        let mut server = Self {
            child: None,
            stdout_lines: None,
            base: String::new(),
            https: None,
            metrics: None,
            client: reqwest::Client::new(),
            ca_pem,
            operator_token: String::new(),
            config_path,
            data_dir,
            log_path,
            extra_env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            tpm,
            hsm,
            dir,
        };
        server.init();
        server.operator_token = std::fs::read_to_string(&token_file)
            .expect("bootstrap token file")
            .trim()
            .to_owned();
        assert!(!server.operator_token.is_empty(), "empty bootstrap token");
        server.spawn_serve();
        server
    }

    fn command(&self, verb: &str) -> Command {
        let mut cmd = Command::new(BIN);
        clear_strongroom_env(&mut cmd);
        cmd.arg(verb)
            .arg("--config")
            .arg(&self.config_path)
            .env("SOFTHSM2_CONF", self.hsm.conf_path())
            .env("NO_COLOR", "1");
        cmd
    }

    fn init(&self) {
        let out = self
            .command("init")
            .stdin(Stdio::null())
            .output()
            .expect("run strongroom init");
        assert!(
            out.status.success(),
            "strongroom init failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn spawn_serve(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("server log file");
        let mut cmd = self.command("serve");
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn strongroom serve");
        let stdout = child.stdout.take().expect("child stdout");
        self.child = Some(child);
        let (tx, rx) = mpsc::channel();
        // Keep draining stdout for the child's whole life so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let (https, metrics) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addrs) = parse_ready_line(&line) {
                        break addrs;
                    }
                }
                Err(e) => {
                    let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                    panic!(
                        "strongroom serve did not report its addresses ({e:?}; exit status {status:?}); stderr:\n{}",
                        self.server_log()
                    );
                }
            }
        };
        self.stdout_lines = Some(rx);
        self.https = Some(https);
        self.metrics = Some(metrics);
        self.base = format!("https://localhost:{}", https.port());
        self.client = self.new_client(https);
    }

    fn new_client(&self, https: SocketAddr) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&self.ca_pem).expect("CA PEM");
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            // The certificate names `localhost`; pin it to the IPv4 listener.
            .resolve("localhost", https)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("reqwest client")
    }

    /// The server's stderr so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The HTTPS base URL, `https://localhost:<port>`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The Prometheus endpoint, `http://<metrics_listen>/metrics`.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics.expect("server is running"))
    }

    /// The client (trusts the test CA only).
    pub fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// The bootstrap operator token.
    pub fn operator(&self) -> &str {
        &self.operator_token
    }

    /// The LMDB data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The test's temp dir (config, TLS files, bootstrap token, server log, data dir).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The SoftHSM token directory.
    pub fn hsm_dir(&self) -> &Path {
        self.hsm.dir()
    }

    /// The swtpm state directory.
    pub fn tpm_dir(&self) -> &Path {
        self.tpm.state_dir()
    }

    /// SIGTERM the server, wait for it and assert a clean exit (status 0).
    pub fn stop(&mut self) {
        let status = self.terminate();
        assert!(
            status.success(),
            "serve exited with {status} after SIGTERM; stderr:\n{}",
            self.server_log()
        );
    }

    fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is not running");
        // Drop pooled keep-alive connections so the graceful shutdown has nothing to wait for.
        self.client = reqwest::Client::new();
        let kill = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -TERM failed");
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for serve") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "serve did not stop within {STOP_TIMEOUT:?} of SIGTERM; stderr:\n{}",
                    self.server_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.stdout_lines = None;
        self.https = None;
        status
    }

    /// Stop (asserting exit 0) and serve again on the same data dir, token and TPM.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn_serve();
    }

    /// Set (or replace) an environment variable for the next `serve` (e.g. a config
    /// override `STRONGROOM_AUDIT__CHECKPOINT_INTERVAL_SECS`).
    #[allow(dead_code)] // used by tests from time to time; keep it available
    pub fn set_serve_env(&mut self, key: &str, value: &str) {
        self.extra_env.retain(|(k, _)| k != key);
        self.extra_env.push((key.to_owned(), value.to_owned()));
    }

    /// Serve again after [`TestServer::stop`].
    pub fn start_again(&mut self) {
        self.spawn_serve();
    }

    fn url(&self, path: &str) -> String {
        assert!(!self.base.is_empty() && self.https.is_some(), "server is not running");
        format!("{}{path}", self.base)
    }

    /// Send a request and read the whole answer.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("request failed: {e:?}; stderr:\n{}", self.server_log()));
        read_resp(resp).await
    }

    fn with_token(req: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// GET.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.send(Self::with_token(self.client.get(self.url(path)), token))
            .await
    }

    /// POST a JSON body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        self.send(Self::with_token(self.client.post(self.url(path)).json(body), token))
            .await
    }

    /// POST raw bytes as `application/json`.
    pub async fn post_raw(&self, path: &str, token: Option<&str>, body: impl Into<reqwest::Body>) -> Resp {
        let req = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        self.send(Self::with_token(req, token)).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str, token: Option<&str>) -> Resp {
        self.send(Self::with_token(self.client.delete(self.url(path)), token))
            .await
    }

    /// Create a tenant with the operator token (asserts 201).
    pub async fn create_tenant(&self, id: &str) {
        let r = self
            .post("/v1/admin/tenants", Some(self.operator()), &json!({ "tenant_id": id }))
            .await;
        r.expect(201);
        assert_eq!(r.json["tenant_id"], id);
    }

    /// `POST /v1/admin/tokens` with the operator token, for a tenant token; returns
    /// (token, token_id). Asserts 201.
    pub async fn tenant_token_with_id(&self, tenant: &str, perms: &[&str]) -> (String, String) {
        let body = json!({ "actor": format!("user:{}", random_hex(4)), "tenant_id": tenant, "permissions": perms });
        let r = self.post("/v1/admin/tokens", Some(self.operator()), &body).await;
        r.expect(201);
        let token = r.json["token"].as_str().expect("token").to_owned();
        let id = r.json["token_id"].as_str().expect("token_id").to_owned();
        (token, id)
    }

    /// A tenant token with `perms` (asserts 201).
    pub async fn tenant_token(&self, tenant: &str, perms: &[&str]) -> String {
        self.tenant_token_with_id(tenant, perms).await.0
    }

    /// Write a batch of records (asserts 201) and return the ids.
    pub async fn write_records(&self, token: &str, entity: &str, records: Value) -> Vec<String> {
        let r = self
            .post(
                &format!("/v1/entities/{entity}/records"),
                Some(token),
                &json!({ "records": records }),
            )
            .await;
        r.expect(201);
        r.json["ids"]
            .as_array()
            .expect("ids array")
            .iter()
            .map(|v| v.as_str().expect("id string").to_owned())
            .collect()
    }

    /// Walk every page of a listing (`query` without `cursor`) and return all records.
    pub async fn list_all(&self, token: &str, entity: &str, query: &str, limit: usize) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let mut path = format!("/v1/entities/{entity}/records?limit={limit}");
            if !query.is_empty() {
                path.push('&');
                path.push_str(query);
            }
            if let Some(c) = &cursor {
                path.push_str("&cursor=");
                path.push_str(c);
            }
            let r = self.get(&path, Some(token)).await;
            r.expect(200);
            let page = r.json["records"].as_array().expect("records array");
            assert!(
                page.len() <= limit,
                "page of {} records exceeds limit {limit}",
                page.len()
            );
            out.extend(page.iter().cloned());
            match &r.json["next_cursor"] {
                Value::Null => return out,
                Value::String(c) => {
                    assert!(!page.is_empty(), "a non-final page must not be empty");
                    cursor = Some(c.clone());
                }
                other => panic!("next_cursor must be a string or null, got {other}"),
            }
        }
        panic!("listing did not end");
    }

    /// Every audit event, read from LMDB read-only (works while the server runs).
    pub fn audit_events(&self) -> Vec<StoredEvent> {
        read_audit_events(&self.data_dir)
    }

    /// The audit log, with the whole chain verified (see [`verify_chain`]).
    pub fn verified_audit_log(&self) -> Vec<StoredEvent> {
        verify_chain(&self.data_dir)
    }

    /// The events recorded for one request id.
    pub fn events_for(&self, request_id: &str) -> Vec<StoredEvent> {
        self.audit_events()
            .into_iter()
            .filter(|e| e.event.request_id == request_id)
            .collect()
    }

    /// Assert exactly one event for the request, with this action and outcome; return it.
    #[track_caller]
    pub fn expect_event(&self, resp: &Resp, action: &str, outcome: &str) -> StoredEvent {
        let rid = resp.rid();
        let events = self.events_for(&rid);
        assert_eq!(
            events.len(),
            1,
            "expected exactly one audit event for {rid}, got {events:#?}"
        );
        let e = events.into_iter().next().expect("one event");
        assert_eq!(
            e.action(),
            action,
            "action of {rid}: {}",
            String::from_utf8_lossy(&e.bytes)
        );
        assert_eq!(
            e.outcome(),
            outcome,
            "outcome of {rid}: {}",
            String::from_utf8_lossy(&e.bytes)
        );
        e
    }
}

fn parse_ready_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.trim().strip_prefix("strongroom: serving https://")?;
    let (https, rest) = rest.split_once(' ')?;
    let metrics = rest.strip_prefix("metrics http://")?.strip_suffix("/metrics")?;
    Some((https.parse().ok()?, metrics.parse().ok()?))
}

async fn read_resp(resp: reqwest::Response) -> Resp {
    let status = resp.status().as_u16();
    let request_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = resp.text().await.expect("read response body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        json,
        text,
        request_id,
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(
                err,
                "---- strongroom server stderr ({}) ----\n{}\n---- end of server stderr ----",
                self.dir.path().display(),
                self.server_log()
            );
        }
    }
}

/// Read every audit event (checking each one's bytes round-trip through
/// `AuditEvent::from_bytes`) and the stored chain head, in one snapshot.
pub fn read_audit_log(data_dir: &Path) -> (Vec<StoredEvent>, Vec<u8>) {
    let (entries, head) = RawStore::open_read_only(data_dir).entries_and_get("audit", "meta", b"audit_head");
    let mut out = Vec::new();
    for (key, value) in entries {
        let event = AuditEvent::from_bytes(&value).unwrap_or_else(|| {
            panic!(
                "audit event does not parse canonically: {}",
                String::from_utf8_lossy(&value)
            )
        });
        assert_eq!(key, event.seq.to_be_bytes(), "audit key is the big-endian seq");
        let json: Value = serde_json::from_slice(&value[strongroom::audit::EVENT_PREFIX.len()..]).expect("event JSON");
        out.push(StoredEvent {
            bytes: value,
            event,
            json,
        });
    }
    (out, head.expect("audit head"))
}

/// Every audit event (see [`read_audit_log`]).
pub fn read_audit_events(data_dir: &Path) -> Vec<StoredEvent> {
    read_audit_log(data_dir).0
}

/// Read the log and check the whole chain: seq 0.. without gaps, genesis `prev`, each
/// `prev` = the previous event's chain hash, canonical bytes, and the stored head
/// (`meta/audit_head`) = (next seq, last hash). Returns the events.
#[track_caller]
pub fn verify_chain(data_dir: &Path) -> Vec<StoredEvent> {
    let (events, head) = read_audit_log(data_dir);
    assert!(!events.is_empty(), "the audit log is empty");
    let mut prev = GENESIS_PREV.to_owned();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.event.seq, i as u64, "seq gap or disorder at index {i}");
        assert_eq!(e.event.prev, prev, "broken chain link at seq {i}");
        assert_eq!(e.event.to_bytes(), e.bytes, "event {i} is not canonical");
        prev = hash_hex(&chain_hash(&e.bytes));
    }
    assert_eq!(head.len(), 40, "audit head is next_seq(8) || hash(32)");
    assert_eq!(&head[..8], &(events.len() as u64).to_be_bytes(), "stored head seq");
    let last: [u8; 32] = head[8..].try_into().expect("32 bytes");
    assert_eq!(hash_hex(&last), prev, "stored head hash");
    events
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display())) {
            let entry = entry.expect("dir entry");
            let ty = entry.file_type().expect("file type");
            if ty.is_dir() {
                stack.push(entry.path());
            } else if ty.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Read a whole file.
pub fn read_file(p: &Path) -> Vec<u8> {
    let mut f = File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut v).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    v
}
