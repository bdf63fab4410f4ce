//! The access rule (DESIGN.md §7, docs/OBSERVABILITY_CONVENTIONS.md): code that reads the
//! router's metrics — every integration test, the scenario runner, the test helpers and
//! the CLI — does so through this crate's per-risk access modules (`r10`, `r11`) on a
//! parsed scrape. It never touches the Prometheus registry, never renders it itself, and
//! never spells a metric name as a string.
//!
//! `crates/ops-check` is exempt: it checks PromQL artifacts (dashboard, alert rules)
//! against a real Prometheus, and PromQL is text by nature; it cross-checks every name it
//! finds against `names::ALL`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn metric_readers_go_through_the_access_modules() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(crates).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "metrics" || name == "ops-check" {
            continue;
        }
        rust_files(&entry.path().join("tests"), &mut files);
        if ["scenario", "test-util", "cli"].contains(&name.as_str()) {
            rust_files(&entry.path().join("src"), &mut files);
        }
    }
    assert!(files.len() > 10, "found too few files to check: {files:?}");
    let forbidden = [
        ("prometheus_client", "reaches into the Prometheus registry"),
        (
            ".render()",
            "renders the registry instead of scraping /metrics",
        ),
        (
            "\"router_",
            "spells a metric name as a string: use the r10/r11 constants",
        ),
    ];
    let mut violations = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (number, line) in text.lines().enumerate() {
            for (pattern, why) in forbidden {
                if line.contains(pattern) && !line.trim_start().starts_with("//") {
                    violations.push(format!(
                        "{}:{}: {why}: {}",
                        file.display(),
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "metrics read around the access modules:\n{}",
        violations.join("\n")
    );
}
