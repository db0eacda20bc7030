//! The official `openai` and `anthropic` Python SDKs, run against the gateway from the scripts
//! in `tests/harness/python/`, so the tests see what those clients see.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Python interpreter that has the official `openai` and `anthropic` SDKs installed, from
/// `TOLLGATE_SDK_PYTHON`. `./dev test` prepares it; without it the SDK tests fail rather than
/// pass having tested nothing.
pub fn sdk_python() -> PathBuf {
    match std::env::var_os("TOLLGATE_SDK_PYTHON") {
        Some(python) if !python.is_empty() => PathBuf::from(python),
        _ => panic!(
            "TOLLGATE_SDK_PYTHON is not set: these tests drive the gateway with the official \
             openai and anthropic Python SDKs. Run `./dev test`, which installs them in a \
             virtualenv and sets it, or set TOLLGATE_SDK_PYTHON to a Python that has the \
             versions pinned in ./dev."
        ),
    }
}

/// Runs `tests/harness/python/<script>` with `args` and returns the JSON object it prints; fails with the
/// script's traceback if it exits non-zero.
///
/// The environment is emptied, so no `OPENAI_*`/`ANTHROPIC_*` variable or HTTP proxy of the
/// developer's shell can redirect the SDKs: they reach only the URLs given in `args`. `-I`
/// ignores user site-packages and `PYTHON*` variables; `-B` keeps `__pycache__` out of the
/// source tree.
pub fn run_sdk_script(python: &Path, script: &str, args: &[&str]) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("harness/python")
        .join(script);
    let output = Command::new(python)
        .arg("-I")
        .arg("-B")
        .arg(&path)
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (TOLLGATE_SDK_PYTHON): {e}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{}\n{stdout}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {stdout}"))
}
