//! Every call leaves a trace: the real binary, on SQLite and on PostgreSQL, refusing a user's
//! calls for a calls limit, a provider outside the plan and an unpriced model. Each refusal is a
//! row with its status, its code, the key that made it and no cost; the usage answers count them
//! apart (`refused_calls`), and nothing else does: the summaries, the admin API's totals, error
//! rate and trends, and the calls limit (rebuilt from the ledger by the next start) count the
//! admitted calls only. An unknown key leaves no row.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use harness::{Gateway, Mock, Reply, UsageLog};
use serde_json::Value;
use tollgate_ledger::test_database::TestDatabase;

const USER: &str = "refused-calls-user";
const KEY: &str = "tg_refused_calls_user_key_0123456789";
const ADMIN_TOKEN: &str = "admin-token-refused-calls";
const CHAT: &str = "/v1/chat/completions";
const PRICED: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":50}"#;
const UNPRICED: &str = r#"{"model":"gpt-99","messages":[{"role":"user","content":"hi"}]}"#;
const GEMINI: &str = "/v1beta/models/gemini-2.5-pro:generateContent";
const REPLY: &str = r#"{"id":"c1","object":"chat.completion","model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29}}"#;

/// A gateway with OpenAI at `upstream` (and Gemini configured, but outside the plan: 0 calls), the user
/// on a plan of `calls` OpenAI calls, and the ledger at `database_url`.
fn start(upstream: &Mock, database_url: &str, calls: u32) -> Gateway {
    let rest = format!(
        r#"
[providers.openai]
base_url = "http://127.0.0.1:{port}"
[providers.gemini]
base_url = "http://127.0.0.1:{port}"
[plans.small]
name = "Small"
tier = "pro"
[plans.small.providers]
openai = {{ calls = {calls} }}
gemini = {{ calls = 0 }}
{key}"#,
        port = upstream.port,
        key = harness::key_entry(USER, "small", KEY),
    );
    Gateway::start_with_database(
        "",
        database_url,
        "",
        &rest,
        &[
            ("OPENAI_API_KEY", "real-openai-key"),
            ("GEMINI_API_KEY", "real-gemini-key"),
            ("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN),
            ("RUST_LOG", "warn"),
        ],
    )
}

fn openai(gw: &Gateway, key: &str, body: &str) -> u16 {
    let auth = format!("Bearer {key}");
    harness::post_json(
        gw.port,
        &format!("/openai{CHAT}"),
        &[("authorization", &auth)],
        body,
    )
    .status
}

fn gemini(gw: &Gateway) -> u16 {
    let body = r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#;
    harness::post_json(
        gw.port,
        &format!("/gemini{GEMINI}"),
        &[("x-goog-api-key", KEY)],
        body,
    )
    .status
}

fn admin_get(gw: &Gateway, path: &str) -> Value {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let response = harness::request(gw.admin_port, "GET", path, &[("authorization", &auth)], b"");
    assert_eq!(response.status, 200, "{path}: {}", response.text());
    serde_json::from_slice(&response.body).unwrap()
}

/// Waits until the user has `count` rows, admitted and refused together.
fn wait_all_rows(url: &str, count: usize) -> Vec<UsageLog> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let rows = harness::all_rows(url, USER);
        if rows.len() >= count || std::time::Instant::now() > deadline {
            assert_eq!(rows.len(), count, "{rows:#?}");
            return rows;
        }
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
}

fn refused_calls_leave_rows_that_count_nowhere(database_url: &str) {
    let upstream = Mock::start();
    upstream.script(CHAT, Reply::json(REPLY));
    let gw = start(&upstream, database_url, 3);
    // N = 3 admitted; M = 2 over the calls limit + 1 outside the plan + 1 unpriced.
    let statuses: Vec<u16> = (0..5).map(|_| openai(&gw, KEY, PRICED)).collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(gemini(&gw), 403);
    assert_eq!(openai(&gw, KEY, UNPRICED), 400);
    // An unknown key has no user: no row.
    assert_eq!(openai(&gw, "tg_nobody_at_all_0123456789", PRICED), 401);
    assert_eq!(
        upstream.seen_at(CHAT).len(),
        3,
        "refusals never go upstream"
    );

    let rows = wait_all_rows(database_url, 3 + 4);
    let admitted = harness::ledger_rows(database_url, USER);
    let refused = harness::refused_rows(database_url, USER);
    assert_eq!((admitted.len(), refused.len()), (3, 4), "{rows:#?}");
    let keys = admin_get(&gw, &format!("/api/admin/users/{USER}/keys"));
    let key_id = keys["data"][0]["id"].as_str().unwrap().to_owned();
    assert!(key_id.starts_with("static_"), "{keys}");
    for row in &rows {
        assert_eq!(row.key_id.as_deref(), Some(key_id.as_str()), "{row:#?}");
        assert!(row.request_id.is_some(), "{row:#?}");
    }
    let reasons = |code: &'static str| {
        refused
            .iter()
            .filter(move |r| r.refusal_reason.as_deref() == Some(code))
    };
    for (code, status, count) in [
        ("usage_limit_exceeded", 429, 2),
        ("provider_not_in_plan", 403, 1),
        ("model_not_priced", 400, 1),
    ] {
        let found: Vec<&UsageLog> = reasons(code).collect();
        assert_eq!(found.len(), count, "{code}: {refused:#?}");
        for row in found {
            assert_eq!(row.status_code, status, "{row:#?}");
            assert_eq!(
                (row.total_tokens, row.units, row.cost_total_nanousd),
                (0, 0, 0)
            );
            assert!(row.error_message.is_some(), "{row:#?}");
        }
    }
    assert!(reasons("provider_not_in_plan").all(|r| r.provider == "gemini"));
    assert!(reasons("model_not_priced").all(|r| r.model == "gpt-99"));
    assert!(
        admitted
            .iter()
            .all(|r| r.refusal_reason.is_none() && r.status_code == 200)
    );

    // The admin API's totals are the admitted calls', and the refusals are counted apart.
    let usage = &admin_get(&gw, &format!("/api/subscription/usage/{USER}"))["data"];
    let cost: i64 = admitted.iter().map(|r| r.cost_total_nanousd).sum();
    assert_eq!(usage["total_calls"], 3, "{usage}");
    assert_eq!(usage["total_tokens"], 3 * 29, "{usage}");
    assert_eq!(usage["total_cost"].as_f64().unwrap(), cost as f64 / 1e9);
    assert_eq!(usage["error_rate"], 0.0, "{usage}");
    assert_eq!(usage["provider_breakdown"]["gemini"]["calls"], 0, "{usage}");
    assert_eq!(usage["provider_breakdown"]["openai"]["calls"], 3, "{usage}");
    assert_eq!(usage["refused_calls"], 4, "{usage}");
    assert_eq!(usage["refused_by_reason"]["usage_limit_exceeded"], 2);
    assert_eq!(usage["refused_by_reason"]["provider_not_in_plan"], 1);
    assert_eq!(usage["refused_by_reason"]["model_not_priced"], 1);
    let dashboard = &admin_get(&gw, &format!("/api/subscription/dashboard/{USER}"))["data"];
    assert_eq!(dashboard["summary"]["total_api_calls_this_month"], 3);
    assert_eq!(dashboard["current_usage"]["refused_calls"], 4);
    let trends = &admin_get(&gw, &format!("/api/subscription/usage/{USER}/trends"))["data"];
    assert_eq!(trends["total_calls"].as_array().unwrap().last().unwrap(), 3);

    // The usage log shows every call, with its status and reason; and each kind apart.
    let logs = admin_get(&gw, &format!("/api/subscription/usage-logs?user_id={USER}"));
    assert_eq!(logs["total_count"], 7, "{logs}");
    let listed = logs["logs"].as_array().unwrap();
    let refusals: Vec<&Value> = listed
        .iter()
        .filter(|l| l["refusal_reason"].is_string())
        .collect();
    assert_eq!(refusals.len(), 4, "{logs}");
    assert!(refusals.iter().all(|l| l["status"] == "failed"
        && l["cost_total"] == 0.0
        && l["key_id"] == key_id.as_str()));
    let only = |refused: bool| {
        let path = format!("/api/subscription/usage-logs?user_id={USER}&refused={refused}");
        admin_get(&gw, &path)["total_count"].clone()
    };
    assert_eq!((only(true), only(false)), (4.into(), 3.into()));
    let by_key = format!("/api/subscription/usage-logs?user_id={USER}&key_id={key_id}");
    assert_eq!(admin_get(&gw, &by_key)["total_count"], 7);
    gw.stop();

    // Started again with one more call allowed, the calls counter is rebuilt from the ledger:
    // the refusals consumed none of the limit, so exactly one more call is admitted.
    let gw = start(&upstream, database_url, 4);
    assert_eq!(openai(&gw, KEY, PRICED), 200);
    assert_eq!(openai(&gw, KEY, PRICED), 429);
    wait_all_rows(database_url, 9);
    gw.stop();
}

#[test]
fn refused_calls_leave_rows_that_count_nowhere_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    refused_calls_leave_rows_that_count_nowhere(&url);
}

#[test]
fn refused_calls_leave_rows_that_count_nowhere_on_postgres() {
    let database = TestDatabase::create("refused_calls");
    refused_calls_leave_rows_that_count_nowhere(&database.url);
}
