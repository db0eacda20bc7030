//! The real binary between a client and a mock OpenAI upstream that speaks OpenAI's wire format:
//! key swap, admission, streaming pass-through with usage injection, refusals in OpenAI's shape,
//! and one usage event per admitted call in the SQLite ledger.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const CLIENT_KEY: &str = "tg_test_alice_0123456789";
const UPSTREAM_KEY: &str = "sk-upstream-secret";

/// A request as the mock upstream received it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An OpenAI-speaking upstream: chat completions as JSON or as an SSE stream with a final usage
/// chunk when asked for it.
fn mock_openai() -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let log = Arc::clone(&log);
            std::thread::spawn(move || serve(stream, &log));
        }
    });
    (port, seen)
}

fn serve(stream: TcpStream, log: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (n, v) = h.split_once(':').unwrap();
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if let Some(len) = get("content-length") {
            body.resize(len.parse().unwrap(), 0);
            reader.read_exact(&mut body).unwrap();
        } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut size = String::new();
                if reader.read_line(&mut size).unwrap_or(0) == 0 {
                    // The gateway abandoned the body: a refused request never completes.
                    return;
                }
                let size = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        }
        let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        log.lock().unwrap().push(Seen {
            path: path.clone(),
            headers,
            body,
        });
        let stream_usage = request["stream_options"]["include_usage"] == true;
        if request["stream"] == true {
            let mut events = vec![
                r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}],"usage":null}"#.to_owned(),
                r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}],"usage":null}"#.to_owned(),
            ];
            if stream_usage {
                events.push(r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-2024-08-06","choices":[],"usage":{"prompt_tokens":1337,"completion_tokens":211,"total_tokens":1548,"prompt_tokens_details":{"cached_tokens":1152}}}"#.to_owned());
            }
            let mut body = String::new();
            for e in events {
                body.push_str(&format!("data: {e}\n\n"));
            }
            body.push_str("data: [DONE]\n\n");
            write!(
                writer,
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            .unwrap();
            // Split mid-event, as a network would.
            for part in body.as_bytes().chunks(37) {
                write!(writer, "{:x}\r\n", part.len()).unwrap();
                writer.write_all(part).unwrap();
                writer.write_all(b"\r\n").unwrap();
            }
            writer.write_all(b"0\r\n\r\n").unwrap();
        } else {
            let body = r#"{"id":"c2","object":"chat.completion","model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0}}}"#;
            write!(
                writer,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        }
        writer.flush().unwrap();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Gateway {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Gateway {
    fn start(upstream_port: u16, openai_calls: u64) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let pricing: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pricing");
        let key_hash: String = Sha256::digest(CLIENT_KEY.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let config = format!(
            r#"
[proxy]
listen = "127.0.0.1:{port}"
graceful_shutdown_secs = 0
header_read_timeout_ms = 300
[admin]
listen = "127.0.0.1:{admin}"
[storage]
database_url = "sqlite://ledger.db"
[ledger]
flush_interval_ms = 20
[pricing]
dir = "{pricing}"
[providers.openai]
base_url = "http://127.0.0.1:{upstream_port}"
key_env = "TG_TEST_OPENAI_KEY"
[plans.test]
name = "Test"
tier = "pro"
[plans.test.providers]
openai = {{ calls = {openai_calls} }}
anthropic = {{ calls = 0 }}
[[keys]]
user = "alice"
plan = "test"
sha256 = "{key_hash}"
"#,
            admin = free_port(),
            pricing = pricing.display(),
        );
        std::fs::write(dir.path().join("gateway.toml"), config).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["run", "--config"])
            .arg(dir.path().join("gateway.toml"))
            .env("TG_TEST_OPENAI_KEY", UPSTREAM_KEY)
            .env("ANTHROPIC_API_KEY", "sk-ant-unused")
            .env("RUST_LOG", "warn,tollgate=info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "gateway did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Gateway { child, port, dir }
    }

    /// Stops the gateway the way an operator would (SIGTERM) and waits for it to drain.
    fn stop(mut self) -> tempfile::TempDir {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "gateway did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.dir
    }
}

/// One HTTP/1.1 request on a fresh connection; returns status, headers and body.
fn request(port: u16, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, head.to_owned(), body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

fn bearer() -> String {
    format!("Bearer {CLIENT_KEY}")
}

#[test]
fn openai_calls_are_forwarded_metered_and_limited() {
    let (upstream, seen) = mock_openai();
    let gw = Gateway::start(upstream, 3);
    let auth = bearer();
    let path = "/openai/v1/chat/completions";

    // 1. A plain completion: passed through unchanged, key swapped.
    let (status, _, body) = request(
        gw.port,
        path,
        &[("authorization", &auth)],
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":50}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""content":"Hello""#), "{body}");
    {
        let seen = seen.lock().unwrap();
        let first = &seen[0];
        assert_eq!(first.path, "/v1/chat/completions");
        assert_eq!(
            first.header("authorization"),
            Some("Bearer sk-upstream-secret")
        );
        assert!(
            first.headers.iter().all(|(_, v)| !v.contains(CLIENT_KEY)),
            "the Tollgate key must not reach the provider"
        );
    }

    // 2. A stream without include_usage: the gateway asks for usage; the client still gets
    //    every event, split as the upstream split it.
    let (status, _, body) = request(
        gw.port,
        path,
        &[("x-api-key", CLIENT_KEY)],
        r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#""content":"Hel""#) && body.ends_with("data: [DONE]\n\n"),
        "{body}"
    );
    let forwarded: serde_json::Value =
        serde_json::from_slice(&seen.lock().unwrap()[1].body).unwrap();
    assert_eq!(forwarded["stream_options"]["include_usage"], true);

    // 3. Missing and unknown keys: 401 in OpenAI's shape, nothing forwarded.
    let (status, _, body) = request(gw.port, path, &[], r#"{"model":"gpt-4o"}"#);
    assert_eq!(status, 401, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "missing_api_key");
    let (status, _, _) = request(
        gw.port,
        path,
        &[("authorization", "Bearer tg_wrong")],
        r#"{"model":"gpt-4o"}"#,
    );
    assert_eq!(status, 401);

    // 4. Malformed JSON: 400, nothing forwarded, nothing billed.
    let (status, _, body) = request(gw.port, path, &[("authorization", &auth)], "{\"model\": ");
    assert_eq!(status, 400, "{body}");

    // 5. An unpriced model is refused before it reaches the provider.
    let (status, _, body) = request(
        gw.port,
        path,
        &[("authorization", &auth)],
        r#"{"model":"gpt-unknown-9","messages":[]}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("model_not_priced"), "{body}");

    // 6. The third call uses the last of 3; the fourth is refused with 429 naming the limit.
    let (status, _, _) = request(
        gw.port,
        path,
        &[("authorization", &auth)],
        r#"{"model":"gpt-4o","messages":[]}"#,
    );
    assert_eq!(status, 200);
    let (status, head, body) = request(
        gw.port,
        path,
        &[("authorization", &auth)],
        r#"{"model":"gpt-4o","messages":[]}"#,
    );
    assert_eq!(status, 429, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "usage_limit_exceeded");
    assert_eq!(error["tollgate"]["limit"], "openai_calls");
    assert_eq!(error["tollgate"]["limit_value"], 3);
    assert!(
        head.to_ascii_lowercase().contains("retry-after: "),
        "{head}"
    );

    // 7. A provider outside the plan: 403 in Anthropic's shape.
    let (status, _, body) = request(
        gw.port,
        "/anthropic/v1/messages",
        &[("x-api-key", CLIENT_KEY)],
        r#"{"model":"claude-sonnet-4-20250514","max_tokens":10,"messages":[]}"#,
    );
    assert_eq!(status, 403, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "permission_error");

    // 8. A header block over the cap (32 KiB by default): 431 in OpenAI's shape.
    let big = "x".repeat(40 * 1024);
    let (status, _, body) = request(
        gw.port,
        path,
        &[("authorization", &auth), ("x-padding", &big)],
        r#"{"model":"gpt-4o","messages":[]}"#,
    );
    assert_eq!(status, 431, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "request_headers_too_large");

    // 9. A client that sends its head a byte at a time, each byte well within any per-read
    //    timeout, is cut off by the total deadline (header_read_timeout_ms = 300 here) with 408.
    let mut slow = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    for b in format!("POST {path} HTTP/1.1\r\nhost: localhost\r\nx-slow: ")
        .bytes()
        .chain(std::iter::repeat(b'a'))
    {
        if slow.write_all(&[b]).is_err() || started.elapsed() > Duration::from_secs(5) {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
        let mut probe = [0u8; 1];
        slow.set_nonblocking(true).unwrap();
        let got = slow.read(&mut probe);
        slow.set_nonblocking(false).unwrap();
        if let Ok(1) = got {
            answer.push(probe[0]);
            break;
        }
    }
    let _ = slow.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");

    // Only the three admitted calls reached the provider; refused bodies never completed.
    let complete: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| !s.body.is_empty())
        .cloned()
        .collect();
    assert_eq!(complete.len(), 3, "{complete:?}");

    // Every admitted call is one usage event, priced from pricing/openai.toml.
    let dir = gw.stop();
    let db = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows = runtime.block_on(async {
        let ledger = tollgate_ledger::Ledger::connect(&db, tollgate_ledger::DbOptions::default())
            .await
            .unwrap();
        let filter = tollgate_ledger::LogFilter {
            user_id: Some("alice".into()),
            ..Default::default()
        };
        ledger.usage_logs(&filter, 100, 0).await.unwrap().rows
    });
    assert_eq!(rows.len(), 3, "{rows:?}");
    let streamed = rows
        .iter()
        .find(|r| r.input_tokens == 1_337)
        .expect("the streamed call's usage");
    assert_eq!(streamed.cached_input_tokens, 1_152);
    assert_eq!(streamed.output_tokens, 211);
    // 185 × 2.50/M + 1,152 × 1.25/M + 211 × 10.00/M.
    assert_eq!(streamed.cost_total_nanousd, 4_012_500);
    assert!(!streamed.estimated);
    assert_eq!(streamed.model, "gpt-4o-2024-08-06");
    let plain: Vec<_> = rows.iter().filter(|r| r.input_tokens == 19).collect();
    assert_eq!(plain.len(), 2);
    // 19 × 2.50/M + 10 × 10.00/M = 47,500 + 100,000.
    assert!(plain.iter().all(|r| r.cost_total_nanousd == 147_500));
    assert!(
        rows.iter()
            .all(|r| r.key_id.as_deref().is_some_and(|k| !k.contains("tg_")))
    );
}
