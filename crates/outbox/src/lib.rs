//! The durable outbox (DESIGN.md §5): where a message goes when no provider can take it
//! now, so that the router can still answer `202 queued` and keep its promise that an
//! accepted message will be in the stream.
//!
//! # Guarantees
//! - **Durable before acknowledged**: [`Outbox::append`] returns only after the write
//!   transaction holding the message has committed with fsync (redb `Durability::Immediate`).
//!   Appends are group-committed: one writer thread takes every append waiting at that
//!   moment into one transaction, so throughput holds under concurrency.
//! - **Ordered per key**: each `(tenant_id, provider_id)` has a FIFO queue ordered by a
//!   global sequence number; [`Outbox::head`] is always the oldest message of its key.
//!   The caller delivers heads one at a time per key and [`Outbox::remove`]s them after the
//!   broker's ack; a crash between the ack and the removal redelivers the message, which
//!   the broker de-duplicates by message id.
//! - **Bounded**: at `capacity` messages, appends fail with [`OutboxError::Full`] (the
//!   router answers 503): nothing is ever dropped silently.
//! - **Survives restarts**: [`Outbox::open`] rebuilds the in-memory index from the file.
//!
//! The outbox takes wall-clock times (`now_unix_ms`) from its caller: ages must survive a
//! restart, and the core rule holds that only the service shell reads clocks.
//!
//! One process at a time: redb locks the file.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use beamline_core::{BreakerKey, ProviderId, TenantId};
use bytes::Bytes;
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// Most operations one group commit takes.
const MAX_BATCH: usize = 4096;

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

#[derive(Debug, Default)]
struct Index {
    queues: HashMap<BreakerKey, VecDeque<(u64, u64)>>,
    keys_by_seq: BTreeMap<u64, BreakerKey>,
}

impl Index {
    fn insert(&mut self, seq: u64, key: BreakerKey, enqueued: u64) {
        self.queues
            .entry(key.clone())
            .or_default()
            .push_back((seq, enqueued));
        self.keys_by_seq.insert(seq, key);
    }

    fn remove(&mut self, seq: u64) -> bool {
        let Some(key) = self.keys_by_seq.remove(&seq) else {
            return false;
        };
        if let Some(q) = self.queues.get_mut(&key) {
            q.retain(|(s, _)| *s != seq);
            if q.is_empty() {
                self.queues.remove(&key);
            }
        }
        true
    }
}

enum Op {
    Append(NewMessage, oneshot::Sender<Result<u64, OutboxError>>),
    Remove(u64, oneshot::Sender<Result<(), OutboxError>>),
}

/// The outbox. Cheap to share (`Arc` inside).
#[derive(Debug, Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Arc<Database>,
    index: Arc<Mutex<Index>>,
    reserved: Arc<AtomicUsize>,
    capacity: usize,
    ops: Mutex<Option<mpsc::Sender<Op>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = writer.join();
        }
    }
}

impl Outbox {
    /// Opens (or creates) the outbox file at `path`, holding at most `capacity` messages.
    pub fn open(path: &Path, capacity: usize) -> Result<Outbox, OutboxError> {
        let db = Arc::new(Database::create(path).map_err(storage)?);
        let mut index = Index::default();
        {
            let txn = db.begin_write().map_err(storage)?;
            txn.open_table(MESSAGES).map_err(storage)?; // create on first open
            txn.commit().map_err(storage)?;
            let read = db.begin_read().map_err(storage)?;
            let table = read.open_table(MESSAGES).map_err(storage)?;
            for item in table.iter().map_err(storage)? {
                let (seq, bytes) = item.map_err(storage)?;
                let m = Record::decode(bytes.value())?;
                index.insert(
                    seq.value(),
                    BreakerKey::new(m.tenant, m.provider),
                    m.enqueued_unix_ms,
                );
            }
        }
        let next_seq = index.keys_by_seq.keys().next_back().map_or(1, |s| s + 1);
        let reserved = Arc::new(AtomicUsize::new(index.keys_by_seq.len()));
        let index = Arc::new(Mutex::new(index));
        let (tx, rx) = mpsc::channel();
        let writer = {
            let (db, index) = (Arc::clone(&db), Arc::clone(&index));
            std::thread::Builder::new()
                .name("outbox-writer".into())
                .spawn(move || write_loop(&db, &index, rx, next_seq))
                .map_err(storage)?
        };
        Ok(Outbox {
            inner: Arc::new(Inner {
                db,
                index,
                reserved,
                capacity,
                ops: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    fn send(&self, op: Op) -> Result<(), OutboxError> {
        let ops = self.inner.ops.lock().unwrap_or_else(|p| p.into_inner());
        ops.as_ref()
            .ok_or(OutboxError::Closed)?
            .send(op)
            .map_err(|_| OutboxError::Closed)
    }

    /// Stores `message` durably; returns its sequence number once committed.
    pub async fn append(&self, message: NewMessage) -> Result<u64, OutboxError> {
        let capacity = self.inner.capacity;
        let taken = self
            .inner
            .reserved
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < capacity).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(OutboxError::Full { capacity });
        }
        let (reply, answer) = oneshot::channel();
        let result = match self.send(Op::Append(message, reply)) {
            Ok(()) => answer.await.unwrap_or(Err(OutboxError::Closed)),
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.inner.reserved.fetch_sub(1, Ordering::SeqCst);
        }
        result
    }

    /// Removes a delivered message (durably, group-committed like appends).
    pub async fn remove(&self, seq: u64) -> Result<(), OutboxError> {
        let (reply, answer) = oneshot::channel();
        self.send(Op::Remove(seq, reply))?;
        let result = answer.await.unwrap_or(Err(OutboxError::Closed));
        if result.is_ok() {
            self.inner.reserved.fetch_sub(1, Ordering::SeqCst);
        }
        result
    }

    /// The keys that have messages waiting, oldest head first.
    pub fn keys(&self) -> Vec<BreakerKey> {
        let index = self.inner.index.lock().unwrap_or_else(|p| p.into_inner());
        let mut heads: Vec<(u64, BreakerKey)> = index
            .queues
            .iter()
            .filter_map(|(k, q)| q.front().map(|(s, _)| (*s, k.clone())))
            .collect();
        heads.sort_unstable_by_key(|(s, _)| *s);
        heads.into_iter().map(|(_, k)| k).collect()
    }

    /// Whether `key` has messages waiting.
    pub fn has_backlog(&self, key: &BreakerKey) -> bool {
        let index = self.inner.index.lock().unwrap_or_else(|p| p.into_inner());
        index.queues.get(key).is_some_and(|q| !q.is_empty())
    }

    /// The oldest message waiting for `key`.
    pub fn head(&self, key: &BreakerKey) -> Result<Option<StoredMessage>, OutboxError> {
        let seq = {
            let index = self.inner.index.lock().unwrap_or_else(|p| p.into_inner());
            match index.queues.get(key).and_then(|q| q.front()) {
                Some((seq, _)) => *seq,
                None => return Ok(None),
            }
        };
        let read = self.inner.db.begin_read().map_err(storage)?;
        let table = read.open_table(MESSAGES).map_err(storage)?;
        let Some(bytes) = table.get(seq).map_err(storage)? else {
            return Ok(None);
        };
        Ok(Some(StoredMessage {
            seq,
            message: Record::decode(bytes.value())?,
        }))
    }

    /// Messages waiting, in total.
    pub fn depth(&self) -> usize {
        self.inner
            .index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys_by_seq
            .len()
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Every key's backlog, sorted by key.
    pub fn backlog(&self) -> Vec<KeyBacklog> {
        let index = self.inner.index.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<KeyBacklog> = index
            .queues
            .iter()
            .filter_map(|(k, q)| {
                let oldest = q.iter().map(|(_, t)| *t).min()?;
                Some(KeyBacklog {
                    tenant_id: k.tenant.to_string(),
                    provider_id: k.provider.to_string(),
                    depth: q.len(),
                    oldest_enqueued_unix_ms: oldest,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.tenant_id, &a.provider_id).cmp(&(&b.tenant_id, &b.provider_id)));
        out
    }
}

fn write_loop(db: &Database, index: &Mutex<Index>, rx: mpsc::Receiver<Op>, mut next_seq: u64) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut seqs = Vec::with_capacity(batch.len());
        let committed = (|| -> Result<(), OutboxError> {
            let txn = db.begin_write().map_err(storage)?;
            {
                let mut table = txn.open_table(MESSAGES).map_err(storage)?;
                let mut seq = next_seq;
                for op in &batch {
                    match op {
                        Op::Append(m, _) => {
                            table
                                .insert(seq, Record::encode(m)?.as_slice())
                                .map_err(storage)?;
                            seqs.push(seq);
                            seq += 1;
                        }
                        Op::Remove(s, _) => {
                            table.remove(*s).map_err(storage)?;
                            seqs.push(*s);
                        }
                    }
                }
            }
            txn.commit().map_err(storage)
        })();
        if committed.is_ok() {
            next_seq += batch
                .iter()
                .filter(|op| matches!(op, Op::Append(..)))
                .count() as u64;
        }
        let mut idx = index.lock().unwrap_or_else(|p| p.into_inner());
        for (op, seq) in batch
            .into_iter()
            .zip(seqs.into_iter().map(Some).chain(std::iter::repeat(None)))
        {
            match op {
                Op::Append(m, reply) => {
                    let result = match (&committed, seq) {
                        (Ok(()), Some(seq)) => {
                            idx.insert(
                                seq,
                                BreakerKey::new(m.tenant, m.provider),
                                m.enqueued_unix_ms,
                            );
                            Ok(seq)
                        }
                        (Err(e), _) => Err(e.clone()),
                        (Ok(()), None) => Err(OutboxError::Storage("no sequence assigned".into())),
                    };
                    let _ = reply.send(result);
                }
                Op::Remove(s, reply) => {
                    let result = match &committed {
                        Ok(()) => {
                            if idx.remove(s) {
                                Ok(())
                            } else {
                                Err(OutboxError::Storage(format!("no message {s}")))
                            }
                        }
                        Err(e) => Err(e.clone()),
                    };
                    let _ = reply.send(result);
                }
            }
        }
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
