//! Calls that end badly leave nothing held in Redis, through the real binary: a thousand
//! streaming clients hang up at random moments (mid-request, before the answer, mid-stream,
//! after it), then a gateway is killed (SIGKILL) with streams in flight. Once the killed
//! gateway's reservations have expired, a fresh gateway admits the user exactly up to what is
//! left of the limit: no hold leaked, no false 429. Every call the surviving gateway sent to the
//! provider has exactly one usage event, and Redis's counters equal its ledger's sums.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use harness::{Gateway, Mock, RedisServer, Reply, key_entry, wait_rows};

const USER: &str = "u-hangups";
const KEY: &str = "tg_key_hangups";
const CLIENTS: usize = 1_000;
/// Clients connected at once.
const CONCURRENCY: usize = 100;
/// A reservation expires after twice the upstream read timeout: 2 s here.
const UPSTREAM_READ_TIMEOUT_MS: u64 = 1_000;

const BODY: &str = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}],"max_tokens":50}"#;

/// An OpenAI stream: twenty content events, then usage and `[DONE]`.
fn stream() -> String {
    let mut sse = String::new();
    for i in 0..20 {
        sse.push_str(&format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"word{i} \"}}}}]}}\n\n"
        ));
    }
    sse.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":40,\"total_tokens\":52}}\n\ndata: [DONE]\n\n");
    sse
}

/// A provider that streams slowly (about 40 chunks, 5 ms apart), and answers a plain
/// completion at once.
fn mock() -> Mock {
    Mock::with_handler(|seen| {
        if seen.contains("\"stream\":true") {
            Reply::sse(stream(), 64).paced(Duration::from_millis(5))
        } else {
            Reply::json(
                r#"{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29}}"#,
            )
        }
    })
}

fn start(upstream: u16, redis: &RedisServer, calls: u64) -> Gateway {
    let rest = format!(
        "[providers.openai]\nbase_url = \"http://127.0.0.1:{upstream}\"\nkey_env = \"TG_TEST_OPENAI_KEY\"\n[plans.test]\nname = \"Test\"\ntier = \"pro\"\n[plans.test.providers]\nopenai = {{ calls = {calls} }}\n{}",
        key_entry(USER, "test", KEY)
    );
    // A generous Redis timeout: a thousand clients on two cores must not be refused for a slow
    // Redis answer (fail_closed is the default).
    let storage = format!(
        "counters = \"redis\"\nredis_url = \"{}\"\nredis_timeout_ms = 2000",
        redis.url()
    );
    Gateway::start_with_storage(
        &format!("threads = 2\nupstream_read_timeout_ms = {UPSTREAM_READ_TIMEOUT_MS}"),
        &storage,
        &rest,
        &[
            ("TG_TEST_OPENAI_KEY", "sk-upstream"),
            ("RUST_LOG", "error,pingora_proxy=off,pingora_core=off"),
        ],
    )
}

/// A fixed pseudo-random sequence (xorshift), so that a failure can be replayed.
fn random(i: usize) -> u64 {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// Opens a streaming call. With `body_bytes` short of the whole body, the client stops
/// sending there.
fn open_call(port: u16, body_bytes: usize) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        BODY.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
        .write_all(&BODY.as_bytes()[..body_bytes.min(BODY.len())])
        .unwrap();
    stream
}

/// One client hanging up at a moment of its own: mid-request, right after it, or after some
/// number of response bytes (some beyond the whole response: it read everything).
fn hang_up(port: u16, i: usize) {
    let r = random(i);
    if r.is_multiple_of(20) {
        drop(open_call(port, BODY.len() / 2));
        return;
    }
    let mut stream = open_call(port, BODY.len());
    let stop_after = (r >> 8) % 6_000;
    let mut seen = 0;
    let mut buf = [0u8; 512];
    while (seen as u64) < stop_after {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen += n,
        }
    }
}

/// The calls the provider received. These bodies are small, so the gateway reads each whole
/// before the upstream request begins: a client that hangs up in the middle of its body reaches
/// no provider at all (nothing empty or partial arrives).
fn calls_served(upstream: &Mock) -> usize {
    let seen = upstream.seen();
    assert!(
        seen.iter()
            .all(|s| serde_json::from_slice::<serde_json::Value>(&s.body).is_ok()),
        "a partial request reached the provider"
    );
    seen.len()
}

/// The user's counter hash in Redis, as numbers.
fn counters(redis: &RedisServer) -> (String, HashMap<String, String>) {
    let keys: Vec<String> = redis
        .keys(&format!("tollgate:{{u:{USER}}}:*"))
        .into_iter()
        .filter(|k| !k.ends_with(":exp"))
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let hash = redis.hash(&keys[0]);
    (keys[0].clone(), hash)
}

fn number(hash: &HashMap<String, String>, field: &str) -> i64 {
    hash.get(field).map_or(0, |v| v.parse().unwrap())
}

/// Holds still recorded: the sum of every `r:` counter, and reservations not settled.
fn held(hash: &HashMap<String, String>) -> (i64, usize) {
    let amounts = hash
        .iter()
        .filter(|(f, _)| f.starts_with("r:"))
        .map(|(_, v)| v.parse::<i64>().unwrap())
        .sum();
    let open = hash
        .iter()
        .filter(|(f, v)| f.starts_with("h:") && v.as_str() != "-")
        .count();
    (amounts, open)
}

#[test]
fn hangups_and_a_killed_gateway_leave_no_hold_and_no_false_429() {
    let redis = RedisServer::start();

    // 1. A thousand clients hanging up at random moments.
    let upstream = mock();
    let gw = start(upstream.port, &redis, 1_000_000);
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let next = Arc::clone(&next);
            let port = gw.port;
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= CLIENTS {
                        return;
                    }
                    hang_up(port, i);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    // Every call that reached the provider has one usage event, and nothing is held.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (rows, hash) = loop {
        let served = calls_served(&upstream);
        let rows = harness::ledger_rows(&gw.ledger_url(), USER);
        let (_, hash) = counters(&redis);
        if (rows.len() == served && held(&hash) == (0, 0)) || Instant::now() > deadline {
            assert_eq!(rows.len(), served, "usage events vs calls the provider saw");
            break (rows, hash);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        rows.len() > CLIENTS / 2,
        "only {} calls admitted",
        rows.len()
    );
    assert!(rows.iter().any(|r| r.estimated), "no stream was cut");
    assert!(
        rows.iter().any(|r| !r.estimated),
        "no stream was read whole"
    );
    assert_eq!(
        held(&hash),
        (0, 0),
        "holds left after the hang-ups: {hash:?}"
    );
    let billed = rows
        .iter()
        .filter(|r| (200..300).contains(&r.status_code))
        .count() as i64;
    let tokens: i64 = rows.iter().map(|r| r.total_tokens).sum();
    let cost: i64 = rows.iter().map(|r| r.cost_total_nanousd).sum();
    assert_eq!(
        (
            number(&hash, "u:openai_calls"),
            number(&hash, "u:openai_tokens"),
            number(&hash, "u:monthly_cost")
        ),
        (billed, tokens, cost),
        "redis vs the ledger"
    );
    drop(gw.stop());

    // 2. A gateway killed with streams in flight.
    let doomed_upstream = mock();
    let doomed = start(doomed_upstream.port, &redis, 1_000_000);
    let port = doomed.port;
    let streams: Vec<_> = (0..40)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = open_call(port, BODY.len());
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink);
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while calls_served(&doomed_upstream) < 20 {
        assert!(
            Instant::now() < deadline,
            "the streams never reached the provider"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(doomed.kill());
    let killed_at = Instant::now();
    for s in streams {
        s.join().unwrap();
    }
    let (key, hash) = counters(&redis);
    let (amounts, open) = held(&hash);
    assert!(
        amounts > 0 && open > 0,
        "the killed gateway left no hold to expire: {hash:?}"
    );

    // 3. Once those holds expired (2 × the upstream read timeout), a fresh gateway admits the
    // user exactly up to what is left of a limit: the expired holds no longer count.
    let expired = Duration::from_millis(2 * UPSTREAM_READ_TIMEOUT_MS + 300);
    std::thread::sleep(expired.saturating_sub(killed_at.elapsed()));
    let used = number(&hash, "u:openai_calls");
    let left: i64 = 30;
    let fresh_upstream = mock();
    let fresh = start(
        fresh_upstream.port,
        &redis,
        u64::try_from(used + left).unwrap(),
    );
    let burst = usize::try_from(left).unwrap() + 20;
    let barrier = Arc::new(Barrier::new(burst));
    let port = fresh.port;
    let statuses: Vec<u16> = (0..burst)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                harness::post_json(
                    port,
                    "/openai/v1/chat/completions",
                    &[("authorization", &format!("Bearer {KEY}"))],
                    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":20}"#,
                )
                .status
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let admitted = statuses.iter().filter(|&&s| s == 200).count();
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!((admitted, refused), (burst - 20, 20), "{statuses:?}");
    assert_eq!(calls_served(&fresh_upstream), admitted);
    wait_rows(&fresh.ledger_url(), USER, admitted);
    let hash = redis.hash(&key);
    assert_eq!(held(&hash), (0, 0), "holds left: {hash:?}");
    assert_eq!(number(&hash, "u:openai_calls"), used + left);
    drop(fresh.stop());
}
