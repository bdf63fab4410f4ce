//! `beamline-router ctl`: the operator CLI over the admin API.
//!
//! Every subcommand is one admin call through [`RouterClient`]; the answer is printed as an
//! aligned table (or key/value list) for people, or as the router's raw JSON with `--json`
//! for scripts. Global flags: `--url` (`BEAMLINE_URL`, default `http://127.0.0.1:8080`),
//! `--token` (`BEAMLINE_ADMIN_TOKEN`; its value is never printed, not even by `--help`), `--json`.
//!
//! Errors are one line on stderr, starting with `error:`, and each kind has its own exit
//! code so scripts can tell them apart:
//!
//! | exit | when |
//! |---|---|
//! | 0 | done |
//! | 1 | the router refused the request (400 `invalid_*`, 403 `faults_disabled`, 409, 5xx) or answered something that is not the documented JSON |
//! | 2 | usage error (bad flags or arguments; clap's own code) |
//! | 3 | the router cannot be reached at `--url` |
//! | 4 | 401: no admin token was given (or the router has none configured) |
//! | 5 | 403 `forbidden`: the admin token was refused |
//! | 6 | 404: no such breaker (`breaker_not_found`), action or route (e.g. `GET /admin/outbox` on a router without an outbox) |
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fmt;
use std::process::ExitCode;
use std::str::FromStr;

use beamline_core::ErrorKind;
use beamline_scenario::client::{ClientError, RouterClient};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};

/// Exit code: the router refused the request or answered something unexpected.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: bad flags or arguments (clap's own code for usage errors).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the router cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code: 401, no admin token.
pub const EXIT_NO_TOKEN: u8 = 4;
/// Exit code: 403 `forbidden`, the token was refused.
pub const EXIT_FORBIDDEN: u8 = 5;
/// Exit code: 404, no such breaker, action or route.
pub const EXIT_NOT_FOUND: u8 = 6;

/// The admin token: its `Debug` form never shows the value.
#[derive(Clone)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// `beamline-router ctl` arguments.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// Base URL of the router.
    #[arg(
        long,
        env = "BEAMLINE_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// Admin bearer token (prefer the environment: a flag shows in `ps`)
    #[arg(
        long,
        env = "BEAMLINE_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<Secret>,
    /// Print the router's raw JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand, Debug)]
enum CtlCommand {
    /// One breaker in detail: state, window, probes, last opening, config.
    Status(KeyArgs),
    /// List breakers, optionally filtered.
    List(ListArgs),
    /// Hold the breaker open (every call rejected) until released.
    ForceOpen(KeyArgs),
    /// Hold the breaker closed (every call admitted) until released.
    ForceClosed(KeyArgs),
    /// End an override: held open goes half-open (probes decide), held closed resumes.
    Release(KeyArgs),
    /// Make the key's breaker a fresh closed one (window cleared, statistics kept).
    Reset(KeyArgs),
    /// Fresh closed breakers everywhere.
    ResetAll,
    /// Fault rules (list by default; `set`, `clear`). Needs a router with faults enabled.
    Faults {
        #[command(subcommand)]
        command: Option<FaultsCommand>,
    },
    /// The outbox summary (`GET /admin/outbox`).
    Outbox,
}

#[derive(Args, Debug)]
struct KeyArgs {
    /// Tenant id.
    tenant: String,
    /// Provider id.
    provider: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
#[value(rename_all = "snake_case")]
enum StateFilter {
    Open,
    Closed,
    HalfOpen,
}

impl StateFilter {
    fn as_str(self) -> &'static str {
        match self {
            StateFilter::Open => "open",
            StateFilter::Closed => "closed",
            StateFilter::HalfOpen => "half_open",
        }
    }
}

#[derive(Args, Debug)]
struct ListArgs {
    /// Only breakers in this state.
    #[arg(long, value_enum)]
    state: Option<StateFilter>,
    /// Only this tenant's breakers.
    #[arg(long)]
    tenant: Option<String>,
    /// Only this provider's breakers.
    #[arg(long)]
    provider: Option<String>,
}

#[derive(Subcommand, Debug)]
enum FaultsCommand {
    /// List the fault rules.
    List,
    /// Set the fault rule of a provider (optionally of one tenant only).
    Set(FaultSetArgs),
    /// Clear the rules of a provider (optionally of one tenant only), or every rule.
    Clear(FaultClearArgs),
}

#[derive(Args, Debug)]
#[command(group(
    ArgGroup::new("fault")
        .required(true)
        .args(["error", "timeout", "close_connection", "delay_ms"])
))]
struct FaultSetArgs {
    /// The provider whose publishes are faulted.
    provider: String,
    /// Only this tenant's publishes.
    #[arg(long)]
    tenant: Option<String>,
    /// Fail every attempt at once with this broker error kind.
    #[arg(long, value_name = "KIND", value_parser = parse_error_kind)]
    error: Option<String>,
    /// Hang every attempt until it times out.
    #[arg(long)]
    timeout: bool,
    /// Drop the connection (the attempt fails with connection_closed).
    #[arg(long)]
    close_connection: bool,
    /// Delay every attempt by N milliseconds, then publish.
    #[arg(long, value_name = "N")]
    delay_ms: Option<u64>,
    /// Apply the fault only with probability P (0 to 1); otherwise publish normally.
    #[arg(long, value_name = "P")]
    intermittent: Option<f64>,
}

#[derive(Args, Debug)]
struct FaultClearArgs {
    /// The provider whose rules are cleared (every rule when omitted).
    provider: Option<String>,
    /// Only the rule of this tenant.
    #[arg(long, requires = "provider")]
    tenant: Option<String>,
}

fn parse_error_kind(s: &str) -> Result<String, String> {
    if ErrorKind::ALL.iter().any(|k| k.as_str() == s) {
        Ok(s.to_owned())
    } else {
        let kinds: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        Err(format!(
            "unknown error kind; use one of {}",
            kinds.join(", ")
        ))
    }
}

/// A failed command: its exit code and one line for stderr.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// Runs `ctl` and returns its exit code; errors are printed here, one line each.
pub async fn run(args: CtlArgs) -> anyhow::Result<ExitCode> {
    Ok(match execute(&args).await {
        // A closed pipe (`ctl list | head -1`) is not an error.
        Ok(text) => match write_stdout(&text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot write the output: {e}");
                ExitCode::from(EXIT_REFUSED)
            }
        },
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    })
}

fn write_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

async fn execute(args: &CtlArgs) -> Result<String, Failure> {
    if !(args.url.starts_with("http://") || args.url.starts_with("https://")) {
        return Err(Failure::new(
            EXIT_USAGE,
            format!(
                "--url must start with http:// or https:// (got {:?})",
                args.url
            ),
        ));
    }
    let token = args
        .token
        .as_ref()
        .map(|t| t.0.clone())
        .filter(|t| !t.is_empty());
    let has_token = token.is_some();
    let client = RouterClient::new(&args.url, token)
        .map_err(|e| Failure::new(EXIT_REFUSED, format!("cannot build the HTTP client: {e}")))?;
    let call = Call {
        client: &client,
        has_token,
    };
    let json = args.json;
    match &args.command {
        CtlCommand::Status(key) => {
            let path = format!(
                "/admin/breakers/{}/{}",
                encode(&key.tenant),
                encode(&key.provider)
            );
            let v = call.send("GET", &path, None).await?;
            Ok(render(json, &v, render_status))
        }
        CtlCommand::List(list) => {
            let mut query = Vec::new();
            if let Some(state) = list.state {
                query.push(("state", state.as_str().to_owned()));
            }
            if let Some(t) = &list.tenant {
                query.push(("tenant_id", t.clone()));
            }
            if let Some(p) = &list.provider {
                query.push(("provider_id", p.clone()));
            }
            let path = with_query("/admin/breakers", &query);
            let v = call.send("GET", &path, None).await?;
            Ok(render(json, &v, render_list))
        }
        CtlCommand::ForceOpen(key) => action(&call, json, key, "force-open").await,
        CtlCommand::ForceClosed(key) => action(&call, json, key, "force-closed").await,
        CtlCommand::Release(key) => action(&call, json, key, "release").await,
        CtlCommand::Reset(key) => action(&call, json, key, "reset").await,
        CtlCommand::ResetAll => {
            let v = call.send("POST", "/admin/breakers/reset-all", None).await?;
            Ok(render(json, &v, |v| {
                format!("reset {} breaker(s)\n", cell(&v["reset"]))
            }))
        }
        CtlCommand::Faults { command } => match command {
            None | Some(FaultsCommand::List) => {
                let v = call.send("GET", "/admin/faults", None).await?;
                Ok(render(json, &v, render_faults))
            }
            Some(FaultsCommand::Set(set)) => {
                let rule = fault_rule(set)?;
                let v = call.send("PUT", "/admin/faults", Some(rule)).await?;
                Ok(render(json, &v, render_faults))
            }
            Some(FaultsCommand::Clear(clear)) => {
                let mut query = Vec::new();
                if let Some(p) = &clear.provider {
                    query.push(("provider_id", p.clone()));
                }
                if let Some(t) = &clear.tenant {
                    query.push(("tenant_id", t.clone()));
                }
                let v = call
                    .send("DELETE", &with_query("/admin/faults", &query), None)
                    .await?;
                Ok(render(json, &v, |v| {
                    format!(
                        "cleared {} rule(s)\n{}",
                        cell(&v["cleared"]),
                        render_faults(v)
                    )
                }))
            }
        },
        CtlCommand::Outbox => match call.send("GET", "/admin/outbox", None).await {
            Ok(v) => Ok(render(json, &v, render_any)),
            Err(f) if f.code == EXIT_NOT_FOUND => Err(Failure::new(
                EXIT_NOT_FOUND,
                "this router has no outbox endpoint (GET /admin/outbox answered 404): it was built before the outbox landed",
            )),
            Err(f) => Err(f),
        },
    }
}

async fn action(call: &Call<'_>, json: bool, key: &KeyArgs, name: &str) -> Result<String, Failure> {
    let path = format!(
        "/admin/breakers/{}/{}/{name}",
        encode(&key.tenant),
        encode(&key.provider)
    );
    let v = call.send("POST", &path, None).await?;
    Ok(render(json, &v, |v| {
        format!(
            "{}/{}: {name} done; state {}\n",
            cell(&v["tenant_id"]),
            cell(&v["provider_id"]),
            state_text(v)
        )
    }))
}

fn fault_rule(set: &FaultSetArgs) -> Result<Value, Failure> {
    let base = if let Some(kind) = &set.error {
        json!({"type": "error", "kind": kind})
    } else if set.timeout {
        json!({"type": "timeout"})
    } else if set.close_connection {
        json!({"type": "close_connection"})
    } else if let Some(ms) = set.delay_ms {
        json!({"type": "delay", "ms": ms})
    } else {
        return Err(Failure::new(
            EXIT_USAGE,
            "give one of --error KIND, --timeout, --close-connection, --delay-ms N",
        ));
    };
    let fault = match set.intermittent {
        Some(p) if !(p.is_finite() && (0.0..=1.0).contains(&p)) => {
            return Err(Failure::new(
                EXIT_USAGE,
                format!("--intermittent must be within 0 and 1 (got {p})"),
            ));
        }
        Some(p) => json!({"type": "intermittent", "probability": p, "fault": base}),
        None => base,
    };
    Ok(json!({"provider_id": set.provider, "tenant_id": set.tenant, "fault": fault}))
}

/// One admin call with the error mapping of the module doc.
struct Call<'a> {
    client: &'a RouterClient,
    has_token: bool,
}

impl Call<'_> {
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Failure> {
        self.client
            .admin_by_name(method, path, body)
            .await
            .map_err(|e| self.failure(e))
    }

    fn failure(&self, error: ClientError) -> Failure {
        match error {
            ClientError::Unreachable { url, detail } => Failure::new(
                EXIT_UNREACHABLE,
                format!("cannot reach the router at {url}: {detail} — is it running? check --url"),
            ),
            ClientError::Api {
                status: 401,
                message,
                ..
            } => {
                if self.has_token {
                    Failure::new(
                        EXIT_NO_TOKEN,
                        format!("the router does not accept admin calls: {message}"),
                    )
                } else {
                    Failure::new(
                        EXIT_NO_TOKEN,
                        "no admin token: pass --token or set BEAMLINE_ADMIN_TOKEN",
                    )
                }
            }
            ClientError::Api {
                status: 403,
                code,
                message,
                ..
            } if code == "faults_disabled" => Failure::new(
                EXIT_REFUSED,
                format!("fault injection is disabled on this router (faults_disabled): {message}"),
            ),
            ClientError::Api { status: 403, .. } => Failure::new(
                EXIT_FORBIDDEN,
                "the admin token was refused (403 forbidden): check --token or BEAMLINE_ADMIN_TOKEN",
            ),
            ClientError::Api {
                status: 404,
                code,
                message,
                ..
            } => Failure::new(EXIT_NOT_FOUND, format!("{code}: {message}")),
            ClientError::Api {
                method,
                path,
                status,
                code,
                message,
            } => Failure::new(
                EXIT_REFUSED,
                format!("{method} {path}: HTTP {status} {code}: {message}"),
            ),
            ClientError::Decode { path, detail } => Failure::new(
                EXIT_REFUSED,
                format!("unexpected answer to {path}: {detail}"),
            ),
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn with_query(path: &str, query: &[(&str, String)]) -> String {
    if query.is_empty() {
        return path.to_owned();
    }
    let pairs: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

fn render(json: bool, value: &Value, human: impl FnOnce(&Value) -> String) -> String {
    if json {
        let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
        format!("{text}\n")
    } else {
        human(value)
    }
}

/// A JSON value as a table cell: strings bare, null as `-`, the rest as compact JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn percent(v: &Value) -> String {
    v.as_f64()
        .map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| cell(v))
}

fn millis(v: &Value) -> String {
    match v.as_u64() {
        Some(ms) if ms >= 1000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) => format!("{ms}ms"),
        None => cell(v),
    }
}

fn state_text(b: &Value) -> String {
    match b["forced"].as_str() {
        Some(forced) => format!("{} (forced {forced})", cell(&b["state"])),
        None => cell(&b["state"]),
    }
}

fn last_opening_text(b: &Value) -> String {
    let o = &b["last_opening"];
    if o.is_null() {
        return "-".to_owned();
    }
    format!("{} ({} ago)", cell(&o["reason"]), millis(&o["ago_ms"]))
}

/// An aligned table: columns separated by two spaces, the last one not padded.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                let pad = widths[i].saturating_sub(c.chars().count());
                out.push_str(c);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn render_list(v: &Value) -> String {
    let items = v["breakers"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return "no breakers\n".to_owned();
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|b| {
            vec![
                cell(&b["tenant_id"]),
                cell(&b["provider_id"]),
                state_text(b),
                cell(&b["mode"]),
                format!(
                    "{}/{}",
                    cell(&b["window"]["failures"]),
                    cell(&b["window"]["calls"])
                ),
                percent(&b["error_rate"]),
                percent(&b["slow_call_rate"]),
                cell(&b["consecutive_failures"]),
                millis(&b["open_remaining_ms"]),
                last_opening_text(b),
            ]
        })
        .collect();
    table(
        &[
            "TENANT",
            "PROVIDER",
            "STATE",
            "MODE",
            "FAILED/CALLS",
            "ERROR_RATE",
            "SLOW_RATE",
            "CONSEC_FAIL",
            "OPEN_LEFT",
            "LAST_OPENING",
        ],
        &rows,
    )
}

fn render_status(b: &Value) -> String {
    let o = &b["last_opening"];
    let mut rows = vec![
        (
            "breaker".to_owned(),
            format!("{}/{}", cell(&b["tenant_id"]), cell(&b["provider_id"])),
        ),
        ("state".to_owned(), state_text(b)),
        ("mode".to_owned(), cell(&b["mode"])),
        ("generation".to_owned(), cell(&b["generation"])),
        ("open remaining".to_owned(), millis(&b["open_remaining_ms"])),
        (
            "window".to_owned(),
            format!(
                "{} calls, {} failures, {} slow",
                cell(&b["window"]["calls"]),
                cell(&b["window"]["failures"]),
                cell(&b["window"]["slow"])
            ),
        ),
        ("error rate".to_owned(), percent(&b["error_rate"])),
        ("slow call rate".to_owned(), percent(&b["slow_call_rate"])),
        (
            "consecutive failures".to_owned(),
            cell(&b["consecutive_failures"]),
        ),
        (
            "probes".to_owned(),
            format!(
                "{} admitted, {} in flight, {} succeeded",
                cell(&b["probes_admitted"]),
                cell(&b["probes_in_flight"]),
                cell(&b["probe_successes"])
            ),
        ),
        (
            "openings since close".to_owned(),
            cell(&b["openings_since_close"]),
        ),
        ("last opening".to_owned(), last_opening_text(b)),
    ];
    if !o.is_null() {
        let rules: Vec<String> = o["rules"]
            .as_array()
            .map(|a| a.iter().map(cell).collect())
            .unwrap_or_default();
        rows.push(("last opening rules".to_owned(), rules.join(", ")));
    }
    flatten("stats", &b["stats"], &mut rows);
    flatten("config", &b["config"], &mut rows);
    key_values(&rows)
}

/// Pushes `prefix.key = value` rows for every scalar in `value` (nested objects dotted).
fn flatten(prefix: &str, value: &Value, rows: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&format!("{prefix}.{k}"), v, rows);
            }
        }
        Value::Null => {}
        other => rows.push((prefix.to_owned(), cell(other))),
    }
}

fn key_values(rows: &[(String, String)]) -> String {
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:width$}  {v}\n"))
        .collect()
}

fn fault_text(f: &Value) -> String {
    match f["type"].as_str() {
        Some("error") => format!("error {}", cell(&f["kind"])),
        Some("delay") => format!("delay {}ms", cell(&f["ms"])),
        Some("intermittent") => format!(
            "{} with probability {}",
            fault_text(&f["fault"]),
            cell(&f["probability"])
        ),
        Some(other) => other.to_owned(),
        None => cell(f),
    }
}

fn render_faults(v: &Value) -> String {
    let rules = v["faults"].as_array().cloned().unwrap_or_default();
    if rules.is_empty() {
        return "no fault rules\n".to_owned();
    }
    let rows: Vec<Vec<String>> = rules
        .iter()
        .map(|r| {
            vec![
                cell(&r["provider_id"]),
                r["tenant_id"]
                    .as_str()
                    .map_or_else(|| "*".to_owned(), str::to_owned),
                fault_text(&r["fault"]),
            ]
        })
        .collect();
    table(&["PROVIDER", "TENANT", "FAULT"], &rows)
}

/// Any JSON answer for people: scalars as `key  value` lines, arrays of objects as tables
/// (one column per key seen), other arrays and nested objects flattened with dotted keys.
fn render_any(v: &Value) -> String {
    let Value::Object(map) = v else {
        return format!("{}\n", cell(v));
    };
    let mut scalars = Vec::new();
    let mut tables = String::new();
    for (k, item) in map {
        match item {
            Value::Array(items) if items.iter().all(Value::is_object) => {
                tables.push_str(&format!("\n{k}:\n"));
                if items.is_empty() {
                    tables.push_str("(none)\n");
                } else {
                    tables.push_str(&object_table(items));
                }
            }
            Value::Array(items) => scalars.push((
                k.clone(),
                items.iter().map(cell).collect::<Vec<_>>().join(", "),
            )),
            other => flatten(k, other, &mut scalars),
        }
    }
    key_values(&scalars) + &tables
}

fn object_table(items: &[Value]) -> String {
    let mut columns: Vec<String> = Vec::new();
    for item in items {
        if let Value::Object(m) = item {
            for k in m.keys() {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
    }
    // Keys first, the rest in the router's (alphabetical) order.
    let mut placed = 0;
    for key in ["tenant_id", "provider_id"] {
        if let Some(at) = columns.iter().position(|c| c == key) {
            let c = columns.remove(at);
            columns.insert(placed, c);
            placed += 1;
        }
    }
    let empty = Map::new();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            let m = item.as_object().unwrap_or(&empty);
            columns
                .iter()
                .map(|c| m.get(c).map_or_else(|| "-".to_owned(), cell))
                .collect()
        })
        .collect();
    let headers: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    table(&headers, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_and_queries_are_percent_encoded() {
        assert_eq!(encode("acme-1_x"), "acme-1_x");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
        assert_eq!(
            with_query("/admin/faults", &[("provider_id", "p 1".into())]),
            "/admin/faults?provider_id=p%201"
        );
        assert_eq!(with_query("/x", &[]), "/x");
    }

    #[test]
    fn tables_align_columns_and_do_not_pad_the_last_one() {
        let t = table(
            &["A", "BB", "C"],
            &[vec!["xxx".into(), "y".into(), "z".into()]],
        );
        assert_eq!(t, "A    BB  C\nxxx  y   z\n");
    }

    #[test]
    fn any_json_renders_scalars_and_tables() {
        let v = json!({"depth": 2, "items": [{"id": "a", "n": 1}, {"id": "b", "extra": true}]});
        let text = render_any(&v);
        assert!(text.starts_with("depth  2\n"), "{text}");
        assert!(
            text.contains("ID  N  EXTRA\na   1  -\nb   -  true\n"),
            "{text}"
        );
    }

    #[test]
    fn fault_rules_are_described_in_words() {
        let f = json!({"type": "intermittent", "probability": 0.5, "fault": {"type": "error", "kind": "timeout"}});
        assert_eq!(fault_text(&f), "error timeout with probability 0.5");
        assert_eq!(
            fault_text(&json!({"type": "delay", "ms": 30})),
            "delay 30ms"
        );
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let s: Secret = "s3cret".parse().unwrap_or_else(|e| match e {});
        assert_eq!(format!("{s:?}"), "<hidden>");
    }
}
