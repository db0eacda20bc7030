//! The real `tollgate run`: a `gateway.toml` written to a temporary directory, the binary
//! started on free ports under supervision, and stopped as an operator would (SIGTERM) or
//! killed as a crash would (SIGKILL).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::client::request;
use super::process::{Supervised, free_port};

/// Where [`Gateway::start_capturing_log`] writes the gateway's stderr, in its directory.
const STDERR_FILE: &str = "stderr.log";

/// A running `tollgate run`. It is started under a small shell that sends it SIGTERM as soon as
/// the shell's stdin closes: on `stop`, and also when the test process exits without stopping it
/// (a failed assertion, or a gateway shared by the tests of a file), so no gateway outlives its
/// tests.
pub struct Gateway {
    child: Supervised,
    pub port: u16,
    /// The admin listener (`/metrics` answers without a token).
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
}

impl Gateway {
    /// Writes `gateway.toml` (listen addresses, a SQLite ledger in the temporary directory, the
    /// repository's price lists, then `proxy_extra` inside `[proxy]` and `rest` after it), starts
    /// the binary with `env` and waits until it accepts connections.
    pub fn start(proxy_extra: &str, rest: &str, env: &[(&str, &str)]) -> Gateway {
        Gateway::start_with_storage(proxy_extra, "", rest, env)
    }

    /// [`Gateway::start`] with `storage_extra` inside `[storage]` (the counter store).
    pub fn start_with_storage(
        proxy_extra: &str,
        storage_extra: &str,
        rest: &str,
        env: &[(&str, &str)],
    ) -> Gateway {
        Gateway::start_with_database(proxy_extra, "sqlite://ledger.db", storage_extra, rest, env)
    }

    /// [`Gateway::start_with_storage`] with the ledger at `database_url` (e.g. a
    /// `TestDatabase` shared by several gateways) rather than in the temporary directory.
    pub fn start_with_database(
        proxy_extra: &str,
        database_url: &str,
        storage_extra: &str,
        rest: &str,
        extra_env: &[(&str, &str)],
    ) -> Gateway {
        let database = (database_url, storage_extra, "");
        Gateway::launch(proxy_extra, database, rest, extra_env, false)
    }

    /// [`Gateway::start_with_database`] with `ledger_extra` inside `[ledger]` (its
    /// `flush_interval_ms`, if set, replaces the harness's 20 ms).
    pub fn start_with_ledger(
        database_url: &str,
        ledger_extra: &str,
        rest: &str,
        env: &[(&str, &str)],
    ) -> Gateway {
        Gateway::launch("", (database_url, "", ledger_extra), rest, env, false)
    }

    /// [`Gateway::start`] with the gateway's stderr written to a file in its temporary
    /// directory instead of the test's, for the test to read ([`Gateway::log`]).
    pub fn start_capturing_log(proxy_extra: &str, rest: &str, env: &[(&str, &str)]) -> Gateway {
        let database = ("sqlite://ledger.db", "", "");
        Gateway::launch(proxy_extra, database, rest, env, true)
    }

    /// [`Gateway::start_capturing_log`] with the ledger at `database_url` and `ledger_extra`
    /// inside `[ledger]`.
    pub fn start_capturing_log_with_ledger(
        proxy_extra: &str,
        (database_url, ledger_extra): (&str, &str),
        rest: &str,
        env: &[(&str, &str)],
    ) -> Gateway {
        Gateway::launch(
            proxy_extra,
            (database_url, "", ledger_extra),
            rest,
            env,
            true,
        )
    }

    /// Everything the gateway has written to stderr so far (a gateway started with
    /// [`Gateway::start_capturing_log`]). Info lines are buffered for up to 100 ms.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(STDERR_FILE)).unwrap()
    }

    /// [`Gateway::start`] with `admin_extra` inside `[admin]`.
    pub fn start_with_admin(admin_extra: &str, rest: &str, env: &[(&str, &str)]) -> Gateway {
        let database = ("sqlite://ledger.db", "", "");
        Gateway::launch_with_admin(admin_extra, "", database, rest, env, false)
    }

    fn launch(
        proxy_extra: &str,
        database: (&str, &str, &str),
        rest: &str,
        extra_env: &[(&str, &str)],
        capture_log: bool,
    ) -> Gateway {
        Gateway::launch_with_admin("", proxy_extra, database, rest, extra_env, capture_log)
    }

    fn launch_with_admin(
        admin_extra: &str,
        proxy_extra: &str,
        (database_url, storage_extra, ledger_extra): (&str, &str, &str),
        rest: &str,
        extra_env: &[(&str, &str)],
        capture_log: bool,
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let admin_port = free_port();
        let pricing: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pricing");
        // No grace period unless the test sets one: a stopped gateway ends at once.
        let grace = if proxy_extra.contains("graceful_shutdown_secs") {
            ""
        } else {
            "graceful_shutdown_secs = 0"
        };
        // Batches flushed at once unless the test says otherwise: rows are there to read.
        let flush = if ledger_extra.contains("flush_interval_ms") {
            ""
        } else {
            "flush_interval_ms = 20"
        };
        let config = format!(
            r#"
[proxy]
listen = "127.0.0.1:{port}"
{grace}
{proxy_extra}
[admin]
listen = "127.0.0.1:{admin_port}"
metrics_public = true
{admin_extra}
[storage]
database_url = "{database_url}"
{storage_extra}
[ledger]
{flush}
{ledger_extra}
[pricing]
dir = "{pricing}"
{rest}
"#,
            pricing = pricing.display(),
        );
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, config).unwrap();
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_tollgate-e2e"));
        let config_arg = config_path.display().to_string();
        let mut env: Vec<(&str, &str)> = vec![("RUST_LOG", "warn,tollgate=info")];
        env.extend_from_slice(extra_env);
        let stderr = if capture_log {
            Stdio::from(std::fs::File::create(dir.path().join(STDERR_FILE)).unwrap())
        } else {
            Stdio::inherit()
        };
        let mut child = Supervised::spawn_with_stderr(
            &binary,
            &["run", "--config", &config_arg],
            &env,
            "TERM",
            dir.path(),
            stderr,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.exit_status() {
                panic!("the gateway exited before listening: {status}");
            }
            assert!(Instant::now() < deadline, "gateway did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Gateway {
            child,
            port,
            admin_port,
            dir,
        }
    }

    /// Starts `tollgate run --upgrade` (or, with `upgrade` false, a plain second `run`) on the
    /// same configuration and directory with `env`, and waits until it has written its pid file
    /// (it holds the listening sockets then). Answers the new gateway and the old process, which
    /// drains and exits by itself.
    pub fn replace(self, env: &[(&str, &str)], upgrade: bool) -> (Gateway, Supervised) {
        let Gateway {
            child: old,
            port,
            admin_port,
            dir,
        } = self;
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_tollgate-e2e"));
        let config_arg = dir.path().join("gateway.toml").display().to_string();
        let mut args = vec!["run", "--config", &config_arg];
        if upgrade {
            args.push("--upgrade");
        }
        let mut all_env: Vec<(&str, &str)> = vec![("RUST_LOG", "warn,tollgate=info")];
        all_env.extend_from_slice(env);
        let mut child = Supervised::spawn(&binary, &args, &all_env, "TERM", dir.path());
        let pid_file = dir.path().join(format!("var/run/tollgate-{port}.pid"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let written = std::fs::read_to_string(&pid_file).unwrap_or_default();
            if written.trim() == child.pid() {
                break;
            }
            if let Some(status) = child.exit_status() {
                panic!("the new gateway exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the new gateway did not take over"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let new = Gateway {
            child,
            port,
            admin_port,
            dir,
        };
        (new, old)
    }

    /// Whether the process is still running (a request must never bring it down).
    pub fn is_alive(&mut self) -> bool {
        self.child.exit_status().is_none()
    }

    /// The ledger's URL, for reading it while the gateway runs or after it stopped.
    pub fn ledger_url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("ledger.db").display())
    }

    /// Stops the gateway the way an operator would (SIGTERM), waits for it to drain and returns
    /// its directory, ledger included. Fails if it did not exit cleanly (a panic at shutdown).
    pub fn stop(mut self) -> tempfile::TempDir {
        self.child.stop();
        self.dir
    }

    /// Sends SIGTERM, as an orchestrator stopping it would, without waiting for it to end.
    pub fn terminate(&self) {
        self.child.signal("TERM");
    }

    /// Waits for a gateway sent SIGTERM ([`Gateway::terminate`]) to end cleanly; returns its
    /// directory.
    pub fn wait(mut self) -> tempfile::TempDir {
        self.child.stop();
        self.dir
    }

    /// Kills the gateway outright (SIGKILL), as a crash or an OOM kill would: nothing drains.
    /// Returns its directory, with whatever the ledger had written.
    pub fn kill(mut self) -> tempfile::TempDir {
        self.child.kill();
        self.dir
    }

    /// The `gateway.toml` it runs with, for a test to edit.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.toml")
    }

    /// Rewrites `gateway.toml` with `edit` applied to its text.
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, edit(text)).unwrap();
    }

    /// Sends `SIG<name>` to the gateway (`HUP`: reload its configuration).
    pub fn signal(&self, name: &str) {
        self.child.signal(name);
    }

    /// The admin `/metrics` text.
    pub fn scrape(&self) -> String {
        let response = request(self.admin_port, "GET", "/metrics", &[], b"");
        assert_eq!(response.status, 200, "{}", response.text());
        response.text()
    }

    /// The value of a series on the admin `/metrics` (`name`, or `name{labels}` with its labels
    /// in any order), if it is there.
    pub fn metric(&self, series: &str) -> Option<f64> {
        super::metrics::sample_value(&super::metrics::parse_samples(&self.scrape()), series)
    }
}
