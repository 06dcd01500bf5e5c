//! `strongroom init`: data directory, LMDB, system signing key, TPM counter, genesis
//! event and bootstrap operator token. Refuses an initialised or non-empty directory.

use std::io::Write;
use std::path::Path;

use super::boot;
use super::CliError;
use crate::audit::integrity::{Alarm, Integrity};
use crate::audit::{Action, PendingEvent};
use crate::auth::tokens::{mint, reveal};
use crate::auth::{system_scope, Permission, TokenRecord};
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::Actor;

/// Lifetime of the bootstrap token.
pub const BOOTSTRAP_TTL_SECS: i64 = 366 * 24 * 3600;

/// Run `init` with the config at `path`.
pub fn run(path: &Path) -> Result<(), CliError> {
    let config = Config::load(path)?;
    provision(&config)?;
    println!(
        "strongroom: initialised {}; bootstrap operator token written to {} (mode 0600)",
        config.data_dir.display(),
        config.bootstrap_token_file.display()
    );
    Ok(())
}

/// Whether `dir` holds an initialised appliance.
pub fn is_initialised(dir: &Path) -> bool {
    dir.join("data.mdb").exists()
}

/// Refuse to provision over an existing appliance, a non-empty directory or an existing
/// bootstrap token file.
fn check_fresh(config: &Config) -> Result<(), CliError> {
    let dir = &config.data_dir;
    if is_initialised(dir) {
        return Err(CliError::config(format!(
            "{} is already initialised; `init` runs once per data directory (use `serve`)",
            dir.display()
        )));
    }
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(|e| CliError::config(format!("{}: {e}", dir.display())))?;
        if entries.next().is_some() {
            return Err(CliError::config(format!(
                "data_dir {} is not empty; init needs an empty directory",
                dir.display()
            )));
        }
    }
    if config.bootstrap_token_file.exists() {
        return Err(CliError::config(format!(
            "bootstrap_token_file {} already exists; remove it or choose another path",
            config.bootstrap_token_file.display()
        )));
    }
    Ok(())
}

/// Provision a new appliance.
pub fn provision(config: &Config) -> Result<(), CliError> {
    check_fresh(config)?;
    // Hardware first: fail before creating anything on disk.
    let hsm = boot::open_hsm(config)?;
    let signing_key = boot::signing_key(&hsm)?;
    let (tpm, counter) = boot::define_counter(config)?;

    create_private_dir(&config.data_dir)?;
    let metrics = boot::metrics()?;
    let store = boot::open_store(config, metrics.clone(), Clock::system())?;
    let random = crate::random::Random::os();
    let appliance_id = hex::encode(random.bytes::<8>());
    let genesis = PendingEvent::new(Action::ServiceStart, "system:init", "audit", "init")
        .detail("genesis", true)
        .detail("appliance_id", appliance_id.clone())
        .detail("signing_public_key", hex::encode(signing_key))
        .detail("tpm_counter", counter);
    let scope = system_scope();
    let aid = appliance_id.clone();
    store
        .commit_blocking(genesis, move |txn, _| txn.set_appliance_id(&scope, &aid))
        .map_err(|e| CliError::runtime(format!("cannot write the genesis event: {e}")))?;

    store_bootstrap_token(config, &store, &random)?;

    // The first checkpoint, sealed to the counter just defined.
    let integrity = Integrity::new(
        store,
        hsm,
        Some(tpm),
        &appliance_id,
        config.tpm.nv_index,
        signing_key,
        Alarm::new(metrics.integrity_alarm.clone()),
        boot::seal_policy(config),
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::runtime(format!("runtime: {e}")))?
        .block_on(integrity.seal_genesis(counter))
        .map_err(|e| CliError::runtime(format!("cannot seal the genesis checkpoint: {e}")))
}

/// Mint the bootstrap operator token, store it with its event, write it to its file.
fn store_bootstrap_token(
    config: &Config,
    store: &crate::store::Store,
    random: &crate::random::Random,
) -> Result<(), CliError> {
    let now = Clock::system().now().unix_timestamp();
    let minted = mint(random);
    let actor = Actor::parse("operator:bootstrap").map_err(|e| CliError::runtime(e.to_string()))?;
    let record = TokenRecord {
        token_id: minted.token_id.clone(),
        actor,
        tenant_id: None,
        permissions: Permission::BOOTSTRAP.to_vec(),
        created_at: now,
        expires_at: now + BOOTSTRAP_TTL_SECS,
        revoked_at: None,
    };
    let event = PendingEvent::new(
        Action::TokenCreate,
        "system:init",
        format!("token:{}", minted.token_id),
        "init",
    )
    .detail("subject_actor", "operator:bootstrap")
    .detail("bootstrap", true);
    let hash = minted.hash;
    store
        .commit_blocking(event, move |txn, _| txn.insert_token(&hash, &record))
        .map_err(|e| CliError::runtime(format!("cannot store the bootstrap token: {e}")))?;
    write_secret_file(&config.bootstrap_token_file, reveal(&minted))
}

fn create_private_dir(dir: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| CliError::runtime(format!("cannot create {}: {e}", dir.display())))
}

/// Write a secret to a new file with mode 0600.
pub fn write_secret_file(path: &Path, secret: &str) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::runtime(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(secret.as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .and_then(|_| f.sync_all())
        .map_err(|e| CliError::runtime(format!("cannot write {}: {e}", path.display())))
}
