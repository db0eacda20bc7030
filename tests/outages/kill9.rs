//! `[ledger] durability = "sync"` survives `kill -9`: clients call the gateway in a loop, the
//! gateway is killed outright midway, the ledger is started again on the same database and
//! spool, and every response a client received in full has its usage row — found by the
//! `x-request-id` it carried — exactly once. The calls take each of the ways a call ends under
//! `sync`: a JSON answer and an event stream (at the body's end), a 204 (a response without a
//! body, at its head), and an upstream that goes away before answering (the gateway's own 502).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use harness::{Gateway, Mock, Reply, client_key, key_entry, ledger_rows, provider_key};
use tollgate_ledger::test_database::TestDatabase;

/// Client threads calling at once.
const CLIENTS: usize = 8;
/// Complete responses before the kill: the gateway is killed in the middle of the load.
const CALLS_BEFORE_KILL: usize = 300;

const USAGE: &str = r#""usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}"#;

/// How a call ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Json,
    Stream,
    /// The upstream answers 204: no body.
    NoBody,
    /// The upstream closes the connection without answering: the gateway answers 502.
    Gone,
}

const KINDS: [Kind; 4] = [Kind::Json, Kind::Stream, Kind::NoBody, Kind::Gone];

/// An OpenAI upstream: a chat completion as one JSON body, streamed in a few paced chunks, a
/// 204, or nothing at all, as the request's `user` field asks.
fn openai() -> Mock {
    Mock::with_handler(|seen| {
        if seen.contains("\"user\":\"NoBody\"") {
            Reply::new(204, "application/json", "")
        } else if seen.contains("\"user\":\"Gone\"") {
            Reply::close()
        } else if seen.contains("\"stream\":true") {
            let mut body = String::new();
            for _ in 0..4 {
                body.push_str("data: {\"id\":\"c\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"}}],\"usage\":null}\n\n");
            }
            body.push_str(&format!(
                "data: {{\"id\":\"c\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],{USAGE}}}\n\ndata: [DONE]\n\n"
            ));
            Reply::sse(body, 120).paced(Duration::from_millis(1))
        } else {
            Reply::json(format!(
                r#"{{"id":"c","model":"gpt-4o-2024-08-06","choices":[{{"index":0,"message":{{"role":"assistant","content":"hi"}}}}],{USAGE}}}"#
            ))
        }
    })
}

fn start(database_url: &str, durability: &str, mock: &Mock) -> Gateway {
    let rest = format!(
        "[providers.openai]\nbase_url = \"http://127.0.0.1:{}\"\nkey_env = \"TG_OPENAI_KEY\"\n\
         [plans.p]\nname = \"P\"\ntier = \"pro\"\n{}",
        mock.port,
        key_entry("kim", "p", &client_key("kim")),
    );
    Gateway::start_with_ledger(
        database_url,
        &format!("durability = \"{durability}\"\nflush_interval_ms = 200"),
        &rest,
        &[("TG_OPENAI_KEY", &provider_key("openai"))],
    )
}

/// One call on a fresh connection; the request id of its response if it arrived in full (its
/// whole `content-length`, a chunked body up to its last chunk, or the head of a 204), none
/// otherwise.
fn call(port: u16, kind: Kind) -> Option<String> {
    let stream = kind == Kind::Stream;
    let body = format!(r#"{{"model":"gpt-4o","stream":{stream},"user":"{kind:?}","messages":[]}}"#);
    let mut connection = TcpStream::connect(("127.0.0.1", port)).ok()?;
    connection
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        connection,
        "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: localhost\r\n\
         authorization: Bearer {}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        client_key("kim"),
        body.len()
    )
    .ok()?;
    let mut raw = Vec::new();
    let _ = connection.read_to_end(&mut raw);
    complete_response(&raw, kind)
}

/// The `x-request-id` of a response of the status `kind` gets, received in full.
fn complete_response(raw: &[u8], kind: Kind) -> Option<String> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    let status = match kind {
        Kind::Json | Kind::Stream => "http/1.1 200",
        Kind::NoBody => "http/1.1 204",
        Kind::Gone => "http/1.1 502",
    };
    if !head.starts_with(status) {
        return None;
    }
    let header = |name: &str| {
        head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            (n.trim() == name).then(|| v.trim().to_owned())
        })
    };
    let whole = match header("content-length") {
        _ if kind == Kind::NoBody => body.is_empty(),
        Some(length) => length.parse::<usize>().ok()? == body.len(),
        None => {
            header("transfer-encoding").is_some_and(|t| t.contains("chunked"))
                && chunked_body_complete(body)
        }
    };
    whole.then(|| header("x-request-id")).flatten()
}

/// Whether a chunked body runs through well-formed chunks to its last (zero-sized) one.
fn chunked_body_complete(mut body: &[u8]) -> bool {
    loop {
        let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") else {
            return false;
        };
        let size = std::str::from_utf8(&body[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok());
        let Some(size) = size else {
            return false;
        };
        let rest = &body[line_end + 2..];
        if size == 0 {
            return rest.starts_with(b"\r\n");
        }
        if rest.len() < size + 2 {
            return false;
        }
        body = &rest[size + 2..];
    }
}

/// Runs [`CLIENTS`] looping clients against the gateway, kills it with SIGKILL once
/// [`CALLS_BEFORE_KILL`] calls have completed, starts its ledger again and answers how many
/// responses of each kind arrived in full and which of those have no row, or more than one.
fn kill_under_load(
    database_url: &str,
    read_url: impl FnOnce(&Gateway) -> String,
) -> (HashMap<Kind, usize>, Vec<String>) {
    let mock = openai();
    let gateway = start(database_url, "sync", &mock);
    let url = read_url(&gateway);
    let spool = gateway.dir.path().join("var/spool");
    let completed = Arc::new(AtomicUsize::new(0));
    let port = gateway.port;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let completed = Arc::clone(&completed);
            std::thread::spawn(move || {
                let mut received = Vec::new();
                let mut failures = 0;
                // Until the gateway is gone: a few calls in a row that get nothing in full.
                for n in 0.. {
                    let kind = KINDS[(i + n) % KINDS.len()];
                    match call(port, kind) {
                        Some(id) => {
                            received.push((kind, id));
                            completed.fetch_add(1, Relaxed);
                            failures = 0;
                        }
                        None if failures > 20 => break,
                        None => failures += 1,
                    }
                }
                received
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while completed.load(Relaxed) < CALLS_BEFORE_KILL {
        assert!(Instant::now() < deadline, "the load did not get going");
        std::thread::sleep(Duration::from_millis(5));
    }
    let dir = gateway.kill();
    let received: Vec<(Kind, String)> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    harness::reopen_ledger(&url, &spool);
    let mut rows: HashMap<String, usize> = HashMap::new();
    for row in ledger_rows(&url, "kim") {
        *rows.entry(row.request_id.unwrap_or_default()).or_default() += 1;
    }
    drop(dir);
    let mut kinds: HashMap<Kind, usize> = HashMap::new();
    for (kind, _) in &received {
        *kinds.entry(*kind).or_default() += 1;
    }
    let missing = received
        .into_iter()
        .filter(|(_, id)| rows.get(id) != Some(&1))
        .map(|(kind, id)| format!("{kind:?} {id}"))
        .collect();
    (kinds, missing)
}

/// Every kind of call was received in full, many times, and each has exactly one row.
fn assert_nothing_lost(kinds: &HashMap<Kind, usize>, missing: &[String]) {
    let received: usize = kinds.values().sum();
    assert!(received >= CALLS_BEFORE_KILL, "{kinds:?}");
    for kind in KINDS {
        assert!(
            kinds
                .get(&kind)
                .is_some_and(|n| *n >= CALLS_BEFORE_KILL / 8),
            "too few {kind:?} calls: {kinds:?}"
        );
    }
    assert!(
        missing.is_empty(),
        "{} of {received} complete responses have no row (or several): {missing:?}",
        missing.len()
    );
}

#[test]
fn sync_durability_loses_no_response_a_client_received_sqlite() {
    let (kinds, missing) = kill_under_load("sqlite://ledger.db", Gateway::ledger_url);
    assert_nothing_lost(&kinds, &missing);
}

#[test]
fn sync_durability_loses_no_response_a_client_received_postgres() {
    let database = TestDatabase::create("kill9");
    let url = database.url.clone();
    let (kinds, missing) = kill_under_load(&url, |_| url.clone());
    assert_nothing_lost(&kinds, &missing);
}
