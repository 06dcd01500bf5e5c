//! Validated identifiers. Invariant: a value of these types always matches
//! `[A-Za-z0-9._:-]{1,128}` (SPEC §9), so it can be embedded in keys, labels and AADs
//! with a one-byte length prefix and no escaping.

use std::fmt;

/// Maximum id length in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Why an id was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {kind}: must match [A-Za-z0-9._:-]{{1,128}}")]
pub struct IdError {
    /// Which kind of id.
    pub kind: &'static str,
}

fn valid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

macro_rules! id_type {
    ($name:ident, $kind:literal) => {
        #[doc = concat!("A validated ", $kind, ".")]
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parse and validate.
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                if valid(&s) {
                    Ok(Self(s))
                } else {
                    Err(IdError { kind: $kind })
                }
            }
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

id_type!(TenantId, "tenant id");
id_type!(EntityId, "entity id");
id_type!(RecordId, "record id");

/// A principal name such as `user:jdoe`. The whole string obeys the id charset (the
/// `:` separating kind and name is part of it).
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Actor(String);

impl Actor {
    /// Parse and validate.
    pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        if valid(&s) {
            Ok(Self(s))
        } else {
            Err(IdError { kind: "actor" })
        }
    }
    /// The actor as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for Actor {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(s)
    }
}
impl From<Actor> for String {
    fn from(v: Actor) -> String {
        v.0
    }
}
impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Actor({:?})", self.0)
    }
}

/// Render a path segment for an audit event's `resource` field: the id if it is a valid
/// id, else a marker, so garbage input is never copied into the log.
pub fn loggable_id(raw: &str) -> &str {
    if EntityId::parse(raw).is_ok() {
        raw
    } else {
        "<invalid>"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_spec_charset_and_rejects_the_rest() {
        assert!(TenantId::parse("acme-1.eu_x:y").is_ok());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse("a/b").is_err());
        assert!(TenantId::parse("a b").is_err());
        assert!(TenantId::parse("é").is_err());
        assert!(TenantId::parse("a".repeat(128)).is_ok());
        assert!(TenantId::parse("a".repeat(129)).is_err());
    }
}
