//! Servers the tests start as processes of their own: each on a port nobody else holds, and
//! under a small supervising shell so that none outlives the test process, however it ends.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A port nobody listens on right now, for a server about to be started on it; never the same
/// port twice in one test process.
///
/// A port from a bind to port 0 would be free only until the next such bind, which the kernel
/// may hand that same port: a mock's listener, or another gateway of a test running alongside.
/// Gateways bind with `SO_REUSEPORT`, so two of them on one port both start, and the kernel
/// splits the connections between them. The ports here are below the kernel's ephemeral range
/// (`ip_local_port_range`), which binds to port 0 and outgoing connections never use.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let low = 10_000.min(ephemeral_low / 2);
    let span = ephemeral_low - low;
    // Test processes of their own (each test binary, `cargo test` of other crates) start at
    // different places in the range.
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(low + (start + n) % span).unwrap();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port from {low} to {ephemeral_low}");
}

/// A server process started under a small shell that kills it as soon as the shell's stdin
/// closes: on `stop`/`kill`, and also when the test process exits without stopping it (a failed
/// assertion, or a server shared by the tests of a file), so that nothing outlives its tests.
/// The shell writes the server's pid to `<dir>/pid-<n>`, for sending it signals.
pub struct Supervised {
    shell: Child,
    stdin: Option<ChildStdin>,
    pid_file: PathBuf,
}

impl Supervised {
    /// Starts `program args` with `env`; closing stdin sends it `SIG<on_close>`. Its stderr is
    /// the test's.
    pub fn spawn(
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        on_close: &str,
        dir: &Path,
    ) -> Supervised {
        Supervised::spawn_with_stderr(program, args, env, on_close, dir, Stdio::inherit())
    }

    /// [`Supervised::spawn`] with the process's stderr going to `stderr` (a file, say).
    pub fn spawn_with_stderr(
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        on_close: &str,
        dir: &Path,
        stderr: Stdio,
    ) -> Supervised {
        static SPAWNED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SPAWNED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let pid_file = dir.join(format!("pid-{n}"));
        let mut command = Command::new("sh");
        command
            .arg("-c")
            // An asynchronous list reads /dev/null unless told otherwise, hence fd 3.
            .arg(format!(
                r#"exec 3<&0; pidfile="$1"; shift; "$@" 3<&- & pid=$!; echo "$pid" > "$pidfile"; (read -r _ <&3; kill -{on_close} "$pid" 2>/dev/null) & wait "$pid""#
            ))
            .arg("sh")
            .arg(&pid_file)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut shell = command.spawn().unwrap();
        let stdin = shell.stdin.take();
        Supervised {
            shell,
            stdin,
            pid_file,
        }
    }

    /// How the process ended, if it has (the shell exits with the server's status).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.shell.try_wait().unwrap()
    }

    /// The server's pid (as the shell wrote it).
    pub fn pid(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pid = std::fs::read_to_string(&self.pid_file).unwrap_or_default();
            if pid.ends_with('\n') {
                return pid.trim().to_owned();
            }
            assert!(Instant::now() < deadline, "no pid in {:?}", self.pid_file);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Closes stdin (the shell sends its signal) and waits for the process to end, which must
    /// be a clean exit (a panic while draining is a failure).
    pub fn stop(&mut self) {
        self.wait_for_end(true);
    }

    fn wait_for_end(&mut self, must_succeed: bool) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.exit_status() {
                assert!(
                    !must_succeed || status.success(),
                    "{:?} exited with {status}",
                    self.pid_file
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{:?} did not stop",
                self.pid_file
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `SIG<name>` (`HUP`, say) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits up to `within` for the process to end by itself; answers its status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, then waits for the process to end.
    pub fn kill(&mut self) {
        let status = Command::new("kill")
            .args(["-KILL", &self.pid()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -KILL failed");
        self.wait_for_end(false);
    }
}

/// Sleeps past the end of the minute when fewer than `margin` seconds of it are left, so that
/// what a test does next (a burst, or a window used up and then refused) lands in one of the
/// gateway's minute windows (minutes since the Unix epoch).
pub fn well_inside_a_minute(margin: u32) {
    use chrono::Timelike;
    let second = chrono::Utc::now().second();
    if second + margin >= 60 {
        std::thread::sleep(std::time::Duration::from_secs(u64::from(61 - second)));
    }
}
