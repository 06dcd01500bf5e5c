//! Test helpers (cargo feature `testing`): throwaway SoftHSM tokens and swtpm instances.
//!
//! Invariant: everything here is for tests only. Each helper owns what it starts: a
//! [`SoftHsm`] or [`Swtpm`] removes its directory and kills its process (by its own child
//! handle, never by name) when dropped. PINs here are random *test* PINs and are handed
//! out as plain strings on purpose.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once per process, at `C_Initialize`. So:
//! - [`SoftHsm`] writes its own config and token directory for use by *another process*
//!   (e.g. the `strongroom` binary started with `SOFTHSM2_CONF=`[`SoftHsm::conf_path`]);
//! - [`SoftHsmProcess::get`] initialises the module once for the *current* process over one
//!   shared token directory, and [`SoftHsmProcess::new_token`] gives each test its own
//!   freshly initialised token in it.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::session::UserType;
use rand::distributions::Alphanumeric;
use rand::Rng;
use secrecy::SecretString;
use tempfile::TempDir;

use crate::pkcs11::{find_token_slot, load_module, Pkcs11Backend, Pkcs11Config};
use crate::HsmError;

/// Where Debian/Ubuntu install the SoftHSM2 module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The SoftHSM module path: `$STRONGROOM_TEST_PKCS11_MODULE` if set, else
/// [`SOFTHSM_MODULE`].
pub fn softhsm_module_path() -> PathBuf {
    std::env::var_os("STRONGROOM_TEST_PKCS11_MODULE").map_or_else(|| PathBuf::from(SOFTHSM_MODULE), PathBuf::from)
}

fn random_string(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn write_softhsm_conf(dir: &Path) -> io::Result<(PathBuf, PathBuf)> {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens)?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\nslots.mechanisms = ALL\n",
            tokens.display()
        ),
    )?;
    Ok((conf, tokens))
}

fn other_err(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// A SoftHSM2 configuration + token directory with one initialised token, for use by
/// other processes (set `SOFTHSM2_CONF` to [`SoftHsm::conf_path`] in their environment).
/// Dropping it removes the directory.
pub struct SoftHsm {
    dir: TempDir,
    conf: PathBuf,
    label: String,
    pin: String,
    so_pin: String,
    pin_path: PathBuf,
    module: PathBuf,
}

impl std::fmt::Debug for SoftHsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftHsm")
            .field("dir", &self.dir.path())
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl SoftHsm {
    /// Write a config into a new temp dir and initialise a token labelled `label` (at most
    /// 32 bytes) with random SO and user PINs, via `softhsm2-util --init-token --free`.
    pub fn new(label: &str) -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("strongroom-softhsm-").tempdir()?;
        let (conf, _tokens) = write_softhsm_conf(dir.path())?;
        let pin = random_string(16);
        let so_pin = random_string(16);
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                &so_pin,
                "--pin",
                &pin,
            ])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(other_err(format!(
                "softhsm2-util --init-token failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let pin_path = dir.path().join("pin");
        std::fs::write(&pin_path, &pin)?;
        Ok(Self {
            dir,
            conf,
            label: label.to_owned(),
            pin,
            so_pin,
            pin_path,
            module: softhsm_module_path(),
        })
    }

    /// The directory holding the config, the tokens and the pin file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `softhsm2.conf` to put in `SOFTHSM2_CONF`.
    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    /// The token label.
    pub fn token_label(&self) -> &str {
        &self.label
    }

    /// The user PIN (a test PIN).
    pub fn pin(&self) -> &str {
        &self.pin
    }

    /// The SO PIN (a test PIN).
    pub fn so_pin(&self) -> &str {
        &self.so_pin
    }

    /// A file containing exactly the user PIN (no newline).
    pub fn pin_path(&self) -> &Path {
        &self.pin_path
    }

    /// The PKCS#11 module to load.
    pub fn module_path(&self) -> &Path {
        &self.module
    }

    /// A backend config for this token. Only usable in a process whose `SOFTHSM2_CONF`
    /// points at [`SoftHsm::conf_path`] before the module is initialised.
    pub fn config(&self) -> Pkcs11Config {
        Pkcs11Config {
            module: self.module.clone(),
            token_label: self.label.clone(),
            pin: SecretString::from(self.pin.clone()),
        }
    }
}

/// A token created by [`SoftHsmProcess::new_token`].
#[derive(Clone, Debug)]
pub struct TestToken {
    /// Token label.
    pub label: String,
    /// User PIN (a test PIN).
    pub pin: String,
    /// SO PIN (a test PIN).
    pub so_pin: String,
}

impl TestToken {
    /// A backend config for this token (the module is already initialised in-process, so
    /// [`Pkcs11Backend::open`] shares it).
    pub fn config(&self) -> Pkcs11Config {
        Pkcs11Config {
            module: softhsm_module_path(),
            token_label: self.label.clone(),
            pin: SecretString::from(self.pin.clone()),
        }
    }
}

/// The SoftHSM module initialised once for this process over a private token directory.
pub struct SoftHsmProcess {
    ctx: Pkcs11,
    dir: PathBuf,
    /// SoftHSM exposes one free slot; initialising tokens is serialised.
    init_lock: Mutex<()>,
    next: AtomicU32,
}

impl std::fmt::Debug for SoftHsmProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftHsmProcess")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

static PROCESS_SOFTHSM: OnceLock<Result<SoftHsmProcess, String>> = OnceLock::new();

const PROCESS_DIR_PREFIX: &str = "strongroom-softhsm-proc-";

/// Remove token directories left by earlier test processes that no longer run (a static is
/// never dropped, so each process leaves its directory behind).
fn remove_stale_process_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PROCESS_DIR_PREFIX)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl SoftHsmProcess {
    /// The process-wide instance, created on first use: writes a config into
    /// `$TMPDIR/strongroom-softhsm-proc-<pid>`, sets `SOFTHSM2_CONF` to it and initialises
    /// the module. Call it first thing in every test of a binary that uses it, so the
    /// environment is changed while no other test thread is running native code.
    ///
    /// If another part of the process already initialised SoftHSM, its config stays in
    /// effect (SoftHSM reads it only once).
    pub fn get() -> Result<&'static SoftHsmProcess, HsmError> {
        PROCESS_SOFTHSM
            .get_or_init(|| Self::init().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|reason| HsmError::Module {
                module: softhsm_module_path().display().to_string(),
                reason: reason.clone(),
            })
    }

    fn init() -> Result<SoftHsmProcess, HsmError> {
        remove_stale_process_dirs();
        let io_err = |e: io::Error| HsmError::Device {
            op: "write SoftHSM config",
            reason: e.to_string(),
        };
        let dir = std::env::temp_dir().join(format!("{PROCESS_DIR_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io_err)?;
        let (conf, _tokens) = write_softhsm_conf(&dir).map_err(io_err)?;
        // Edition 2021: set_var is safe. Done once, before C_Initialize reads it.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        let ctx = load_module(&softhsm_module_path())?;
        Ok(SoftHsmProcess {
            ctx,
            dir,
            init_lock: Mutex::new(()),
            next: AtomicU32::new(0),
        })
    }

    /// The initialised module (cheap clone), for [`Pkcs11Backend::open_with`].
    pub fn context(&self) -> Pkcs11 {
        self.ctx.clone()
    }

    /// The shared token directory's parent.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Initialise a new token with a unique label and random PINs on SoftHSM's free slot.
    pub fn new_token(&self) -> Result<TestToken, HsmError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let token = TestToken {
            label: format!("t{n}-{}", random_string(8)),
            pin: random_string(16),
            so_pin: random_string(16),
        };
        let dev = |op: &'static str| {
            move |e: cryptoki::error::Error| HsmError::Device {
                op,
                reason: e.to_string(),
            }
        };
        let _guard = self.init_lock.lock().map_err(|_| HsmError::Device {
            op: "init test token",
            reason: "token init lock poisoned".to_owned(),
        })?;
        let mut free = None;
        for slot in self.ctx.get_slots_with_token().map_err(dev("list slots"))? {
            if !self
                .ctx
                .get_token_info(slot)
                .map_err(dev("token info"))?
                .token_initialized()
            {
                free = Some(slot);
                break;
            }
        }
        let slot = free.ok_or(HsmError::Device {
            op: "init test token",
            reason: "no free SoftHSM slot".to_owned(),
        })?;
        let so_pin = SecretString::from(token.so_pin.clone());
        self.ctx
            .init_token(slot, &so_pin, &token.label)
            .map_err(dev("C_InitToken"))?;
        // The slot is renumbered after C_InitToken: find it again by label.
        let slot = find_token_slot(&self.ctx, &token.label)?;
        let session = self.ctx.open_rw_session(slot).map_err(dev("open session"))?;
        session.login(UserType::So, Some(&so_pin)).map_err(dev("SO login"))?;
        session
            .init_pin(&SecretString::from(token.pin.clone()))
            .map_err(dev("C_InitPIN"))?;
        session.logout().map_err(dev("SO logout"))?;
        drop(session);
        Ok(token)
    }

    /// Open a backend on `token` through the shared module.
    pub fn open(&self, token: &TestToken) -> Result<Pkcs11Backend, HsmError> {
        Pkcs11Backend::open_with(self.context(), &token.label, &SecretString::from(token.pin.clone()))
    }
}

/// A software TPM (`swtpm socket --tpm2`) on two TCP ports of 127.0.0.1 (data `P`, control
/// `P+1`). Dropping it kills the process and removes the state directory if it made it.
pub struct Swtpm {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    _owned_dir: Option<TempDir>,
}

impl std::fmt::Debug for Swtpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swtpm")
            .field("port", &self.port)
            .field("dir", &self.dir)
            .field("pid", &self.child.as_ref().map(Child::id))
            .finish()
    }
}

/// Serialises port picking + start-up inside this process, so two tests do not pick the
/// same pair.
static SWTPM_START: Mutex<()> = Mutex::new(());

fn free_port_pair() -> io::Result<u16> {
    for _ in 0..64 {
        let a = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = a.local_addr()?.port();
        let Some(ctrl) = port.checked_add(1) else {
            continue;
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, ctrl)).is_ok() {
            return Ok(port);
        }
    }
    Err(other_err("no free pair of adjacent TCP ports".to_owned()))
}

impl Swtpm {
    /// Start a fresh swtpm with its own temporary state directory on a free port pair.
    pub fn start() -> io::Result<Self> {
        let owned = tempfile::Builder::new().prefix("strongroom-swtpm-").tempdir()?;
        let dir = owned.path().to_path_buf();
        let mut last = None;
        for _ in 0..5 {
            let port = {
                let _guard = SWTPM_START
                    .lock()
                    .map_err(|_| other_err("swtpm start lock poisoned".to_owned()))?;
                free_port_pair()?
            };
            match Self::spawn(&dir, port) {
                Ok(child) => {
                    return Ok(Self {
                        child: Some(child),
                        port,
                        dir,
                        _owned_dir: Some(owned),
                    })
                }
                // Most likely somebody took the port in between: try another pair.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| other_err("swtpm did not start".to_owned())))
    }

    /// Start swtpm on an existing state directory and a given data port (control on
    /// `port + 1`), e.g. to bring a TPM back after [`Swtpm::kill`]. The directory is not
    /// removed on drop.
    pub fn start_in(dir: &Path, port: u16) -> io::Result<Self> {
        let child = Self::spawn(dir, port)?;
        Ok(Self {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
            _owned_dir: None,
        })
    }

    fn spawn(dir: &Path, port: u16) -> io::Result<Child> {
        let ctrl = port
            .checked_add(1)
            .ok_or_else(|| other_err("port out of range".to_owned()))?;
        let log = dir.join("swtpm.log");
        let mut child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={ctrl},bindaddr=127.0.0.1"))
            .arg("--tpmstate")
            .arg(format!("dir={}", dir.display()))
            .arg("--flags")
            .arg("not-need-init,startup-clear")
            .arg("--log")
            .arg(format!("file={},level=1", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let ctrl_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ctrl));
        loop {
            if let Some(status) = child.try_wait()? {
                let mut err = String::new();
                if let Some(mut s) = child.stderr.take() {
                    let _ = s.read_to_string(&mut err);
                }
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(other_err(format!(
                    "swtpm exited early ({status}): {} {}",
                    err.trim(),
                    log.trim()
                )));
            }
            // Readiness: the control port accepts (the data port serves one client at a time).
            if TcpStream::connect_timeout(&ctrl_addr, Duration::from_millis(100)).is_ok() {
                return Ok(child);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(other_err(format!("swtpm on port {port} not ready after 10 s")));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// TCTI string for tss-esapi / tpm2-tools: `swtpm:host=127.0.0.1,port=P`.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The data port (`P`; control is `P+1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `--tpmstate` directory.
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the swtpm process is running (started and not killed or stopped).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// SIGKILL the process (a crash / power cut as far as swtpm is concerned) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Graceful stop: `swtpm_ioctl --tcp 127.0.0.1:P+1 -s`, then reap (killing after 5 s).
    pub fn stop(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = Command::new("swtpm_ioctl")
            .arg("--tcp")
            .arg(format!("127.0.0.1:{}", self.port.saturating_add(1)))
            .arg("-s")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.wait();
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(other_err(format!("swtpm_ioctl -s failed: {s}"))),
            Err(e) => Err(e),
        }
    }

    /// Kill the process (SIGKILL) and start a new one on the same state directory and port.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        let mut last = None;
        // The old listening sockets may linger for a moment.
        for _ in 0..50 {
            match Self::spawn(&self.dir, self.port) {
                Ok(child) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        Err(last.unwrap_or_else(|| other_err("swtpm did not restart".to_owned())))
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.kill();
    }
}
