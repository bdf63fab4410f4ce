//! Broker adapters behind one [`Publisher`] trait.
//!
//! - [`jetstream::JetStreamPublisher`]: NATS JetStream through async-nats; every publish
//!   carries its delivery id as `Nats-Msg-Id` and waits for the stream's ack.
//! - [`embedded::EmbeddedBroker`]: an in-process broker with the same contract
//!   (per-provider subjects, sequence numbers, de-duplication by delivery id) so the router
//!   runs with no setup; it also offers the read-back API tests and scenarios check.
//! - [`faults::FaultInjector`]: wraps any publisher and injects errors, hangs, delays and
//!   dropped connections at runtime; it also counts every attempt that reaches the broker.
//!
//! Adapters classify their errors into [`beamline_core::ErrorKind`] in one place each; the
//! dispatcher never looks at library errors.

use std::fmt;

use async_trait::async_trait;
use beamline_core::{ErrorKind, ProviderId, TenantId};
use bytes::Bytes;
use serde::Serialize;

pub mod embedded;
pub mod faults;
pub mod jetstream;

/// Subject prefix of every provider subject.
pub const SUBJECT_PREFIX: &str = "beamline.provider";

/// The subject a provider's messages are published to.
pub fn subject_for(provider: &ProviderId) -> String {
    format!("{SUBJECT_PREFIX}.{provider}")
}

/// The header the broker de-duplicates on: [`OutgoingMessage::delivery_id`], which also
/// carries the tenant and the client's message id
/// ([`beamline_core::message::parse_delivery_id`]).
pub const DELIVERY_ID_HEADER: &str = "Nats-Msg-Id";

/// One message on its way to a provider.
#[derive(Clone, Debug)]
pub struct OutgoingMessage {
    /// The tenant that sent it.
    pub tenant: TenantId,
    /// Its provider.
    pub provider: ProviderId,
    /// The client's id for it (part of the delivery id).
    pub message_id: String,
    /// The payload bytes (JSON as received).
    pub payload: Bytes,
}

impl OutgoingMessage {
    /// The id redeliveries are de-duplicated on ([`DELIVERY_ID_HEADER`]): the same for
    /// every retry of this message, through any provider or router instance, and different
    /// for another tenant's or another payload's (see [`beamline_core::message`]).
    pub fn delivery_id(&self) -> String {
        beamline_core::message::delivery_id(self.tenant.as_str(), &self.message_id, &self.payload)
    }
}

/// The broker's acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublishAck {
    /// The stream that stored the message.
    pub stream: String,
    /// Its sequence number in the stream.
    pub sequence: u64,
    /// Whether the broker recognised the message id as already stored.
    pub duplicate: bool,
}

/// A failed publish attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishError {
    /// The classified kind: decides retrying and the breaker outcome.
    pub kind: ErrorKind,
    /// Human-readable detail for logs (never contains the payload).
    pub detail: String,
}

impl PublishError {
    /// An error of `kind` with `detail`.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        PublishError {
            kind,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

impl std::error::Error for PublishError {}

/// Something that stores messages for providers and acknowledges them.
#[async_trait]
pub trait Publisher: Send + Sync + fmt::Debug {
    /// Publishes one message and waits for the broker's ack. Callers bound the wait with
    /// their own timeout; an attempt cut by a timeout may still have been stored.
    async fn publish(&self, message: &OutgoingMessage) -> Result<PublishAck, PublishError>;

    /// Drops the broker connection (fault injection); the adapter reconnects by itself.
    /// Adapters without a connection do nothing.
    async fn drop_connection(&self) {}

    /// A short name for logs and reports (`embedded`, `jetstream`).
    fn name(&self) -> &'static str;
}
