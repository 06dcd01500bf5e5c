//! Errors of the key hardware layer. Messages never contain key material or PINs.

/// What went wrong talking to an HSM or TPM.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The PKCS#11 module could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {module}: {reason}")]
    Module {
        /// Module path.
        module: String,
        /// Cause, from the library.
        reason: String,
    },
    /// No token with the configured label.
    #[error("no PKCS#11 token labelled {0:?}; initialise it (softhsm2-util --init-token) or fix hsm.token_label")]
    TokenNotFound(String),
    /// Login failed (wrong PIN, locked token).
    #[error("HSM login failed: {0}; check hsm.pin_file")]
    Login(String),
    /// A key that should be new already exists.
    #[error("HSM key {0} already exists")]
    KeyExists(String),
    /// A key that should exist does not.
    #[error("HSM key {0} not found")]
    KeyNotFound(String),
    /// AEAD unwrap failed: wrong key, wrong AAD or tampered blob.
    #[error("unwrap failed: wrong key, wrong binding or tampered data")]
    UnwrapFailed,
    /// The TPM could not be reached or refused the command.
    #[error("TPM error: {0}")]
    Tpm(String),
    /// The NV counter index is not defined in the TPM.
    #[error("TPM NV counter index {0:#010x} is not defined")]
    CounterMissing(u32),
    /// `define` found the NV index already defined. It is never reused silently: an
    /// existing index may carry an old value or somebody else's attributes.
    #[error("TPM NV index {0:#010x} is already defined; refusing to reuse it (pick another hsm.tpm_nv_index, or undefine it with tpm2_nvundefine only if you are certain it is unused)")]
    CounterExists(u32),
    /// The NV index exists but is not a counter made by us (replaced or tampered).
    #[error("TPM NV index {0:#010x} has unexpected attributes (replaced?)")]
    CounterReplaced(u32),
    /// Any other device error.
    #[error("HSM operation {op} failed: {reason}")]
    Device {
        /// What we were doing.
        op: &'static str,
        /// The library's error text.
        reason: String,
    },
    /// The worker thread has stopped.
    #[error("HSM worker thread is gone")]
    WorkerGone,
}
