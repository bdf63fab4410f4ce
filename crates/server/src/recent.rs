//! Recently seen message ids, to refuse an id reused with a different payload.
//!
//! A client that retries a request sends the same id and payload: that is allowed (the
//! broker de-duplicates). The same id with another payload is almost certainly a client
//! bug that would silently drop the second message inside the broker's duplicate window,
//! so it gets 409 `message_id_conflict`. Only accepted messages (published or queued) are
//! remembered, so a refused id stays free. Bounded: the oldest ids are forgotten first.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use beamline_core::TenantId;

#[derive(Debug, Default)]
struct Seen {
    by_id: HashMap<(TenantId, String), u64>,
    order: VecDeque<(TenantId, String)>,
}

/// The recent-id memory.
#[derive(Debug)]
pub struct RecentIds {
    max: usize,
    seen: Mutex<Seen>,
}

/// Fingerprint of a payload.
fn fingerprint(payload: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    payload.hash(&mut h);
    h.finish()
}

impl RecentIds {
    /// Remembers at most `max` ids (0 disables the check).
    pub fn new(max: usize) -> Self {
        RecentIds {
            max,
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Whether the id was accepted recently with a different payload.
    pub fn conflicts(&self, tenant: &TenantId, message_id: &str, payload: &[u8]) -> bool {
        if self.max == 0 {
            return false;
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let key = (tenant.clone(), message_id.to_owned());
        seen.by_id
            .get(&key)
            .is_some_and(|print| *print != fingerprint(payload))
    }

    /// Records an accepted message's id and payload (refused requests are not recorded, so
    /// a refused id stays free).
    pub fn remember(&self, tenant: &TenantId, message_id: &str, payload: &[u8]) {
        if self.max == 0 {
            return;
        }
        let key = (tenant.clone(), message_id.to_owned());
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.by_id.contains_key(&key) {
            return;
        }
        while seen.order.len() >= self.max {
            if let Some(old) = seen.order.pop_front() {
                seen.by_id.remove(&old);
            }
        }
        seen.order.push_back(key.clone());
        seen.by_id.insert(key, fingerprint(payload));
    }

    /// Forgets every id, in place.
    pub fn reset_all(&self) {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Seen::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_id_same_payload_is_fine_different_payload_is_not() {
        let r = RecentIds::new(2);
        let t = TenantId::try_new("t").unwrap();
        assert!(!r.conflicts(&t, "a", b"1"));
        r.remember(&t, "a", b"1");
        assert!(!r.conflicts(&t, "a", b"1"));
        assert!(r.conflicts(&t, "a", b"2"));
        assert!(
            !r.conflicts(&TenantId::try_new("u").unwrap(), "a", b"2"),
            "ids are per tenant"
        );
        r.remember(&t, "b", b"1");
        r.remember(&t, "c", b"1");
        assert!(!r.conflicts(&t, "a", b"3"), "the oldest id was forgotten");
    }
}
