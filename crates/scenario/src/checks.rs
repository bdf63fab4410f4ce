//! The checks: measured stats, the generic R10 assertions every scenario gets, the file's
//! expectations, and the timeline the charts draw.
//!
//! Generic assertions (DESIGN.md §3, §4; their names are stable):
//! - attempts per request ≤ `max_attempts` (the `attempts` field of every answer);
//! - inter-attempt delays within the jittered backoff: the gap between two attempt starts
//!   (`attempt_offsets_ms`) is the attempt's own duration plus the delay, so it must lie in
//!   `[d_lo + a_lo − 1 ms, d_hi + a_hi + slack]` where `d` is the jittered, capped delay
//!   before that retry and `a` the duration the phase's fault gives an attempt (an error:
//!   0; a hang: exactly the attempt timeout; a delay: the delay; no fault: up to the
//!   attempt timeout). For a hang this also proves every attempt was cut at the timeout;
//! - no request past its deadline: every answer's latency, measured by the client (an
//!   upper bound of the router's own), ≤ `total_deadline_ms` + slack, and no attempt starts
//!   at or after the deadline;
//! - no broker traffic while open: no attempt in the broker-side journal starts inside an
//!   open period of its key, except within `opening_grace_ms` of the opening (attempts
//!   admitted just before the opening reach the broker's journal just after it: admission
//!   and journal entry are not one atomic step);
//! - probes per half-open episode ≤ `half_open_max_calls`;
//! - half-open after the open timeout: every `timeout_elapsed` transition comes
//!   `open_timeout × 2^(n−1)` (capped) `× (1 ± jitter)` after the `n`th opening since the
//!   last close;
//! - closed only by probes: every half-open → closed is `success_threshold_reached` with at
//!   least `success_threshold` probes in the episode (a probe starting within
//!   `opening_grace_ms` after the closing instant counts: that instant is the closing
//!   attempt's end, read before the breaker's lock, so under load a probe admitted just
//!   before the close can carry a later start);
//! - `/metrics` reports the journal's latest trigger reason for every key that opened;
//! - rejections counted in `/metrics` ≥ `503 circuit_open` answers;
//! - nothing acknowledged lost or duplicated: every message answered 200 (or 202 and then
//!   drained) is in the broker's read-back exactly once, over all the scenario's providers;
//! - in order per key: a client's accepted messages to one key are stored in the order it
//!   sent them.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use beamline_broker::faults::Fault;
use beamline_core::breaker::BreakerConfig;
use beamline_core::retry::RetryConfig;
use beamline_metrics::{Snapshot, r10};

use crate::analysis::{
    Period, attempts_in, bucket_ms, delay_bounds_ms, of_key, open_period_bounds_us, periods,
    rate_per_sec, spread,
};
use crate::client::{AttemptRecord, TransitionRecord};
use crate::load::{RequestRecord, quantile};
use crate::report::{AssertionKind, Lane, ScenarioReport, Segment, Series, Span, Timeline};
use crate::scenarios::Keys;
use crate::spec::ScenarioSpec;

/// A phase's span, router clock µs.
#[derive(Clone, Debug)]
pub struct PhaseWindow {
    /// Phase name.
    pub name: String,
    /// Start.
    pub from_us: u64,
    /// End.
    pub to_us: u64,
}

/// A fault's span, router clock µs.
#[derive(Clone, Debug)]
pub struct FaultWindow {
    /// Index of the phase that set it.
    pub phase: usize,
    /// Provider id.
    pub provider: String,
    /// Tenant id, when tenant-scoped.
    pub tenant: Option<String>,
    /// The fault.
    pub fault: Fault,
    /// Label for charts.
    pub label: String,
    /// Set at.
    pub from_us: u64,
    /// Cleared at.
    pub to_us: u64,
}

/// Everything a scenario run measured.
#[derive(Debug)]
pub struct Collected<'a> {
    /// The scenario.
    pub spec: &'a ScenarioSpec,
    /// Its keys.
    pub keys: &'a Keys,
    /// Breaker settings in force.
    pub breaker: &'a BreakerConfig,
    /// Retry settings in force.
    pub retry: &'a RetryConfig,
    /// `embedded` or `nats`.
    pub broker: &'a str,
    /// Scenario start, router µs.
    pub start_us: u64,
    /// Scenario end.
    pub end_us: u64,
    /// Phases.
    pub phases: Vec<PhaseWindow>,
    /// Faults.
    pub faults: Vec<FaultWindow>,
    /// Every request.
    pub records: Vec<RequestRecord>,
    /// Transitions of the scenario's keys.
    pub transitions: Vec<TransitionRecord>,
    /// Broker-side attempts of the scenario's keys.
    pub attempts: Vec<AttemptRecord>,
    /// Stored message ids per provider id, in stream order.
    pub stored: HashMap<String, Vec<String>>,
    /// `/metrics` before.
    pub before: Snapshot,
    /// `/metrics` after.
    pub after: Snapshot,
}

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

fn is_rejected(r: &RequestRecord) -> bool {
    r.response.status == 503 && r.response.code() == "circuit_open"
}

fn is_accepted(r: &RequestRecord) -> bool {
    matches!(r.response.status, 200 | 202)
}

fn p_ms(values: &mut [Duration], q: f64) -> f64 {
    quantile(values, q).as_secs_f64() * 1e3
}

/// The range of time one attempt of `fault` takes, in ms.
fn attempt_range_ms(fault: Option<&Fault>, timeout_ms: f64) -> (f64, f64) {
    match fault {
        None | Some(Fault::CloseConnection {}) => (0.0, timeout_ms),
        Some(Fault::Error { .. }) => (0.0, 0.0),
        Some(Fault::Timeout {}) => (timeout_ms, timeout_ms),
        Some(Fault::Delay { ms }) => {
            let d = (*ms as f64).min(timeout_ms);
            (d, d)
        }
        Some(Fault::Intermittent { fault, .. }) => {
            (0.0, attempt_range_ms(Some(fault), timeout_ms).1)
        }
    }
}

impl Collected<'_> {
    fn key_pairs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for p in self.keys.provider_ids() {
            for t in &self.keys.tenants {
                out.push((t.clone(), p.clone()));
            }
        }
        out
    }

    fn first_fault_us(&self) -> Option<u64> {
        self.faults.iter().map(|f| f.from_us).min()
    }

    /// The fault that applied to a record's attempts (most specific rule of its phase).
    fn fault_of(&self, r: &RequestRecord) -> Option<&Fault> {
        let provider = if r.provider().is_empty() {
            self.spec
                .phase_provider(&self.spec.phases[r.phase])
                .map(|p| self.keys.provider(p))
                .unwrap_or_default()
        } else {
            r.provider().to_owned()
        };
        let of_phase = self
            .faults
            .iter()
            .filter(|f| f.phase == r.phase && f.provider == provider);
        let mut wide = None;
        for f in of_phase {
            match &f.tenant {
                Some(t) if *t == r.tenant => return Some(&f.fault),
                Some(_) => {}
                None => wide = Some(&f.fault),
            }
        }
        wide
    }

    fn rule_openings(&self) -> Vec<&TransitionRecord> {
        self.transitions
            .iter()
            .filter(|t| t.from == "closed" && t.to == "open")
            .collect()
    }
}

/// Computes stats, runs every check, fills the report's assertions, numbers and timeline.
pub fn evaluate(c: &Collected<'_>, report: &mut ScenarioReport) {
    phase_stats(c, report);
    scenario_stats(c, report);
    generic_checks(c, report);
    expectations(c, report);
    report.timeline = timeline(c);
}

fn phase_stats(c: &Collected<'_>, report: &mut ScenarioReport) {
    for (i, phase) in c.phases.iter().enumerate() {
        let recs: Vec<&RequestRecord> = c.records.iter().filter(|r| r.phase == i).collect();
        let n = recs.len();
        let count = |f: &dyn Fn(&RequestRecord) -> bool| recs.iter().filter(|r| f(r)).count();
        let ok = count(&|r| r.response.status == 200);
        let queued = count(&|r| r.response.status == 202);
        let rejected = count(&is_rejected);
        let failed = count(&|r| r.response.status == 502);
        let deadline = count(&|r| r.response.status == 504);
        let other = n - ok - queued - rejected - failed - deadline;
        let ratio = |x: usize| if n == 0 { 0.0 } else { x as f64 / n as f64 };
        let mut all: Vec<Duration> = recs.iter().map(|r| r.response.latency).collect();
        let mut rej: Vec<Duration> = recs
            .iter()
            .filter(|r| is_rejected(r))
            .map(|r| r.response.latency)
            .collect();
        let mut published: Vec<Duration> = recs
            .iter()
            .filter(|r| r.response.status == 200)
            .map(|r| r.response.latency)
            .collect();
        let mut shed: Vec<Duration> = recs
            .iter()
            .filter(|r| is_rejected(r) || r.response.status == 202)
            .map(|r| r.response.latency)
            .collect();
        let attempts = c
            .attempts
            .iter()
            .filter(|a| a.at_us >= phase.from_us && a.at_us < phase.to_us)
            .count();
        let name = &phase.name;
        let mut put = |stat: &str, v: f64| report.stat(&format!("{name}.{stat}"), v);
        put("requests", n as f64);
        put("ok", ok as f64);
        put("queued", queued as f64);
        put("rejected", rejected as f64);
        put("shed", (rejected + queued) as f64);
        put("failed", failed as f64);
        put("deadline_exceeded", deadline as f64);
        put("other", other as f64);
        put("ok_ratio", ratio(ok));
        put("accepted_ratio", ratio(ok + queued));
        put("p50_ms", p_ms(&mut all, 0.5));
        put("p99_ms", p_ms(&mut all, 0.99));
        put("max_ms", p_ms(&mut all, 1.0));
        put("ok_p50_ms", p_ms(&mut published, 0.5));
        put("rejected_p99_ms", p_ms(&mut rej, 0.99));
        put("shed_p99_ms", p_ms(&mut shed, 0.99));
        put("broker_attempts", attempts as f64);
        put(
            "attempts_per_request",
            if n == 0 {
                0.0
            } else {
                attempts as f64 / n as f64
            },
        );
        put(
            "max_attempts",
            recs.iter()
                .map(|r| r.response.attempts())
                .max()
                .unwrap_or(0) as f64,
        );
        put(
            "duration_ms",
            (phase.to_us.saturating_sub(phase.from_us)) as f64 / 1000.0,
        );
        for (pname, pid) in &c.keys.providers {
            let routed = recs
                .iter()
                .filter(|r| r.response.status == 200 && r.provider() == pid)
                .count();
            put(&format!("routed.{pname}"), ratio(routed));
        }
        if n > 0 {
            let mut others: BTreeMap<String, usize> = BTreeMap::new();
            for r in recs
                .iter()
                .filter(|r| !matches!(r.response.status, 200 | 202 | 502 | 504) && !is_rejected(r))
            {
                *others
                    .entry(format!("{} {}", r.response.status, r.response.code()))
                    .or_default() += 1;
            }
            let extra: String = others.iter().map(|(k, v)| format!(", {v} × {k}")).collect();
            report.number(
                &format!("phase {name}"),
                format!(
                    "{n} requests: {ok} published, {queued} queued, {rejected} circuit_open, {failed} failed, {deadline} deadline_exceeded{extra}; latency p50 {:.1} / p99 {:.1} ms; {attempts} broker attempts",
                    p_ms(&mut all, 0.5),
                    p_ms(&mut all, 0.99)
                ),
            );
        }
    }
}

/// Per key: the first rule opening at/after `from`, and the first `timeout_elapsed`
/// half-open after it.
fn first_cycle<'a>(
    ts: &[&'a TransitionRecord],
    from: u64,
) -> Option<(&'a TransitionRecord, Option<&'a TransitionRecord>)> {
    let i = ts
        .iter()
        .position(|t| t.from == "closed" && t.to == "open" && t.at_us >= from)?;
    let half = ts[i + 1..]
        .iter()
        .find(|t| t.to == "half_open" && t.reason == r10::TIMEOUT_ELAPSED)
        .copied();
    Some((ts[i], half))
}

fn scenario_stats(c: &Collected<'_>, report: &mut ScenarioReport) {
    let pairs = c.key_pairs();
    let fault_at = c.first_fault_us().unwrap_or(c.start_us);
    let mut opened = 0usize;
    let mut closed_at_end = 0usize;
    let mut first_open: Option<u64> = None;
    let mut half_at = Vec::new();
    let mut open_for = Vec::new();
    let mut first_probe = Vec::new();
    let mut max_probes = 0usize;
    for (t, p) in &pairs {
        let ts = of_key(&c.transitions, t, p);
        for period in periods(&ts, "half_open") {
            max_probes = max_probes.max(attempts_in(&c.attempts, t, p, &period, 0).len());
        }
        let Some((open, half)) = first_cycle(&ts, fault_at) else {
            continue;
        };
        opened += 1;
        let since_fault = open.at_us.saturating_sub(fault_at);
        first_open = Some(first_open.map_or(since_fault, |f: u64| f.min(since_fault)));
        if ts.last().is_some_and(|l| l.to == "closed") {
            closed_at_end += 1;
        }
        if let Some(h) = half {
            half_at.push(h.at_us);
            open_for.push(h.at_us - open.at_us);
            let idx = ts.iter().position(|x| std::ptr::eq(*x, h)).unwrap_or(0);
            let period = periods(&ts, "half_open")
                .into_iter()
                .find(|p| p.entered_by == idx);
            if let Some(period) = period
                && let Some(a) = attempts_in(&c.attempts, t, p, &period, 0).first()
            {
                first_probe.push(a.at_us);
            }
        }
    }
    let jitter_window_us =
        2.0 * c.breaker.open_timeout_jitter * c.breaker.open_timeout_ms as f64 * 1000.0;
    let acknowledged = c.records.iter().filter(|r| is_accepted(r)).count();
    let queued = c
        .records
        .iter()
        .filter(|r| r.response.status == 202)
        .count();
    let (missing, duplicated, stored_total) = stored_counts(c);
    let out_of_order = order_violations(c);
    let depth: f64 = pairs
        .iter()
        .map(|(t, p)| {
            beamline_metrics::r11::depth(&c.after, &[("tenant_id", t), ("provider_id", p)])
        })
        .sum();
    let mut put = |k: &str, v: f64| report.stat(k, v);
    put("keys", pairs.len() as f64);
    put("keys_opened", opened as f64);
    put(
        "keys_opened_fraction",
        opened as f64 / c.keys.tenants.len().max(1) as f64,
    );
    put("openings", c.rule_openings().len() as f64);
    if let Some(f) = first_open {
        put("first_open_ms", f as f64 / 1000.0);
    }
    put("keys_closed_at_end", closed_at_end as f64);
    put("max_probes_per_episode", max_probes as f64);
    put("half_open_spread_ms", spread(&half_at) as f64 / 1000.0);
    put("open_duration_spread_ms", spread(&open_for) as f64 / 1000.0);
    put(
        "half_open_spread_jitter_fraction",
        if jitter_window_us > 0.0 {
            spread(&open_for) as f64 / jitter_window_us
        } else {
            0.0
        },
    );
    put(
        "first_probe_spread_ms",
        spread(&first_probe) as f64 / 1000.0,
    );
    put("acknowledged", acknowledged as f64);
    put("queued", queued as f64);
    put("stored", stored_total as f64);
    put("missing", missing as f64);
    put("duplicated", duplicated as f64);
    put("out_of_order", out_of_order as f64);
    put("outbox_depth_end", depth);
    if let Some(f) = first_open {
        report.number("fault to first opening", ms(f));
    }
    if opened > 1 {
        report.number(
            "spread of open periods across keys",
            format!(
                "{} (jitter window {})",
                ms(spread(&open_for)),
                ms(jitter_window_us as u64)
            ),
        );
    }
}

/// (acknowledged but missing, stored more than once, stored in total).
fn stored_counts(c: &Collected<'_>) -> (usize, usize, usize) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let mut total = 0;
    for ids in c.stored.values() {
        total += ids.len();
        for id in ids {
            *counts.entry(id.as_str()).or_default() += 1;
        }
    }
    let missing = c
        .records
        .iter()
        .filter(|r| is_accepted(r) && !counts.contains_key(r.message_id.as_str()))
        .count();
    let duplicated = counts.values().filter(|n| **n > 1).count();
    (missing, duplicated, total)
}

/// A client's accepted messages to one key stored out of the order it sent them.
fn order_violations(c: &Collected<'_>) -> usize {
    let mut position: HashMap<&str, (&str, usize)> = HashMap::new();
    for (subject, ids) in &c.stored {
        for (i, id) in ids.iter().enumerate() {
            position.entry(id.as_str()).or_insert((subject.as_str(), i));
        }
    }
    let mut last: HashMap<(usize, &str, &str), usize> = HashMap::new();
    let mut ordered: Vec<&RequestRecord> = c.records.iter().filter(|r| is_accepted(r)).collect();
    ordered.sort_by_key(|r| (r.client, r.phase, r.seq));
    let mut violations = 0;
    for r in ordered {
        let Some((subject, pos)) = position.get(r.message_id.as_str()) else {
            continue;
        };
        let k = (r.client, r.tenant.as_str(), *subject);
        if let Some(prev) = last.get(&k)
            && pos < prev
        {
            violations += 1;
        }
        last.insert(k, *pos);
    }
    violations
}

fn generic_checks(c: &Collected<'_>, report: &mut ScenarioReport) {
    let g = AssertionKind::Generic;
    let tol = &c.spec.tolerances;
    let slack = tol.timing_slack_ms as f64;
    let max_attempts = c.retry.max_attempts;

    // Attempts per request.
    let worst = c
        .records
        .iter()
        .map(|r| r.response.attempts())
        .max()
        .unwrap_or(0);
    report.check(
        g,
        "attempts per request <= max_attempts",
        worst <= max_attempts,
        format!("max {worst}"),
        max_attempts,
    );

    // Inter-attempt delays.
    let timeout = c.retry.attempt_timeout_ms as f64;
    let (mut gaps, mut bad, mut worst_bad) = (0usize, 0usize, None::<String>);
    let (mut min_gap, mut max_gap) = (f64::MAX, 0f64);
    for r in &c.records {
        let offsets = r.response.attempt_offsets_ms();
        if offsets.len() < 2 {
            continue;
        }
        let (a_lo, a_hi) = attempt_range_ms(c.fault_of(r), timeout);
        for (i, pair) in offsets.windows(2).enumerate() {
            let gap = pair[1] as f64 - pair[0] as f64;
            let (d_lo, d_hi) = delay_bounds_ms(c.retry, i as u32 + 1);
            let (lo, hi) = (a_lo + d_lo - 1.0, a_hi + d_hi + slack);
            gaps += 1;
            min_gap = min_gap.min(gap);
            max_gap = max_gap.max(gap);
            if gap < lo || gap > hi {
                bad += 1;
                worst_bad.get_or_insert_with(|| {
                    format!(
                        "{}: gap {gap:.0} ms before retry {}, allowed {lo:.0}..={hi:.0}",
                        r.message_id,
                        i + 1
                    )
                });
            }
        }
    }
    report.check(
        g,
        "inter-attempt delays within the jittered backoff",
        bad == 0,
        if gaps == 0 {
            "no request retried".to_owned()
        } else if bad == 0 {
            format!("{gaps} gaps, {min_gap:.0}..={max_gap:.0} ms")
        } else {
            format!(
                "{bad} of {gaps} gaps outside; first: {}",
                worst_bad.unwrap_or_default()
            )
        },
        format!(
            "attempt time + base {} ms x 2^(n-1) (cap {} ms) x (1 ± {}), + {slack:.0} ms slack",
            c.retry.base_ms, c.retry.max_ms, c.retry.jitter
        ),
    );

    // Deadline.
    let deadline = c.retry.total_deadline_ms as f64;
    let slowest = c
        .records
        .iter()
        .map(|r| r.response.latency.as_secs_f64() * 1e3)
        .fold(0.0, f64::max);
    let late_start = c
        .records
        .iter()
        .filter(|r| {
            r.response
                .attempt_offsets_ms()
                .iter()
                .any(|o| *o as f64 >= deadline)
        })
        .count();
    report.check(
        g,
        "no request past its deadline",
        slowest <= deadline + slack && late_start == 0,
        format!(
            "slowest answer {slowest:.1} ms; {late_start} attempts started at/after the deadline"
        ),
        format!("<= total_deadline_ms {deadline:.0} + {slack:.0} ms slack; no attempt at/after it"),
    );

    // No broker traffic while open; probes per episode; open period length; closes.
    let grace = tol.opening_grace_ms * 1000;
    let (mut leaked, mut open_periods) = (0usize, 0usize);
    let mut first_leak: Option<String> = None;
    let mut probes_max = 0usize;
    let allowed = c.breaker.half_open_max_calls as usize;
    let (mut timing_bad, mut timed) = (0usize, 0usize);
    let mut timing_note = None::<String>;
    let (mut closes, mut closes_bad) = (0usize, 0usize);
    let mut close_note = None::<String>;
    for (t, p) in c.key_pairs() {
        let ts = of_key(&c.transitions, &t, &p);
        for period in periods(&ts, "open") {
            open_periods += 1;
            let inside = attempts_in(&c.attempts, &t, &p, &period, grace);
            if let Some(a) = inside.first() {
                first_leak.get_or_insert_with(|| {
                    format!(
                        "{} at +{} after opening",
                        c.keys.short(&t, &p),
                        ms(a.at_us - period.start)
                    )
                });
            }
            leaked += inside.len();
        }
        for period in periods(&ts, "half_open") {
            probes_max = probes_max.max(attempts_in(&c.attempts, &t, &p, &period, 0).len());
        }
        let mut since_close = 0u32;
        let mut open_at = None;
        for (i, tr) in ts.iter().enumerate() {
            match tr.to.as_str() {
                "open" => {
                    since_close += 1;
                    open_at = Some(tr.at_us);
                }
                "closed" => since_close = 0,
                _ => {}
            }
            if tr.to == "half_open"
                && tr.reason == r10::TIMEOUT_ELAPSED
                && let Some(o) = open_at
            {
                timed += 1;
                let d = tr.at_us - o;
                let (lo, hi) = open_period_bounds_us(c.breaker, since_close);
                if d + 1000 < lo || d > hi + 1000 {
                    timing_bad += 1;
                    timing_note.get_or_insert_with(|| {
                        format!(
                            "{}: open {} after opening #{since_close}, allowed {}..={}",
                            c.keys.short(&t, &p),
                            ms(d),
                            ms(lo),
                            ms(hi)
                        )
                    });
                }
            }
            if tr.from == "half_open" && tr.to == "closed" {
                closes += 1;
                // The closing success is stamped with the time its attempt ended, taken
                // before the breaker's lock: a probe admitted just before that lock may
                // carry a later start. Probes starting within the grace count.
                let probes = periods(&ts, "half_open")
                    .into_iter()
                    .find(|pe| pe.end == Some(tr.at_us) && pe.entered_by + 1 == i)
                    .map_or(0, |pe| {
                        let widened = Period {
                            end: pe.end.map(|e| e + grace),
                            ..pe
                        };
                        attempts_in(&c.attempts, &t, &p, &widened, 0).len()
                    });
                if tr.reason != r10::SUCCESS_THRESHOLD_REACHED
                    || probes < c.breaker.success_threshold as usize
                {
                    closes_bad += 1;
                    close_note.get_or_insert_with(|| {
                        format!(
                            "{}: closed by {} after {probes} probes",
                            c.keys.short(&t, &p),
                            tr.reason
                        )
                    });
                }
            }
        }
    }
    report.check(
        g,
        "no broker attempts while open (beyond in-flight grace)",
        leaked == 0,
        if leaked == 0 {
            format!("0 in {open_periods} open periods")
        } else {
            format!("{leaked}; first: {}", first_leak.unwrap_or_default())
        },
        format!(
            "0 (attempts within {} ms of an opening were admitted before it)",
            tol.opening_grace_ms
        ),
    );
    report.check(
        g,
        "probes per half-open episode <= half_open_max_calls",
        probes_max <= allowed,
        format!("max {probes_max}"),
        allowed,
    );
    let (lo1, hi1) = open_period_bounds_us(c.breaker, 1);
    report.check(
        g,
        "half-open after the open timeout",
        timing_bad == 0,
        if timed == 0 {
            "no half-open transition".to_owned()
        } else if timing_bad == 0 {
            format!("{timed} of {timed} within bounds")
        } else {
            format!(
                "{timing_bad} of {timed} outside; first: {}",
                timing_note.unwrap_or_default()
            )
        },
        format!(
            "open_timeout x 2^(n-1) capped x (1 ± jitter): first {}..={} (± 1 ms)",
            ms(lo1),
            ms(hi1)
        ),
    );
    report.check(
        g,
        "closed only after success_threshold probe successes",
        closes_bad == 0,
        if closes_bad == 0 {
            format!("{closes} closes")
        } else {
            format!(
                "{closes_bad} of {closes} wrong; first: {}",
                close_note.unwrap_or_default()
            )
        },
        format!(
            "reason {}, >= {} probes",
            r10::SUCCESS_THRESHOLD_REACHED,
            c.breaker.success_threshold
        ),
    );

    // Metrics agree with the journal.
    let mut disagree = Vec::new();
    let mut compared = 0;
    for (t, p) in c.key_pairs() {
        let ts = of_key(&c.transitions, &t, &p);
        let Some(last) = ts
            .iter()
            .rev()
            .find(|x| r10::TRIGGER_REASONS.contains(&x.reason.as_str()))
        else {
            continue;
        };
        if r10::state(&c.after, &t, &p).is_none() {
            continue; // no series for the key (tenant label overflow on a shared router)
        }
        compared += 1;
        let metric = r10::latest_trigger_reason(&c.after, &t, &p).unwrap_or("none");
        if metric != last.reason {
            disagree.push(format!(
                "{}: metrics {metric}, journal {}",
                c.keys.short(&t, &p),
                last.reason
            ));
        }
    }
    report.check(
        g,
        "metrics report the journal's trigger_reason",
        disagree.is_empty(),
        if disagree.is_empty() {
            format!("{compared} keys agree")
        } else {
            disagree.join("; ")
        },
        "equal for every key that opened",
    );
    let rejected = c.records.iter().filter(|r| is_rejected(r)).count();
    let counted: f64 = c
        .key_pairs()
        .iter()
        .map(|(t, p)| {
            r10::delta(
                &c.before,
                &c.after,
                r10::BREAKER_REJECTIONS,
                &[("tenant_id", t), ("provider_id", p)],
            )
        })
        .sum();
    report.check(
        g,
        "rejections counted in metrics",
        counted >= rejected as f64,
        format!("{} +{counted}", r10::BREAKER_REJECTIONS),
        format!(">= {rejected} (the 503 circuit_open answers)"),
    );

    // Nothing acknowledged lost or duplicated; order per key.
    let (missing, duplicated, _) = stored_counts(c);
    let acknowledged = c.records.iter().filter(|r| is_accepted(r)).count();
    report.check(
        g,
        "every acknowledged message stored exactly once",
        missing == 0 && duplicated == 0,
        format!("{acknowledged} acknowledged, {missing} missing, {duplicated} duplicated"),
        "0 missing, 0 duplicated",
    );
    let out_of_order = order_violations(c);
    report.check(
        g,
        "accepted messages stored in order per key",
        out_of_order == 0,
        out_of_order,
        "0 out of order",
    );
}

fn expectations(c: &Collected<'_>, report: &mut ScenarioReport) {
    let e = AssertionKind::Expected;
    let exp = &c.spec.expect;
    let openings = c.rule_openings();
    let opened = report.stats.get("keys_opened").copied().unwrap_or(0.0);
    match exp.opens {
        Some(true) => report.check(
            e,
            "breaker opened after the fault",
            opened >= 1.0,
            format!("{opened} keys"),
            ">= 1 key",
        ),
        Some(false) => report.check(
            e,
            "breaker never opened",
            openings.is_empty(),
            format!("{} openings", openings.len()),
            "0 openings",
        ),
        None => {}
    }
    if !exp.trigger_reasons.is_empty() {
        let mut seen: Vec<&str> = openings.iter().map(|t| t.reason.as_str()).collect();
        seen.sort_unstable();
        seen.dedup();
        let ok = !seen.is_empty()
            && seen
                .iter()
                .all(|r| exp.trigger_reasons.iter().any(|x| x == r));
        report.check(
            e,
            "trigger_reason as expected",
            ok,
            if seen.is_empty() {
                "no opening".to_owned()
            } else {
                seen.join(", ")
            },
            exp.trigger_reasons.join(" | "),
        );
    }
    if !exp.forbidden_rules.is_empty() {
        let hits: Vec<String> = openings
            .iter()
            .flat_map(|t| {
                t.rules
                    .iter()
                    .chain(std::iter::once(&t.reason))
                    .filter(|r| exp.forbidden_rules.contains(r))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        report.check(
            e,
            "no opening by a forbidden rule",
            hits.is_empty(),
            if hits.is_empty() {
                "none".to_owned()
            } else {
                hits.join(", ")
            },
            format!("none of {}", exp.forbidden_rules.join(", ")),
        );
    }
    if let Some([lo, hi]) = exp.open_within_ms {
        let fault_at = c.first_fault_us().unwrap_or(c.start_us);
        let mut times = Vec::new();
        for (t, p) in c.key_pairs() {
            let ts = of_key(&c.transitions, &t, &p);
            if let Some((open, _)) = first_cycle(&ts, fault_at) {
                times.push(open.at_us - fault_at);
            }
        }
        let ok = !times.is_empty() && times.iter().all(|d| *d >= lo * 1000 && *d <= hi * 1000);
        report.check(
            e,
            "opened within the expected window after the fault",
            ok,
            match (times.iter().min(), times.iter().max()) {
                (Some(a), Some(b)) if a == b => ms(*a),
                (Some(a), Some(b)) => format!("{}..={}", ms(*a), ms(*b)),
                _ => "never".to_owned(),
            },
            format!("{lo}..={hi} ms"),
        );
    }
    if exp.closes == Some(true) {
        let opened_keys = report.stats.get("keys_opened").copied().unwrap_or(0.0);
        let closed = report
            .stats
            .get("keys_closed_at_end")
            .copied()
            .unwrap_or(0.0);
        report.check(
            e,
            "every key that opened is closed at the end",
            opened_keys >= 1.0 && closed == opened_keys,
            format!("{closed} of {opened_keys}"),
            "all, and at least one",
        );
    }
    for r in &exp.ranges {
        let value = report.stats.get(&r.stat).copied();
        let bound = match (r.min, r.max) {
            (Some(a), Some(b)) => format!("{a}..={b}"),
            (Some(a), None) => format!(">= {a}"),
            (None, Some(b)) => format!("<= {b}"),
            (None, None) => String::new(),
        };
        let measured = value.map_or("not measured".to_owned(), |v| format!("{}", round3(v)));
        if !r.brokers.is_empty() && !r.brokers.iter().any(|b| b == c.broker) {
            report.number(
                &format!(
                    "{} (bound {bound} checked on {} only)",
                    r.stat,
                    r.brokers.join(", ")
                ),
                measured,
            );
            continue;
        }
        let ok =
            value.is_some_and(|v| r.min.is_none_or(|m| v >= m) && r.max.is_none_or(|m| v <= m));
        let name = match &r.why {
            Some(why) => format!("{}: {why}", r.stat),
            None => r.stat.clone(),
        };
        report.check(e, &name, ok, measured, bound);
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn timeline(c: &Collected<'_>) -> Timeline {
    let start = c.start_us;
    let rel = |us: u64| us.saturating_sub(start) as f64 / 1000.0;
    let duration_ms = rel(c.end_us);
    let phases = c
        .phases
        .iter()
        .map(|p| Span {
            name: p.name.clone(),
            from_ms: rel(p.from_us),
            to_ms: rel(p.to_us),
        })
        .collect();
    let faults = c
        .faults
        .iter()
        .map(|f| Span {
            name: f.label.clone(),
            from_ms: rel(f.from_us),
            to_ms: rel(f.to_us),
        })
        .collect();
    let mut lanes = Vec::new();
    for (t, p) in c.key_pairs() {
        let ts = of_key(&c.transitions, &t, &p);
        let used = !ts.is_empty() || c.records.iter().any(|r| r.tenant == t && r.provider() == p);
        if !used {
            continue;
        }
        let mut segments = Vec::new();
        let mut state = "closed".to_owned();
        let mut from = 0.0;
        for tr in ts {
            let at = rel(tr.at_us);
            segments.push(Segment {
                state: std::mem::replace(&mut state, tr.to.clone()),
                from_ms: from,
                to_ms: at,
            });
            from = at;
        }
        segments.push(Segment {
            state,
            from_ms: from,
            to_ms: duration_ms,
        });
        segments.retain(|s| s.to_ms > s.from_ms);
        lanes.push(Lane {
            key: c.keys.short(&t, &p),
            segments,
        });
    }
    let span_ms = c.end_us.saturating_sub(start) / 1000;
    let bucket = bucket_ms(span_ms);
    let buckets = (span_ms / bucket + 1) as usize;
    let sent: Vec<u64> = c.records.iter().map(|r| r.sent_us).collect();
    let attempts: Vec<u64> = c.attempts.iter().map(|a| a.at_us).collect();
    let rejections: Vec<u64> = c
        .records
        .iter()
        .filter(|r| is_rejected(r))
        .map(|r| r.sent_us + r.response.latency.as_micros() as u64)
        .collect();
    let mut per_bucket: Vec<Vec<Duration>> = vec![Vec::new(); buckets];
    for r in &c.records {
        let i = (r.sent_us.saturating_sub(start) / 1000 / bucket) as usize;
        if let Some(b) = per_bucket.get_mut(i) {
            b.push(r.response.latency);
        }
    }
    let q = |b: &mut Vec<Duration>, q: f64| (!b.is_empty()).then(|| round3(p_ms(b, q)));
    let latency_p50_ms = per_bucket.iter_mut().map(|b| q(b, 0.5)).collect();
    let latency_p99_ms = per_bucket.iter_mut().map(|b| q(b, 0.99)).collect();
    Timeline {
        duration_ms,
        phases,
        faults,
        lanes,
        series: Series {
            bucket_ms: bucket,
            requests_per_sec: rate_per_sec(&sent, start, buckets, bucket),
            attempts_per_sec: rate_per_sec(&attempts, start, buckets, bucket),
            rejections_per_sec: rate_per_sec(&rejections, start, buckets, bucket),
            latency_p50_ms,
            latency_p99_ms,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use beamline_core::ErrorKind;

    #[test]
    fn attempt_durations_follow_the_fault() {
        let t = 500.0;
        assert_eq!(attempt_range_ms(None, t), (0.0, 500.0));
        let err = Fault::Error {
            kind: ErrorKind::BrokerUnavailable,
        };
        assert_eq!(attempt_range_ms(Some(&err), t), (0.0, 0.0));
        assert_eq!(
            attempt_range_ms(Some(&Fault::Timeout {}), t),
            (500.0, 500.0)
        );
        assert_eq!(
            attempt_range_ms(Some(&Fault::Delay { ms: 900 }), t),
            (500.0, 500.0)
        );
        let i = Fault::Intermittent {
            probability: 0.5,
            fault: Box::new(Fault::Delay { ms: 200 }),
        };
        assert_eq!(attempt_range_ms(Some(&i), t), (0.0, 200.0));
    }
}
