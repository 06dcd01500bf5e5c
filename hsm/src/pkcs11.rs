//! PKCS#11 backend (cryptoki): tier-1 tenant KEKs and the system Ed25519 signing key.
//!
//! Invariants kept here:
//! - every key this module generates is a token object that is `CKA_SENSITIVE`,
//!   non-extractable, non-copyable and non-modifiable, so its value never leaves the device
//!   (not even as a session copy that would outlive `C_DestroyObject`) and its label cannot
//!   be changed to another tenant's; KEKs are `CKA_DESTROYABLE`;
//! - a KEK is only addressed through its [`KekRef`] label, and a label that matches more than
//!   one object is an error, never a guess;
//! - AES-GCM nonces are 12 random bytes from the OS CSPRNG, fresh for every wrap;
//! - unwrapped key material only ever lives in [`Zeroizing`] buffers;
//! - the PIN is held as a [`SecretString`] and never appears in `Debug` output, logs or errors.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use rand::rngs::OsRng;
use rand::RngCore;
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::{HsmError, KekRef, KeyBackend, ED25519_PUBLIC_KEY_LEN, ED25519_SIGNATURE_LEN};

/// `CKA_LABEL` of the system audit checkpoint signing key pair (both halves carry it).
pub const SIGNING_KEY_LABEL: &str = "strongroom/system/audit-signing";

/// AES-GCM nonce length used by [`KeyBackend::wrap`].
pub const GCM_NONCE_LEN: usize = 12;
/// AES-GCM tag length used by [`KeyBackend::wrap`].
pub const GCM_TAG_LEN: usize = 16;

/// DER encoding of the Ed25519 curve OID 1.3.101.112 (RFC 8410), the `CKA_EC_PARAMS` that
/// SoftHSM 2.6.1 accepts for `CKM_EC_EDWARDS_KEY_PAIR_GEN`.
const ED25519_EC_PARAMS_OID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// Where the PKCS#11 module and token are, and how to log in.
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// Label of the token to use (without the blank padding).
    pub token_label: String,
    /// User PIN.
    pub pin: SecretString,
}

impl fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("pin", &"<redacted>")
            .finish()
    }
}

/// Security-relevant attributes of a key object, read back from the device (for checks and
/// tests; contains no key material).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyAttributes {
    /// `CKA_TOKEN`: persistent token object.
    pub token: bool,
    /// `CKA_PRIVATE`: only visible after login.
    pub private: bool,
    /// `CKA_SENSITIVE`.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`.
    pub extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`.
    pub always_sensitive: bool,
    /// `CKA_NEVER_EXTRACTABLE`.
    pub never_extractable: bool,
    /// `CKA_LOCAL`: generated inside the device.
    pub local: bool,
    /// `CKA_DESTROYABLE` (true when the device does not report it: the PKCS#11 default).
    pub destroyable: bool,
    /// `CKA_COPYABLE` (true when the device does not report it: the PKCS#11 default).
    pub copyable: bool,
    /// `CKA_MODIFIABLE` (true when the device does not report it: the PKCS#11 default).
    pub modifiable: bool,
    /// Whether `C_GetAttributeValue(CKA_VALUE)` would hand out the key value. Must be false.
    pub value_readable: bool,
}

/// A logged-in session on one PKCS#11 token. Owned by one thread (see [`crate::HsmWorker`]).
pub struct Pkcs11Backend {
    session: Session,
    slot: Slot,
    token_label: String,
    /// KEK object handles by label. Only a cache: a stale handle is looked up again.
    handles: HashMap<String, ObjectHandle>,
    /// The signing key pair once found: private handle and raw public key.
    signing: Option<(ObjectHandle, [u8; ED25519_PUBLIC_KEY_LEN])>,
}

impl fmt::Debug for Pkcs11Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Backend")
            .field("slot", &self.slot.id())
            .field("token_label", &self.token_label)
            .field("cached_keys", &self.handles.len())
            .finish_non_exhaustive()
    }
}

/// Short, secret-free description of a cryptoki error, e.g. `C_Decrypt: GeneralError`.
fn describe(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, func) => format!("C_{func:?}: {rv:?}"),
        other => other.to_string(),
    }
}

fn device(op: &'static str) -> impl FnOnce(CkError) -> HsmError {
    move |e| HsmError::Device {
        op,
        reason: describe(&e),
    }
}

fn rv_of(e: &CkError) -> Option<RvError> {
    match e {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// Load a PKCS#11 module and `C_Initialize` it with OS locking. A module that is already
/// initialised in this process is accepted as is.
pub fn load_module(module: &std::path::Path) -> Result<Pkcs11, HsmError> {
    let module_err = |e: CkError| HsmError::Module {
        module: module.display().to_string(),
        reason: describe(&e),
    };
    let ctx = Pkcs11::new(module).map_err(module_err)?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => {}
        Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, Function::Initialize)) => {}
        Err(e) => return Err(module_err(e)),
    }
    Ok(ctx)
}

/// Find the slot holding the initialised token labelled `label` (blank padding ignored).
/// Exactly one must match.
pub fn find_token_slot(ctx: &Pkcs11, label: &str) -> Result<Slot, HsmError> {
    let wanted = label.trim_end();
    let mut found = Vec::new();
    for slot in ctx.get_slots_with_token().map_err(device("list slots"))? {
        let info = ctx.get_token_info(slot).map_err(device("read token info"))?;
        if info.token_initialized() && info.label().trim_end() == wanted {
            found.push(slot);
        }
    }
    match found.as_slice() {
        [] => Err(HsmError::TokenNotFound(wanted.to_owned())),
        [slot] => Ok(*slot),
        many => Err(HsmError::Device {
            op: "find token",
            reason: format!("{} tokens are labelled {wanted:?}; labels must be unique", many.len()),
        }),
    }
}

impl Pkcs11Backend {
    /// Load the module, find the token by label, open a read-write session and log in as
    /// the user.
    pub fn open(cfg: &Pkcs11Config) -> Result<Self, HsmError> {
        let ctx = load_module(&cfg.module)?;
        Self::open_with(ctx, &cfg.token_label, &cfg.pin)
    }

    /// Like [`Pkcs11Backend::open`] on an already loaded and initialised module (one
    /// `C_Initialize` per process, shared by several backends).
    ///
    /// PKCS#11 login state belongs to the application, per token: if another session of
    /// this process is already logged in to the token, `C_Login` answers
    /// `CKR_USER_ALREADY_LOGGED_IN` without checking the PIN, and this is accepted. The PIN
    /// is therefore only verified by the first backend of a process on a token.
    pub fn open_with(ctx: Pkcs11, token_label: &str, pin: &SecretString) -> Result<Self, HsmError> {
        let slot = find_token_slot(&ctx, token_label)?;
        let session = ctx.open_rw_session(slot).map_err(device("open session"))?;
        match session.login(UserType::User, Some(pin)) {
            Ok(()) => {}
            // Login state is per application and token: another session of this process
            // already logged in.
            Err(e) if rv_of(&e) == Some(RvError::UserAlreadyLoggedIn) => {}
            Err(e) => {
                return Err(match rv_of(&e) {
                    Some(
                        rv @ (RvError::PinIncorrect
                        | RvError::PinInvalid
                        | RvError::PinLenRange
                        | RvError::PinLocked
                        | RvError::PinExpired
                        | RvError::UserPinNotInitialized
                        | RvError::UserTypeInvalid
                        | RvError::UserAnotherAlreadyLoggedIn),
                    ) => HsmError::Login(format!("{rv:?}")),
                    _ => HsmError::Login(describe(&e)),
                })
            }
        }
        tracing::debug!(token = token_label.trim_end(), slot = slot.id(), "PKCS#11 session open");
        Ok(Self {
            session,
            slot,
            token_label: token_label.trim_end().to_owned(),
            handles: HashMap::new(),
            signing: None,
        })
    }

    /// The label of the token this backend is logged in to.
    pub fn token_label(&self) -> &str {
        &self.token_label
    }

    /// Find the one AES secret key labelled `label` on the token (no cache).
    fn find_secret_key(&self, label: &str) -> Result<Option<ObjectHandle>, HsmError> {
        let found = self
            .session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(device("find key"))?;
        match found.as_slice() {
            [] => Ok(None),
            [h] => Ok(Some(*h)),
            many => Err(HsmError::Device {
                op: "find key",
                reason: format!("{} objects are labelled {label}; refusing to guess", many.len()),
            }),
        }
    }

    /// Handle of the KEK, from the cache or the device.
    fn kek_handle(&mut self, kek: KekRef<'_>) -> Result<ObjectHandle, HsmError> {
        let label = kek.label();
        if let Some(h) = self.handles.get(&label) {
            return Ok(*h);
        }
        match self.find_secret_key(&label)? {
            Some(h) => {
                self.handles.insert(label, h);
                Ok(h)
            }
            None => Err(HsmError::KeyNotFound(label)),
        }
    }

    /// Run `op` with the KEK's handle; if the cached handle went stale (the object was
    /// destroyed or replaced behind our back), look it up once more and retry.
    fn with_kek<T>(
        &mut self,
        kek: KekRef<'_>,
        op: impl Fn(&Session, ObjectHandle) -> Result<T, CkError>,
    ) -> Result<Result<T, CkError>, HsmError> {
        let h = self.kek_handle(kek)?;
        match op(&self.session, h) {
            Err(e)
                if rv_of(&e) == Some(RvError::ObjectHandleInvalid) || rv_of(&e) == Some(RvError::KeyHandleInvalid) =>
            {
                self.handles.remove(&kek.label());
                let h = self.kek_handle(kek)?;
                Ok(op(&self.session, h))
            }
            other => Ok(other),
        }
    }

    /// Read back the security attributes of a tenant KEK (for checks and tests).
    pub fn tenant_key_attributes(&mut self, kek: KekRef<'_>) -> Result<KeyAttributes, HsmError> {
        let h = self.kek_handle(kek)?;
        self.key_attributes(h)
    }

    /// Read back the security attributes of the signing private key (for checks and tests).
    pub fn signing_key_attributes(&mut self) -> Result<KeyAttributes, HsmError> {
        self.signing_public_key()?;
        match self.signing {
            Some((h, _)) => self.key_attributes(h),
            None => Err(HsmError::KeyNotFound(SIGNING_KEY_LABEL.to_owned())),
        }
    }

    fn key_attributes(&self, h: ObjectHandle) -> Result<KeyAttributes, HsmError> {
        let types = [
            AttributeType::Token,
            AttributeType::Private,
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::AlwaysSensitive,
            AttributeType::NeverExtractable,
            AttributeType::Local,
            AttributeType::Destroyable,
            AttributeType::Copyable,
            AttributeType::Modifiable,
        ];
        let attrs = self
            .session
            .get_attributes(h, &types)
            .map_err(device("read key attributes"))?;
        let flag = |t: AttributeType| -> Option<bool> {
            attrs.iter().find_map(|a| match (t, a) {
                (AttributeType::Token, Attribute::Token(v))
                | (AttributeType::Private, Attribute::Private(v))
                | (AttributeType::Sensitive, Attribute::Sensitive(v))
                | (AttributeType::Extractable, Attribute::Extractable(v))
                | (AttributeType::AlwaysSensitive, Attribute::AlwaysSensitive(v))
                | (AttributeType::NeverExtractable, Attribute::NeverExtractable(v))
                | (AttributeType::Local, Attribute::Local(v))
                | (AttributeType::Destroyable, Attribute::Destroyable(v))
                | (AttributeType::Copyable, Attribute::Copyable(v))
                | (AttributeType::Modifiable, Attribute::Modifiable(v)) => Some(*v),
                _ => None,
            })
        };
        let required = |t: AttributeType| -> Result<bool, HsmError> {
            flag(t).ok_or_else(|| HsmError::Device {
                op: "read key attributes",
                reason: format!("device did not report {t:?}"),
            })
        };
        // cryptoki's get_attributes silently drops a sensitive CKA_VALUE, so ask for the
        // attribute info instead: Available means the value would be handed out.
        let value = self
            .session
            .get_attribute_info(h, &[AttributeType::Value])
            .map_err(device("read key attributes"))?;
        let value_readable = matches!(value.first(), Some(AttributeInfo::Available(_)));
        Ok(KeyAttributes {
            token: required(AttributeType::Token)?,
            private: required(AttributeType::Private)?,
            sensitive: required(AttributeType::Sensitive)?,
            extractable: required(AttributeType::Extractable)?,
            always_sensitive: required(AttributeType::AlwaysSensitive)?,
            never_extractable: required(AttributeType::NeverExtractable)?,
            local: required(AttributeType::Local)?,
            destroyable: flag(AttributeType::Destroyable).unwrap_or(true),
            copyable: flag(AttributeType::Copyable).unwrap_or(true),
            modifiable: flag(AttributeType::Modifiable).unwrap_or(true),
            value_readable,
        })
    }

    /// Find the signing key pair: `(private, public)` handles, each optional.
    fn find_signing_pair(&self) -> Result<(Option<ObjectHandle>, Option<ObjectHandle>), HsmError> {
        let find = |class: ObjectClass| -> Result<Option<ObjectHandle>, HsmError> {
            let found = self
                .session
                .find_objects(&[
                    Attribute::Class(class),
                    Attribute::KeyType(KeyType::EC_EDWARDS),
                    Attribute::Label(SIGNING_KEY_LABEL.as_bytes().to_vec()),
                ])
                .map_err(device("find signing key"))?;
            match found.as_slice() {
                [] => Ok(None),
                [h] => Ok(Some(*h)),
                many => Err(HsmError::Device {
                    op: "find signing key",
                    reason: format!(
                        "{} {class} objects are labelled {SIGNING_KEY_LABEL}; refusing to guess",
                        many.len()
                    ),
                }),
            }
        };
        Ok((find(ObjectClass::PRIVATE_KEY)?, find(ObjectClass::PUBLIC_KEY)?))
    }

    fn generate_signing_pair(&self) -> Result<(ObjectHandle, ObjectHandle), HsmError> {
        let label = SIGNING_KEY_LABEL.as_bytes().to_vec();
        let public = [
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC_EDWARDS),
            Attribute::EcParams(ED25519_EC_PARAMS_OID.to_vec()),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::Derive(false),
            Attribute::Label(label.clone()),
        ];
        let private = [
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC_EDWARDS),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Copyable(false),
            Attribute::Modifiable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Label(label),
        ];
        let (public, private) = self
            .session
            .generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public, &private)
            .map_err(device("generate signing key"))?;
        Ok((private, public))
    }

    fn read_ed25519_public(&self, h: ObjectHandle) -> Result<[u8; ED25519_PUBLIC_KEY_LEN], HsmError> {
        let attrs = self
            .session
            .get_attributes(h, &[AttributeType::EcPoint])
            .map_err(device("read signing public key"))?;
        let point = attrs
            .iter()
            .find_map(|a| match a {
                Attribute::EcPoint(p) => Some(p.as_slice()),
                _ => None,
            })
            .ok_or(HsmError::Device {
                op: "read signing public key",
                reason: "device did not report CKA_EC_POINT".to_owned(),
            })?;
        parse_ec_point(point).ok_or_else(|| HsmError::Device {
            op: "read signing public key",
            reason: format!("CKA_EC_POINT of {} bytes is not an Ed25519 point", point.len()),
        })
    }
}

/// `CKA_EC_POINT` of an Ed25519 key: the DER OCTET STRING `04 20 <32 bytes>` (PKCS#11 3.0),
/// or the raw 32 bytes some modules return.
fn parse_ec_point(point: &[u8]) -> Option<[u8; ED25519_PUBLIC_KEY_LEN]> {
    let raw = match point {
        [0x04, 0x20, rest @ ..] if rest.len() == ED25519_PUBLIC_KEY_LEN => rest,
        raw if raw.len() == ED25519_PUBLIC_KEY_LEN => raw,
        _ => return None,
    };
    raw.try_into().ok()
}

/// Whether a `C_Decrypt` error means "this blob does not authenticate under this key and
/// AAD" (as opposed to a session or device failure). SoftHSM reports a GCM tag mismatch as
/// `CKR_GENERAL_ERROR`.
fn is_auth_failure(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::GeneralError
            | RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::DataInvalid
            | RvError::DataLenRange
            | RvError::MechanismParamInvalid
    )
}

impl KeyBackend for Pkcs11Backend {
    fn create_tenant_key(&mut self, kek: KekRef<'_>) -> Result<(), HsmError> {
        let label = kek.label();
        if self.find_secret_key(&label)?.is_some() {
            return Err(HsmError::KeyExists(label));
        }
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Destroyable(true),
            // A session copy of a token key survives C_DestroyObject of the original
            // (measured on SoftHSM); forbid copies so destroy really destroys.
            Attribute::Copyable(false),
            // Nobody relabels a KEK into another tenant's or version's name.
            Attribute::Modifiable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
            Attribute::Label(label.clone().into_bytes()),
        ];
        let h = self
            .session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(device("generate tenant key"))?;
        self.handles.insert(label, h);
        Ok(())
    }

    fn tenant_key_exists(&mut self, kek: KekRef<'_>) -> Result<bool, HsmError> {
        // Always ask the device: the cache cannot see a key destroyed by another process.
        let label = kek.label();
        match self.find_secret_key(&label)? {
            Some(h) => {
                self.handles.insert(label, h);
                Ok(true)
            }
            None => {
                self.handles.remove(&label);
                Ok(false)
            }
        }
    }

    fn wrap(&mut self, kek: KekRef<'_>, key_material: &[u8], aad: &[u8]) -> Result<Vec<u8>, HsmError> {
        let mut nonce = [0u8; GCM_NONCE_LEN];
        OsRng.try_fill_bytes(&mut nonce).map_err(|e| HsmError::Device {
            op: "generate nonce",
            reason: e.to_string(),
        })?;
        let ciphertext = self
            .with_kek(kek, |s, h| {
                let mut iv = nonce;
                let params = GcmParams::new(&mut iv, aad, (GCM_TAG_LEN as u64 * 8).into())?;
                s.encrypt(&Mechanism::AesGcm(params), h, key_material)
            })?
            .map_err(device("wrap"))?;
        let mut out = Vec::with_capacity(GCM_NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    fn unwrap(&mut self, kek: KekRef<'_>, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        if wrapped.len() < GCM_NONCE_LEN + GCM_TAG_LEN {
            return Err(HsmError::UnwrapFailed);
        }
        let (nonce, ciphertext) = wrapped.split_at(GCM_NONCE_LEN);
        let result = self.with_kek(kek, |s, h| {
            let mut iv = [0u8; GCM_NONCE_LEN];
            iv.copy_from_slice(nonce);
            let params = GcmParams::new(&mut iv, aad, (GCM_TAG_LEN as u64 * 8).into())?;
            s.decrypt(&Mechanism::AesGcm(params), h, ciphertext).map(Zeroizing::new)
        })?;
        match result {
            Ok(plain) => Ok(plain),
            Err(e) => match rv_of(&e) {
                Some(rv) if is_auth_failure(rv) => Err(HsmError::UnwrapFailed),
                _ => Err(device("unwrap")(e)),
            },
        }
    }

    fn destroy_tenant_key(&mut self, kek: KekRef<'_>) -> Result<(), HsmError> {
        let label = kek.label();
        self.handles.remove(&label);
        let Some(h) = self.find_secret_key(&label)? else {
            return Ok(());
        };
        match self.session.destroy_object(h) {
            Ok(()) => {}
            // Destroyed concurrently by someone else: the goal is reached.
            Err(e) if rv_of(&e) == Some(RvError::ObjectHandleInvalid) => {}
            Err(e) => return Err(device("destroy tenant key")(e)),
        }
        if self.find_secret_key(&label)?.is_some() {
            return Err(HsmError::Device {
                op: "destroy tenant key",
                reason: format!("{label} still present after C_DestroyObject"),
            });
        }
        Ok(())
    }

    fn signing_public_key(&mut self) -> Result<[u8; ED25519_PUBLIC_KEY_LEN], HsmError> {
        if let Some((_, public)) = self.signing {
            return Ok(public);
        }
        let (private, public) = match self.find_signing_pair()? {
            (Some(private), Some(public)) => (private, public),
            (None, None) => {
                tracing::info!(label = SIGNING_KEY_LABEL, "generating the system Ed25519 signing key");
                self.generate_signing_pair()?
            }
            // Never silently replace half a key pair: earlier checkpoints must stay verifiable.
            (private, _) => {
                return Err(HsmError::Device {
                    op: "find signing key",
                    reason: format!(
                        "only the {} half of {SIGNING_KEY_LABEL} exists; refusing to generate a new pair",
                        if private.is_some() { "private" } else { "public" }
                    ),
                })
            }
        };
        let raw = self.read_ed25519_public(public)?;
        self.signing = Some((private, raw));
        Ok(raw)
    }

    fn sign(&mut self, message: &[u8]) -> Result<[u8; ED25519_SIGNATURE_LEN], HsmError> {
        self.signing_public_key()?;
        let Some((h, _)) = self.signing else {
            return Err(HsmError::KeyNotFound(SIGNING_KEY_LABEL.to_owned()));
        };
        let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let sig = match self.session.sign(&mechanism, h, message) {
            Err(e)
                if rv_of(&e) == Some(RvError::ObjectHandleInvalid) || rv_of(&e) == Some(RvError::KeyHandleInvalid) =>
            {
                // Stale handle: find the pair again (never regenerate here).
                self.signing = None;
                match self.find_signing_pair()? {
                    (Some(private), Some(public)) => {
                        let raw = self.read_ed25519_public(public)?;
                        self.signing = Some((private, raw));
                        self.session.sign(&mechanism, private, message)
                    }
                    _ => return Err(HsmError::KeyNotFound(SIGNING_KEY_LABEL.to_owned())),
                }
            }
            other => other,
        }
        .map_err(device("sign"))?;
        sig.as_slice().try_into().map_err(|_| HsmError::Device {
            op: "sign",
            reason: format!("signature of {} bytes, expected {ED25519_SIGNATURE_LEN}", sig.len()),
        })
    }

    fn ping(&mut self) -> Result<(), HsmError> {
        let info = self.session.get_session_info().map_err(device("ping"))?;
        match info.session_state() {
            SessionState::RwUser => Ok(()),
            other => Err(HsmError::Device {
                op: "ping",
                reason: format!("session is {other:?}, expected a logged-in read-write user session"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_forms() {
        let mut der = vec![0x04, 0x20];
        der.extend_from_slice(&[7u8; 32]);
        assert_eq!(parse_ec_point(&der), Some([7u8; 32]));
        assert_eq!(parse_ec_point(&[9u8; 32]), Some([9u8; 32]));
        assert_eq!(parse_ec_point(&der[..33]), None);
        assert_eq!(parse_ec_point(&[0x04, 0x21, 1, 2]), None);
    }

    #[test]
    fn config_debug_redacts_pin() {
        let cfg = Pkcs11Config {
            module: PathBuf::from("/x.so"),
            token_label: "t".to_owned(),
            pin: SecretString::from("hunter2-very-secret"),
        };
        let s = format!("{cfg:?}");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("redacted"));
    }
}
