//! `strongroom dev`: the embedded default. Creates (or reuses) under DIR a SoftHSM token,
//! an swtpm instance, a CA + TLS certificate, a config, initialises once and serves.
//! Writes `DIR/dev.json` for scripts. Ctrl-C stops the server and the swtpm it started.
//!
//! Invariant: a reused DIR keeps its data, token, PIN and certificates; nothing here is
//! used outside development (the PIN sits in a 0600 file next to the token).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::distributions::Alphanumeric;
use rand::Rng;
use serde_json::json;

use super::init::{is_initialised, provision, write_secret_file};
use super::serve::serve;
use super::CliError;
use crate::config::Config;

const SOFTHSM_TEMPLATE: &str = include_str!("../../softhsm-config/softhsm2.conf.in");
const TOKEN_LABEL: &str = "strongroom";
const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const NV_INDEX: u32 = 0x0150_0016;

fn io_err<'a>(what: &str, p: &'a Path) -> impl FnOnce(std::io::Error) -> CliError + 'a {
    let what = what.to_owned();
    move |e| CliError::runtime(format!("{what} {}: {e}", p.display()))
}

fn random_pin() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

/// Run `dev`.
pub fn run(dir: &Path, port: u16) -> Result<(), CliError> {
    let metrics_port = port
        .checked_add(1)
        .ok_or_else(|| CliError::config("--port must be below 65535 (metrics use port + 1)"))?;
    std::fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
    let dir = dir.canonicalize().map_err(io_err("cannot resolve", dir))?;

    let pin_file = provision_softhsm(&dir)?;
    let tpm_port = port_for_tpm(port);
    let _swtpm = Swtpm::start(&dir.join("tpm"), tpm_port)?;
    let ca = provision_tls(&dir)?;

    let config_path = dir.join("strongroom.toml");
    if !config_path.exists() {
        let text = format!(
            r#"# Written by `strongroom dev`.
data_dir = "{data}"
listen = "127.0.0.1:{port}"
tls_cert = "{tls}/cert.pem"
tls_key = "{tls}/key.pem"
bootstrap_token_file = "{dir}/bootstrap-token"
metrics_listen = "127.0.0.1:{metrics_port}"

[hsm]
backend = "pkcs11"
module = "{SOFTHSM_MODULE}"
token_label = "{TOKEN_LABEL}"
pin_file = "{pin}"

[tpm]
tcti = "swtpm:host=127.0.0.1,port={tpm_port}"
nv_index = {NV_INDEX:#010x}
"#,
            data = dir.join("data").display(),
            tls = dir.join("tls").display(),
            dir = dir.display(),
            pin = pin_file.display(),
        );
        std::fs::write(&config_path, text).map_err(io_err("cannot write", &config_path))?;
    }
    let config = Config::load(&config_path)?;
    if !is_initialised(&config.data_dir) {
        provision(&config)?;
    }
    let token = std::fs::read_to_string(&config.bootstrap_token_file)
        .map_err(io_err("cannot read the operator token", &config.bootstrap_token_file))?;
    let token = token.trim().to_owned();

    serve(&config, |bound| {
        let url = format!("https://localhost:{}", bound.https.port());
        let metrics_url = format!("http://{}/metrics", bound.metrics);
        let info = json!({
            "url": url,
            "ca_cert": ca.display().to_string(),
            "operator_token": token,
            "metrics_url": metrics_url,
            "config": config_path.display().to_string(),
        });
        let dev_json = dir.join("dev.json");
        // It holds the operator token: owner-only, like the bootstrap token file.
        let _ = std::fs::remove_file(&dev_json);
        if let Err(e) = write_secret_file(&dev_json, &format!("{info:#}")) {
            eprintln!("strongroom: cannot write {}: {}", dev_json.display(), e.message);
        }
        println!("\nStrongroom dev appliance");
        println!("  URL:            {url}");
        println!("  CA certificate: {}", ca.display());
        println!("  operator token: {token}");
        println!("  metrics:        {metrics_url}");
        println!("  details:        {}", dev_json.display());
        println!(
            "  try: curl --cacert {} -H 'Authorization: Bearer {token}' {url}/v1/admin/tenants\n",
            ca.display()
        );
    })
}

/// A TPM port that does not clash with the HTTPS/metrics ports.
fn port_for_tpm(port: u16) -> u16 {
    if port < 60000 {
        port + 10_000
    } else {
        port - 10_000
    }
}

/// Write the SoftHSM config, set `SOFTHSM2_CONF` for this process and make the token
/// once. Returns the PIN file.
fn provision_softhsm(dir: &Path) -> Result<PathBuf, CliError> {
    let tokens = dir.join("softhsm/tokens");
    std::fs::create_dir_all(&tokens).map_err(io_err("cannot create", &tokens))?;
    let conf = dir.join("softhsm/softhsm2.conf");
    std::fs::write(
        &conf,
        SOFTHSM_TEMPLATE.replace("@TOKENDIR@", &tokens.display().to_string()),
    )
    .map_err(io_err("cannot write", &conf))?;
    // Single-threaded here: no other thread reads the environment yet.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let pin_file = dir.join("hsm-pin");
    if pin_file.exists() {
        return Ok(pin_file);
    }
    let pin = random_pin();
    let status = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            TOKEN_LABEL,
            "--pin",
            &pin,
            "--so-pin",
            &random_pin(),
        ])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| {
            CliError::runtime(format!(
                "cannot run softhsm2-util ({e}); install softhsm2 (make run does)"
            ))
        })?;
    if !status.success() {
        return Err(CliError::runtime("softhsm2-util --init-token failed"));
    }
    write_secret_file(&pin_file, &pin)?;
    Ok(pin_file)
}

/// The swtpm `dev` runs; killed when dropped (Ctrl-C ends `serve`, then this drops).
struct Swtpm {
    child: Child,
}

impl Swtpm {
    fn start(state: &Path, port: u16) -> Result<Self, CliError> {
        std::fs::create_dir_all(state).map_err(io_err("cannot create", state))?;
        use std::os::unix::process::CommandExt;
        let child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .args(["--server", &format!("type=tcp,port={port},bindaddr=127.0.0.1")])
            .args(["--ctrl", &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1)])
            .args(["--tpmstate", &format!("dir={}", state.display())])
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(Stdio::null())
            // Own process group: Ctrl-C reaches the server, which still needs the TPM to
            // finish shutting down; we stop swtpm ourselves on drop.
            .process_group(0)
            .spawn()
            .map_err(|e| CliError::runtime(format!("cannot start swtpm ({e}); install swtpm (make run does)")))?;
        let mut me = Self { child };
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port + 1)).is_err() {
            if Instant::now() > deadline || me.child.try_wait().ok().flatten().is_some() {
                return Err(CliError::runtime(format!(
                    "swtpm did not start on port {port} (is another one running on {}?)",
                    state.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(me)
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a leaf certificate for localhost/127.0.0.1, made once. Returns the CA path.
fn provision_tls(dir: &Path) -> Result<PathBuf, CliError> {
    let tls = dir.join("tls");
    let (ca_path, cert_path, key_path) = (tls.join("ca.pem"), tls.join("cert.pem"), tls.join("key.pem"));
    if ca_path.exists() && cert_path.exists() && key_path.exists() {
        return Ok(ca_path);
    }
    std::fs::create_dir_all(&tls).map_err(io_err("cannot create", &tls))?;
    let tls_err = |e: rcgen::Error| CliError::runtime(format!("cannot make the dev TLS certificate: {e}"));
    let ca_key = rcgen::KeyPair::generate().map_err(tls_err)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Strongroom dev CA");
    let ca = ca_params.self_signed(&ca_key).map_err(tls_err)?;
    let leaf_key = rcgen::KeyPair::generate().map_err(tls_err)?;
    let mut leaf_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).map_err(tls_err)?;
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).map_err(tls_err)?;
    std::fs::write(&ca_path, ca.pem()).map_err(io_err("cannot write", &ca_path))?;
    std::fs::write(&cert_path, format!("{}{}", leaf.pem(), ca.pem())).map_err(io_err("cannot write", &cert_path))?;
    let _ = std::fs::remove_file(&key_path);
    write_secret_file(&key_path, leaf_key.serialize_pem().trim_end())?;
    Ok(ca_path)
}
