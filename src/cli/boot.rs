//! Opening the appliance's parts from a config: HSM worker, TPM counter, store.

use std::sync::Arc;

use strongroom_hsm::{
    HsmError, HsmWorker, KeyBackend, MonotonicCounter, Pkcs11Backend, Pkcs11Config, TpmConfig, TpmCounter,
};

use super::CliError;
use crate::config::Config;
use crate::store::Store;
use crate::telemetry::Metrics;

/// Start the HSM worker thread: load the module, find the token, log in.
pub fn open_hsm(config: &Config) -> Result<HsmWorker<dyn KeyBackend>, CliError> {
    let pin = config.read_pin()?;
    let cfg = Pkcs11Config {
        module: config.hsm.module.clone(),
        token_label: config.hsm.token_label.clone(),
        pin,
    };
    HsmWorker::<dyn KeyBackend>::spawn("hsm", move || {
        Pkcs11Backend::open(&cfg).map(|b| Box::new(b) as Box<dyn KeyBackend>)
    })
    .map_err(|e| match e {
        HsmError::Module { .. } => CliError::runtime(format!("{e} (check hsm.module)")),
        e => CliError::runtime(e.to_string()),
    })
}

/// Open the LMDB store; its writer stamps events with `clock`.
pub fn open_store(config: &Config, metrics: Arc<Metrics>, clock: crate::clock::Clock) -> Result<Store, CliError> {
    Store::open(&config.data_dir, metrics, clock)
        .map_err(|e| CliError::runtime(format!("cannot open data directory {}: {e}", config.data_dir.display())))
}

/// Fresh metrics registry.
pub fn metrics() -> Result<Arc<Metrics>, CliError> {
    Metrics::new()
        .map(Arc::new)
        .map_err(|e| CliError::runtime(format!("metrics: {e}")))
}

/// The TPM counter's worker thread.
pub type CounterWorker = HsmWorker<dyn MonotonicCounter>;

fn tpm_config(config: &Config) -> TpmConfig {
    TpmConfig {
        tcti: config.tpm.tcti.clone(),
        nv_index: config.tpm.nv_index,
    }
}

/// `init`: define the NV counter (refuses an index that exists). Returns its worker and
/// its value.
pub fn define_counter(config: &Config) -> Result<(CounterWorker, u64), CliError> {
    let cfg = tpm_config(config);
    let tcti = cfg.tcti.clone();
    let worker = CounterWorker::spawn("tpm", move || {
        TpmCounter::define(&cfg).map(|c| Box::new(c) as Box<dyn MonotonicCounter>)
    })
    .map_err(|e| match e {
        HsmError::CounterExists(_) => CliError::runtime(format!(
            "{e}; another appliance owns it — choose another tpm.nv_index (never reuse a counter)"
        )),
        e => CliError::runtime(format!("TPM ({tcti}): {e}")),
    })?;
    let value = worker
        .call_blocking(|c| c.read())
        .and_then(|r| r)
        .map_err(|e| CliError::runtime(format!("TPM: {e}")))?;
    Ok((worker, value))
}

/// The TPM anchor of the data directory is missing or replaced: not a start failure but
/// an integrity alarm (its message is the alarm's reason).
#[derive(Debug, thiserror::Error)]
#[error("rollback/tamper: {0}; the TPM anchor of this data directory is gone")]
pub struct CounterLost(pub HsmError);

/// `serve`: reopen the NV counter on its own thread. A missing or replaced index is not
/// a start failure but an integrity alarm: `Ok(Err(reason))`.
pub fn open_counter(config: &Config) -> Result<Result<CounterWorker, CounterLost>, CliError> {
    let cfg = tpm_config(config);
    let tcti = cfg.tcti.clone();
    match CounterWorker::spawn("tpm", move || {
        TpmCounter::open(&cfg).map(|c| Box::new(c) as Box<dyn MonotonicCounter>)
    }) {
        Ok(w) => Ok(Ok(w)),
        Err(e @ (HsmError::CounterMissing(_) | HsmError::CounterReplaced(_))) => Ok(Err(CounterLost(e))),
        Err(e) => Err(CliError::runtime(format!("TPM ({tcti}) unreachable: {e}"))),
    }
}

/// The audit signing key's public half (created by `init`).
pub fn signing_key(hsm: &HsmWorker<dyn KeyBackend>) -> Result<[u8; 32], CliError> {
    hsm.call_blocking(|b| b.signing_public_key())
        .and_then(|r| r)
        .map_err(|e| CliError::runtime(format!("cannot read the audit signing key: {e}")))
}

/// The sealing policy from config.
pub fn seal_policy(config: &Config) -> crate::audit::integrity::SealPolicy {
    crate::audit::integrity::SealPolicy {
        interval: std::time::Duration::from_secs(config.audit.checkpoint_interval_secs),
        min_interval: std::time::Duration::from_secs(config.audit.min_seal_interval_secs),
        verify_interval: std::time::Duration::from_secs(config.audit.verify_interval_secs),
    }
}
