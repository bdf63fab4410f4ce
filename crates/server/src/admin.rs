//! The admin API under `/admin`, behind a bearer token.
//!
//! 401 `unauthorized` without a token (or when no token is configured), 403 `forbidden`
//! with a wrong one; the token is compared in constant time and never logged. Reads never
//! change breaker state beyond the time-driven transitions every read applies (an open
//! breaker whose timeout passed is reported half-open); they never create breakers,
//! admit calls or reset counters.
//!
//! Routes:
//! - `GET /admin/breakers?state=&tenant_id=&provider_id=`: list;
//! - `GET /admin/breakers/{tenant}/{provider}`: inspect one;
//! - `POST /admin/breakers/{tenant}/{provider}/{force-open|force-closed|release|reset}`;
//! - `POST /admin/breakers/reset-all`;
//! - `GET /admin/transitions?since_us=`: the transition journal;
//! - `GET|PUT|DELETE /admin/faults` (`DELETE ?provider_id=&tenant_id=` clears a scope),
//!   `GET /admin/faults/attempts?since_us=`: fault rules and the broker-side attempt
//!   journal; only when faults are enabled;
//! - `GET /admin/broker/messages?subject=`: read back what the broker stored;
//! - `GET /admin/policies`, `GET|PUT|DELETE /admin/policies/{tenant}`: tenant policies;
//! - `GET /admin/outbox`: the outbox's depth and backlog per key;
//! - `GET /admin/config`: the effective configuration (token and broker password hidden);
//! - `GET /admin/clock`: the router's clock, in ms and µs.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use beamline_broker::faults::{FaultInjector, FaultRule};
use beamline_core::breaker::{BreakerHandle, BreakerSnapshot};
use beamline_core::{BreakerKey, Clock, ProviderId, TenantId, Timestamp};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::App;
use crate::error::{ApiError, ApiQuery};

/// The largest admin request body (a policy, a fault rule): 413 `body_too_large` past it.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The admin routes that take query parameters (each parses its own with [`ApiQuery`],
/// refusing unknown ones). Every other admin route takes none.
const ROUTES_WITH_QUERIES: [(Method, &str); 5] = [
    (Method::GET, "/admin/breakers"),
    (Method::GET, "/admin/transitions"),
    (Method::DELETE, "/admin/faults"),
    (Method::GET, "/admin/faults/attempts"),
    (Method::GET, "/admin/broker/messages"),
];

/// Refuses a query string on an admin route that takes no parameters (400
/// `invalid_query`), so `POST /admin/breakers/reset-all?tenant_id=x` does not quietly
/// reset every breaker.
pub async fn refuse_unknown_queries(request: Request, next: Next) -> Response {
    let uri = request.uri();
    let has_query = uri.query().is_some_and(|q| !q.is_empty());
    let takes_queries = ROUTES_WITH_QUERIES
        .iter()
        .any(|(m, p)| m == request.method() && *p == uri.path());
    if has_query && !takes_queries {
        return ApiError::bad_request(
            "invalid_query",
            format!(
                "{} {} takes no query parameters",
                request.method(),
                uri.path()
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// Checks the bearer token.
pub async fn require_token(State(app): State<App>, request: Request, next: Next) -> Response {
    let Some(expected) = app.config.raw.admin_token.as_deref() else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the admin API is disabled: no admin_token configured",
        )
        .into_response();
    };
    // `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 9110 §11.1).
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match given {
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token",
        )
        .into_response(),
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => {
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", "wrong bearer token").into_response()
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn key_from(tenant: &str, provider: &str) -> Result<BreakerKey, ApiError> {
    let tenant = TenantId::try_new(tenant)
        .map_err(|e| ApiError::bad_request("invalid_tenant_id", format!("tenant_id {e}")))?;
    let provider = ProviderId::try_new(provider)
        .map_err(|e| ApiError::bad_request("invalid_provider_id", format!("provider_id {e}")))?;
    Ok(BreakerKey::new(tenant, provider))
}

/// A breaker's view as JSON.
pub fn breaker_json(key: &BreakerKey, s: &BreakerSnapshot, now: Timestamp) -> Value {
    let last_opening = s.last_opening.map(|o| {
        json!({
            "at_ms": o.at.as_millis(),
            "ago_ms": now.since(o.at).as_millis() as u64,
            "reason": o.reason.as_str(),
            "rules": o.rules,
        })
    });
    json!({
        "tenant_id": key.tenant(),
        "provider_id": key.provider(),
        "state": s.state,
        "forced": s.forced,
        "mode": s.mode,
        "generation": s.generation,
        "since_ms": s.since.as_millis(),
        "open_remaining_ms": s.open_remaining.map(|d| d.as_millis() as u64),
        "window": s.window,
        "error_rate": s.error_rate,
        "slow_call_rate": s.slow_call_rate,
        "consecutive_failures": s.consecutive_failures,
        "probes_admitted": s.probes_admitted,
        "probes_in_flight": s.probes_in_flight,
        "probe_successes": s.probe_successes,
        "openings_since_close": s.openings_since_close,
        "last_opening": last_opening,
        "stats": s.stats,
    })
}

/// Filters of the breaker list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    tenant_id: Option<String>,
    provider_id: Option<String>,
}

/// `GET /admin/breakers`
pub async fn list_breakers(
    State(app): State<App>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(state) = q.state.as_deref()
        && !["closed", "open", "half_open"].contains(&state)
    {
        return Err(ApiError::bad_request(
            "invalid_state",
            "state must be closed, open or half_open",
        ));
    }
    let now = app.clock.now();
    let mut items: Vec<Value> = app
        .registry
        .handles()
        .into_iter()
        .filter(|h| {
            q.tenant_id
                .as_deref()
                .is_none_or(|t| h.key().tenant().as_str() == t)
        })
        .filter(|h| {
            q.provider_id
                .as_deref()
                .is_none_or(|p| h.key().provider().as_str() == p)
        })
        .filter_map(|h| {
            let s = h.snapshot(now);
            let keep = q.state.as_deref().is_none_or(|st| s.state.as_str() == st);
            keep.then(|| breaker_json(h.key(), &s, now))
        })
        .collect();
    items.sort_by(|a, b| {
        (a["tenant_id"].as_str(), a["provider_id"].as_str())
            .cmp(&(b["tenant_id"].as_str(), b["provider_id"].as_str()))
    });
    Ok(Json(json!({"now_ms": now.as_millis(), "breakers": items})))
}

/// `GET /admin/breakers/{tenant}/{provider}`
pub async fn get_breaker(
    State(app): State<App>,
    Path((tenant, provider)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let key = key_from(&tenant, &provider)?;
    let handle = app
        .registry
        .get(&key)
        .ok_or_else(|| breaker_not_found(&key))?;
    let now = app.clock.now();
    let mut body = breaker_json(&key, &handle.snapshot(now), now);
    body["config"] = serde_json::to_value(handle.settings().config()).unwrap_or(Value::Null);
    body["now_ms"] = json!(now.as_millis());
    Ok(Json(body))
}

fn breaker_not_found(key: &BreakerKey) -> ApiError {
    ApiError::not_found("breaker_not_found", format!("no breaker for {key}"))
}

/// `POST /admin/breakers/{tenant}/{provider}/{action}`
pub async fn breaker_action(
    State(app): State<App>,
    Path((tenant, provider, action)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let key = key_from(&tenant, &provider)?;
    let now = app.clock.now();
    let act = match action.as_str() {
        "force-open" => BreakerHandle::force_open,
        "force-closed" => BreakerHandle::force_closed,
        "release" => BreakerHandle::release,
        "reset" => BreakerHandle::reset,
        other => {
            return Err(ApiError::not_found(
                "unknown_action",
                format!("unknown action {other:?}: use force-open, force-closed, release or reset"),
            ));
        }
    };
    // Holding a key open or closed may come before its first call (the breaker is created,
    // with the tenant policy's settings if it has one); releasing or resetting a breaker
    // that does not exist is an operator's typo.
    let handle = if action.starts_with("force-") {
        let policy = app.router.policies().get(key.tenant());
        let settings = policy
            .as_ref()
            .map_or(app.registry.defaults(), |p| &p.breaker);
        app.registry.handle_with(&key, settings)
    } else {
        app.registry
            .get(&key)
            .ok_or_else(|| breaker_not_found(&key))?
    };
    act(&handle, now);
    tracing::info!(tenant_id = %key.tenant(), provider_id = %key.provider(), action = %action, "admin breaker action");
    Ok(Json(breaker_json(&key, &handle.snapshot(now), now)))
}

/// `POST /admin/breakers/reset-all`
pub async fn reset_all_breakers(State(app): State<App>) -> Json<Value> {
    let now = app.clock.now();
    let n = app.registry.len();
    app.registry.reset_all(now);
    tracing::info!(breakers = n, "admin reset of every breaker");
    Json(json!({"reset": n}))
}

/// `since_us` filter: microseconds on the router's clock.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinceQuery {
    #[serde(default)]
    since_us: u64,
}

/// `GET /admin/transitions`
pub async fn transitions(State(app): State<App>, ApiQuery(q): ApiQuery<SinceQuery>) -> Json<Value> {
    let now = app.clock.now();
    // Apply due time-driven transitions first so the journal is complete up to now.
    for h in app.registry.handles() {
        h.state(now);
    }
    Json(
        json!({"now_ms": now.as_millis(), "transitions": app.registry.observer().transitions(q.since_us)}),
    )
}

/// `GET /admin/config`: the effective configuration, secrets hidden.
pub async fn config(State(app): State<App>) -> Json<Value> {
    Json(serde_json::to_value(app.config.raw.redacted()).unwrap_or(Value::Null))
}

/// `GET /admin/clock`
pub async fn clock(State(app): State<App>) -> Json<Value> {
    Json(
        json!({"now_ms": app.clock.now().as_millis(), "now_us": app.clock.now().as_nanos() / 1000}),
    )
}

fn faults(app: &App) -> Result<&FaultInjector, ApiError> {
    app.faults.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "faults_disabled",
            "fault injection is disabled: start with faults_enabled",
        )
    })
}

/// `GET /admin/faults`
pub async fn get_faults(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"faults": faults(&app)?.rules()})))
}

/// `PUT /admin/faults`
pub async fn put_fault(
    State(app): State<App>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let injector = faults(&app)?;
    let rule: FaultRule = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_fault",
            format!("fault rule does not match the schema: {e}"),
        )
    })?;
    injector
        .set(rule)
        .map_err(|e| ApiError::bad_request("invalid_fault", e.to_string()))?;
    Ok(Json(json!({"faults": injector.rules()})))
}

/// Scope of `DELETE /admin/faults`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearQuery {
    provider_id: Option<String>,
    tenant_id: Option<String>,
}

/// `DELETE /admin/faults`
pub async fn delete_faults(
    State(app): State<App>,
    ApiQuery(q): ApiQuery<ClearQuery>,
) -> Result<Json<Value>, ApiError> {
    let injector = faults(&app)?;
    let cleared = match (q.provider_id, q.tenant_id) {
        (None, None) => injector.clear_all(),
        (Some(p), t) => {
            let provider = ProviderId::try_new(&p).map_err(|e| {
                ApiError::bad_request("invalid_provider_id", format!("provider_id {e}"))
            })?;
            let tenant = t.map(|t| TenantId::try_new(&t)).transpose().map_err(|e| {
                ApiError::bad_request("invalid_tenant_id", format!("tenant_id {e}"))
            })?;
            injector.clear(&provider, tenant.as_ref())
        }
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "tenant_id needs provider_id",
            ));
        }
    };
    Ok(Json(
        json!({"cleared": cleared, "faults": injector.rules()}),
    ))
}

/// `GET /admin/faults/attempts`
pub async fn fault_attempts(
    State(app): State<App>,
    ApiQuery(q): ApiQuery<SinceQuery>,
) -> Result<Json<Value>, ApiError> {
    let (attempts, total) = faults(&app)?.attempts(q.since_us);
    Ok(Json(
        json!({"now_ms": app.clock.now().as_millis(), "total": total, "attempts": attempts}),
    ))
}

/// Filter of the broker read-back.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagesQuery {
    subject: Option<String>,
}

/// `GET /admin/broker/messages`: the stored messages, as either broker reads them back.
pub async fn broker_messages(
    State(app): State<App>,
    ApiQuery(q): ApiQuery<MessagesQuery>,
) -> Result<Json<Value>, ApiError> {
    let subject = q.subject.as_deref();
    let messages: Vec<Value> = if let Some(embedded) = &app.embedded {
        embedded
            .messages(subject)
            .iter()
            .map(|m| json!(m))
            .collect()
    } else if let Some(js) = &app.jetstream {
        js.read_back(subject)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "broker_unavailable", e))?
            .iter()
            .map(|m| json!(m))
            .collect()
    } else {
        Vec::new()
    };
    Ok(Json(json!({"count": messages.len(), "messages": messages})))
}

fn tenant_param(tenant: &str) -> Result<TenantId, ApiError> {
    TenantId::try_new(tenant)
        .map_err(|e| ApiError::bad_request("invalid_tenant_id", format!("tenant_id {e}")))
}

/// `GET /admin/policies`
pub async fn list_policies(State(app): State<App>) -> Json<Value> {
    let policies: serde_json::Map<String, Value> = app
        .router
        .policies()
        .list()
        .into_iter()
        .map(|(t, p)| {
            (
                t.to_string(),
                serde_json::to_value(p.config()).unwrap_or(Value::Null),
            )
        })
        .collect();
    Json(json!({"policies": policies}))
}

/// `GET /admin/policies/{tenant}`
pub async fn get_policy(
    State(app): State<App>,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant_param(&tenant)?;
    let policy = app.router.policies().get(&tenant).ok_or_else(|| {
        ApiError::not_found("policy_not_found", format!("no policy for tenant {tenant}"))
    })?;
    Ok(Json(
        json!({"tenant_id": tenant, "policy": policy.config()}),
    ))
}

/// `PUT /admin/policies/{tenant}`: body is the policy as JSON or TOML. The tenant's
/// existing breakers restart fresh with the policy's breaker settings.
pub async fn put_policy(
    State(app): State<App>,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant_param(&tenant)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("invalid_policy", "policy is not UTF-8"))?;
    let policy = app
        .router
        .policies()
        .put(&tenant, text)
        .map_err(|e| match e {
            crate::policies::PolicyError::File { .. } => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "policy_not_saved",
                e.to_string(),
            ),
            other => ApiError::bad_request("invalid_policy", other.to_string()),
        })?;
    let now = app.clock.now();
    for handle in app
        .registry
        .handles()
        .into_iter()
        .filter(|h| *h.key().tenant() == tenant)
    {
        app.registry
            .replace_settings(handle.key(), std::sync::Arc::clone(&policy.breaker), now);
    }
    tracing::info!(tenant_id = %tenant, "policy updated");
    Ok(Json(
        json!({"tenant_id": tenant, "policy": policy.config()}),
    ))
}

/// `DELETE /admin/policies/{tenant}`
pub async fn delete_policy(
    State(app): State<App>,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant_param(&tenant)?;
    let deleted = app.router.policies().delete(&tenant).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "policy_not_saved",
            e.to_string(),
        )
    })?;
    if !deleted {
        return Err(ApiError::not_found(
            "policy_not_found",
            format!("no policy for tenant {tenant}"),
        ));
    }
    tracing::info!(tenant_id = %tenant, "policy deleted");
    Ok(Json(json!({"tenant_id": tenant, "deleted": true})))
}

/// `GET /admin/outbox`: depth, capacity and every key's backlog.
pub async fn outbox(State(app): State<App>) -> Json<Value> {
    match app.router.outbox() {
        Some(outbox) => Json(json!({
            "enabled": true,
            "depth": outbox.depth(),
            "capacity": outbox.capacity(),
            "now_unix_ms": crate::clock::unix_ms(),
            "keys": outbox.backlog(),
        })),
        None => Json(json!({"enabled": false, "depth": 0, "capacity": 0, "keys": []})),
    }
}
