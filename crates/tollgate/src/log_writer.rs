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
        if self.at_once {
            shared.write_out(buf)?;
            return Ok(buf.len());
        }
        let full = {
            let mut pending = lock(&shared.pending);
            pending.extend_from_slice(buf);
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

    #[test]
    fn info_lines_wait_and_a_warning_writes_them_first_in_one_write() {
        let sink = Recorder::default();
        let (log, _flusher) = BufferedLog::new(Box::new(sink.clone()), false);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(log)
            .with_ansi(false)
            .without_time()
            .finish();
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
}
