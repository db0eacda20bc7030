//! Records what built the binary, for `tollgate_build_info`: the compiler's version and the
//! git commit. A build outside a git checkout (a source tarball, a container without `.git`)
//! still succeeds: the commit is then `TOLLGATE_GIT_SHA` if set, else "unknown".

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=TOLLGATE_GIT_SHA");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    // "rustc 1.91.0 (f8297e351 2025-10-28)": the version is the second word.
    let rustc_version = output(&rustc, &["--version"], None)
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_owned());
    let dir = Path::new(&manifest_dir);
    let git_sha = std::env::var("TOLLGATE_GIT_SHA")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| output("git", &["rev-parse", "--short=12", "HEAD"], Some(dir)))
        .unwrap_or_else(|| "unknown".to_owned());
    // Build again when the commit moves: HEAD, the branch it names, and packed refs.
    for git_path in ["HEAD", "packed-refs"] {
        if let Some(path) = output("git", &["rev-parse", "--git-path", git_path], Some(dir)) {
            println!("cargo:rerun-if-changed={}", dir.join(path).display());
        }
    }
    if let Some(branch) = output("git", &["symbolic-ref", "-q", "HEAD"], Some(dir))
        && let Some(path) = output("git", &["rev-parse", "--git-path", &branch], Some(dir))
    {
        println!("cargo:rerun-if-changed={}", dir.join(path).display());
    }
    println!("cargo:rustc-env=TOLLGATE_RUSTC_VERSION={rustc_version}");
    println!("cargo:rustc-env=TOLLGATE_GIT_SHA={git_sha}");
}

/// A command's trimmed standard output, if it ran and succeeded.
fn output(program: &str, args: &[&str], dir: Option<&Path>) -> Option<String> {
    let mut command = Command::new(program);
    command.args(args);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let out = command.output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_owned())
}
