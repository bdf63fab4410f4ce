//! The breaker's state machine for one key: a pure decision on injected time.
//!
//! # Rules (DESIGN.md §3)
//! - **closed → open** right after an outcome (success or failure) is recorded, when a rule
//!   holds. Rules in precedence order: consecutive failures ≥ `failure_threshold`; window
//!   error rate ≥ `error_rate_threshold`; window slow-call rate ≥ `slow_call_rate_threshold`.
//!   The rate rules give no verdict below `min_calls` calls in the window. The transition
//!   carries the first rule that held as its reason and every rule that held as `rules`.
//!   The consecutive-failure run is read through the window too: a failure stops counting
//!   when its bucket leaves the window, so no rule ever counts an event older than the
//!   window (invariant 1). DESIGN.md §3 leaves the run unbounded in time; that let four
//!   failures, a long quiet gap and one failure open the breaker (case BR05), so the run
//!   is bounded by the window here. Failures count in the run by when they completed,
//!   at bucket resolution: one stamped before the bucket in which the run began (it raced
//!   the success that began the run to the lock, and lost) is not part of the run (see
//!   [`super::window`]).
//! - **open → half_open** once the open timeout has elapsed (`timeout_elapsed`). This is
//!   applied lazily by every method, reads included, and stamped with the instant the
//!   timeout elapsed, not the instant it was noticed.
//! - **half_open → open** on a failed probe, or when a probe's lease expires without an
//!   outcome (`half_open_failure`, stamped at the lease's end). The open timeout doubles for
//!   each re-open without a close in between, up to `open_timeout_max_ms`; jitter applies
//!   after the cap, so capped breakers still spread their probes.
//! - **half_open → closed** after `success_threshold` consecutive probe successes
//!   (`success_threshold_reached`): fresh window, counters and backoff.
//! - **admin**: `force_open` and `force_closed` hold until `release` (force-open releases
//!   to half-open so probes decide; force-closed releases to closed); `reset` makes a fresh
//!   closed breaker. Reason `manual`.
//!
//! # Generations
//! Every transition starts a new generation. An [`Admission`] carries the generation it
//! was issued in; an outcome from an older generation updates the statistics only, never
//! the state: a late success while open does not close it, a late failure does not re-open
//! it or extend its timeout.
//!
//! # Half-open bookkeeping
//! An episode admits at most `half_open_max_calls` probes. An `Ignored` probe outcome (or a
//! dropped permit) frees its slot; a success or a failure does not. In-flight probes hold a
//! slot with their start time so the lease can be enforced; there are never more in-flight
//! probes than slots, so an episode cannot be stuck: every probe resolves or expires.
//!
//! # Modes
//! `metrics_only` runs the same machine but admits the calls it would reject (counted as
//! shadow rejections; their outcomes are not fed back). `disabled` admits everything and
//! records nothing.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::config::{BreakerMode, BreakerSettings};
use super::window::{SlidingWindow, WindowCounts};
use crate::outcome::{FailureKind, Outcome};
use crate::rng::{SplitMix64, jittered};
use crate::time::Timestamp;

/// The public, never-changing spelling of every trigger and transition reason.
pub mod reason {
    /// Consecutive failures reached `failure_threshold`.
    pub const FAILURE_THRESHOLD_EXCEEDED: &str = "failure_threshold_exceeded";
    /// The window's error rate reached `error_rate_threshold`.
    pub const ERROR_RATE_THRESHOLD_EXCEEDED: &str = "error_rate_threshold_exceeded";
    /// The window's slow-call rate reached `slow_call_rate_threshold`.
    pub const LATENCY_THRESHOLD_EXCEEDED: &str = "latency_threshold_exceeded";
    /// A half-open probe failed or its lease expired.
    pub const HALF_OPEN_FAILURE: &str = "half_open_failure";
    /// The open timeout elapsed.
    pub const TIMEOUT_ELAPSED: &str = "timeout_elapsed";
    /// Enough consecutive probes succeeded.
    pub const SUCCESS_THRESHOLD_REACHED: &str = "success_threshold_reached";
    /// An operator acted through the admin API.
    pub const MANUAL: &str = "manual";
}

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Calls flow; outcomes are evaluated.
    Closed,
    /// Calls are rejected until the open timeout elapses.
    Open,
    /// A bounded number of probes decide between closed and open.
    HalfOpen,
}

impl State {
    /// The spelling used in APIs, logs and the `from`/`to` labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    /// The value of the `router_circuit_breaker_state` gauge: 0 closed, 1 open, 2 half-open.
    pub const fn gauge_value(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }
}

/// An operator override, held until released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Forced {
    /// Held open: every call is rejected.
    Open,
    /// Held closed: every call is admitted and no rule opens the breaker.
    Closed,
}

/// An opening rule, in precedence order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Consecutive failures.
    FailureThreshold,
    /// Window error rate.
    ErrorRate,
    /// Window slow-call rate.
    Latency,
}

impl Rule {
    /// Every rule, in precedence order.
    pub const ALL: [Rule; 3] = [Rule::FailureThreshold, Rule::ErrorRate, Rule::Latency];

    /// The transition reason this rule gives.
    pub const fn reason(self) -> TransitionReason {
        match self {
            Rule::FailureThreshold => TransitionReason::FailureThresholdExceeded,
            Rule::ErrorRate => TransitionReason::ErrorRateThresholdExceeded,
            Rule::Latency => TransitionReason::LatencyThresholdExceeded,
        }
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The set of rules that held at an opening.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleSet(u8);

impl RuleSet {
    /// No rule.
    pub const EMPTY: RuleSet = RuleSet(0);

    /// Adds `rule`.
    pub fn insert(&mut self, rule: Rule) {
        self.0 |= rule.bit();
    }

    /// Whether `rule` is in the set.
    pub const fn contains(self, rule: Rule) -> bool {
        self.0 & rule.bit() != 0
    }

    /// Whether no rule is in the set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The rules in precedence order.
    pub fn iter(self) -> impl Iterator<Item = Rule> {
        Rule::ALL.into_iter().filter(move |r| self.contains(*r))
    }

    /// The rule that takes precedence.
    pub fn primary(self) -> Option<Rule> {
        self.iter().next()
    }

    /// The reason strings of the rules, in precedence order.
    pub fn reasons(self) -> impl Iterator<Item = &'static str> {
        self.iter().map(|r| r.reason().as_str())
    }
}

impl Serialize for RuleSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.reasons())
    }
}

/// Why a transition happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionReason {
    /// [`reason::FAILURE_THRESHOLD_EXCEEDED`]
    FailureThresholdExceeded,
    /// [`reason::ERROR_RATE_THRESHOLD_EXCEEDED`]
    ErrorRateThresholdExceeded,
    /// [`reason::LATENCY_THRESHOLD_EXCEEDED`]
    LatencyThresholdExceeded,
    /// [`reason::HALF_OPEN_FAILURE`]
    HalfOpenFailure,
    /// [`reason::TIMEOUT_ELAPSED`]
    TimeoutElapsed,
    /// [`reason::SUCCESS_THRESHOLD_REACHED`]
    SuccessThresholdReached,
    /// [`reason::MANUAL`]
    Manual,
}

impl TransitionReason {
    /// Every reason.
    pub const ALL: [TransitionReason; 7] = [
        TransitionReason::FailureThresholdExceeded,
        TransitionReason::ErrorRateThresholdExceeded,
        TransitionReason::LatencyThresholdExceeded,
        TransitionReason::HalfOpenFailure,
        TransitionReason::TimeoutElapsed,
        TransitionReason::SuccessThresholdReached,
        TransitionReason::Manual,
    ];

    /// The public spelling (see [`reason`]).
    pub const fn as_str(self) -> &'static str {
        match self {
            TransitionReason::FailureThresholdExceeded => reason::FAILURE_THRESHOLD_EXCEEDED,
            TransitionReason::ErrorRateThresholdExceeded => reason::ERROR_RATE_THRESHOLD_EXCEEDED,
            TransitionReason::LatencyThresholdExceeded => reason::LATENCY_THRESHOLD_EXCEEDED,
            TransitionReason::HalfOpenFailure => reason::HALF_OPEN_FAILURE,
            TransitionReason::TimeoutElapsed => reason::TIMEOUT_ELAPSED,
            TransitionReason::SuccessThresholdReached => reason::SUCCESS_THRESHOLD_REACHED,
            TransitionReason::Manual => reason::MANUAL,
        }
    }

    /// Whether this reason opens a closed breaker (a `trigger_reason`).
    pub const fn is_trigger(self) -> bool {
        matches!(
            self,
            TransitionReason::FailureThresholdExceeded
                | TransitionReason::ErrorRateThresholdExceeded
                | TransitionReason::LatencyThresholdExceeded
        )
    }
}

/// One state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// When it logically happened (the instant a timeout or lease elapsed, for lazy ones).
    #[serde(skip)]
    pub at: Timestamp,
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// Why.
    pub reason: TransitionReason,
    /// Every opening rule that held (closed → open only).
    pub rules: RuleSet,
}

/// The last time the breaker opened, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Opening {
    /// When.
    #[serde(skip)]
    pub at: Timestamp,
    /// The primary reason.
    pub reason: TransitionReason,
    /// Every rule that held.
    pub rules: RuleSet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Call,
    Probe(u8),
    Unchecked,
}

/// Permission to make one call: plain data handed back with the call's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    generation: u64,
    started: Timestamp,
    role: Role,
    /// Whether `stats.admitted` already counts this call (false for lock-free admissions,
    /// counted when they report).
    counted: bool,
}

/// The lock-free admission gate: `generation << 2 | kind`, published by whoever last held
/// a breaker's lock (see [`Breaker::gate`]).
pub(crate) mod gate {
    /// Take the lock: the state machine must decide.
    pub const SLOW: u64 = 0;
    /// Closed and enforcing (or held closed): admit as a call of this generation.
    pub const CLOSED: u64 = 1;
    /// Disabled: admit unchecked.
    pub const DISABLED: u64 = 2;
}

impl Admission {
    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        matches!(self.role, Role::Probe(_))
    }

    /// The generation the call was admitted in (a probe's half-open episode). Outcomes of
    /// an older generation than the breaker's are stale.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When the call was admitted.
    pub fn started(&self) -> Timestamp {
        self.started
    }

    /// Whether the call was admitted without being tracked (`metrics_only` shadow
    /// rejection, or `disabled` mode).
    pub fn is_unchecked(&self) -> bool {
        self.role == Role::Unchecked
    }
}

/// The span and generation in which the registry may count successes lock-free: a
/// success of an admission of `generation`, reported in `[from, until)` with a latency of
/// at most `slow_above` nanoseconds (see [`Breaker::fast_lane`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FastLane {
    pub generation: u64,
    pub from: u64,
    pub until: u64,
    pub slow_above: u64,
}

impl Admission {
    /// Whether a success of this admission, reported at `now`, may go through `lane`: a
    /// lock-free call of the lane's generation (whose `admitted` count is taken when it
    /// reports), reported inside the lane, not slow.
    #[inline]
    pub(crate) fn fits_fast_lane(&self, lane: &FastLane, now: Timestamp) -> bool {
        let now = now.as_nanos();
        self.role == Role::Call
            && !self.counted
            && self.generation == lane.generation
            && lane.from <= now
            && now < lane.until
            && now.saturating_sub(self.started.as_nanos()) <= lane.slow_above
    }
}

/// A call refused by the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The state that refused it.
    pub state: State,
    /// When to try again: the rest of the open timeout, or of the earliest probe lease.
    pub retry_after: Duration,
    /// Whether an operator holds the breaker open.
    pub forced: bool,
}

/// What [`Breaker::record`] did with an outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordEffect {
    /// The outcome counted toward the state.
    Counted,
    /// The outcome came from an older generation: statistics only.
    Stale,
    /// The call was not tracked (shadow or disabled): statistics only.
    Unchecked,
}

/// Cumulative per-breaker statistics (never reset by transitions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BreakerStats {
    /// Calls admitted. A call admitted lock-free by the registry in closed state is counted
    /// when it reports (every permit reports, a dropped one as ignored), so in-flight calls
    /// may be missing here; once all have reported, admitted = successes + failures + ignored.
    pub admitted: u64,
    /// Calls rejected.
    pub rejected: u64,
    /// Calls that `metrics_only` admitted but `enforce` would have rejected.
    pub shadow_rejected: u64,
    /// Successes reported.
    pub successes: u64,
    /// Failures reported.
    pub failures: u64,
    /// Ignored outcomes and dropped permits.
    pub ignored: u64,
    /// Outcomes from an older generation.
    pub stale: u64,
}

/// Everything an operator or an exporter may want to know about one breaker.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    /// Current state (lazy transitions applied).
    pub state: State,
    /// Operator override, if any.
    pub forced: Option<Forced>,
    /// Mode.
    pub mode: BreakerMode,
    /// Current generation.
    pub generation: u64,
    /// When the current state was entered.
    #[serde(skip)]
    pub since: Timestamp,
    /// Time left before half-open (open and not forced only).
    #[serde(skip)]
    pub open_remaining: Option<Duration>,
    /// Window counts.
    pub window: WindowCounts,
    /// Window error rate.
    pub error_rate: f64,
    /// Window slow-call rate.
    pub slow_call_rate: f64,
    /// Current run of consecutive failures.
    pub consecutive_failures: u32,
    /// Probes admitted in the current half-open episode.
    pub probes_admitted: u32,
    /// Probes in flight.
    pub probes_in_flight: u32,
    /// Consecutive probe successes in the current episode.
    pub probe_successes: u32,
    /// Openings since the last close (drives the timeout backoff).
    pub openings_since_close: u32,
    /// The last opening.
    pub last_opening: Option<Opening>,
    /// Cumulative statistics.
    pub stats: BreakerStats,
}

const FREE: u64 = u64::MAX;

/// The bookkeeping of one half-open episode: made when the episode starts and dropped
/// when it ends, so a closed or open breaker (nearly all of them) holds none.
#[derive(Clone, Debug)]
struct Episode {
    /// Probes admitted (less those that reported `ignored`).
    admitted: u32,
    /// Consecutive probe successes.
    successes: u32,
    /// When each in-flight probe started ([`FREE`] for a free slot): one slot per probe the
    /// episode may admit.
    starts: Box<[u64]>,
}

impl Episode {
    fn new(slots: u32) -> Box<Self> {
        Box::new(Episode {
            admitted: 0,
            successes: 0,
            starts: vec![FREE; slots as usize].into_boxed_slice(),
        })
    }

    fn in_flight(&self) -> impl Iterator<Item = u64> + '_ {
        self.starts.iter().copied().filter(|s| *s != FREE)
    }
}

/// One circuit breaker. Not thread-safe by itself: see [`super::BreakerRegistry`].
#[derive(Clone, Debug)]
pub struct Breaker {
    settings: Arc<BreakerSettings>,
    generation: u64,
    last_used: Timestamp,
    stats: BreakerStats,
    state: State,
    forced: Option<Forced>,
    window: SlidingWindow,
    since: Timestamp,
    open_until: Timestamp,
    openings_since_close: u32,
    /// The current half-open episode (half-open only).
    episode: Option<Box<Episode>>,
    rng: SplitMix64,
    // The last opening, as [`Opening`] (kept apart so the small fields pack together).
    last_opening_at: Timestamp,
    last_opening_reason: Option<TransitionReason>,
    last_opening_rules: RuleSet,
}

impl Breaker {
    /// A closed breaker created at `now`; `seed` drives its open-timeout jitter.
    pub fn new(settings: Arc<BreakerSettings>, now: Timestamp, seed: u64) -> Self {
        let window = SlidingWindow::new(settings.buckets, settings.bucket_nanos);
        Breaker {
            state: State::Closed,
            forced: None,
            generation: 0,
            since: now,
            open_until: now,
            openings_since_close: 0,
            window,
            episode: None,
            rng: SplitMix64::new(seed),
            last_opening_at: now,
            last_opening_reason: None,
            last_opening_rules: RuleSet::EMPTY,
            last_used: now,
            stats: BreakerStats::default(),
            settings,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &Arc<BreakerSettings> {
        &self.settings
    }

    fn mode(&self) -> BreakerMode {
        self.settings.config().mode
    }

    /// Asks to make one call at `now`.
    pub fn acquire(
        &mut self,
        now: Timestamp,
        on: &mut impl FnMut(Transition),
    ) -> Result<Admission, Rejection> {
        if self.mode() == BreakerMode::Disabled {
            self.stats.admitted += 1;
            return Ok(Admission {
                generation: self.generation,
                started: now,
                role: Role::Unchecked,
                counted: true,
            });
        }
        self.advance(now, on);
        self.last_used = self.last_used.max(now);
        let decision = match self.decision(now) {
            Ok(Some(slot)) => {
                if let Some(episode) = self.episode.as_mut() {
                    episode.starts[slot] = now.as_nanos();
                    episode.admitted += 1;
                }
                // `slot` < half_open_max_calls <= 64.
                Ok(Role::Probe(slot as u8))
            }
            Ok(None) => Ok(Role::Call),
            Err(rejection) => Err(rejection),
        };
        match decision {
            Ok(role) => {
                self.stats.admitted += 1;
                Ok(Admission {
                    generation: self.generation,
                    started: now,
                    role,
                    counted: true,
                })
            }
            Err(_) if self.mode() == BreakerMode::MetricsOnly => {
                self.stats.admitted += 1;
                self.stats.shadow_rejected += 1;
                Ok(Admission {
                    generation: self.generation,
                    started: now,
                    role: Role::Unchecked,
                    counted: true,
                })
            }
            Err(rejection) => {
                self.stats.rejected += 1;
                Err(rejection)
            }
        }
    }

    /// What an enforcing acquire at `now` decides (lazy transitions applied): admit as a
    /// call (`None`), admit as a probe in a free slot, or reject.
    fn decision(&self, now: Timestamp) -> Result<Option<usize>, Rejection> {
        match (self.forced, self.state) {
            (Some(Forced::Closed), _) | (None, State::Closed) => Ok(None),
            (Some(Forced::Open), _) => Err(Rejection {
                state: State::Open,
                retry_after: Duration::from_nanos(self.settings.open_timeout_nanos),
                forced: true,
            }),
            (None, State::Open) => Err(Rejection {
                state: State::Open,
                retry_after: now.until(self.open_until),
                forced: false,
            }),
            (None, State::HalfOpen) => self.free_probe_slot(now).map(Some),
        }
    }

    /// Whether an acquire at `now` would be admitted, without admitting (or counting)
    /// anything: the rejection it would get, if any. In `metrics_only` and `disabled`
    /// modes nothing is rejected.
    pub fn peek(&mut self, now: Timestamp, on: &mut impl FnMut(Transition)) -> Option<Rejection> {
        if self.mode() != BreakerMode::Enforce {
            return None;
        }
        self.advance(now, on);
        self.decision(now).err()
    }

    fn free_probe_slot(&self, now: Timestamp) -> Result<usize, Rejection> {
        let max = self.settings.config().half_open_max_calls;
        let free = self
            .episode
            .as_ref()
            .filter(|e| e.admitted < max)
            .and_then(|e| e.starts.iter().position(|s| *s == FREE));
        match free {
            Some(slot) => Ok(slot),
            _ => {
                let retry_after = self
                    .earliest_lease_end()
                    .map_or(Duration::from_millis(1), |end| {
                        now.until(end).max(Duration::from_millis(1))
                    });
                Err(Rejection {
                    state: State::HalfOpen,
                    retry_after,
                    forced: false,
                })
            }
        }
    }

    /// The admission gate for lock-free acquires: what [`Breaker::acquire`] would do at
    /// any instant until the next change of this breaker, when that needs no decision.
    /// Closed (not held open, not shadowing) admits every call; nothing time-driven
    /// happens in closed, so the answer holds until the breaker is next changed.
    pub(crate) fn gate(&self) -> u64 {
        let kind = match (self.mode(), self.forced, self.state) {
            (BreakerMode::Disabled, _, _) => gate::DISABLED,
            (_, Some(Forced::Closed), _) | (_, None, State::Closed) => gate::CLOSED,
            _ => gate::SLOW,
        };
        (self.generation << 2) | kind
    }

    /// Where the registry may count fast successes without the lock (its *fast lane*), if
    /// anywhere: in closed state (not held open, not disabled) while the window holds no
    /// failure and no slow call, a success that is not slow cannot make any rule hold, so
    /// it only needs counting. The lane is the head bucket of this generation; successes
    /// counted there are handed back through [`Breaker::absorb_fast_successes`] before the
    /// breaker next changes.
    pub(crate) fn fast_lane(&self) -> Option<FastLane> {
        let totals = self.window.totals();
        let closed = self.state == State::Closed
            && self.forced != Some(Forced::Open)
            && self.mode() != BreakerMode::Disabled;
        if !closed || totals.failures > 0 || totals.slow > 0 || self.window.run_failures() > 0 {
            return None;
        }
        let (from, until) = self.window.head_span();
        Some(FastLane {
            generation: self.generation,
            from,
            until,
            slow_above: self.settings.latency_threshold_nanos,
        })
    }

    /// Counts `n` successes reported through `lane` (see [`Breaker::fast_lane`]) exactly as
    /// `n` calls of [`Breaker::record`] with `Outcome::Success` inside the lane would have.
    pub(crate) fn absorb_fast_successes(&mut self, lane: FastLane, n: u32) {
        let n64 = u64::from(n);
        self.stats.admitted += n64;
        self.stats.successes += n64;
        if lane.generation != self.generation || self.state != State::Closed {
            // Unreachable while the registry flushes before every change; stale if not.
            self.stats.stale += n64;
            return;
        }
        self.last_used = self.last_used.max(Timestamp::from_nanos(lane.from));
        self.window.record_successes(lane.from, n);
    }

    /// The generation a gate word carries.
    #[inline]
    pub(crate) fn gate_generation(gate: u64) -> u64 {
        gate >> 2
    }

    /// The admission `gate` grants without the lock, if any.
    #[inline]
    pub(crate) fn admit_by_gate(gate: u64, now: Timestamp) -> Option<Admission> {
        let role = match gate & 3 {
            gate::CLOSED => Role::Call,
            gate::DISABLED => Role::Unchecked,
            _ => return None,
        };
        Some(Admission {
            generation: Breaker::gate_generation(gate),
            started: now,
            role,
            counted: false,
        })
    }

    /// Reports the outcome of an admitted call at `now`.
    pub fn record(
        &mut self,
        admission: Admission,
        outcome: Outcome,
        now: Timestamp,
        on: &mut impl FnMut(Transition),
    ) -> RecordEffect {
        if !admission.counted {
            self.stats.admitted += 1;
        }
        match outcome {
            Outcome::Success => self.stats.successes += 1,
            Outcome::Failure(_) => self.stats.failures += 1,
            Outcome::Ignored => self.stats.ignored += 1,
        }
        if admission.role == Role::Unchecked {
            return RecordEffect::Unchecked;
        }
        self.advance(now, on);
        self.last_used = self.last_used.max(now);
        if admission.generation != self.generation {
            self.stats.stale += 1;
            return RecordEffect::Stale;
        }
        match (self.state, admission.role) {
            (State::Closed, Role::Call) => self.record_closed(admission, outcome, now, on),
            (State::HalfOpen, Role::Probe(slot)) => self.record_probe(slot, outcome, now, on),
            _ => {
                self.stats.stale += 1;
                return RecordEffect::Stale;
            }
        }
        RecordEffect::Counted
    }

    fn record_closed(
        &mut self,
        admission: Admission,
        outcome: Outcome,
        now: Timestamp,
        on: &mut impl FnMut(Transition),
    ) {
        let latency = now.as_nanos().saturating_sub(admission.started.as_nanos());
        let slow = latency > self.settings.latency_threshold_nanos;
        match outcome {
            Outcome::Success => {
                self.window.record(now.as_nanos(), false, slow);
            }
            Outcome::Failure(kind) => {
                self.window
                    .record(now.as_nanos(), true, slow && kind != FailureKind::Timeout);
            }
            Outcome::Ignored => return,
        }
        if self.forced.is_some() {
            return;
        }
        let rules = self.rules_holding(now);
        if let Some(primary) = rules.primary() {
            self.open(now, primary.reason(), rules, on);
        }
    }

    /// The opening rules that hold at `now`.
    fn rules_holding(&mut self, now: Timestamp) -> RuleSet {
        let config = self.settings.config();
        let mut rules = RuleSet::EMPTY;
        if config.failure_threshold > 0
            && self.window.consecutive_failures(now.as_nanos()) >= config.failure_threshold
        {
            rules.insert(Rule::FailureThreshold);
        }
        let counts = self.window.counts(now.as_nanos());
        // A rate of zero never reaches a threshold above zero: skip the division.
        if counts.calls >= config.min_calls {
            if config.error_rate_threshold > 0.0
                && counts.failures > 0
                && counts.error_rate() >= config.error_rate_threshold
            {
                rules.insert(Rule::ErrorRate);
            }
            if config.slow_call_rate_threshold > 0.0
                && counts.slow > 0
                && counts.slow_rate() >= config.slow_call_rate_threshold
            {
                rules.insert(Rule::Latency);
            }
        }
        rules
    }

    fn record_probe(
        &mut self,
        slot: u8,
        outcome: Outcome,
        now: Timestamp,
        on: &mut impl FnMut(Transition),
    ) {
        let Some(episode) = self.episode.as_mut() else {
            return; // half-open always has an episode
        };
        if let Some(start) = episode.starts.get_mut(usize::from(slot)) {
            *start = FREE;
        }
        match outcome {
            Outcome::Success => {
                episode.successes += 1;
                if episode.successes >= self.settings.config().success_threshold {
                    self.enter(
                        State::Closed,
                        now,
                        TransitionReason::SuccessThresholdReached,
                        RuleSet::EMPTY,
                        on,
                    );
                }
            }
            Outcome::Failure(_) => {
                self.open(now, TransitionReason::HalfOpenFailure, RuleSet::EMPTY, on);
            }
            Outcome::Ignored => episode.admitted = episode.admitted.saturating_sub(1),
        }
    }

    /// Applies the time-driven transitions due at `now`.
    fn advance(&mut self, now: Timestamp, on: &mut impl FnMut(Transition)) {
        loop {
            match self.state {
                State::Open if self.forced.is_none() && now >= self.open_until => {
                    let at = self.open_until;
                    self.enter(
                        State::HalfOpen,
                        at,
                        TransitionReason::TimeoutElapsed,
                        RuleSet::EMPTY,
                        on,
                    );
                }
                State::HalfOpen => match self.earliest_lease_end() {
                    Some(end) if end <= now => {
                        self.open(end, TransitionReason::HalfOpenFailure, RuleSet::EMPTY, on);
                    }
                    _ => break,
                },
                _ => break,
            }
        }
    }

    fn earliest_lease_end(&self) -> Option<Timestamp> {
        let start = self.episode.as_ref()?.in_flight().min()?;
        Some(Timestamp::from_nanos(
            start.saturating_add(self.settings.probe_lease_nanos),
        ))
    }

    fn open(
        &mut self,
        at: Timestamp,
        reason: TransitionReason,
        rules: RuleSet,
        on: &mut impl FnMut(Transition),
    ) {
        self.openings_since_close = self.openings_since_close.saturating_add(1);
        let doublings = (self.openings_since_close - 1).min(63);
        let capped = self
            .settings
            .open_timeout_nanos
            .saturating_mul(1u64 << doublings)
            .min(self.settings.open_timeout_max_nanos);
        let jitter = self.settings.config().open_timeout_jitter;
        let timeout = (jittered(capped as f64, jitter, &mut self.rng) as u64).max(1);
        self.open_until = Timestamp::from_nanos(at.as_nanos().saturating_add(timeout));
        self.set_last_opening(at, reason, rules);
        self.enter(State::Open, at, reason, rules, on);
    }

    fn enter(
        &mut self,
        to: State,
        at: Timestamp,
        reason: TransitionReason,
        rules: RuleSet,
        on: &mut impl FnMut(Transition),
    ) {
        let from = self.state;
        self.state = to;
        self.generation += 1;
        self.since = at;
        self.window.end_run();
        self.episode = (to == State::HalfOpen)
            .then(|| Episode::new(self.settings.config().half_open_max_calls));
        if to == State::Closed {
            self.window.clear();
            self.openings_since_close = 0;
        }
        on(Transition {
            at,
            from,
            to,
            reason,
            rules,
        });
    }

    fn set_last_opening(&mut self, at: Timestamp, reason: TransitionReason, rules: RuleSet) {
        self.last_opening_at = at;
        self.last_opening_reason = Some(reason);
        self.last_opening_rules = rules;
    }

    /// The last time the breaker opened, and why.
    pub fn last_opening(&self) -> Option<Opening> {
        self.last_opening_reason.map(|reason| Opening {
            at: self.last_opening_at,
            reason,
            rules: self.last_opening_rules,
        })
    }

    /// The state at `now`, lazy transitions applied.
    pub fn state(&mut self, now: Timestamp, on: &mut impl FnMut(Transition)) -> State {
        self.advance(now, on);
        self.state
    }

    /// A full view at `now`, lazy transitions applied. Admits, counts and resets nothing.
    pub fn snapshot(&mut self, now: Timestamp, on: &mut impl FnMut(Transition)) -> BreakerSnapshot {
        self.advance(now, on);
        let window = self.window.counts(now.as_nanos());
        let open_remaining = (self.state == State::Open && self.forced.is_none())
            .then(|| now.until(self.open_until));
        BreakerSnapshot {
            state: self.state,
            forced: self.forced,
            mode: self.mode(),
            generation: self.generation,
            since: self.since,
            open_remaining,
            window,
            error_rate: window.error_rate(),
            slow_call_rate: window.slow_rate(),
            consecutive_failures: self.window.run_failures(),
            probes_admitted: self.episode.as_ref().map_or(0, |e| e.admitted),
            probes_in_flight: self.episode.as_ref().map_or(0, |e| e.in_flight().count()) as u32,
            probe_successes: self.episode.as_ref().map_or(0, |e| e.successes),
            openings_since_close: self.openings_since_close,
            last_opening: self.last_opening(),
            stats: self.stats,
        }
    }

    /// Holds the breaker open until [`Breaker::release`].
    pub fn force_open(&mut self, now: Timestamp, on: &mut impl FnMut(Transition)) {
        self.advance(now, on);
        self.forced = Some(Forced::Open);
        if self.state != State::Open {
            self.set_last_opening(now, TransitionReason::Manual, RuleSet::EMPTY);
            self.enter(
                State::Open,
                now,
                TransitionReason::Manual,
                RuleSet::EMPTY,
                on,
            );
        }
    }

    /// Holds the breaker closed until [`Breaker::release`]: no rule opens it.
    pub fn force_closed(&mut self, now: Timestamp, on: &mut impl FnMut(Transition)) {
        self.advance(now, on);
        self.forced = Some(Forced::Closed);
        if self.state != State::Closed {
            self.enter(
                State::Closed,
                now,
                TransitionReason::Manual,
                RuleSet::EMPTY,
                on,
            );
        }
    }

    /// Ends an override: a breaker held open goes half-open (probes decide), one held
    /// closed stays closed and resumes evaluating. Without an override, does nothing.
    pub fn release(&mut self, now: Timestamp, on: &mut impl FnMut(Transition)) {
        self.advance(now, on);
        if self.forced.take() == Some(Forced::Open) {
            self.enter(
                State::HalfOpen,
                now,
                TransitionReason::Manual,
                RuleSet::EMPTY,
                on,
            );
        }
    }

    /// Makes this a fresh closed breaker (statistics are kept). Outcomes of calls admitted
    /// before the reset are stale.
    pub fn reset(&mut self, now: Timestamp, on: &mut impl FnMut(Transition)) {
        self.forced = None;
        self.window.clear();
        self.openings_since_close = 0;
        if self.state == State::Closed {
            self.generation += 1;
        } else {
            self.enter(
                State::Closed,
                now,
                TransitionReason::Manual,
                RuleSet::EMPTY,
                on,
            );
        }
    }

    /// Switches to `settings` and restarts fresh and closed; outcomes of calls admitted
    /// before are stale.
    pub fn reconfigure(
        &mut self,
        settings: Arc<BreakerSettings>,
        now: Timestamp,
        on: &mut impl FnMut(Transition),
    ) {
        self.reset(now, on);
        self.window = SlidingWindow::new(settings.buckets, settings.bucket_nanos);
        self.settings = settings;
    }

    /// Whether the breaker may be dropped: closed, not forced, unused for `idle`.
    pub fn is_evictable(&self, now: Timestamp, idle: Duration) -> bool {
        self.state == State::Closed && self.forced.is_none() && now.since(self.last_used) >= idle
    }

    /// Heap bytes owned by this breaker (the settings are shared and not counted).
    pub fn heap_bytes(&self) -> usize {
        self.window.heap_bytes()
            + self.episode.as_ref().map_or(0, |e| {
                std::mem::size_of::<Episode>() + std::mem::size_of_val(&*e.starts)
            })
    }
}
