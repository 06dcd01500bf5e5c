//! Configuration: one TOML file (SPEC §4), every key overridable by `STRONGROOM_<KEY>`
//! environment variables (`__` separates nested keys: `STRONGROOM_HSM__PIN_FILE`).
//!
//! Invariant: a `Config` value has been fully validated, and holds the domain values of
//! its sections parsed once at load (the `[governance]` [`Quorum`], the `[privacy]`
//! [`PrivacyPolicy`], via `TryFrom` of the raw sections); the PIN is never in it, only the
//! path of the file holding it. Domain modules never import this one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::governance::{Quorum, QuorumError};
use crate::privacy::epsilon::EpsilonError;
use crate::privacy::{Epsilon, PrivacyPolicy};

/// Environment variables with this prefix override config keys.
pub const ENV_PREFIX: &str = "STRONGROOM_";
/// Variables with the prefix that are not config keys.
const NON_CONFIG_VARS: &[&str] = &[
    "STRONGROOM_LOG",
    "STRONGROOM_TEST_CLOCK_OFFSET_SECS",
    "STRONGROOM_TEST_FAULT",
];

/// A configuration problem; always reported as one line and exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file or an override is not valid.
    #[error("invalid config {path}: {message}")]
    Invalid {
        /// Path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The appliance configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// LMDB environment and appliance state.
    pub data_dir: PathBuf,
    /// HTTPS listen address.
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub tls_cert: PathBuf,
    /// PEM private key.
    pub tls_key: PathBuf,
    /// Where `init` writes the bootstrap operator token (mode 0600).
    pub bootstrap_token_file: PathBuf,
    /// Prometheus endpoint (plain HTTP, loopback).
    pub metrics_listen: SocketAddr,
    /// Maximum request body in bytes (default 1 MiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Key hardware.
    pub hsm: HsmConfig,
    /// TPM (monotonic counter anchoring the audit log).
    pub tpm: TpmConfig,
    /// Audit chain timings.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Differential privacy budget.
    #[serde(default)]
    pub privacy: PrivacyConfig,
    /// Multi-party approval.
    #[serde(default)]
    pub governance: GovernanceConfig,
    /// Data-key cache.
    #[serde(default)]
    pub keys: KeysConfig,
    /// `[governance]` parsed at load (`None`: no approvers configured).
    #[serde(skip)]
    quorum: Option<Quorum>,
    /// `[privacy]` parsed at load.
    #[serde(skip)]
    privacy_policy: PrivacyPolicy,
}

/// A config section whose values do not parse into their domain types.
#[derive(Debug, thiserror::Error)]
pub enum SectionError {
    /// `[governance]`.
    #[error("governance: {0}")]
    Governance(#[source] QuorumError),
    /// A `[privacy]` ε.
    #[error("{key}: {source}")]
    Privacy {
        /// The key (`privacy.max_query_epsilon`).
        key: &'static str,
        /// Why.
        #[source]
        source: EpsilonError,
    },
    /// Any other rule of the file.
    #[error("{0}")]
    Rule(&'static str),
}

impl TryFrom<&GovernanceConfig> for Option<Quorum> {
    type Error = SectionError;
    /// `None` when no approvers are configured (whatever the threshold).
    fn try_from(c: &GovernanceConfig) -> Result<Self, SectionError> {
        if c.approvers.is_empty() {
            return Ok(None);
        }
        Quorum::new(c.threshold, &c.approvers)
            .map(Some)
            .map_err(SectionError::Governance)
    }
}

impl TryFrom<&PrivacyConfig> for PrivacyPolicy {
    type Error = SectionError;
    fn try_from(c: &PrivacyConfig) -> Result<Self, SectionError> {
        let tenant_budget =
            Epsilon::parse_amount(&c.tenant_epsilon_budget).map_err(|source| SectionError::Privacy {
                key: "privacy.tenant_epsilon_budget",
                source,
            })?;
        let max_query_epsilon =
            Epsilon::parse_positive(&c.max_query_epsilon).map_err(|source| SectionError::Privacy {
                key: "privacy.max_query_epsilon",
                source,
            })?;
        Ok(Self {
            tenant_budget,
            max_query_epsilon,
        })
    }
}

fn default_max_body() -> usize {
    1024 * 1024
}

/// Which hardware holds the tier-1 keys.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HsmBackendKind {
    /// A PKCS#11 module (SoftHSM, a network HSM...).
    Pkcs11,
    /// A TPM 2.0.
    Tpm,
}

/// `[hsm]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmConfig {
    /// `pkcs11` (only this one is implemented; see README).
    pub backend: HsmBackendKind,
    /// PKCS#11 module path.
    pub module: PathBuf,
    /// Token label.
    pub token_label: String,
    /// File holding the user PIN (trailing whitespace ignored).
    pub pin_file: PathBuf,
}

/// `[tpm]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmConfig {
    /// TCTI string, e.g. `swtpm:host=127.0.0.1,port=2321` or `device:/dev/tpmrm0`.
    pub tcti: String,
    /// NV index of the monotonic counter.
    pub nv_index: u32,
}

/// `[audit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Seconds between checkpoints when there was activity.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_secs: u64,
    /// Seconds between incremental verifications.
    #[serde(default = "default_verify_interval")]
    pub verify_interval_secs: u64,
    /// Minimum seconds between two seals triggered by security-critical events (token
    /// creation, erasure, rotation): each seal increments the TPM's NV counter, and NV
    /// memory wears out.
    #[serde(default = "default_min_seal_interval")]
    pub min_seal_interval_secs: u64,
}
fn default_min_seal_interval() -> u64 {
    60
}
fn default_checkpoint_interval() -> u64 {
    300
}
fn default_verify_interval() -> u64 {
    10
}
impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval_secs: default_checkpoint_interval(),
            verify_interval_secs: default_verify_interval(),
            min_seal_interval_secs: default_min_seal_interval(),
        }
    }
}

/// `[privacy]` (epsilons are decimal strings, parsed exactly where used).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Total ε per tenant.
    #[serde(default = "default_budget")]
    #[serde(deserialize_with = "decimal_text")]
    pub tenant_epsilon_budget: String,
    /// Maximum ε per query.
    #[serde(default = "default_query_cap")]
    #[serde(deserialize_with = "decimal_text")]
    pub max_query_epsilon: String,
}
/// A decimal kept as text (parsed exactly where used); accepts a TOML string or number,
/// so `STRONGROOM_PRIVACY__TENANT_EPSILON_BUDGET=10.0` works like `"10.0"` in the file.
fn decimal_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        S(String),
        I(i64),
        F(f64),
    }
    Ok(match Text::deserialize(d)? {
        Text::S(s) => s,
        Text::I(i) => i.to_string(),
        Text::F(f) => f.to_string(),
    })
}

fn default_budget() -> String {
    "10.0".to_owned()
}
fn default_query_cap() -> String {
    "1.0".to_owned()
}
impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            tenant_epsilon_budget: default_budget(),
            max_query_epsilon: default_query_cap(),
        }
    }
}

/// `[governance]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GovernanceConfig {
    /// Approvals needed.
    #[serde(default)]
    pub threshold: u32,
    /// `name:ed25519:<base64 key>` entries (validated at load: names
    /// `[A-Za-z0-9._-]{1,64}`, distinct; keys raw 32-byte Ed25519 in standard base64;
    /// `1 ≤ threshold ≤ approvers` when approvers are given; none = no governance).
    #[serde(default)]
    pub approvers: Vec<String>,
}

/// `[keys]` — DEK cache bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// Maximum unwrapped DEKs held in memory.
    #[serde(default = "default_cache_capacity")]
    pub dek_cache_capacity: usize,
    /// Seconds an unwrapped DEK may stay cached.
    #[serde(default = "default_cache_ttl")]
    pub dek_cache_ttl_secs: u64,
    /// Seconds a KEK version replaced by a rotation is kept in the HSM (so backups stay
    /// restorable) before it is destroyed; default 7 days.
    #[serde(default = "default_kek_retention")]
    pub kek_retention_secs: u64,
}
fn default_kek_retention() -> u64 {
    7 * 24 * 3600
}
fn default_cache_capacity() -> usize {
    10_000
}
fn default_cache_ttl() -> u64 {
    300
}
impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            dek_cache_capacity: default_cache_capacity(),
            dek_cache_ttl_secs: default_cache_ttl(),
            kek_retention_secs: default_kek_retention(),
        }
    }
}

impl Config {
    /// Read `path`, apply `STRONGROOM_*` overrides from the process environment, validate.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_with_env(&text, path, std::env::vars())
    }

    /// Parse TOML text with the given environment overrides.
    pub fn from_toml_with_env(
        text: &str,
        path: &Path,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let mut root: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| invalid(e.message().to_owned()))?;
        for (name, raw) in env {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if NON_CONFIG_VARS.contains(&name.as_str()) {
                continue;
            }
            let path_parts: Vec<String> = key.split("__").map(|p| p.to_ascii_lowercase()).collect();
            set_path(&mut root, &path_parts, parse_env_value(&raw)).map_err(|m| invalid(format!("{name}: {m}")))?;
        }
        let mut config: Config = toml::Value::Table(root)
            .try_into()
            .map_err(|e: toml::de::Error| invalid(e.message().to_owned()))?;
        config.validate().map_err(|e| invalid(e.to_string()))?;
        Ok(config)
    }

    /// Check the rules serde cannot express and parse the domain values, once.
    fn validate(&mut self) -> Result<(), SectionError> {
        if self.max_body_bytes == 0 {
            return Err(SectionError::Rule("max_body_bytes must be positive"));
        }
        if self.audit.checkpoint_interval_secs == 0 || self.audit.verify_interval_secs == 0 {
            return Err(SectionError::Rule("audit intervals must be positive"));
        }
        if self.keys.dek_cache_capacity == 0 {
            return Err(SectionError::Rule("keys.dek_cache_capacity must be positive"));
        }
        if self.hsm.backend == HsmBackendKind::Tpm {
            return Err(SectionError::Rule(
                "hsm.backend = \"tpm\" is not implemented yet; use \"pkcs11\"",
            ));
        }
        if self.hsm.token_label.is_empty() {
            return Err(SectionError::Rule("hsm.token_label must not be empty"));
        }
        self.quorum = Option::<Quorum>::try_from(&self.governance)?;
        self.privacy_policy = PrivacyPolicy::try_from(&self.privacy)?;
        Ok(())
    }

    /// The `[governance]` quorum (`None`: governance not configured).
    pub fn quorum(&self) -> Option<&Quorum> {
        self.quorum.as_ref()
    }

    /// The `[privacy]` budget and per-query cap.
    pub fn privacy_policy(&self) -> PrivacyPolicy {
        self.privacy_policy
    }

    /// Read the HSM PIN from `hsm.pin_file`, ignoring trailing whitespace.
    pub fn read_pin(&self) -> Result<secrecy::SecretString, ConfigError> {
        let raw = std::fs::read_to_string(&self.hsm.pin_file).map_err(|source| ConfigError::Read {
            path: self.hsm.pin_file.clone(),
            source,
        })?;
        let pin = raw.trim_end().to_owned();
        if pin.is_empty() {
            return Err(ConfigError::Invalid {
                path: self.hsm.pin_file.clone(),
                message: "the PIN file is empty".into(),
            });
        }
        Ok(secrecy::SecretString::from(pin))
    }
}

/// An env value is TOML if it parses as one (`42`, `true`, `["a"]`, `0x10`), else a string.
fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// Why an environment override could not be applied.
#[derive(Debug, thiserror::Error)]
enum OverrideError {
    /// `STRONGROOM_` with nothing after it.
    #[error("empty key")]
    EmptyKey,
    /// A path through a non-table value.
    #[error("{0} is not a table")]
    NotATable(String),
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), OverrideError> {
    match path {
        [] => Err(OverrideError::EmptyKey),
        [last] => {
            // Keep strings as strings where the existing key is a string (e.g. "10.0").
            let value = match (table.get(last), value) {
                (Some(toml::Value::String(_)), v) if !v.is_str() => toml::Value::String(v.to_string()),
                (_, v) => v,
            };
            table.insert(last.clone(), value);
            Ok(())
        }
        [head, rest @ ..] => {
            let entry = table
                .entry(head.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => Err(OverrideError::NotATable(head.clone())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const BASE: &str = r#"
data_dir = "/tmp/x"
listen = "127.0.0.1:8443"
tls_cert = "c.pem"
tls_key = "k.pem"
bootstrap_token_file = "/tmp/x/bootstrap-token"
metrics_listen = "127.0.0.1:9464"
[hsm]
backend = "pkcs11"
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "strongroom"
pin_file = "/etc/strongroom/hsm-pin"
[tpm]
tcti = "swtpm:host=127.0.0.1,port=2321"
nv_index = 0x01500016
"#;

    #[test]
    fn env_overrides_nested_keys_and_numbers() {
        let env = vec![
            ("STRONGROOM_HSM__PIN_FILE".to_owned(), "/run/pin".to_owned()),
            ("STRONGROOM_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            ("STRONGROOM_TPM__NV_INDEX".to_owned(), "0x01500017".to_owned()),
            ("STRONGROOM_LOG".to_owned(), "debug".to_owned()),
            ("STRONGROOM_TEST_FAULT".to_owned(), "after_checkpoint_commit".to_owned()),
        ];
        let c = Config::from_toml_with_env(BASE, Path::new("x"), env.into_iter()).unwrap();
        let eps = vec![(
            "STRONGROOM_PRIVACY__TENANT_EPSILON_BUDGET".to_owned(),
            "12.5".to_owned(),
        )];
        let p = Config::from_toml_with_env(BASE, Path::new("x"), eps.into_iter()).unwrap();
        assert_eq!(p.privacy.tenant_epsilon_budget, "12.5");
        assert_eq!(p.privacy_policy().tenant_budget, Epsilon::from_micros(12_500_000));
        assert_eq!(c.hsm.pin_file, PathBuf::from("/run/pin"));
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.tpm.nv_index, 0x0150_0017);
    }

    #[test]
    fn governance_approvers_are_validated_at_load() {
        let pk = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
                .verifying_key()
                .as_bytes(),
        );
        let load = |t: &str, a: &str| {
            let env = vec![
                ("STRONGROOM_GOVERNANCE__THRESHOLD".to_owned(), t.to_owned()),
                ("STRONGROOM_GOVERNANCE__APPROVERS".to_owned(), a.to_owned()),
            ];
            Config::from_toml_with_env(BASE, Path::new("x"), env.into_iter())
        };
        let ok = load("1", &format!("[\"alice:ed25519:{pk}\"]")).unwrap();
        assert_eq!(ok.governance.threshold, 1);
        assert_eq!(ok.quorum().map(Quorum::threshold), Some(1));
        for (t, a, want) in [
            ("2", format!("[\"alice:ed25519:{pk}\"]"), "threshold"),
            ("0", format!("[\"alice:ed25519:{pk}\"]"), "threshold"),
            ("1", "[\"alice:ed25519:AAAA\"]".to_owned(), "32"),
            ("1", format!("[\"alice:rsa:{pk}\"]"), "ed25519"),
            (
                "1",
                format!("[\"alice:ed25519:{pk}\", \"alice:ed25519:{pk}\"]"),
                "twice",
            ),
        ] {
            let err = load(t, &a).unwrap_err().to_string();
            assert!(err.contains("governance") && err.contains(want), "{a}: {err}");
        }
        // No approvers: no governance, whatever the threshold.
        assert!(load("2", "[]").is_ok());
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = Config::from_toml_with_env(&format!("{BASE}\nbogus = 1"), Path::new("x"), std::iter::empty())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
    }
}
