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

/// Open the LMDB store.
pub fn open_store(config: &Config, metrics: Arc<Metrics>) -> Result<Store, CliError> {
    Store::open(&config.data_dir, metrics)
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

fn tpm_config(config: &Config) -> Option<TpmConfig> {
    config.tpm.as_ref().map(|t| TpmConfig {
        tcti: t.tcti.clone(),
        nv_index: t.nv_index,
    })
}

/// `init`: define the NV counter (refuses an index that exists).
pub fn define_counter(config: &Config) -> Result<Option<u64>, CliError> {
    let Some(cfg) = tpm_config(config) else { return Ok(None) };
    let mut counter = TpmCounter::define(&cfg).map_err(|e| match e {
        HsmError::CounterExists(_) => CliError::runtime(format!(
            "{e}; another appliance owns it — choose another tpm.nv_index (never reuse a counter)"
        )),
        e => CliError::runtime(format!("TPM ({}): {e}", cfg.tcti)),
    })?;
    counter
        .read()
        .map(Some)
        .map_err(|e| CliError::runtime(format!("TPM: {e}")))
}

/// `serve`: reopen the NV counter on its own thread.
pub fn open_counter(config: &Config) -> Result<Option<CounterWorker>, CliError> {
    let Some(cfg) = tpm_config(config) else { return Ok(None) };
    let tcti = cfg.tcti.clone();
    CounterWorker::spawn("tpm", move || {
        TpmCounter::open(&cfg).map(|c| Box::new(c) as Box<dyn MonotonicCounter>)
    })
    .map(Some)
    .map_err(|e| CliError::runtime(format!("TPM ({tcti}): {e}")))
}
