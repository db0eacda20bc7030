//! What the tests of `deploy/` share: where the folder is, the external checkers it is
//! validated with (Debian's `promtool` and `prometheus`, `systemd-analyze`, and the Python
//! validators `./dev` installs in a virtualenv named by `TOLLGATE_DEPLOY_TOOLS`), and a
//! Prometheus server run as a process of the test's own (`prometheus`).
//!
//! A missing checker skips its test with a message, unless `TOLLGATE_REQUIRE_DEPLOY_TOOLS` is
//! set (`./dev test` sets it after installing them): then it fails, so CI cannot skip silently.

#![allow(dead_code)]

pub mod prometheus;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's `deploy/` folder.
pub fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `name` on `PATH` or in `TOLLGATE_DEPLOY_TOOLS` (a virtualenv's `bin`), if it is there.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let extra = std::env::var_os("TOLLGATE_DEPLOY_TOOLS").map(PathBuf::from);
    let path = std::env::var_os("PATH").unwrap_or_default();
    extra
        .into_iter()
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The checker `name`, or `None` after saying why the test is skipped. Fails the test instead
/// when `TOLLGATE_REQUIRE_DEPLOY_TOOLS` is set.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let found = find_tool(name);
    if found.is_none() {
        assert!(
            std::env::var_os("TOLLGATE_REQUIRE_DEPLOY_TOOLS").is_none(),
            "{name} is missing and TOLLGATE_REQUIRE_DEPLOY_TOOLS is set: run ./dev test, which \
             installs it (Debian's prometheus and systemd packages; kubernetes-validate and \
             check-jsonschema in a virtualenv named by TOLLGATE_DEPLOY_TOOLS)"
        );
        eprintln!(
            "SKIPPED: {name} is not installed (./dev test installs it; set \
             TOLLGATE_REQUIRE_DEPLOY_TOOLS to make this a failure)"
        );
    }
    found
}

/// Runs `program args` and fails the test, with everything it printed, unless it succeeded.
pub fn run_ok(program: &Path, args: &[&str]) -> Output {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{} {args:?} failed ({}):\n{}\n{}",
        program.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Replaces `from` with `to` in `text`, failing if `from` is not there: a rewrite of a shipped
/// file that no longer applies must not pass unnoticed.
pub fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "expected {from:?} in:\n{text}");
    text.replacen(from, to, 1)
}
