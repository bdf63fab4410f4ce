//! The Prometheus rule files in `ops/prometheus/` and their `promtool` unit tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Deserialize;

use crate::{read_repo_file, repo_path};

/// The alerting rules.
pub const ALERTS: &str = "ops/prometheus/alerts.yml";
/// The recording rules.
pub const RECORDING: &str = "ops/prometheus/recording.yml";
/// Every rule file, in the order Prometheus loads them.
pub const RULE_FILES: [&str; 2] = [RECORDING, ALERTS];
/// The directory of the `promtool test rules` files.
pub const TESTS_DIR: &str = "ops/prometheus/tests";

/// A rule file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// Rule groups.
    pub groups: Vec<Group>,
}

/// A rule group.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Evaluation interval, when not the global one.
    #[serde(default)]
    pub interval: Option<String>,
    /// Rules, evaluated in order.
    pub rules: Vec<Rule>,
}

/// An alerting or recording rule.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Alert name (alerting rules).
    #[serde(default)]
    pub alert: Option<String>,
    /// Recorded series name (recording rules).
    #[serde(default)]
    pub record: Option<String>,
    /// PromQL expression.
    pub expr: String,
    /// Pending duration (alerting rules).
    #[serde(default, rename = "for")]
    pub for_duration: Option<String>,
    /// Labels added to the alert or series.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations (alerting rules).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A `promtool test rules` file.
#[derive(Clone, Debug, Deserialize)]
pub struct TestFile {
    /// Rule files under test, relative to the test file.
    pub rule_files: Vec<String>,
    /// Test cases.
    pub tests: Vec<TestCase>,
}

/// One test case of a `promtool test rules` file.
#[derive(Clone, Debug, Deserialize)]
pub struct TestCase {
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Alert expectations.
    #[serde(default)]
    pub alert_rule_test: Vec<AlertTest>,
    /// Expression expectations.
    #[serde(default)]
    pub promql_expr_test: Vec<ExprTest>,
}

/// An expectation on one alert at one time.
#[derive(Clone, Debug, Deserialize)]
pub struct AlertTest {
    /// The alert.
    pub alertname: String,
    /// When.
    pub eval_time: String,
    /// The alerts expected to fire (empty: none).
    #[serde(default)]
    pub exp_alerts: Vec<serde_yaml::Value>,
}

/// An expectation on one expression at one time.
#[derive(Clone, Debug, Deserialize)]
pub struct ExprTest {
    /// The expression.
    pub expr: String,
}

fn parse_yaml<T: serde::de::DeserializeOwned>(relative: &str) -> Result<T, String> {
    let text = read_repo_file(relative)?;
    serde_yaml::from_str(&text).map_err(|e| format!("{relative}: {e}"))
}

/// Reads one rule file.
pub fn load(relative: &str) -> Result<RuleFile, String> {
    parse_yaml(relative)
}

/// Every rule of every rule file, with the file it is in.
pub fn all_rules() -> Result<Vec<(&'static str, Rule)>, String> {
    let mut out = Vec::new();
    for file in RULE_FILES {
        for group in load(file)?.groups {
            out.extend(group.rules.into_iter().map(|r| (file, r)));
        }
    }
    Ok(out)
}

/// Every alerting rule.
pub fn alerts() -> Result<Vec<Rule>, String> {
    Ok(all_rules()?
        .into_iter()
        .filter(|(_, r)| r.alert.is_some())
        .map(|(_, r)| r)
        .collect())
}

/// The names of every recording rule.
pub fn recorded_names() -> Result<BTreeSet<String>, String> {
    Ok(all_rules()?
        .into_iter()
        .filter_map(|(_, r)| r.record)
        .collect())
}

/// Every `promtool test rules` file, as repository-relative paths, sorted.
pub fn test_files() -> Result<Vec<String>, String> {
    let dir = repo_path(TESTS_DIR);
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml") || n.ends_with(".yaml"))
        .map(|n| format!("{TESTS_DIR}/{n}"))
        .collect();
    files.sort();
    Ok(files)
}

/// Every test file, parsed.
pub fn tests() -> Result<Vec<(String, TestFile)>, String> {
    test_files()?
        .into_iter()
        .map(|f| parse_yaml(&f).map(|t| (f, t)))
        .collect()
}

/// Absolute paths of the rule files (for `promtool check rules`).
pub fn rule_file_paths() -> Vec<PathBuf> {
    RULE_FILES.iter().map(|f| repo_path(f)).collect()
}
