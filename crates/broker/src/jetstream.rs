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
//!
//! Permissions: a server that may not let this connection publish to a subject drops the
//! message and says so out of band (`-ERR 'Permissions Violation for Publish to
//! "<subject>"'`, an async-nats connection event), so the publish itself only times out.
//! The adapter remembers the subjects the server refused ([`denied_subject`]) and reports
//! a timed-out publish to one of them as [`ErrorKind::Permission`] (not retried: a retry
//! cannot succeed); a later acknowledged publish to the subject forgets it (permissions
//! were changed). Connection events are logged.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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

/// A message read back from the stream (tests and scenario checks). Serialises as the
/// embedded broker's [`crate::embedded::StoredMessage`] does, so the admin API shows both
/// brokers' messages alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
    denied: Arc<DeniedSubjects>,
}

/// Subjects the server refused this connection permission to publish to.
#[derive(Debug, Default)]
struct DeniedSubjects {
    /// Whether `subjects` may hold anything (the publish path's only check when not).
    any: AtomicBool,
    subjects: Mutex<HashSet<String>>,
}

impl DeniedSubjects {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.subjects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deny(&self, subject: String) {
        self.lock().insert(subject);
        self.any.store(true, Ordering::Release);
    }

    fn is_denied(&self, subject: &str) -> bool {
        self.any.load(Ordering::Acquire) && self.lock().contains(subject)
    }

    fn allow(&self, subject: &str) {
        if self.any.load(Ordering::Acquire) {
            let mut subjects = self.lock();
            subjects.remove(subject);
            self.any.store(!subjects.is_empty(), Ordering::Release);
        }
    }
}

/// `url` without its user info, and the user and password it held
/// (`nats://user:password@host:port`; async-nats does not read them from the URL).
fn split_credentials(url: &str) -> (String, Option<(String, String)>) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_owned(), None);
    };
    let (user, password) = rest[..at].split_once(':').unwrap_or((&rest[..at], ""));
    let bare = if scheme.is_empty() {
        rest[at + 1..].to_owned()
    } else {
        format!("{scheme}://{}", &rest[at + 1..])
    };
    (bare, Some((user.to_owned(), password.to_owned())))
}

/// `url` with the password of its user info (if any) hidden, for displays.
pub fn redact_url(url: &str) -> String {
    match split_credentials(url) {
        (bare, Some((user, _))) => match bare.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{user}:<hidden>@{rest}"),
            None => format!("{user}:<hidden>@{bare}"),
        },
        (bare, None) => bare,
    }
}

/// The subject of a server's publish-permission error, if `error` is one.
pub fn denied_subject(error: &async_nats::ServerError) -> Option<String> {
    const PREFIX: &str = "permissions violation for publish to ";
    let async_nats::ServerError::Other(text) = error else {
        return None;
    };
    let text = text.trim();
    let at = text.to_ascii_lowercase().find(PREFIX)?;
    let subject = text[at + PREFIX.len()..].trim().trim_matches(['"', '\'']);
    (!subject.is_empty()).then(|| subject.to_owned())
}

impl JetStreamPublisher {
    /// Connects, then creates or verifies the stream. Acks are awaited at most
    /// `ack_timeout` (use the per-attempt timeout).
    pub async fn connect(config: &NatsConfig, ack_timeout: Duration) -> Result<Self, ConnectError> {
        let denied = Arc::new(DeniedSubjects::default());
        let events = Arc::clone(&denied);
        let (server, credentials) = split_credentials(&config.url);
        let mut options = async_nats::ConnectOptions::new();
        if let Some((user, password)) = credentials {
            options = options.user_and_password(user, password);
        }
        let client = options
            .name("beamline-router")
            .event_callback(move |event| {
                let denied = Arc::clone(&events);
                async move {
                    match &event {
                        async_nats::Event::ServerError(error) => match denied_subject(error) {
                            Some(subject) => {
                                tracing::error!(%subject, "the broker refuses this router permission to publish to the subject");
                                denied.deny(subject);
                            }
                            None => tracing::warn!(%error, "broker error"),
                        },
                        async_nats::Event::Connected => tracing::info!("connected to the broker"),
                        async_nats::Event::Disconnected => {
                            tracing::warn!("disconnected from the broker; reconnecting")
                        }
                        other => tracing::warn!(event = %other, "broker connection event"),
                    }
                }
            })
            .connection_timeout(Duration::from_millis(config.connect_timeout_ms.max(1)))
            .client_capacity(config.client_capacity.max(1))
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64).saturating_mul(10).min(100))
            })
            .connect(server.as_str())
            .await
            .map_err(|source| ConnectError::Connect {
                url: redact_url(&config.url),
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
            denied,
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
        let subject = subject_for(&message.provider);
        let to_error = |e: jetstream::context::PublishError| {
            let kind = match classify(&e) {
                ErrorKind::Timeout if self.denied.is_denied(&subject) => ErrorKind::Permission,
                kind => kind,
            };
            PublishError::new(kind, e.to_string())
        };
        let ack_future = self
            .context
            .send_publish(subject.clone(), publish)
            .await
            .map_err(to_error)?;
        let ack = ack_future.await.map_err(to_error)?;
        self.denied.allow(&subject);
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
    fn credentials_in_the_url_are_used_and_never_shown() {
        assert_eq!(
            split_credentials("nats://router:s3cret@127.0.0.1:4222"),
            (
                "nats://127.0.0.1:4222".to_owned(),
                Some(("router".to_owned(), "s3cret".to_owned()))
            )
        );
        assert_eq!(
            split_credentials("nats://127.0.0.1:4222"),
            ("nats://127.0.0.1:4222".to_owned(), None)
        );
        assert_eq!(
            redact_url("nats://router:s3cret@127.0.0.1:4222"),
            "nats://router:<hidden>@127.0.0.1:4222"
        );
        assert_eq!(redact_url("nats://h:1"), "nats://h:1");
    }

    #[test]
    fn publish_permission_errors_name_their_subject() {
        use async_nats::ServerError;
        let e = |s: &str| ServerError::Other(s.to_owned());
        assert_eq!(
            denied_subject(&e(
                "Permissions Violation for Publish to \"beamline.provider.p1\""
            )),
            Some("beamline.provider.p1".to_owned())
        );
        assert_eq!(
            denied_subject(&e("permissions violation for publish to 'a.b'")),
            Some("a.b".to_owned())
        );
        assert_eq!(
            denied_subject(&e("Permissions Violation for Subscription to \"x\"")),
            None
        );
        assert_eq!(denied_subject(&ServerError::AuthorizationViolation), None);
    }

    #[test]
    fn a_denied_subject_is_forgotten_once_a_publish_to_it_is_acknowledged() {
        let d = DeniedSubjects::default();
        assert!(!d.is_denied("s"));
        d.deny("s".into());
        d.deny("t".into());
        assert!(d.is_denied("s"));
        d.allow("s");
        assert!(!d.is_denied("s") && d.is_denied("t"));
        d.allow("t");
        assert!(!d.any.load(Ordering::Acquire));
    }

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
