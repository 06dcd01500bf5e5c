//! TPM 2.0 monotonic counter (tss-esapi): the hardware anchor against rollback of the data
//! directory (SPEC §7).
//!
//! Invariants kept here:
//! - the counter is an NV index of type *counter* **without** `TPMA_NV_ORDERLY` (an orderly
//!   counter skips forward after an unclean stop), owner/auth read+write, `NO_DA`, 8 bytes,
//!   SHA-256 name;
//! - [`TpmCounter::define`] never reuses an existing index, and [`TpmCounter::open`] refuses
//!   an index whose public area is not exactly the one `define` creates;
//! - the counter is only ever read or incremented, never written or undefined by this code.
//!
//! tss-esapi pitfalls handled here (see research/limits.md): commands without an
//! authorisation handle (`TR_FromTPMPublic`, `NV_ReadPublic`) run via
//! `execute_without_session`, because `tr_from_tpm_public` segfaults in tpm2-tss 3.2.1 when a
//! password session is set.

use std::fmt;
use std::str::FromStr;

use tss_esapi::attributes::{NvIndexAttributes, NvIndexAttributesBuilder};
use tss_esapi::constants::{CapabilityType, NvIndexType, Tss2ResponseCodeKind};
use tss_esapi::handles::{NvIndexHandle, NvIndexTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{CapabilityData, NvPublic, NvPublicBuilder};
use tss_esapi::{Context, TctiNameConf};

use crate::{HsmError, MonotonicCounter};

/// Size of the counter's data area.
const COUNTER_SIZE: u16 = 8;

/// Which TPM and which NV index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmConfig {
    /// TCTI configuration string, e.g. `device:/dev/tpmrm0` or `swtpm:host=127.0.0.1,port=2321`.
    pub tcti: String,
    /// NV index handle, `0x01000000..=0x01ffffff` (owner range `0x01500000..` recommended).
    pub nv_index: u32,
}

/// An open handle on the strongroom NV counter. Owned by one thread (see
/// [`crate::HsmWorker`]).
pub struct TpmCounter {
    ctx: Context,
    handle: NvIndexHandle,
    index: u32,
}

impl fmt::Debug for TpmCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TpmCounter")
            .field("nv_index", &format_args!("{:#010x}", self.index))
            .finish_non_exhaustive()
    }
}

fn rc_kind(e: &tss_esapi::Error) -> Option<Tss2ResponseCodeKind> {
    match e {
        tss_esapi::Error::Tss2Error(rc) => rc.kind(),
        tss_esapi::Error::WrapperError(_) => None,
    }
}

fn tpm(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> HsmError {
    move |e| HsmError::Tpm(format!("{op}: {e}"))
}

/// The attributes `define` gives the counter (before its first increment sets `WRITTEN`).
fn counter_attributes() -> Result<NvIndexAttributes, HsmError> {
    NvIndexAttributesBuilder::new()
        .with_nv_index_type(NvIndexType::Counter)
        .with_owner_read(true)
        .with_owner_write(true)
        .with_auth_read(true)
        .with_auth_write(true)
        .with_no_da(true)
        .with_orderly(false)
        .build()
        .map_err(tpm("build NV attributes"))
}

fn tpm_handle(index: u32) -> Result<NvIndexTpmHandle, HsmError> {
    NvIndexTpmHandle::new(index).map_err(|e| HsmError::Tpm(format!("{index:#010x} is not an NV index handle: {e}")))
}

/// Whether `public` is exactly what [`TpmCounter::define`] creates for `index` (the
/// `WRITTEN` bit may be either way).
fn is_our_counter(public: &NvPublic, index: u32) -> Result<bool, HsmError> {
    let expected = counter_attributes()?;
    let Ok(actual) = NvIndexAttributesBuilder::with_attributes(public.attributes())
        .with_written(false)
        .build()
    else {
        return Ok(false);
    };
    Ok(u32::from(public.nv_index()) == index
        && public.name_algorithm() == HashingAlgorithm::Sha256
        && public.data_size() == usize::from(COUNTER_SIZE)
        && public.authorization_policy().value().is_empty()
        && actual == expected)
}

impl TpmCounter {
    fn connect(tcti: &str) -> Result<Context, HsmError> {
        let conf = TctiNameConf::from_str(tcti).map_err(|e| HsmError::Tpm(format!("invalid TCTI {tcti:?}: {e}")))?;
        let mut ctx =
            Context::new(conf).map_err(|e| HsmError::Tpm(format!("cannot connect to TPM via {tcti:?}: {e}")))?;
        // Owner authorisation (empty owner auth) for NV_DefineSpace, NV_Increment, NV_Read.
        ctx.set_sessions((Some(AuthSession::Password), None, None));
        Ok(ctx)
    }

    /// Whether `index` is defined, from `TPM2_GetCapability(TPM_CAP_HANDLES)`: unlike
    /// `TR_FromTPMPublic`, asking about a missing index is not an error (which tpm2-tss would
    /// print to stderr).
    fn is_defined(ctx: &mut Context, index: u32) -> Result<bool, HsmError> {
        let (data, _more) = ctx
            .execute_without_session(|c| c.get_capability(CapabilityType::Handles, index, 1))
            .map_err(tpm("list NV indexes"))?;
        Ok(match data {
            CapabilityData::Handles(list) => list
                .iter()
                .any(|h| matches!(h, TpmHandle::NvIndex(nv) if u32::from(*nv) == index)),
            _ => false,
        })
    }

    /// Resolve the index to an ESAPI handle; `None` if it is not defined.
    fn lookup(ctx: &mut Context, index: u32) -> Result<Option<NvIndexHandle>, HsmError> {
        let tpm_handle = TpmHandle::NvIndex(tpm_handle(index)?);
        if !Self::is_defined(ctx, index)? {
            return Ok(None);
        }
        match ctx.execute_without_session(|c| c.tr_from_tpm_public(tpm_handle)) {
            Ok(h) => Ok(Some(NvIndexHandle::from(h))),
            Err(e) if rc_kind(&e) == Some(Tss2ResponseCodeKind::Handle) => Ok(None),
            Err(e) => Err(tpm("look up NV index")(e)),
        }
    }

    /// Define a fresh NV counter at `cfg.nv_index` and increment it once, so that
    /// [`MonotonicCounter::read`] works (a counter reads `TPM_RC_NV_UNINITIALIZED` until its
    /// first increment). Used by `strongroom init`.
    ///
    /// The TPM initialises a new counter to the highest value any counter on this TPM has
    /// ever had, so after `define` the value is that plus one: 1 on a fresh TPM, higher if
    /// a counter was undefined before (which is what makes undefine + redefine useless for
    /// rolling back).
    ///
    /// Fails with [`HsmError::CounterExists`] if the index is already defined.
    pub fn define(cfg: &TpmConfig) -> Result<Self, HsmError> {
        let mut ctx = Self::connect(&cfg.tcti)?;
        if Self::lookup(&mut ctx, cfg.nv_index)?.is_some() {
            return Err(HsmError::CounterExists(cfg.nv_index));
        }
        let public = NvPublicBuilder::new()
            .with_nv_index(tpm_handle(cfg.nv_index)?)
            .with_index_name_algorithm(HashingAlgorithm::Sha256)
            .with_index_attributes(counter_attributes()?)
            .with_data_area_size(usize::from(COUNTER_SIZE))
            .build()
            .map_err(tpm("build NV public area"))?;
        let handle = match ctx.nv_define_space(Provision::Owner, None, public) {
            Ok(h) => h,
            Err(e) if rc_kind(&e) == Some(Tss2ResponseCodeKind::NvDefined) => {
                return Err(HsmError::CounterExists(cfg.nv_index))
            }
            Err(e) => return Err(tpm("define NV counter")(e)),
        };
        let mut counter = Self {
            ctx,
            handle,
            index: cfg.nv_index,
        };
        let value = counter.increment()?;
        tracing::info!(
            nv_index = format_args!("{:#010x}", cfg.nv_index),
            value,
            "TPM NV counter defined"
        );
        Ok(counter)
    }

    /// Open the existing counter at `cfg.nv_index` and check that its public area is the
    /// one [`TpmCounter::define`] creates. Used by `serve`.
    ///
    /// [`HsmError::CounterMissing`] if the index is not defined; [`HsmError::CounterReplaced`]
    /// if it is not our kind of counter (wrong type, `ORDERLY`, other attributes, size,
    /// name algorithm or a policy).
    pub fn open(cfg: &TpmConfig) -> Result<Self, HsmError> {
        let mut ctx = Self::connect(&cfg.tcti)?;
        let handle = Self::lookup(&mut ctx, cfg.nv_index)?.ok_or(HsmError::CounterMissing(cfg.nv_index))?;
        let public = match ctx.execute_without_session(|c| c.nv_read_public(handle)) {
            Ok((public, _name)) => public,
            Err(e) if rc_kind(&e) == Some(Tss2ResponseCodeKind::Handle) => {
                return Err(HsmError::CounterMissing(cfg.nv_index))
            }
            // The public area does not even parse as a valid NV public (tss-esapi validates
            // the attributes): not ours.
            Err(tss_esapi::Error::WrapperError(_)) => return Err(HsmError::CounterReplaced(cfg.nv_index)),
            Err(e) => return Err(tpm("read NV public area")(e)),
        };
        if !is_our_counter(&public, cfg.nv_index)? {
            tracing::error!(
                nv_index = format_args!("{:#010x}", cfg.nv_index),
                attributes = ?public.attributes(),
                "TPM NV index is not a strongroom counter"
            );
            return Err(HsmError::CounterReplaced(cfg.nv_index));
        }
        Ok(Self {
            ctx,
            handle,
            index: cfg.nv_index,
        })
    }

    /// The NV index this counter lives at.
    pub fn nv_index(&self) -> u32 {
        self.index
    }

    /// Readiness probe: the TPM answers and the index is still defined.
    pub fn ping(&mut self) -> Result<(), HsmError> {
        let handle = self.handle;
        match self.ctx.execute_without_session(|c| c.nv_read_public(handle)) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.map_err("ping", e)),
        }
    }

    fn map_err(&self, op: &'static str, e: tss_esapi::Error) -> HsmError {
        match rc_kind(&e) {
            Some(Tss2ResponseCodeKind::Handle) => HsmError::CounterMissing(self.index),
            Some(Tss2ResponseCodeKind::NvUninitialized) => HsmError::Tpm(format!(
                "{op}: NV counter {:#010x} was defined but never incremented (interrupted init?)",
                self.index
            )),
            _ => tpm(op)(e),
        }
    }
}

impl MonotonicCounter for TpmCounter {
    fn read(&mut self) -> Result<u64, HsmError> {
        let data = match self.ctx.nv_read(NvAuth::Owner, self.handle, COUNTER_SIZE, 0) {
            Ok(d) => d,
            Err(e) => return Err(self.map_err("read NV counter", e)),
        };
        let bytes: [u8; COUNTER_SIZE as usize] = data.value().try_into().map_err(|_| {
            HsmError::Tpm(format!(
                "NV counter read returned {} bytes, expected 8",
                data.value().len()
            ))
        })?;
        Ok(u64::from_be_bytes(bytes))
    }

    fn increment(&mut self) -> Result<u64, HsmError> {
        if let Err(e) = self.ctx.nv_increment(NvAuth::Owner, self.handle) {
            return Err(self.map_err("increment NV counter", e));
        }
        self.read()
    }
}
