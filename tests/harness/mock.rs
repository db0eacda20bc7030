//! The mock upstream: a local HTTP/1.1 server that stands in for a provider, records every
//! request it receives (`Seen`) and answers what the test scripted (`Reply`), down to how a
//! stream is chunked and paced. Provider bodies come from the usage crate's recorded fixtures.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A recorded provider body from `crates/usage/tests/fixtures`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/usage/tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

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
    /// Never answer: read the request, then close the connection (an upstream that goes away
    /// before its response head).
    pub close: bool,
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
            close: false,
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

    pub fn close() -> Reply {
        Reply {
            close: true,
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
        if reply.close {
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
        // A 204 or 304 has no body, and no length (RFC 9110, 8.6).
        None if matches!(reply.status, 204 | 304) => {
            head.push_str("\r\n");
            writer.write_all(head.as_bytes())?;
        }
        None => {
            head.push_str(&format!("content-length: {}\r\n\r\n", reply.body.len()));
            writer.write_all(head.as_bytes())?;
            writer.write_all(&reply.body)?;
        }
    }
    writer.flush()
}
