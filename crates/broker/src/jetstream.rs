//! The NATS JetStream adapter (async-nats).
//!
//! On connect it creates the stream for `beamline.provider.>` if it is missing, or checks
//! that the existing one covers that subject. Each publish goes to
//! `beamline.provider.<provider_id>` with `Nats-Msg-Id` set to the message's delivery id
//! (tenant, message id and payload fingerprint: [`OutgoingMessage::delivery_id`]), so a
//! retry (or a redelivery from the outbox, or from another router instance) of a message
//! the broker already stored is acknowledged as a duplicate and stored once, inside the
//! stream's duplicate window. Consumers read the tenant and the client's message id back
//! from it (`beamline_core::message::parse_delivery_id`). Many publishes may be in flight at once: async-nats
//! pipelines them over one connection, bounded by `max_ack_inflight`.
//!
//! The connection reconnects by itself, quickly (delays capped at 100 ms instead of the
//! library's 4 s), and buffers at most `client_capacity` commands while disconnected.
//!
//! [`classify`] is the one place async-nats publish errors become [`ErrorKind`]s. A timed
//! out publish may still have been stored (TOOLING-NOTES): callers must never treat a
//! timeout as "not stored", which is why the message id is stable across attempts.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use async_trait::async_trait;
use beamline_core::ErrorKind;
use serde::{Deserialize, Serialize};

use beamline_core::message::parse_delivery_id;

use crate::{
    DELIVERY_ID_HEADER, OutgoingMessage, PublishAck, PublishError, Publisher, SUBJECT_PREFIX,
    subject_for,
};

/// JetStream error code: the stream could not store the message (full, limits).
const STREAM_STORE_FAILED: u64 = 10077;
/// JetStream error code: the message exceeds the stream's maximum message size.
const STREAM_MESSAGE_EXCEEDS_MAXIMUM: u64 = 10054;

/// Where the stream keeps its messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// On disk (survives a broker restart).
    #[default]
    File,
    /// In memory.
    Memory,
}

/// JetStream connection and stream settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL, `nats://host:port`.
    pub url: String,
    /// Stream name.
    pub stream: String,
    /// Stream storage.
    pub storage: Storage,
    /// De-duplication window of the stream, in seconds.
    pub duplicate_window_secs: u64,
    /// Stream size cap in bytes (`discard: new` past it); 0 means no cap.
    pub max_bytes: i64,
    /// Time allowed to connect at startup.
    pub connect_timeout_ms: u64,
    /// Commands buffered while disconnected.
    pub client_capacity: usize,
    /// Publishes awaiting their ack at once.
    pub max_ack_inflight: usize,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            stream: "BEAMLINE".into(),
            storage: Storage::File,
            duplicate_window_secs: 120,
            max_bytes: 0,
            connect_timeout_ms: 2000,
            client_capacity: 8192,
            max_ack_inflight: 5000,
        }
    }
}

/// Connecting or preparing the stream failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server could not be reached.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL tried.
        url: String,
        /// Why.
        source: async_nats::ConnectError,
    },
    /// The stream could not be created or inspected.
    #[error("cannot prepare stream {stream}: {detail}")]
    Stream {
        /// The stream.
        stream: String,
        /// Why.
        detail: String,
    },
}

/// A message read back from the stream (tests and scenario checks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadBack {
    /// Stream sequence.
    pub sequence: u64,
    /// Subject.
    pub subject: String,
    /// The tenant, from the delivery id.
    pub tenant_id: String,
    /// The client's message id, from the delivery id.
    pub message_id: String,
    /// The `Nats-Msg-Id` header: the delivery id.
    pub delivery_id: String,
}

/// Publishes to NATS JetStream.
#[derive(Clone, Debug)]
pub struct JetStreamPublisher {
    client: async_nats::Client,
    context: jetstream::Context,
    stream: String,
}

impl JetStreamPublisher {
    /// Connects, then creates or verifies the stream. Acks are awaited at most
    /// `ack_timeout` (use the per-attempt timeout).
    pub async fn connect(config: &NatsConfig, ack_timeout: Duration) -> Result<Self, ConnectError> {
        let client = async_nats::ConnectOptions::new()
            .name("beamline-router")
            .connection_timeout(Duration::from_millis(config.connect_timeout_ms.max(1)))
            .client_capacity(config.client_capacity.max(1))
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64).saturating_mul(10).min(100))
            })
            .connect(config.url.as_str())
            .await
            .map_err(|source| ConnectError::Connect {
                url: config.url.clone(),
                source,
            })?;
        let context = jetstream::context::ContextBuilder::new()
            .timeout(ack_timeout)
            .max_ack_inflight(config.max_ack_inflight.max(1))
            .build(client.clone());
        let subjects = format!("{SUBJECT_PREFIX}.>");
        let stream_err = |detail: String| ConnectError::Stream {
            stream: config.stream.clone(),
            detail,
        };
        let mut stream = context
            .get_or_create_stream(stream::Config {
                name: config.stream.clone(),
                subjects: vec![subjects.clone()],
                storage: match config.storage {
                    Storage::File => stream::StorageType::File,
                    Storage::Memory => stream::StorageType::Memory,
                },
                duplicate_window: Duration::from_secs(config.duplicate_window_secs),
                max_bytes: if config.max_bytes > 0 {
                    config.max_bytes
                } else {
                    -1
                },
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(|e| stream_err(e.to_string()))?;
        let info = stream.info().await.map_err(|e| stream_err(e.to_string()))?;
        if !info.config.subjects.contains(&subjects) {
            return Err(stream_err(format!(
                "exists with subjects {:?}, which do not include {subjects}",
                info.config.subjects
            )));
        }
        Ok(JetStreamPublisher {
            client,
            context,
            stream: config.stream.clone(),
        })
    }

    /// Every message in the stream, in sequence order, optionally for one subject only.
    /// One request per message: for tests and scenario checks, not for production paths.
    pub async fn read_back(&self, subject: Option<&str>) -> Result<Vec<ReadBack>, String> {
        let mut stream = self
            .context
            .get_stream(&self.stream)
            .await
            .map_err(|e| e.to_string())?;
        let state = stream
            .info()
            .await
            .map_err(|e| e.to_string())?
            .state
            .clone();
        let mut out = Vec::new();
        for sequence in state.first_sequence..=state.last_sequence {
            if sequence == 0 {
                continue;
            }
            let Ok(message) = stream.get_raw_message(sequence).await else {
                continue; // deleted or never stored
            };
            let subject_of = message.subject.to_string();
            if subject.is_some_and(|s| s != subject_of) {
                continue;
            }
            let delivery_id = message
                .headers
                .get(DELIVERY_ID_HEADER)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            let (tenant_id, message_id) = parse_delivery_id(&delivery_id)
                .map(|(t, m, _)| (t.to_owned(), m.to_owned()))
                .unwrap_or_default();
            out.push(ReadBack {
                sequence,
                subject: subject_of,
                tenant_id,
                message_id,
                delivery_id,
            });
        }
        Ok(out)
    }
}

/// Classifies an async-nats publish error. The one place this mapping lives.
pub fn classify(error: &jetstream::context::PublishError) -> ErrorKind {
    match error.kind() {
        PublishErrorKind::TimedOut => ErrorKind::Timeout,
        PublishErrorKind::BrokenPipe => ErrorKind::ConnectionClosed,
        // async-nats reports "no responders" on a JetStream subject as a missing stream.
        PublishErrorKind::StreamNotFound => ErrorKind::StreamNotFound,
        PublishErrorKind::MaxPayloadExceeded => ErrorKind::PayloadTooLarge,
        // Too many acks outstanding: back-pressure, worth another attempt.
        PublishErrorKind::MaxAckPending => ErrorKind::BrokerUnavailable,
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
            ErrorKind::BrokerUnavailable
        }
        PublishErrorKind::Other => match jetstream_code(error) {
            Some(STREAM_STORE_FAILED) => ErrorKind::StreamFull,
            Some(STREAM_MESSAGE_EXCEEDS_MAXIMUM) => ErrorKind::PayloadTooLarge,
            Some(_) | None => ErrorKind::BrokerUnavailable,
        },
    }
}

/// The JetStream API error code behind a publish error, if the server sent one.
fn jetstream_code(error: &jetstream::context::PublishError) -> Option<u64> {
    let source = std::error::Error::source(error)?;
    source
        .downcast_ref::<jetstream::Error>()
        .map(|e| e.error_code().0)
}

#[async_trait]
impl Publisher for JetStreamPublisher {
    async fn publish(&self, message: &OutgoingMessage) -> Result<PublishAck, PublishError> {
        let publish = jetstream::message::PublishMessage::build()
            .payload(message.payload.clone())
            .message_id(message.delivery_id());
        let to_error =
            |e: jetstream::context::PublishError| PublishError::new(classify(&e), e.to_string());
        let ack_future = self
            .context
            .send_publish(subject_for(&message.provider), publish)
            .await
            .map_err(to_error)?;
        let ack = ack_future.await.map_err(to_error)?;
        Ok(PublishAck {
            stream: ack.stream,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    async fn drop_connection(&self) {
        if let Err(error) = self.client.force_reconnect().await {
            tracing::warn!(%error, "forced reconnect failed");
        }
    }

    fn name(&self) -> &'static str {
        "jetstream"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_publish_error_kind_has_a_class() {
        use jetstream::context::PublishError as E;
        let cases = [
            (PublishErrorKind::TimedOut, ErrorKind::Timeout),
            (PublishErrorKind::BrokenPipe, ErrorKind::ConnectionClosed),
            (PublishErrorKind::StreamNotFound, ErrorKind::StreamNotFound),
            (
                PublishErrorKind::MaxPayloadExceeded,
                ErrorKind::PayloadTooLarge,
            ),
            (
                PublishErrorKind::MaxAckPending,
                ErrorKind::BrokerUnavailable,
            ),
            (
                PublishErrorKind::WrongLastMessageId,
                ErrorKind::BrokerUnavailable,
            ),
            (
                PublishErrorKind::WrongLastSequence,
                ErrorKind::BrokerUnavailable,
            ),
            (PublishErrorKind::Other, ErrorKind::BrokerUnavailable),
        ];
        for (kind, expected) in cases {
            assert_eq!(classify(&E::new(kind)), expected, "{kind:?}");
        }
    }
}
