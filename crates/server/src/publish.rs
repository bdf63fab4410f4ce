//! `POST /v1/publish` and `POST /v1/decide`: intake (validation at the edge) and the
//! answer to the client.
//!
//! Publish body: `{"tenant_id": "...", "provider_id": "..." (optional: route by policy),
//! "message_id": "..." (optional: generated), "session_id": "..." (optional: sticky),
//! "payload": <any JSON>}`, `Content-Type: application/json`. Answers:
//! - 200 `published` with `provider_id`, `route_reason`, `attempts`, `stream`, `sequence`;
//! - 202 `queued`: stored durably in the outbox, to be delivered (degraded mode `outbox`);
//! - 503 `rejected`, `reason: circuit_open`, `retry_after_ms` (and a `Retry-After` header);
//!   503 `outbox_full` / `outbox_unavailable` when the outbox cannot take it;
//! - 502 `failed` (`publish_failed`), 504 `failed` (`deadline_exceeded`);
//! - 4xx with a stable `code` for invalid input (see the README's table).

use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use beamline_core::retry::Cause;
use beamline_core::{Clock, ErrorKind, ProviderId, TenantId};
use beamline_metrics::RequestOutcome;
use beamline_outbox::OutboxError;
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::App;
use crate::config::LimitsConfig;
use crate::error::ApiError;
use crate::routing::{RouteError, RouteRequest, Routed};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    tenant_id: String,
    #[serde(default)]
    provider_id: Option<String>,
    #[serde(default)]
    session_id: Option<String>,
}

/// Checks a client-supplied token (message or session id): 1 to `max` printable ASCII
/// characters, no spaces.
fn validate_token(id: &str, max: usize) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if id.len() > max {
        return Err(format!("is {} bytes long; the limit is {max}", id.len()));
    }
    match id.bytes().position(|b| !(0x21..=0x7e).contains(&b)) {
        Some(p) => Err(format!(
            "has a non-printable or space character at byte {p}"
        )),
        None => Ok(()),
    }
}

fn optional_token(
    value: Option<String>,
    field: &str,
    code: &'static str,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) => validate_token(&v, max)
            .map(|()| Some(v))
            .map_err(|p| ApiError::bad_request(code, format!("{field} {p}"))),
        None => Ok(None),
    }
}

fn new_message_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Reads a JSON body under the size and time limits, with stable error codes.
async fn read_json<T: DeserializeOwned>(app: &App, request: Request) -> Result<T, ApiError> {
    let bytes = read_body(app, request).await?;
    parse_json(&bytes)
}

/// Reads a JSON body's bytes under the size and time limits (content type checked).
async fn read_body(app: &App, request: Request) -> Result<Bytes, ApiError> {
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
    let read_timeout = Duration::from_millis(limits.body_read_timeout_ms);
    let bytes: Bytes = tokio::time::timeout(read_timeout, to_bytes(body, limits.max_body_bytes))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the body did not arrive within {} ms",
                    limits.body_read_timeout_ms
                ),
            )
        })?
        .map_err(|e| crate::error::body_error(&e, limits.max_body_bytes))?;
    Ok(bytes)
}

/// Parses a JSON request body, with stable error codes.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Serde's derived parsers also take a JSON array, field by field; only objects are
    // requests (other non-objects already fail as `invalid_request`, non-JSON as
    // `invalid_json`).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::bad_request(
            "invalid_request",
            "body must be a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
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
    })
}

fn tenant_of(s: &str) -> Result<TenantId, ApiError> {
    TenantId::try_new(s)
        .map_err(|e| ApiError::bad_request("invalid_tenant_id", format!("tenant_id {e}")))
}

fn provider_of(s: Option<&str>) -> Result<Option<ProviderId>, ApiError> {
    s.map(|p| {
        ProviderId::try_new(p)
            .map_err(|e| ApiError::bad_request("invalid_provider_id", format!("provider_id {e}")))
    })
    .transpose()
}

/// Reads and validates a publish request.
async fn intake(app: &App, request: Request) -> Result<RouteRequest, ApiError> {
    let bytes = read_body(app, request).await?;
    parse_publish(&bytes, &app.config.raw.limits)
}

/// Parses and validates a publish body (everything but the transport: content type, size
/// and time limits of the body, are the caller's). A message without an id gets a new
/// random one. Pure: the fuzz target `publish_body` drives it with any bytes.
pub fn parse_publish(bytes: &[u8], limits: &LimitsConfig) -> Result<RouteRequest, ApiError> {
    let parsed: PublishBody = parse_json(bytes)?;
    let tenant = tenant_of(&parsed.tenant_id)?;
    let provider = provider_of(parsed.provider_id.as_deref())?;
    let max_id = limits.max_message_id_len;
    let message_id = optional_token(
        parsed.message_id,
        "message_id",
        "invalid_message_id",
        max_id,
    )?
    .unwrap_or_else(new_message_id);
    let session = optional_token(
        parsed.session_id,
        "session_id",
        "invalid_session_id",
        max_id,
    )?;
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
    Ok(RouteRequest {
        tenant,
        provider,
        session,
        message_id,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    })
}

fn route_error(e: RouteError) -> ApiError {
    match e {
        RouteError::UnknownProvider(_) => ApiError::not_found("unknown_provider", e.to_string()),
        RouteError::NoPolicy(_) => ApiError::not_found("no_policy", e.to_string()),
    }
}

/// The publish handler.
pub async fn publish(State(app): State<App>, request: Request) -> Response {
    let started = app.clock.now();
    let invalid = |e: ApiError| {
        app.metrics.request(
            None,
            None,
            RequestOutcome::Invalid,
            app.clock.now().since(started),
        );
        e.into_response()
    };
    let route_request = match intake(&app, request).await {
        Ok(r) => r,
        Err(e) => return invalid(e),
    };
    let tenant = route_request.tenant.clone();
    let message_id = route_request.message_id.clone();
    // Held until the request ends: a racing request with this id and another payload is
    // refused meanwhile; a request that is not accepted frees the id again.
    let claim = match app.recent_ids.claim(
        &tenant,
        &message_id,
        &route_request.payload,
        route_request.provider.as_ref(),
    ) {
        Ok(claim) => claim,
        Err(conflict) => {
            return invalid(ApiError::new(
                StatusCode::CONFLICT,
                "message_id_conflict",
                conflict.to_string(),
            ));
        }
    };
    let (outcome, provider, response) = match app.router.route(route_request).await {
        Ok(mut routed) => {
            match &mut routed {
                Routed::Published {
                    provider,
                    delivered,
                    ..
                } => {
                    // A duplicate is stored where the message first went.
                    if delivered.ack.duplicate
                        && let Some(first) = &claim.accepted_by
                    {
                        *provider = first.clone();
                    }
                    claim.accepted(provider);
                }
                Routed::Queued { provider, .. } => claim.accepted(provider),
                Routed::Failed { .. } | Routed::OutboxRefused { .. } => drop(claim),
            }
            answer(&tenant, &message_id, routed)
        }
        Err(e) => (
            RequestOutcome::Invalid,
            None,
            route_error(e).into_response(),
        ),
    };
    app.metrics.request(
        Some(&tenant),
        provider.as_ref(),
        outcome,
        app.clock.now().since(started),
    );
    response
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn answer(
    tenant: &TenantId,
    message_id: &str,
    routed: Routed,
) -> (RequestOutcome, Option<ProviderId>, Response) {
    match routed {
        Routed::Published {
            provider,
            reason,
            hops,
            delivered,
        } => {
            let body = json!({
                "status": "published",
                "message_id": message_id,
                "tenant_id": tenant,
                "provider_id": provider,
                "route_reason": reason.as_str(),
                "fallback_hops": hops,
                "attempts": delivered.attempts,
                "attempt_offsets_ms": delivered.attempt_offsets_ms,
                "stream": delivered.ack.stream,
                "sequence": delivered.ack.sequence,
                "duplicate": delivered.ack.duplicate,
            });
            (
                RequestOutcome::Published,
                Some(provider),
                json_response(StatusCode::OK, body),
            )
        }
        Routed::Queued {
            provider,
            seq,
            cause,
        } => {
            let body = json!({
                "status": "queued",
                "message_id": message_id,
                "tenant_id": tenant,
                "provider_id": provider,
                "reason": cause,
                "outbox_seq": seq,
            });
            (
                RequestOutcome::Queued,
                Some(provider),
                json_response(StatusCode::ACCEPTED, body),
            )
        }
        Routed::OutboxRefused { provider, error } => {
            let code = if matches!(error, OutboxError::Full { .. }) {
                "outbox_full"
            } else {
                "outbox_unavailable"
            };
            let body = json!({
                "status": "rejected",
                "code": code,
                "message": error.to_string(),
                "message_id": message_id,
                "tenant_id": tenant,
                "provider_id": provider,
            });
            (
                RequestOutcome::Rejected,
                Some(provider),
                json_response(StatusCode::SERVICE_UNAVAILABLE, body),
            )
        }
        Routed::Failed {
            provider,
            undelivered: u,
        } if u.cause == Cause::CircuitOpen => {
            let retry_after = u.retry_after.unwrap_or(Duration::ZERO);
            let body = json!({
                "status": "rejected",
                "code": "circuit_open",
                "reason": "circuit_open",
                "retry_after_ms": retry_after.as_millis() as u64,
                "message_id": message_id,
                "tenant_id": tenant,
                "provider_id": provider,
                "attempts": u.attempts,
                "attempt_offsets_ms": u.attempt_offsets_ms,
            });
            let mut response = json_response(StatusCode::SERVICE_UNAVAILABLE, body);
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            (RequestOutcome::Rejected, Some(provider), response)
        }
        Routed::Failed {
            provider,
            undelivered: u,
        } => {
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
                "message_id": message_id,
                "tenant_id": tenant,
                "provider_id": provider,
                "attempts": u.attempts,
                "attempt_offsets_ms": u.attempt_offsets_ms,
            });
            let outcome = if status == StatusCode::PAYLOAD_TOO_LARGE {
                RequestOutcome::Invalid
            } else {
                RequestOutcome::Failed
            };
            (outcome, Some(provider), json_response(status, body))
        }
    }
}

/// `POST /v1/decide`: the routing decision alone; nothing is admitted or remembered.
pub async fn decide(State(app): State<App>, request: Request) -> Response {
    let result = async {
        let body: DecideBody = read_json(&app, request).await?;
        let tenant = tenant_of(&body.tenant_id)?;
        let provider = provider_of(body.provider_id.as_deref())?;
        let max = app.config.raw.limits.max_message_id_len;
        let session = optional_token(body.session_id, "session_id", "invalid_session_id", max)?;
        let (decision, _) = app
            .router
            .decide(&tenant, provider.as_ref(), session.as_deref())
            .map_err(route_error)?;
        let state = app.router.breaker_state(&tenant, &decision.provider);
        Ok::<_, ApiError>(json!({
            "tenant_id": tenant,
            "provider_id": decision.provider,
            "reason": decision.reason.as_str(),
            "fallback_hops": decision.hops,
            "breaker_state": state.as_str(),
        }))
    }
    .await;
    match result {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_checked_at_the_edge() {
        assert!(validate_token("order-42:a/b", 128).is_ok());
        for bad in ["", "has space", "tab\t", "nul\0", "é"] {
            assert!(validate_token(bad, 128).is_err(), "{bad:?}");
        }
        assert!(validate_token(&"x".repeat(129), 128).is_err());
        assert_eq!(new_message_id().len(), 32);
        assert_ne!(new_message_id(), new_message_id());
        assert!(validate_token(&new_message_id(), 128).is_ok());
    }
}
