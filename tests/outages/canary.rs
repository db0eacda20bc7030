//! No secret in any output. Client keys are planted in every slot a provider takes one (each
//! auth header, Gemini's `?key=`, Tavily's body `api_key`), unknown keys beside them, provider
//! keys and the admin token in the environment; every error path is driven (upstream reset,
//! stall, 4xx and 5xx, a broken stream, a malformed chunk, refusals of every kind, oversized
//! heads and bodies, a dot-segment path); then everything the gateway wrote — its log, every
//! file in its directory (the SQLite ledger and its WAL, the spool, rejected events), a
//! PostgreSQL ledger's dump, `/metrics` and every admin API answer — is searched for each
//! secret, whole. There must be no hit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use harness::{Gateway, Mock, Reply, key_entry, post_json, request, send_raw};
use tollgate_ledger::test_database::TestDatabase;

const KEY: &str = "tg_canary_live_4f1e9d2c7b";
const CAPPED_KEY: &str = "tg_canary_capped_8a3b6e0f5d";
const UNKNOWN_KEY: &str = "tg_canary_unknown_2c9d4e7a1b";
const ADMIN_TOKEN: &str = "canary-admin-token-6e2f9a";
const PROVIDERS: [&str; 9] = [
    "openai",
    "anthropic",
    "gemini",
    "mistral",
    "tavily",
    "serper",
    "exa",
    "firecrawl",
    "stability",
];

fn provider_secret(provider: &str) -> String {
    format!("canary-{provider}-provider-secret-31")
}

fn secrets() -> Vec<String> {
    let mut all: Vec<String> = [KEY, CAPPED_KEY, UNKNOWN_KEY, ADMIN_TOKEN]
        .map(str::to_owned)
        .to_vec();
    all.extend(PROVIDERS.map(provider_secret));
    all
}

/// An upstream that answers as each request's `x-mock` header says: a 200 in the provider's
/// JSON, an error status, a stream cut mid-event, or no answer at all.
fn upstream() -> Mock {
    Mock::with_handler(|seen| match seen.header("x-mock").unwrap_or("ok") {
        "hang" => Reply::hang(),
        "broken" => Reply::sse(
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel",
            8,
        ),
        status if status.parse::<u16>().is_ok() => Reply::json(
            r#"{"error":{"message":"upstream says no","type":"invalid_request_error"}}"#,
        )
        .status(status.parse().unwrap()),
        _ => Reply::json(
            r#"{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#,
        ),
    })
}

/// A provider that takes the connection and closes it without a word.
fn resetting_upstream() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
        }
    });
    port
}

fn start(ledger: (&str, &str), upstream: &Mock, reset_port: u16) -> Gateway {
    let mut rest = String::from("unpriced_model = \"reject\"\n");
    for provider in PROVIDERS {
        let port = if provider == "mistral" {
            reset_port
        } else {
            upstream.port
        };
        rest.push_str(&format!(
            "[providers.{provider}]\nbase_url = \"http://127.0.0.1:{port}\"\n\
             key_env = \"CANARY_{}_KEY\"\n",
            provider.to_uppercase()
        ));
    }
    rest.push_str(
        "[plans.open]\nname = \"Open\"\ntier = \"pro\"\n\
         [plans.capped]\nname = \"Capped\"\ntier = \"free\"\n\
         [plans.capped.providers]\nopenai = { calls = 1 }\n",
    );
    rest.push_str(&key_entry("canary", "open", KEY));
    rest.push_str(&key_entry("capped", "capped", CAPPED_KEY));
    let env_names: Vec<String> = PROVIDERS
        .iter()
        .map(|p| format!("CANARY_{}_KEY", p.to_uppercase()))
        .collect();
    let env_values: Vec<String> = PROVIDERS.map(provider_secret).to_vec();
    let mut env: Vec<(&str, &str)> = env_names
        .iter()
        .zip(&env_values)
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    env.push(("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN));
    env.push(("RUST_LOG", "debug"));
    let proxy = "upstream_read_timeout_ms = 300\nmax_request_body_bytes = 4096\n\
                 max_request_header_bytes = 8192";
    Gateway::start_capturing_log_with_ledger(proxy, ledger, &rest, &env)
}

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}"#;

/// Every error path, each with a key in its slot.
fn drive(gw: &Gateway) {
    let bearer = format!("Bearer {KEY}");
    let unknown_bearer = format!("Bearer {UNKNOWN_KEY}");
    let openai = "/openai/v1/chat/completions";
    for mode in ["ok", "500", "429", "401", "hang", "broken"] {
        let _ = post_json(
            gw.port,
            openai,
            &[("authorization", &bearer), ("x-mock", mode)],
            CHAT,
        );
    }
    let anthropic = r#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[]}"#;
    for (mode, key) in [("ok", KEY), ("400", KEY), ("ok", UNKNOWN_KEY)] {
        let _ = post_json(
            gw.port,
            "/anthropic/v1/messages",
            &[("x-api-key", key), ("x-mock", mode)],
            anthropic,
        );
    }
    let gemini = r#"{"contents":[{"parts":[{"text":"Hi"}]}]}"#;
    for (mode, key) in [
        ("ok", KEY),
        ("hang", KEY),
        ("503", KEY),
        ("ok", UNKNOWN_KEY),
    ] {
        let path = format!("/gemini/v1beta/models/gemini-2.5-flash:generateContent?key={key}");
        let _ = post_json(gw.port, &path, &[("x-mock", mode)], gemini);
        let path = "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";
        let _ = post_json(
            gw.port,
            path,
            &[("x-goog-api-key", key), ("x-mock", mode)],
            gemini,
        );
    }
    for key in [KEY, UNKNOWN_KEY] {
        let body = format!(r#"{{"api_key":"{key}","query":"canary"}}"#);
        for mode in ["ok", "500", "hang"] {
            let _ = post_json(gw.port, "/tavily/search", &[("x-mock", mode)], &body);
        }
    }
    for (path, header, prefix) in [
        ("/serper/search", "x-api-key", ""),
        ("/exa/search", "x-api-key", ""),
        ("/firecrawl/v2/scrape", "authorization", "Bearer "),
        (
            "/stability/v2beta/stable-image/generate/core",
            "authorization",
            "Bearer ",
        ),
        ("/mistral/v1/chat/completions", "authorization", "Bearer "),
    ] {
        for key in [KEY, UNKNOWN_KEY] {
            for mode in ["ok", "502"] {
                let value = format!("{prefix}{key}");
                let body = r#"{"model":"mistral-small-latest","q":"canary","query":"canary","url":"https://example.com","messages":[]}"#;
                let _ = post_json(gw.port, path, &[(header, &value), ("x-mock", mode)], body);
            }
        }
    }
    // Refusals: over a limit, an unpriced model, unknown routes and keys.
    let capped = format!("Bearer {CAPPED_KEY}");
    for _ in 0..2 {
        let _ = post_json(gw.port, openai, &[("authorization", &capped)], CHAT);
    }
    let unpriced = r#"{"model":"gpt-canary-unpriced","messages":[]}"#;
    let _ = post_json(gw.port, openai, &[("authorization", &bearer)], unpriced);
    let _ = post_json(gw.port, openai, &[("authorization", &unknown_bearer)], CHAT);
    let _ = post_json(
        gw.port,
        "/nowhere/v1/x",
        &[("authorization", &bearer)],
        CHAT,
    );
    // Bad input: a dot-segment path, oversized head and body, a malformed chunk, a bad length.
    let path = format!("/gemini/v1beta/../../admin?key={KEY}");
    let _ = post_json(gw.port, &path, &[], "{}");
    let big_header = "x".repeat(16 * 1024);
    let _ = post_json(
        gw.port,
        openai,
        &[("authorization", &bearer), ("x-big", &big_header)],
        CHAT,
    );
    let big_body = format!(
        r#"{{"model":"gpt-4o","messages":[],"pad":"{}"}}"#,
        "y".repeat(8192)
    );
    let _ = post_json(gw.port, openai, &[("authorization", &bearer)], &big_body);
    let raw = format!(
        "POST /gemini/v1beta/models/gemini-2.5-flash:generateContent?key={KEY} HTTP/1.1\r\n\
         host: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
         zz\r\n{{}}\r\n0\r\n\r\n"
    );
    let _ = send_raw(gw.port, raw.as_bytes());
    let raw = format!(
        "POST {openai} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\n\
         content-length: nine\r\n\r\n{CHAT}"
    );
    let _ = send_raw(gw.port, raw.as_bytes());
    // The client leaves in the middle of a stalled call.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    let raw = format!(
        "POST {openai} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\nx-mock: hang\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{CHAT}",
        CHAT.len()
    );
    std::io::Write::write_all(&mut stream, raw.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(stream);
}

/// Everything the admin API answers: `/metrics`, then each GET of its OpenAPI document for both
/// users, with the admin token.
fn admin_answers(gw: &Gateway) -> Vec<(String, String)> {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let get = |path: &str| {
        let r = request(gw.admin_port, "GET", path, &[("authorization", &auth)], b"");
        (path.to_owned(), r.text())
    };
    let openapi: serde_json::Value = serde_json::from_str(&get("/api/openapi.json").1).unwrap();
    let mut answers = vec![get("/metrics"), get("/dashboard")];
    for (path, item) in openapi["paths"].as_object().unwrap() {
        if item.get("get").is_none() {
            continue;
        }
        for user in ["canary", "capped"] {
            let path = path.replace("{user_id}", user);
            answers.push(get(&path));
        }
    }
    assert!(answers.len() > 10, "{answers:?}");
    answers
}

/// The files under `dir`, each with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
    out
}

fn assert_no_secret(place: &str, bytes: &[u8]) {
    for secret in secrets() {
        assert!(
            memchr::memmem::find(bytes, secret.as_bytes()).is_none(),
            "{secret} found in {place}:\n{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

fn check_outputs(gw: &Gateway) {
    for (path, answer) in admin_answers(gw) {
        assert_no_secret(&format!("the admin answer to {path}"), answer.as_bytes());
    }
    for (path, bytes) in files(gw.dir.path()) {
        if !path.ends_with("gateway.toml") {
            assert_no_secret(&path, &bytes);
        }
    }
}

/// The gateway's log holds the calls it was asked to log, so the search is not vacuous.
fn assert_log_is_full(log: &str) {
    for expected in ["upstream_timeout", "openai", "gemini", "tavily", "401"] {
        assert!(log.contains(expected), "no {expected:?} in the log:\n{log}");
    }
}

#[test]
fn no_secret_reaches_the_log_the_sqlite_ledger_the_metrics_or_the_admin_api() {
    let upstream = upstream();
    let gw = start(("sqlite://ledger.db", ""), &upstream, resetting_upstream());
    drive(&gw);
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !upstream.seen().is_empty(),
        "the upstream was never reached"
    );
    check_outputs(&gw);
    let dir = gw.stop();
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert_log_is_full(&log);
    for (path, bytes) in files(dir.path()) {
        if !path.ends_with("gateway.toml") {
            assert_no_secret(&path, &bytes);
        }
    }
}

/// Holds `api_usage_logs` locked, as a database too busy to take writes would: the ledger's
/// queue fills and events go to the spool.
struct Stall(std::process::Child);

impl Stall {
    fn start(url: &str) -> Stall {
        let mut psql = std::process::Command::new("psql")
            .args([url, "-q", "-v", "ON_ERROR_STOP=1"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = psql.stdin.as_mut().unwrap();
        std::io::Write::write_all(
            stdin,
            b"BEGIN; LOCK TABLE api_usage_logs IN ACCESS EXCLUSIVE MODE;\n",
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        Stall(psql)
    }

    fn end(mut self) {
        drop(self.0.stdin.take());
        self.0.wait().unwrap();
    }
}

#[test]
fn no_secret_reaches_a_postgresql_ledger_or_its_spool() {
    let db = TestDatabase::create("canary");
    let upstream = upstream();
    let ledger = (db.url.as_str(), "queue_capacity = 4\nbatch_max_events = 2");
    let gw = start(ledger, &upstream, resetting_upstream());
    drive(&gw);
    std::thread::sleep(Duration::from_millis(800));
    check_outputs(&gw);
    // A database that takes no writes: the events of the same calls go to the spool.
    let stall = Stall::start(&db.url);
    drive(&gw);
    std::thread::sleep(Duration::from_millis(800));
    let spooled: usize = files(gw.dir.path())
        .iter()
        .filter(|(path, _)| path.contains("spool"))
        .map(|(_, bytes)| bytes.len())
        .sum();
    assert!(spooled > 1000, "nothing was spooled");
    for (path, bytes) in files(gw.dir.path()) {
        if !path.ends_with("gateway.toml") {
            assert_no_secret(&path, &bytes);
        }
    }
    stall.end();
    let dir = gw.stop();
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert_log_is_full(&log);
    assert_no_secret("the log", log.as_bytes());
    let dump = std::process::Command::new("pg_dump")
        .args(["--data-only", "--no-owner", &db.url])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(
        String::from_utf8_lossy(&dump.stdout).contains("canary"),
        "the dump holds the user's rows"
    );
    assert_no_secret("the PostgreSQL dump", &dump.stdout);
}
