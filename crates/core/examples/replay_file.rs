//! Replays a trace file and prints the output: `cargo run -p beamline-core --example
//! replay_file -- TRACE.jsonl [CONFIG]` (the real CLI is `beamline-router replay`).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use beamline_core::replay::{ReplayConfig, replay};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: replay_file TRACE.jsonl [CONFIG]");
        std::process::exit(2);
    };
    let mut run = || -> Result<String, String> {
        let trace = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        let config = match args.next() {
            Some(c) => Some(
                ReplayConfig::from_toml_or_json(
                    &std::fs::read_to_string(c).map_err(|e| e.to_string())?,
                )
                .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        Ok(replay(&trace, config)
            .map_err(|e| e.to_string())?
            .to_json_lines())
    };
    match run() {
        Ok(out) => print!("{out}"),
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    }
}
