//! The router calls the scenario engine makes beyond [`RouterClient`]'s own: publishing
//! with or without a provider, breaker states of many keys at once, tenant policies, the
//! outbox, and probing whether the router has a feature at all. Built on the client's
//! public methods only.

use std::collections::HashMap;

use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{ClientError, PublishResponse, RouterClient};

/// Publishes one message to `provider`, or with `provider_id` left out (`None`) so the
/// tenant policy routes it.
pub async fn publish_to(
    client: &RouterClient,
    tenant: &str,
    provider: Option<&str>,
    message_id: &str,
    payload: Value,
) -> Result<PublishResponse, ClientError> {
    let mut body = json!({"tenant_id": tenant, "message_id": message_id, "payload": payload});
    if let Some(p) = provider {
        body["provider_id"] = json!(p);
    }
    client
        .publish_raw(body.to_string().into_bytes(), "application/json")
        .await
}

/// The state of every breaker of `provider`, by tenant (keys without a breaker are
/// absent: they have never been used, which is closed).
pub async fn breaker_states(
    client: &RouterClient,
    provider: &str,
) -> Result<HashMap<String, String>, ClientError> {
    let path = format!("/admin/breakers?provider_id={provider}");
    let v = client.admin(Method::GET, &path, None).await?;
    let list = v["breakers"]
        .as_array()
        .ok_or_else(|| ClientError::Decode {
            path: path.clone(),
            detail: "no breakers list".into(),
        })?;
    Ok(list
        .iter()
        .filter_map(|b| {
            Some((
                b["tenant_id"].as_str()?.to_owned(),
                b["state"].as_str()?.to_owned(),
            ))
        })
        .collect())
}

/// Whether the router serves `method path` at all: `false` when it answers 404
/// `not_found` (no such route) or 405 `method_not_allowed`; any other answer, error or
/// not, means the route exists.
pub async fn has_route(
    client: &RouterClient,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<bool, ClientError> {
    match client.admin(method, path, body).await {
        Ok(_) => Ok(true),
        Err(ClientError::Api { code, .. }) => {
            Ok(code != "not_found" && code != "method_not_allowed")
        }
        Err(ClientError::Decode { .. }) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Puts `policy` for `tenant` (`PUT /admin/policies/{tenant}`).
pub async fn put_policy(
    client: &RouterClient,
    tenant: &str,
    policy: Value,
) -> Result<Value, ClientError> {
    client
        .admin(
            Method::PUT,
            &format!("/admin/policies/{tenant}"),
            Some(policy),
        )
        .await
}

/// `GET /admin/outbox`.
pub async fn outbox(client: &RouterClient) -> Result<Value, ClientError> {
    client.admin(Method::GET, "/admin/outbox", None).await
}

/// Messages waiting in the outbox for `tenants` (all tenants when the answer has no
/// per-key detail: then the total depth).
pub fn outbox_depth(view: &Value, tenants: &[String], providers: &[String]) -> u64 {
    let per_key = ["keys", "entries", "by_key"]
        .iter()
        .find_map(|k| view.get(*k).and_then(Value::as_array));
    if let Some(keys) = per_key {
        return keys
            .iter()
            .filter(|k| {
                let t = k["tenant_id"].as_str().unwrap_or("");
                let p = k["provider_id"].as_str().unwrap_or("");
                tenants.iter().any(|x| x == t) && (p.is_empty() || providers.iter().any(|x| x == p))
            })
            .map(|k| {
                ["depth", "pending", "count"]
                    .iter()
                    .find_map(|f| k.get(*f).and_then(Value::as_u64))
                    .unwrap_or(0)
            })
            .sum();
    }
    ["depth", "pending", "total"]
        .iter()
        .find_map(|f| view.get(*f).and_then(Value::as_u64))
        .unwrap_or(0)
}
