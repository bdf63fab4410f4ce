//! Sticky sessions: `(tenant, session_id)` → provider, until the TTL after last use.
//!
//! Bounded at `max_sessions`: when full, expired sessions go first, then the one expiring
//! soonest. Expiry is lazy (checked on lookup) plus that eviction order, so memory never
//! exceeds the bound.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use beamline_core::{ProviderId, TenantId, Timestamp};

type Key = (TenantId, String);

#[derive(Debug, Default)]
struct Sessions {
    by_key: HashMap<Key, (ProviderId, Timestamp)>,
    by_expiry: BTreeSet<(Timestamp, Key)>,
}

/// The sticky-session store.
#[derive(Debug)]
pub struct StickyStore {
    max: usize,
    sessions: Mutex<Sessions>,
}

impl StickyStore {
    /// A store of at most `max` sessions.
    pub fn new(max: usize) -> Self {
        StickyStore {
            max: max.max(1),
            sessions: Mutex::new(Sessions::default()),
        }
    }

    /// The live session's provider.
    pub fn get(&self, tenant: &TenantId, session: &str, now: Timestamp) -> Option<ProviderId> {
        let s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let (provider, expires) = s.by_key.get(&(tenant.clone(), session.to_owned()))?;
        (now < *expires).then(|| provider.clone())
    }

    /// Binds the session to `provider` for `ttl` from `now`.
    pub fn put(
        &self,
        tenant: &TenantId,
        session: &str,
        provider: ProviderId,
        ttl: Duration,
        now: Timestamp,
    ) {
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let key = (tenant.clone(), session.to_owned());
        if let Some((_, old)) = s.by_key.remove(&key) {
            s.by_expiry.remove(&(old, key.clone()));
        }
        while s.by_key.len() >= self.max {
            let Some(first) = s.by_expiry.pop_first() else {
                break;
            };
            s.by_key.remove(&first.1);
        }
        let expires = now.add(ttl);
        s.by_expiry.insert((expires, key.clone()));
        s.by_key.insert(key, (provider, expires));
    }

    /// Live sessions (expired ones not yet evicted included).
    pub fn len(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_key
            .len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every session, in place.
    pub fn reset_all(&self) {
        *self.sessions.lock().unwrap_or_else(|p| p.into_inner()) = Sessions::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_after_their_ttl_and_the_store_stays_bounded() {
        let store = StickyStore::new(2);
        let t = TenantId::try_new("t").unwrap();
        let p = |s: &str| ProviderId::try_new(s).unwrap();
        let ttl = Duration::from_secs(10);
        store.put(&t, "s1", p("a"), ttl, Timestamp::from_millis(0));
        assert_eq!(
            store.get(&t, "s1", Timestamp::from_millis(9_999)),
            Some(p("a"))
        );
        assert_eq!(store.get(&t, "s1", Timestamp::from_millis(10_000)), None);
        store.put(&t, "s2", p("b"), ttl, Timestamp::from_millis(1));
        store.put(&t, "s3", p("c"), ttl, Timestamp::from_millis(2));
        assert_eq!(store.len(), 2);
        assert_eq!(
            store.get(&t, "s1", Timestamp::from_millis(3)),
            None,
            "soonest-expiring evicted"
        );
        store.put(&t, "s3", p("d"), ttl, Timestamp::from_millis(5));
        assert_eq!(store.get(&t, "s3", Timestamp::from_millis(6)), Some(p("d")));
        assert_eq!(store.len(), 2);
    }
}
