//! `POST /v1/publish`: intake (validation at the edge) and the answer to the client.
//!
//! Body: `{"tenant_id": "...", "provider_id": "...", "message_id": "..." (optional),
//! "payload": <any JSON>}`, `Content-Type: application/json`. Answers:
//! - 200 `published` with `attempts`, `stream`, `sequence`, `duplicate`;
//! - 503 `rejected`, `reason: circuit_open`, `retry_after_ms` (and a `Retry-After` header);
//! - 502 `failed` (`publish_failed`), 504 `failed` (`deadline_exceeded`);
//! - 4xx with a stable `code` for invalid input (see the README's table).

use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use beamline_broker::OutgoingMessage;
use beamline_core::Clock;
use beamline_core::retry::Cause;
use beamline_core::{ErrorKind, ProviderId, TenantId};
use beamline_metrics::RequestOutcome;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::App;
use crate::dispatcher::{Delivered, Undelivered};
use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    tenant_id: String,
    provider_id: String,
    #[serde(default)]
    message_id: Option<String>,
    payload: Box<RawValue>,
}

/// Checks a client-supplied message id: 1 to `max` printable ASCII characters, no spaces.
fn validate_message_id(id: &str, max: usize) -> Result<(), ApiError> {
    let problem = if id.is_empty() {
        Some("must not be empty".to_owned())
    } else if id.len() > max {
        Some(format!("is {} bytes long; the limit is {max}", id.len()))
    } else {
        id.bytes()
            .position(|b| !(0x21..=0x7e).contains(&b))
            .map(|p| format!("has a non-printable or space character at byte {p}"))
    };
    match problem {
        Some(p) => Err(ApiError::bad_request(
            "invalid_message_id",
            format!("message_id {p}"),
        )),
        None => Ok(()),
    }
}

fn new_message_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Reads and validates the request into a message.
async fn intake(app: &App, request: Request) -> Result<OutgoingMessage, ApiError> {
    let limits = &app.config.raw.limits;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json",
        ));
    }
    let body: Body = request.into_body();
    let bytes: Bytes = to_bytes(body, limits.max_body_bytes).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body exceeds {} bytes", limits.max_body_bytes),
        )
    })?;
    let parsed: PublishBody = serde_json::from_slice(&bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::bad_request("invalid_json", format!("body is not valid JSON: {e}"))
            }
            Category::Data => ApiError::bad_request(
                "invalid_request",
                format!("body does not match the schema: {e}"),
            ),
        }
    })?;
    let tenant = TenantId::try_new(&parsed.tenant_id)
        .map_err(|e| ApiError::bad_request("invalid_tenant_id", format!("tenant_id {e}")))?;
    let provider = ProviderId::try_new(&parsed.provider_id)
        .map_err(|e| ApiError::bad_request("invalid_provider_id", format!("provider_id {e}")))?;
    let message_id = match parsed.message_id {
        Some(id) => {
            validate_message_id(&id, limits.max_message_id_len)?;
            id
        }
        None => new_message_id(),
    };
    let payload = parsed.payload.get();
    if payload.len() > limits.max_payload_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "payload is {} bytes; the limit is {}",
                payload.len(),
                limits.max_payload_bytes
            ),
        ));
    }
    Ok(OutgoingMessage {
        tenant,
        provider,
        message_id,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    })
}

/// The handler.
pub async fn publish(State(app): State<App>, request: Request) -> Response {
    let started = app.clock.now();
    let message = match intake(&app, request).await {
        Ok(m) => m,
        Err(e) => {
            app.metrics.request(
                None,
                None,
                RequestOutcome::Invalid,
                app.clock.now().since(started),
            );
            return e.into_response();
        }
    };
    let result = app.dispatcher.dispatch(&message, None).await;
    let (outcome, response) = answer(&message, result);
    app.metrics.request(
        Some(&message.tenant),
        Some(&message.provider),
        outcome,
        app.clock.now().since(started),
    );
    response
}

fn answer(
    message: &OutgoingMessage,
    result: Result<Delivered, Undelivered>,
) -> (RequestOutcome, Response) {
    match result {
        Ok(d) => {
            let body = json!({
                "status": "published",
                "message_id": message.message_id,
                "tenant_id": message.tenant,
                "provider_id": message.provider,
                "attempts": d.attempts,
                "attempt_offsets_ms": d.attempt_offsets_ms,
                "stream": d.ack.stream,
                "sequence": d.ack.sequence,
                "duplicate": d.ack.duplicate,
            });
            (
                RequestOutcome::Published,
                (StatusCode::OK, axum::Json(body)).into_response(),
            )
        }
        Err(u) if u.cause == Cause::CircuitOpen => {
            let retry_after = u.retry_after.unwrap_or(Duration::ZERO);
            let body = json!({
                "status": "rejected",
                "code": "circuit_open",
                "reason": "circuit_open",
                "retry_after_ms": retry_after.as_millis() as u64,
                "message_id": message.message_id,
                "tenant_id": message.tenant,
                "provider_id": message.provider,
                "attempts": u.attempts,
                "attempt_offsets_ms": u.attempt_offsets_ms,
            });
            let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            (RequestOutcome::Rejected, response)
        }
        Err(u) => {
            let (status, code) = match (u.cause, u.last_error) {
                (Cause::DeadlineExceeded, _) => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
                (Cause::NonRetryable, Some(ErrorKind::PayloadTooLarge)) => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
                }
                _ => (StatusCode::BAD_GATEWAY, "publish_failed"),
            };
            let body = json!({
                "status": "failed",
                "code": code,
                "cause": u.cause.as_str(),
                "error_kind": u.last_error.map(ErrorKind::as_str),
                "message_id": message.message_id,
                "tenant_id": message.tenant,
                "provider_id": message.provider,
                "attempts": u.attempts,
                "attempt_offsets_ms": u.attempt_offsets_ms,
            });
            let outcome = if status == StatusCode::PAYLOAD_TOO_LARGE {
                RequestOutcome::Invalid
            } else {
                RequestOutcome::Failed
            };
            (outcome, (status, axum::Json(body)).into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_checked_at_the_edge() {
        assert!(validate_message_id("order-42:a/b", 128).is_ok());
        for bad in ["", "has space", "tab\t", "nul\0", "é"] {
            assert_eq!(
                validate_message_id(bad, 128).unwrap_err().code,
                "invalid_message_id",
                "{bad:?}"
            );
        }
        assert!(validate_message_id(&"x".repeat(129), 128).is_err());
        assert_eq!(new_message_id().len(), 32);
        assert_ne!(new_message_id(), new_message_id());
    }

    #[test]
    fn generated_ids_are_valid() {
        assert!(validate_message_id(&new_message_id(), 128).is_ok());
    }

    #[test]
    fn payload_too_large_from_the_broker_is_the_clients_fault() {
        let m = OutgoingMessage {
            tenant: TenantId::try_new("t").unwrap(),
            provider: ProviderId::try_new("p").unwrap(),
            message_id: "m".into(),
            payload: Bytes::new(),
        };
        let u = Undelivered {
            cause: Cause::NonRetryable,
            last_error: Some(ErrorKind::PayloadTooLarge),
            attempts: 1,
            attempt_offsets_ms: vec![0],
            retry_after: None,
        };
        let (outcome, response) = answer(&m, Err(u));
        assert_eq!(
            (outcome, response.status()),
            (RequestOutcome::Invalid, StatusCode::PAYLOAD_TOO_LARGE)
        );
    }
}
