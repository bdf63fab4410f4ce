//! `POST /v1/publish` body parsing: any bytes through the server's own
//! `beamline_server::publish::parse_publish` (the function the handler calls once the
//! body is read), with the default limits.
//!
//! Checked: no panic; an error is a 4xx with one of the documented codes; an accepted
//! body names valid ids (checked against plain reference predicates, restated here from
//! the README), a message id within the limit, and a payload that re-parses as JSON byte
//! for byte and fits `max_payload_bytes`.
#![no_main]

use beamline_core::keys::MAX_ID_LEN;
use beamline_server::config::LimitsConfig;
use beamline_server::publish::parse_publish;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

/// Every code `parse_publish` may answer (README, "HTTP API").
const CODES: [&str; 7] = [
    "invalid_json",
    "invalid_request",
    "invalid_tenant_id",
    "invalid_provider_id",
    "invalid_message_id",
    "invalid_session_id",
    "payload_too_large",
];

fn is_valid_id(s: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_valid_token(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.chars().all(|c| c.is_ascii_graphic())
}

fuzz_target!(|data: &[u8]| {
    let limits = LimitsConfig::default();
    match parse_publish(data, &limits) {
        Ok(request) => {
            assert!(is_valid_id(request.tenant.as_str()));
            if let Some(p) = &request.provider {
                assert!(is_valid_id(p.as_str()));
            }
            assert!(is_valid_token(&request.message_id, limits.max_message_id_len));
            if let Some(s) = &request.session {
                assert!(is_valid_token(s, limits.max_message_id_len));
            }
            assert!(request.payload.len() <= limits.max_payload_bytes);
            let raw = std::str::from_utf8(&request.payload).expect("the payload is UTF-8");
            let again: Box<RawValue> =
                serde_json::from_str(raw).expect("a raw payload re-parses as JSON");
            assert_eq!(again.get(), raw);
        }
        Err(e) => {
            assert!(e.status.is_client_error(), "{e:?}");
            assert!(CODES.contains(&e.code), "undocumented code {e:?}");
        }
    }
});
