//! The durable outbox (DESIGN.md §5): where a message goes when no provider can take it
//! now, so that the router can still answer `202 queued` and keep its promise that an
//! accepted message will be in the stream.
//!
//! # Guarantees
//! - **Durable before acknowledged**: [`Outbox::append`] returns only after the write
//!   transaction holding the message has committed with fsync, group-committed with every
//!   other append waiting at that moment (see `beamline_store::RecordLog`), so throughput
//!   holds under concurrency.
//! - **Ordered per key**: each `(tenant_id, provider_id)` has a FIFO queue ordered by a
//!   global sequence number; [`Outbox::head`] is always the oldest message of its key.
//!   The caller delivers heads one at a time per key and [`Outbox::remove`]s them after the
//!   broker's ack; a crash between the ack and the removal redelivers the message, which
//!   the broker de-duplicates by message id.
//! - **Bounded**: at `capacity` messages, appends fail with [`OutboxError::Full`] (the
//!   router answers 503): nothing is ever dropped silently.
//! - **Idempotent**: appending a message identical to one still waiting (same tenant,
//!   message id and payload: the same delivery id, [`beamline_core::message`]) stores
//!   nothing and returns the waiting one's sequence number, even when the outbox is full:
//!   a client retrying a queued message is told it is queued, and takes no second slot.
//!   (Two identical appends racing may both be stored; the broker de-duplicates them.)
//! - **Survives restarts**: [`Outbox::open`] rebuilds the in-memory index from the file.
//!
//! The outbox takes wall-clock times (`now_unix_ms`) from its caller: ages must survive a
//! restart, and the core rule holds that only the service shell reads clocks.
//!
//! One process at a time: redb locks the file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use beamline_core::{BreakerKey, ProviderId, TenantId};
use beamline_store::{RecordLog, StoreError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Outbox failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    /// The outbox holds `capacity` messages.
    #[error("the outbox is full ({capacity} messages)")]
    Full {
        /// The capacity.
        capacity: usize,
    },
    /// The storage failed; the message was not stored.
    #[error("outbox storage failed: {0}")]
    Storage(String),
    /// The outbox is shutting down.
    #[error("the outbox is closed")]
    Closed,
}

impl From<StoreError> for OutboxError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Storage(s) => OutboxError::Storage(s),
            StoreError::Closed => OutboxError::Closed,
        }
    }
}

fn storage(e: impl std::fmt::Display) -> OutboxError {
    OutboxError::Storage(e.to_string())
}

/// A message to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    /// Tenant.
    pub tenant: TenantId,
    /// Provider.
    pub provider: ProviderId,
    /// Message id.
    pub message_id: String,
    /// Payload bytes.
    pub payload: Bytes,
    /// When it was accepted (wall clock, ms since the Unix epoch).
    pub enqueued_unix_ms: u64,
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Sequence number (global, increasing).
    pub seq: u64,
    /// The message.
    pub message: NewMessage,
}

#[derive(Serialize, Deserialize)]
struct Record {
    tenant: String,
    provider: String,
    message_id: String,
    payload: Vec<u8>,
    enqueued_unix_ms: u64,
}

impl Record {
    fn encode(m: &NewMessage) -> Result<Vec<u8>, OutboxError> {
        let r = Record {
            tenant: m.tenant.to_string(),
            provider: m.provider.to_string(),
            message_id: m.message_id.clone(),
            payload: m.payload.to_vec(),
            enqueued_unix_ms: m.enqueued_unix_ms,
        };
        serde_json::to_vec(&r).map_err(storage)
    }

    fn decode(bytes: &[u8]) -> Result<NewMessage, OutboxError> {
        let r: Record = serde_json::from_slice(bytes).map_err(storage)?;
        Ok(NewMessage {
            tenant: TenantId::try_new(&r.tenant).map_err(storage)?,
            provider: ProviderId::try_new(&r.provider).map_err(storage)?,
            message_id: r.message_id,
            payload: Bytes::from(r.payload),
            enqueued_unix_ms: r.enqueued_unix_ms,
        })
    }
}

/// One key's backlog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyBacklog {
    /// Tenant.
    pub tenant_id: String,
    /// Provider.
    pub provider_id: String,
    /// Messages waiting.
    pub depth: usize,
    /// When the oldest waiting message was accepted (ms since the Unix epoch).
    pub oldest_enqueued_unix_ms: u64,
}

/// Waiting messages per key, ordered by sequence number (`seq → enqueued_unix_ms`).
/// Appends committed in one batch may reach the index in any order; the map keeps them in
/// sequence order anyway.
#[derive(Debug, Default)]
struct Index {
    queues: HashMap<BreakerKey, BTreeMap<u64, u64>>,
    by_seq: BTreeMap<u64, (BreakerKey, String)>,
    /// Delivery id → sequence number of the waiting message.
    by_delivery_id: HashMap<String, u64>,
}

impl Index {
    fn insert(&mut self, seq: u64, m: &NewMessage, delivery_id: String) {
        let key = BreakerKey::new(m.tenant.clone(), m.provider.clone());
        self.queues
            .entry(key.clone())
            .or_default()
            .insert(seq, m.enqueued_unix_ms);
        self.by_delivery_id
            .entry(delivery_id.clone())
            .or_insert(seq);
        self.by_seq.insert(seq, (key, delivery_id));
    }

    fn remove(&mut self, seq: u64) {
        let Some((key, delivery_id)) = self.by_seq.remove(&seq) else {
            return;
        };
        if self.by_delivery_id.get(&delivery_id) == Some(&seq) {
            self.by_delivery_id.remove(&delivery_id);
        }
        if let Some(q) = self.queues.get_mut(&key) {
            q.remove(&seq);
            if q.is_empty() {
                self.queues.remove(&key);
            }
        }
    }
}

impl NewMessage {
    fn delivery_id(&self) -> String {
        beamline_core::message::delivery_id(self.tenant.as_str(), &self.message_id, &self.payload)
    }
}

/// The outbox. Cheap to share (`Arc` inside).
#[derive(Debug, Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    log: RecordLog,
    index: Mutex<Index>,
    reserved: AtomicUsize,
    capacity: usize,
}

impl Outbox {
    /// Opens (or creates) the outbox file at `path`, holding at most `capacity` messages.
    pub fn open(path: &Path, capacity: usize) -> Result<Outbox, OutboxError> {
        let (log, existing) = RecordLog::open(path)?;
        let mut index = Index::default();
        for (seq, bytes) in existing {
            let m = Record::decode(&bytes)?;
            index.insert(seq, &m, m.delivery_id());
        }
        let reserved = AtomicUsize::new(index.by_seq.len());
        Ok(Outbox {
            inner: Arc::new(Inner {
                log,
                index: Mutex::new(index),
                reserved,
                capacity,
            }),
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.inner.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `message` durably; returns its sequence number once committed (or the
    /// sequence number of the identical message already waiting).
    pub async fn append(&self, message: NewMessage) -> Result<u64, OutboxError> {
        let delivery_id = message.delivery_id();
        if let Some(seq) = self.index().by_delivery_id.get(&delivery_id) {
            return Ok(*seq);
        }
        let capacity = self.inner.capacity;
        let reserved = &self.inner.reserved;
        if reserved
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < capacity).then_some(n + 1)
            })
            .is_err()
        {
            return Err(OutboxError::Full { capacity });
        }
        let stored = match Record::encode(&message) {
            Ok(bytes) => self
                .inner
                .log
                .append(bytes)
                .await
                .map_err(OutboxError::from),
            Err(e) => Err(e),
        };
        match stored {
            Ok(seq) => {
                self.index().insert(seq, &message, delivery_id);
                Ok(seq)
            }
            Err(e) => {
                reserved.fetch_sub(1, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    /// Removes a delivered message (durably, group-committed like appends).
    pub async fn remove(&self, seq: u64) -> Result<(), OutboxError> {
        self.inner.log.remove(seq).await?;
        let mut index = self.index();
        if index.by_seq.contains_key(&seq) {
            index.remove(seq);
            self.inner.reserved.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(())
    }

    /// The keys that have messages waiting, oldest head first.
    pub fn keys(&self) -> Vec<BreakerKey> {
        let index = self.index();
        let mut heads: Vec<(u64, BreakerKey)> = index
            .queues
            .iter()
            .filter_map(|(k, q)| q.keys().next().map(|s| (*s, k.clone())))
            .collect();
        heads.sort_unstable_by_key(|(s, _)| *s);
        heads.into_iter().map(|(_, k)| k).collect()
    }

    /// Whether `key` has messages waiting.
    pub fn has_backlog(&self, key: &BreakerKey) -> bool {
        self.index().queues.get(key).is_some_and(|q| !q.is_empty())
    }

    /// The oldest message waiting for `key`.
    pub fn head(&self, key: &BreakerKey) -> Result<Option<StoredMessage>, OutboxError> {
        let Some(seq) = self
            .index()
            .queues
            .get(key)
            .and_then(|q| q.keys().next().copied())
        else {
            return Ok(None);
        };
        let Some(bytes) = self.inner.log.get(seq)? else {
            return Ok(None);
        };
        Ok(Some(StoredMessage {
            seq,
            message: Record::decode(&bytes)?,
        }))
    }

    /// Messages waiting, in total.
    pub fn depth(&self) -> usize {
        self.index().by_seq.len()
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Every key's backlog, sorted by key.
    pub fn backlog(&self) -> Vec<KeyBacklog> {
        let index = self.index();
        let mut out: Vec<KeyBacklog> = index
            .queues
            .iter()
            .filter_map(|(k, q)| {
                let oldest = q.values().min().copied()?;
                Some(KeyBacklog {
                    tenant_id: k.tenant().to_string(),
                    provider_id: k.provider().to_string(),
                    depth: q.len(),
                    oldest_enqueued_unix_ms: oldest,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.tenant_id, &a.provider_id).cmp(&(&b.tenant_id, &b.provider_id)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tenant: &str, provider: &str, id: &str) -> NewMessage {
        NewMessage {
            tenant: TenantId::try_new(tenant).unwrap(),
            provider: ProviderId::try_new(provider).unwrap(),
            message_id: id.into(),
            payload: Bytes::from_static(b"{\"x\":1}"),
            enqueued_unix_ms: 1000,
        }
    }

    fn key(tenant: &str, provider: &str) -> BreakerKey {
        BreakerKey::new(
            TenantId::try_new(tenant).unwrap(),
            ProviderId::try_new(provider).unwrap(),
        )
    }

    #[tokio::test]
    async fn messages_survive_a_reopen_in_order_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.redb");
        {
            let outbox = Outbox::open(&path, 10).unwrap();
            outbox.append(msg("t", "p", "a")).await.unwrap();
            outbox.append(msg("t", "q", "b")).await.unwrap();
            outbox.append(msg("t", "p", "c")).await.unwrap();
            assert_eq!(outbox.depth(), 3);
        }
        let outbox = Outbox::open(&path, 10).unwrap();
        assert_eq!(outbox.depth(), 3);
        assert_eq!(outbox.keys(), vec![key("t", "p"), key("t", "q")]);
        let head = outbox.head(&key("t", "p")).unwrap().unwrap();
        assert_eq!(head.message.message_id, "a");
        outbox.remove(head.seq).await.unwrap();
        assert_eq!(
            outbox
                .head(&key("t", "p"))
                .unwrap()
                .unwrap()
                .message
                .message_id,
            "c"
        );
        let later = outbox.append(msg("t", "p", "d")).await.unwrap();
        assert!(
            later > head.seq,
            "sequence numbers keep increasing after a reopen"
        );
    }

    #[tokio::test]
    async fn a_full_outbox_refuses_and_frees_room_on_removal() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("o.redb"), 2).unwrap();
        let first = outbox.append(msg("t", "p", "a")).await.unwrap();
        outbox.append(msg("t", "p", "b")).await.unwrap();
        assert_eq!(
            outbox.append(msg("t", "p", "c")).await,
            Err(OutboxError::Full { capacity: 2 })
        );
        outbox.remove(first).await.unwrap();
        outbox.append(msg("t", "p", "c")).await.unwrap();
        assert_eq!(outbox.backlog()[0].depth, 2);
    }

    #[tokio::test]
    async fn a_message_already_waiting_is_not_stored_twice_even_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.redb");
        let outbox = Outbox::open(&path, 2).unwrap();
        let a = outbox.append(msg("t", "p", "a")).await.unwrap();
        assert_eq!(outbox.append(msg("t", "p", "a")).await, Ok(a));
        outbox.append(msg("t", "p", "b")).await.unwrap();
        assert_eq!(outbox.depth(), 2);
        assert_eq!(
            outbox.append(msg("t", "p", "a")).await,
            Ok(a),
            "a retry of a queued message is queued, full or not"
        );
        assert_eq!(
            outbox.append(msg("u", "p", "a")).await,
            Err(OutboxError::Full { capacity: 2 }),
            "another tenant's message with the same id is another message"
        );
        drop(outbox);
        let outbox = Outbox::open(&path, 2).unwrap();
        assert_eq!(
            outbox.append(msg("t", "p", "a")).await,
            Ok(a),
            "after a reopen"
        );
        outbox.remove(a).await.unwrap();
        let again = outbox.append(msg("t", "p", "a")).await.unwrap();
        assert!(
            again > a,
            "once delivered, the same message may be queued anew"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_are_group_committed_and_all_stored() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("o.redb"), 10_000).unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let o = outbox.clone();
                tokio::spawn(async move {
                    o.append(msg("t", &format!("p{}", i % 4), &i.to_string()))
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(outbox.depth(), 200);
    }
}
