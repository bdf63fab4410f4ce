//! Property tests for every invariant of DESIGN.md §3 ("Invariants"), plus the backoff
//! bounds of §4. The breaker is driven on virtual time by random operations and checked
//! against naive models that recompute everything from the full event history.
//!
//! - 1, window monotonicity: `window_counts_match_the_bucket_model_and_the_invariant`.
//! - 2 and 3, soundness and precedence of `trigger_reason`, and the rules list:
//!   `breaker_matches_the_naive_model` recomputes every rule on a naive window at each
//!   opening (and after every counted outcome that did not open).
//! - 4, no opening from fast successes: `fast_successes_never_open`.
//! - 5, open admits nothing before its timeout; half-open never over-admits and is never
//!   stuck: checked in `breaker_matches_the_naive_model` after every operation.
//! - 6, the consecutive count resets on success and on every transition: same test.
//!
//! Generations (late outcomes never move the state): same test, on every stale outcome.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use beamline_core::breaker::{
    Admission, Breaker, BreakerConfig, BreakerObserver, BreakerRegistry, BreakerSettings,
    BreakerSnapshot, Permit, RecordEffect, Rule, RuleSet, SlidingWindow, State, Transition,
    TransitionReason,
};
use beamline_core::retry::{RetryConfig, delay_before_retry};
use beamline_core::rng::SplitMix64;
use beamline_core::{BreakerKey, FailureKind, Outcome, ProviderId, TenantId, Timestamp};
use proptest::prelude::*;

/// `cases` cases; failures are saved to (and replayed from) `proptest-regressions/properties.txt` in the crate,
/// committed. (proptest's default location is derived from the source path, which it
/// cannot resolve from a workspace member's directory.)
fn persisted(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "proptest-regressions/properties.txt",
            ),
        )),
        ..ProptestConfig::default()
    }
}

const MS: u64 = 1_000_000;

// ---------------------------------------------------------------------------------------
// 1. The window against a naive model.

#[derive(Clone, Debug)]
enum WinOp {
    /// Record at now + dt (ms), failure, slow.
    Record(u64, bool, bool),
    /// Record stamped `back` ms before the newest time (a thread that lost the lock race).
    Late(u64, bool),
    /// Move time forward and read.
    Read(u64),
    EndRun,
}

fn win_op() -> impl Strategy<Value = WinOp> {
    prop_oneof![
        6 => (0u64..700, any::<bool>(), any::<bool>()).prop_map(|(d, f, s)| WinOp::Record(d, f, s)),
        1 => (0u64..3000, any::<bool>()).prop_map(|(b, f)| WinOp::Late(b, f)),
        3 => (0u64..2500).prop_map(WinOp::Read),
        1 => Just(WinOp::EndRun),
    ]
}

proptest! {
    #![proptest_config(persisted(512))]

    #[test]
    fn window_counts_match_the_bucket_model_and_the_invariant(
        buckets in 1u32..16,
        bucket_ms in 1u64..500,
        ops in prop::collection::vec(win_op(), 1..120),
    ) {
        let bucket = bucket_ms * MS;
        let window = bucket * u64::from(buckets);
        let mut w = SlidingWindow::new(buckets, bucket);
        // (t, failure, slow, run id) of every event the window accepted.
        let mut events: Vec<(u64, bool, bool, u32)> = Vec::new();
        let mut run = 0u32;
        // The newest bucket when the current run began: a failure stamped before it
        // happened before the run began, and is not part of it.
        let mut run_epoch = 0u64;
        let mut now = 0u64;
        let mut newest = 0u64;
        for op in ops {
            match op {
                WinOp::Record(d, failure, slow) => {
                    now += d * MS;
                    newest = newest.max(now);
                    w.record(now, failure, slow);
                    if !failure { run += 1; run_epoch = newest / bucket; }
                    events.push((now, failure, slow, run));
                }
                WinOp::Late(back, failure) => {
                    let t = newest.saturating_sub(back * MS);
                    w.record(t, failure, false);
                    if !failure { run += 1; run_epoch = newest / bucket; }
                    // The window drops an event whose bucket already left it.
                    if t / bucket + u64::from(buckets) > newest / bucket {
                        events.push((t, failure, false, run));
                    }
                }
                WinOp::Read(d) => { now += d * MS; newest = newest.max(now); }
                WinOp::EndRun => { w.end_run(); run += 1; run_epoch = newest / bucket; }
            }
            let q = newest;
            let counts = w.counts(q);
            let in_buckets = |t: u64| t / bucket + u64::from(buckets) > q / bucket;
            let (mut calls, mut failures, mut slow, mut streak) = (0, 0, 0, 0);
            for &(t, f, s, r) in &events {
                if in_buckets(t) {
                    calls += 1;
                    failures += u32::from(f);
                    slow += u32::from(s);
                    if f && r == run && t / bucket >= run_epoch { streak += 1; }
                }
            }
            prop_assert_eq!((counts.calls, counts.failures, counts.slow), (calls, failures, slow));
            prop_assert_eq!(w.consecutive_failures(q), streak);
            // Invariant 1 in its own words: nothing older than the window counts; everything
            // younger than the window minus one bucket does.
            let younger = |limit: u64| events.iter().filter(|e| q - e.0 < limit).count() as u32;
            prop_assert!(counts.calls <= younger(window));
            prop_assert!(counts.calls >= younger(window.saturating_sub(bucket)));
        }
    }
}

// ---------------------------------------------------------------------------------------
// 2–6. The breaker against a naive model.

fn config() -> impl Strategy<Value = BreakerConfig> {
    (
        (
            0u32..6,
            prop::sample::select(vec![0.0, 0.3, 0.5, 1.0]),
            1u32..7,
        ),
        (1u64..5, 1u32..14, 50u64..300),
        prop::sample::select(vec![0.0, 0.5, 1.0]),
        (
            50u64..800,
            prop::sample::select(vec![1u64, 2, 4]),
            prop::sample::select(vec![0.0, 0.2]),
        ),
        (1u32..5, 50u64..600),
    )
        .prop_flat_map(|(rules, window, slow_rate, open, (max_calls, lease))| {
            (1..=max_calls).prop_map(move |success_threshold| BreakerConfig {
                failure_threshold: rules.0,
                error_rate_threshold: rules.1,
                min_calls: rules.2,
                window_seconds: window.0 as f64,
                window_buckets: window.1,
                latency_threshold_ms: window.2,
                slow_call_rate_threshold: slow_rate,
                open_timeout_ms: open.0,
                open_timeout_max_ms: open.0 * open.1,
                open_timeout_jitter: open.2,
                half_open_max_calls: max_calls,
                success_threshold,
                probe_lease_ms: Some(lease),
                ..BreakerConfig::default()
            })
        })
}

#[derive(Clone, Copy, Debug)]
enum Reported {
    Success,
    Failure,
    Timeout,
    Ignored,
    Never,
}

#[derive(Clone, Debug)]
enum BreakerOp {
    Advance(u64),
    Call(u64, Reported),
    Read,
    ForceOpen,
    ForceClosed,
    Release,
    Reset,
}

fn breaker_op() -> impl Strategy<Value = BreakerOp> {
    let reported = prop_oneof![
        4 => Just(Reported::Success),
        4 => Just(Reported::Failure),
        1 => Just(Reported::Timeout),
        1 => Just(Reported::Ignored),
        1 => Just(Reported::Never),
    ];
    prop_oneof![
        8 => (0u64..400).prop_map(BreakerOp::Advance),
        12 => (0u64..400, reported).prop_map(|(l, r)| BreakerOp::Call(l, r)),
        2 => Just(BreakerOp::Read),
        1 => Just(BreakerOp::ForceOpen),
        1 => Just(BreakerOp::ForceClosed),
        2 => Just(BreakerOp::Release),
        1 => Just(BreakerOp::Reset),
    ]
}

/// What the naive model remembers of the current closed episode.
#[derive(Default)]
struct Model {
    /// (record time, failure, slow) of every outcome counted while closed.
    events: Vec<(u64, bool, bool)>,
    /// Record times of the failures of the current run.
    run: Vec<u64>,
}

impl Model {
    fn rules(&self, c: &BreakerConfig, s: &BreakerSettings, q: u64) -> RuleSet {
        let bucket = s.bucket().as_nanos() as u64;
        let buckets = u64::from(c.window_buckets);
        let inside = |t: u64| t / bucket + buckets > q / bucket;
        let mut rules = RuleSet::EMPTY;
        let streak = self.run.iter().filter(|t| inside(**t)).count() as u32;
        if c.failure_threshold > 0 && streak >= c.failure_threshold {
            rules.insert(Rule::FailureThreshold);
        }
        let window: Vec<_> = self.events.iter().filter(|e| inside(e.0)).collect();
        let calls = window.len() as u32;
        let failures = window.iter().filter(|e| e.1).count() as f64;
        let slow = window.iter().filter(|e| e.2).count() as f64;
        if calls >= c.min_calls {
            if c.error_rate_threshold > 0.0 && failures / f64::from(calls) >= c.error_rate_threshold
            {
                rules.insert(Rule::ErrorRate);
            }
            if c.slow_call_rate_threshold > 0.0
                && slow / f64::from(calls) >= c.slow_call_rate_threshold
            {
                rules.insert(Rule::Latency);
            }
        }
        rules
    }

    fn has_failure(&self, s: &BreakerSettings, c: &BreakerConfig, q: u64) -> (bool, bool) {
        let bucket = s.bucket().as_nanos() as u64;
        let inside = |t: u64| t / bucket + u64::from(c.window_buckets) > q / bucket;
        let w = self.events.iter().filter(|e| inside(e.0));
        let (mut failed, mut slow) = (false, false);
        for e in w {
            failed |= e.1;
            slow |= e.2;
        }
        (failed, slow)
    }
}

struct Harness {
    config: BreakerConfig,
    settings: Arc<BreakerSettings>,
    breaker: Breaker,
    model: Model,
    now: u64,
    /// Outcomes due: (time, admission, outcome, generation at admission).
    due: VecDeque<(u64, Admission, Outcome, u64)>,
    /// The current open episode's end (not forced), for "nothing admitted before".
    open_until: Option<u64>,
    forced_open: bool,
    forced_closed: bool,
    /// Probes admitted minus ignored probe outcomes in the current half-open episode.
    episode_probes: i64,
    violations: Vec<String>,
}

impl Harness {
    fn new(config: BreakerConfig, seed: u64) -> Self {
        let settings = Arc::new(config.validate(Duration::from_secs(2)).unwrap());
        Harness {
            breaker: Breaker::new(Arc::clone(&settings), Timestamp::ZERO, seed),
            config,
            settings,
            model: Model::default(),
            now: 0,
            due: VecDeque::new(),
            open_until: None,
            forced_open: false,
            forced_closed: false,
            episode_probes: 0,
            violations: Vec::new(),
        }
    }

    fn fail(&mut self, what: String) {
        self.violations
            .push(format!("t={}ms: {what}", self.now / MS));
    }

    /// Books every transition and checks the invariants that concern transitions.
    fn on_transitions(&mut self, ts: Vec<Transition>) {
        for t in ts {
            let at = t.at.as_nanos();
            if t.from == State::Closed && t.to == State::Open && t.reason.is_trigger() {
                let want = self.model.rules(&self.config, &self.settings, at);
                if t.rules != want || t.rules.primary().map(Rule::reason) != Some(t.reason) {
                    self.fail(format!(
                        "opening {:?} with rules {:?}; the naive window says {:?}",
                        t.reason, t.rules, want
                    ));
                }
                let (failed, slow) = self.model.has_failure(&self.settings, &self.config, at);
                let failure_reason = matches!(
                    t.reason,
                    TransitionReason::FailureThresholdExceeded
                        | TransitionReason::ErrorRateThresholdExceeded
                );
                if failure_reason && !failed {
                    self.fail(format!("{:?} from a window without failures", t.reason));
                }
                if t.reason == TransitionReason::LatencyThresholdExceeded {
                    if !slow {
                        self.fail("latency opening from a window without slow calls".into());
                    }
                    if want.contains(Rule::FailureThreshold) || want.contains(Rule::ErrorRate) {
                        self.fail("latency opening while a failure rule held".into());
                    }
                }
            }
            if t.to == State::Closed {
                self.model = Model::default();
            }
            self.model.run.clear();
            if t.to == State::HalfOpen {
                self.episode_probes = 0;
            }
            self.open_until = None;
        }
        let snap = self
            .breaker
            .snapshot(Timestamp::from_nanos(self.now), &mut |_| {});
        if snap.state == State::Open
            && let Some(rest) = snap.open_remaining
        {
            let until = self.now + rest.as_nanos() as u64;
            // An open episode's end never moves (late outcomes must not extend it).
            if let Some(before) = self.open_until
                && before != until
            {
                self.fail(format!("open deadline moved from {before} to {until}"));
            }
            self.open_until = Some(until);
        }
        if snap.consecutive_failures as usize > self.model.run.len() {
            self.fail(format!(
                "consecutive_failures {} but the run has {} failures",
                snap.consecutive_failures,
                self.model.run.len()
            ));
        }
        if snap.probes_in_flight > self.config.half_open_max_calls {
            self.fail(format!("{} probes in flight", snap.probes_in_flight));
        }
    }

    fn deliver_until(&mut self, t: u64) {
        while let Some(&(due, admission, outcome, generation)) = self.due.front() {
            if due > t {
                break;
            }
            self.due.pop_front();
            self.now = due;
            self.record(admission, outcome, generation);
        }
        self.now = t;
        let mut ts = Vec::new();
        self.breaker
            .state(Timestamp::from_nanos(t), &mut |x| ts.push(x));
        self.on_transitions(ts);
    }

    /// Applies the lazy transitions due now, booking them.
    fn sync(&mut self) {
        let mut ts = Vec::new();
        self.breaker
            .state(Timestamp::from_nanos(self.now), &mut |x| ts.push(x));
        self.on_transitions(ts);
    }

    fn record(&mut self, admission: Admission, outcome: Outcome, generation: u64) {
        let now = Timestamp::from_nanos(self.now);
        self.sync();
        let before = self.breaker.snapshot(now, &mut |_| {});
        let mut ts = Vec::new();
        let effect = self
            .breaker
            .record(admission, outcome, now, &mut |x| ts.push(x));
        let stale = before.generation != generation;
        match effect {
            RecordEffect::Stale => {
                if !ts.is_empty() {
                    self.fail(format!("a stale outcome moved the state: {ts:?}"));
                }
                if !stale {
                    self.fail("an outcome of the current generation was called stale".into());
                }
            }
            RecordEffect::Counted if stale => {
                self.fail("an outcome of an older generation was counted".into());
            }
            _ => {}
        }
        if effect == RecordEffect::Counted && before.state == State::Closed {
            let latency = self.now - admission.started().as_nanos();
            let slow = latency > self.config.latency_threshold_ms * MS;
            match outcome {
                Outcome::Success => {
                    self.model.events.push((self.now, false, slow));
                    self.model.run.clear();
                }
                Outcome::Failure(kind) => {
                    let slow = slow && kind != FailureKind::Timeout;
                    self.model.events.push((self.now, true, slow));
                    self.model.run.push(self.now);
                }
                Outcome::Ignored => {}
            }
        }
        if admission.is_probe() && outcome == Outcome::Ignored && effect == RecordEffect::Counted {
            self.episode_probes -= 1;
        }
        let opened = ts.iter().any(|t| t.to == State::Open);
        self.on_transitions(ts);
        // Completeness: a counted closed outcome that did not open left no rule holding.
        if effect == RecordEffect::Counted
            && before.state == State::Closed
            && before.forced.is_none()
            && !opened
            && outcome != Outcome::Ignored
        {
            let rules = self.model.rules(&self.config, &self.settings, self.now);
            if !rules.is_empty() {
                self.fail(format!(
                    "rules {rules:?} held but the breaker stayed closed"
                ));
            }
        }
        if outcome == Outcome::Success && effect == RecordEffect::Counted {
            let snap = self.breaker.snapshot(now, &mut |_| {});
            if snap.consecutive_failures != 0 {
                self.fail("a success did not reset the consecutive count".into());
            }
        }
    }

    fn call(&mut self, latency_ms: u64, reported: Reported) {
        let now = Timestamp::from_nanos(self.now);
        self.sync();
        let open_until = self.open_until;
        let mut ts = Vec::new();
        let peeked = self.breaker.peek(now, &mut |x| ts.push(x));
        let result = self.breaker.acquire(now, &mut |x| ts.push(x));
        self.on_transitions(ts);
        if peeked.is_some() != result.is_err() || peeked != result.err() {
            self.fail(format!(
                "peek said {peeked:?}, the acquire right after it {:?}",
                result.err()
            ));
        }
        let Ok(admission) = result else { return };
        let generation = self.breaker.snapshot(now, &mut |_| {}).generation;
        if let Some(until) = open_until
            && self.now < until
            && !self.forced_closed
        {
            self.fail(format!(
                "admitted while open, {} ms before its end",
                (until - self.now) / MS
            ));
        }
        if self.forced_open {
            self.fail("admitted while forced open".into());
        }
        if admission.is_probe() {
            self.episode_probes += 1;
            if self.episode_probes > i64::from(self.config.half_open_max_calls) {
                self.fail(format!(
                    "{} probes admitted in one episode",
                    self.episode_probes
                ));
            }
        }
        let outcome = match reported {
            Reported::Success => Outcome::Success,
            Reported::Failure => Outcome::Failure(FailureKind::BrokerError),
            Reported::Timeout => Outcome::Failure(FailureKind::Timeout),
            Reported::Ignored => Outcome::Ignored,
            Reported::Never => return,
        };
        let due = self.now + latency_ms * MS;
        let at = self.due.partition_point(|d| d.0 <= due);
        self.due.insert(at, (due, admission, outcome, generation));
    }

    fn admin(&mut self, op: &BreakerOp) {
        let now = Timestamp::from_nanos(self.now);
        let mut ts = Vec::new();
        let mut on = |x| ts.push(x);
        match op {
            BreakerOp::ForceOpen => {
                self.breaker.force_open(now, &mut on);
                self.forced_open = true;
                self.forced_closed = false;
            }
            BreakerOp::ForceClosed => {
                self.breaker.force_closed(now, &mut on);
                self.forced_closed = true;
                self.forced_open = false;
            }
            BreakerOp::Release => {
                self.breaker.release(now, &mut on);
                self.forced_open = false;
                self.forced_closed = false;
            }
            BreakerOp::Reset => {
                self.breaker.reset(now, &mut on);
                self.forced_open = false;
                self.forced_closed = false;
                self.model = Model::default();
            }
            _ => {}
        }
        if matches!(op, BreakerOp::ForceOpen) {
            // Held open: no timeout to respect (the admission check uses `forced_open`).
            self.open_until = None;
        }
        self.on_transitions(ts);
        if matches!(op, BreakerOp::ForceOpen) {
            self.open_until = None;
        }
    }

    /// Invariant 5, "never stuck": left alone for the longest open timeout plus a lease, an
    /// unforced breaker admits a call. Checked on a copy so the run goes on unchanged.
    fn check_not_stuck(&mut self) {
        if self.forced_open {
            return;
        }
        let mut copy = self.breaker.clone();
        let c = &self.config;
        let longest = (c.open_timeout_max_ms as f64 * (1.0 + c.open_timeout_jitter)) as u64
            + c.probe_lease_ms.unwrap_or(2000)
            + 2;
        // Up to two episodes may have to pass: a lease expiry re-opens, then the timeout ends.
        let later = Timestamp::from_nanos(self.now + 2 * longest * MS);
        if copy.acquire(later, &mut |_| {}).is_err() {
            let snap = copy.snapshot(later, &mut |_| {});
            self.fail(format!(
                "stuck: nothing admitted {} ms later: {snap:?}",
                2 * longest
            ));
        }
    }
}

proptest! {
    #![proptest_config(persisted(384))]

    #[test]
    fn breaker_matches_the_naive_model(
        config in config(),
        seed in any::<u64>(),
        ops in prop::collection::vec(breaker_op(), 1..160),
    ) {
        let mut h = Harness::new(config, seed);
        for op in &ops {
            match op {
                BreakerOp::Advance(ms) => {
                    let t = h.now + ms * MS;
                    h.deliver_until(t);
                }
                BreakerOp::Call(latency, reported) => h.call(*latency, *reported),
                BreakerOp::Read => {
                    let now = h.now;
                    h.deliver_until(now);
                }
                admin => h.admin(admin),
            }
            h.check_not_stuck();
            if !h.violations.is_empty() {
                break;
            }
        }
        prop_assert!(h.violations.is_empty(), "{:#?}\nconfig: {:?}", h.violations, h.config);
    }

    /// Invariant 4: a window of fast successes never opens the breaker.
    #[test]
    fn fast_successes_never_open(
        config in config(),
        calls in prop::collection::vec((0u64..500, 0u64..50), 1..300),
    ) {
        let threshold = config.latency_threshold_ms;
        let settings = Arc::new(config.validate(Duration::from_secs(2)).unwrap());
        let mut b = Breaker::new(settings, Timestamp::ZERO, 1);
        let mut now = 0;
        let mut transitions = Vec::new();
        for (gap, latency) in calls {
            now += gap * MS;
            let latency = latency.min(threshold);
            let admission = b.acquire(Timestamp::from_nanos(now), &mut |t| transitions.push(t));
            prop_assert!(admission.is_ok());
            if let Ok(a) = admission {
                b.record(a, Outcome::Success, Timestamp::from_nanos(now + latency * MS), &mut |t| transitions.push(t));
            }
        }
        prop_assert!(transitions.is_empty(), "{:?}", transitions);
    }

    /// Late outcomes (from an older generation) never move the state or the open deadline.
    #[test]
    fn late_outcomes_never_move_the_state(
        config in config(),
        failures in 1u32..20,
        late_success in any::<bool>(),
        wait_ms in 0u64..5000,
    ) {
        let settings = Arc::new(config.validate(Duration::from_secs(2)).unwrap());
        let mut b = Breaker::new(settings, Timestamp::ZERO, 7);
        let t0 = Timestamp::ZERO;
        let early = b.acquire(t0, &mut |_| {}).unwrap();
        // Force an opening (by the rules if they can, by an operator otherwise).
        let mut now = 0;
        for _ in 0..failures {
            now += MS;
            if let Ok(a) = b.acquire(Timestamp::from_nanos(now), &mut |_| {}) {
                b.record(a, Outcome::Failure(FailureKind::Connection), Timestamp::from_nanos(now), &mut |_| {});
            }
        }
        if b.state(Timestamp::from_nanos(now), &mut |_| {}) == State::Closed {
            b.force_open(Timestamp::from_nanos(now), &mut |_| {});
        }
        let at = Timestamp::from_nanos(now + wait_ms * MS);
        let before = b.snapshot(at, &mut |_| {});
        let mut ts = Vec::new();
        let outcome = if late_success { Outcome::Success } else { Outcome::Failure(FailureKind::Timeout) };
        let effect = b.record(early, outcome, at, &mut |t| ts.push(t));
        let after = b.snapshot(at, &mut |_| {});
        prop_assert_eq!(effect, RecordEffect::Stale);
        prop_assert!(ts.is_empty());
        prop_assert_eq!(before.state, after.state);
        prop_assert_eq!(before.open_remaining, after.open_remaining);
        prop_assert_eq!(before.generation, after.generation);
    }

    /// §4: the delay before any retry is finite, never negative and never above the cap;
    /// without jitter it is exactly min(base × 2^(n-1), max).
    #[test]
    fn backoff_stays_within_bounds_at_any_retry_number(
        base in 0u64..100_000,
        extra in 0u64..1_000_000,
        jitter in prop::sample::select(vec![0.0, 0.01, 0.2, 0.5, 1.0]),
        retry in any::<u32>(),
        seed in any::<u64>(),
    ) {
        let config = RetryConfig { base_ms: base, max_ms: base + extra, jitter, ..RetryConfig::default() };
        prop_assert!(config.validate().is_ok());
        let d = delay_before_retry(&config, retry, &mut SplitMix64::new(seed));
        prop_assert!(d <= Duration::from_millis(config.max_ms), "{:?}", d);
        if jitter == 0.0 {
            let doublings = retry.max(1) - 1;
            let raw = if doublings >= 64 { u128::MAX } else { u128::from(base) << doublings };
            let want = raw.min(u128::from(config.max_ms));
            prop_assert_eq!(d.as_millis(), want);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The registry's lock-free fast lane against the bare state machine.

/// Collects a registry's transitions.
#[derive(Default)]
struct Journal(std::sync::Mutex<Vec<Transition>>);

impl BreakerObserver for Journal {
    fn on_transition(&self, _key: &BreakerKey, t: &Transition) {
        self.0.lock().unwrap().push(*t);
    }
}

/// What a read shows, less `stats.admitted`: the registry counts a lock-free admission
/// when it reports, the bare machine when it is admitted.
fn observable(mut s: BreakerSnapshot) -> BreakerSnapshot {
    s.stats.admitted = 0;
    s
}

proptest! {
    #![proptest_config(persisted(256))]

    /// Through the registry (lock-free acquires, fast successes counted on the fast lane)
    /// a breaker decides, transitions and reports exactly as the bare machine does on the
    /// same calls at the same times, one thread.
    #[test]
    fn the_registry_fast_lane_changes_nothing_observable(
        config in config(),
        // Healthy stretches (fast successes) arm the lane; everything else disarms it.
        ops in prop::collection::vec(
            prop_oneof![
                3 => breaker_op(),
                2 => (0u64..50).prop_map(|l| BreakerOp::Call(l, Reported::Success)),
            ],
            1..200,
        ),
    ) {
        // The registry seeds each breaker's jitter from its key: no jitter, same timeouts.
        let config = BreakerConfig { open_timeout_jitter: 0.0, ..config };
        let settings = config.validate(Duration::from_secs(2)).unwrap();
        let registry = BreakerRegistry::new(settings.clone(), 1, 0, Journal::default());
        let key = BreakerKey::new(TenantId::try_new("t").unwrap(), ProviderId::try_new("p").unwrap());
        let handle = registry.handle(&key);
        let mut bare = Breaker::new(Arc::new(settings), Timestamp::ZERO, 0);
        let mut bare_ts = Vec::new();
        // Outcomes due: (time, order, registry permit, bare admission, outcome).
        let mut due: Vec<(u64, usize, Permit<'_, '_, Journal>, Admission, Outcome)> = Vec::new();
        let mut never = Vec::new();
        let mut now = 0u64;
        for (order, op) in ops.iter().enumerate() {
            let target = match op {
                BreakerOp::Advance(ms) => now + ms * MS,
                _ => now,
            };
            due.sort_by_key(|d| (d.0, d.1));
            while due.first().is_some_and(|d| d.0 <= target) {
                let (at, _, permit, admission, outcome) = due.remove(0);
                let at = Timestamp::from_nanos(at);
                let fast = permit.record(outcome, at);
                let slow = bare.record(admission, outcome, at, &mut |t| bare_ts.push(t));
                prop_assert_eq!(fast, slow, "record at {:?}", at);
            }
            now = target;
            let t = Timestamp::from_nanos(now);
            match op {
                BreakerOp::Advance(_) => {}
                BreakerOp::Call(latency, reported) => {
                    let fast = handle.acquire(t);
                    let slow = bare.acquire(t, &mut |x| bare_ts.push(x));
                    prop_assert_eq!(fast.is_ok(), slow.is_ok(), "acquire at {} ms", now / MS);
                    if let (Ok(permit), Ok(admission)) = (fast, slow) {
                        prop_assert_eq!(permit.is_probe(), admission.is_probe());
                        let outcome = match reported {
                            Reported::Success => Outcome::Success,
                            Reported::Failure => Outcome::Failure(FailureKind::BrokerError),
                            Reported::Timeout => Outcome::Failure(FailureKind::Timeout),
                            Reported::Ignored => Outcome::Ignored,
                            Reported::Never => {
                                never.push(permit);
                                continue;
                            }
                        };
                        due.push((now + latency * MS, order, permit, admission, outcome));
                    }
                }
                BreakerOp::Read => {
                    let fast = observable(handle.snapshot(t));
                    let slow = observable(bare.snapshot(t, &mut |x| bare_ts.push(x)));
                    prop_assert_eq!(fast, slow, "read at {} ms", now / MS);
                }
                BreakerOp::ForceOpen => {
                    handle.force_open(t);
                    bare.force_open(t, &mut |x| bare_ts.push(x));
                }
                BreakerOp::ForceClosed => {
                    handle.force_closed(t);
                    bare.force_closed(t, &mut |x| bare_ts.push(x));
                }
                BreakerOp::Release => {
                    handle.release(t);
                    bare.release(t, &mut |x| bare_ts.push(x));
                }
                BreakerOp::Reset => {
                    handle.reset(t);
                    bare.reset(t, &mut |x| bare_ts.push(x));
                }
            }
        }
        let t = Timestamp::from_nanos(now);
        prop_assert_eq!(
            observable(handle.snapshot(t)),
            observable(bare.snapshot(t, &mut |x| bare_ts.push(x)))
        );
        let fast_ts = registry.observer().0.lock().unwrap().clone();
        prop_assert_eq!(fast_ts, bare_ts);
        drop(never);
    }
}
