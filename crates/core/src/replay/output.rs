//! What a replay prints: one typed line per decision, outcome, transition, read, admin
//! action, retried request and delay probe, then a summary.
//!
//! Every line serializes to the JSON object of DESIGN.md §6. Times are virtual
//! milliseconds ([`Millis`]): whole numbers when whole, fractions otherwise (retry jitter
//! produces fractional instants). Lines name the key (`tenant`, `provider`) only for
//! events that named one in the trace.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

use crate::breaker::{RuleSet, State, TransitionReason, WindowCounts};
use crate::keys::{ProviderId, TenantId};

/// A virtual instant or duration, stored in nanoseconds, printed in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

impl Millis {
    /// From whole milliseconds.
    pub const fn from_ms(ms: u64) -> Self {
        Millis(ms.saturating_mul(1_000_000))
    }

    /// Nanoseconds.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Milliseconds, with fractions.
    pub fn as_ms_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(1_000_000) {
            s.serialize_u64(self.0 / 1_000_000)
        } else {
            // Microsecond precision is plenty for a trace and keeps the output stable.
            s.serialize_f64((self.0 as f64 / 1e3).round() / 1e3)
        }
    }
}

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_multiple_of(1_000_000) {
            write!(f, "{} ms", self.0 / 1_000_000)
        } else {
            write!(f, "{:.3} ms", self.as_ms_f64())
        }
    }
}

/// The key an output line is about, present when the trace named it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyFields {
    /// The tenant.
    pub tenant: TenantId,
    /// The provider.
    pub provider: ProviderId,
}

/// Whether an acquire was admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Admitted.
    Allowed,
    /// Refused by the breaker.
    Rejected,
}

/// `{"t":..,"id":..,"decision":"allowed"|"rejected","state":..}`: one acquire.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecisionLine {
    /// When.
    pub t: Millis,
    /// The call (or request, for `execute` attempts).
    pub id: String,
    /// Attempt number within an `execute` (1-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The decision.
    pub decision: Decision,
    /// The breaker's state right after the decision.
    pub state: State,
    /// Whether the call was admitted as a half-open probe.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub probe: bool,
    /// The key, when the trace named it.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyFields>,
}

/// What the breaker did with a reported outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// It counted toward the state.
    Counted,
    /// It came from an older generation (statistics only): a late outcome.
    Stale,
    /// The call was not tracked (`metrics_only` shadow admission, `disabled`).
    Unchecked,
}

/// `{"t":..,"id":..,"outcome":..,"effect":..}`: an admitted call reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutcomeLine {
    /// When the outcome was recorded.
    pub t: Millis,
    /// The call.
    pub id: String,
    /// Attempt number within an `execute`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// `success`, `failure` or `ignored`.
    pub outcome: &'static str,
    /// Time from admission to outcome.
    pub latency_ms: Millis,
    /// What it did.
    pub effect: Effect,
    /// The key, when the trace named it.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyFields>,
}

/// `{"t":..,"transition":"closed->open","reason":..,"rules":[..]}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TransitionLine {
    /// When it logically happened (a timeout's or a lease's end, for lazy transitions).
    pub t: Millis,
    /// `from->to`.
    pub transition: String,
    /// The reason.
    pub reason: TransitionReason,
    /// Every opening rule that held (closed → open only; empty otherwise).
    pub rules: RuleSet,
    /// The open timeout drawn for this opening (→ open only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_until: Option<Millis>,
    /// The key, when the trace named it.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyFields>,
}

/// `{"t":..,"state":..,"open_remaining_ms":..}`: a read.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReadLine {
    /// When.
    pub t: Millis,
    /// The state (lazy transitions applied).
    pub state: State,
    /// Time left before half-open (open, not forced); `null` otherwise.
    pub open_remaining_ms: Option<Millis>,
    /// Whether an operator holds the state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forced: Option<&'static str>,
    /// The window's counts at the read.
    pub window: WindowCounts,
    /// The current run of consecutive failures in the window.
    pub consecutive_failures: u32,
    /// Consecutive probe successes in the current half-open episode.
    pub probe_successes: u32,
    /// The key, when the trace named it.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyFields>,
}

/// `{"t":..,"admin":"force_open","state":..}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AdminLine {
    /// When.
    pub t: Millis,
    /// The action.
    pub admin: &'static str,
    /// The state after it.
    pub state: State,
    /// The key, when the trace named it.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyFields>,
}

/// One retried request (`execute`), printed when it ends.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExecuteLine {
    /// When the request started.
    pub t: Millis,
    /// The request.
    pub id: String,
    /// When each attempt started (including one the breaker refused).
    pub attempt_starts: Vec<Millis>,
    /// The delays slept between attempts.
    pub delays: Vec<Millis>,
    /// `success`, `failure`, or `rejected` (the breaker refused an attempt).
    pub result: &'static str,
    /// Why the attempts ended (see [`crate::retry::Cause`]).
    pub cause: &'static str,
    /// The last error, when the request failed on one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// When the request ended.
    pub end: Millis,
    /// The key, when the trace named it.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyFields>,
}

/// The backoff before one numbered retry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetryDelay {
    /// Retry number (1 = the first retry).
    pub retry: u32,
    /// The delay.
    pub delay_ms: Millis,
}

/// `{"t":..,"delays":[{"retry":1,"delay_ms":..},..],"seed":..}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DelaysLine {
    /// Position in the trace.
    pub t: Millis,
    /// The delays.
    pub delays: Vec<RetryDelay>,
    /// The seed the jitter was drawn with.
    pub seed: u64,
}

/// One output line.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum OutputLine {
    /// An acquire.
    Decision(DecisionLine),
    /// An outcome.
    Outcome(OutcomeLine),
    /// A transition.
    Transition(TransitionLine),
    /// A read.
    Read(ReadLine),
    /// An admin action.
    Admin(AdminLine),
    /// A retried request.
    Execute(ExecuteLine),
    /// A delay probe.
    Delays(DelaysLine),
}

impl OutputLine {
    /// The line's time.
    pub fn t(&self) -> Millis {
        match self {
            OutputLine::Decision(l) => l.t,
            OutputLine::Outcome(l) => l.t,
            OutputLine::Transition(l) => l.t,
            OutputLine::Read(l) => l.t,
            OutputLine::Admin(l) => l.t,
            OutputLine::Execute(l) => l.t,
            OutputLine::Delays(l) => l.t,
        }
    }
}

/// Counters of one key, or of the whole replay.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Counters {
    /// Acquires (calls, split acquires, `execute` attempts).
    pub calls: u64,
    /// Acquires admitted.
    pub allowed: u64,
    /// Acquires refused.
    pub rejected: u64,
    /// Admissions that were half-open probes.
    pub probes: u64,
    /// Successes reported.
    pub successes: u64,
    /// Failures reported (timeouts included).
    pub failures: u64,
    /// Ignored outcomes reported.
    pub ignored: u64,
    /// Admitted calls that never reported (`never`, or an acquire without `complete`).
    pub unreported: u64,
    /// Outcomes that arrived from an older generation (late outcomes).
    pub stale: u64,
    /// Transitions of any kind.
    pub transitions: u64,
    /// Transitions into open.
    pub openings: u64,
    /// Transitions into open by reason (trigger reasons, `half_open_failure`, `manual`).
    pub openings_by_reason: BTreeMap<&'static str, u64>,
    /// Total time spent open, up to the end of the replay.
    pub time_open_ms: Millis,
    /// When the first failure was reported.
    pub first_failure_ms: Option<Millis>,
    /// When a rule first opened the breaker (manual openings do not count).
    pub first_opening_ms: Option<Millis>,
    /// From the first failure to the first opening by a rule, when the failure came first.
    pub time_to_first_opening_ms: Option<Millis>,
}

impl Counters {
    pub(crate) fn add(&mut self, other: &Counters) {
        self.calls += other.calls;
        self.allowed += other.allowed;
        self.rejected += other.rejected;
        self.probes += other.probes;
        self.successes += other.successes;
        self.failures += other.failures;
        self.ignored += other.ignored;
        self.unreported += other.unreported;
        self.stale += other.stale;
        self.transitions += other.transitions;
        self.openings += other.openings;
        for (reason, n) in &other.openings_by_reason {
            *self.openings_by_reason.entry(reason).or_default() += n;
        }
        self.time_open_ms = Millis(self.time_open_ms.0.saturating_add(other.time_open_ms.0));
        self.first_failure_ms = min_some(self.first_failure_ms, other.first_failure_ms);
        self.first_opening_ms = min_some(self.first_opening_ms, other.first_opening_ms);
        self.time_to_first_opening_ms = match (self.first_failure_ms, self.first_opening_ms) {
            (Some(f), Some(o)) if f <= o => Some(Millis(o.0 - f.0)),
            _ => None,
        };
    }
}

fn min_some(a: Option<Millis>, b: Option<Millis>) -> Option<Millis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The final `{"summary":{...}}` line.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReplaySummary {
    /// Totals over every key.
    #[serde(flatten)]
    pub totals: Counters,
    /// Retried requests (`execute`).
    pub requests: u64,
    /// Retried requests by the cause that ended them.
    pub requests_by_cause: BTreeMap<&'static str, u64>,
    /// Retries made (attempts after the first).
    pub retries: u64,
    /// Distinct breaker keys.
    pub keys: usize,
    /// The end of the replay: the last event or outcome.
    pub end_ms: Millis,
    /// Per key (`tenant/provider`), when the trace has more than one.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub per_key: BTreeMap<String, Counters>,
}

/// Two summaries of one trace under two configurations.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// Under the first configuration.
    pub a: ReplaySummary,
    /// Under the second.
    pub b: ReplaySummary,
}

impl Comparison {
    /// The figures an operator compares, as `(name, a, b)` rows ready for a table: openings
    /// (total and by reason), rejected calls, time from the first failure to the first
    /// opening, time open, probes.
    pub fn rows(&self) -> Vec<(String, String, String)> {
        let (a, b) = (&self.a.totals, &self.b.totals);
        let opt = |m: Option<Millis>| m.map_or_else(|| "-".to_string(), |m| m.to_string());
        let mut rows = vec![
            (
                "calls".to_string(),
                a.calls.to_string(),
                b.calls.to_string(),
            ),
            (
                "allowed".into(),
                a.allowed.to_string(),
                b.allowed.to_string(),
            ),
            (
                "rejected".into(),
                a.rejected.to_string(),
                b.rejected.to_string(),
            ),
            (
                "openings".into(),
                a.openings.to_string(),
                b.openings.to_string(),
            ),
        ];
        let mut reasons: Vec<&'static str> = a
            .openings_by_reason
            .keys()
            .chain(b.openings_by_reason.keys())
            .copied()
            .collect();
        reasons.sort_unstable();
        reasons.dedup();
        for reason in reasons {
            let n = |c: &Counters| c.openings_by_reason.get(reason).copied().unwrap_or(0);
            rows.push((
                format!("openings: {reason}"),
                n(a).to_string(),
                n(b).to_string(),
            ));
        }
        rows.extend([
            (
                "first failure -> first opening".to_string(),
                opt(a.time_to_first_opening_ms),
                opt(b.time_to_first_opening_ms),
            ),
            (
                "time open".into(),
                a.time_open_ms.to_string(),
                b.time_open_ms.to_string(),
            ),
            ("probes".into(), a.probes.to_string(), b.probes.to_string()),
            (
                "requests failed".into(),
                failed_requests(&self.a).to_string(),
                failed_requests(&self.b).to_string(),
            ),
        ]);
        rows
    }
}

fn failed_requests(s: &ReplaySummary) -> u64 {
    s.requests_by_cause
        .iter()
        .filter(|(cause, _)| **cause != "succeeded")
        .map(|(_, n)| n)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_print_whole_when_whole() {
        let j = |m: Millis| serde_json::to_string(&m).unwrap();
        assert_eq!(j(Millis::from_ms(25)), "25");
        assert_eq!(j(Millis(1_500_000)), "1.5");
        assert_eq!(j(Millis(1_234_567)), "1.235");
        assert_eq!(Millis(2_500_000).to_string(), "2.500 ms");
    }

    #[test]
    fn lines_serialize_to_the_design_shape() {
        let line = OutputLine::Transition(TransitionLine {
            t: Millis::from_ms(25),
            transition: "closed->open".into(),
            reason: TransitionReason::ErrorRateThresholdExceeded,
            rules: RuleSet::EMPTY,
            open_until: Some(Millis::from_ms(1025)),
            key: None,
        });
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"t":25,"transition":"closed->open","reason":"error_rate_threshold_exceeded","rules":[],"open_until":1025}"#
        );
    }
}
