//! Validated identifiers and the breaker key.
//!
//! Tenant and provider ids arrive from HTTP bodies, config files and trace files; they are
//! parsed here once, at the edge, into newtypes that are cheap to clone (one pointer to a
//! shared allocation). Rule for both: 1 to [`MAX_ID_LEN`] characters from
//! `[A-Za-z0-9_-]`. The charset keeps ids safe as NATS subject tokens
//! (`beamline.provider.<provider_id>`: no `.`, `*`, `>` or whitespace), as Prometheus label
//! values and as file names.
//!
//! An id carries its hash, computed once when it is parsed, with a seed drawn at random
//! for the process (so a tenant cannot choose ids that collide in the router's tables).
//! Hashing an id, or a [`BreakerKey`], reads no string: the breaker registry finds a key
//! among hundreds of thousands without touching the bytes of any id but, rarely, two
//! whose hashes are equal. The hash is not stable across processes; nothing persists it.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, LazyLock};

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

/// The process's seed for id hashes.
static ID_HASHER: LazyLock<foldhash::fast::RandomState> = LazyLock::new(Default::default);

/// An id's text and its hash, shared by every clone of the id.
#[derive(PartialEq, Eq)]
struct IdInner {
    hash: u64,
    text: Box<str>,
}

impl IdInner {
    fn new(s: &str) -> Arc<Self> {
        Arc::new(IdInner {
            hash: ID_HASHER.hash_one(s),
            text: s.into(),
        })
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Eq)]
        pub struct $name(Arc<IdInner>);

        impl std::hash::Hash for $name {
            #[inline]
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                // Equal ids have equal text, hence equal hashes: consistent with `eq`.
                state.write_u64(self.0.hash);
            }
        }

        impl PartialEq for $name {
            #[inline]
            fn eq(&self, other: &Self) -> bool {
                // Ids handed around by the router usually share one allocation (from the
                // policy store, or the key a request looked up): comparing pointers first
                // skips reading the text, and different hashes mean different text.
                Arc::ptr_eq(&self.0, &other.0)
                    || (self.0.hash == other.0.hash && self.0.text == other.0.text)
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            /// By text, as the ids read.
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.as_str().cmp(other.as_str())
            }
        }

        impl $name {
            /// Parses and validates an id.
            pub fn try_new(s: &str) -> Result<Self, IdError> {
                validate_id(s)?;
                Ok($name(IdInner::new(s)))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0.text
            }

            /// The id's hash (see the module doc): equal ids have equal hashes.
            #[inline]
            pub fn hash64(&self) -> u64 {
                self.0.hash
            }

            /// The address of the id's shared allocation: equal for clones of one parse,
            /// different for any two ids alive at once that are not.
            #[inline]
            pub fn allocation(&self) -> usize {
                Arc::as_ptr(&self.0) as usize
            }

            /// An id the crate knows to be valid, not checked.
            pub(crate) fn known_valid(s: &str) -> Self {
                debug_assert!(validate_id(s).is_ok(), "{s:?}");
                $name(IdInner::new(s))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.as_str(), f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
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
                s.serialize_str(self.as_str())
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
///
/// It carries its hash (computed from its ids' when it is made), so that hashing it reads
/// nothing but the key itself.
#[derive(Clone, Debug, Eq, Serialize, Deserialize)]
#[serde(from = "KeyFields", into = "KeyFields")]
pub struct BreakerKey {
    tenant: TenantId,
    provider: ProviderId,
    hash: u64,
}

/// How a key is written: its two ids.
#[derive(Serialize, Deserialize)]
struct KeyFields {
    tenant: TenantId,
    provider: ProviderId,
}

impl From<KeyFields> for BreakerKey {
    fn from(k: KeyFields) -> Self {
        BreakerKey::new(k.tenant, k.provider)
    }
}

impl From<BreakerKey> for KeyFields {
    fn from(k: BreakerKey) -> Self {
        KeyFields {
            tenant: k.tenant,
            provider: k.provider,
        }
    }
}

impl BreakerKey {
    /// The key of `tenant`'s breaker for `provider`.
    pub fn new(tenant: TenantId, provider: ProviderId) -> Self {
        // A folded multiply of the two (already uniform) hashes, each offset so that
        // neither factor is zero for any id but with probability 2^-64.
        let t = tenant.hash64() ^ 0x243F_6A88_85A3_08D3;
        let p = provider.hash64() ^ 0x1319_8A2E_0370_7344;
        let m = u128::from(t) * u128::from(p);
        let hash = (m as u64) ^ ((m >> 64) as u64);
        BreakerKey {
            tenant,
            provider,
            hash,
        }
    }

    /// The tenant.
    #[inline]
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The provider.
    #[inline]
    pub fn provider(&self) -> &ProviderId {
        &self.provider
    }

    /// The key's hash, from its ids' (see the module doc): equal keys have equal hashes,
    /// and every bit depends on both ids.
    #[inline]
    pub fn hash64(&self) -> u64 {
        self.hash
    }

    /// The addresses of its ids' allocations ([`TenantId::allocation`]): two keys alive at
    /// once with the same addresses are equal, without reading any id.
    #[inline]
    pub fn allocations(&self) -> [usize; 2] {
        [self.tenant.allocation(), self.provider.allocation()]
    }
}

impl PartialEq for BreakerKey {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.tenant == other.tenant && self.provider == other.provider
    }
}

impl std::hash::Hash for BreakerKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialOrd for BreakerKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for BreakerKey {
    /// By tenant, then provider.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.tenant, &self.provider).cmp(&(&other.tenant, &other.provider))
    }
}

impl fmt::Display for BreakerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.provider)
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
    fn ids_parsed_apart_are_equal_hash_alike_and_order_by_text() {
        let (a, b) = (
            TenantId::try_new("acme").unwrap(),
            TenantId::try_new("acme").unwrap(),
        );
        assert_ne!(a.allocation(), b.allocation());
        assert_eq!(a.allocation(), a.clone().allocation());
        assert_eq!(a, b);
        assert_eq!(a.hash64(), b.hash64());
        let c = TenantId::try_new("acmf").unwrap();
        assert_ne!(a, c);
        assert!(a < c && TenantId::try_new("b").unwrap() > c);
        let p = ProviderId::try_new("p").unwrap();
        let k1 = BreakerKey::new(a.clone(), p.clone());
        let k2 = BreakerKey::new(b, p.clone());
        assert_eq!(k1.hash64(), k2.hash64());
        // Swapping the roles of the two hashes gives another key hash.
        let swapped = BreakerKey::new(
            TenantId::try_new("p").unwrap(),
            ProviderId::try_new("acme").unwrap(),
        );
        assert_ne!(k1.hash64(), swapped.hash64());
    }

    #[test]
    fn deserialization_validates() {
        let ok: TenantId = serde_json::from_str("\"t1\"").unwrap();
        assert_eq!(ok.as_str(), "t1");
        assert!(serde_json::from_str::<TenantId>("\"t 1\"").is_err());
    }
}
