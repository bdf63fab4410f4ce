//! Hostile input: a table of bad requests against a live router, each with the status and
//! stable `code` it must get. After the table: the router is still healthy, no request
//! got a 5xx, and a valid publish still lands in the broker exactly once.
//!
//! Every failed row is collected and reported together with the full answer, so one run
//! shows every deviation at once. No row may get a 5xx, and every error answer has the
//! JSON error body.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use beamline_scenario::client::{PublishResponse, RouterClient};
use beamline_server::config::ServerConfig;
use beamline_test_util::{TestRouter, test_token};
use serde_json::{Value, json};

/// `limits.max_body_bytes` of the router under test.
const MAX_BODY: usize = 64 * 1024;
/// `limits.max_payload_bytes` of the router under test.
const MAX_PAYLOAD: usize = 32 * 1024;
/// `limits.max_message_id_len` (the default).
const MAX_MESSAGE_ID: usize = 128;
/// Nesting depth of the deeply nested bodies.
const DEEP: usize = 10_000;

/// Which router a row goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// Faults enabled.
    Main,
    /// Faults disabled.
    NoFaults,
}

/// How a row authenticates.
#[derive(Clone, Debug)]
enum Auth {
    /// No `Authorization` header.
    None,
    /// `Authorization: Bearer <the right token>`.
    Token,
    /// This exact `Authorization` header.
    Header(String),
}

/// One request and the answer it must get.
#[derive(Clone, Debug)]
struct Case {
    name: String,
    target: Target,
    method: &'static str,
    path: String,
    content_type: Option<String>,
    auth: Auth,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

impl Case {
    fn with_content_type(mut self, content_type: Option<&str>) -> Self {
        self.content_type = content_type.map(str::to_owned);
        self
    }

    fn on(mut self, target: Target) -> Self {
        self.target = target;
        self
    }
}

/// `POST /v1/publish` with `body` as JSON.
fn publish(name: &str, body: impl Into<Vec<u8>>, status: u16, code: &'static str) -> Case {
    Case {
        name: name.to_owned(),
        target: Target::Main,
        method: "POST",
        path: "/v1/publish".to_owned(),
        content_type: Some("application/json".to_owned()),
        auth: Auth::None,
        body: body.into(),
        status,
        code,
    }
}

/// `POST /v1/publish` of `value`.
fn publish_json(name: &str, value: Value, status: u16, code: &'static str) -> Case {
    publish(name, value.to_string(), status, code)
}

/// A publish body with `tenant_id` replaced (a valid body otherwise).
fn with_tenant(tenant: &str) -> Value {
    json!({"tenant_id": tenant, "provider_id": "p-ok", "payload": {"k": 1}})
}

/// A publish body with `provider_id` replaced.
fn with_provider(provider: &str) -> Value {
    json!({"tenant_id": "acme", "provider_id": provider, "payload": {"k": 1}})
}

/// A publish body with `message_id` replaced.
fn with_message_id(id: &str) -> Value {
    json!({"tenant_id": "acme", "provider_id": "p-ok", "message_id": id, "payload": {"k": 1}})
}

/// Any request to the router.
fn request(
    name: &str,
    method: &'static str,
    path: &str,
    auth: Auth,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name: name.to_owned(),
        target: Target::Main,
        method,
        path: path.to_owned(),
        content_type: Some("application/json".to_owned()),
        auth,
        body: body.into(),
        status,
        code,
    }
}

/// An admin call with the right token.
fn admin(
    name: &str,
    method: &'static str,
    path: &str,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Case {
    request(name, method, path, Auth::Token, body, status, code)
}

/// `PUT /admin/faults` of `rule`, which must be refused as `invalid_fault`.
fn bad_fault(name: &str, rule: Value) -> Case {
    admin(
        name,
        "PUT",
        "/admin/faults",
        rule.to_string(),
        400,
        "invalid_fault",
    )
}

fn nested_arrays(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

fn cases() -> Vec<Case> {
    let long_id = "a".repeat(10 * 1024);
    let valid = json!({"tenant_id": "acme", "provider_id": "p-ok", "payload": {"k": 1}});
    let mut rows = vec![
        // Not JSON, or not complete JSON.
        publish("malformed JSON", "{\"tenant_id\": acme}", 400, "invalid_json"),
        publish(
            "truncated JSON",
            "{\"tenant_id\":\"acme\",\"provider_id\":\"p-ok\",\"payload\":{\"a\":",
            400,
            "invalid_json",
        ),
        publish("empty body", "", 400, "invalid_json"),
        publish("plain text body", "hello router", 400, "invalid_json"),
        publish(
            "trailing garbage after the object",
            valid.to_string() + " {}",
            400,
            "invalid_json",
        ),
        publish(
            "invalid UTF-8 inside a string",
            b"{\"tenant_id\":\"ac\xffme\",\"provider_id\":\"p-ok\",\"payload\":1}".to_vec(),
            400,
            "invalid_json",
        ),
        publish(
            "lone surrogate escape in tenant_id",
            r#"{"tenant_id":"\ud800","provider_id":"p-ok","payload":1}"#,
            400,
            "invalid_json",
        ),
        publish(
            "single-quoted strings",
            "{'tenant_id':'acme','provider_id':'p-ok','payload':1}",
            400,
            "invalid_json",
        ),
        // Wrong types, field by field.
        publish_json(
            "tenant_id is a number",
            json!({"tenant_id": 42, "provider_id": "p-ok", "payload": 1}),
            400,
            "invalid_request",
        ),
        publish_json(
            "tenant_id is null",
            json!({"tenant_id": null, "provider_id": "p-ok", "payload": 1}),
            400,
            "invalid_request",
        ),
        publish_json(
            "provider_id is an array",
            json!({"tenant_id": "acme", "provider_id": ["p-ok"], "payload": 1}),
            400,
            "invalid_request",
        ),
        publish_json(
            "provider_id is a boolean",
            json!({"tenant_id": "acme", "provider_id": true, "payload": 1}),
            400,
            "invalid_request",
        ),
        publish_json(
            "message_id is a number",
            json!({"tenant_id": "acme", "provider_id": "p-ok", "message_id": 7, "payload": 1}),
            400,
            "invalid_request",
        ),
        publish_json(
            "message_id is an object",
            json!({"tenant_id": "acme", "provider_id": "p-ok", "message_id": {}, "payload": 1}),
            400,
            "invalid_request",
        ),
        // Missing fields, unknown fields, duplicate fields.
        publish_json(
            "missing tenant_id",
            json!({"provider_id": "p-ok", "payload": 1}),
            400,
            "invalid_request",
        ),
        publish_json(
            "missing payload",
            json!({"tenant_id": "acme", "provider_id": "p-ok"}),
            400,
            "invalid_request",
        ),
        publish_json("empty object", json!({}), 400, "invalid_request"),
        publish_json(
            "unknown field",
            json!({"tenant_id": "acme", "provider_id": "p-ok", "payload": 1, "priority": "high"}),
            400,
            "invalid_request",
        ),
        publish(
            "duplicate tenant_id field",
            r#"{"tenant_id":"acme","tenant_id":"evil","provider_id":"p-ok","payload":1}"#,
            400,
            "invalid_request",
        ),
        // JSON that is not an object.
        publish("body is a string", "\"acme\"", 400, "invalid_request"),
        publish("body is null", "null", 400, "invalid_request"),
        publish("body is a number", "12345", 400, "invalid_request"),
        publish("body is an empty array", "[]", 400, "invalid_request"),
        publish(
            "body is an array of the fields in order",
            r#"["acme","p-ok","by-position",{"k":1}]"#,
            400,
            "invalid_request",
        ),
        publish(
            "body is an array of all five fields in order",
            r#"["acme","p-ok","by-position-5",null,{"k":1}]"#,
            400,
            "invalid_request",
        ),
        publish(
            "body is an array holding a valid object",
            format!("[{valid}]"),
            400,
            "invalid_request",
        ),
        // Ids that break their rule.
        publish_json(
            "empty tenant_id",
            with_tenant(""),
            400,
            "invalid_tenant_id",
        ),
        publish_json(
            "empty provider_id",
            with_provider(""),
            400,
            "invalid_provider_id",
        ),
        publish_json(
            "tenant_id with a control character",
            with_tenant("ac\u{1}me"),
            400,
            "invalid_tenant_id",
        ),
        publish_json(
            "tenant_id with a NUL escape",
            with_tenant("acme\u{0}"),
            400,
            "invalid_tenant_id",
        ),
        publish_json(
            "tenant_id with a newline",
            with_tenant("acme\nX-Injected: 1"),
            400,
            "invalid_tenant_id",
        ),
        publish_json(
            "tenant_id with a dot",
            with_tenant("acme.eu"),
            400,
            "invalid_tenant_id",
        ),
        publish_json(
            "tenant_id with a space",
            with_tenant("ac me"),
            400,
            "invalid_tenant_id",
        ),
        publish_json(
            "tenant_id with unicode",
            with_tenant("äcme"),
            400,
            "invalid_tenant_id",
        ),
        publish_json(
            "provider_id with subject wildcards",
            with_provider("p.*.>"),
            400,
            "invalid_provider_id",
        ),
        publish_json(
            "provider_id with a dot",
            with_provider("sms.eu"),
            400,
            "invalid_provider_id",
        ),
        publish_json(
            "provider_id with an emoji",
            with_provider("sms-💥"),
            400,
            "invalid_provider_id",
        ),
        publish_json(
            "provider_id with a tab",
            with_provider("sms\teu"),
            400,
            "invalid_provider_id",
        ),
        publish_json(
            "10 KB tenant_id",
            with_tenant(&long_id),
            400,
            "invalid_tenant_id",
        ),
        publish_json(
            "10 KB provider_id",
            with_provider(&long_id),
            400,
            "invalid_provider_id",
        ),
        publish_json(
            "65-character tenant_id",
            with_tenant(&"t".repeat(65)),
            400,
            "invalid_tenant_id",
        ),
        publish_json(
            "message_id one byte too long",
            with_message_id(&"m".repeat(MAX_MESSAGE_ID + 1)),
            400,
            "invalid_message_id",
        ),
        publish_json(
            "10 KB message_id",
            with_message_id(&long_id),
            400,
            "invalid_message_id",
        ),
        publish_json(
            "message_id with a space",
            with_message_id("order 42"),
            400,
            "invalid_message_id",
        ),
        publish_json(
            "empty message_id",
            with_message_id(""),
            400,
            "invalid_message_id",
        ),
        publish_json(
            "message_id with unicode",
            with_message_id("ordér-42"),
            400,
            "invalid_message_id",
        ),
        publish_json(
            "message_id with a control character",
            with_message_id("order\u{7f}42"),
            400,
            "invalid_message_id",
        ),
        // Sizes.
        publish_json(
            "payload one byte over limits.max_payload_bytes",
            json!({"tenant_id": "acme", "provider_id": "p-ok", "payload": "x".repeat(MAX_PAYLOAD - 1)}),
            413,
            "payload_too_large",
        ),
        publish_json(
            "body over limits.max_body_bytes",
            json!({"tenant_id": "acme", "provider_id": "p-ok", "payload": "x".repeat(MAX_BODY)}),
            413,
            "body_too_large",
        ),
        publish(
            "10 000 nested arrays as tenant_id",
            format!(
                r#"{{"tenant_id":{},"provider_id":"p-ok","payload":1}}"#,
                nested_arrays(DEEP)
            ),
            400,
            "invalid_request",
        ),
        publish(
            "10 000 nested arrays as the body",
            nested_arrays(DEEP),
            400,
            "invalid_request",
        ),
        publish(
            "10 000 unclosed arrays as the body",
            "[".repeat(DEEP),
            400,
            "invalid_request",
        ),
        // Content type.
        publish_json("Content-Type text/plain", valid.clone(), 415, "unsupported_media_type")
            .with_content_type(Some("text/plain")),
        publish_json("no Content-Type", valid.clone(), 415, "unsupported_media_type")
            .with_content_type(None),
        publish_json(
            "Content-Type application/jsonp",
            valid.clone(),
            415,
            "unsupported_media_type",
        )
        .with_content_type(Some("application/jsonp")),
        publish_json(
            "Content-Type form-urlencoded",
            valid.clone(),
            415,
            "unsupported_media_type",
        )
        .with_content_type(Some("application/x-www-form-urlencoded")),
        // Accepted at the edges (these are stored; the count is checked at the end).
        publish_json(
            "payload exactly limits.max_payload_bytes",
            json!({"tenant_id": "acme", "provider_id": "p-ok", "message_id": "edge-payload",
                   "payload": "x".repeat(MAX_PAYLOAD - 2)}),
            200,
            "published",
        ),
        publish_json(
            "message_id exactly limits.max_message_id_len",
            with_message_id(&"m".repeat(MAX_MESSAGE_ID)),
            200,
            "published",
        ),
        publish_json(
            "64-character ids",
            json!({"tenant_id": "t".repeat(64), "provider_id": "p".repeat(64), "payload": null}),
            200,
            "published",
        ),
        publish_json(
            "Content-Type with charset, in capitals",
            json!({"tenant_id": "acme", "provider_id": "p-ok", "message_id": "ct-caps", "payload": []}),
            200,
            "published",
        )
        .with_content_type(Some("APPLICATION/JSON; charset=utf-8")),
        publish(
            "10 000 nested arrays as the payload (depth is not limited; the size is)",
            format!(
                r#"{{"tenant_id":"acme","provider_id":"p-ok","message_id":"deep","payload":{}}}"#,
                nested_arrays(DEEP)
            ),
            200,
            "published",
        ),
        // Routes and methods.
        request("unknown route", "GET", "/v2/publish", Auth::None, "", 404, "not_found"),
        request("unknown route under /admin", "GET", "/admin/nope", Auth::Token, "", 404, "not_found"),
        request("GET /v1/publish", "GET", "/v1/publish", Auth::None, "", 405, "method_not_allowed"),
        request("PUT /v1/publish", "PUT", "/v1/publish", Auth::None, valid.to_string(), 405, "method_not_allowed"),
        request("DELETE /healthz", "DELETE", "/healthz", Auth::None, "", 405, "method_not_allowed"),
        request("POST /metrics", "POST", "/metrics", Auth::None, "", 405, "method_not_allowed"),
        request("a made-up method", "BREW", "/v1/publish", Auth::None, "", 405, "method_not_allowed"),
        admin("PATCH /admin/faults", "PATCH", "/admin/faults", "{}", 405, "method_not_allowed"),
        admin("GET /admin/breakers/reset-all", "GET", "/admin/breakers/reset-all", "", 405, "method_not_allowed"),
        // Admin authentication.
        request("admin without a token", "GET", "/admin/breakers", Auth::None, "", 401, "unauthorized"),
        request("admin with a wrong token", "GET", "/admin/breakers", Auth::Header("Bearer wrong-token-0123456789".into()), "", 403, "forbidden"),
        // HTTP trims the header's trailing whitespace: "Bearer " is a bare scheme, no token.
        request("admin with an empty bearer token", "GET", "/admin/breakers", Auth::Header("Bearer ".into()), "", 401, "unauthorized"),
        request("admin with the token and one more character", "GET", "/admin/config", Auth::Header(format!("Bearer {}x", test_token())), "", 403, "forbidden"),
        request("admin with the token's first half", "GET", "/admin/config", Auth::Header(format!("Bearer {}", &test_token()[..8])), "", 403, "forbidden"),
        // The scheme is case-insensitive (RFC 9110): a wrong token under "bearer" is a wrong token.
        request("admin with a wrong token in lower-case scheme", "GET", "/admin/config", Auth::Header("bearer wrong-token-0123456789".into()), "", 403, "forbidden"),
        request("admin with the token under the Basic scheme", "GET", "/admin/config", Auth::Header(format!("Basic {}", test_token())), "", 401, "unauthorized"),
        request("admin with a 10 KB token", "GET", "/admin/breakers", Auth::Header(format!("Bearer {long_id}")), "", 403, "forbidden"),
        request("admin with Basic auth", "GET", "/admin/breakers", Auth::Header("Basic YWRtaW46YWRtaW4=".into()), "", 401, "unauthorized"),
        request("admin reset-all without a token", "POST", "/admin/breakers/reset-all", Auth::None, "", 401, "unauthorized"),
        request("admin force-open with a wrong token", "POST", "/admin/breakers/acme/p-ok/force-open", Auth::Header("Bearer nope".into()), "", 403, "forbidden"),
        request("PUT fault without a token", "PUT", "/admin/faults", Auth::None, r#"{"provider_id":"p-ok","fault":{"type":"timeout"}}"#, 401, "unauthorized"),
        // Admin breakers: bad filters, keys and actions.
        admin("list with an unknown state", "GET", "/admin/breakers?state=ajar", "", 400, "invalid_state"),
        admin("list with an empty state", "GET", "/admin/breakers?state=", "", 400, "invalid_state"),
        admin("unknown breaker", "GET", "/admin/breakers/acme/never-seen", "", 404, "breaker_not_found"),
        admin("breaker with a dotted tenant", "GET", "/admin/breakers/acme.eu/p-ok", "", 400, "invalid_tenant_id"),
        admin("breaker with an emoji provider", "GET", "/admin/breakers/acme/%F0%9F%92%A5", "", 400, "invalid_provider_id"),
        admin("breaker with a 10 KB tenant", "GET", &format!("/admin/breakers/{long_id}/p-ok"), "", 400, "invalid_tenant_id"),
        admin("unknown breaker action", "POST", "/admin/breakers/acme/p-ok/explode", "", 404, "unknown_action"),
        admin("action on an encoded-space tenant", "POST", "/admin/breakers/ac%20me/p-ok/force-open", "", 400, "invalid_tenant_id"),
        // Admin faults: rules that fail validation, bad scopes.
        admin("fault rule that is not JSON", "PUT", "/admin/faults", "fault!", 400, "invalid_fault"),
        bad_fault("fault of an unknown type", json!({"provider_id": "p-ok", "fault": {"type": "meteor"}})),
        bad_fault("timeout fault with an unknown field", json!({"provider_id": "p-ok", "fault": {"type": "timeout", "extra": 1}})),
        bad_fault("wrapped fault with an unknown field", json!({"provider_id": "p-ok", "fault": {"type": "intermittent", "probability": 0.5, "fault": {"type": "close_connection", "ms": 5}}})),
        bad_fault("fault with an unknown error kind", json!({"provider_id": "p-ok", "fault": {"type": "error", "kind": "gremlins"}})),
        bad_fault("fault probability above 1", json!({"provider_id": "p-ok", "fault": {"type": "intermittent", "probability": 1.5, "fault": {"type": "timeout"}}})),
        bad_fault("intermittent inside intermittent", json!({"provider_id": "p-ok", "fault": {"type": "intermittent", "probability": 0.5, "fault": {"type": "intermittent", "probability": 0.5, "fault": {"type": "timeout"}}}})),
        bad_fault("delay over the maximum", json!({"provider_id": "p-ok", "fault": {"type": "delay", "ms": 1_000_000_000u64}})),
        bad_fault("negative delay", json!({"provider_id": "p-ok", "fault": {"type": "delay", "ms": -5}})),
        bad_fault("fault rule with a dotted provider", json!({"provider_id": "p.ok", "fault": {"type": "timeout"}})),
        bad_fault("fault rule with an unknown field", json!({"provider_id": "p-ok", "fault": {"type": "timeout"}, "when": "now"})),
        bad_fault("fault rule without a provider", json!({"fault": {"type": "timeout"}})),
        admin("clear faults of a tenant without a provider", "DELETE", "/admin/faults?tenant_id=acme", "", 400, "invalid_request"),
        admin("clear faults of a dotted provider", "DELETE", "/admin/faults?provider_id=p.ok", "", 400, "invalid_provider_id"),
        admin("clear faults of a blank tenant", "DELETE", "/admin/faults?provider_id=p-ok&tenant_id=%20", "", 400, "invalid_tenant_id"),
        // Faults disabled.
        admin("GET faults when disabled", "GET", "/admin/faults", "", 403, "faults_disabled").on(Target::NoFaults),
        admin("PUT fault when disabled", "PUT", "/admin/faults", r#"{"provider_id":"p-ok","fault":{"type":"timeout"}}"#, 403, "faults_disabled").on(Target::NoFaults),
        admin("DELETE faults when disabled", "DELETE", "/admin/faults", "", 403, "faults_disabled").on(Target::NoFaults),
        admin("fault attempts when disabled", "GET", "/admin/faults/attempts", "", 403, "faults_disabled").on(Target::NoFaults),
    ];
    rows.extend(query_rejections());
    rows.extend(routing_and_policies());
    rows
}

/// The tenant [`POLICY`] is installed for before the table runs.
const POLICY_TENANT: &str = "polly";
/// Its policy: one provider.
const POLICY: &str = r#"{"providers": [{"id": "p-ok"}]}"#;

/// `PUT /admin/policies/acme` of `body`, which must be refused as `invalid_policy`.
fn bad_policy(name: &str, body: impl Into<Vec<u8>>) -> Case {
    admin(
        name,
        "PUT",
        "/admin/policies/acme",
        body,
        400,
        "invalid_policy",
    )
}

/// `POST /v1/decide` of `body`.
fn decide(name: &str, body: Value, status: u16, code: &'static str) -> Case {
    let mut case = publish_json(name, body, status, code);
    case.path = "/v1/decide".to_owned();
    case
}

/// Routing by policy, message-id reuse, sessions, `/v1/decide` and the policy admin API.
fn routing_and_policies() -> Vec<Case> {
    let conflict = |payload: Value| json!({"tenant_id": "acme", "provider_id": "p-ok", "message_id": "conflict-1", "payload": payload});
    let provider = |id: &str| json!({"id": id});
    vec![
        publish_json("no provider_id and no policy", json!({"tenant_id": "acme", "payload": 1}), 404, "no_policy"),
        publish_json("provider_id null and no policy", json!({"tenant_id": "acme", "provider_id": null, "payload": 1}), 404, "no_policy"),
        publish_json("provider outside the tenant's policy", json!({"tenant_id": POLICY_TENANT, "provider_id": "p-other", "payload": 1}), 404, "unknown_provider"),
        publish_json("first use of a message_id", conflict(json!({"n": 1})), 200, "published"),
        publish_json("same message_id, same payload", conflict(json!({"n": 1})), 200, "published"),
        publish_json("same message_id, another payload", conflict(json!({"n": 2})), 409, "message_id_conflict"),
        publish_json("message_id first sent to a refused provider", json!({"tenant_id": POLICY_TENANT, "provider_id": "p-other", "message_id": "refused-1", "payload": 1}), 404, "unknown_provider"),
        publish_json("the refused message_id reused with another payload", json!({"tenant_id": POLICY_TENANT, "provider_id": "p-ok", "message_id": "refused-1", "payload": 2}), 200, "published")
,
        publish_json("session_id with a space", json!({"tenant_id": "acme", "provider_id": "p-ok", "session_id": "s 1", "payload": 1}), 400, "invalid_session_id"),
        publish_json("session_id is a number", json!({"tenant_id": "acme", "provider_id": "p-ok", "session_id": 1, "payload": 1}), 400, "invalid_request"),
        decide("decide with text/plain", json!({"tenant_id": "acme"}), 415, "unsupported_media_type").with_content_type(Some("text/plain")),
        decide("decide with an empty object", json!({}), 400, "invalid_request"),
        decide("decide with a payload field", json!({"tenant_id": "acme", "payload": 1}), 400, "invalid_request"),
        decide("decide with a dotted tenant", json!({"tenant_id": "a.b"}), 400, "invalid_tenant_id"),
        decide("decide without a policy", json!({"tenant_id": "acme"}), 404, "no_policy"),
        decide("decide outside the policy", json!({"tenant_id": POLICY_TENANT, "provider_id": "p-other"}), 404, "unknown_provider"),
        bad_policy("policy that is neither JSON nor TOML", "providers = ["),
        bad_policy("policy with no providers", json!({"providers": []}).to_string()),
        bad_policy("policy whose weights are all 0", json!({"providers": [{"id": "a", "weight": 0}]}).to_string()),
        bad_policy("policy listing a provider twice", json!({"providers": [provider("a"), provider("a")]}).to_string()),
        bad_policy("policy with 33 providers", json!({"providers": (0..33).map(|i| provider(&format!("p{i}"))).collect::<Vec<_>>()}).to_string()),
        bad_policy("policy with a dotted provider", json!({"providers": [provider("a.b")]}).to_string()),
        bad_policy("policy falling back to the same provider", json!({"providers": [provider("a")], "fallbacks": [{"on": "circuit_open", "from": "a", "to": "a"}]}).to_string()),
        bad_policy("policy with an unknown fallback trigger", json!({"providers": [provider("a")], "fallbacks": [{"on": "full_moon", "to": "b"}]}).to_string()),
        bad_policy("policy with a sticky TTL of 0", json!({"providers": [provider("a")], "sticky": {"ttl_secs": 0}}).to_string()),
        bad_policy("policy with an unknown breaker key", json!({"providers": [provider("a")], "circuit_breaker": {"failure_treshold": 3}}).to_string()),
        bad_policy("policy whose latency threshold is not below the attempt timeout", json!({"providers": [provider("a")], "circuit_breaker": {"latency_threshold_ms": 5000}}).to_string()),
        bad_policy("policy with 0 retry attempts", json!({"providers": [provider("a")], "retry": {"max_attempts": 0}}).to_string()),
        bad_policy("policy with an unknown field", json!({"providers": [provider("a")], "priority": 1}).to_string()),
        bad_policy("JSON policy nested 10 000 deep", format!(r#"{{"providers":{}}}"#, nested_arrays(DEEP))),
        bad_policy("TOML policy nested 10 000 deep", format!("providers = {}", nested_arrays(DEEP))),
        bad_policy("TOML policy with 10 000 nested inline tables", format!("sticky = {}1{}", "{a = ".repeat(DEEP), "}".repeat(DEEP))),
        bad_fault("fault rule nested 10 000 deep", json!({"provider_id": "p-ok", "fault": {"type": "intermittent", "probability": 0.5, "fault": Value::String(nested_arrays(DEEP))}})),
        admin(
            "intermittent faults nested 10 000 deep",
            "PUT",
            "/admin/faults",
            format!(
                r#"{{"provider_id":"p-ok","fault":{}{{"type":"timeout"}}{}}}"#,
                r#"{"type":"intermittent","probability":0.5,"fault":"#.repeat(DEEP),
                "}".repeat(DEEP)
            ),
            400,
            "invalid_fault",
        ),
        bad_policy("policy that is not UTF-8", b"providers = [{id = \"\xff\"}]".to_vec()),
        admin("policy for a dotted tenant", "PUT", "/admin/policies/a.b", POLICY, 400, "invalid_tenant_id"),
        admin("policy of a tenant without one", "GET", "/admin/policies/nobody", "", 404, "policy_not_found"),
        admin("delete the policy of a tenant without one", "DELETE", "/admin/policies/nobody", "", 404, "policy_not_found"),
        request("policy without a token", "PUT", "/admin/policies/acme", Auth::None, POLICY, 401, "unauthorized"),
    ]
}

/// Admin query strings that do not parse (unknown parameter, wrong type), admin path
/// segments that are not UTF-8, admin bodies over the framework's limit: the framework's
/// own rejections still get the JSON error body.
fn query_rejections() -> Vec<Case> {
    vec![
        admin(
            "reset-all with a query",
            "POST",
            "/admin/breakers/reset-all?tenant_id=acme",
            "",
            400,
            "invalid_query",
        ),
        admin(
            "config with a query",
            "GET",
            "/admin/config?x=1",
            "",
            400,
            "invalid_query",
        ),
        admin(
            "one breaker with a query",
            "GET",
            "/admin/breakers/acme/p-ok?state=open",
            "",
            400,
            "invalid_query",
        ),
        admin(
            "fault list with a query",
            "GET",
            "/admin/faults?provider_id=p-ok",
            "",
            400,
            "invalid_query",
        ),
        admin(
            "policy of a tenant that is not UTF-8",
            "GET",
            "/admin/policies/%ff",
            "",
            400,
            "invalid_request",
        ),
        admin(
            "breaker of a provider that is not UTF-8",
            "GET",
            "/admin/breakers/acme/%ff",
            "",
            400,
            "invalid_request",
        ),
        admin(
            "fault rule of 3 MB",
            "PUT",
            "/admin/faults",
            format!("{{\"x\":\"{}\"}}", "a".repeat(3 << 20)),
            413,
            "body_too_large",
        ),
        admin(
            "policy of 3 MB",
            "PUT",
            "/admin/policies/acme",
            format!("{{\"x\":\"{}\"}}", "a".repeat(3 << 20)),
            413,
            "body_too_large",
        ),
        admin(
            "list with an unknown parameter",
            "GET",
            "/admin/breakers?colour=red",
            "",
            400,
            "invalid_query",
        ),
        admin(
            "transitions since a word",
            "GET",
            "/admin/transitions?since_us=yesterday",
            "",
            400,
            "invalid_query",
        ),
        admin(
            "attempts since a negative time",
            "GET",
            "/admin/faults/attempts?since_us=-1",
            "",
            400,
            "invalid_query",
        ),
        admin(
            "broker messages with an unknown parameter",
            "GET",
            "/admin/broker/messages?stream=x",
            "",
            400,
            "invalid_query",
        ),
    ]
}

async fn send(client: &RouterClient, case: &Case) -> PublishResponse {
    let token_header = format!("Bearer {}", test_token());
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(ct) = &case.content_type {
        headers.push(("content-type", ct));
    }
    match &case.auth {
        Auth::None => {}
        Auth::Token => headers.push(("authorization", &token_header)),
        Auth::Header(h) => headers.push(("authorization", h)),
    }
    client
        .request_raw(case.method, &case.path, &headers, case.body.clone())
        .await
        .unwrap_or_else(|e| panic!("{}: no answer: {e}", case.name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_stable_4xx_codes_and_never_hurt_the_router() {
    let mut config = ServerConfig::default();
    config.limits.max_body_bytes = MAX_BODY;
    config.limits.max_payload_bytes = MAX_PAYLOAD;
    config.limits.max_message_id_len = MAX_MESSAGE_ID;
    let router = TestRouter::start(config.clone()).await;
    let no_faults = TestRouter::start_with(config, false).await;

    let policy: Value = serde_json::from_str(POLICY).unwrap();
    let path = format!("/admin/policies/{POLICY_TENANT}");
    router
        .client
        .admin_by_name("PUT", &path, Some(policy))
        .await
        .unwrap();
    let cases = cases();
    assert!(cases.len() >= 30, "{} rows", cases.len());
    let mut failures = Vec::new();
    let mut server_errors = Vec::new();
    let mut accepted = 0;
    for case in &cases {
        let client = match case.target {
            Target::Main => &router.client,
            Target::NoFaults => &no_faults.client,
        };
        let answer = send(client, case).await;
        if answer.status >= 500 {
            server_errors.push(format!(
                "{}: {} {:?}",
                case.name, answer.status, answer.body
            ));
        }
        if case.target == Target::Main && answer.status == 200 && answer.body["duplicate"] != true {
            accepted += 1;
        }
        let problem = if (answer.status, answer.code()) != (case.status, case.code) {
            Some(format!(
                "{}: {} {} → expected {} {:?}, got {} {:?} (body {})",
                case.name,
                case.method,
                truncated(&case.path),
                case.status,
                case.code,
                answer.status,
                answer.code(),
                truncated(&answer.body.to_string()),
            ))
        } else if answer.status >= 400
            && !(answer.body["status"] == "error" && answer.body["message"].is_string())
        {
            Some(format!("{}: error body shape {}", case.name, answer.body))
        } else {
            None
        };
        failures.extend(problem);
    }

    // The router is still healthy and serves a valid publish exactly once.
    for r in [&router, &no_faults] {
        let health = r
            .client
            .request_raw("GET", "/healthz", &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(
            (health.status, health.code()),
            (200, "ok"),
            "{:?}",
            health.body
        );
    }
    let first = router
        .client
        .publish("acme", "p-final", "after-hostile-1", json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(
        (first.status, first.code()),
        (200, "published"),
        "{:?}",
        first.body
    );
    let again = router
        .client
        .publish("acme", "p-final", "after-hostile-1", json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["duplicate"], true, "{:?}", again.body);
    let stored = router
        .client
        .stored_message_ids("beamline.provider.p-final")
        .await
        .unwrap();
    assert_eq!(stored, ["after-hostile-1"]);
    // Every accepted request is stored once and nothing a refused one sent is stored.
    let all = router
        .client
        .admin_by_name("GET", "/admin/broker/messages", None)
        .await
        .unwrap();
    if all["count"] != accepted + 1 {
        failures.push(format!(
            "the broker stored {} messages, expected the {accepted} accepted rows and the final one: {}",
            all["count"],
            truncated(&all.to_string())
        ));
    }

    assert!(
        server_errors.is_empty(),
        "5xx answers:\n{}",
        server_errors.join("\n")
    );
    assert!(
        failures.is_empty(),
        "{} of {} rows got another answer:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    router.stop().await;
    no_faults.stop().await;
}

fn truncated(s: &str) -> String {
    if s.len() <= 160 {
        s.to_owned()
    } else {
        let cut = (0..=160)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}… ({} bytes)", &s[..cut], s.len())
    }
}
