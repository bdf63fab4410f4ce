//! `POST /v1/publish` body parsing: the body shape the server deserializes (unknown fields
//! refused, `provider_id`, `message_id` and `session_id` optional, `payload` kept as raw
//! JSON), the error classification that picks `invalid_json` or `invalid_request`, and the
//! id rules of `beamline-core` and the message/session-id rule of the server, each checked
//! against a plain reference predicate.
//!
//! The server keeps its body type private (crates/server/src/publish.rs); this target
//! mirrors it field for field. When the server exposes a pure parsing function, fuzz that
//! instead.
#![no_main]

use beamline_core::keys::MAX_ID_LEN;
use beamline_core::{ProviderId, TenantId};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::value::RawValue;

/// The server's longest message id (`limits.max_message_id_len` default).
const MAX_MESSAGE_ID_LEN: usize = 128;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    tenant_id: String,
    #[serde(default)]
    provider_id: Option<String>,
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    session_id: Option<String>,
    payload: Box<RawValue>,
}

fn is_valid_id(s: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_valid_message_id(s: &str) -> bool {
    (1..=MAX_MESSAGE_ID_LEN).contains(&s.len()) && s.chars().all(|c| c.is_ascii_graphic())
}

/// The server's message-id and session-id check (`validate_token` in publish.rs), restated.
fn server_token_check(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_MESSAGE_ID_LEN
        && id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn check_id(s: &str) {
    let tenant = TenantId::try_new(s);
    let provider = ProviderId::try_new(s);
    assert_eq!(tenant.is_ok(), is_valid_id(s), "tenant id {s:?}");
    assert_eq!(provider.is_ok(), is_valid_id(s), "provider id {s:?}");
    if let Ok(t) = tenant {
        assert_eq!(t.as_str(), s);
        // Ids are safe as one NATS subject token.
        assert!(!t.as_str().contains(['.', '*', '>', ' ']));
    }
}

fuzz_target!(|data: &[u8]| {
    match serde_json::from_slice::<PublishBody>(data) {
        Ok(body) => {
            check_id(&body.tenant_id);
            if let Some(p) = &body.provider_id {
                check_id(p);
            }
            for token in [&body.message_id, &body.session_id].into_iter().flatten() {
                assert_eq!(
                    server_token_check(token),
                    is_valid_message_id(token),
                    "{token:?}"
                );
            }
            // The raw payload is itself valid JSON, byte for byte.
            let raw = body.payload.get();
            let again: Box<RawValue> =
                serde_json::from_str(raw).expect("a raw payload re-parses as JSON");
            assert_eq!(again.get(), raw);
        }
        Err(e) => {
            // Classification decides the error code; it must never panic.
            let _ = e.classify();
            let _ = e.to_string();
        }
    }
    // Any UTF-8 input also goes straight through the id validators.
    if let Ok(s) = std::str::from_utf8(data) {
        check_id(s);
        assert_eq!(is_valid_message_id(s), server_token_check(s), "{s:?}");
    }
});
