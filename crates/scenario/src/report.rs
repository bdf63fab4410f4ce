//! The run report: every assertion with its measured value and bound, the measured stats,
//! the numbers worth reading, and the time series the HTML charts draw.
//!
//! The JSON form (`--json`) serializes these types; field names are stable: add fields,
//! never rename or remove them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

/// What an assertion checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AssertionKind {
    /// The scenario could be set up (features present, waits reached).
    Setup,
    /// An R10 property every scenario checks.
    Generic,
    /// An expectation from the scenario's file.
    Expected,
}

/// One checked expectation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Assertion {
    /// What is asserted.
    pub name: String,
    /// Which family it belongs to.
    pub kind: AssertionKind,
    /// Whether it held.
    pub passed: bool,
    /// What was measured.
    pub measured: String,
    /// The bound it was held to.
    pub bound: String,
}

/// A measured number worth reading (not an assertion).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Number {
    /// What it is.
    pub name: String,
    /// Its value, with its unit.
    pub value: String,
}

/// A scenario's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every assertion held.
    Pass,
    /// At least one assertion failed (or none was made).
    Fail,
    /// The scenario cannot run on this target (e.g. it needs a real NATS server); it is
    /// neither a pass nor a failure.
    NotApplicable,
}

impl Verdict {
    /// Short label.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::NotApplicable => "N/A",
        }
    }
}

/// A named span of the scenario, in ms from its start.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Span {
    /// Label.
    pub name: String,
    /// Start.
    pub from_ms: f64,
    /// End.
    pub to_ms: f64,
}

/// One stretch of a breaker state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Segment {
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Start, ms from the scenario's start.
    pub from_ms: f64,
    /// End.
    pub to_ms: f64,
}

/// The breaker states of one key over the scenario.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Lane {
    /// `tenant / provider` (run ids stripped).
    pub key: String,
    /// Its states, in order, covering the whole scenario.
    pub segments: Vec<Segment>,
}

/// Bucketed series over the scenario.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Series {
    /// Bucket width.
    pub bucket_ms: u64,
    /// Requests sent per second.
    pub requests_per_sec: Vec<f64>,
    /// Attempts reaching the broker side per second.
    pub attempts_per_sec: Vec<f64>,
    /// `503 circuit_open` answers per second (at answer time).
    pub rejections_per_sec: Vec<f64>,
    /// Median latency of the requests sent in the bucket.
    pub latency_p50_ms: Vec<Option<f64>>,
    /// 99th percentile latency of the requests sent in the bucket.
    pub latency_p99_ms: Vec<Option<f64>>,
}

/// What the charts draw.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Timeline {
    /// Length of the scenario.
    pub duration_ms: f64,
    /// Phases.
    pub phases: Vec<Span>,
    /// Faults, while set.
    pub faults: Vec<Span>,
    /// Breaker states per key.
    pub lanes: Vec<Lane>,
    /// Rates and latencies.
    pub series: Series,
}

/// The outcome of one scenario.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScenarioReport {
    /// Scenario name.
    pub name: String,
    /// What it does, in one line.
    pub description: String,
    /// Pass, fail or not applicable.
    pub verdict: Verdict,
    /// Why the scenario is not applicable on this target.
    pub not_applicable: Option<String>,
    /// Every assertion, in order.
    pub assertions: Vec<Assertion>,
    /// Every measured stat by its stable name (the names `[[expect.ranges]]` uses).
    pub stats: BTreeMap<String, f64>,
    /// Measured numbers worth reading.
    pub numbers: Vec<Number>,
    /// The router settings the scenario ran under (breaker and retry, as JSON).
    pub config: serde_json::Value,
    /// Series for charts.
    pub timeline: Timeline,
    /// Requests sent.
    pub requests: usize,
    /// Time spent sending requests (sum of the phases' load time).
    #[serde(serialize_with = "millis")]
    pub load_time: Duration,
    /// Wall time.
    #[serde(serialize_with = "millis")]
    pub duration: Duration,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl ScenarioReport {
    /// A new, empty report (its verdict is decided by [`ScenarioReport::finish`]).
    pub fn new(name: &str, description: &str) -> Self {
        ScenarioReport {
            name: name.to_owned(),
            description: description.to_owned(),
            verdict: Verdict::Fail,
            not_applicable: None,
            assertions: Vec::new(),
            stats: BTreeMap::new(),
            numbers: Vec::new(),
            config: serde_json::Value::Null,
            timeline: Timeline::default(),
            requests: 0,
            load_time: Duration::ZERO,
            duration: Duration::ZERO,
        }
    }

    /// A report for a scenario that cannot run on this target.
    pub fn not_applicable(name: &str, description: &str, why: &str) -> Self {
        let mut r = Self::new(name, description);
        r.verdict = Verdict::NotApplicable;
        r.not_applicable = Some(why.to_owned());
        r
    }

    /// Records an assertion.
    pub fn check(
        &mut self,
        kind: AssertionKind,
        name: &str,
        passed: bool,
        measured: impl ToString,
        bound: impl ToString,
    ) {
        self.assertions.push(Assertion {
            name: name.to_owned(),
            kind,
            passed,
            measured: measured.to_string(),
            bound: bound.to_string(),
        });
    }

    /// Records a number.
    pub fn number(&mut self, name: &str, value: impl ToString) {
        self.numbers.push(Number {
            name: name.to_owned(),
            value: value.to_string(),
        });
    }

    /// Records a stat.
    pub fn stat(&mut self, name: &str, value: f64) {
        self.stats.insert(name.to_owned(), value);
    }

    /// Decides the verdict from the assertions (unless not applicable).
    pub fn finish(&mut self) {
        if self.verdict != Verdict::NotApplicable {
            self.verdict =
                if !self.assertions.is_empty() && self.assertions.iter().all(|a| a.passed) {
                    Verdict::Pass
                } else {
                    Verdict::Fail
                };
        }
    }

    /// Whether the scenario passed.
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }

    /// The failed assertions.
    pub fn failures(&self) -> impl Iterator<Item = &Assertion> {
        self.assertions.iter().filter(|a| !a.passed)
    }
}

/// The outcome of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunReport {
    /// Profile name.
    pub profile: String,
    /// Clients.
    pub clients: usize,
    /// Requests per client per phase (phases scale it).
    pub requests: usize,
    /// What was targeted (embedded, nats URL, remote URL).
    pub target: String,
    /// The broker the router used (`embedded`, `jetstream`).
    pub broker: String,
    /// The seed.
    pub seed: u64,
    /// Every scenario.
    pub scenarios: Vec<ScenarioReport>,
    /// Wall time of the whole run.
    #[serde(serialize_with = "millis")]
    pub duration: Duration,
    /// Requests sent, all scenarios.
    pub total_requests: usize,
    /// Requests per second of load time, all scenarios.
    pub throughput_rps: f64,
    /// The command that reproduces the run.
    pub reproduce: String,
}

impl RunReport {
    /// Whether the run passed: no scenario failed and at least one passed (scenarios that
    /// are not applicable on the target are neither).
    pub fn passed(&self) -> bool {
        self.scenarios.iter().any(ScenarioReport::passed)
            && !self.scenarios.iter().any(|s| s.verdict == Verdict::Fail)
    }

    /// The report as text for a terminal: every assertion of every scenario.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Beamline Router scenario run: profile {} ({} clients x {} requests), target {} ({}), seed {}",
            self.profile, self.clients, self.requests, self.target, self.broker, self.seed
        );
        for s in &self.scenarios {
            let _ = writeln!(
                out,
                "\n{:4}  {}  ({:.2} s) - {}",
                s.verdict.as_str(),
                s.name,
                s.duration.as_secs_f64(),
                s.description
            );
            if let Some(why) = &s.not_applicable {
                let _ = writeln!(out, "        not applicable: {why}");
                continue;
            }
            let width = s
                .assertions
                .iter()
                .map(|a| a.name.len())
                .max()
                .unwrap_or(0)
                .min(60);
            for a in &s.assertions {
                let mark = if a.passed { "ok  " } else { "FAIL" };
                let _ = writeln!(
                    out,
                    "  [{mark}] {:width$}  measured {}  (bound {})",
                    a.name, a.measured, a.bound
                );
            }
            for Number { name, value } in &s.numbers {
                let _ = writeln!(out, "         {name}: {value}");
            }
        }
        let count = |v: Verdict| self.scenarios.iter().filter(|s| s.verdict == v).count();
        let _ = writeln!(
            out,
            "\n{} passed, {} failed, {} not applicable, in {:.2} s; {} requests at {:.0} req/s of load time.",
            count(Verdict::Pass),
            count(Verdict::Fail),
            count(Verdict::NotApplicable),
            self.duration.as_secs_f64(),
            self.total_requests,
            self.throughput_rps
        );
        let failed: Vec<String> = self
            .scenarios
            .iter()
            .filter(|s| s.verdict == Verdict::Fail)
            .map(|s| {
                let names: Vec<&str> = s.failures().map(|a| a.name.as_str()).collect();
                format!("  {}: {}", s.name, names.join("; "))
            })
            .collect();
        if !failed.is_empty() {
            let _ = writeln!(out, "Failed expectations:\n{}", failed.join("\n"));
        }
        let _ = writeln!(out, "Reproduce: {}", self.reproduce);
        out
    }
}
