//! The gateway's log as an operator reads it: one access line per call (as JSON with
//! `[log] format = "json"`), the request id shared by the client's response, the line and the
//! usage row, and the log level changed while the gateway runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use std::time::{Duration, Instant};

use harness::{Gateway, Mock, Reply, key_entry, post_json, request, wait_rows};
use serde_json::Value;

const CLIENT_KEY: &str = "tg_test_alice_0123456789";
const UPSTREAM_KEY: &str = "sk-upstream-secret";
const ADMIN_TOKEN: &str = "admin-token-access-log";
const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}"#;

/// An OpenAI upstream answering every chat with 19 input and 10 output tokens, and an id of
/// its own in `x-request-id`, as OpenAI does.
fn mock_openai() -> Mock {
    Mock::with_handler(|_| {
        Reply::json(
            r#"{"id":"c2","object":"chat.completion","model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29}}"#,
        )
        .header("x-request-id", "req_openai_123")
    })
}

fn start(upstream_port: u16, log: &str, env: &[(&str, &str)]) -> Gateway {
    let rest = format!(
        r#"
[log]
{log}
[providers.openai]
base_url = "http://127.0.0.1:{upstream_port}"
key_env = "TG_TEST_PROVIDER_KEY"
[plans.test]
name = "Test"
tier = "pro"
[plans.test.providers]
openai = {{ calls = 100 }}
{key}"#,
        key = key_entry("alice", "test", CLIENT_KEY),
    );
    let mut all = vec![
        ("TG_TEST_PROVIDER_KEY", UPSTREAM_KEY),
        ("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    all.extend_from_slice(env);
    Gateway::start_capturing_log("", &rest, &all)
}

fn chat(gw: &Gateway, headers: &[(&str, &str)]) -> harness::Response {
    post_json(gw.port, "/openai/v1/chat/completions", headers, CHAT)
}

/// Waits (info lines are buffered up to 100 ms) until `found` holds for the gateway's log;
/// returns it.
fn wait_log(gw: &Gateway, what: &str, found: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = gw.log();
        if found(&log) {
            return log;
        }
        assert!(Instant::now() < deadline, "no {what} in the log:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The JSON access lines of the log (its other lines may be text written before the log was
/// installed, such as the configuration's warnings).
fn access_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .filter(|line| line["target"] == "tollgate::access")
        .collect()
}

#[test]
fn each_call_has_one_json_access_line_and_its_request_id_reaches_client_and_ledger() {
    let upstream = mock_openai();
    let gw = start(upstream.port, "format = \"json\"", &[]);
    let auth = format!("Bearer {CLIENT_KEY}");

    // A call without an id of the client's: the gateway makes one, and keeps OpenAI's aside.
    let made = chat(&gw, &[("authorization", &auth)]);
    assert_eq!(made.status, 200, "{}", made.text());
    let made_id = made.header("x-request-id").unwrap().to_owned();
    assert_eq!(made_id.len(), 36, "{made_id}");
    assert_eq!(made.header("x-upstream-request-id"), Some("req_openai_123"));

    // The client's own id is kept.
    let given = chat(
        &gw,
        &[("authorization", &auth), ("x-request-id", "client-trace-7")],
    );
    assert_eq!(given.status, 200, "{}", given.text());
    assert_eq!(given.header("x-request-id"), Some("client-trace-7"));

    // A refusal carries an id too, and its reason in the line.
    let refused = chat(&gw, &[("authorization", "Bearer tg_nobody_0123456789")]);
    assert_eq!(refused.status, 401, "{}", refused.text());
    let refused_id = refused.header("x-request-id").unwrap().to_owned();
    assert_ne!(refused_id, made_id);

    // The usage rows carry the ids the client was answered with.
    let rows = wait_rows(&gw.ledger_url(), "alice", 2);
    let mut ids: Vec<_> = rows.iter().map(|r| r.request_id.clone()).collect();
    ids.sort();
    let mut expected = vec![Some("client-trace-7".to_owned()), Some(made_id.clone())];
    expected.sort();
    assert_eq!(ids, expected);

    let log = wait_log(&gw, "three access lines", |log| {
        access_lines(log).len() >= 3
    });
    let lines = access_lines(&log);
    assert_eq!(lines.len(), 3, "one line per call:\n{log}");
    let line_of = |id: &str| {
        lines
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap_or_else(|| panic!("no line for {id}:\n{log}"))
    };
    let line = line_of(&made_id);
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["message"], "request", "{line}");
    assert_eq!(line["user"], "alice", "{line}");
    assert_eq!(line["key_id"], rows[0].key_id.as_deref().unwrap(), "{line}");
    assert_eq!(line["provider"], "openai", "{line}");
    assert_eq!(line["model"], "gpt-4o-2024-08-06", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["input_tokens"], 19, "{line}");
    assert_eq!(line["output_tokens"], 10, "{line}");
    let row = rows
        .iter()
        .find(|r| r.request_id.as_deref() == Some(&made_id));
    let cost = row.unwrap().cost_total_nanousd;
    assert!(cost > 0);
    assert_eq!(line["cost_nanousd"], cost, "{line}");
    assert!(line["overhead_us"].is_u64(), "{line}");
    assert!(line["latency_ms"].is_u64(), "{line}");
    assert!(line.get("error_code").is_none(), "{line}");
    assert!(line["timestamp"].is_string(), "{line}");
    assert_eq!(line_of("client-trace-7")["status"], 200);

    let line = line_of(&refused_id);
    assert_eq!(line["status"], 401, "{line}");
    assert_eq!(line["error_code"], "invalid_api_key", "{line}");
    assert_eq!(line["user"], "-", "{line}");
    assert_eq!(line["cost_nanousd"], 0, "{line}");

    for secret in [
        CLIENT_KEY,
        UPSTREAM_KEY,
        "tg_nobody_0123456789",
        ADMIN_TOKEN,
    ] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    gw.stop();
}

#[test]
fn the_log_level_changes_while_the_gateway_runs() {
    let upstream = mock_openai();
    let gw = start(upstream.port, "format = \"text\"", &[("RUST_LOG", "info")]);
    let auth = format!("Bearer {CLIENT_KEY}");
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let level = |method: &str, body: &str, token: &str| {
        let headers = [
            ("authorization", token),
            ("content-type", "application/json"),
        ];
        request(
            gw.admin_port,
            method,
            "/api/admin/log-level",
            &headers,
            body.as_bytes(),
        )
    };

    assert_eq!(chat(&gw, &[("authorization", &auth)]).status, 200);
    let log = wait_log(&gw, "the first access line", |log| {
        log.contains(" request ")
    });
    assert!(
        !log.contains("call admitted"),
        "a debug line at info:\n{log}"
    );
    assert_eq!(level("GET", "", &admin).json()["data"]["level"], "info");

    let changed = level("PUT", r#"{"level":"debug"}"#, &admin);
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert_eq!(changed.json()["data"]["level"], "debug");
    assert_eq!(level("GET", "", &admin).json()["data"]["level"], "debug");

    let second = chat(
        &gw,
        &[("authorization", &auth), ("x-request-id", "after-put")],
    );
    assert_eq!(second.status, 200);
    let log = wait_log(&gw, "a debug line", |log| {
        log.lines()
            .any(|l| l.contains("DEBUG") && l.contains("call admitted") && l.contains("after-put"))
    });
    assert!(log.contains("log level changed"), "{log}");

    // A level that does not parse leaves the one in force; a user's key changes nothing.
    let bad = level("PUT", r#"{"level":"tollgate=loud"}"#, &admin);
    assert_eq!(bad.status, 400, "{}", bad.text());
    let user = level("PUT", r#"{"level":"trace"}"#, &auth);
    assert_eq!(user.status, 403, "{}", user.text());
    assert_eq!(level("GET", "", &admin).json()["data"]["level"], "debug");
    gw.stop();
}
