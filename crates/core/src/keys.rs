//! Validated identifiers and the breaker key.
//!
//! Tenant and provider ids arrive from HTTP bodies, config files and trace files; they are
//! parsed here once, at the edge, into newtypes that are cheap to clone (`Arc<str>`).
//! Rule for both: 1 to [`MAX_ID_LEN`] characters from `[A-Za-z0-9_-]`. The charset keeps
//! ids safe as NATS subject tokens (`beamline.provider.<provider_id>`: no `.`, `*`, `>` or
//! whitespace), as Prometheus label values and as file names.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest accepted tenant or provider id, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is the empty string.
    #[error("must not be empty")]
    Empty,
    /// The id is longer than [`MAX_ID_LEN`].
    #[error("is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Length of the rejected id in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The id holds a character outside `[A-Za-z0-9_-]`.
    #[error("has a character outside [A-Za-z0-9_-] at byte {position}")]
    InvalidChar {
        /// Byte offset of the first offending character.
        position: usize,
    },
}

fn validate_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            len: s.len(),
            max: MAX_ID_LEN,
        });
    }
    match s
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    {
        Some(position) => Err(IdError::InvalidChar { position }),
        None => Ok(()),
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Eq, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                // As `str` hashes: consistent with `eq`, which compares the bytes.
                (*self.0).hash(state);
            }
        }

        impl PartialEq for $name {
            #[inline]
            fn eq(&self, other: &Self) -> bool {
                // Ids handed around by the router usually share one allocation (from the
                // policy store): comparing pointers first skips reading the bytes.
                Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
            }
        }

        impl $name {
            /// Parses and validates an id.
            pub fn try_new(s: &str) -> Result<Self, IdError> {
                validate_id(s)?;
                Ok($name(Arc::from(s)))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::try_new(s)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::try_new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::try_new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A tenant: the customer whose messages are routed.
    TenantId
);
id_type!(
    /// A provider: a destination with its own subject, `beamline.provider.<id>`.
    ProviderId
);

/// The key of one circuit breaker: `(tenant_id, provider_id)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BreakerKey {
    /// The tenant.
    pub tenant: TenantId,
    /// The provider.
    pub provider: ProviderId,
}

impl BreakerKey {
    /// The key of `tenant`'s breaker for `provider`.
    pub fn new(tenant: TenantId, provider: ProviderId) -> Self {
        BreakerKey { tenant, provider }
    }
}

impl fmt::Display for BreakerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.provider)
    }
}

impl hashbrown::Equivalent<BreakerKey> for (&str, &str) {
    fn equivalent(&self, key: &BreakerKey) -> bool {
        self.0 == key.tenant.as_str() && self.1 == key.provider.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ids_within_the_charset_and_length() {
        assert!(TenantId::try_new("acme-prod_1").is_ok());
        assert!(ProviderId::try_new(&"p".repeat(MAX_ID_LEN)).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_subject_breaking_ids() {
        assert_eq!(TenantId::try_new(""), Err(IdError::Empty));
        assert!(matches!(
            ProviderId::try_new(&"p".repeat(MAX_ID_LEN + 1)),
            Err(IdError::TooLong { .. })
        ));
        for bad in ["a.b", "a*", ">", "a b", "tab\t", "é", "nul\0"] {
            assert!(ProviderId::try_new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn deserialization_validates() {
        let ok: TenantId = serde_json::from_str("\"t1\"").unwrap();
        assert_eq!(ok.as_str(), "t1");
        assert!(serde_json::from_str::<TenantId>("\"t 1\"").is_err());
    }
}
