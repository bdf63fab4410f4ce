//! The discrete-event simulation behind [`super::replay`].
//!
//! Trace events and the consequences they schedule (a call's outcome at `t + latency`, a
//! retry attempt after its backoff, the end of an open timeout or a probe lease) share one
//! queue ordered by `(time, class, sequence)`. At one instant: outcomes first (they were
//! sent earlier and are already there), then timer wake-ups, then trace events in file
//! order, then retry attempts. A wake-up is a plain read of the breaker's state; it only
//! makes lazy transitions appear in the output at the instant they are stamped with,
//! and never changes a decision (every acquire and record applies them anyway).
//!
//! The replay ends with the last trace event or outcome; wake-ups past that are dropped,
//! and the time open of a breaker still open is counted up to that end.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;

use super::output::{
    AdminLine, Counters, Decision, DecisionLine, DelaysLine, Effect, ExecuteLine, KeyFields,
    Millis, OutcomeLine, OutputLine, ReadLine, ReplaySummary, RetryDelay, TransitionLine,
};
use super::trace::{AdminAction, AttemptScript, CallOutcome, Event, Op};
use super::{Limits, TraceError};
use crate::breaker::{
    Admission, Breaker, BreakerSettings, Forced, RecordEffect, State, Transition, TransitionReason,
};
use crate::keys::{BreakerKey, ProviderId};
use crate::outcome::{ErrorKind, Outcome};
use crate::retry::{
    AttemptResult, Cause, Next, RetryBudget, RetryPlan, RetrySettings, delay_before_retry,
};
use crate::rng::SplitMix64;
use crate::time::{Timestamp, duration_nanos};

#[derive(Debug)]
enum TaskKind {
    Trace(usize),
    Outcome {
        key: usize,
        id: String,
        admission: Admission,
        outcome: Outcome,
    },
    Wake {
        key: usize,
    },
    AttemptStart {
        exec: usize,
    },
    AttemptEnd {
        exec: usize,
        admission: Admission,
        result: AttemptScript,
    },
}

impl TaskKind {
    fn class(&self) -> u8 {
        match self {
            TaskKind::Outcome { .. } | TaskKind::AttemptEnd { .. } => 0,
            TaskKind::Wake { .. } => 1,
            TaskKind::Trace(_) | TaskKind::AttemptStart { .. } => 2,
        }
    }
}

#[derive(Debug)]
struct Task {
    t: u64,
    seq: u64,
    kind: TaskKind,
}

impl Task {
    fn order(&self) -> (u64, u8, u64) {
        (self.t, self.kind.class(), self.seq)
    }
}

impl PartialEq for Task {
    fn eq(&self, other: &Self) -> bool {
        self.order() == other.order()
    }
}
impl Eq for Task {}
impl PartialOrd for Task {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Task {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order().cmp(&other.order())
    }
}

#[derive(Debug)]
struct KeyState {
    key: BreakerKey,
    breaker: Breaker,
    fields: Option<KeyFields>,
    counters: Counters,
    open_since: Option<u64>,
}

#[derive(Debug)]
struct Pending {
    key: usize,
    line: usize,
    admission: Option<Admission>,
}

#[derive(Debug)]
struct Exec<'s> {
    id: String,
    key: usize,
    start: u64,
    plan: RetryPlan<'s>,
    script: Vec<AttemptScript>,
    latencies: Vec<u64>,
    attempt_starts: Vec<Millis>,
    delays: Vec<Millis>,
    last_error: Option<ErrorKind>,
}

/// Deterministic per-key seed: FNV-1a of the key mixed into the replay's seed.
fn key_seed(seed: u64, key: &BreakerKey) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key
        .tenant()
        .as_str()
        .bytes()
        .chain([b'/'])
        .chain(key.provider().as_str().bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    seed ^ h
}

pub(crate) struct Engine<'s> {
    settings: Arc<BreakerSettings>,
    retry: &'s RetrySettings,
    seed: u64,
    rng: SplitMix64,
    keys: Vec<KeyState>,
    budgets: HashMap<ProviderId, RetryBudget>,
    queue: BinaryHeap<Reverse<Task>>,
    next_seq: u64,
    scheduled: usize,
    max_scheduled: usize,
    real_tasks: usize,
    horizon: u64,
    pending: HashMap<String, Pending>,
    execs: Vec<Exec<'s>>,
    events: Vec<Event>,
    event_keys: Vec<usize>,
    lines: Vec<OutputLine>,
    requests: u64,
    requests_by_cause: BTreeMap<&'static str, u64>,
    retries: u64,
}

impl<'s> Engine<'s> {
    pub(crate) fn new(
        settings: Arc<BreakerSettings>,
        retry: &'s RetrySettings,
        seed: u64,
        mut events: Vec<Event>,
        limits: &Limits,
    ) -> Self {
        events.sort_by_key(|e| e.t_nanos); // stable: equal times keep file order
        let mut index: HashMap<BreakerKey, usize> = HashMap::new();
        let mut key_list: Vec<BreakerKey> = Vec::new();
        let event_keys = events
            .iter()
            .map(|e| {
                *index.entry(e.key.clone()).or_insert_with(|| {
                    key_list.push(e.key.clone());
                    key_list.len() - 1
                })
            })
            .collect();
        let named = key_list.len() > 1;
        let keys = key_list
            .into_iter()
            .map(|key| KeyState {
                key: key.clone(),
                breaker: Breaker::new(Arc::clone(&settings), Timestamp::ZERO, key_seed(seed, &key)),
                fields: named.then(|| KeyFields {
                    tenant: key.tenant().clone(),
                    provider: key.provider().clone(),
                }),
                counters: Counters::default(),
                open_since: None,
            })
            .collect();
        let mut engine = Engine {
            settings,
            retry,
            seed,
            rng: SplitMix64::new(seed),
            keys,
            budgets: HashMap::new(),
            queue: BinaryHeap::with_capacity(events.len()),
            next_seq: events.len() as u64,
            scheduled: 0,
            max_scheduled: limits.max_scheduled,
            real_tasks: 0,
            horizon: 0,
            pending: HashMap::new(),
            execs: Vec::new(),
            event_keys,
            events: Vec::new(),
            lines: Vec::new(),
            requests: 0,
            requests_by_cause: BTreeMap::new(),
            retries: 0,
        };
        for (i, e) in events.iter().enumerate() {
            engine.queue.push(Reverse(Task {
                t: e.t_nanos,
                seq: i as u64,
                kind: TaskKind::Trace(i),
            }));
        }
        engine.real_tasks = events.len();
        engine.events = events;
        engine
    }

    fn schedule(&mut self, t: u64, kind: TaskKind) -> Result<(), TraceError> {
        self.scheduled += 1;
        if self.scheduled > self.max_scheduled {
            return Err(TraceError::TooManyEvents {
                max: self.max_scheduled,
            });
        }
        if !matches!(kind, TaskKind::Wake { .. }) {
            self.real_tasks += 1;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push(Reverse(Task { t, seq, kind }));
        Ok(())
    }

    pub(crate) fn run(mut self) -> Result<(Vec<OutputLine>, ReplaySummary), TraceError> {
        while let Some(Reverse(task)) = self.queue.pop() {
            let wake = matches!(task.kind, TaskKind::Wake { .. });
            if wake && self.real_tasks == 0 {
                break;
            }
            if !wake {
                self.real_tasks -= 1;
                self.horizon = self.horizon.max(task.t);
            }
            self.process(task)?;
        }
        Ok(self.finish())
    }

    fn process(&mut self, task: Task) -> Result<(), TraceError> {
        let now = task.t;
        match task.kind {
            TaskKind::Trace(i) => self.trace_event(i, now),
            TaskKind::Outcome {
                key,
                id,
                admission,
                outcome,
            } => {
                self.record(key, id, None, admission, outcome, now)?;
                Ok(())
            }
            TaskKind::Wake { key } => {
                let mut ts = Vec::new();
                self.keys[key]
                    .breaker
                    .state(Timestamp::from_nanos(now), &mut |t| ts.push(t));
                self.after_transitions(key, &ts, now)
            }
            TaskKind::AttemptStart { exec } => self.start_attempt(exec, now),
            TaskKind::AttemptEnd {
                exec,
                admission,
                result,
            } => self.end_attempt(exec, admission, result, now),
        }
    }

    fn trace_event(&mut self, i: usize, now: u64) -> Result<(), TraceError> {
        let key = self.event_keys[i];
        let line = self.events[i].line;
        let op = std::mem::replace(&mut self.events[i].op, Op::State);
        let ts_now = Timestamp::from_nanos(now);
        match op {
            Op::Call {
                id,
                outcome,
                latency_nanos,
            } => {
                if let Some(admission) = self.acquire(key, &id, None, now)? {
                    match outcome {
                        CallOutcome::Never => self.keys[key].counters.unreported += 1,
                        CallOutcome::Report(outcome) => self.schedule(
                            now.saturating_add(latency_nanos),
                            TaskKind::Outcome {
                                key,
                                id,
                                admission,
                                outcome,
                            },
                        )?,
                    }
                }
            }
            Op::Acquire { id } => {
                if let Some(earlier) = self.pending.get(&id) {
                    return Err(TraceError::Line {
                        line,
                        message: format!(
                            "acquire `{id}` is still outstanding from line {}",
                            earlier.line
                        ),
                    });
                }
                let admission = self.acquire(key, &id, None, now)?;
                self.pending.insert(
                    id,
                    Pending {
                        key,
                        line,
                        admission,
                    },
                );
            }
            Op::Complete { id, outcome } => {
                let Some(pending) = self.pending.remove(&id) else {
                    return Err(TraceError::Line {
                        line,
                        message: format!("complete `{id}` has no earlier acquire"),
                    });
                };
                if self.events[i].explicit_key && pending.key != key {
                    return Err(TraceError::Line {
                        line,
                        message: format!(
                            "complete `{id}` names another key than its acquire (line {})",
                            pending.line
                        ),
                    });
                }
                if let Some(admission) = pending.admission {
                    self.record(pending.key, id, None, admission, outcome, now)?;
                }
            }
            Op::State => {
                let mut ts = Vec::new();
                let snapshot = self.keys[key].breaker.snapshot(ts_now, &mut |t| ts.push(t));
                self.after_transitions(key, &ts, now)?;
                self.lines.push(OutputLine::Read(ReadLine {
                    t: Millis(now),
                    state: snapshot.state,
                    open_remaining_ms: snapshot.open_remaining.map(|d| Millis(duration_nanos(d))),
                    forced: snapshot.forced.map(|f| match f {
                        Forced::Open => "open",
                        Forced::Closed => "closed",
                    }),
                    window: snapshot.window,
                    consecutive_failures: snapshot.consecutive_failures,
                    probe_successes: snapshot.probe_successes,
                    key: self.keys[key].fields.clone(),
                }));
            }
            Op::Admin(action) => {
                let mut ts = Vec::new();
                let b = &mut self.keys[key].breaker;
                let mut on = |t| ts.push(t);
                match action {
                    AdminAction::ForceOpen => b.force_open(ts_now, &mut on),
                    AdminAction::ForceClosed => b.force_closed(ts_now, &mut on),
                    AdminAction::Release => b.release(ts_now, &mut on),
                    AdminAction::Reset => b.reset(ts_now, &mut on),
                }
                let state = b.state(ts_now, &mut on);
                self.after_transitions(key, &ts, now)?;
                self.lines.push(OutputLine::Admin(AdminLine {
                    t: Millis(now),
                    admin: action.as_str(),
                    state,
                    key: self.keys[key].fields.clone(),
                }));
            }
            Op::Execute {
                id,
                attempts,
                latencies_nanos,
            } => {
                self.requests += 1;
                let provider = self.events[i].key.provider().clone();
                let config = self.retry.config();
                self.budgets
                    .entry(provider)
                    .or_insert_with(|| {
                        RetryBudget::new(config.budget_percent, config.budget_min_per_sec)
                    })
                    .deposit(ts_now);
                self.execs.push(Exec {
                    id,
                    key,
                    start: now,
                    plan: RetryPlan::start(self.retry, ts_now),
                    script: attempts,
                    latencies: latencies_nanos,
                    attempt_starts: Vec::new(),
                    delays: Vec::new(),
                    last_error: None,
                });
                self.start_attempt(self.execs.len() - 1, now)?;
            }
            Op::Delays { retries, seed } => {
                let seed = seed.unwrap_or(self.seed);
                let mut rng = SplitMix64::new(seed);
                let delays = retries
                    .into_iter()
                    .map(|retry| RetryDelay {
                        retry,
                        delay_ms: Millis(duration_nanos(delay_before_retry(
                            self.retry.config(),
                            retry,
                            &mut rng,
                        ))),
                    })
                    .collect();
                self.lines.push(OutputLine::Delays(DelaysLine {
                    t: Millis(now),
                    delays,
                    seed,
                }));
            }
        }
        Ok(())
    }

    /// One acquire: prints the decision, returns the admission.
    fn acquire(
        &mut self,
        key: usize,
        id: &str,
        attempt: Option<u32>,
        now: u64,
    ) -> Result<Option<Admission>, TraceError> {
        let mut ts = Vec::new();
        let k = &mut self.keys[key];
        let result = k
            .breaker
            .acquire(Timestamp::from_nanos(now), &mut |t| ts.push(t));
        self.after_transitions(key, &ts, now)?;
        let k = &mut self.keys[key];
        k.counters.calls += 1;
        let mut ts = Vec::new();
        let state = k
            .breaker
            .state(Timestamp::from_nanos(now), &mut |t| ts.push(t));
        let (decision, probe, admission) = match result {
            Ok(admission) => {
                k.counters.allowed += 1;
                if admission.is_probe() {
                    k.counters.probes += 1;
                }
                (Decision::Allowed, admission.is_probe(), Some(admission))
            }
            Err(_) => {
                k.counters.rejected += 1;
                (Decision::Rejected, false, None)
            }
        };
        self.lines.push(OutputLine::Decision(DecisionLine {
            t: Millis(now),
            id: id.to_string(),
            attempt,
            decision,
            state,
            probe,
            key: self.keys[key].fields.clone(),
        }));
        if probe {
            let lease_end = now.saturating_add(self.settings.probe_lease_nanos);
            self.schedule(lease_end, TaskKind::Wake { key })?;
        }
        Ok(admission)
    }

    fn record(
        &mut self,
        key: usize,
        id: String,
        attempt: Option<u32>,
        admission: Admission,
        outcome: Outcome,
        now: u64,
    ) -> Result<(), TraceError> {
        let mut ts = Vec::new();
        let k = &mut self.keys[key];
        let effect = k
            .breaker
            .record(admission, outcome, Timestamp::from_nanos(now), &mut |t| {
                ts.push(t)
            });
        match outcome {
            Outcome::Success => k.counters.successes += 1,
            Outcome::Failure(_) => {
                k.counters.failures += 1;
                k.counters.first_failure_ms.get_or_insert(Millis(now));
            }
            Outcome::Ignored => k.counters.ignored += 1,
        }
        let effect = match effect {
            RecordEffect::Counted => Effect::Counted,
            RecordEffect::Stale => {
                k.counters.stale += 1;
                Effect::Stale
            }
            RecordEffect::Unchecked => Effect::Unchecked,
        };
        self.lines.push(OutputLine::Outcome(OutcomeLine {
            t: Millis(now),
            id,
            attempt,
            outcome: outcome.as_str(),
            latency_ms: Millis(now.saturating_sub(admission.started().as_nanos())),
            effect,
            key: self.keys[key].fields.clone(),
        }));
        self.after_transitions(key, &ts, now)
    }

    /// Prints transitions, keeps the books, and sets a wake-up at the end of an open
    /// timeout.
    fn after_transitions(
        &mut self,
        key: usize,
        ts: &[Transition],
        now: u64,
    ) -> Result<(), TraceError> {
        if ts.is_empty() {
            return Ok(());
        }
        let k = &mut self.keys[key];
        let mut scratch = Vec::new();
        let snapshot = k
            .breaker
            .snapshot(Timestamp::from_nanos(now), &mut |t| scratch.push(t));
        let open_until_now = snapshot
            .open_remaining
            .map(|d| now.saturating_add(duration_nanos(d)));
        for (i, t) in ts.iter().enumerate() {
            let at = t.at.as_nanos();
            let c = &mut k.counters;
            c.transitions += 1;
            if t.from == State::Open
                && let Some(since) = k.open_since.take()
            {
                c.time_open_ms = Millis(c.time_open_ms.0 + at.saturating_sub(since));
            }
            let mut open_until = None;
            if t.to == State::Open {
                c.openings += 1;
                *c.openings_by_reason.entry(t.reason.as_str()).or_default() += 1;
                if t.reason.is_trigger() {
                    c.first_opening_ms.get_or_insert(Millis(at));
                }
                k.open_since = Some(at);
                open_until = match ts.get(i + 1) {
                    Some(next) if next.reason == TransitionReason::TimeoutElapsed => {
                        Some(Millis(next.at.as_nanos()))
                    }
                    None => open_until_now.map(Millis),
                    Some(_) => None,
                };
            }
            self.lines.push(OutputLine::Transition(TransitionLine {
                t: Millis(at),
                transition: format!("{}->{}", t.from.as_str(), t.to.as_str()),
                reason: t.reason,
                rules: t.rules,
                open_until,
                key: k.fields.clone(),
            }));
        }
        if let Some(until) = open_until_now {
            self.schedule(until, TaskKind::Wake { key })?;
        }
        Ok(())
    }

    fn start_attempt(&mut self, exec: usize, now: u64) -> Result<(), TraceError> {
        let ts_now = Timestamp::from_nanos(now);
        let Some(timeout) = self.execs[exec].plan.begin_attempt(ts_now) else {
            return self.finish_exec(exec, Cause::DeadlineExceeded, now);
        };
        let e = &mut self.execs[exec];
        let n = e.plan.attempts();
        e.attempt_starts.push(Millis(now));
        let (key, id) = (e.key, e.id.clone());
        let Some(admission) = self.acquire(key, &id, Some(n), now)? else {
            let next = self.execs[exec].plan.after_attempt(
                AttemptResult::Rejected,
                ts_now,
                &mut self.rng,
                || false,
            );
            let cause = match next {
                Next::Stop(cause) => cause,
                Next::RetryAfter(_) => Cause::CircuitOpen,
            };
            return self.finish_exec(exec, cause, now);
        };
        let e = &self.execs[exec];
        let pick = |len: usize| (n as usize).saturating_sub(1).min(len.saturating_sub(1));
        let scripted = e.script[pick(e.script.len())];
        let latency = e.latencies[pick(e.latencies.len())];
        let timeout = duration_nanos(timeout);
        let (end, result) = if latency > timeout {
            (now.saturating_add(timeout), Some(ErrorKind::Timeout))
        } else {
            (now.saturating_add(latency), scripted)
        };
        self.schedule(
            end,
            TaskKind::AttemptEnd {
                exec,
                admission,
                result,
            },
        )
    }

    fn end_attempt(
        &mut self,
        exec: usize,
        admission: Admission,
        result: AttemptScript,
        now: u64,
    ) -> Result<(), TraceError> {
        let ts_now = Timestamp::from_nanos(now);
        let outcome = result.map_or(Outcome::Success, ErrorKind::breaker_outcome);
        let (key, id, n) = {
            let e = &self.execs[exec];
            (e.key, e.id.clone(), e.plan.attempts())
        };
        self.record(key, id, Some(n), admission, outcome, now)?;
        let provider = self.keys[key].key.provider().clone();
        let Engine {
            execs,
            rng,
            budgets,
            ..
        } = self;
        let e = &mut execs[exec];
        e.last_error = result;
        let attempt = match result {
            None => AttemptResult::Success,
            Some(kind) => AttemptResult::Failed(kind),
        };
        let budget = budgets.get_mut(&provider);
        let next = e.plan.after_attempt(attempt, ts_now, rng, || {
            budget.is_none_or(|b| b.try_withdraw(ts_now))
        });
        match next {
            Next::RetryAfter(delay) => {
                let d = duration_nanos(delay);
                e.delays.push(Millis(d));
                self.retries += 1;
                self.schedule(now.saturating_add(d), TaskKind::AttemptStart { exec })
            }
            Next::Stop(cause) => self.finish_exec(exec, cause, now),
        }
    }

    fn finish_exec(&mut self, exec: usize, cause: Cause, now: u64) -> Result<(), TraceError> {
        let e = &mut self.execs[exec];
        *self.requests_by_cause.entry(cause.as_str()).or_default() += 1;
        let result = match cause {
            Cause::Succeeded => "success",
            Cause::CircuitOpen => "rejected",
            _ => "failure",
        };
        let line = ExecuteLine {
            t: Millis(e.start),
            id: std::mem::take(&mut e.id),
            attempt_starts: std::mem::take(&mut e.attempt_starts),
            delays: std::mem::take(&mut e.delays),
            result,
            cause: cause.as_str(),
            error: match cause {
                Cause::Succeeded | Cause::CircuitOpen => None,
                _ => e.last_error.map(ErrorKind::as_str),
            },
            end: Millis(now),
            key: self.keys[e.key].fields.clone(),
        };
        e.script = Vec::new();
        e.latencies = Vec::new();
        self.lines.push(OutputLine::Execute(line));
        Ok(())
    }

    fn finish(mut self) -> (Vec<OutputLine>, ReplaySummary) {
        for p in self.pending.values() {
            if p.admission.is_some() {
                self.keys[p.key].counters.unreported += 1;
            }
        }
        let mut summary = ReplaySummary {
            requests: self.requests,
            requests_by_cause: self.requests_by_cause,
            retries: self.retries,
            keys: self.keys.len(),
            end_ms: Millis(self.horizon),
            ..Default::default()
        };
        for k in &mut self.keys {
            if let Some(since) = k.open_since.take() {
                let c = &mut k.counters;
                c.time_open_ms = Millis(c.time_open_ms.0 + self.horizon.saturating_sub(since));
            }
            let c = &mut k.counters;
            c.time_to_first_opening_ms = match (c.first_failure_ms, c.first_opening_ms) {
                (Some(f), Some(o)) if f <= o => Some(Millis(o.0 - f.0)),
                _ => None,
            };
            summary.totals.add(c);
            if let Some(fields) = &k.fields {
                summary
                    .per_key
                    .insert(format!("{}/{}", fields.tenant, fields.provider), c.clone());
            }
        }
        (self.lines, summary)
    }
}
