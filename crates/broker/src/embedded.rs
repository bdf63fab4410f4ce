//! The embedded broker: an in-process stand-in for NATS JetStream.
//!
//! It keeps the contract the router relies on: one stream for every provider subject, a
//! sequence number per stored message, and de-duplication by message id (a repeated id is
//! acknowledged with `duplicate = true` and the original sequence, never stored twice).
//! It is bounded: past `max_messages` it refuses with [`ErrorKind::StreamFull`], like a
//! JetStream stream with `discard: new`. The read-back API ([`EmbeddedBroker::messages`],
//! [`EmbeddedBroker::count_by_id`]) is what tests and the scenario runner check delivery
//! guarantees against.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use beamline_core::ErrorKind;
use bytes::Bytes;
use serde::Serialize;

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
    /// The message id.
    pub message_id: String,
    /// The payload.
    #[serde(skip)]
    pub payload: Bytes,
}

#[derive(Debug, Default)]
struct Stream {
    messages: Vec<StoredMessage>,
    by_id: HashMap<String, u64>,
}

/// The in-process broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    stream: Mutex<Stream>,
    max_messages: usize,
}

impl EmbeddedBroker {
    /// A broker storing at most `max_messages` messages.
    pub fn new(max_messages: usize) -> Self {
        EmbeddedBroker {
            stream: Mutex::new(Stream::default()),
            max_messages,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stream> {
        self.stream.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every stored message, in sequence order, optionally for one subject only.
    pub fn messages(&self, subject: Option<&str>) -> Vec<StoredMessage> {
        let stream = self.lock();
        stream
            .messages
            .iter()
            .filter(|m| subject.is_none_or(|s| m.subject == s))
            .cloned()
            .collect()
    }

    /// How many stored messages carry `message_id` (0 or 1: de-duplication at work).
    pub fn count_by_id(&self, message_id: &str) -> usize {
        self.lock()
            .messages
            .iter()
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

    /// Deletes every message, in place.
    pub fn reset_all(&self) {
        *self.lock() = Stream::default();
    }
}

#[async_trait]
impl Publisher for EmbeddedBroker {
    async fn publish(&self, message: &OutgoingMessage) -> Result<PublishAck, PublishError> {
        let mut stream = self.lock();
        if let Some(sequence) = stream.by_id.get(&message.message_id) {
            return Ok(PublishAck {
                stream: EMBEDDED_STREAM.into(),
                sequence: *sequence,
                duplicate: true,
            });
        }
        if stream.messages.len() >= self.max_messages {
            return Err(PublishError::new(
                ErrorKind::StreamFull,
                "embedded stream is full",
            ));
        }
        let sequence = stream.messages.len() as u64 + 1;
        stream.by_id.insert(message.message_id.clone(), sequence);
        stream.messages.push(StoredMessage {
            sequence,
            subject: subject_for(&message.provider),
            tenant_id: message.tenant.to_string(),
            message_id: message.message_id.clone(),
            payload: message.payload.clone(),
        });
        Ok(PublishAck {
            stream: EMBEDDED_STREAM.into(),
            sequence,
            duplicate: false,
        })
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

    #[tokio::test]
    async fn a_full_stream_refuses_new_messages() {
        let b = EmbeddedBroker::new(1);
        b.publish(&msg("m1")).await.unwrap();
        let err = b.publish(&msg("m2")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::StreamFull);
    }
}
