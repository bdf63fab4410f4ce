//! The Grafana dashboard `ops/grafana/beamline-router.json`.
//!
//! Grafana itself cannot run here, so the dashboard is checked as data: its panels, their
//! queries with Grafana's variables substituted, and its template variables.

use serde_json::Value;

use crate::read_repo_file;

/// The dashboard file.
pub const DASHBOARD: &str = "ops/grafana/beamline-router.json";

/// The template variables the dashboard must offer (tenant and provider filters).
pub const FILTER_VARIABLES: [&str; 2] = ["tenant_id", "provider_id"];

/// One query of one panel.
#[derive(Clone, Debug)]
pub struct Query {
    /// The panel's title.
    pub panel: String,
    /// The panel's type (`timeseries`, `stat`, `state-timeline`, ...).
    pub panel_type: String,
    /// The target's `refId`.
    pub ref_id: String,
    /// The expression as written, with Grafana variables.
    pub expr: String,
    /// Whether Grafana runs it as an instant query.
    pub instant: bool,
}

/// Reads and parses the dashboard.
pub fn load() -> Result<Value, String> {
    let text = read_repo_file(DASHBOARD)?;
    serde_json::from_str(&text).map_err(|e| format!("{DASHBOARD}: {e}"))
}

/// Every panel that is not a row, including the panels of collapsed rows.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        if panel["type"] == "row" {
            out.extend(panel["panels"].as_array().into_iter().flatten());
        } else {
            out.push(panel);
        }
    }
    out
}

/// Every query of every panel.
pub fn queries(dashboard: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                panel: panel["title"].as_str().unwrap_or("?").to_owned(),
                panel_type: panel["type"].as_str().unwrap_or("?").to_owned(),
                ref_id: target["refId"].as_str().unwrap_or("?").to_owned(),
                expr: target["expr"].as_str().unwrap_or_default().to_owned(),
                instant: target["instant"].as_bool().unwrap_or(false),
            });
        }
    }
    out
}

/// The template variables.
pub fn variables(dashboard: &Value) -> Vec<&Value> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .collect()
}

/// The query text of a query variable (Grafana stores it as a string or an object).
pub fn variable_query(variable: &Value) -> Option<&str> {
    variable["query"]
        .as_str()
        .or_else(|| variable["query"]["query"].as_str())
}

/// Replaces Grafana's built-in interval variables and the dashboard's own variables, so
/// the expression can be parsed or sent to Prometheus. `var` gives the text for a
/// dashboard variable name (`$name`, `${name}`, `${name:format}`, `[[name]]`).
pub fn substitute(
    expr: &str,
    rate_interval: &str,
    range: &str,
    var: &dyn Fn(&str) -> String,
) -> String {
    let builtins = [
        ("$__rate_interval", rate_interval),
        ("${__rate_interval}", rate_interval),
        ("$__range", range),
        ("${__range}", range),
        ("$__interval", rate_interval),
        ("${__interval}", rate_interval),
    ];
    let mut out = expr.to_owned();
    for (name, value) in builtins {
        out = out.replace(name, value);
    }
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(pos) = rest.find(['$', '[']) {
        result.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        let (name, consumed) = if let Some(inner) = tail.strip_prefix("${") {
            let end = inner.find('}').unwrap_or(inner.len());
            let name = inner[..end].split(':').next().unwrap_or_default();
            (name, end + 3)
        } else if let Some(inner) = tail.strip_prefix("[[") {
            let end = inner.find("]]").unwrap_or(inner.len());
            (&inner[..end], end + 4)
        } else if let Some(inner) = tail.strip_prefix('$') {
            let end = inner
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(inner.len());
            (&inner[..end], end + 1)
        } else {
            ("", 0)
        };
        if name.is_empty() {
            result.push_str(&tail[..1]);
            rest = &tail[1..];
        } else {
            result.push_str(&var(name));
            rest = tail.get(consumed..).unwrap_or_default();
        }
    }
    result.push_str(rest);
    result
}

/// The selector of a `label_values(selector, label)` variable query, and the label.
pub fn label_values_query(query: &str) -> Option<(&str, &str)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some((selector.trim(), label.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> String {
        format!("<{name}>")
    }

    #[test]
    fn substitutes_builtins_and_every_variable_syntax() {
        let got = substitute(
            r#"rate(x{a=~"$tenant_id",b=~"${provider_id:regex}",c="[[d]]"}[$__rate_interval]) offset $__range"#,
            "1m",
            "1h",
            &vars,
        );
        assert_eq!(
            got,
            r#"rate(x{a=~"<tenant_id>",b=~"<provider_id>",c="<d>"}[1m]) offset 1h"#
        );
    }

    #[test]
    fn leaves_brackets_and_lone_dollars_alone() {
        assert_eq!(substitute("x[5m] $ y", "1m", "1h", &vars), "x[5m] $ y");
    }

    #[test]
    fn reads_label_values_queries() {
        assert_eq!(
            label_values_query(r#"label_values(m{a=~"$a"}, b)"#),
            Some((r#"m{a=~"$a"}"#, "b"))
        );
    }
}
