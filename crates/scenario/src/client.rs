//! An HTTP client for the router's public and admin APIs, used by the scenario runner,
//! the `ctl` CLI and the integration tests.

use std::time::Duration;

use beamline_core::Clock;
use beamline_server::clock::TokioClock;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

/// A call to the router failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The router could not be reached.
    #[error("cannot reach the router at {url}: {detail}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// Why.
        detail: String,
    },
    /// The router answered with an error.
    #[error("{method} {path}: HTTP {status} {code}: {message}")]
    Api {
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// HTTP status.
        status: u16,
        /// The stable error code.
        code: String,
        /// The message.
        message: String,
    },
    /// The answer was not what the API documents.
    #[error("unexpected answer to {path}: {detail}")]
    Decode {
        /// Path.
        path: String,
        /// What was wrong.
        detail: String,
    },
}

/// The answer to one publish request.
#[derive(Clone, Debug)]
pub struct PublishResponse {
    /// HTTP status (0 when the request never got an answer).
    pub status: u16,
    /// Time from sending to the full answer.
    pub latency: Duration,
    /// The JSON body (null when absent or not JSON).
    pub body: Value,
}

impl PublishResponse {
    /// The `code` or `status` field, for counting.
    pub fn code(&self) -> &str {
        self.body
            .get("code")
            .or_else(|| self.body.get("status"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The `attempts` field (0 when absent).
    pub fn attempts(&self) -> u32 {
        self.body
            .get("attempts")
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32
    }

    /// The `attempt_offsets_ms` field.
    pub fn attempt_offsets_ms(&self) -> Vec<u64> {
        self.body
            .get("attempt_offsets_ms")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default()
    }
}

/// One breaker transition from the router's journal.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct TransitionRecord {
    /// Microseconds on the router's clock.
    pub at_us: u64,
    /// Tenant.
    pub tenant_id: String,
    /// Provider.
    pub provider_id: String,
    /// From.
    pub from: String,
    /// To.
    pub to: String,
    /// Reason.
    pub reason: String,
    /// Rules that held.
    pub rules: Vec<String>,
}

/// One attempt that reached the broker side (the fault injector's journal).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct AttemptRecord {
    /// Microseconds on the router's clock.
    pub at_us: u64,
    /// Tenant.
    pub tenant_id: String,
    /// Provider.
    pub provider_id: String,
    /// Whether a fault was applied.
    pub faulted: bool,
}

/// Parses an HTTP method name (any token, such as `GET` or `BREW`).
fn method_by_name(name: &str, path: &str) -> Result<Method, ClientError> {
    Method::from_bytes(name.as_bytes()).map_err(|e| ClientError::Decode {
        path: path.to_owned(),
        detail: format!("method {name:?}: {e}"),
    })
}

/// A client of one router.
#[derive(Clone, Debug)]
pub struct RouterClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    clock: TokioClock,
}

impl RouterClient {
    /// A client for the router at `base` (`http://host:port`), with the admin `token`.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| ClientError::Unreachable {
                url: base.to_owned(),
                detail: e.to_string(),
            })?;
        Ok(RouterClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
            clock: TokioClock::new(),
        })
    }

    /// The router's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn unreachable(&self, e: reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            detail: e.to_string(),
        }
    }

    /// Publishes one message; any HTTP answer is a `PublishResponse`, only transport
    /// failures are errors.
    pub async fn publish(
        &self,
        tenant: &str,
        provider: &str,
        message_id: &str,
        payload: Value,
    ) -> Result<PublishResponse, ClientError> {
        let body = json!({"tenant_id": tenant, "provider_id": provider, "message_id": message_id, "payload": payload});
        self.publish_raw(body.to_string().into_bytes(), "application/json")
            .await
    }

    /// Sends `body` as-is to `/v1/publish` (hostile-input tests).
    pub async fn publish_raw(
        &self,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<PublishResponse, ClientError> {
        let headers = [(reqwest::header::CONTENT_TYPE.as_str(), content_type)];
        self.request_raw("POST", "/v1/publish", &headers, body)
            .await
    }

    /// Sends an arbitrary request as-is (hostile-input tests): `method` may be any token
    /// (`"GET"`, `"PATCH"`, `"BREW"`), `path` starts with `/` and may carry a query string,
    /// `headers` are sent exactly as given (no admin token is added). Any HTTP answer is a
    /// [`PublishResponse`]; only transport failures (and a method that is not a valid HTTP
    /// token) are errors.
    pub async fn request_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<PublishResponse, ClientError> {
        let method = method_by_name(method, path)?;
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let started = self.clock.now();
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        Ok(PublishResponse {
            status,
            latency: self.clock.now().since(started),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let response = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        response.text().await.map_err(|e| self.unreachable(e))
    }

    /// A scrape function for the `r10`/`r11` wait helpers.
    pub fn scraper(
        &self,
    ) -> impl FnMut() -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<String, String>> + Send>,
    > + '_ {
        move || {
            let client = self.clone();
            Box::pin(async move { client.metrics().await.map_err(|e| e.to_string()) })
        }
    }

    /// Calls an admin route and returns its JSON answer.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            path: path.to_owned(),
            detail: format!("HTTP {status}, body is not JSON: {e}"),
        })?;
        if status != StatusCode::OK {
            let field = |k: &str| {
                value
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            return Err(ClientError::Api {
                method: method.to_string(),
                path: path.to_owned(),
                status: status.as_u16(),
                code: field("code"),
                message: field("message"),
            });
        }
        Ok(value)
    }

    /// [`RouterClient::admin`] with the method given by name (`"GET"`, `"POST"`, `"PUT"`,
    /// `"DELETE"`), for callers that do not depend on `reqwest` (the `ctl` CLI).
    pub async fn admin_by_name(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let method = method_by_name(method, path)?;
        self.admin(method, path, body).await
    }

    fn decode<T: for<'de> Deserialize<'de>>(path: &str, value: Value) -> Result<T, ClientError> {
        serde_json::from_value(value).map_err(|e| ClientError::Decode {
            path: path.to_owned(),
            detail: e.to_string(),
        })
    }

    /// Sets a fault rule (`fault` as the API takes it, e.g. `{"type":"timeout"}`).
    pub async fn set_fault(
        &self,
        provider: &str,
        tenant: Option<&str>,
        fault: Value,
    ) -> Result<(), ClientError> {
        let rule = json!({"provider_id": provider, "tenant_id": tenant, "fault": fault});
        self.admin(Method::PUT, "/admin/faults", Some(rule))
            .await
            .map(drop)
    }

    /// Clears the fault rules of `provider` (every rule when `None`).
    pub async fn clear_faults(&self, provider: Option<&str>) -> Result<(), ClientError> {
        let path = match provider {
            Some(p) => format!("/admin/faults?provider_id={p}"),
            None => "/admin/faults".to_owned(),
        };
        self.admin(Method::DELETE, &path, None).await.map(drop)
    }

    /// The router's clock, in microseconds.
    pub async fn now_us(&self) -> Result<u64, ClientError> {
        let v = self.admin(Method::GET, "/admin/clock", None).await?;
        v.get("now_us")
            .and_then(Value::as_u64)
            .ok_or_else(|| ClientError::Decode {
                path: "/admin/clock".into(),
                detail: "no now_us".into(),
            })
    }

    /// Breaker transitions journaled at or after `since_us`.
    pub async fn transitions(&self, since_us: u64) -> Result<Vec<TransitionRecord>, ClientError> {
        let path = format!("/admin/transitions?since_us={since_us}");
        let mut v = self.admin(Method::GET, &path, None).await?;
        Self::decode(&path, v["transitions"].take())
    }

    /// Broker-side attempts journaled at or after `since_us`.
    pub async fn attempts(&self, since_us: u64) -> Result<Vec<AttemptRecord>, ClientError> {
        let path = format!("/admin/faults/attempts?since_us={since_us}");
        let mut v = self.admin(Method::GET, &path, None).await?;
        Self::decode(&path, v["attempts"].take())
    }

    /// The ids of the messages the broker stored on `subject`, in sequence order.
    pub async fn stored_message_ids(&self, subject: &str) -> Result<Vec<String>, ClientError> {
        let path = format!("/admin/broker/messages?subject={subject}");
        let v = self.admin(Method::GET, &path, None).await?;
        let ids = v["messages"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["message_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(ids)
    }

    /// The effective configuration.
    pub async fn config(&self) -> Result<Value, ClientError> {
        self.admin(Method::GET, "/admin/config", None).await
    }
}
