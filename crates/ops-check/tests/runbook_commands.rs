//! The runbook's reproduction command runs, so it cannot rot: every
//! `beamline-router scenario run --profile P --scenario S` line in the runbook's code
//! blocks is parsed and carried out through the scenario runner's public API (the same call
//! the CLI makes) against an in-process router on the embedded broker, and must pass.

use beamline_ops_check::{markdown, read_repo_file};
use beamline_scenario::{Profile, RunOptions, SCENARIOS, Target};

const RUNBOOK: &str = "docs/runbook/provider-incidents.md";

/// `(profile, scenarios)` of every `scenario run` command in the runbook's code blocks.
fn scenario_commands() -> Vec<(String, Vec<String>)> {
    let runbook = read_repo_file(RUNBOOK).unwrap_or_else(|e| panic!("{e}"));
    let mut commands = Vec::new();
    for block in markdown::code_blocks(&runbook) {
        for line in block.lines() {
            let Some(args) = line.trim().strip_prefix("beamline-router scenario run") else {
                continue;
            };
            let words: Vec<&str> = args.split_whitespace().collect();
            let mut profile = "ci".to_owned();
            let mut scenarios = Vec::new();
            for pair in words.windows(2) {
                match pair[0] {
                    "--profile" => profile = pair[1].to_owned(),
                    "--scenario" => scenarios.push(pair[1].to_owned()),
                    _ => {}
                }
            }
            for flag in words.iter().filter(|w| w.starts_with("--")) {
                assert!(
                    ["--profile", "--scenario"].contains(flag),
                    "{RUNBOOK}: `{flag}` in `{line}` is not handled by this test"
                );
            }
            commands.push((profile, scenarios));
        }
    }
    commands
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_reproduction_command_runs_and_passes() {
    let commands = scenario_commands();
    assert!(
        !commands.is_empty(),
        "{RUNBOOK} has no `beamline-router scenario run` command"
    );
    for (profile_name, scenarios) in commands {
        let profile = Profile::by_name(&profile_name)
            .unwrap_or_else(|| panic!("{RUNBOOK}: unknown profile `{profile_name}`"));
        assert!(
            !scenarios.is_empty(),
            "{RUNBOOK}: name the scenario to reproduce with"
        );
        for name in &scenarios {
            assert!(
                SCENARIOS.iter().any(|(n, _)| n == name),
                "{RUNBOOK}: unknown scenario `{name}`; known: {:?}",
                SCENARIOS.iter().map(|(n, _)| n).collect::<Vec<_>>()
            );
        }
        let report = beamline_scenario::run(RunOptions {
            scenarios: scenarios.clone(),
            ..RunOptions::quiet(profile, Target::Embedded, 7)
        })
        .await
        .unwrap_or_else(|e| panic!("`scenario run --profile {profile_name}` could not run: {e}"));
        assert!(
            report.passed(),
            "the runbook's reproduction ({profile_name}, {scenarios:?}) failed:\n{}",
            report.render_text()
        );
    }
}
