//! The checkable items of docs/MAINTENANCE_CHECKLIST.md: the docs, the dashboard and the
//! alert rules keep up with the product's reasons, metrics, settings, stateful components
//! and operator commands.

use std::collections::BTreeSet;

use beamline_core::ErrorKind;
use beamline_core::breaker::{BreakerConfig, State, TransitionReason};
use beamline_core::retry::RetryConfig;
use beamline_metrics::names::{self, Kind};
use beamline_metrics::r10;
use beamline_ops_check::{dashboard, markdown, promql, read_repo_file, repo_path, rules};

const CHECKLIST: &str = "docs/MAINTENANCE_CHECKLIST.md";
const CONVENTIONS: &str = "docs/OBSERVABILITY_CONVENTIONS.md";
const LIFECYCLE: &str = "docs/LIFECYCLE.md";
const RUNBOOK: &str = "docs/runbook/provider-incidents.md";

/// The operator CLI's source: the runbook's `ctl` commands are checked against it.
const CTL_SOURCE: &str = "crates/cli/src/ctl.rs";

/// `CamelCase` to `kebab-case` (clap's default for subcommand names).
fn kebab(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The subcommands of `ctl` (variants of `enum CtlCommand`) and every `--long` flag its
/// argument structs declare.
fn ctl_interface() -> (BTreeSet<String>, BTreeSet<String>) {
    let source = read(CTL_SOURCE);
    let body = source
        .split("enum CtlCommand {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .unwrap_or_else(|| panic!("{CTL_SOURCE}: no `enum CtlCommand`"));
    let commands = body
        .lines()
        .filter(|l| l.starts_with("    ") && !l.starts_with("     "))
        .map(str::trim)
        .filter(|l| l.starts_with(|c: char| c.is_ascii_uppercase()))
        .map(|l| kebab(l.split(['(', ',', ' ', '{']).next().unwrap_or_default()))
        .collect();
    let mut flags = BTreeSet::new();
    let mut attr = String::new();
    let mut long = false;
    for line in source.lines().map(str::trim) {
        if line.starts_with("#[arg(") || !attr.is_empty() {
            attr.push_str(line);
            if line.ends_with(")]") {
                long = attr.contains("long");
                attr.clear();
            }
            continue;
        }
        if long && let Some((field, _)) = line.split_once(':') {
            flags.insert(format!(
                "--{}",
                field.trim_start_matches("pub ").replace('_', "-")
            ));
            long = false;
        }
    }
    (commands, flags)
}

fn read(path: &str) -> String {
    read_repo_file(path).unwrap_or_else(|e| panic!("{e}"))
}

fn all_reasons() -> Vec<&'static str> {
    TransitionReason::ALL
        .into_iter()
        .map(TransitionReason::as_str)
        .collect()
}

fn trigger_reasons() -> Vec<&'static str> {
    TransitionReason::ALL
        .into_iter()
        .filter(|r| r.is_trigger())
        .map(TransitionReason::as_str)
        .collect()
}

/// The cells of every Markdown table row (`| a | b |`), trimmed.
fn table_rows(markdown: &str) -> Vec<Vec<String>> {
    markdown
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('|') && l.ends_with('|') && !l.starts_with("|---"))
        .map(|l| {
            l[1..l.len() - 1]
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

/// The backticked words of a table cell.
fn backticked(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

#[test]
fn every_test_named_in_the_maintenance_checklist_exists() {
    let text = read(CHECKLIST);
    let mut named = 0;
    let mut problems = Vec::new();
    for chunk in text.split('`').skip(1).step_by(2) {
        let Some((file, test)) = chunk
            .split_once(".rs::")
            .filter(|(file, _)| file.starts_with("crates/"))
        else {
            continue;
        };
        named += 1;
        let path = format!("{file}.rs");
        match read_repo_file(&path) {
            Ok(source) if source.contains(&format!("fn {test}(")) => {}
            Ok(_) => problems.push(format!("{path} has no test `{test}`")),
            Err(e) => problems.push(e),
        }
    }
    assert!(named >= 15, "only {named} tests named in {CHECKLIST}");
    assert!(
        problems.is_empty(),
        "{CHECKLIST} names missing tests:\n{}",
        problems.join("\n")
    );
}

#[test]
fn r10_trigger_reasons_are_the_core_s_trigger_reasons() {
    assert_eq!(r10::TRIGGER_REASONS.to_vec(), trigger_reasons());
}

#[test]
fn every_reason_is_documented_in_conventions_and_runbook() {
    let conventions = read(CONVENTIONS);
    let runbook = read(RUNBOOK);
    // The runbook's reason table has a row per reason.
    let runbook_rows: BTreeSet<String> = table_rows(&runbook)
        .into_iter()
        .filter_map(|r| backticked(&r[0]).first().map(|s| s.to_string()))
        .collect();
    for reason in all_reasons() {
        assert!(
            conventions.contains(&format!("`{reason}`")),
            "{CONVENTIONS} does not list `{reason}`"
        );
        assert!(
            runbook_rows.contains(reason),
            "{RUNBOOK}: no row for `{reason}` in the reason table"
        );
    }
}

#[test]
fn every_label_value_is_documented_in_conventions() {
    let conventions = read(CONVENTIONS);
    let states = [State::Closed, State::Open, State::HalfOpen].map(State::as_str);
    let values = ErrorKind::ALL
        .into_iter()
        .map(ErrorKind::as_str)
        .chain(promql::request_outcomes())
        .chain(states)
        .chain([
            "success",
            "failure",
            "ignored",
            beamline_metrics::OVERFLOW_TENANT,
            beamline_metrics::NO_PROVIDER,
        ]);
    for value in values {
        assert!(
            conventions.contains(&format!("`{value}`")),
            "{CONVENTIONS} does not list the label value `{value}`"
        );
    }
}

#[test]
fn every_trigger_reason_and_half_open_failure_appear_in_dashboard_and_alerts() {
    let dashboard = read(dashboard::DASHBOARD);
    let alerts = read(rules::ALERTS);
    for reason in trigger_reasons() {
        assert!(
            dashboard.contains(reason),
            "the dashboard never explains `{reason}`"
        );
        assert!(
            alerts.contains(&format!("eq $labels.reason \"{reason}\"")),
            "BeamlineBreakerOpenTooLong has no sentence for `{reason}`"
        );
    }
    let half_open = TransitionReason::HalfOpenFailure.as_str();
    assert!(
        dashboard.contains(half_open),
        "the dashboard never explains `{half_open}`"
    );
    let reads_it = rules::all_rules()
        .unwrap()
        .iter()
        .any(|(_, r)| r.expr.contains(&format!("reason=\"{half_open}\"")));
    assert!(reads_it, "no rule selects reason=\"{half_open}\"");
    assert!(
        alerts.contains(half_open),
        "no alert explains `{half_open}`"
    );
}

#[test]
fn every_metric_is_documented_with_its_type_and_labels() {
    let rows = table_rows(&read(CONVENTIONS));
    let mut problems = Vec::new();
    for info in names::ALL {
        let Some(row) = rows.iter().find(|r| r[0] == format!("`{}`", info.name)) else {
            problems.push(format!(
                "{}: no row in {CONVENTIONS} \"The metrics\"",
                info.name
            ));
            continue;
        };
        let kind = match info.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        if row.get(1).map(String::as_str) != Some(kind) {
            problems.push(format!(
                "{}: documented as {:?}, is a {kind}",
                info.name,
                row.get(1)
            ));
        }
        let documented: Vec<&str> = row.get(2).map(|c| backticked(c)).unwrap_or_default();
        if documented != info.labels {
            problems.push(format!(
                "{}: documented labels {documented:?}, real {:?}",
                info.name, info.labels
            ));
        }
    }
    let documented: Vec<&String> = rows
        .iter()
        .map(|r| &r[0])
        .filter(|c| c.starts_with("`router_"))
        .collect();
    for cell in documented {
        let name = cell.trim_matches('`');
        if !names::ALL.iter().any(|m| m.name == name) {
            problems.push(format!(
                "{CONVENTIONS} documents `{name}`, which the router does not export"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_metrics_access_module_is_in_the_conventions() {
    let lib = read("crates/metrics/src/lib.rs");
    let rows = table_rows(&read(CONVENTIONS));
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';'))
        .filter(|m| m.len() > 1 && m.starts_with('r') && m[1..].chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert!(
        modules.contains(&"r10") && modules.contains(&"r11"),
        "{modules:?}"
    );
    for module in modules {
        assert!(
            rows.iter().any(|r| r[0] == format!("`{module}`")),
            "{CONVENTIONS}: no row for the access module `{module}`"
        );
    }
}

#[test]
fn every_runbook_alert_section_belongs_to_an_alert() {
    let alerts: BTreeSet<String> = rules::alerts()
        .unwrap()
        .into_iter()
        .filter_map(|a| a.alert)
        .collect();
    let runbook = read(RUNBOOK);
    let sections: Vec<String> = markdown::headings(&runbook)
        .into_iter()
        .filter_map(|h| h.text.strip_prefix("Alert: ").map(str::to_owned))
        .collect();
    for section in &sections {
        assert!(
            alerts.contains(section),
            "{RUNBOOK} has a section for `{section}`, which is no alert"
        );
    }
    let mut anchors = BTreeSet::new();
    for h in markdown::headings(&runbook) {
        assert!(
            anchors.insert(h.anchor.clone()),
            "{RUNBOOK}: two headings render as #{}",
            h.anchor
        );
    }
    // Every in-page link points at a heading.
    for link in runbook.split("](#").skip(1) {
        let anchor = link.split(')').next().unwrap_or_default();
        assert!(
            anchors.contains(anchor),
            "{RUNBOOK} links to #{anchor}, which no heading renders"
        );
    }
}

#[test]
fn runbook_settings_table_names_every_breaker_key_with_its_default() {
    let runbook = read(RUNBOOK);
    let settings = markdown::section(&runbook, "5-settings-to-adjust-first").expect("section 5");
    let breaker = serde_json::to_value(BreakerConfig::default()).unwrap();
    let retry = serde_json::to_value(RetryConfig::default()).unwrap();
    let format = |v: &serde_json::Value| match v.as_f64() {
        Some(f) if f.fract() == 0.0 => format!("{f:.0}"),
        Some(f) => format!("{f}"),
        None => v.to_string(),
    };
    let mut problems = Vec::new();
    for (key, value) in breaker.as_object().unwrap() {
        let named = format!("`{key}`");
        if !settings.contains(&named) {
            problems.push(format!("the settings table does not name {named}"));
            continue;
        }
        if value.is_number() {
            let with_default = format!("`{key}` ({})", format(value));
            if !settings.contains(&with_default) {
                problems.push(format!("the settings table should show {with_default}"));
            }
        }
    }
    for (key, value) in retry.as_object().unwrap() {
        // Wherever the table shows a number after a retry key, it is the default.
        let named = format!("`retry.{key}` (");
        for after in settings.split(&named).skip(1) {
            let shown = after.split(')').next().unwrap_or_default();
            if shown.parse::<f64>().is_ok() && shown != format(value) {
                problems.push(format!(
                    "`retry.{key}` shown as ({shown}), default is {}",
                    format(value)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_component_in_the_lifecycle_table_has_reset_all() {
    let rows = table_rows(&read(LIFECYCLE));
    let mut checked = 0;
    for row in rows.iter().filter(|r| r.len() == 4) {
        let (Some(ty), Some(file)) = (
            backticked(&row[1]).first().copied(),
            backticked(&row[2]).first().copied(),
        ) else {
            continue;
        };
        let source = read_repo_file(file).unwrap_or_else(|e| panic!("{LIFECYCLE}: {ty}: {e}"));
        assert!(source.contains(ty), "{file} does not define {ty}");
        assert!(
            source.contains("fn reset_all("),
            "{ty} in {file} has no reset_all()"
        );
        checked += 1;
    }
    assert!(
        checked >= 6,
        "only {checked} components checked in {LIFECYCLE}"
    );
}

#[test]
fn every_helper_in_the_lifecycle_table_exists() {
    let source = read("crates/test-util/src/lib.rs");
    let helpers = markdown::section(&read(LIFECYCLE), "test-helpers-cratestest-util")
        .unwrap_or_else(|| panic!("{LIFECYCLE}: no test helpers section"));
    let mut checked = 0;
    for row in table_rows(&helpers) {
        for name in backticked(&row[0]) {
            let function = name.rsplit("::").next().unwrap_or(name);
            let defined = source.contains(&format!("pub fn {function}("))
                || source.contains(&format!("pub async fn {function}("));
            assert!(
                defined,
                "{LIFECYCLE} names `{name}`, which crates/test-util does not define"
            );
            if let Some((ty, _)) = name.split_once("::") {
                assert!(
                    source.contains(&format!("pub struct {ty}")),
                    "no `{ty}` in crates/test-util"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} helpers named in {LIFECYCLE}");
}

#[test]
fn runbook_uses_only_known_ctl_commands_and_flags() {
    let (commands, flags) = ctl_interface();
    for wanted in [
        "list",
        "status",
        "force-open",
        "force-closed",
        "release",
        "reset",
        "faults",
        "outbox",
    ] {
        assert!(
            commands.contains(wanted),
            "{CTL_SOURCE} has no `{wanted}`: {commands:?}"
        );
    }
    for wanted in ["--url", "--token", "--state"] {
        assert!(
            flags.contains(wanted),
            "{CTL_SOURCE} has no `{wanted}`: {flags:?}"
        );
    }
    let runbook = read(RUNBOOK);
    let states = [State::Closed, State::Open, State::HalfOpen].map(State::as_str);
    let mut uses = 0;
    for line in runbook.lines() {
        for rest in line.split("beamline-router ctl ").skip(1) {
            uses += 1;
            let rest = rest.split('`').next().unwrap_or_default();
            let words: Vec<&str> = rest.split_whitespace().collect();
            let command = words.first().copied().unwrap_or_default();
            assert!(
                commands.contains(command),
                "{RUNBOOK}: `ctl {command}` does not exist ({commands:?}) in: {line}"
            );
            for (i, word) in words.iter().enumerate() {
                if word.starts_with("--") {
                    assert!(
                        flags.contains(*word),
                        "{RUNBOOK}: unknown ctl flag `{word}` in: {line}"
                    );
                }
                if *word == "--state" {
                    let state = words.get(i + 1).copied().unwrap_or_default();
                    assert!(
                        states.contains(&state),
                        "{RUNBOOK}: --state {state} is not a state"
                    );
                }
            }
        }
    }
    assert!(
        uses >= 10,
        "the runbook should show ctl commands ({uses} found)"
    );
    assert!(
        runbook.contains("BEAMLINE_ADMIN_TOKEN") && source_mentions_env("BEAMLINE_ADMIN_TOKEN"),
        "the runbook should point at the token's environment variable, as the CLI reads it"
    );
}

fn source_mentions_env(var: &str) -> bool {
    read(CTL_SOURCE).contains(&format!("env = \"{var}\""))
}

#[test]
fn runbook_reproduction_scenario_exists() {
    let runbook = read(RUNBOOK);
    let mut found = 0;
    for block in markdown::code_blocks(&runbook) {
        for line in block
            .lines()
            .filter(|l| l.contains("beamline-router scenario run"))
        {
            let words: Vec<&str> = line.split_whitespace().collect();
            let name = words
                .iter()
                .position(|w| *w == "--scenario")
                .and_then(|i| words.get(i + 1))
                .expect("--scenario NAME");
            found += 1;
            let data_file = repo_path(&format!("scenarios/{name}.toml"));
            let in_code = std::fs::read_dir(repo_path("crates/scenario/src"))
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .any(|s| s.contains(&format!("\"{name}\"")));
            assert!(
                data_file.exists() || in_code,
                "the runbook reproduces with scenario `{name}`, but neither {} nor crates/scenario defines it",
                data_file.display()
            );
            assert!(
                runbook.contains(&format!("scenarios/{name}.toml")),
                "the runbook should name the data file"
            );
        }
    }
    assert!(
        found >= 1,
        "the runbook has no `beamline-router scenario run` command"
    );
}

/// The README's configuration example (the TOML block with `[broker]`) is a configuration
/// the router takes as it is, and so is its embedded-broker variant, and so is the tenant
/// policy example.
#[test]
fn the_readme_config_and_policy_examples_are_valid() {
    use beamline_server::config::ServerConfig;
    let readme = read_repo_file("README.md").unwrap();
    let blocks = markdown::code_blocks(&readme);
    let config = blocks
        .iter()
        .find(|b| b.contains("[broker]") && b.contains("[breaker]"))
        .expect("the README has a configuration example");
    let parsed: ServerConfig = toml::from_str(config).unwrap_or_else(|e| panic!("{e}\n{config}"));
    parsed
        .clone()
        .validate()
        .unwrap_or_else(|e| panic!("the README's example does not validate: {e}"));
    // `kind = "embedded"` takes only `max_messages`, as the comment in the example says.
    let embedded = config
        .lines()
        .filter(|l| {
            let key = l.split('=').next().unwrap_or("").trim();
            !matches!(key, "url" | "duplicate_window_secs")
        })
        .map(|l| {
            l.replace(
                "kind = \"nats\"",
                "kind = \"embedded\"\nmax_messages = 1000000",
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let parsed: ServerConfig =
        toml::from_str(&embedded).unwrap_or_else(|e| panic!("{e}\n{embedded}"));
    parsed.validate().unwrap();
    let policy = blocks
        .iter()
        .find(|b| b.contains("\"fallbacks\""))
        .expect("the README has a policy example");
    beamline_core::policy::TenantPolicyConfig::parse(policy)
        .unwrap_or_else(|e| panic!("{e}\n{policy}"))
        .validate(&BreakerConfig::default(), &RetryConfig::default())
        .unwrap_or_else(|e| panic!("the README's policy does not validate: {e}"));
}
