//! Where a running gateway keeps its pid file and where a new process started with
//! `tollgate run --upgrade` receives the listening sockets: both default to the state directory
//! beside the configuration (`var/run/`, as the spool's `var/spool/`), with the proxy's port in
//! their names so that two gateways on one host do not meet there.

use std::path::{Path, PathBuf};

use crate::problem::FileProblems;
use crate::raw;

/// The longest path a Unix socket can be bound at (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH_BYTES: usize = 107;

/// `[proxy] upgrade_socket` and `pid_file`, relative to the configuration's directory.
pub(super) fn paths(
    p: &mut FileProblems,
    raw: &raw::Proxy,
    base_dir: &Path,
    port: u16,
) -> (PathBuf, PathBuf) {
    let socket_default = format!("var/run/tollgate-{port}.upgrade.sock");
    let pid_default = format!("var/run/tollgate-{port}.pid");
    let socket = path(
        p,
        "upgrade_socket",
        raw.upgrade_socket.as_deref(),
        &socket_default,
        base_dir,
    );
    let pid_file = path(
        p,
        "pid_file",
        raw.pid_file.as_deref(),
        &pid_default,
        base_dir,
    );
    let bytes = socket.as_os_str().len();
    if bytes > MAX_SOCKET_PATH_BYTES {
        p.error(
            &["proxy", "upgrade_socket"],
            format!(
                "{} is {bytes} bytes long; a Unix socket's path can have at most \
                 {MAX_SOCKET_PATH_BYTES}: choose a shorter one (e.g. under /run or /tmp)",
                socket.display()
            ),
        );
    }
    if socket == pid_file {
        p.error(
            &["proxy", "pid_file"],
            format!(
                "{} is also proxy.upgrade_socket: give the pid file and the upgrade socket \
                 paths of their own",
                pid_file.display()
            ),
        );
    }
    (socket, pid_file)
}

fn path(
    p: &mut FileProblems,
    key: &str,
    raw: Option<&str>,
    default: &str,
    base_dir: &Path,
) -> PathBuf {
    match raw {
        Some(text) if text.trim().is_empty() || text.ends_with('/') => {
            p.error(
                &["proxy", key],
                format!("{text:?} is not a file path (expected e.g. {default:?})"),
            );
            base_dir.join(default)
        }
        Some(text) => base_dir.join(text),
        None => base_dir.join(default),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn load(proxy: &str) -> Result<crate::Config, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pricing")).unwrap();
        let path = dir.path().join("gateway.toml");
        // Unpriced models allowed: the providers need no pricing files here.
        let text = format!("[pricing]\nunpriced_model = \"allow\"\n[proxy]\n{proxy}\n");
        std::fs::write(&path, text).unwrap();
        crate::load_with_env(&path, &|_| None)
            .map(|loaded| loaded.config)
            .map_err(|report| report.to_string())
    }

    #[test]
    fn the_defaults_name_the_port_under_the_state_directory() {
        let config = load("listen = \"127.0.0.1:8181\"").unwrap();
        let base = config.path.parent().unwrap().to_owned();
        assert_eq!(
            config.proxy.upgrade_socket,
            base.join("var/run/tollgate-8181.upgrade.sock")
        );
        assert_eq!(
            config.proxy.pid_file,
            base.join("var/run/tollgate-8181.pid")
        );
    }

    #[test]
    fn paths_are_taken_as_given_or_from_the_configuration_s_directory() {
        let config = load("upgrade_socket = \"/run/tg.sock\"\npid_file = \"run/tg.pid\"").unwrap();
        assert_eq!(config.proxy.upgrade_socket, Path::new("/run/tg.sock"));
        assert!(config.proxy.pid_file.ends_with("run/tg.pid"));
        assert!(config.proxy.pid_file.is_absolute());
    }

    #[test]
    fn a_socket_path_too_long_to_bind_is_refused_with_its_line() {
        let long = format!("/tmp/{}.sock", "s".repeat(120));
        let report = load(&format!("upgrade_socket = \"{long}\"")).unwrap_err();
        assert!(report.contains("proxy.upgrade_socket"), "{report}");
        assert!(report.contains("at most 107"), "{report}");
    }

    #[test]
    fn the_pid_file_and_the_socket_must_differ_and_be_files() {
        let report = load("upgrade_socket = \"/tmp/x\"\npid_file = \"/tmp/x\"").unwrap_err();
        assert!(report.contains("proxy.pid_file"), "{report}");
        let report = load("pid_file = \"/tmp/\"").unwrap_err();
        assert!(report.contains("not a file path"), "{report}");
    }
}
