//! Usage no call could have used, reported through the real binary by mock OpenAI and Anthropic
//! upstreams: a count beyond u64 (`1e30`) or at its top (`u64::MAX`), a negative one, a
//! fractional one, and a plausible-looking `9e12` far beyond what the model can take and produce.
//! Each call is answered with the provider's body unchanged and billed at the bound its
//! reservation held, marked estimated, with an error naming what the provider reported; the user
//! keeps being served (also after a restart, when the counters are rebuilt from the ledger), the
//! admin API answers and the period closes — on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use std::path::Path;

use harness::{Gateway, Mock, Reply, UsageLog};
use serde_json::Value;
use tollgate_domain::{Amount, Provider};
use tollgate_ledger::test_database::TestDatabase;
use tollgate_usage::RequestFacts;

const USER: &str = "implausible-user";
const KEY: &str = "tg_implausible_user_key_0123456789";
const ADMIN_TOKEN: &str = "admin-token-implausible";
/// What the providers report, as written in their JSON: none of it is a count a call can use.
const REPORTED: [&str; 5] = [
    "18446744073709551615",
    "1e30",
    "-5",
    "12.5",
    "9000000000000",
];
const OPENAI_PATH: &str = "/v1/chat/completions";
const OPENAI_BODY: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":50}"#;
const ANTHROPIC_PATH: &str = "/v1/messages";
const ANTHROPIC_BODY: &str = r#"{"model":"claude-sonnet-4-20250514","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#;

fn openai_reply(prompt_tokens: &str) -> String {
    format!(
        r#"{{"id":"c1","object":"chat.completion","model":"gpt-4o-2024-08-06","choices":[{{"index":0,"message":{{"role":"assistant","content":"Hello"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{prompt_tokens},"completion_tokens":10,"total_tokens":29}}}}"#
    )
}

fn anthropic_reply(input_tokens: &str) -> String {
    format!(
        r#"{{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-20250514","content":[{{"type":"text","text":"Hello"}}],"stop_reason":"end_turn","usage":{{"input_tokens":{input_tokens},"output_tokens":10}}}}"#
    )
}

/// What admission reserved for a call of `body` to `model`: its bound in tokens and cost, from
/// the repository's price lists.
fn reserved(provider: Provider, path: &str, body: &str, model: &str) -> Amount {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pricing");
    let (book, _) = tollgate_config::load_pricing_dir(&dir);
    let price = book.lookup(provider, model).unwrap().price;
    let facts = RequestFacts::read(provider, path, body.as_bytes()).unwrap();
    tollgate_proxy::admission::reservation_amount(&facts, Some(price), true)
}

/// A gateway with OpenAI and Anthropic at `upstream`, the user on a plan capped at $500, and the
/// ledger at `database_url`.
fn start(upstream: &Mock, database_url: &str) -> Gateway {
    let rest = format!(
        r#"
[providers.openai]
base_url = "http://127.0.0.1:{port}"
[providers.anthropic]
base_url = "http://127.0.0.1:{port}"
[plans.capped]
name = "Capped"
tier = "pro"
cost_cap = "500"
[plans.capped.providers]
openai = {{ calls = 100 }}
anthropic = {{ calls = 100 }}
{key}"#,
        port = upstream.port,
        key = harness::key_entry(USER, "capped", KEY),
    );
    Gateway::start_with_database(
        "",
        database_url,
        "",
        &rest,
        &[
            ("OPENAI_API_KEY", "real-openai-key"),
            ("ANTHROPIC_API_KEY", "real-anthropic-key"),
            ("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN),
            ("RUST_LOG", "warn"),
        ],
    )
}

/// One call through the gateway answered with `reply`; the client gets the provider's body
/// unchanged.
fn call(gw: &Gateway, upstream: &Mock, provider: &str, reply: &str) {
    let (path, body) = match provider {
        "openai" => (OPENAI_PATH, OPENAI_BODY),
        _ => (ANTHROPIC_PATH, ANTHROPIC_BODY),
    };
    upstream.script(path, Reply::json(reply.to_owned()));
    let auth = format!("Bearer {KEY}");
    let headers: &[(&str, &str)] = match provider {
        "openai" => &[("authorization", &auth)],
        _ => &[("x-api-key", KEY), ("anthropic-version", "2023-06-01")],
    };
    let response = harness::post_json(gw.port, &format!("/{provider}{path}"), headers, body);
    assert_eq!(response.status, 200, "{provider}: {}", response.text());
    assert_eq!(
        response.text(),
        reply,
        "{provider}: the body must pass unchanged"
    );
}

fn admin_get(gw: &Gateway, path: &str) -> (u16, Value) {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let response = harness::request(gw.admin_port, "GET", path, &[("authorization", &auth)], b"");
    let json = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (response.status, json)
}

fn metrics(gw: &Gateway) -> String {
    harness::request(gw.admin_port, "GET", "/metrics", &[], b"").text()
}

fn row_for<'a>(rows: &'a [UsageLog], provider: &str, reported: &str) -> &'a UsageLog {
    rows.iter()
        .find(|r| {
            r.provider == provider
                && r.error_message
                    .as_deref()
                    .is_some_and(|e| e.contains(reported))
        })
        .unwrap_or_else(|| panic!("no {provider} row naming {reported}: {rows:#?}"))
}

fn implausible_usage_is_billed_at_the_reservation(database_url: &str) {
    let upstream = Mock::start();
    let gw = start(&upstream, database_url);
    for reported in REPORTED {
        call(&gw, &upstream, "openai", &openai_reply(reported));
        call(&gw, &upstream, "anthropic", &anthropic_reply(reported));
    }
    // Plausible usage after them: admitted, and billed as reported.
    call(&gw, &upstream, "openai", &openai_reply("19"));
    call(&gw, &upstream, "anthropic", &anthropic_reply("19"));

    let rows = harness::wait_rows(database_url, USER, 2 * REPORTED.len() + 2);
    let bounds = [
        (
            "openai",
            reserved(Provider::OpenAi, OPENAI_PATH, OPENAI_BODY, "gpt-4o"),
            OPENAI_BODY.len(),
        ),
        (
            "anthropic",
            reserved(
                Provider::Anthropic,
                ANTHROPIC_PATH,
                ANTHROPIC_BODY,
                "claude-sonnet-4-20250514",
            ),
            ANTHROPIC_BODY.len(),
        ),
    ];
    for (provider, bound, body_len) in bounds {
        assert!(bound.cost_nanousd > 0 && bound.tokens > 0, "{bound:?}");
        for reported in REPORTED {
            let row = row_for(&rows, provider, reported);
            assert!(row.estimated, "{provider} {reported}: {row:#?}");
            assert_eq!(row.status_code, 200);
            assert_eq!(row.input_tokens, body_len as i64, "{row:#?}");
            assert_eq!(row.output_tokens, 50, "{row:#?}");
            assert_eq!(row.total_tokens, bound.tokens as i64, "{row:#?}");
            assert_eq!(
                row.cost_total_nanousd, bound.cost_nanousd as i64,
                "{row:#?}"
            );
        }
        let plausible = rows
            .iter()
            .find(|r| r.provider == provider && r.input_tokens == 19)
            .unwrap_or_else(|| panic!("no plausible {provider} row: {rows:#?}"));
        assert!(!plausible.estimated && plausible.error_message.is_none());
        assert_eq!(plausible.output_tokens, 10);
    }

    let metrics = metrics(&gw);
    for provider in ["openai", "anthropic"] {
        let line = format!(
            "tollgate_implausible_usage_total{{provider=\"{provider}\"}} {}",
            REPORTED.len()
        );
        assert!(metrics.contains(&line), "missing {line:?} in\n{metrics}");
    }

    let (status, body) = admin_get(&gw, &format!("/api/subscription/usage/{USER}"));
    assert_eq!(status, 200, "{body}");
    let tokens: i64 = rows.iter().map(|r| r.total_tokens).sum();
    assert_eq!(body["data"]["total_tokens"], tokens, "{body}");
    assert_eq!(body["data"]["total_calls"], rows.len(), "{body}");
    assert!(body["data"]["total_cost"].as_f64().unwrap() < 1.0, "{body}");
    gw.stop();

    // Restarted, the counters are rebuilt from the ledger: the user is still served.
    let gw = start(&upstream, database_url);
    call(&gw, &upstream, "openai", &openai_reply("19"));
    call(&gw, &upstream, "anthropic", &anthropic_reply("19"));
    let (status, body) = admin_get(&gw, &format!("/api/subscription/usage/{USER}"));
    assert_eq!(status, 200, "{body}");
    gw.stop();

    // And the period closes.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ledger =
            tollgate_ledger::Ledger::connect(database_url, tollgate_ledger::DbOptions::default())
                .await
                .unwrap();
        let later = chrono::Utc::now() + chrono::Duration::days(70);
        let closed = ledger.close_periods(later).await.unwrap();
        assert!(closed >= 1, "no period closed");
        ledger.close().await;
    });
}

#[test]
fn implausible_usage_is_billed_at_the_reservation_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    implausible_usage_is_billed_at_the_reservation(&url);
}

#[test]
fn implausible_usage_is_billed_at_the_reservation_on_postgres() {
    let database = TestDatabase::create("implausible");
    implausible_usage_is_billed_at_the_reservation(&database.url);
}
