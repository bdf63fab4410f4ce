//! Parsing a trace (DESIGN.md §6) into validated events.
//!
//! Every line is checked here, at the edge: its JSON, its `op`, the type and range of each
//! field, and that it carries no field the op does not know (so a typo such as
//! `"latency":5` is an error, not a silent default). Errors name the 1-based line number.

use serde_json::{Map, Value};

use super::config::ReplayConfig;
use super::{Limits, TraceError};
use crate::keys::{BreakerKey, ProviderId, TenantId};
use crate::outcome::{ErrorKind, FailureKind, Outcome};

/// Latest time (and longest latency) a trace may name, in ms: about 31 years.
pub(crate) const MAX_TRACE_MS: f64 = 1e12;
/// Longest call id.
pub(crate) const MAX_ID_LEN: usize = 128;
/// The tenant and provider of events that name none.
pub(crate) const DEFAULT_ID: &str = "default";

/// What a `call` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallOutcome {
    Report(Outcome),
    Never,
}

/// What one scripted attempt of an `execute` comes to: `None` is a success.
pub(crate) type AttemptScript = Option<ErrorKind>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AdminAction {
    ForceOpen,
    ForceClosed,
    Release,
    Reset,
}

impl AdminAction {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            AdminAction::ForceOpen => "force_open",
            AdminAction::ForceClosed => "force_closed",
            AdminAction::Release => "release",
            AdminAction::Reset => "reset",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Op {
    Call {
        id: String,
        outcome: CallOutcome,
        latency_nanos: u64,
    },
    Acquire {
        id: String,
    },
    Complete {
        id: String,
        outcome: Outcome,
    },
    State,
    Admin(AdminAction),
    Execute {
        id: String,
        attempts: Vec<AttemptScript>,
        latencies_nanos: Vec<u64>,
    },
    Delays {
        retries: Vec<u32>,
        seed: Option<u64>,
    },
}

/// One trace line, validated.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Event {
    pub(crate) line: usize,
    pub(crate) t_nanos: u64,
    pub(crate) key: BreakerKey,
    /// Whether the line named a tenant or provider (then output lines name the key).
    pub(crate) explicit_key: bool,
    pub(crate) op: Op,
}

/// A parsed trace: its config line (if any) and its events in file order.
#[derive(Debug)]
pub(crate) struct Trace {
    pub(crate) config: Option<(usize, ReplayConfig)>,
    pub(crate) events: Vec<Event>,
}

fn err(line: usize, message: impl Into<String>) -> TraceError {
    TraceError::Line {
        line,
        message: message.into(),
    }
}

/// Parses the whole trace text.
pub(crate) fn parse(text: &str, limits: &Limits) -> Result<Trace, TraceError> {
    if text.len() > limits.max_bytes {
        return Err(TraceError::TooLarge {
            bytes: text.len(),
            max: limits.max_bytes,
        });
    }
    let default_key = BreakerKey::new(
        TenantId::try_new(DEFAULT_ID).map_err(|e| err(0, e.to_string()))?,
        ProviderId::try_new(DEFAULT_ID).map_err(|e| err(0, e.to_string()))?,
    );
    let mut trace = Trace {
        config: None,
        events: Vec::new(),
    };
    let mut seen_content = false;
    let mut last_t = 0;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if line > limits.max_lines {
            return Err(TraceError::TooManyLines {
                max: limits.max_lines,
            });
        }
        if raw.len() > limits.max_line_bytes {
            return Err(err(
                line,
                format!(
                    "is {} bytes long; the limit is {}",
                    raw.len(),
                    limits.max_line_bytes
                ),
            ));
        }
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let value: Value = serde_json::from_str(trimmed)
            .map_err(|e| err(line, format!("is not valid JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(err(line, "must be a JSON object"));
        };
        if obj.contains_key("config") {
            if seen_content {
                return Err(err(
                    line,
                    "a config line must be the first line of the trace",
                ));
            }
            seen_content = true;
            let config = ReplayConfig::from_json_value(&Value::Object(obj))
                .map_err(|message| err(line, message))?;
            trace.config = Some((line, config));
            continue;
        }
        seen_content = true;
        let event = parse_event(line, obj, &default_key, last_t)?;
        last_t = event.t_nanos;
        trace.events.push(event);
    }
    Ok(trace)
}

/// Reads the fields of one object, refusing any it was not asked about.
struct Fields {
    line: usize,
    obj: Map<String, Value>,
}

impl Fields {
    fn take(&mut self, name: &str) -> Option<Value> {
        self.obj.remove(name)
    }

    fn string(&mut self, name: &str) -> Result<Option<String>, TraceError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(err(
                self.line,
                format!("`{name}` must be a string, not {other}"),
            )),
        }
    }

    fn required_string(&mut self, name: &str, op: &str) -> Result<String, TraceError> {
        self.string(name)?
            .ok_or_else(|| err(self.line, format!("`{op}` needs `{name}`")))
    }

    fn id(&mut self, op: &str, required: bool) -> Result<String, TraceError> {
        let id = if required {
            self.required_string("id", op)?
        } else {
            self.string("id")?
                .unwrap_or_else(|| format!("line{}", self.line))
        };
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(err(
                self.line,
                format!("`id` must be 1 to {MAX_ID_LEN} bytes long"),
            ));
        }
        Ok(id)
    }

    fn millis(&mut self, name: &str) -> Result<Option<u64>, TraceError> {
        match self.take(name) {
            None => Ok(None),
            Some(v) => millis_value(self.line, name, &v).map(Some),
        }
    }

    fn finish(self, op: &str) -> Result<(), TraceError> {
        match self.obj.keys().next() {
            None => Ok(()),
            Some(extra) => Err(err(
                self.line,
                format!("unknown field `{extra}` for op `{op}`"),
            )),
        }
    }
}

/// A non-negative time or latency in ms (fractions allowed), as nanoseconds.
fn millis_value(line: usize, name: &str, v: &Value) -> Result<u64, TraceError> {
    let ms = v
        .as_f64()
        .filter(|ms| ms.is_finite() && (0.0..=MAX_TRACE_MS).contains(ms))
        .ok_or_else(|| {
            err(
                line,
                format!("`{name}` must be a number of ms within [0, {MAX_TRACE_MS:e}], not {v}"),
            )
        })?;
    Ok((ms * 1e6).round() as u64)
}

fn parse_event(
    line: usize,
    obj: Map<String, Value>,
    default_key: &BreakerKey,
    previous_t: u64,
) -> Result<Event, TraceError> {
    let mut f = Fields { line, obj };
    f.take("note");
    f.take("comment");
    let op = f
        .string("op")?
        .ok_or_else(|| err(line, "needs `op` (or `config` on the first line)"))?;
    let t = match f.millis("t")? {
        Some(t) => t,
        // `delays` only prints, so it may omit `t`: it then keeps its place in the file.
        None if op == "delays" => previous_t,
        None => return Err(err(line, format!("`{op}` needs `t`"))),
    };
    let tenant = f.string("tenant")?;
    let provider = f.string("provider")?;
    let explicit_key = tenant.is_some() || provider.is_some();
    let key = BreakerKey::new(
        match tenant {
            Some(s) => TenantId::try_new(&s).map_err(|e| err(line, format!("`tenant` {e}")))?,
            None => default_key.tenant().clone(),
        },
        match provider {
            Some(s) => ProviderId::try_new(&s).map_err(|e| err(line, format!("`provider` {e}")))?,
            None => default_key.provider().clone(),
        },
    );
    let op = match op.as_str() {
        "call" => {
            let id = f.id("call", false)?;
            let outcome = f.required_string("outcome", "call")?;
            let outcome = call_outcome(&outcome).ok_or_else(|| {
                err(
                    line,
                    format!(
                        "unknown call outcome `{outcome}`: expected success, failure, timeout, \
                         ignored, never or an error kind"
                    ),
                )
            })?;
            let latency_nanos = f.millis("latency_ms")?.unwrap_or(0);
            Op::Call {
                id,
                outcome,
                latency_nanos,
            }
        }
        "acquire" => Op::Acquire {
            id: f.id("acquire", true)?,
        },
        "complete" => {
            let id = f.id("complete", true)?;
            let outcome = f.required_string("outcome", "complete")?;
            let outcome = match call_outcome(&outcome) {
                Some(CallOutcome::Report(o)) => o,
                _ => {
                    return Err(err(
                        line,
                        format!(
                            "unknown complete outcome `{outcome}`: expected success, failure, \
                             timeout, ignored or an error kind"
                        ),
                    ));
                }
            };
            Op::Complete { id, outcome }
        }
        "state" => Op::State,
        "admin" => {
            let action = f.required_string("action", "admin")?;
            Op::Admin(match action.as_str() {
                "force_open" => AdminAction::ForceOpen,
                "force_closed" => AdminAction::ForceClosed,
                "release" => AdminAction::Release,
                "reset" => AdminAction::Reset,
                other => {
                    return Err(err(
                        line,
                        format!(
                            "unknown admin action `{other}`: expected force_open, force_closed, \
                             release or reset"
                        ),
                    ));
                }
            })
        }
        "execute" => parse_execute(&mut f)?,
        "delays" => {
            let retries = match f.take("retries") {
                Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_LIST => items
                    .iter()
                    .map(|v| {
                        v.as_u64()
                            .and_then(|n| u32::try_from(n).ok())
                            .filter(|n| *n >= 1)
                            .ok_or_else(|| {
                                err(
                                    line,
                                    format!("`retries` holds {v}: expected 1..=4294967295"),
                                )
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                _ => {
                    return Err(err(
                        line,
                        format!(
                            "`delays` needs `retries`: a list of 1 to {MAX_LIST} retry numbers"
                        ),
                    ));
                }
            };
            let seed = match f.take("seed") {
                None => None,
                Some(v) => Some(
                    v.as_u64()
                        .ok_or_else(|| err(line, format!("`seed` must be a u64, not {v}")))?,
                ),
            };
            Op::Delays { retries, seed }
        }
        other => {
            return Err(err(
                line,
                format!(
                    "unknown op `{other}`: expected call, acquire, complete, state, admin, \
                     execute or delays"
                ),
            ));
        }
    };
    let op_name = op_name(&op);
    f.finish(op_name)?;
    Ok(Event {
        line,
        t_nanos: t,
        key,
        explicit_key,
        op,
    })
}

/// Longest list in one line (attempt scripts, retry numbers).
pub(crate) const MAX_LIST: usize = 10_000;

fn parse_execute(f: &mut Fields) -> Result<Op, TraceError> {
    let line = f.line;
    let id = f.id("execute", false)?;
    let attempts = match f.take("attempts") {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_LIST => items
            .iter()
            .map(|v| {
                v.as_str().and_then(attempt_outcome).ok_or_else(|| {
                    err(
                        line,
                        format!(
                            "attempt outcome {v} is unknown: expected success, failure, timeout, \
                             non_retryable or an error kind"
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(err(
                line,
                format!("`execute` needs `attempts`: a list of 1 to {MAX_LIST} outcomes"),
            ));
        }
    };
    let latencies_nanos = match f.take("attempt_latency_ms") {
        None => vec![0],
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_LIST => items
            .iter()
            .map(|v| millis_value(line, "attempt_latency_ms", v))
            .collect::<Result<Vec<_>, _>>()?,
        Some(v @ Value::Number(_)) => vec![millis_value(line, "attempt_latency_ms", &v)?],
        Some(v) => {
            return Err(err(
                line,
                format!("`attempt_latency_ms` must be a number or a list of numbers, not {v}"),
            ));
        }
    };
    Ok(Op::Execute {
        id,
        attempts,
        latencies_nanos,
    })
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Call { .. } => "call",
        Op::Acquire { .. } => "acquire",
        Op::Complete { .. } => "complete",
        Op::State => "state",
        Op::Admin(_) => "admin",
        Op::Execute { .. } => "execute",
        Op::Delays { .. } => "delays",
    }
}

fn error_kind(s: &str) -> Option<ErrorKind> {
    ErrorKind::ALL.into_iter().find(|k| k.as_str() == s)
}

/// `success`, `failure` (a broker error), `timeout`, `ignored`, `never`, or any error kind
/// name (`connection_refused`, `payload_too_large`, ...: what that error tells the breaker).
fn call_outcome(s: &str) -> Option<CallOutcome> {
    Some(CallOutcome::Report(match s {
        "success" => Outcome::Success,
        "failure" => Outcome::Failure(FailureKind::BrokerError),
        "timeout" => Outcome::Failure(FailureKind::Timeout),
        "ignored" => Outcome::Ignored,
        "never" => return Some(CallOutcome::Never),
        other => error_kind(other)?.breaker_outcome(),
    }))
}

/// `success`; `failure` (a retryable broker error); `timeout`; `non_retryable` (a client
/// fault: the payload is too large); or any error kind name.
fn attempt_outcome(s: &str) -> Option<AttemptScript> {
    Some(match s {
        "success" => None,
        "failure" => Some(ErrorKind::BrokerUnavailable),
        "non_retryable" => Some(ErrorKind::PayloadTooLarge),
        other => Some(error_kind(other)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Result<Event, TraceError> {
        let mut trace = parse(line, &Limits::default())?;
        Ok(trace.events.remove(0))
    }

    fn message(line: &str) -> String {
        one(line).unwrap_err().to_string()
    }

    #[test]
    fn parses_every_op() {
        let e =
            one(r#"{"t":5,"op":"call","id":"c1","outcome":"failure","latency_ms":2.5}"#).unwrap();
        assert_eq!(e.t_nanos, 5_000_000);
        assert_eq!(
            e.op,
            Op::Call {
                id: "c1".into(),
                outcome: CallOutcome::Report(Outcome::Failure(FailureKind::BrokerError)),
                latency_nanos: 2_500_000
            }
        );
        assert!(!e.explicit_key);
        let e = one(r#"{"t":0,"op":"state","tenant":"acme","provider":"p1"}"#).unwrap();
        assert_eq!(e.key.to_string(), "acme/p1");
        assert!(e.explicit_key);
        let e = one(r#"{"op":"delays","retries":[1,1025],"seed":7}"#).unwrap();
        assert_eq!(
            e.op,
            Op::Delays {
                retries: vec![1, 1025],
                seed: Some(7)
            }
        );
        let e = one(
            r#"{"t":0,"op":"execute","id":"r","attempts":["permission","success"],"attempt_latency_ms":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(
            e.op,
            Op::Execute {
                id: "r".into(),
                attempts: vec![Some(ErrorKind::Permission), None],
                latencies_nanos: vec![1_000_000, 2_000_000]
            }
        );
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let text = "{\"t\":0,\"op\":\"state\"}\n\n{\"t\":1,\"op\":\"call\",\"outcome\":\"meh\"}";
        let e = parse(text, &Limits::default()).unwrap_err().to_string();
        assert!(e.starts_with("line 3: unknown call outcome `meh`"), "{e}");
        assert!(
            message(r#"{"t":0,"op":"call","outcome":"success","latency":5}"#)
                .contains("unknown field `latency` for op `call`")
        );
        assert!(message(r#"{"t":-1,"op":"state"}"#).contains("`t` must be a number"));
        assert!(message(r#"{"op":"state"}"#).contains("`state` needs `t`"));
        assert!(
            message(r#"{"t":0,"op":"state","tenant":"a.b"}"#).contains("`tenant` has a character")
        );
        assert!(message("[1]").contains("must be a JSON object"));
        assert!(message("{").contains("is not valid JSON"));
        assert!(message(r#"{"t":0,"op":"jump"}"#).contains("unknown op `jump`"));
        let e = parse(
            "{\"t\":0,\"op\":\"state\"}\n{\"config\":{}}",
            &Limits::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("line 2: a config line must be the first"),
            "{e}"
        );
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits {
            max_bytes: 100,
            max_lines: 2,
            max_line_bytes: 30,
            max_scheduled: 10,
        };
        let e = parse(&"x".repeat(101), &limits).unwrap_err();
        assert!(matches!(e, TraceError::TooLarge { .. }));
        let e = parse("\n\n\n", &limits).unwrap_err();
        assert!(matches!(e, TraceError::TooManyLines { max: 2 }));
        let e = parse(&format!("{{\"t\":{}}}", "1".repeat(40)), &limits).unwrap_err();
        assert!(e.to_string().contains("line 1: is 46 bytes long"), "{e}");
    }
}
