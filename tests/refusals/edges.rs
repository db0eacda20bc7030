//! The real binary refusing what it must refuse, each time in the shape of the provider the
//! client thinks it is talking to, and surviving it: unknown routes, missing and unknown keys,
//! bodies over the cap (announced or chunked), a provider that refuses connections, one that
//! never answers, a provider's own 500 passed through and recorded at no cost, and a key
//! revoked through the admin API refused from the very next request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use std::sync::{Mutex, OnceLock};

use harness::{Gateway, Mock, Reply, Response};
use serde_json::Value;
use tollgate_ledger::test_database::TestDatabase;

const USER: &str = "refusal-user";
const KEY: &str = "tg_refusal_user_key_0123456789";
const BODY_CAP_BYTES: usize = 1024;
const ADMIN_TOKEN: &str = "admin-token-refusals";

struct Env {
    gateway: Mutex<Gateway>,
    openai: Mock,
    anthropic: Mock,
}

/// One gateway for the file: OpenAI and Anthropic at mocks, Gemini at a port nobody listens on,
/// the other providers at their defaults (never reached: every call to them is refused first).
fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let openai = Mock::start();
        let anthropic = Mock::start();
        let closed_port = harness::free_port();
        let rest = format!(
            r#"
[providers.openai]
base_url = "http://127.0.0.1:{openai}"
[providers.anthropic]
base_url = "http://127.0.0.1:{anthropic}"
[providers.gemini]
base_url = "http://127.0.0.1:{closed_port}"
[plans.all]
name = "All"
tier = "pro"
[plans.all.providers]
openai = {{ calls = 100 }}
anthropic = {{ calls = 100 }}
gemini = {{ calls = 100 }}
{key}"#,
            openai = openai.port,
            anthropic = anthropic.port,
            key = harness::key_entry(USER, "all", KEY),
        );
        let keys: Vec<(String, String)> = [
            "OPENAI",
            "ANTHROPIC",
            "GEMINI",
            "MISTRAL",
            "TAVILY",
            "SERPER",
            "EXA",
            "FIRECRAWL",
            "STABILITY",
        ]
        .iter()
        .map(|p| (format!("{p}_API_KEY"), format!("real-{p}-key")))
        .collect();
        let mut keys: Vec<(&str, &str)> =
            keys.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        keys.push(("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN));
        // Keys issued through the admin API are cached far longer than any test runs, so that
        // only the revocation itself can clear them.
        let gateway = Gateway::start(
            &format!(
                "max_request_body_bytes = {BODY_CAP_BYTES}\nupstream_read_timeout_ms = 500\n\
                 key_cache_ttl_ms = 600000"
            ),
            &rest,
            &keys,
        );
        Env {
            gateway: Mutex::new(gateway),
            openai,
            anthropic,
        }
    })
}

fn port() -> u16 {
    env().gateway.lock().unwrap().port
}

fn assert_alive() {
    assert!(
        env().gateway.lock().unwrap().is_alive(),
        "the gateway process died"
    );
}

/// Checks that `body` is `provider`'s error shape for `status` and carries Tollgate's `code`.
fn assert_shape(provider: &str, status: u16, code: &str, response: &Response) {
    assert_eq!(response.status, status, "{provider}: {}", response.text());
    let body: Value = response.json();
    assert_eq!(body["tollgate"]["code"], code, "{provider}: {body}");
    let message_ok = match provider {
        "openai" | "mistral" => {
            body["error"]["code"] == code && body["error"]["message"].is_string()
        }
        "anthropic" => body["type"] == "error" && body["error"]["message"].is_string(),
        "gemini" => body["error"]["code"] == status && body["error"]["status"].is_string(),
        "tavily" => body["detail"]["error"].is_string(),
        "serper" => body["statusCode"] == status && body["message"].is_string(),
        "exa" => body["error"].is_string(),
        "firecrawl" => body["success"] == false && body["error"].is_string(),
        "stability" => body["name"] == code && body["errors"][0].is_string(),
        other => panic!("unknown provider {other}"),
    };
    assert!(message_ok, "not {provider}'s error shape: {body}");
}

/// A client path per provider, with a body the provider would accept.
const ROUTES: [(&str, &str, &str); 9] = [
    (
        "openai",
        "/openai/v1/chat/completions",
        r#"{"model":"gpt-4o","messages":[]}"#,
    ),
    (
        "anthropic",
        "/anthropic/v1/messages",
        r#"{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[]}"#,
    ),
    (
        "gemini",
        "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
        r#"{"contents":[]}"#,
    ),
    (
        "mistral",
        "/mistral/v1/chat/completions",
        r#"{"model":"mistral-small-latest","messages":[]}"#,
    ),
    ("tavily", "/tavily/search", r#"{"query":"q"}"#),
    ("serper", "/serper/search", r#"{"q":"q"}"#),
    ("exa", "/exa/search", r#"{"query":"q"}"#),
    (
        "firecrawl",
        "/firecrawl/v2/scrape",
        r#"{"url":"https://example.com"}"#,
    ),
    (
        "stability",
        "/stability/v2beta/stable-image/generate/core",
        r#"{"prompt":"p"}"#,
    ),
];

#[test]
fn unknown_route_is_404() {
    let response = harness::post_json(
        port(),
        "/nowhere/v1/things",
        &[("authorization", KEY)],
        "{}",
    );
    assert_shape("openai", 404, "unknown_route", &response);
    assert_alive();
}

#[test]
fn missing_and_unknown_keys_are_401_in_each_providers_shape() {
    for (provider, path, body) in ROUTES {
        let response = harness::post_json(port(), path, &[("x-case", "refused-401")], body);
        assert_shape(provider, 401, "missing_api_key", &response);
        let response = harness::post_json(
            port(),
            path,
            &[
                ("authorization", "Bearer tg_not_a_key"),
                ("x-api-key", "tg_not_a_key"),
                ("x-case", "refused-401"),
            ],
            body,
        );
        assert_shape(provider, 401, "invalid_api_key", &response);
    }
    let mut seen = env().openai.seen();
    seen.extend(env().anthropic.seen());
    assert!(
        seen.iter().all(|s| s.header("x-case").is_none()),
        "a call without a valid key was forwarded"
    );
    assert_alive();
}

#[test]
fn bodies_over_the_cap_are_413_announced_or_chunked() {
    let auth = format!("Bearer {KEY}");
    let path = "/openai/v1/chat/completions";
    let padding = "x".repeat(BODY_CAP_BYTES * 2);
    let body = format!(r#"{{"model":"gpt-4o","messages":[],"padding":"{padding}"}}"#);

    let response = harness::post_json(port(), path, &[("authorization", &auth)], &body);
    assert_shape("openai", 413, "request_too_large", &response);

    // The same body chunked, so no length is known up front.
    let response = harness::post_json_chunked(port(), path, &auth, &body, 300);
    assert_shape("openai", 413, "request_too_large", &response);

    // Neither body reached the provider whole.
    assert!(
        env()
            .openai
            .seen_at("/v1/chat/completions")
            .iter()
            .all(|s| !s.contains("padding")),
        "an oversized body was forwarded"
    );
    assert_alive();
}

#[test]
fn unreachable_provider_is_502() {
    let (_, path, body) = ROUTES[2];
    let response = harness::post_json(port(), path, &[("x-goog-api-key", KEY)], body);
    assert_shape("gemini", 502, "upstream_unreachable", &response);
    assert_alive();
}

/// A provider that takes the connection and closes it without answering: 502 saying so, not
/// "could not connect".
#[test]
fn a_provider_that_hangs_up_before_answering_is_502_upstream_closed() {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            drop(stream);
        }
    });
    let key = harness::client_key("hangup");
    let rest = format!(
        "[providers.mistral]\nbase_url = \"http://127.0.0.1:{upstream}\"\nkey_env = \"TG_MISTRAL_KEY\"\n\
         [plans.p]\nname = \"P\"\ntier = \"pro\"\n{}",
        harness::key_entry("hangup", "p", &key),
    );
    let gateway = Gateway::start("", &rest, &[("TG_MISTRAL_KEY", "sk-mistral")]);
    let response = harness::post_json(
        gateway.port,
        "/mistral/v1/chat/completions",
        &[("authorization", &format!("Bearer {key}"))],
        r#"{"model":"mistral-small-latest","messages":[]}"#,
    );
    assert_shape("mistral", 502, "upstream_closed", &response);
    assert!(
        response.text().contains("Mistral closed the connection"),
        "{}",
        response.text()
    );
    gateway.stop();
}

#[test]
fn silent_provider_is_504() {
    env().anthropic.script("/v1/messages", Reply::hang());
    let (_, path, body) = ROUTES[1];
    let response = harness::post_json(port(), path, &[("x-api-key", KEY)], body);
    assert_shape("anthropic", 504, "upstream_timeout", &response);
    assert_eq!(env().anthropic.seen_at("/v1/messages").len(), 1);
    assert_alive();
}

#[test]
fn provider_500_is_passed_through_and_recorded_at_no_cost() {
    let error = br#"{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}"#;
    env()
        .openai
        .script("/v1/embeddings", Reply::json(error.to_vec()).status(500));
    let response = harness::post_json(
        port(),
        "/openai/v1/embeddings",
        &[("authorization", &format!("Bearer {KEY}"))],
        r#"{"model":"text-embedding-3-small","input":"hello"}"#,
    );
    assert_eq!(response.status, 500);
    assert_eq!(response.body, error, "{}", response.text());

    // Other tests of this file may record calls of the same user: wait for this one's.
    let url = env().gateway.lock().unwrap().ledger_url();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let rows = loop {
        let rows: Vec<_> = harness::ledger_rows(&url, USER)
            .into_iter()
            .filter(|r| r.endpoint.contains("embeddings"))
            .collect();
        if !rows.is_empty() || std::time::Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(std::time::Duration::from_millis(30));
    };
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].status_code, 500);
    assert_eq!(rows[0].cost_total_nanousd, 0);
    assert_alive();
}

/// An admin API call with the admin token to the file's gateway; answers the status and the
/// JSON body.
fn admin(method: &str, path: &str, body: &str) -> (u16, Value) {
    let port = env().gateway.lock().unwrap().admin_port;
    admin_at(port, method, path, body)
}

/// An admin API call with the admin token to the gateway whose admin listener is `admin_port`.
fn admin_at(admin_port: u16, method: &str, path: &str, body: &str) -> (u16, Value) {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let response = harness::request(
        admin_port,
        method,
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.as_bytes(),
    );
    let json = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (response.status, json)
}

#[test]
fn a_key_revoked_through_the_admin_api_is_refused_from_the_next_request() {
    env().openai.script(
        "/v1/chat/completions",
        Reply::json(
            r#"{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
        ),
    );
    let (status, body) = admin(
        "PUT",
        &format!("/api/admin/users/{USER}/subscription"),
        r#"{"plan_id":"all"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin("POST", &format!("/api/admin/users/{USER}/keys"), "{}");
    assert_eq!(status, 201, "{body}");
    let issued = body["data"]["key"].as_str().unwrap().to_owned();
    let key_id = body["data"]["id"].as_str().unwrap().to_owned();
    let auth = format!("Bearer {issued}");
    let chat = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#;
    let path = "/openai/v1/chat/completions";

    // Accepted, and now cached by the gateway.
    let response = harness::post_json(port(), path, &[("authorization", &auth)], chat);
    assert_eq!(response.status, 200, "{}", response.text());

    let (status, body) = admin("DELETE", &format!("/api/admin/keys/{key_id}"), "");
    assert_eq!(status, 200, "{body}");
    let response = harness::post_json(port(), path, &[("authorization", &auth)], chat);
    assert_shape("openai", 401, "invalid_api_key", &response);
    assert_alive();
}

#[test]
fn without_a_key_cache_a_revocation_reaches_every_instance_at_once() {
    let upstream = Mock::start();
    upstream.script(
        "/v1/chat/completions",
        Reply::json(
            r#"{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
        ),
    );
    let database = TestDatabase::create("revoke");
    let rest = format!(
        r#"
[providers.openai]
base_url = "http://127.0.0.1:{}"
[plans.all]
name = "All"
tier = "pro"
[plans.all.providers]
openai = {{ calls = 100 }}
"#,
        upstream.port
    );
    let env = [
        ("OPENAI_API_KEY", "real-OPENAI-key"),
        ("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN),
        ("RUST_LOG", "warn"),
    ];
    // Two instances on one database, neither caching keys.
    let start =
        || Gateway::start_with_database("key_cache_ttl_ms = 0", &database.url, "", &rest, &env);
    let (a, b) = (start(), start());
    let user = "revoked-everywhere";
    let (status, body) = admin_at(
        a.admin_port,
        "PUT",
        &format!("/api/admin/users/{user}/subscription"),
        r#"{"plan_id":"all"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin_at(
        a.admin_port,
        "POST",
        &format!("/api/admin/users/{user}/keys"),
        "{}",
    );
    assert_eq!(status, 201, "{body}");
    let auth = format!("Bearer {}", body["data"]["key"].as_str().unwrap());
    let key_id = body["data"]["id"].as_str().unwrap().to_owned();
    let chat = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#;
    let path = "/openai/v1/chat/completions";
    for gw in [&a, &b] {
        let response = harness::post_json(gw.port, path, &[("authorization", &auth)], chat);
        assert_eq!(response.status, 200, "{}", response.text());
    }

    // Revoked through A; the very next request through B is refused.
    let (status, body) = admin_at(
        a.admin_port,
        "DELETE",
        &format!("/api/admin/keys/{key_id}"),
        "",
    );
    assert_eq!(status, 200, "{body}");
    for gw in [&b, &a] {
        let response = harness::post_json(gw.port, path, &[("authorization", &auth)], chat);
        assert_shape("openai", 401, "invalid_api_key", &response);
    }
    assert_eq!(upstream.seen_at("/v1/chat/completions").len(), 2);
    a.stop();
    b.stop();
}

/// Heads Pingora cannot parse, and bodies it cannot read, get a 400 in the provider's shape
/// (not Pingora's empty one, nor a 500).
#[test]
fn malformed_heads_and_chunks_are_400_in_the_providers_shape() {
    let path = "/openai/v1/chat/completions";
    for head in [
        format!("POST {path} HTTP/1.1 extra\r\nhost: a\r\ncontent-length: 2\r\n\r\n{{}}"),
        format!("POST {path} HTTP/1.1\r\nhost: a\r\ncontent-length: 2x\r\n\r\n{{}}"),
        format!(
            "POST {path} HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{{}}"
        ),
    ] {
        let response = harness::send_raw(port(), head.as_bytes());
        assert_shape("openai", 400, "invalid_request", &response);
    }
    let chunked = format!(
        "POST {path} HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
    );
    let response = harness::send_raw(port(), chunked.as_bytes());
    assert_shape("openai", 400, "invalid_request", &response);
    assert_alive();
}

/// A Stability upload is streamed through rather than held, and sent without a length it is
/// still held to `max_request_body_bytes`: cut off with 413, never reaching the provider whole.
#[test]
fn a_chunked_upload_over_the_cap_is_413() {
    let mock = Mock::start();
    mock.script(
        "/v2beta/stable-image/generate/core",
        Reply::json(r#"{"finish_reason":"SUCCESS","image":"aGk="}"#),
    );
    let key = harness::client_key("uploader");
    let rest = format!(
        "[providers.stability]\nbase_url = \"http://127.0.0.1:{}\"\nkey_env = \"TG_STABILITY_KEY\"\n\
         [plans.p]\nname = \"P\"\ntier = \"pro\"\n{}",
        mock.port,
        harness::key_entry("uploader", "p", &key),
    );
    let gateway = Gateway::start(
        "max_request_body_bytes = 65536",
        &rest,
        &[("TG_STABILITY_KEY", "sk-stability")],
    );
    let part = "x".repeat(8 * 1024);
    let mut raw = format!(
        "POST /stability/v2beta/stable-image/generate/core HTTP/1.1\r\nhost: a\r\n\
         authorization: Bearer {key}\r\ncontent-type: multipart/form-data; boundary=b\r\n\
         transfer-encoding: chunked\r\n\r\n"
    );
    for _ in 0..16 {
        raw.push_str(&format!("{:x}\r\n{part}\r\n", part.len()));
    }
    raw.push_str("0\r\n\r\n");
    let response = harness::send_raw(gateway.port, raw.as_bytes());
    assert_eq!(response.status, 413, "{}", response.text());
    assert!(
        mock.seen().iter().all(|s| s.body.len() < 128 * 1024),
        "the whole upload reached the provider"
    );
    gateway.stop();
}

/// A client that writes its whole body before reading, as most do, gets the 413 rather than a
/// reset in the middle of its write: the gateway reads and discards the rest of the body before
/// closing (up to a bound).
#[test]
fn a_client_still_writing_its_body_reads_the_413() {
    use std::io::{Read, Write};
    let path = "/openai/v1/chat/completions";
    let body = format!(
        r#"{{"model":"gpt-4o","messages":[],"padding":"{}"}}"#,
        "x".repeat(16 << 20)
    );
    let announced = format!(
        "POST {path} HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut chunked = format!(
        "POST {path} HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    for piece in body.as_bytes().chunks(64 * 1024) {
        chunked.push_str(&format!(
            "{:x}\r\n{}\r\n",
            piece.len(),
            std::str::from_utf8(piece).unwrap()
        ));
    }
    chunked.push_str("0\r\n\r\n");
    for raw in [announced, chunked] {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port())).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let written = stream.write_all(raw.as_bytes());
        assert!(written.is_ok(), "the write was cut: {written:?}");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        assert_shape(
            "openai",
            413,
            "request_too_large",
            &harness::parse_response(&answer),
        );
    }
    assert_alive();
}

/// Splits what a connection sent back into its responses.
fn responses(mut raw: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        assert!(!head.contains("transfer-encoding"), "{head}");
        out.push(harness::parse_response(&raw[..end + 4 + length]));
        raw = &raw[end + 4 + length..];
    }
    out
}

/// Three requests pipelined in one write are each answered, in order, on the one connection.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let mock = Mock::with_handler(|seen| {
        let n = seen.header("x-seq").unwrap_or("?");
        Reply::json(format!(
            r#"{{"id":"call-{n}","object":"chat.completion","model":"gpt-4o","choices":[],"usage":{{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}}}"#
        ))
    });
    let key = harness::client_key("pipeliner");
    let rest = format!(
        "[providers.openai]\nbase_url = \"http://127.0.0.1:{}\"\nkey_env = \"TG_OPENAI_KEY\"\n\
         [plans.p]\nname = \"P\"\ntier = \"pro\"\n{}",
        mock.port,
        harness::key_entry("pipeliner", "p", &key),
    );
    let gateway = Gateway::start("", &rest, &[("TG_OPENAI_KEY", "sk-openai")]);
    let body = r#"{"model":"gpt-4o","messages":[]}"#;
    let mut raw = String::new();
    for n in 1..=3 {
        let connection = if n == 3 { "close" } else { "keep-alive" };
        raw.push_str(&format!(
            "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {key}\r\n\
             x-seq: {n}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: {connection}\r\n\r\n{body}",
            body.len()
        ));
    }
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(&mut stream, raw.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
    let got = responses(&answer);
    let ids: Vec<String> = got
        .iter()
        .map(|r| format!("{} {}", r.status, r.json()["id"].as_str().unwrap_or("-")))
        .collect();
    assert_eq!(ids, ["200 call-1", "200 call-2", "200 call-3"]);
    assert_eq!(mock.seen().len(), 3);
    gateway.stop();
}

/// Reads one response with a `content-length` from a kept-alive connection.
fn read_one(stream: &mut std::net::TcpStream) -> Response {
    use std::io::Read;
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "closed mid-head");
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    raw.extend_from_slice(&body);
    harness::parse_response(&raw)
}

/// A refusal keeps a kept-alive connection usable when the request was read to its end, and
/// otherwise says `connection: close`: a client never sends its next request on a connection
/// that is about to close without a word.
#[test]
fn a_refusal_says_whether_the_connection_stays_open() {
    use std::io::Write;
    let path = "/openai/v1/chat/completions";
    let send = |stream: &mut std::net::TcpStream, key: &str, body: &str| {
        let raw = format!(
            "POST {path} HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {key}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(raw.as_bytes()).unwrap();
        read_one(stream)
    };
    let closes = |r: &Response| r.head.to_ascii_lowercase().contains("connection: close");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port())).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    // Read whole, then refused (not JSON): the connection stays.
    let first = send(&mut stream, KEY, r#"{"model": "#);
    assert_eq!(first.status, 400, "{}", first.text());
    assert!(!closes(&first), "{}", first.head);
    // The next request on it is answered.
    let second = send(
        &mut stream,
        "tg_unknown_key_000000",
        r#"{"model":"gpt-4o"}"#,
    );
    assert_eq!(second.status, 401, "{}", second.text());
    // Refused before its body was read: the answer says the connection closes.
    assert!(closes(&second), "{}", second.head);
    assert_alive();
}
