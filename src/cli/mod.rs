//! Command line (SPEC §3): `init`, `serve`, `dev`, `audit verify`.
//!
//! Invariant: every failure ends as one line on stderr naming what is wrong and how to
//! fix it, with exit code 2 for usage/config errors and 1 for runtime failures.

mod boot;
mod dev;
mod init;
mod serve;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A CLI failure: its exit code and one-line message.
#[derive(Debug)]
pub struct CliError {
    /// 1 runtime, 2 usage/config.
    pub code: u8,
    /// One line.
    pub message: String,
}

impl CliError {
    /// Usage or configuration error (exit 2).
    pub fn config(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }
    /// Runtime failure (exit 1).
    pub fn runtime(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
}

impl From<crate::config::ConfigError> for CliError {
    fn from(e: crate::config::ConfigError) -> Self {
        Self::config(e.to_string())
    }
}

#[derive(Parser)]
#[command(
    name = "strongroom",
    version,
    about = "Hardware-backed multi-tenant encrypted record store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// First-time provisioning of a data directory, HSM keys and the bootstrap token.
    Init {
        /// Config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the appliance.
    Serve {
        /// Config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Embedded default: SoftHSM token, TLS certificate, config, init and serve.
    Dev {
        /// Working directory (created or reused).
        #[arg(long, default_value = ".strongroom-dev")]
        dir: PathBuf,
        /// HTTPS port (metrics on port + 1).
        #[arg(long, default_value_t = 8443)]
        port: u16,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify an exported audit log offline (no trust in the server needed).
    Verify {
        /// NDJSON export (`GET /v1/admin/audit/export`).
        #[arg(long)]
        export: PathBuf,
        /// Signed checkpoint (`GET /v1/admin/audit/checkpoint`).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Verifier key (`GET /v1/admin/audit/public-key`), obtained out of band.
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    crate::telemetry::init_logging();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Init { config } => init::run(&config),
        Command::Serve { config } => serve::run(&config),
        Command::Dev { dir, port } => dev::run(&dir, port),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    export,
                    checkpoint,
                    public_key,
                },
        } => audit_verify(&export, checkpoint.as_deref(), public_key.as_deref()),
    };
    // HSM/TPM worker threads unload their libraries once their last handle is gone;
    // exiting while they do runs the same libraries' destructors concurrently (crash).
    if !strongroom_hsm::worker::wait_for_workers(std::time::Duration::from_secs(10)) {
        tracing::warn!("HSM/TPM worker threads still running at exit");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strongroom: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

use crate::audit::offline::KeySource;

fn audit_verify(export: &Path, checkpoint: Option<&Path>, public_key: Option<&Path>) -> Result<(), CliError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| CliError::config(format!("cannot read {}: {e}", p.display())))
    };
    let export_text = read(export)?;
    let checkpoint = checkpoint.map(read).transpose()?;
    let vkey = public_key.map(read).transpose()?;
    if checkpoint.is_none() && vkey.is_some() {
        return Err(CliError::config("--public-key is only used with --checkpoint"));
    }
    match crate::audit::offline::verify_export(&export_text, checkpoint.as_deref(), vkey.as_deref()) {
        Ok(report) => {
            println!("OK: {} events verified from seq 0", report.events);
            if let Some(h) = report.head {
                println!("head: {}", crate::audit::hash_hex(&h));
            }
            match (report.checkpoint, report.key) {
                (Some(cp), Some((vkey, source))) => {
                    println!(
                        "checkpoint: signature valid, tree size {} root and chain head match, TPM counter {} ({:#010x})",
                        cp.size, cp.counter, cp.nv_index
                    );
                    match source {
                        KeySource::Given => println!("signed by the given key {vkey}"),
                        KeySource::Genesis => println!(
                            "signed by the key named in the export's genesis event: {vkey}\nWARNING: compare it with the appliance's published key (GET /v1/admin/audit/public-key, obtained out of band) or pass --public-key"
                        ),
                    }
                }
                _ => println!("no checkpoint given: only the chain's internal consistency was checked"),
            }
            Ok(())
        }
        Err(f) => Err(CliError::runtime(format!("verification FAILED: {f}"))),
    }
}
