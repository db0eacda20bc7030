//! The real binary applying what operators set on users and keys through the admin API: a
//! disabled user refused in each provider's own error shape at every instance (at once where
//! the change was made, within the key cache's lifetime elsewhere), enabled again, and deleted;
//! a key's own model patterns, provider list and expiry, issued and changed the same way.

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
    harness::admin_json(admin_port, ADMIN_TOKEN, method, path, body)
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

fn chat_with(port: u16, key: &str, model: &str) -> Response {
    let body = CHAT.replace("\"gpt-4o\"", &format!("{model:?}"));
    harness::post_json(
        port,
        CHAT_PATH,
        &[("authorization", &format!("Bearer {key}"))],
        &body,
    )
}

/// Issues a key with `rules` (a JSON body) for `user` through `admin_port`: its id and the key.
fn key_with_rules(admin_port: u16, user: &str, rules: &str) -> (String, String) {
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
        rules,
    );
    assert_eq!(status, 201, "{body}");
    (
        body["data"]["id"].as_str().unwrap().to_owned(),
        body["data"]["key"].as_str().unwrap().to_owned(),
    )
}

fn assert_model_not_allowed(response: &Response, model: &str, allowed: &str) {
    assert_eq!(response.status, 403, "{}", response.text());
    let body = response.json();
    assert_eq!(body["error"]["code"], "model_not_allowed", "{body}");
    assert_eq!(body["error"]["type"], "permission_error", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{model:?}")) && message.contains(allowed),
        "{message}"
    );
    assert_eq!(body["tollgate"]["model"], model, "{body}");
    assert_eq!(body["tollgate"]["allowed_models"][0], allowed, "{body}");
}

fn assert_provider_not_allowed(response: &Response) {
    assert_eq!(response.status, 403, "{}", response.text());
    let body = response.json();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "permission_error", "{body}");
    assert_eq!(body["tollgate"]["code"], "provider_not_allowed", "{body}");
    assert_eq!(body["tollgate"]["allowed_providers"][0], "openai", "{body}");
}

fn assert_key_expired(response: &Response, provider: &str) {
    assert_eq!(response.status, 401, "{provider}: {}", response.text());
    let body = response.json();
    assert_eq!(body["tollgate"]["code"], "key_expired", "{body}");
    match provider {
        "openai" => assert_eq!(body["error"]["code"], "key_expired", "{body}"),
        "anthropic" => assert_eq!(body["error"]["type"], "authentication_error", "{body}"),
        other => panic!("no shape for {other}"),
    }
}

/// The user's refused calls by reason, once `done` holds of them (or after 10 s): each
/// instance writes its rows in batches of its own.
fn refusals(url: &str, user: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut reasons: Vec<String> = harness::refused_rows(url, user)
            .into_iter()
            .filter_map(|r| r.refusal_reason)
            .collect();
        reasons.sort();
        if done(&reasons) || Instant::now() > deadline {
            return reasons;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
}

fn count(reasons: &[String], code: &str) -> usize {
    reasons.iter().filter(|r| r.as_str() == code).count()
}

#[test]
fn a_keys_own_models_providers_and_expiry_apply_at_every_instance() {
    let up = upstreams();
    let database = TestDatabase::create("key_rules");
    let rest = config(&up);
    let a =
        Gateway::start_with_database("key_cache_ttl_ms = 600000", &database.url, "", &rest, &ENV);
    let b = Gateway::start_with_database(
        &format!("key_cache_ttl_ms = {SHORT_TTL_MS}"),
        &database.url,
        "",
        &rest,
        &ENV,
    );

    // Mistakes are refused, each naming its field; nothing is issued.
    for (rules, field) in [
        (r#"{"models":{"openai":["gpt 4o"]}}"#, "models.openai"),
        (r#"{"providers":["openia"]}"#, "providers"),
        (r#"{"expires":"2020-01-01"}"#, "expires"),
        (r#"{"max_budget":-1}"#, "max_budget"),
        (r#"{"spend_limit":1}"#, "spend_limit"),
    ] {
        let (status, body) = admin(a.admin_port, "POST", "/api/admin/users/gina/keys", rules);
        assert_eq!(status, 400, "{rules}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(field), "{rules}: {body}");
    }

    let (key_id, key) = key_with_rules(
        a.admin_port,
        "gina",
        r#"{"providers":["openai"],"models":{"openai":["gpt-4o-mini*"]}}"#,
    );
    // Listed with its rules, to operators and in the dashboard's API.
    let (status, listed) = admin(a.admin_port, "GET", "/api/admin/users/gina/keys", "");
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["data"][0]["providers"][0], "openai", "{listed}");
    assert_eq!(listed["data"][0]["models"]["openai"][0], "gpt-4o-mini*");
    let own = harness::request(
        a.admin_port,
        "GET",
        "/api/subscription/keys/gina",
        &[("authorization", &format!("Bearer {key}"))],
        b"",
    );
    assert_eq!(own.status, 200, "{}", own.text());
    assert_eq!(own.json()["data"][0]["models"]["openai"][0], "gpt-4o-mini*");

    let seen = || up.openai.seen_at("/v1/chat/completions").len();
    let openai_before = seen();
    for gw in [&a, &b] {
        assert_model_not_allowed(&chat(gw.port, &key), "gpt-4o", "gpt-4o-mini*");
        assert_provider_not_allowed(&messages(gw.port, &key));
        assert_eq!(chat_with(gw.port, &key, "gpt-4o-mini").status, 200);
    }
    assert_eq!(seen(), openai_before + 2, "refused calls reach no provider");
    assert!(up.anthropic.seen_at("/v1/messages").is_empty());

    // A change applies at A from the next request, at B within its cache's lifetime.
    let (status, body) = admin(
        a.admin_port,
        "PATCH",
        &format!("/api/admin/keys/{key_id}"),
        r#"{"providers":null,"models":{"openai":["gpt-4o"]}}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["providers"].is_null(), "{body}");
    let changed = Instant::now();
    assert_eq!(chat(a.port, &key).status, 200);
    assert_eq!(messages(a.port, &key).status, 200);
    assert_model_not_allowed(
        &chat_with(a.port, &key, "gpt-4o-mini"),
        "gpt-4o-mini",
        "gpt-4o",
    );
    let response = until_status(200, Duration::from_secs(5), || messages(b.port, &key));
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(changed.elapsed() < Duration::from_millis(SHORT_TTL_MS + 2_000));
    assert_eq!(chat(b.port, &key).status, 200);

    // An expiry: refused everywhere once it passes, cached lookups or not.
    let (status, body) = admin(
        a.admin_port,
        "PATCH",
        &format!("/api/admin/keys/{key_id}"),
        r#"{"expires":"2020-01-01"}"#,
    );
    assert_eq!(status, 400, "{body}");
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let (status, body) = admin(
        a.admin_port,
        "PATCH",
        &format!("/api/admin/keys/{key_id}"),
        &format!(r#"{{"expires":"{soon}"}}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(chat(a.port, &key).status, 200);
    let response = until_status(401, Duration::from_secs(5), || chat(a.port, &key));
    assert_key_expired(&response, "openai");
    assert_key_expired(&messages(b.port, &key), "anthropic");
    assert_key_expired(&chat(b.port, &key), "openai");

    // Every refusal left a row naming its reason.
    // B may have refused a few more for their provider while its cached lookup lived, and A
    // refused at least one for the expiry while it was polled.
    let expected = |reasons: &[String]| {
        count(reasons, "model_not_allowed") >= 3
            && count(reasons, "provider_not_allowed") >= 2
            && count(reasons, "key_expired") >= 3
    };
    let reasons = refusals(&database.url, "gina", expected);
    assert!(expected(&reasons), "{reasons:?}");
    assert_eq!(count(&reasons, "model_not_allowed"), 3, "{reasons:?}");
    a.stop();
    b.stop();
}
