//! Scenarios as data: the schema of the files under `scenarios/`, loading and validation.
//!
//! One TOML file per fault story (`scenarios/TEMPLATE.toml` documents every key). A file
//! gives the keys the scenario uses, the router configuration it runs under (overrides of
//! the runner's base `[breaker]`/`[retry]` settings), an optional tenant policy, the phases
//! (load, faults active during the phase, waits), and the expected ranges. The runner
//! embeds the files of the repository's `scenarios/` folder (so the binary is
//! self-contained); `--scenario-dir DIR` loads another folder instead.
//!
//! Validation happens at load, before anything runs, and names the file and the key.

use std::path::Path;

use beamline_broker::faults::Fault;
use beamline_core::policy::DegradedMode;
use serde::Deserialize;

/// The scenarios shipped with the binary, in run order: (file name, text).
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "mass_failure_opens_breaker.toml",
        include_str!("../../../scenarios/mass_failure_opens_breaker.toml"),
    ),
    (
        "recovery_after_failure.toml",
        include_str!("../../../scenarios/recovery_after_failure.toml"),
    ),
    (
        "latency_trigger.toml",
        include_str!("../../../scenarios/latency_trigger.toml"),
    ),
    (
        "error_rate_partial_failure.toml",
        include_str!("../../../scenarios/error_rate_partial_failure.toml"),
    ),
    (
        "timeout_fault.toml",
        include_str!("../../../scenarios/timeout_fault.toml"),
    ),
    (
        "close_connection.toml",
        include_str!("../../../scenarios/close_connection.toml"),
    ),
    (
        "thundering_herd_recovery.toml",
        include_str!("../../../scenarios/thundering_herd_recovery.toml"),
    ),
    (
        "fallback_to_secondary.toml",
        include_str!("../../../scenarios/fallback_to_secondary.toml"),
    ),
    (
        "outbox_no_loss.toml",
        include_str!("../../../scenarios/outbox_no_loss.toml"),
    ),
    (
        "deadline_vs_sla.toml",
        include_str!("../../../scenarios/deadline_vs_sla.toml"),
    ),
];

/// The documented template (not a scenario; parsed by a test so it stays valid).
pub const TEMPLATE: &str = include_str!("../../../scenarios/TEMPLATE.toml");

/// A scenario file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The folder or a file could not be read.
    #[error("cannot read {path}: {detail}")]
    Read {
        /// The path.
        path: String,
        /// Why.
        detail: String,
    },
    /// A file is not valid TOML or does not match the schema.
    #[error("{file}: {detail}")]
    Parse {
        /// The file.
        file: String,
        /// The parser's message (it names the key).
        detail: String,
    },
    /// A file parses but breaks a rule of the schema.
    #[error("{file}: {key}: {rule}")]
    Invalid {
        /// The file.
        file: String,
        /// The offending key.
        key: String,
        /// The rule it breaks.
        rule: String,
    },
}

/// One scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    /// Unique name (`[a-z0-9_]`, at most 32 characters); `--scenario NAME` selects it.
    pub name: String,
    /// What the scenario shows, in one line.
    pub description: String,
    /// What the scenario needs from the target.
    #[serde(default)]
    pub needs: Needs,
    /// The keys it uses.
    #[serde(default)]
    pub keys: KeysSpec,
    /// Router configuration overrides (in-process targets).
    #[serde(default)]
    pub router: RouterOverrides,
    /// A tenant policy put for every tenant before the phases (needs `policies`).
    #[serde(default)]
    pub policy: Option<toml::Table>,
    /// The phases, in order.
    pub phases: Vec<PhaseSpec>,
    /// Expectations.
    #[serde(default)]
    pub expect: ExpectSpec,
    /// Measurement tolerances.
    #[serde(default)]
    pub tolerances: Tolerances,
}

/// The broker a scenario needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerNeed {
    /// Any broker.
    #[default]
    Any,
    /// A real NATS JetStream (the scenario is not applicable on the embedded broker).
    Nats,
}

/// A router feature a scenario needs; a router without it fails the scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// Tenant policies: `PUT /admin/policies/{tenant}`, routing when `provider_id` is omitted.
    Policies,
    /// The durable outbox: 202 `queued` answers, `GET /admin/outbox`.
    Outbox,
}

impl Feature {
    /// Name as written in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Policies => "policies",
            Feature::Outbox => "outbox",
        }
    }
}

/// `[needs]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Needs {
    /// `any` (default) or `nats`.
    #[serde(default)]
    pub broker: BrokerNeed,
    /// Router features.
    #[serde(default)]
    pub features: Vec<Feature>,
}

/// `[keys]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysSpec {
    /// Number of tenants (each gets its own breaker per provider).
    #[serde(default = "one")]
    pub tenants: usize,
    /// Logical provider names; the first is the default of phases and waits.
    #[serde(default = "main_provider")]
    pub providers: Vec<String>,
}

fn one() -> usize {
    1
}

fn main_provider() -> Vec<String> {
    vec!["main".into()]
}

impl Default for KeysSpec {
    fn default() -> Self {
        KeysSpec {
            tenants: 1,
            providers: main_provider(),
        }
    }
}

/// `[router]`: the router's degraded path, and `[router.breaker]` / `[router.retry]`
/// keys of its configuration sections.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterOverrides {
    /// Give the in-process router a durable outbox (a fresh directory per scenario).
    #[serde(default)]
    pub outbox: bool,
    /// The router's degraded mode for tenants without a policy (`outbox` or `reject`).
    #[serde(default)]
    pub degraded_mode: Option<DegradedMode>,
    /// Breaker keys (DESIGN.md §3).
    #[serde(default)]
    pub breaker: toml::Table,
    /// Retry keys (DESIGN.md §4).
    #[serde(default)]
    pub retry: toml::Table,
}

/// A fault active during a phase.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Logical provider name.
    pub provider: String,
    /// Only this tenant (index into the scenario's tenants), if set.
    #[serde(default)]
    pub tenant: Option<usize>,
    /// The fault, as the admin API takes it.
    pub fault: Fault,
}

/// States a phase can wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitUntil {
    /// Every (or any) key open.
    Open,
    /// Every (or any) key half-open.
    HalfOpen,
    /// Every (or any) key closed.
    Closed,
    /// The router's outbox holds nothing for the scenario's keys (needs `outbox`).
    OutboxEmpty,
}

impl WaitUntil {
    /// Name as written in files and journals.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitUntil::Open => "open",
            WaitUntil::HalfOpen => "half_open",
            WaitUntil::Closed => "closed",
            WaitUntil::OutboxEmpty => "outbox_empty",
        }
    }
}

/// A wait before or after a phase's load.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitSpec {
    /// What to wait for.
    pub until: WaitUntil,
    /// Give up after this long (an assertion fails); default: the longest first open
    /// period plus 2 s for `half_open`, 5 s otherwise.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Provider whose keys are watched (default: the first provider).
    #[serde(default)]
    pub provider: Option<String>,
    /// `true`: any one key suffices; default: every tenant's key.
    #[serde(default)]
    pub any: bool,
}

/// One phase.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSpec {
    /// Name (`[a-z0-9_]`), unique in the file; stats are named `<phase>.<stat>`.
    pub name: String,
    /// Faults set when the phase starts and cleared when it ends.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    /// Wait before sending (faults already set).
    #[serde(default)]
    pub wait_before: Option<WaitSpec>,
    /// Requests per client, as a fraction of the profile's (rounded up, at least 1).
    #[serde(default)]
    pub requests: Option<f64>,
    /// Requests per client, absolute (instead of `requests`).
    #[serde(default)]
    pub requests_per_client: Option<usize>,
    /// Clients keep sending for this long (alone, or as a cap with the other limits).
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Clients, as a fraction of the profile's (rounded up, at least 1).
    #[serde(default = "one_f")]
    pub clients: f64,
    /// At most this many clients, whatever the profile (phases whose expectations depend
    /// on how many calls arrive at once).
    #[serde(default)]
    pub max_clients: Option<usize>,
    /// Pause between a client's requests.
    #[serde(default)]
    pub pause_ms: u64,
    /// Logical provider to send to (default: the first provider).
    #[serde(default)]
    pub provider: Option<String>,
    /// `true`: leave `provider_id` out and let the tenant policy route (needs `policies`).
    #[serde(default)]
    pub routed: bool,
    /// Stop sending once every tenant's key of the first provider is in this state.
    #[serde(default)]
    pub stop_when: Option<WaitUntil>,
    /// Wait after sending (faults still set).
    #[serde(default)]
    pub wait_after: Option<WaitSpec>,
}

fn one_f() -> f64 {
    1.0
}

impl PhaseSpec {
    /// Whether the phase sends any request.
    pub fn has_load(&self) -> bool {
        self.requests.is_some() || self.requests_per_client.is_some() || self.duration_ms.is_some()
    }
}

/// `[[expect.ranges]]`: a measured stat must lie within `[min, max]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeSpec {
    /// Stat name (TEMPLATE.toml lists them).
    pub stat: String,
    /// Lower bound, inclusive.
    #[serde(default)]
    pub min: Option<f64>,
    /// Upper bound, inclusive.
    #[serde(default)]
    pub max: Option<f64>,
    /// Checked only on these brokers (`embedded`, `nats`); reported elsewhere.
    #[serde(default)]
    pub brokers: Vec<String>,
    /// Why the range matters (shown in the report).
    #[serde(default)]
    pub why: Option<String>,
}

/// `[expect]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// `true`: some key opens after the first fault; `false`: no key ever opens.
    #[serde(default)]
    pub opens: Option<bool>,
    /// Every opening by a rule has one of these reasons.
    #[serde(default)]
    pub trigger_reasons: Vec<String>,
    /// No opening lists any of these rules.
    #[serde(default)]
    pub forbidden_rules: Vec<String>,
    /// Each key that opens does so within `[min, max]` ms of the first fault.
    #[serde(default)]
    pub open_within_ms: Option<[u64; 2]>,
    /// `true`: every key that opened is closed at the end (by probe successes).
    #[serde(default)]
    pub closes: Option<bool>,
    /// Ranges on measured stats.
    #[serde(default)]
    pub ranges: Vec<RangeSpec>,
}

/// `[tolerances]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerances {
    /// Added to time bounds measured from outside (HTTP, scheduling).
    #[serde(default = "default_slack")]
    pub timing_slack_ms: u64,
    /// An attempt reaching the broker this soon after an opening was admitted before it
    /// (admission and the broker-side journal entry are not atomic): in flight, not a leak.
    #[serde(default = "default_grace")]
    pub opening_grace_ms: u64,
}

fn default_slack() -> u64 {
    50
}

fn default_grace() -> u64 {
    5
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            timing_slack_ms: default_slack(),
            opening_grace_ms: default_grace(),
        }
    }
}

/// Stat names every phase produces (`<phase>.<stat>`); `routed.<provider>` too.
pub const PHASE_STATS: &[&str] = &[
    "requests",
    "ok",
    "queued",
    "rejected",
    "shed",
    "failed",
    "deadline_exceeded",
    "other",
    "ok_ratio",
    "accepted_ratio",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "ok_p50_ms",
    "rejected_p99_ms",
    "shed_p99_ms",
    "broker_attempts",
    "attempts_per_request",
    "max_attempts",
    "duration_ms",
];

/// Scenario-wide stat names.
pub const SCENARIO_STATS: &[&str] = &[
    "keys",
    "keys_opened",
    "keys_opened_fraction",
    "openings",
    "first_open_ms",
    "keys_closed_at_end",
    "max_probes_per_episode",
    "half_open_spread_ms",
    "half_open_spread_jitter_fraction",
    "open_duration_spread_ms",
    "first_probe_spread_ms",
    "acknowledged",
    "queued",
    "stored",
    "missing",
    "duplicated",
    "out_of_order",
    "outbox_depth_end",
];

fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl ScenarioSpec {
    /// Parses and validates one file's text.
    pub fn parse(file: &str, text: &str) -> Result<Self, SpecError> {
        let spec: ScenarioSpec = toml::from_str(text).map_err(|e| SpecError::Parse {
            file: file.to_owned(),
            detail: e.to_string(),
        })?;
        spec.validate(file)?;
        Ok(spec)
    }

    fn validate(&self, file: &str) -> Result<(), SpecError> {
        let invalid = |key: &str, rule: &str| SpecError::Invalid {
            file: file.to_owned(),
            key: key.to_owned(),
            rule: rule.to_owned(),
        };
        if !valid_name(&self.name, 32) {
            return Err(invalid("name", "must be 1-32 characters of [a-z0-9_]"));
        }
        if !(1..=1000).contains(&self.keys.tenants) {
            return Err(invalid("keys.tenants", "must be within 1..=1000"));
        }
        if self.keys.providers.is_empty() || self.keys.providers.len() > 8 {
            return Err(invalid("keys.providers", "must name 1 to 8 providers"));
        }
        for p in &self.keys.providers {
            if !valid_name(p, 12) {
                return Err(invalid(
                    "keys.providers",
                    "names must be 1-12 characters of [a-z0-9_]",
                ));
            }
        }
        let provider_known = |p: &str| self.keys.providers.iter().any(|k| k == p);
        if self.phases.is_empty() {
            return Err(invalid("phases", "at least one phase is needed"));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, phase) in self.phases.iter().enumerate() {
            let at = |k: &str| format!("phases[{i}].{k}");
            if !valid_name(&phase.name, 24) || !seen.insert(phase.name.as_str()) {
                return Err(invalid(
                    &at("name"),
                    "must be unique, 1-24 characters of [a-z0-9_]",
                ));
            }
            if phase.requests.is_some() && phase.requests_per_client.is_some() {
                return Err(invalid(
                    &at("requests"),
                    "give requests or requests_per_client, not both",
                ));
            }
            if phase
                .requests
                .is_some_and(|r| !(r.is_finite() && r > 0.0 && r <= 100.0))
            {
                return Err(invalid(&at("requests"), "must be within (0, 100]"));
            }
            if !(phase.clients.is_finite() && phase.clients > 0.0 && phase.clients <= 100.0) {
                return Err(invalid(&at("clients"), "must be within (0, 100]"));
            }
            if phase.stop_when.is_some() && !phase.has_load() {
                return Err(invalid(
                    &at("stop_when"),
                    "needs a load (requests, requests_per_client or duration_ms)",
                ));
            }
            if phase.stop_when == Some(WaitUntil::OutboxEmpty) {
                return Err(invalid(&at("stop_when"), "must be a breaker state"));
            }
            if phase.max_clients == Some(0) {
                return Err(invalid(&at("max_clients"), "must be at least 1"));
            }
            if phase.duration_ms.is_some_and(|d| d > 600_000) {
                return Err(invalid(&at("duration_ms"), "must be at most 600000"));
            }
            if let Some(p) = &phase.provider
                && !provider_known(p)
            {
                return Err(invalid(&at("provider"), "is not in keys.providers"));
            }
            if phase.routed && !self.needs.features.contains(&Feature::Policies) {
                return Err(invalid(
                    &at("routed"),
                    "routing by policy needs `policies` in needs.features",
                ));
            }
            for (j, f) in phase.faults.iter().enumerate() {
                if !provider_known(&f.provider) {
                    return Err(invalid(
                        &at(&format!("faults[{j}].provider")),
                        "is not in keys.providers",
                    ));
                }
                if f.tenant.is_some_and(|t| t >= self.keys.tenants) {
                    return Err(invalid(
                        &at(&format!("faults[{j}].tenant")),
                        "must be below keys.tenants",
                    ));
                }
                f.fault
                    .validate()
                    .map_err(|e| invalid(&at(&format!("faults[{j}].fault")), &e))?;
            }
            for (k, w) in [
                ("wait_before", &phase.wait_before),
                ("wait_after", &phase.wait_after),
            ] {
                if let Some(w) = w
                    && let Some(p) = &w.provider
                    && !provider_known(p)
                {
                    return Err(invalid(
                        &at(&format!("{k}.provider")),
                        "is not in keys.providers",
                    ));
                }
            }
        }
        for (i, r) in self.expect.ranges.iter().enumerate() {
            let key = format!("expect.ranges[{i}]");
            if r.min.is_none() && r.max.is_none() {
                return Err(invalid(&key, "needs min, max or both"));
            }
            if !stat_name_known(&r.stat, self) {
                return Err(invalid(
                    &format!("{key}.stat"),
                    &format!("unknown stat {:?} (TEMPLATE.toml lists them)", r.stat),
                ));
            }
            for b in &r.brokers {
                if b != "embedded" && b != "nats" {
                    return Err(invalid(
                        &format!("{key}.brokers"),
                        "entries must be embedded or nats",
                    ));
                }
            }
        }
        for reason in self
            .expect
            .trigger_reasons
            .iter()
            .chain(&self.expect.forbidden_rules)
        {
            if !beamline_metrics::r10::TRIGGER_REASONS.contains(&reason.as_str()) {
                return Err(invalid(
                    "expect.trigger_reasons",
                    &format!("unknown reason {reason:?}"),
                ));
            }
        }
        if self.router.degraded_mode == Some(DegradedMode::Outbox) && !self.router.outbox {
            return Err(invalid(
                "router.degraded_mode",
                "\"outbox\" needs router.outbox = true",
            ));
        }
        if self.router.outbox && !self.needs.features.contains(&Feature::Outbox) {
            return Err(invalid(
                "router.outbox",
                "an outbox needs `outbox` in needs.features (a running router must have one)",
            ));
        }
        if self.policy.is_some() && !self.needs.features.contains(&Feature::Policies) {
            return Err(invalid(
                "policy",
                "a tenant policy needs `policies` in needs.features",
            ));
        }
        Ok(())
    }

    /// The phase's logical provider: `Some(name)`, or `None` when the policy routes.
    pub fn phase_provider<'a>(&'a self, phase: &'a PhaseSpec) -> Option<&'a str> {
        if phase.routed {
            return None;
        }
        phase
            .provider
            .as_deref()
            .or_else(|| self.keys.providers.first().map(String::as_str))
    }
}

fn stat_name_known(stat: &str, spec: &ScenarioSpec) -> bool {
    if SCENARIO_STATS.contains(&stat) {
        return true;
    }
    let Some((phase, rest)) = stat.split_once('.') else {
        return false;
    };
    if !spec.phases.iter().any(|p| p.name == phase) {
        return false;
    }
    PHASE_STATS.contains(&rest)
        || rest
            .strip_prefix("routed.")
            .is_some_and(|p| spec.keys.providers.iter().any(|k| k == p))
}

/// The built-in scenarios, parsed.
pub fn builtin() -> Result<Vec<ScenarioSpec>, SpecError> {
    BUILTIN
        .iter()
        .map(|(file, text)| ScenarioSpec::parse(file, text))
        .collect()
}

/// Every `*.toml` of `dir` except `TEMPLATE.toml`, parsed, in file-name order.
pub fn load_dir(dir: &Path) -> Result<Vec<ScenarioSpec>, SpecError> {
    let read_err = |p: &Path, e: std::io::Error| SpecError::Read {
        path: p.display().to_string(),
        detail: e.to_string(),
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| read_err(dir, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "toml")
                && p.file_name().is_some_and(|n| n != "TEMPLATE.toml")
        })
        .collect();
    files.sort();
    let mut specs = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|e| read_err(&path, e))?;
        specs.push(ScenarioSpec::parse(&path.display().to_string(), &text)?);
    }
    let mut names = std::collections::HashSet::new();
    for s in &specs {
        if !names.insert(s.name.clone()) {
            return Err(SpecError::Invalid {
                file: dir.display().to_string(),
                key: "name".into(),
                rule: format!("{:?} is used by two files", s.name),
            });
        }
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_scenario_and_the_template_parse() {
        let specs = builtin().unwrap();
        assert_eq!(specs.len(), BUILTIN.len());
        for ((file, _), spec) in BUILTIN.iter().zip(&specs) {
            assert_eq!(format!("{}.toml", spec.name), *file);
        }
        let template = ScenarioSpec::parse("TEMPLATE.toml", TEMPLATE).unwrap();
        assert_eq!(template.name, "template_example");
    }

    #[test]
    fn the_scenario_list_matches_the_files() {
        let specs = builtin().unwrap();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let listed: Vec<&str> = crate::SCENARIOS.iter().map(|s| s.0).collect();
        assert_eq!(names, listed);
        for (spec, (_, description)) in specs.iter().zip(crate::SCENARIOS) {
            assert_eq!(spec.description, *description);
        }
    }

    #[test]
    fn invalid_files_are_refused_with_the_key() {
        let base = "name = \"x\"\ndescription = \"d\"\n";
        let e = ScenarioSpec::parse("f.toml", &format!("{base}phases = []\n")).unwrap_err();
        assert!(e.to_string().contains("phases"), "{e}");
        let e = ScenarioSpec::parse(
            "f.toml",
            &format!("{base}[[phases]]\nname = \"a\"\nprovider = \"nope\"\nrequests = 1.0\n"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("phases[0].provider"), "{e}");
        let e = ScenarioSpec::parse(
            "f.toml",
            &format!(
                "{base}[[phases]]\nname = \"a\"\nrequests = 1.0\n[[expect.ranges]]\nstat = \"a.nope\"\nmax = 1\n"
            ),
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown stat"), "{e}");
        let e = ScenarioSpec::parse(
            "f.toml",
            &format!("{base}[[phases]]\nname = \"a\"\nrequests = 1.0\n[[phases.faults]]\nprovider = \"main\"\nfault = {{ type = \"explode\" }}\n"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("f.toml"), "{e}");
        let e = ScenarioSpec::parse(
            "f.toml",
            &format!("{base}bogus = 1\n[[phases]]\nname = \"a\"\n"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn faults_parse_as_the_admin_api_takes_them() {
        let spec = ScenarioSpec::parse(
            "f.toml",
            "name = \"x\"\ndescription = \"d\"\n[[phases]]\nname = \"a\"\nrequests = 1.0\n\
             [[phases.faults]]\nprovider = \"main\"\n\
             fault = { type = \"intermittent\", probability = 0.6, fault = { type = \"error\", kind = \"broker_unavailable\" } }\n",
        )
        .unwrap();
        let json = serde_json::to_value(&spec.phases[0].faults[0].fault).unwrap();
        assert_eq!(json["type"], "intermittent");
        assert_eq!(json["fault"]["kind"], "broker_unavailable");
        assert_eq!(spec.phase_provider(&spec.phases[0]), Some("main"));
    }
}
