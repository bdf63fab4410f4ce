//! Recently seen message ids, to refuse an id reused for a different message.
//!
//! A client that retries a request sends the same id and payload: that is allowed (the
//! broker de-duplicates). The same id with another payload, or sent explicitly to another
//! provider than the one that took it, is almost certainly a client bug, and gets 409
//! `message_id_conflict`. (Nothing is lost when the memory misses one, after a restart or
//! once the id is forgotten: the broker de-duplicates on the tenant, the id *and* the
//! payload, see [`beamline_core::message`], so a different payload is stored as the
//! different message it is.)
//!
//! The check is atomic with the request: [`RecentIds::claim`] reserves a new id for its
//! payload at once, so of several requests racing with one id and different payloads only
//! the first goes ahead. The reservation ends when the request does: an accepted message
//! (published or queued) keeps its entry with the provider that took it
//! ([`Claim::accepted`]); a refused or failed one, or a request cancelled midway, frees it,
//! so a refused id stays free. Bounded: past `max` ids the oldest are forgotten first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use beamline_core::message::payload_fingerprint;
use beamline_core::{ProviderId, TenantId};

type Key = (TenantId, String);

#[derive(Debug)]
struct Entry {
    fingerprint: u64,
    /// The provider that accepted the message; `None` while the first request runs.
    provider: Option<ProviderId>,
    /// Its place in `order`.
    stamp: u64,
}

/// Entries by key, and their keys oldest first. A freed entry leaves its key in `order`
/// (stamped, so the key's next entry is not mistaken for it): freeing is O(1), and
/// `order` still bounds the memory.
#[derive(Debug, Default)]
struct Seen {
    by_id: HashMap<Key, Entry>,
    order: VecDeque<(Key, u64)>,
    next_stamp: u64,
}

/// The recent-id memory.
#[derive(Debug)]
pub struct RecentIds {
    max: usize,
    seen: Mutex<Seen>,
}

/// Why a message id cannot be used for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// It was used recently for another payload.
    Payload,
    /// The same message was accepted recently for another provider.
    Provider(ProviderId),
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conflict::Payload => {
                f.write_str("message_id was used recently with a different payload")
            }
            Conflict::Provider(p) => write!(
                f,
                "message_id was accepted recently for provider {p}; a retry must name the same provider or none"
            ),
        }
    }
}

/// A request's hold on its message id, until it ends.
#[derive(Debug)]
#[must_use = "dropping a claim without `accepted` frees the id"]
pub struct Claim<'a> {
    recent: &'a RecentIds,
    key: Option<Key>,
    fingerprint: u64,
    /// Whether this request reserved the id (rather than retrying an accepted message).
    reserved: bool,
    /// The provider that accepted this message before, if any.
    pub accepted_by: Option<ProviderId>,
}

impl RecentIds {
    /// Remembers at most `max` ids (0 disables the check).
    pub fn new(max: usize) -> Self {
        RecentIds {
            max,
            seen: Mutex::new(Seen::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks the id of a request for `payload` (to `explicit`, when the client named the
    /// provider) and holds it until the request ends.
    pub fn claim(
        &self,
        tenant: &TenantId,
        message_id: &str,
        payload: &[u8],
        explicit: Option<&ProviderId>,
    ) -> Result<Claim<'_>, Conflict> {
        let fingerprint = payload_fingerprint(payload);
        let mut claim = Claim {
            recent: self,
            key: None,
            fingerprint,
            reserved: false,
            accepted_by: None,
        };
        if self.max == 0 {
            return Ok(claim);
        }
        let key = (tenant.clone(), message_id.to_owned());
        let mut seen = self.lock();
        match seen.by_id.get(&key) {
            Some(entry) if entry.fingerprint != fingerprint => return Err(Conflict::Payload),
            Some(entry) => {
                if let (Some(before), Some(now)) = (&entry.provider, explicit)
                    && before != now
                {
                    return Err(Conflict::Provider(before.clone()));
                }
                claim.accepted_by = entry.provider.clone();
            }
            None => {
                seen.insert(key.clone(), fingerprint, None, self.max);
                claim.reserved = true;
            }
        }
        claim.key = Some(key);
        Ok(claim)
    }

    /// Forgets every id, in place.
    pub fn reset_all(&self) {
        *self.lock() = Seen::default();
    }
}

impl Seen {
    fn insert(&mut self, key: Key, fingerprint: u64, provider: Option<ProviderId>, max: usize) {
        while self.order.len() >= max {
            if let Some((old, stamp)) = self.order.pop_front()
                && self.by_id.get(&old).is_some_and(|e| e.stamp == stamp)
            {
                self.by_id.remove(&old);
            }
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.order.push_back((key.clone(), stamp));
        self.by_id.insert(
            key,
            Entry {
                fingerprint,
                provider,
                stamp,
            },
        );
    }
}

impl Claim<'_> {
    /// The message was accepted (published or queued) for `provider`: its id stays
    /// remembered with that provider.
    pub fn accepted(mut self, provider: &ProviderId) {
        let Some(key) = self.key.take() else {
            return;
        };
        let recent = self.recent;
        let mut seen = recent.lock();
        match seen.by_id.get_mut(&key) {
            Some(entry) if entry.fingerprint == self.fingerprint => {
                entry.provider.get_or_insert_with(|| provider.clone());
            }
            Some(_) => {}
            // Forgotten meanwhile (evicted, or freed by a racing retry that failed).
            None => seen.insert(key, self.fingerprint, Some(provider.clone()), recent.max),
        }
    }
}

impl Drop for Claim<'_> {
    /// A request that ends without [`Claim::accepted`] frees an id it reserved.
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        if !self.reserved {
            return;
        }
        let mut seen = self.recent.lock();
        let ours = seen
            .by_id
            .get(&key)
            .is_some_and(|e| e.fingerprint == self.fingerprint && e.provider.is_none());
        if ours {
            seen.by_id.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::try_new(s).unwrap()
    }

    fn p(s: &str) -> ProviderId {
        ProviderId::try_new(s).unwrap()
    }

    #[test]
    fn same_id_same_payload_is_fine_different_payload_is_not() {
        let r = RecentIds::new(2);
        r.claim(&t("t"), "a", b"1", None).unwrap().accepted(&p("p"));
        assert!(r.claim(&t("t"), "a", b"1", None).is_ok());
        assert_eq!(
            r.claim(&t("t"), "a", b"2", None).unwrap_err(),
            Conflict::Payload
        );
        assert!(
            r.claim(&t("u"), "a", b"2", None).is_ok(),
            "ids are per tenant"
        );
        r.claim(&t("t"), "b", b"1", None).unwrap().accepted(&p("p"));
        r.claim(&t("t"), "c", b"1", None).unwrap().accepted(&p("p"));
        assert!(
            r.claim(&t("t"), "a", b"3", None).is_ok(),
            "the oldest id was forgotten"
        );
    }

    #[test]
    fn a_retry_names_the_provider_that_took_the_message_or_none() {
        let r = RecentIds::new(10);
        r.claim(&t("t"), "a", b"1", Some(&p("p1")))
            .unwrap()
            .accepted(&p("p1"));
        let retry = r.claim(&t("t"), "a", b"1", None).unwrap();
        assert_eq!(retry.accepted_by, Some(p("p1")));
        drop(retry);
        assert!(r.claim(&t("t"), "a", b"1", Some(&p("p1"))).is_ok());
        assert_eq!(
            r.claim(&t("t"), "a", b"1", Some(&p("p2"))).unwrap_err(),
            Conflict::Provider(p("p1"))
        );
    }

    #[test]
    fn racing_requests_with_one_id_and_two_payloads_go_ahead_one_at_a_time() {
        let r = RecentIds::new(10);
        let first = r.claim(&t("t"), "a", b"1", None).unwrap();
        assert_eq!(
            r.claim(&t("t"), "a", b"2", None).unwrap_err(),
            Conflict::Payload,
            "held by the first request while it runs"
        );
        drop(first); // refused or failed: the id is free again
        r.claim(&t("t"), "a", b"2", None).unwrap().accepted(&p("p"));
        assert_eq!(
            r.claim(&t("t"), "a", b"1", None).unwrap_err(),
            Conflict::Payload
        );
    }

    #[test]
    fn a_retry_that_fails_does_not_free_an_accepted_message_id() {
        let r = RecentIds::new(10);
        r.claim(&t("t"), "a", b"1", None).unwrap().accepted(&p("p"));
        drop(r.claim(&t("t"), "a", b"1", None).unwrap());
        assert!(r.claim(&t("t"), "a", b"2", None).is_err());
    }
}
