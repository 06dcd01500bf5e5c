//! Opening the appliance's parts from a config: HSM worker, TPM counter, store.

use std::sync::Arc;

use strongroom_hsm::{HsmError, HsmWorker, KeyBackend, Pkcs11Backend, Pkcs11Config};

use super::CliError;
use crate::config::Config;
use crate::store::Store;
use crate::telemetry::Metrics;

/// Start the HSM worker thread: load the module, find the token, log in.
pub fn open_hsm(config: &Config) -> Result<HsmWorker<dyn KeyBackend>, CliError> {
    let pin = config.read_pin()?;
    let cfg = Pkcs11Config { module: config.hsm.module.clone(), token_label: config.hsm.token_label.clone(), pin };
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
    Metrics::new().map(Arc::new).map_err(|e| CliError::runtime(format!("metrics: {e}")))
}
