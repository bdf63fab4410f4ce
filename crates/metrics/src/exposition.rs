//! A parser of the Prometheus/OpenMetrics text exposition.
//!
//! Readers of metrics (tests, the scenario runner, `ctl`) scrape `/metrics` and parse it
//! here: they never reach into the registry, so what they check is what Prometheus sees.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One sample: a series and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Series name (`router_publish_duration_seconds_bucket`, ...).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// Whether every `(name, value)` in `labels` is on this sample.
    pub fn matches(&self, labels: &[(&str, &str)]) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.labels.get(*k).is_some_and(|x| x == v))
    }
}

/// A malformed exposition line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

/// A parsed exposition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    samples: Vec<Sample>,
}

impl Snapshot {
    /// Parses a text exposition.
    pub fn parse(text: &str) -> Result<Snapshot, ParseError> {
        let mut samples = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |problem: &str| ParseError {
                line: i + 1,
                problem: problem.to_owned(),
            };
            let (name, labels, rest) = match line.find('{') {
                Some(open) => {
                    let (labels, after) = parse_labels(&line[open + 1..]).map_err(|p| err(&p))?;
                    (&line[..open], labels, after)
                }
                None => {
                    let end = line.find(' ').ok_or_else(|| err("no value"))?;
                    (&line[..end], BTreeMap::new(), &line[end..])
                }
            };
            let value_text = rest
                .split_whitespace()
                .next()
                .ok_or_else(|| err("no value"))?;
            let value = match value_text {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse::<f64>().map_err(|_| err("value is not a number"))?,
            };
            samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        Ok(Snapshot { samples })
    }

    /// Every sample.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Samples named `name` carrying `labels`.
    pub fn select<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.samples
            .iter()
            .filter(move |s| s.name == name && s.matches(labels))
    }

    /// The sum of the samples named `name` carrying `labels` (0 when none).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.select(name, labels).map(|s| s.value).sum()
    }

    /// Whether any sample named `name` carries `labels`.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.select(name, labels).next().is_some()
    }

    /// The samples whose name starts with one of `prefixes`, one per line, for failure
    /// messages.
    pub fn dump(&self, prefixes: &[&str]) -> String {
        let mut out = String::new();
        for s in self
            .samples
            .iter()
            .filter(|s| prefixes.iter().any(|p| s.name.starts_with(p)))
        {
            let labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            let _ = writeln!(out, "{}{{{}}} {}", s.name, labels.join(","), s.value);
        }
        out
    }
}

fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = rest[..eq].trim().to_owned();
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated escape".into()),
                },
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        labels.insert(name, value);
        rest = &rest[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_labels_escapes_and_special_values() {
        let text = "# HELP x y\nplain 3\nwith{a=\"1\",b=\"q\\\"x\"} 2.5\nh_bucket{le=\"+Inf\"} 4\ninf +Inf\n# EOF\n";
        let s = Snapshot::parse(text).unwrap();
        assert_eq!(s.value("plain", &[]), 3.0);
        assert_eq!(s.value("with", &[("b", "q\"x")]), 2.5);
        assert_eq!(s.value("h_bucket", &[("le", "+Inf")]), 4.0);
        assert!(s.value("inf", &[]).is_infinite());
        assert_eq!(s.value("missing", &[]), 0.0);
    }

    #[test]
    fn reports_the_line_of_a_malformed_sample() {
        assert_eq!(Snapshot::parse("ok 1\nbad{a=1} 2\n").unwrap_err().line, 2);
        assert!(Snapshot::parse("x notanumber\n").is_err());
    }
}
