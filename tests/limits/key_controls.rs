//! The real binary applying what operators set on users and keys through the admin API: a
//! disabled user refused in each provider's own error shape at every instance (at once where
//! the change was made, within the key cache's lifetime elsewhere), enabled again, and deleted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use std::time::{Duration, Instant};

use harness::{Gateway, Mock, Reply, Response};
use serde_json::Value;
use tollgate_ledger::test_database::TestDatabase;

const ADMIN_TOKEN: &str = "admin-token-key-controls";
/// How long the second instance caches a key lookup.
const SHORT_TTL_MS: u64 = 300;

const CHAT: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#;
const CHAT_PATH: &str = "/openai/v1/chat/completions";
const MESSAGES: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
const MESSAGES_PATH: &str = "/anthropic/v1/messages";

/// An admin API call with the admin token.
fn admin(admin_port: u16, method: &str, path: &str, body: &str) -> (u16, Value) {
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

struct Upstreams {
    openai: Mock,
    anthropic: Mock,
}

fn upstreams() -> Upstreams {
    let openai = Mock::start();
    openai.script(
        "/v1/chat/completions",
        Reply::json(
            r#"{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
        ),
    );
    let anthropic = Mock::start();
    anthropic.script(
        "/v1/messages",
        Reply::json(
            r#"{"id":"m1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":3,"output_tokens":2}}"#,
        ),
    );
    Upstreams { openai, anthropic }
}

fn config(up: &Upstreams) -> String {
    format!(
        r#"
[providers.openai]
base_url = "http://127.0.0.1:{}"
[providers.anthropic]
base_url = "http://127.0.0.1:{}"
[plans.all]
name = "All"
tier = "pro"
[plans.all.providers]
openai = {{ calls = 1000 }}
anthropic = {{ calls = 1000 }}
"#,
        up.openai.port, up.anthropic.port
    )
}

const ENV: [(&str, &str); 4] = [
    ("OPENAI_API_KEY", "real-OPENAI-key"),
    ("ANTHROPIC_API_KEY", "real-ANTHROPIC-key"),
    ("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN),
    ("RUST_LOG", "warn"),
];

/// A user on plan `all` with a key issued through `admin_port`; the key.
fn user_with_key(admin_port: u16, user: &str) -> String {
    let (status, body) = admin(
        admin_port,
        "PUT",
        &format!("/api/admin/users/{user}/subscription"),
        r#"{"plan_id":"all"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin(
        admin_port,
        "POST",
        &format!("/api/admin/users/{user}/keys"),
        "{}",
    );
    assert_eq!(status, 201, "{body}");
    body["data"]["key"].as_str().unwrap().to_owned()
}

fn chat(port: u16, key: &str) -> Response {
    harness::post_json(
        port,
        CHAT_PATH,
        &[("authorization", &format!("Bearer {key}"))],
        CHAT,
    )
}

fn messages(port: u16, key: &str) -> Response {
    harness::post_json(port, MESSAGES_PATH, &[("x-api-key", key)], MESSAGES)
}

fn assert_user_disabled(response: &Response, provider: &str) {
    assert_eq!(response.status, 403, "{provider}: {}", response.text());
    let body = response.json();
    assert_eq!(body["tollgate"]["code"], "user_disabled", "{body}");
    match provider {
        "openai" => {
            assert_eq!(body["error"]["code"], "user_disabled", "{body}");
            assert_eq!(body["error"]["type"], "permission_error", "{body}");
        }
        "anthropic" => {
            assert_eq!(body["type"], "error", "{body}");
            assert_eq!(body["error"]["type"], "permission_error", "{body}");
        }
        other => panic!("no shape for {other}"),
    }
}

/// Polls `call` until it answers `status`, for up to `within`; the last answer.
fn until_status(status: u16, within: Duration, call: impl Fn() -> Response) -> Response {
    let deadline = Instant::now() + within;
    loop {
        let response = call();
        if response.status == status || Instant::now() > deadline {
            return response;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn a_disabled_user_is_refused_at_every_instance_until_enabled_again() {
    let up = upstreams();
    let database = TestDatabase::create("disable");
    let rest = config(&up);
    // A caches keys far longer than the test runs: only its own admin API can clear its cache.
    // B caches them briefly and hears of nothing.
    let a =
        Gateway::start_with_database("key_cache_ttl_ms = 600000", &database.url, "", &rest, &ENV);
    let b = Gateway::start_with_database(
        &format!("key_cache_ttl_ms = {SHORT_TTL_MS}"),
        &database.url,
        "",
        &rest,
        &ENV,
    );
    let key = user_with_key(a.admin_port, "erin");
    let other = user_with_key(a.admin_port, "frank");
    for gw in [&a, &b] {
        assert_eq!(chat(gw.port, &key).status, 200);
        assert_eq!(messages(gw.port, &key).status, 200);
    }

    let (status, body) = admin(a.admin_port, "POST", "/api/admin/users/erin/disable", "");
    assert_eq!(status, 200, "{body}");
    let disabled_at = Instant::now();
    // At A from the very next request, in each provider's shape.
    assert_user_disabled(&chat(a.port, &key), "openai");
    assert_user_disabled(&messages(a.port, &key), "anthropic");
    // At B once its cached lookup expires.
    let response = until_status(403, Duration::from_secs(5), || chat(b.port, &key));
    assert_user_disabled(&response, "openai");
    assert!(
        disabled_at.elapsed() < Duration::from_millis(SHORT_TTL_MS + 2_000),
        "B refused only after {:?}",
        disabled_at.elapsed()
    );
    // From here on, erin's calls never reach a provider; frank's do.
    let openai_before = up.openai.seen_at("/v1/chat/completions").len();
    let anthropic_before = up.anthropic.seen_at("/v1/messages").len();
    assert_user_disabled(&messages(b.port, &key), "anthropic");
    assert_user_disabled(&chat(a.port, &key), "openai");
    assert_eq!(chat(a.port, &other).status, 200);
    assert_eq!(chat(b.port, &other).status, 200);
    assert_eq!(
        up.openai.seen_at("/v1/chat/completions").len(),
        openai_before + 2
    );
    assert_eq!(up.anthropic.seen_at("/v1/messages").len(), anthropic_before);

    let (status, body) = admin(a.admin_port, "POST", "/api/admin/users/erin/enable", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(chat(a.port, &key).status, 200);
    let response = until_status(200, Duration::from_secs(5), || messages(b.port, &key));
    assert_eq!(response.status, 200, "{}", response.text());

    // Deleted: the key is unknown everywhere once B's cache expires.
    let (status, body) = admin(a.admin_port, "DELETE", "/api/admin/users/erin", "");
    assert_eq!(status, 200, "{body}");
    let response = chat(a.port, &key);
    assert_eq!(response.status, 401, "{}", response.text());
    assert_eq!(response.json()["tollgate"]["code"], "invalid_api_key");
    let response = until_status(401, Duration::from_secs(5), || chat(b.port, &key));
    assert_eq!(response.status, 401, "{}", response.text());
    a.stop();
    b.stop();
}
