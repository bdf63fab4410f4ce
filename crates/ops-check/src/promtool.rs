//! Running `promtool` (Debian package `prometheus`).
//!
//! A missing `promtool` is an error, never a skipped check: the rules are only known to
//! work when promtool has read them.

use std::path::Path;
use std::process::Command;

/// Where to find promtool: `$PROMTOOL` if set, else `promtool` on the `PATH`.
pub fn binary() -> String {
    std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_owned())
}

/// Runs `promtool` with `args` in `dir`; `Ok(output)` when it exits 0, else `Err` with
/// its full output, or with instructions when it cannot be started.
pub fn run(args: &[&str], dir: &Path) -> Result<String, String> {
    let bin = binary();
    let output = Command::new(&bin)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| {
            format!(
                "cannot run `{bin}` ({e}). promtool is required to check ops/prometheus: run \
                 `.ci/run` (it installs it) or `apt-get install -y --no-install-recommends \
                 prometheus`, or set PROMTOOL to its path"
            )
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "`{bin} {}` failed ({}):\n{text}",
            args.join(" "),
            output.status
        ))
    }
}
