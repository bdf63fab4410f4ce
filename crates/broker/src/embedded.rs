//! The embedded broker: an in-process stand-in for NATS JetStream.
//!
//! It keeps the contract the router relies on: one stream for every provider subject, a
//! sequence number per stored message, and de-duplication by delivery id
//! ([`OutgoingMessage::delivery_id`], JetStream's `Nats-Msg-Id`): a repeated id is
//! acknowledged with `duplicate = true` and the original sequence, never stored twice.
//! It is bounded: past `max_messages` it refuses with [`ErrorKind::StreamFull`], like a
//! JetStream stream with `discard: new`. The read-back API ([`EmbeddedBroker::messages`],
//! [`EmbeddedBroker::count_by_id`]) is what tests and the scenario runner check delivery
//! guarantees against.
//!
//! Opened with a file ([`EmbeddedBroker::open`]), it is durable: a publish is acknowledged
//! only once its record is committed with fsync (group-committed, `beamline_store`), and
//! the stream is reloaded on restart, so "acknowledged means stored" holds across a crash
//! of the router that embeds it. While a delivery id's write is in flight, a second
//! publish of the same id waits for it, so an id is never acknowledged twice nor stored
//! twice.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use beamline_core::ErrorKind;
use beamline_store::RecordLog;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use beamline_core::message::delivery_id;

use crate::{OutgoingMessage, PublishAck, PublishError, Publisher, subject_for};

/// The embedded stream's name.
pub const EMBEDDED_STREAM: &str = "BEAMLINE";

/// A message as stored by the embedded broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoredMessage {
    /// Stream sequence, from 1.
    pub sequence: u64,
    /// The subject it was published to.
    pub subject: String,
    /// The tenant.
    pub tenant_id: String,
    /// The client's message id.
    pub message_id: String,
    /// The id it was de-duplicated on.
    pub delivery_id: String,
    /// The payload.
    #[serde(skip)]
    pub payload: Bytes,
}

#[derive(Serialize, Deserialize)]
struct Record {
    subject: String,
    tenant_id: String,
    message_id: String,
    payload: Vec<u8>,
}

#[derive(Debug)]
enum IdState {
    Stored(u64),
    Writing(Arc<Notify>),
}

#[derive(Debug, Default)]
struct Stream {
    messages: BTreeMap<u64, StoredMessage>,
    /// By delivery id.
    by_id: HashMap<String, IdState>,
    writing: usize,
    next_seq: u64,
}

/// Opening the durable store failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the embedded broker's store: {0}")]
pub struct OpenError(String);

/// The in-process broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    stream: Mutex<Stream>,
    max_messages: usize,
    log: Option<RecordLog>,
}

impl EmbeddedBroker {
    /// An in-memory broker storing at most `max_messages` messages.
    pub fn new(max_messages: usize) -> Self {
        EmbeddedBroker {
            stream: Mutex::new(Stream {
                next_seq: 1,
                ..Stream::default()
            }),
            max_messages,
            log: None,
        }
    }

    /// A durable broker whose stream lives in the file at `path` (reloaded if present).
    pub fn open(path: &Path, max_messages: usize) -> Result<Self, OpenError> {
        let (log, existing) = RecordLog::open(path).map_err(|e| OpenError(e.to_string()))?;
        let mut stream = Stream::default();
        for (sequence, bytes) in existing {
            let r: Record = serde_json::from_slice(&bytes)
                .map_err(|e| OpenError(format!("record {sequence}: {e}")))?;
            let delivery_id = delivery_id(&r.tenant_id, &r.message_id, &r.payload);
            if stream.by_id.contains_key(&delivery_id) {
                continue; // a cancelled write that committed after all: the first one counts
            }
            stream
                .by_id
                .insert(delivery_id.clone(), IdState::Stored(sequence));
            let m = StoredMessage {
                sequence,
                subject: r.subject,
                tenant_id: r.tenant_id,
                message_id: r.message_id,
                delivery_id,
                payload: Bytes::from(r.payload),
            };
            stream.messages.insert(sequence, m);
        }
        Ok(EmbeddedBroker {
            stream: Mutex::new(stream),
            max_messages,
            log: Some(log),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stream> {
        self.stream.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every stored message, in sequence order, optionally for one subject only.
    pub fn messages(&self, subject: Option<&str>) -> Vec<StoredMessage> {
        let stream = self.lock();
        stream
            .messages
            .values()
            .filter(|m| subject.is_none_or(|s| m.subject == s))
            .cloned()
            .collect()
    }

    /// How many stored messages carry the client id `message_id` (for one tenant's unique
    /// ids: 0 or 1, de-duplication at work).
    pub fn count_by_id(&self, message_id: &str) -> usize {
        self.lock()
            .messages
            .values()
            .filter(|m| m.message_id == message_id)
            .count()
    }

    /// Number of stored messages.
    pub fn len(&self) -> usize {
        self.lock().messages.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every message in memory, in place (a durable store keeps its file).
    pub fn reset_all(&self) {
        let mut stream = self.lock();
        let next_seq = stream
            .messages
            .keys()
            .next_back()
            .map_or(stream.next_seq, |s| s + 1);
        *stream = Stream {
            next_seq,
            ..Stream::default()
        };
    }

    async fn store(&self, message: &OutgoingMessage) -> Result<u64, PublishError> {
        let subject = subject_for(&message.provider);
        match &self.log {
            None => {
                let mut stream = self.lock();
                let sequence = stream.next_seq;
                stream.next_seq += 1;
                Ok(sequence)
            }
            Some(log) => {
                let record = Record {
                    subject,
                    tenant_id: message.tenant.to_string(),
                    message_id: message.message_id.clone(),
                    payload: message.payload.to_vec(),
                };
                let bytes = serde_json::to_vec(&record)
                    .map_err(|e| PublishError::new(ErrorKind::BrokerUnavailable, e.to_string()))?;
                log.append(bytes)
                    .await
                    .map_err(|e| PublishError::new(ErrorKind::BrokerUnavailable, e.to_string()))
            }
        }
    }
}

/// An id's write in flight. If the publish is cancelled (its caller timed out) before the
/// write settles, dropping this frees the id and the capacity it held, so nothing waits
/// forever; the write may still commit, and a reopen keeps the first record of an id.
/// Waiters are woken either way.
struct Pending<'a> {
    broker: &'a EmbeddedBroker,
    delivery_id: &'a str,
    notify: Arc<Notify>,
    settled: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.settled {
            let mut stream = self.broker.lock();
            stream.writing -= 1;
            stream.by_id.remove(self.delivery_id);
        }
        self.notify.notify_waiters();
    }
}

#[async_trait]
impl Publisher for EmbeddedBroker {
    async fn publish(&self, message: &OutgoingMessage) -> Result<PublishAck, PublishError> {
        let delivery_id = message.delivery_id();
        let notify = loop {
            let notified = {
                let mut stream = self.lock();
                match stream.by_id.get(&delivery_id) {
                    Some(IdState::Stored(sequence)) => {
                        return Ok(PublishAck {
                            stream: EMBEDDED_STREAM.into(),
                            sequence: *sequence,
                            duplicate: true,
                        });
                    }
                    // Registered under the lock: the writer's wake-up cannot be missed.
                    Some(IdState::Writing(notify)) => Arc::clone(notify).notified_owned(),
                    None => {
                        if stream.messages.len() + stream.writing >= self.max_messages {
                            return Err(PublishError::new(
                                ErrorKind::StreamFull,
                                "embedded stream is full",
                            ));
                        }
                        let notify = Arc::new(Notify::new());
                        stream
                            .by_id
                            .insert(delivery_id.clone(), IdState::Writing(Arc::clone(&notify)));
                        stream.writing += 1;
                        break notify;
                    }
                }
            };
            notified.await;
        };
        let mut pending = Pending {
            broker: self,
            delivery_id: &delivery_id,
            notify,
            settled: false,
        };
        let stored = self.store(message).await;
        let mut stream = self.lock();
        stream.writing -= 1;
        pending.settled = true;
        match stored {
            Ok(sequence) => {
                stream
                    .by_id
                    .insert(delivery_id.clone(), IdState::Stored(sequence));
                stream.messages.insert(
                    sequence,
                    StoredMessage {
                        sequence,
                        subject: subject_for(&message.provider),
                        tenant_id: message.tenant.to_string(),
                        message_id: message.message_id.clone(),
                        delivery_id: delivery_id.clone(),
                        payload: message.payload.clone(),
                    },
                );
                Ok(PublishAck {
                    stream: EMBEDDED_STREAM.into(),
                    sequence,
                    duplicate: false,
                })
            }
            Err(e) => {
                stream.by_id.remove(&delivery_id);
                Err(e)
            }
        }
    }

    fn name(&self) -> &'static str {
        "embedded"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use beamline_core::{ProviderId, TenantId};

    fn msg(id: &str) -> OutgoingMessage {
        OutgoingMessage {
            tenant: TenantId::try_new("t").unwrap(),
            provider: ProviderId::try_new("p").unwrap(),
            message_id: id.into(),
            payload: Bytes::from_static(b"{}"),
        }
    }

    #[tokio::test]
    async fn repeated_ids_are_acknowledged_as_duplicates_and_stored_once() {
        let b = EmbeddedBroker::new(10);
        let first = b.publish(&msg("m1")).await.unwrap();
        let again = b.publish(&msg("m1")).await.unwrap();
        assert_eq!((first.sequence, first.duplicate), (1, false));
        assert_eq!((again.sequence, again.duplicate), (1, true));
        assert_eq!(b.count_by_id("m1"), 1);
        assert_eq!(b.messages(Some("beamline.provider.p")).len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_durable_stream_survives_a_reopen_and_never_stores_an_id_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.redb");
        {
            let b = Arc::new(EmbeddedBroker::open(&path, 100).unwrap());
            let tasks: Vec<_> = (0..20)
                .map(|i| {
                    let b = Arc::clone(&b);
                    tokio::spawn(
                        async move { b.publish(&msg(&format!("m{}", i % 10))).await.unwrap() },
                    )
                })
                .collect();
            let mut fresh = 0;
            for t in tasks {
                fresh += usize::from(!t.await.unwrap().duplicate);
            }
            assert_eq!(fresh, 10, "each id acknowledged as new exactly once");
        }
        let b = EmbeddedBroker::open(&path, 100).unwrap();
        assert_eq!(b.len(), 10);
        let again = b.publish(&msg("m3")).await.unwrap();
        assert!(again.duplicate);
        assert_eq!(b.count_by_id("m3"), 1);
    }

    #[tokio::test]
    async fn a_full_stream_refuses_new_messages() {
        let b = EmbeddedBroker::new(1);
        b.publish(&msg("m1")).await.unwrap();
        let err = b.publish(&msg("m2")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::StreamFull);
    }
}
