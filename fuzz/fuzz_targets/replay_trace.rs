//! `beamline-router replay`: any UTF-8 text through `beamline_core::replay::replay` with
//! the CLI's default limits. It must answer `Ok` or a `TraceError`, never panic, and an
//! `Ok` output must render as JSON Lines ending with the summary.
#![no_main]

use beamline_core::replay;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(trace) = std::str::from_utf8(data) else {
        return;
    };
    match replay::replay(trace, None) {
        Ok(output) => {
            let text = output.to_json_lines();
            let last = text.lines().last().expect("at least the summary line");
            let summary: serde_json::Value =
                serde_json::from_str(last).expect("the summary line is JSON");
            assert!(summary.get("summary").is_some(), "{last}");
            for line in text.lines() {
                serde_json::from_str::<serde_json::Value>(line).expect("every line is JSON");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
