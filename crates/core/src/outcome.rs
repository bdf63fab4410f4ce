//! Outcome classes: what one publish attempt tells the breaker and the retry loop.
//!
//! Every broker error is classified here, once, as data: [`ErrorKind`] says whether the
//! error is retryable and what it means for the provider's health ([`Outcome`]). Adapters
//! map their library's errors onto `ErrorKind`; nothing else matches on error strings.

use serde::{Deserialize, Serialize};

/// Why an attempt failed, as far as provider health is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The attempt was cut at the attempt timeout. A failure, never a slow sample.
    Timeout,
    /// The connection was refused, closed or never established.
    Connection,
    /// The broker answered with an error (unavailable, stream missing or full, ...).
    BrokerError,
    /// The broker refused the message in a way that signals an unhealthy provider.
    Nack,
}

/// What one admitted call reports to its breaker, exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The broker acknowledged the message.
    Success,
    /// The provider failed.
    Failure(FailureKind),
    /// Says nothing about provider health (cancelled, or refused for the client's fault).
    Ignored,
}

impl Outcome {
    /// The `outcome` label value used in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure(_) => "failure",
            Outcome::Ignored => "ignored",
        }
    }
}

/// Every way a publish attempt can fail, classified once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No ack within the attempt timeout. The message may still have been stored.
    Timeout,
    /// The broker refused the connection.
    ConnectionRefused,
    /// The connection dropped while the attempt was in flight.
    ConnectionClosed,
    /// Nobody answered on the subject (no stream bound to it yet, or the server is
    /// restarting).
    NoResponders,
    /// The broker answered with a transient server-side error (5xx-like).
    BrokerUnavailable,
    /// The stream for the subject does not exist.
    StreamNotFound,
    /// The stream is full and refuses new messages.
    StreamFull,
    /// The message is larger than the broker accepts: the client's fault.
    PayloadTooLarge,
    /// The router's credentials may not publish to the subject.
    Permission,
    /// The subject is not valid for the broker.
    InvalidSubject,
}

impl ErrorKind {
    /// Every kind, for tables and tests.
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Timeout,
        ErrorKind::ConnectionRefused,
        ErrorKind::ConnectionClosed,
        ErrorKind::NoResponders,
        ErrorKind::BrokerUnavailable,
        ErrorKind::StreamNotFound,
        ErrorKind::StreamFull,
        ErrorKind::PayloadTooLarge,
        ErrorKind::Permission,
        ErrorKind::InvalidSubject,
    ];

    /// The `error_kind` label value used in metrics and APIs.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::ConnectionRefused => "connection_refused",
            ErrorKind::ConnectionClosed => "connection_closed",
            ErrorKind::NoResponders => "no_responders",
            ErrorKind::BrokerUnavailable => "broker_unavailable",
            ErrorKind::StreamNotFound => "stream_not_found",
            ErrorKind::StreamFull => "stream_full",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::Permission => "permission",
            ErrorKind::InvalidSubject => "invalid_subject",
        }
    }

    /// Whether another attempt may succeed where this one failed.
    ///
    /// Transient transport and server conditions are retryable; errors that will repeat
    /// identically (the message, the subject or the credentials are wrong, the stream is
    /// missing or full) are not.
    pub const fn is_retryable(self) -> bool {
        match self {
            ErrorKind::Timeout
            | ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionClosed
            | ErrorKind::NoResponders
            | ErrorKind::BrokerUnavailable => true,
            ErrorKind::StreamNotFound
            | ErrorKind::StreamFull
            | ErrorKind::PayloadTooLarge
            | ErrorKind::Permission
            | ErrorKind::InvalidSubject => false,
        }
    }

    /// What this error tells the provider's breaker.
    ///
    /// Client faults (payload too large, invalid subject) say nothing about provider
    /// health and are `Ignored`; everything else is a failure of the provider.
    pub const fn breaker_outcome(self) -> Outcome {
        match self {
            ErrorKind::Timeout => Outcome::Failure(FailureKind::Timeout),
            ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionClosed
            | ErrorKind::NoResponders => Outcome::Failure(FailureKind::Connection),
            ErrorKind::BrokerUnavailable | ErrorKind::StreamNotFound | ErrorKind::StreamFull => {
                Outcome::Failure(FailureKind::BrokerError)
            }
            ErrorKind::Permission => Outcome::Failure(FailureKind::Nack),
            ErrorKind::PayloadTooLarge | ErrorKind::InvalidSubject => Outcome::Ignored,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_faults_are_neither_retried_nor_held_against_the_provider() {
        for kind in [ErrorKind::PayloadTooLarge, ErrorKind::InvalidSubject] {
            assert!(!kind.is_retryable());
            assert_eq!(kind.breaker_outcome(), Outcome::Ignored);
        }
    }

    #[test]
    fn every_retryable_error_is_a_provider_failure() {
        for kind in ErrorKind::ALL.into_iter().filter(|k| k.is_retryable()) {
            assert!(
                matches!(kind.breaker_outcome(), Outcome::Failure(_)),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn label_values_are_distinct_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for kind in ErrorKind::ALL {
            let s = kind.as_str();
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            assert!(seen.insert(s));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{s}\""));
        }
    }
}
