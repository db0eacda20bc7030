//! What every end-to-end test of the binary needs: the real `tollgate run` on free ports with a
//! configuration written to a temporary directory, a scripted mock upstream that records every
//! request it receives, raw HTTP/1.1 requests (so the bytes on the wire are exactly what the test
//! says), the SQLite ledger read back through `tollgate_ledger`, the usage crate's recorded
//! provider bodies, and the official Python SDKs run against the gateway.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub use tollgate_ledger::UsageLog;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A recorded provider body from `crates/usage/tests/fixtures`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../usage/tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `[[keys]]` entry for a Tollgate key (the configuration holds only its SHA-256).
pub fn key_entry(user: &str, plan: &str, key: &str) -> String {
    let hash: String = Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("[[keys]]\nuser = \"{user}\"\nplan = \"{plan}\"\nsha256 = \"{hash}\"\n")
}

// ---------------------------------------------------------------------------------------------
// The gateway
// ---------------------------------------------------------------------------------------------

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
    /// [`PgDatabase`] shared by several gateways) rather than in the temporary directory.
    pub fn start_with_database(
        proxy_extra: &str,
        database_url: &str,
        storage_extra: &str,
        rest: &str,
        extra_env: &[(&str, &str)],
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let admin_port = free_port();
        let pricing: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pricing");
        let config = format!(
            r#"
[proxy]
listen = "127.0.0.1:{port}"
graceful_shutdown_secs = 0
{proxy_extra}
[admin]
listen = "127.0.0.1:{admin_port}"
metrics_public = true
[storage]
database_url = "{database_url}"
{storage_extra}
[ledger]
flush_interval_ms = 20
[pricing]
dir = "{pricing}"
{rest}
"#,
            pricing = pricing.display(),
        );
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, config).unwrap();
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_tollgate"));
        let config_arg = config_path.display().to_string();
        let mut env: Vec<(&str, &str)> = vec![("RUST_LOG", "warn,tollgate=info")];
        env.extend_from_slice(extra_env);
        let mut child = Supervised::spawn(
            &binary,
            &["run", "--config", &config_arg],
            &env,
            "TERM",
            dir.path(),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.shell.try_wait().unwrap() {
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

    /// Whether the process is still running (a request must never bring it down).
    pub fn is_alive(&mut self) -> bool {
        self.child.shell.try_wait().unwrap().is_none()
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

    /// Kills the gateway outright (SIGKILL), as a crash or an OOM kill would: nothing drains.
    /// Returns its directory, with whatever the ledger had written.
    pub fn kill(mut self) -> tempfile::TempDir {
        self.child.kill();
        self.dir
    }

    /// The value of a metric without labels on the admin `/metrics`, if it is there.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let response = request(self.admin_port, "GET", "/metrics", &[], b"");
        assert_eq!(response.status, 200, "{}", response.text());
        response.text().lines().find_map(|line| {
            let (n, v) = line.split_once(' ')?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        })
    }
}

/// A server process started under a small shell that kills it as soon as the shell's stdin
/// closes: on `stop`/`kill`, and also when the test process exits without stopping it (a failed
/// assertion, or a server shared by the tests of a file), so that nothing outlives its tests.
/// The shell writes the server's pid to `<dir>/pid-<n>`, for sending it signals.
struct Supervised {
    shell: Child,
    stdin: Option<ChildStdin>,
    pid_file: PathBuf,
}

impl Supervised {
    /// Starts `program args` with `env`; closing stdin sends it `SIG<on_close>`.
    fn spawn(
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        on_close: &str,
        dir: &Path,
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
            .stderr(Stdio::inherit());
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

    fn pid(&self) -> String {
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
    fn stop(&mut self) {
        self.wait_for_end(true);
    }

    fn wait_for_end(&mut self, must_succeed: bool) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The shell exits with the server's status.
            if let Some(status) = self.shell.try_wait().unwrap() {
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

    /// SIGKILL, then waits for the process to end.
    fn kill(&mut self) {
        let status = Command::new("kill")
            .args(["-KILL", &self.pid()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -KILL failed");
        self.wait_for_end(false);
    }
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

/// A `redis-server` of the test's own on a free port, with no persistence: killing it and
/// starting it again on the same port is Redis coming back empty. Killed when dropped. (The
/// shared Redis is never stopped or flushed by a test.)
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    server: Option<Supervised>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut redis = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            server: None,
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the server vanishes with its data, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.kill();
        }
    }

    /// Starts the server (again) on the same port, empty, and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "redis-server is already running");
        let port = self.port.to_string();
        let dir = self.dir.path().display().to_string();
        let args = [
            "--port",
            port.as_str(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            dir.as_str(),
            "--loglevel",
            "warning",
        ];
        self.server = Some(Supervised::spawn(
            Path::new("redis-server"),
            &args,
            &[],
            "KILL",
            self.dir.path(),
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis-cli` against this server; its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every field of a hash.
    pub fn hash(&self, key: &str) -> HashMap<String, String> {
        // Not a terminal: one element a line.
        let raw = self.cli(&["HGETALL", key]);
        let lines: Vec<&str> = raw.lines().collect();
        lines
            .chunks(2)
            .filter(|pair| pair.len() == 2)
            .map(|pair| (pair[0].to_owned(), pair[1].to_owned()))
            .collect()
    }

    /// The keys matching `pattern`.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.cli(&["--scan", "--pattern", pattern])
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `read` against the ledger at `url`, on a runtime of its own, and closes the ledger.
fn with_ledger<T, F>(url: &str, read: impl FnOnce(tollgate_ledger::Ledger) -> F) -> T
where
    F: std::future::Future<Output = T>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ledger = tollgate_ledger::Ledger::connect(url, tollgate_ledger::DbOptions::default())
            .await
            .unwrap();
        let out = read(ledger.clone()).await;
        ledger.close().await;
        out
    })
}

/// Every usage event of `user` in the ledger at `url`, newest first.
pub fn ledger_rows(url: &str, user: &str) -> Vec<UsageLog> {
    with_ledger(url, |ledger| async move {
        let filter = tollgate_ledger::LogFilter {
            user_id: Some(user.into()),
            ..Default::default()
        };
        let mut rows = Vec::new();
        loop {
            let page = ledger
                .usage_logs(&filter, 1000, rows.len() as u64)
                .await
                .unwrap();
            let done = page.rows.len() < 1000;
            rows.extend(page.rows);
            if done {
                return rows;
            }
        }
    })
}

/// Every usage alert of `user` in the ledger at `url`, newest first.
pub fn ledger_alerts(url: &str, user: &str) -> Vec<tollgate_ledger::Alert> {
    with_ledger(url, |ledger| async move {
        ledger.alerts(user, false, 1000).await.unwrap()
    })
}

/// Waits (the ledger is written in batches) until `user` has `count` usage events, then returns
/// them; fails if more appear or too few within 10 s.
pub fn wait_rows(url: &str, user: &str, count: usize) -> Vec<UsageLog> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = ledger_rows(url, user);
        if rows.len() >= count || Instant::now() > deadline {
            assert_eq!(rows.len(), count, "{rows:#?}");
            return rows;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
}

// ---------------------------------------------------------------------------------------------
// The mock upstream
// ---------------------------------------------------------------------------------------------

/// A request as the mock upstream received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether `needle` appears anywhere in the request: request line, headers or body.
    pub fn contains(&self, needle: &str) -> bool {
        self.path.contains(needle)
            || self.query.as_deref().is_some_and(|q| q.contains(needle))
            || self
                .headers
                .iter()
                .any(|(n, v)| n.contains(needle) || v.contains(needle))
            || self
                .body
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
    }
}

/// What the mock answers.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Sent with `transfer-encoding: chunked` in chunks of this many bytes (a stream split
    /// mid-event, as a network would); otherwise with `content-length`.
    pub chunk_bytes: Option<usize>,
    /// A pause after each chunk, as a provider generating tokens makes: streams stay in flight
    /// long enough for clients to hang up in the middle.
    pub chunk_pause: Duration,
    /// Never answer: read the request, then hold the connection open for a minute.
    pub hang: bool,
}

impl Reply {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
            chunk_bytes: None,
            chunk_pause: Duration::ZERO,
            hang: false,
        }
    }

    pub fn json(body: impl Into<Vec<u8>>) -> Reply {
        Reply::new(200, "application/json", body)
    }

    /// An event stream sent in `chunk_bytes`-byte chunks.
    pub fn sse(body: impl Into<Vec<u8>>, chunk_bytes: usize) -> Reply {
        Reply::new(200, "text/event-stream", body).chunked(chunk_bytes)
    }

    pub fn hang() -> Reply {
        Reply {
            hang: true,
            ..Reply::json("")
        }
    }

    pub fn status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn chunked(mut self, chunk_bytes: usize) -> Reply {
        self.chunk_bytes = Some(chunk_bytes);
        self
    }

    /// Waits `pause` after each chunk (chunked replies only).
    pub fn paced(mut self, pause: Duration) -> Reply {
        self.chunk_pause = pause;
        self
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// A local HTTP/1.1 server (std threads, keep-alive) that records each request and answers it.
#[derive(Clone)]
pub struct Mock {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
}

impl Mock {
    /// A mock that answers each path with the reply `script`ed for it, 404 otherwise.
    pub fn start() -> Mock {
        let routes: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let table = Arc::clone(&routes);
        Mock::serve(routes, move |seen: &Seen| {
            table
                .lock()
                .unwrap()
                .get(&seen.path)
                .cloned()
                .unwrap_or_else(|| {
                    Reply::new(404, "application/json", r#"{"error":"no such path"}"#)
                })
        })
    }

    /// A mock that computes each reply from the request.
    pub fn with_handler(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Mock {
        Mock::serve(Arc::default(), handler)
    }

    fn serve(
        routes: Arc<Mutex<HashMap<String, Reply>>>,
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = Arc::clone(&seen);
        let handler: Arc<Handler> = Arc::new(handler);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let log = Arc::clone(&log);
                let handler = Arc::clone(&handler);
                std::thread::spawn(move || serve_connection(stream, &log, &*handler));
            }
        });
        Mock { port, seen, routes }
    }

    /// Answers `path` (without query) with `reply` from now on.
    pub fn script(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.into(), reply);
    }

    /// Every request received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests received for `path`.
    pub fn seen_at(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }
}

fn serve_connection(stream: TcpStream, log: &Mutex<Vec<Seen>>, handler: &Handler) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    while let Some(seen) = read_request(&mut reader) {
        log.lock().unwrap().push(seen.clone());
        let reply = handler(&seen);
        if reply.hang {
            std::thread::sleep(Duration::from_secs(60));
            return;
        }
        if write_reply(&mut writer, &reply).is_err() {
            return;
        }
    }
}

/// Reads one request; `None` when the connection closed, also mid-body (a refused request whose
/// body the gateway abandoned is not recorded).
fn read_request(reader: &mut impl BufRead) -> Option<Seen> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target, None),
    };
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_owned(), v.trim().to_owned()));
    }
    let mut seen = Seen {
        method,
        path,
        query,
        headers,
        body: Vec::new(),
    };
    if let Some(len) = seen.header("content-length") {
        let mut body = vec![0; len.parse().ok()?];
        reader.read_exact(&mut body).ok()?;
        seen.body = body;
    } else if seen
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        loop {
            let mut size = String::new();
            if reader.read_line(&mut size).ok()? == 0 {
                return None;
            }
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            seen.body.extend_from_slice(&chunk[..size]);
        }
    }
    Some(seen)
}

fn write_reply(writer: &mut TcpStream, reply: &Reply) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} Mock\r\n", reply.status);
    for (n, v) in &reply.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    match reply.chunk_bytes {
        Some(size) => {
            head.push_str("transfer-encoding: chunked\r\n\r\n");
            writer.write_all(head.as_bytes())?;
            for part in reply.body.chunks(size.max(1)) {
                writer.write_all(format!("{:x}\r\n", part.len()).as_bytes())?;
                writer.write_all(part)?;
                writer.write_all(b"\r\n")?;
                writer.flush()?;
                if !reply.chunk_pause.is_zero() {
                    std::thread::sleep(reply.chunk_pause);
                }
            }
            writer.write_all(b"0\r\n\r\n")?;
        }
        None => {
            head.push_str(&format!("content-length: {}\r\n\r\n", reply.body.len()));
            writer.write_all(head.as_bytes())?;
            writer.write_all(&reply.body)?;
        }
    }
    writer.flush()
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// A response as the client received it; `body` is de-chunked.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A request with a `content-length` body on a fresh connection (`connection: close`).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    send_raw(port, &raw)
}

/// `n` calls of `call(port)` released at the same instant from threads of their own, spread
/// over `ports` in turn; returns what each answered, in order.
pub fn at_once<T: Send + 'static>(
    ports: &[u16],
    n: usize,
    call: impl Fn(u16) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let barrier = Arc::new(std::sync::Barrier::new(n));
    let call = Arc::new(call);
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let port = ports[i % ports.len()];
            let (barrier, call) = (Arc::clone(&barrier), Arc::clone(&call));
            std::thread::spawn(move || {
                barrier.wait();
                call(port)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// The Tollgate key the tests give `user`.
pub fn client_key(user: &str) -> String {
    format!("tg_{user}_key_0123456789")
}

/// The real key of `provider`, as the tests put it in the gateway's environment.
pub fn provider_key(provider: &str) -> String {
    format!("real-{provider}-secret-42")
}

/// The provider saw its real key in `slot` (after `prefix`, "Bearer " say) and `user`'s
/// Tollgate key nowhere in the request.
pub fn assert_key_swapped(seen: &Seen, provider: &str, user: &str, slot: &str, prefix: &str) {
    assert_eq!(
        seen.header(slot),
        Some(format!("{prefix}{}", provider_key(provider)).as_str()),
        "{seen:#?}"
    );
    assert!(
        !seen.contains(&client_key(user)),
        "the Tollgate key reached {provider}: {seen:#?}"
    );
}

/// A JSON POST, the common case.
pub fn post_json(port: u16, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    request(port, "POST", path, &all, body.as_bytes())
}

/// A JSON POST whose body is sent chunked, `chunk_bytes` per chunk, so that no length is known
/// up front; the connection closes after the answer.
pub fn post_json_chunked(
    port: u16,
    path: &str,
    authorization: &str,
    body: &str,
    chunk_bytes: usize,
) -> Response {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: {authorization}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    for part in body.as_bytes().chunks(chunk_bytes) {
        raw.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        raw.extend_from_slice(part);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    send_raw(port, &raw)
}

/// Sends `raw` bytes as they are, reads the answer until the gateway closes the connection and
/// parses it.
pub fn send_raw(port: u16, raw: &[u8]) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The gateway may answer (413, say) and close before it has read everything.
    let _ = stream.write_all(raw);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    parse_response(&answer)
}

/// Splits a raw HTTP/1.1 response into status, head and de-chunked body.
pub fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let rest = &raw[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Response { status, head, body }
}

/// The payload of a chunked body; fails on a body cut before its last chunk.
pub fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk-size line");
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).unwrap();
        let rest = &body[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        body = &rest[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------------
// The official SDKs
// ---------------------------------------------------------------------------------------------

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

/// Runs `tests/sdk/<script>` with `args` and returns the JSON object it prints; fails with the
/// script's traceback if it exits non-zero.
///
/// The environment is emptied, so no `OPENAI_*`/`ANTHROPIC_*` variable or HTTP proxy of the
/// developer's shell can redirect the SDKs: they reach only the URLs given in `args`. `-I`
/// ignores user site-packages and `PYTHON*` variables; `-B` keeps `__pycache__` out of the
/// source tree.
pub fn run_sdk_script(python: &Path, script: &str, args: &[&str]) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
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

/// The shared Redis the tests use: `REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Deletes `user`'s keys (hash-tagged by user) from the shared Redis.
pub fn redis_cleanup(user: &str) {
    let url = redis_url();
    let keys = Command::new("redis-cli")
        .args([
            "-u",
            &url,
            "--scan",
            "--pattern",
            &format!("*{{u:{user}}}*"),
        ])
        .output()
        .unwrap();
    for key in String::from_utf8_lossy(&keys.stdout).lines() {
        Command::new("redis-cli")
            .args(["-u", &url, "del", key])
            .output()
            .unwrap();
    }
}
