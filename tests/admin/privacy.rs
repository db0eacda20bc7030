//! A user's data through the real gateway, with Redis counters and a mock provider: calls are
//! made, the export holds them, the user is erased while one of their calls is still running,
//! and afterwards the export answers 404, no table holds a row naming the user — the call
//! that was in flight included — their counters are gone from Redis, and a user created
//! again under the same id starts from zero.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use std::time::{Duration, Instant};

use harness::{Gateway, Mock, Reply, Seen, redis_cleanup, redis_url, wait_rows};
use serde_json::Value;

const ADMIN_TOKEN: &str = "admin-token-privacy";
const CALL_LIMIT: u64 = 4;
const BODY: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":20}"#;
/// Answered slowly: the call is still running when the user is erased.
const SLOW_BODY: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"slow"}],"max_tokens":20}"#;
const ANSWER: &str = r#"{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, this is a reply"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#;

fn upstream() -> Mock {
    Mock::with_handler(|seen: &Seen| {
        let reply = Reply::json(ANSWER);
        if seen.contains("slow") {
            // Eight chunks a quarter of a second apart: two seconds in flight.
            reply
                .chunked(ANSWER.len().div_ceil(8))
                .paced(Duration::from_millis(250))
        } else {
            reply
        }
    })
}

fn admin(gw: &Gateway, method: &str, path: &str, body: &str) -> (u16, Value) {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let mut headers = vec![("authorization", auth.as_str())];
    if !body.is_empty() {
        headers.push(("content-type", "application/json"));
    }
    let response = harness::request(gw.admin_port, method, path, &headers, body.as_bytes());
    let value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (response.status, value)
}

/// Creates `user` on the small plan and issues them a key.
fn create_with_key(gw: &Gateway, user: &str) -> String {
    let (status, body) = admin(
        gw,
        "POST",
        "/api/admin/users",
        &format!(r#"{{"id":"{user}","plan_id":"small","email":"{user}@example.test"}}"#),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = admin(gw, "POST", &format!("/api/admin/users/{user}/keys"), "{}");
    assert_eq!(status, 201, "{body}");
    body["data"]["key"].as_str().unwrap().to_owned()
}

fn call(gw: &Gateway, key: &str, body: &str) -> u16 {
    let auth = format!("Bearer {key}");
    harness::post_json(
        gw.port,
        "/openai/v1/chat/completions",
        &[("authorization", &auth)],
        body,
    )
    .status
}

/// Every row of any table of the SQLite ledger at `url` with a text column equal to `value`,
/// as `table.column` and a count.
fn rows_naming(url: &str, value: &str) -> Vec<(String, i64)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%'",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(tables.iter().any(|t| t == "user_erasures"), "{tables:?}");
        let mut found = Vec::new();
        for table in tables {
            let columns: Vec<(String, String)> = sqlx::query_as(&format!(
                "SELECT name, type FROM pragma_table_info('{table}')"
            ))
            .fetch_all(&pool)
            .await
            .unwrap();
            for (column, _) in columns
                .iter()
                .filter(|(_, t)| t.eq_ignore_ascii_case("TEXT"))
            {
                let n: i64 =
                    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE {column} = ?"))
                        .bind(value)
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                if n > 0 {
                    found.push((format!("{table}.{column}"), n));
                }
            }
        }
        pool.close().await;
        found
    })
}

#[test]
fn an_erased_user_leaves_nothing_behind_even_with_a_call_in_flight() {
    let upstream = upstream();
    let user = format!("gdpr-{}", std::process::id());
    let prefix = format!("tgtest:privacy-{}:", std::process::id());
    let rest = format!(
        r#"
[providers.openai]
base_url = "http://127.0.0.1:{port}"
key_env = "TG_TEST_OPENAI_KEY"
[plans.small]
name = "Small"
tier = "basic"
price_monthly = "10"
[plans.small.providers]
openai = {{ calls = {CALL_LIMIT} }}
"#,
        port = upstream.port,
    );
    let storage = format!(
        "counters = \"redis\"\nredis_url = \"{}\"\nredis_timeout_ms = 2000\nredis_key_prefix = \"{prefix}\"",
        redis_url()
    );
    let gw = Gateway::start_with_storage(
        "",
        &storage,
        &rest,
        &[
            ("TG_TEST_OPENAI_KEY", "sk-upstream"),
            ("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN),
            ("RUST_LOG", "warn"),
        ],
    );
    let url = gw.ledger_url();
    let key = create_with_key(&gw, &user);
    for _ in 0..CALL_LIMIT - 1 {
        assert_eq!(call(&gw, &key, BODY), 200);
    }
    wait_rows(&url, &user, (CALL_LIMIT - 1) as usize);

    let (status, export) = admin(&gw, "GET", &format!("/api/admin/users/{user}/export"), "");
    assert_eq!(status, 200, "{export}");
    assert_eq!(export["user_id"], user.as_str());
    assert_eq!(
        export["api_usage_logs"].as_array().unwrap().len() as u64,
        CALL_LIMIT - 1
    );
    assert_eq!(export["usage_summaries"][0]["total_calls"], CALL_LIMIT - 1);
    assert_eq!(export["api_keys"].as_array().unwrap().len(), 1);
    assert!(!export.to_string().contains(&key));
    let counter_keys = |prefix: &str| -> Vec<String> {
        let out = std::process::Command::new("redis-cli")
            .args([
                "-u",
                &redis_url(),
                "--scan",
                "--pattern",
                &format!("{prefix}*"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    assert!(
        !counter_keys(&prefix).is_empty(),
        "the user's counters are in Redis"
    );

    // The last call the plan allows is still running when the user is erased.
    let in_flight = {
        let (port, key) = (gw.port, key.clone());
        std::thread::spawn(move || {
            let auth = format!("Bearer {key}");
            harness::post_json(
                port,
                "/openai/v1/chat/completions",
                &[("authorization", &auth)],
                SLOW_BODY,
            )
            .status
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while upstream.seen_at("/v1/chat/completions").len() < CALL_LIMIT as usize {
        assert!(
            Instant::now() < deadline,
            "the slow call reached the provider"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, erased) = admin(&gw, "DELETE", &format!("/api/admin/users/{user}"), "");
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["data"]["counters"], "forgotten", "{erased}");
    assert_eq!(
        erased["data"]["deleted_rows"]["api_usage_logs"],
        CALL_LIMIT - 1
    );
    assert!(
        erased["data"]["erased_by"]
            .as_str()
            .unwrap()
            .starts_with("admin:")
    );
    assert_eq!(
        in_flight.join().unwrap(),
        200,
        "a call in flight is answered"
    );

    // The call's usage reached the ledger, and was dropped there.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.metric("tollgate_ledger_erased_events_total") != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the in-flight call's event was not dropped"
        );
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(rows_naming(&url, &user), vec![]);
    assert_eq!(rows_naming(&url, &format!("{user}@example.test")), vec![]);
    assert!(
        counter_keys(&prefix).is_empty(),
        "{:?}",
        counter_keys(&prefix)
    );
    let (status, body) = admin(&gw, "GET", &format!("/api/admin/users/{user}/export"), "");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(body["code"], "not_found");
    // The old key is gone with its user.
    assert_eq!(call(&gw, &key, BODY), 401);

    // The same id again: a new user, whose counters start from zero, not from the erased ones.
    let key = create_with_key(&gw, &user);
    for _ in 0..CALL_LIMIT {
        assert_eq!(call(&gw, &key, BODY), 200);
    }
    assert_eq!(call(&gw, &key, BODY), 429);
    wait_rows(&url, &user, CALL_LIMIT as usize);
    drop(gw);
    redis_cleanup(&user);
}
