//! Log lines to stderr without a system call per line.
//!
//! The gateway logs one `info` line per request. Written one by one, each line costs the request
//! thread a `write(2)` and, with two request threads, a contended lock on stderr. Here `info`,
//! `debug` and `trace` lines are appended to a buffer that a background thread writes out every
//! [`FLUSH_EVERY`] (or at once when it passes [`BUFFER_BYTES`]), as nginx does with a buffered
//! access log. Warnings and errors are written at once, after whatever was buffered before them,
//! so lines keep their order. A process killed without warning loses at most the last
//! [`FLUSH_EVERY`] of `info` lines; a normal exit writes everything ([`Flusher`] on drop).

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// How long a buffered line may wait before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A buffer this full is written out by the thread that filled it.
pub const BUFFER_BYTES: usize = 64 * 1024;

/// Where the lines go: stderr in the gateway, anything in tests.
type Sink = Box<dyn Write + Send>;

struct Shared {
    /// Lines not yet written. Held only to append or to take them, never while writing, so a
    /// request thread never waits on a write.
    pending: Mutex<Vec<u8>>,
    /// Where lines go. Whoever writes holds it from taking the pending lines until they are
    /// written, so that lines keep their order.
    sink: Mutex<Sink>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Appends `line` (if any) and writes out everything pending.
    fn write_out(&self, line: &[u8]) -> io::Result<()> {
        let mut sink = lock(&self.sink);
        let mut out = {
            let mut pending = lock(&self.pending);
            pending.extend_from_slice(line);
            if pending.is_empty() {
                return Ok(());
            }
            std::mem::replace(&mut *pending, Vec::with_capacity(BUFFER_BYTES))
        };
        let written = sink.write_all(&out);
        out.clear();
        written
    }

    fn flush(&self) {
        // Nowhere to report a failed write to stderr: the lines are dropped.
        let _ = self.write_out(&[]);
    }
}

/// The process's log (the one with a background thread), for [`flush_all`].
static PROCESS_LOG: std::sync::OnceLock<std::sync::Weak<Shared>> = std::sync::OnceLock::new();

/// Writes out every buffered line of the process's log now: for an exit that skips destructors.
pub fn flush_all() {
    if let Some(shared) = PROCESS_LOG.get().and_then(std::sync::Weak::upgrade) {
        shared.flush();
    }
}

/// The log writer for `tracing_subscriber::fmt().with_writer(..)`.
#[derive(Clone)]
pub struct BufferedLog {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BufferedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferedLog").finish_non_exhaustive()
    }
}

/// Writes out what is buffered when dropped; the background thread stops with the process.
#[derive(Debug)]
pub struct Flusher {
    log: BufferedLog,
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.log.shared.flush();
    }
}

impl BufferedLog {
    /// A buffered log to `sink`, and the guard that writes out the rest when dropped. Without a
    /// background thread (when one cannot be started, and in tests) lines wait for the buffer
    /// to fill, a warning, or the guard.
    pub fn new(sink: Sink, background: bool) -> (BufferedLog, Flusher) {
        let log = BufferedLog {
            shared: Arc::new(Shared {
                pending: Mutex::new(Vec::with_capacity(BUFFER_BYTES)),
                sink: Mutex::new(sink),
            }),
        };
        if background {
            let _ = PROCESS_LOG.set(Arc::downgrade(&log.shared));
            let shared = Arc::downgrade(&log.shared);
            let started = thread::Builder::new()
                .name("tollgate-log".to_owned())
                .spawn(move || {
                    while let Some(shared) = shared.upgrade() {
                        shared.flush();
                        drop(shared);
                        thread::sleep(FLUSH_EVERY);
                    }
                });
            if let Err(e) = started {
                eprintln!("log lines are written when 64 KiB are buffered: {e}");
            }
        }
        let flusher = Flusher { log: log.clone() };
        (log, flusher)
    }

    fn line(&self, at_once: bool) -> Line<'_> {
        Line { log: self, at_once }
    }
}

/// One log line on its way: buffered, or written at once with what was buffered before it.
#[derive(Debug)]
pub struct Line<'a> {
    log: &'a BufferedLog,
    at_once: bool,
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let shared = &self.log.shared;
        let line = redact(buf);
        if self.at_once {
            shared.write_out(&line)?;
            return Ok(buf.len());
        }
        let full = {
            let mut pending = lock(&shared.pending);
            pending.extend_from_slice(&line);
            pending.len() >= BUFFER_BYTES
        };
        if full {
            shared.write_out(&[])?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `line` with the value of every credential query parameter (`key`, Gemini's; `api_key`,
/// Tavily's) replaced by `***`: the gateway's own lines never carry one, but Pingora's error
/// lines print a failed request's URI whole.
fn redact(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if memchr::memmem::find(line, b"key=").is_none() {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = memchr::memmem::find(rest, b"key=") {
        let name_start = if rest[..at].ends_with(b"api_") {
            at - 4
        } else {
            at
        };
        let in_query = name_start > 0 && matches!(rest[name_start - 1], b'?' | b'&');
        let value_start = at + b"key=".len();
        out.extend_from_slice(&rest[..value_start]);
        rest = &rest[value_start..];
        if in_query {
            let end = rest
                .iter()
                .position(|b| b"&# \"',)\r\n".contains(b))
                .unwrap_or(rest.len());
            out.extend_from_slice(b"***");
            rest = &rest[end..];
        }
    }
    out.extend_from_slice(rest);
    std::borrow::Cow::Owned(out)
}

impl<'a> MakeWriter<'a> for BufferedLog {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        self.line(true)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line<'a> {
        // Levels order by verbosity: ERROR < WARN < INFO.
        self.line(*meta.level() <= Level::WARN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read: each `write_all` of the log is one entry.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Recorder {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().concat()).unwrap()
        }
        fn writes(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    /// A subscriber writing plain lines (no colours, no time) to `log`.
    fn plain_lines(log: BufferedLog) -> impl tracing::Subscriber + Send + Sync {
        tracing_subscriber::fmt()
            .with_writer(log)
            .with_ansi(false)
            .without_time()
            .finish()
    }

    #[test]
    fn info_lines_wait_and_a_warning_writes_them_first_in_one_write() {
        let sink = Recorder::default();
        let (log, _flusher) = BufferedLog::new(Box::new(sink.clone()), false);
        let subscriber = plain_lines(log);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("first");
            tracing::info!("second");
            assert_eq!(sink.writes(), 0, "info lines are buffered");
            tracing::warn!("third");
        });
        assert_eq!(sink.writes(), 1);
        let text = sink.text();
        let order: Vec<_> = ["first", "second", "third"]
            .iter()
            .map(|w| text.find(w).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn the_guard_writes_what_is_left_and_a_full_buffer_is_written_by_its_filler() {
        let sink = Recorder::default();
        let (log, flusher) = BufferedLog::new(Box::new(sink.clone()), false);
        let mut line = log.line(false);
        line.write_all(&[b'x'; BUFFER_BYTES - 1]).unwrap();
        assert_eq!(sink.writes(), 0);
        line.write_all(b"y\n").unwrap();
        assert_eq!(sink.writes(), 1, "a full buffer is written at once");
        line.write_all(b"tail\n").unwrap();
        drop(flusher);
        assert_eq!(sink.writes(), 2);
        assert!(sink.text().ends_with("y\ntail\n"));
    }

    #[test]
    fn the_background_thread_writes_buffered_lines_within_its_period() {
        let sink = Recorder::default();
        let (log, _flusher) = BufferedLog::new(Box::new(sink.clone()), true);
        let mut line = log.line(false);
        line.write_all(b"waiting\n").unwrap();
        let deadline = std::time::Instant::now() + FLUSH_EVERY * 20;
        while sink.writes() == 0 && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(sink.text(), "waiting\n");
    }

    #[test]
    fn credentials_in_query_strings_are_redacted() {
        let line = |s: &str| String::from_utf8(redact(s.as_bytes()).into_owned()).unwrap();
        assert_eq!(
            line(
                "Fail to proxy: POST /gemini/v1beta/models/x:generateContent?alt=sse&key=tg_f833ab, Host: a\n"
            ),
            "Fail to proxy: POST /gemini/v1beta/models/x:generateContent?alt=sse&key=***, Host: a\n"
        );
        assert_eq!(
            line("GET /tavily/search?api_key=tvly-secret HTTP/1.1"),
            "GET /tavily/search?api_key=*** HTTP/1.1"
        );
        assert_eq!(
            line("GET /x?key=a&monkey=b&key=c"),
            "GET /x?key=***&monkey=b&key=***"
        );
        // Not a query parameter: left as it is.
        assert_eq!(
            line("request provider=gemini user=alice"),
            "request provider=gemini user=alice"
        );
        assert_eq!(line("the key=value in prose"), "the key=value in prose");
    }

    #[test]
    fn a_key_in_a_logged_uri_never_reaches_the_sink() {
        let sink = Recorder::default();
        let (log, flusher) = BufferedLog::new(Box::new(sink.clone()), false);
        let subscriber = plain_lines(log);
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(
                "Fail to proxy: POST /gemini/v1beta/models/m:generateContent?key=tg_secret_canary"
            );
            tracing::info!(uri = "/gemini/x?key=tg_secret_canary", "request");
        });
        drop(flusher);
        let text = sink.text();
        assert!(!text.contains("tg_secret_canary"), "{text}");
        assert_eq!(text.matches("key=***").count(), 2, "{text}");
    }

    #[test]
    fn a_key_in_a_json_line_never_reaches_the_sink_either() {
        let sink = Recorder::default();
        let (log, flusher) = BufferedLog::new(Box::new(sink.clone()), false);
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(log)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(uri = "/gemini/x?alt=sse&key=tg_secret_canary", "failed");
        });
        drop(flusher);
        let text = sink.text();
        assert!(!text.contains("tg_secret_canary"), "{text}");
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["uri"], "/gemini/x?alt=sse&key=***", "{text}");
    }
}
