//! The run report: every assertion with its measured value and bound, and the numbers.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

/// One checked expectation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Assertion {
    /// What is asserted.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// What was measured.
    pub measured: String,
    /// The bound it was held to.
    pub bound: String,
}

/// The outcome of one scenario.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ScenarioReport {
    /// Scenario name.
    pub name: String,
    /// What it does, in one line.
    pub description: String,
    /// Every assertion, in order.
    pub assertions: Vec<Assertion>,
    /// Measured numbers worth reporting (name, value).
    pub numbers: Vec<(String, String)>,
    /// Wall time.
    #[serde(serialize_with = "millis")]
    pub duration: Duration,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl ScenarioReport {
    /// A new, empty report.
    pub fn new(name: &str, description: &str) -> Self {
        ScenarioReport {
            name: name.to_owned(),
            description: description.to_owned(),
            ..Default::default()
        }
    }

    /// Records an assertion.
    pub fn check(
        &mut self,
        name: &str,
        passed: bool,
        measured: impl ToString,
        bound: impl ToString,
    ) {
        self.assertions.push(Assertion {
            name: name.to_owned(),
            passed,
            measured: measured.to_string(),
            bound: bound.to_string(),
        });
    }

    /// Records a number.
    pub fn number(&mut self, name: &str, value: impl ToString) {
        self.numbers.push((name.to_owned(), value.to_string()));
    }

    /// Whether every assertion held (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.assertions.is_empty() && self.assertions.iter().all(|a| a.passed)
    }
}

/// The outcome of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunReport {
    /// Profile name.
    pub profile: String,
    /// Clients × requests.
    pub clients: usize,
    /// Requests per client.
    pub requests: usize,
    /// What was targeted (embedded, nats URL, remote URL).
    pub target: String,
    /// The seed.
    pub seed: u64,
    /// Every scenario.
    pub scenarios: Vec<ScenarioReport>,
    /// Wall time of the whole run.
    #[serde(serialize_with = "millis")]
    pub duration: Duration,
    /// The command that reproduces the run.
    pub reproduce: String,
}

impl RunReport {
    /// Whether every scenario passed.
    pub fn passed(&self) -> bool {
        !self.scenarios.is_empty() && self.scenarios.iter().all(ScenarioReport::passed)
    }

    /// The report as text for a terminal.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Beamline Router scenario run: profile {} ({} clients x {} requests), target {}, seed {}",
            self.profile, self.clients, self.requests, self.target, self.seed
        );
        for s in &self.scenarios {
            let verdict = if s.passed() { "PASS" } else { "FAIL" };
            let _ = writeln!(
                out,
                "\n{verdict}  {}  ({:.2} s) - {}",
                s.name,
                s.duration.as_secs_f64(),
                s.description
            );
            let width = s.assertions.iter().map(|a| a.name.len()).max().unwrap_or(0);
            for a in &s.assertions {
                let mark = if a.passed { "ok  " } else { "FAIL" };
                let _ = writeln!(
                    out,
                    "  [{mark}] {:width$}  measured {}  (bound {})",
                    a.name, a.measured, a.bound
                );
            }
            for (name, value) in &s.numbers {
                let _ = writeln!(out, "         {name}: {value}");
            }
        }
        let passed = self.scenarios.iter().filter(|s| s.passed()).count();
        let _ = writeln!(
            out,
            "\n{passed}/{} scenarios passed in {:.2} s. Reproduce: {}",
            self.scenarios.len(),
            self.duration.as_secs_f64(),
            self.reproduce
        );
        out
    }
}
