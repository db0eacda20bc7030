//! Limits under concurrency through the real binary: exactly as many calls as the plan allows
//! reach the provider, with in-process counters and with three gateways sharing Redis; and
//! clients that hang up mid-stream still leave exactly one usage event each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use harness::{Gateway, UsageLog, key_entry, ledger_rows};

const UPSTREAM_KEY: &str = "sk-upstream-secret";

/// An OpenAI-speaking upstream that counts the requests it answered. Streams are sent as many
/// small events with pauses, so that clients can hang up in the middle.
fn mock_openai() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&answered);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let count = Arc::clone(&count);
            std::thread::spawn(move || serve(stream, &count));
        }
    });
    (port, answered)
}

fn serve(stream: TcpStream, answered: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = None;
        let mut chunked = false;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end().to_ascii_lowercase();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
            chunked |= h.starts_with("transfer-encoding:") && h.contains("chunked");
        }
        let mut body = Vec::new();
        if let Some(n) = length {
            body.resize(n, 0);
            if reader.read_exact(&mut body).is_err() {
                return;
            }
        } else if chunked {
            loop {
                let mut size = String::new();
                if reader.read_line(&mut size).unwrap_or(0) == 0 {
                    return; // a refused request's body never completes
                }
                let size = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                if reader.read_exact(&mut chunk).is_err() {
                    return;
                }
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        }
        answered.fetch_add(1, Ordering::SeqCst);
        let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if request["stream"] == true {
            if write!(
                writer,
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            .is_err()
            {
                return;
            }
            for i in 0..20 {
                let event = format!(
                    "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"word{i} \"}}}}]}}\n\n"
                );
                if write!(writer, "{:x}\r\n{event}\r\n", event.len()).is_err() {
                    return;
                }
                let _ = writer.flush();
                std::thread::sleep(Duration::from_millis(5));
            }
            let tail = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":40,\"total_tokens\":52}}\n\ndata: [DONE]\n\n";
            if write!(writer, "{:x}\r\n{tail}\r\n0\r\n\r\n", tail.len()).is_err() {
                return;
            }
        } else {
            // Long enough that the calls overlap.
            std::thread::sleep(Duration::from_millis(20));
            let body = r#"{"id":"c2","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29}}"#;
            if write!(
                writer,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .is_err()
            {
                return;
            }
        }
        let _ = writer.flush();
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A gateway whose plan `test` sets `openai_limits`, with `storage` lines in `[storage]`.
fn start(upstream: u16, user: &str, key: &str, openai_limits: &str, storage: &str) -> Gateway {
    start_plan(upstream, user, key, "", openai_limits, storage)
}

/// [`start`] with `plan_lines` (plan-wide limits) in the plan.
fn start_plan(
    upstream: u16,
    user: &str,
    key: &str,
    plan_lines: &str,
    openai_limits: &str,
    storage: &str,
) -> Gateway {
    let rest = format!(
        r#"
[providers.openai]
base_url = "http://127.0.0.1:{upstream}"
key_env = "TG_TEST_OPENAI_KEY"
[plans.test]
name = "Test"
tier = "pro"
{plan_lines}
[plans.test.providers]
openai = {{ {openai_limits} }}
{keys}"#,
        keys = key_entry(user, "test", key),
    );
    Gateway::start_with_storage(
        "threads = 2",
        storage,
        &rest,
        &[("TG_TEST_OPENAI_KEY", UPSTREAM_KEY), ("RUST_LOG", "warn")],
    )
}

/// The status of one chat completion through the gateway.
fn call(port: u16, key: &str) -> u16 {
    let auth = format!("Bearer {key}");
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":50}"#;
    harness::post_json(
        port,
        "/openai/v1/chat/completions",
        &[("authorization", &auth)],
        body,
    )
    .status
}

/// `n` calls at once, spread over the gateways; returns the statuses.
fn burst(ports: &[u16], key: &str, n: usize) -> Vec<u16> {
    let key = key.to_owned();
    harness::at_once(ports, n, move |port| call(port, &key))
}

fn rows_in(dir: &Path, user: &str) -> Vec<UsageLog> {
    ledger_rows(
        &format!("sqlite://{}", dir.join("ledger.db").display()),
        user,
    )
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|&&s| s == status).count()
}

#[test]
fn a_call_limit_admits_exactly_its_value_under_concurrency() {
    let (upstream, answered) = mock_openai();
    let user = unique("limits-mem");
    let key = format!("tg_{user}");
    let gw = start(upstream, &user, &key, "calls = 100", "");
    let statuses = burst(&[gw.port], &key, 200);
    assert_eq!(count(&statuses, 200), 100, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 100, "{statuses:?}");
    assert_eq!(answered.load(Ordering::SeqCst), 100);
    let dir = gw.stop();
    assert_eq!(rows_in(dir.path(), &user).len(), 100);
}

#[test]
fn three_gateways_sharing_redis_admit_exactly_the_limit() {
    let (upstream, answered) = mock_openai();
    let user = unique("limits-redis");
    let key = format!("tg_{user}");
    let storage = format!(
        "counters = \"redis\"\nredis_url = \"{}\"\nredis_timeout_ms = 2000",
        harness::redis_url()
    );
    let gateways: Vec<_> = (0..3)
        .map(|_| start(upstream, &user, &key, "calls = 100", &storage))
        .collect();
    let ports: Vec<u16> = gateways.iter().map(|g| g.port).collect();
    let statuses = burst(&ports, &key, 200);
    let admitted = count(&statuses, 200);
    let refused = count(&statuses, 429);
    let mut rows = 0;
    for gw in gateways {
        let dir = gw.stop();
        rows += rows_in(dir.path(), &user).len();
    }
    harness::redis_cleanup(&user);
    assert_eq!((admitted, refused), (100, 100), "{statuses:?}");
    assert_eq!(answered.load(Ordering::SeqCst), 100);
    assert_eq!(rows, 100);
}

#[test]
fn a_token_budget_is_never_exceeded_under_concurrency() {
    let (upstream, _) = mock_openai();
    let user = unique("limits-tokens");
    let key = format!("tg_{user}");
    // Each call reserves its input bound plus max_tokens (50) and uses 29 tokens; the budget
    // admits only some of 60 concurrent calls, and what they used stays within it.
    let gw = start(upstream, &user, &key, "tokens = 2000", "");
    let statuses = burst(&[gw.port], &key, 60);
    let admitted = count(&statuses, 200);
    assert!(admitted > 0 && count(&statuses, 429) > 0, "{statuses:?}");
    let dir = gw.stop();
    let rows = rows_in(dir.path(), &user);
    let used: i64 = rows.iter().map(|r| r.total_tokens).sum();
    assert_eq!(rows.len(), admitted);
    assert!(
        used <= 2000,
        "{used} tokens recorded against a budget of 2000"
    );
}

#[test]
fn a_cost_cap_is_never_exceeded_under_concurrency() {
    let (upstream, _) = mock_openai();
    let user = unique("limits-cost");
    let key = format!("tg_{user}");
    // Each gpt-4o call reserves its input bound (the body's bytes) at $2.50/M plus 50 output
    // tokens at $10/M, about $0.0007, and costs less; a $0.01 cap admits some of 60 concurrent
    // calls, and what they cost stays within it.
    let cap_nanousd = 10_000_000;
    let gw = start_plan(upstream, &user, &key, "cost_cap = \"0.01\"", "", "");
    let statuses = burst(&[gw.port], &key, 60);
    let admitted = count(&statuses, 200);
    assert!(admitted > 0 && count(&statuses, 429) > 0, "{statuses:?}");
    assert_eq!(admitted + count(&statuses, 429), 60, "{statuses:?}");
    let dir = gw.stop();
    let rows = rows_in(dir.path(), &user);
    assert_eq!(rows.len(), admitted);
    let cost: i64 = rows.iter().map(|r| r.cost_total_nanousd).sum();
    assert!(cost > 0 && rows.iter().all(|r| r.cost_total_nanousd > 0));
    assert!(
        cost <= cap_nanousd,
        "{cost} nano-USD recorded against a cap of {cap_nanousd}"
    );
}

#[test]
fn clients_hanging_up_mid_stream_leave_one_event_each() {
    let (upstream, _) = mock_openai();
    let user = unique("hangups");
    let key = format!("tg_{user}");
    let gw = start(upstream, &user, &key, "calls = 1000", "");
    let port = gw.port;
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let key = key.clone();
            std::thread::spawn(move || {
                let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}],"max_tokens":50}"#;
                let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                write!(
                    stream,
                    "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                // Hang up after a different number of bytes each time (at least one, so the
                // call was admitted): in the head, among the events, or after the whole stream.
                let stop_after = 1 + (i * 97) % 4000;
                let mut seen = 0;
                let mut buf = [0u8; 256];
                while seen < stop_after {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen += n,
                    }
                }
                drop(stream);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Let the gateway notice the last hang-ups before it is stopped.
    std::thread::sleep(Duration::from_millis(500));
    let dir = gw.stop();
    let rows = rows_in(dir.path(), &user);
    assert_eq!(rows.len(), 100, "one event per admitted call");
    assert!(
        rows.iter().any(|r| r.estimated),
        "some streams were cut before their usage"
    );
}
