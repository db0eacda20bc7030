//! `tollgate run --upgrade` under load: the new process takes the listening sockets while the
//! old one drains. No client sees a refused or broken connection, every stream completes, every
//! admitted call has exactly one usage event, the plan's limit holds exactly across both
//! processes (in-process counters: the new one reads the ledger only once the old one has
//! exited), and the new process serves on alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{Gateway, Mock, Reply, client_key, key_entry, provider_key};

/// The plan's OpenAI calls this period.
const LIMIT: usize = 800;
const STREAM_BODY: &str = r#"{"model":"gpt-4o","stream":true,"messages":[]}"#;
const JSON_BODY: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#;

/// JSON answers at once; streams send 10 events 150 ms apart, then usage and `[DONE]`.
fn upstream() -> Mock {
    Mock::with_handler(|seen| {
        if seen.contains("\"stream\":true") {
            let mut body = String::new();
            for _ in 0..10 {
                body.push_str("data: {\"id\":\"c\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"w \"}}],\"usage\":null}\n\n");
            }
            body.push_str("data: {\"id\":\"c\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":20,\"total_tokens\":30}}\n\ndata: [DONE]\n\n");
            let event = body.len() / 12;
            Reply::sse(body, event).paced(Duration::from_millis(150))
        } else {
            Reply::json(
                r#"{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#,
            )
        }
    })
}

/// What the clients saw: statuses, and anything that was not an HTTP answer.
#[derive(Default)]
struct Seen {
    ok: usize,
    limited: usize,
    failures: Vec<String>,
}

impl Seen {
    fn record(&mut self, outcome: Result<u16, String>) {
        match outcome {
            Ok(200) => self.ok += 1,
            Ok(429) => self.limited += 1,
            Ok(other) => self.failures.push(format!("status {other}")),
            Err(e) => self.failures.push(e),
        }
    }
}

fn request(body: &str, close: bool) -> Vec<u8> {
    format!(
        "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: localhost\r\n\
         authorization: Bearer {}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n{}\r\n{body}",
        client_key("ann"),
        body.len(),
        if close { "connection: close\r\n" } else { "" },
    )
    .into_bytes()
}

/// Reads one response off a kept-alive connection: its status and whether the gateway closes
/// the connection after it.
fn read_one(stream: &mut TcpStream) -> Result<(u16, bool), String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| format!("no content-length in {head}"))?;
            if buf.len() >= end + 4 + length {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or("no status")?;
                return Ok((status, head.contains("connection: close")));
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(format!("connection closed after {} bytes", buf.len())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// JSON calls over one kept-alive connection at a time, reconnecting when the gateway closes it.
fn keep_alive_client(port: u16, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let mut stream: Option<TcpStream> = None;
    while !stop.load(Ordering::SeqCst) {
        let outcome = (|| {
            if stream.is_none() {
                let s =
                    TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                stream = Some(s);
            }
            let s = stream.as_mut().unwrap();
            s.write_all(&request(JSON_BODY, false))
                .map_err(|e| format!("write: {e}"))?;
            let (status, closes) = read_one(s)?;
            // A refusal is answered before the request's body is read, and the connection
            // is then not reused.
            if closes || status == 429 {
                stream = None;
            }
            Ok(status)
        })();
        if outcome.is_err() {
            stream = None;
        }
        seen.lock().unwrap().record(outcome);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A call on a fresh connection (`connection: close`); answers the status, checking that a
/// stream reached its end.
fn fresh_call(port: u16, body: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(&request(body, true))
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no response: {text:?}"))?;
    // The body is chunked: its last event and the final chunk.
    if status == 200
        && body == STREAM_BODY
        && !(text.contains("[DONE]") && text.ends_with("0\r\n\r\n"))
    {
        return Err(format!("stream cut: {text:?}"));
    }
    Ok(status)
}

fn fresh_client(port: u16, body: &'static str, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    while !stop.load(Ordering::SeqCst) {
        let outcome = fresh_call(port, body);
        seen.lock().unwrap().record(outcome);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_upgrade_under_load_loses_no_connection_no_stream_no_event_and_no_limit() {
    let mock = upstream();
    let env = [("TG_OPENAI_KEY", provider_key("openai"))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let rest = format!(
        "[providers.openai]\nbase_url = \"http://127.0.0.1:{}\"\nkey_env = \"TG_OPENAI_KEY\"\n\
         [plans.p]\nname = \"P\"\ntier = \"pro\"\n[plans.p.providers]\nopenai = {{ calls = {LIMIT} }}\n{}",
        mock.port,
        key_entry("ann", "p", &client_key("ann")),
    );
    let gateway = Gateway::start("graceful_shutdown_secs = 30\nthreads = 2", &rest, &env);
    let port = gateway.port;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
        clients.push(std::thread::spawn(move || {
            keep_alive_client(port, stop, seen)
        }));
    }
    for body in [JSON_BODY, STREAM_BODY, STREAM_BODY] {
        let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
        clients.push(std::thread::spawn(move || {
            fresh_client(port, body, stop, seen)
        }));
    }
    std::thread::sleep(Duration::from_millis(1_000));

    let (gateway, mut old) = gateway.replace(&env, true);
    // The old process drains (Pingora's 5 s beside the new one, then its streams) and exits
    // cleanly by itself.
    let status = old
        .wait_exit(Duration::from_secs(60))
        .expect("the old gateway did not exit");
    assert!(status.success(), "{status}");
    let served_by_old = seen.lock().unwrap().ok;
    assert_eq!(
        seen.lock().unwrap().limited,
        0,
        "the limit was reached before the old process exited"
    );
    // The new one serves alone until the plan's limit is reached.
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().limited == 0 {
        assert!(Instant::now() < deadline, "the limit was never reached");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let seen = Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap();
    assert!(seen.failures.is_empty(), "clients saw: {:?}", seen.failures);
    assert!(served_by_old < LIMIT, "the new process admitted no call");
    assert_eq!(
        seen.ok, LIMIT,
        "the limit holds exactly across both processes"
    );

    let rows = harness::wait_rows(&gateway.ledger_url(), "ann", seen.ok);
    assert_eq!(rows.len(), seen.ok, "one usage event per admitted call");
    let dir = gateway.stop();
    let db = format!("sqlite://{}", dir.path().join("ledger.db").display());
    assert_eq!(harness::ledger_rows(&db, "ann").len(), LIMIT);
}
