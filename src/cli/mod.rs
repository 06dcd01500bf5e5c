//! Command line (SPEC §3): `init`, `serve`, `dev`, `audit verify`.
//!
//! Invariant: every failure ends as one line on stderr naming what is wrong and how to
//! fix it, with exit code 2 for usage/config errors and 1 for runtime failures.

mod boot;
mod dev;
mod init;
mod serve;

use std::path::PathBuf;
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strongroom: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}
