//! Replay: run a trace of calls through the breaker and the retry model on virtual time.
//!
//! This is the engine of `beamline-router replay` and of the regression cases: a trace
//! (DESIGN.md §6, JSON Lines) goes in, every decision, outcome and transition comes out,
//! with a summary. The same trace under two configurations ([`compare`]) is how an
//! operator chooses thresholds from a recorded incident.
//!
//! # API
//! - [`replay`]`(trace, override)` → [`ReplayOutput`] (typed [`OutputLine`]s and a
//!   [`ReplaySummary`]; [`ReplayOutput::to_json_lines`] prints them as §6 says);
//! - [`compare`]`(trace, a, b)` → [`Comparison`] (two summaries; [`Comparison::rows`] for
//!   a side-by-side table);
//! - [`ReplayConfig::from_toml_or_json`] reads `--config` / `--compare` files;
//! - every failure is a [`TraceError`] naming the line and the problem. No input panics;
//!   [`Limits`] bound the trace's size and the work it may cause.
//!
//! ```
//! use beamline_core::replay::{self, ReplayConfig};
//!
//! let trace = r#"{"config":{"breaker":{"failure_threshold":2,"open_timeout_jitter":0}}}
//! {"t":0,"op":"call","id":"c1","outcome":"failure","latency_ms":5}
//! {"t":10,"op":"call","id":"c2","outcome":"failure","latency_ms":5}
//! {"t":20,"op":"call","id":"c3","outcome":"success"}
//! {"t":30,"op":"state"}"#;
//! let out = replay::replay(trace, None)?;
//! assert_eq!(out.summary.totals.rejected, 1);
//! assert_eq!(out.summary.totals.openings_by_reason["failure_threshold_exceeded"], 1);
//! let text = out.to_json_lines(); // what the CLI prints
//! assert!(text.contains(r#"{"t":15,"transition":"closed->open","reason":"failure_threshold_exceeded""#));
//!
//! // The same trace under a stricter configuration, layered over the trace's own.
//! let strict = ReplayConfig::from_toml_or_json("[breaker]\nfailure_threshold = 1\n")?;
//! let both = replay::compare(trace, &ReplayConfig::new(), &strict)?;
//! assert_eq!(both.b.totals.first_opening_ms, Some(replay::Millis::from_ms(5)));
//! # Ok::<(), replay::TraceError>(())
//! ```
//!
//! # Trace format
//! One JSON object per line; blank lines and lines starting with `#` are skipped. An
//! optional first line `{"config":{"breaker":{..},"retry":{..},"seed":n}}` sets §3/§4 keys
//! and the jitter seed. Every event has `t` (virtual ms, fractions allowed) and `op`, and may
//! name `tenant` and `provider` (default: `default`/`default`); `note` and `comment` are
//! ignored; any other unknown field is an error.
//! - `call` (`id`, `outcome`, `latency_ms` = 0): acquire at `t`; if admitted, the outcome is
//!   recorded at `t + latency_ms`. Outcomes: `success`, `failure`, `timeout`, `ignored`,
//!   `never` (admitted, never reports: a probe's lease then expires), or any error kind
//!   (`connection_refused`, `payload_too_large`, ...: what that error tells the breaker).
//! - `acquire` (`id`) then `complete` (`id`, `outcome`): the same, split.
//! - `state`: a read (applies lazy transitions, prints state and `open_remaining_ms`).
//! - `admin` (`action`: `force_open`, `force_closed`, `release`, `reset`).
//! - `execute` (`id`, `attempts`, `attempt_latency_ms`: a number or one per attempt): one
//!   request through the retry loop; each attempt asks the breaker first. Attempt outcomes:
//!   `success`, `failure` (broker unavailable: retryable), `timeout`, `non_retryable` (a
//!   client fault: payload too large, which the breaker ignores) or any error kind. An
//!   attempt slower than its timeout (the attempt timeout, shortened by the deadline) is cut
//!   there as a `timeout`. When the script runs out, its last entry repeats (so a config
//!   with more attempts can replay the same trace). Retries draw on the provider's budget.
//! - `delays` (`retries`, optional `seed`, optional `t`): prints the backoff before each
//!   numbered retry under the retry config.
//!
//! # Semantics
//! Events run in time order (a stable sort, so equal times keep file order). At one
//! instant, outcomes that fall due are recorded before the trace's events at that instant,
//! and retry attempts come last. Breakers are [`crate::breaker::Breaker`]s on virtual time,
//! one per key, each seeded from the config's seed and its key, so a replay is exactly
//! reproducible; set `open_timeout_jitter` and `retry.jitter` to 0 for round numbers.
//! Transitions are printed at the instant they are stamped with (the end of an open
//! timeout or a probe lease, even when no event happens then). The replay ends with its
//! last event or outcome; a breaker still open then counts as open up to that end.
//!
//! # Output
//! See [`output`]: decision, outcome, transition, read, admin, execute and delays lines,
//! then `{"summary":{...}}` (calls, allowed, rejected, probes, openings by reason, time
//! open, first failure → first opening, requests by cause; per key when several).

pub mod config;
mod engine;
pub mod output;
mod trace;

pub use config::{DEFAULT_SEED, ReplayConfig};
pub use output::{
    AdminLine, Comparison, Counters, Decision, DecisionLine, DelaysLine, Effect, ExecuteLine,
    KeyFields, Millis, OutcomeLine, OutputLine, ReadLine, ReplaySummary, RetryDelay,
    TransitionLine,
};

use crate::breaker::ConfigError;

/// Bounds on a trace and on the work it may cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest trace, in bytes.
    pub max_bytes: usize,
    /// Most lines.
    pub max_lines: usize,
    /// Longest line, in bytes.
    pub max_line_bytes: usize,
    /// Most outcomes, retry attempts and timer wake-ups the replay may schedule.
    pub max_scheduled: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 256 << 20,
            max_lines: 2_000_000,
            max_line_bytes: 64 << 10,
            max_scheduled: 10_000_000,
        }
    }
}

/// Why a trace or a config could not be replayed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// The trace is larger than [`Limits::max_bytes`].
    #[error("trace is {bytes} bytes; the limit is {max}")]
    TooLarge {
        /// The trace's size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The trace has more than [`Limits::max_lines`] lines.
    #[error("trace has more than {max} lines")]
    TooManyLines {
        /// The limit.
        max: usize,
    },
    /// A line is malformed or inconsistent with the ones before it.
    #[error("line {line}: {message}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The configuration breaks a rule (the trace's config line, the override, or both).
    #[error("{}{error}", line.map(|l| format!("line {l}: ")).unwrap_or_else(|| "config: ".into()))]
    Config {
        /// The config line, when the trace's own config is at fault.
        line: Option<usize>,
        /// The broken rule.
        error: ConfigError,
    },
    /// A config file could not be read.
    #[error("config file: {message}")]
    ConfigFile {
        /// What is wrong.
        message: String,
    },
    /// The replay would schedule more than [`Limits::max_scheduled`] events.
    #[error("the replay needs more than {max} scheduled outcomes, attempts and timers")]
    TooManyEvents {
        /// The limit.
        max: usize,
    },
}

/// A replay's result: every output line and the summary.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayOutput {
    /// The configuration the replay ran under (defaults < trace < override).
    pub config: ReplayConfig,
    /// Output lines in order.
    pub lines: Vec<OutputLine>,
    /// The summary.
    pub summary: ReplaySummary,
}

impl ReplayOutput {
    /// The output as JSON Lines, ending with `{"summary":{...}}` and a newline.
    pub fn to_json_lines(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            push_json(&mut out, line);
        }
        #[derive(serde::Serialize)]
        struct SummaryLine<'a> {
            summary: &'a ReplaySummary,
        }
        push_json(
            &mut out,
            &SummaryLine {
                summary: &self.summary,
            },
        );
        out
    }

    /// The decision lines.
    pub fn decisions(&self) -> impl Iterator<Item = &DecisionLine> {
        self.lines.iter().filter_map(|l| match l {
            OutputLine::Decision(d) => Some(d),
            _ => None,
        })
    }

    /// The transition lines.
    pub fn transitions(&self) -> impl Iterator<Item = &TransitionLine> {
        self.lines.iter().filter_map(|l| match l {
            OutputLine::Transition(t) => Some(t),
            _ => None,
        })
    }

    /// The execute lines.
    pub fn executions(&self) -> impl Iterator<Item = &ExecuteLine> {
        self.lines.iter().filter_map(|l| match l {
            OutputLine::Execute(e) => Some(e),
            _ => None,
        })
    }
}

fn push_json(out: &mut String, value: &impl serde::Serialize) {
    match serde_json::to_string(value) {
        Ok(s) => out.push_str(&s),
        // Output types serialize infallibly (no maps with non-string keys, no NaN).
        Err(e) => out.push_str(&serde_json::json!({ "error": e.to_string() }).to_string()),
    }
    out.push('\n');
}

/// Replays `trace`, with `config_override` layered over the trace's config line.
pub fn replay(
    trace: &str,
    config_override: Option<ReplayConfig>,
) -> Result<ReplayOutput, TraceError> {
    replay_with_limits(trace, config_override.as_ref(), &Limits::default())
}

/// [`replay`] with explicit limits.
pub fn replay_with_limits(
    trace: &str,
    config_override: Option<&ReplayConfig>,
    limits: &Limits,
) -> Result<ReplayOutput, TraceError> {
    let parsed = trace::parse(trace, limits)?;
    let (config_line, base) = match parsed.config {
        Some((line, config)) => (Some(line), config),
        None => (None, ReplayConfig::new()),
    };
    let config = match config_override {
        Some(top) => top.layered_over(&base),
        None => base,
    };
    let (breaker, retry) = config.validate().map_err(|error| TraceError::Config {
        line: config_line.filter(|_| config_override.is_none()),
        error,
    })?;
    let engine = engine::Engine::new(breaker, &retry, config.seed(), parsed.events, limits);
    let (lines, summary) = engine.run()?;
    Ok(ReplayOutput {
        config,
        lines,
        summary,
    })
}

/// Replays `trace` twice, with `a` and then `b` layered over the trace's config line.
pub fn compare(trace: &str, a: &ReplayConfig, b: &ReplayConfig) -> Result<Comparison, TraceError> {
    let limits = Limits::default();
    Ok(Comparison {
        a: replay_with_limits(trace, Some(a), &limits)?.summary,
        b: replay_with_limits(trace, Some(b), &limits)?.summary,
    })
}
