#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! A user's data through the admin API: exported whole as one JSON document, then erased —
//! from the ledger and from the Redis counters — after which the export answers 404, and the
//! erasure is recorded under the admin token's fingerprint.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::{ADMIN_TOKEN, Server, TestDb, call, load_config, sha256_hex};
use serde_json::{Value, json};
use tollgate_admin::{ForgetCounters, forget_counters_with};
use tollgate_counters::{RedisConfig, RedisStore};
use tollgate_domain::{AnchorDay, BillingPeriod, LimitKey, Provider};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn redis_keys(pattern: &str) -> Vec<String> {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    redis::cmd("KEYS").arg(pattern).query(&mut con).unwrap()
}

fn delete_redis_keys(pattern: &str) {
    let keys = redis_keys(pattern);
    if !keys.is_empty() {
        let client = redis::Client::open(redis_url()).unwrap();
        let mut con = client.get_connection().unwrap();
        let _: () = redis::cmd("DEL").arg(&keys).query(&mut con).unwrap();
    }
}

async fn export_then_erase(db: TestDb) {
    let prefix = format!("tgtest:privacy:{}:", uuid::Uuid::now_v7().simple());
    let store = Arc::new(
        RedisStore::new(RedisConfig {
            key_prefix: prefix.clone(),
            ..RedisConfig::new(redis_url(), 2_000)
        })
        .unwrap(),
    );
    let forget: ForgetCounters = {
        let store = Arc::clone(&store);
        forget_counters_with(move |user: String| {
            let store = Arc::clone(&store);
            async move {
                store
                    .forget_user(&user, Utc::now())
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        })
    };
    let ledger = db.connect().await;
    let config = load_config(db.dir.path(), "");
    let server = Server::start_with(ledger, config, |state| state.on_user_erased(forget)).await;

    let (status, body) = server
        .send_json(
            "POST",
            "/api/admin/users",
            ADMIN_TOKEN,
            json!({"id": "pat", "plan_id": "pro", "email": "pat@example.test"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server
        .send_json(
            "POST",
            "/api/admin/users/pat/keys",
            ADMIN_TOKEN,
            json!({"name": "laptop"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let key = body["data"]["key"].as_str().unwrap().to_owned();
    let now = Utc::now();
    let mut events: Vec<_> = (0..1_234)
        .map(|n| call("pat", Provider::Gemini, 10 + n, 1_000, 200, now))
        .collect();
    events.push(call("quinn", Provider::Gemini, 5, 5, 200, now));
    server.ledger.insert_batch(&events).await.unwrap();
    let period = BillingPeriod::containing(now, AnchorDay::default());
    store
        .seed("pat", period, &[(LimitKey::TotalCalls, 1_234)], &[])
        .await
        .unwrap();
    store
        .seed("quinn", period, &[(LimitKey::TotalCalls, 1)], &[])
        .await
        .unwrap();

    // The export: every row about pat, nothing secret, no one else's.
    let response = server
        .request("GET", "/api/admin/users/pat/export", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let text = response.text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["format"], "tollgate.user-export.v1");
    assert_eq!(doc["users"][0]["email"], "pat@example.test");
    assert_eq!(doc["user_subscriptions"][0]["plan_id"], "pro");
    assert_eq!(doc["api_keys"].as_array().unwrap().len(), 1);
    assert_eq!(doc["api_usage_logs"].as_array().unwrap().len(), 1_234);
    assert_eq!(doc["usage_summaries"][0]["total_calls"], 1_234);
    assert!(!text.contains(&key), "never the key");
    assert!(!text.contains(&sha256_hex(&key)), "never its hash");
    assert!(!text.contains("quinn"));
    // A user's own key may not export (operators only).
    let (status, _) = server.get("/api/admin/users/pat/export", &key).await;
    assert_eq!(status, 403);

    let (status, body) = server
        .send_json("DELETE", "/api/admin/users/pat", ADMIN_TOKEN, json!(null))
        .await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["deleted_rows"]["api_usage_logs"], 1_234, "{body}");
    assert_eq!(data["counters"], "forgotten", "{body}");
    assert_eq!(
        data["erased_by"],
        format!("admin:{}", &sha256_hex(ADMIN_TOKEN)[..12]),
        "{body}"
    );
    assert!(data["erasure_id"].as_i64().unwrap() >= 1);
    assert!(redis_keys(&format!("{prefix}{{u:pat}}*")).is_empty());
    assert_eq!(redis_keys(&format!("{prefix}{{u:quinn}}*")).len(), 1);
    assert!(server.ledger.erased_at("pat").await.unwrap().is_some());

    // Gone: the export, in the API's error shape, as for a user never known.
    for user in ["pat", "never-was"] {
        let (status, body) = server
            .get(&format!("/api/admin/users/{user}/export"), ADMIN_TOKEN)
            .await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["success"], false);
        assert_eq!(body["code"], "not_found");
    }
    let mut out = Vec::new();
    assert_eq!(server.ledger.export_user("pat", &mut out).await.unwrap(), 0);
    assert_eq!(
        server
            .ledger
            .usage_for_period("quinn", &period.key())
            .await
            .unwrap()
            .totals
            .calls,
        1
    );
    delete_redis_keys(&format!("{prefix}*"));
}

#[tokio::test]
async fn sqlite_export_then_erase_with_redis_counters() {
    export_then_erase(TestDb::sqlite()).await;
}

#[tokio::test]
async fn postgres_export_then_erase_with_redis_counters() {
    export_then_erase(TestDb::postgres().await).await;
}

/// Without the gateway's counters (a tool serving the API), the answer says so.
#[tokio::test]
async fn an_erase_without_the_counters_says_they_were_not_deleted() {
    let db = TestDb::sqlite();
    let ledger = db.connect().await;
    let config = load_config(db.dir.path(), "");
    let server = Server::start(ledger, config).await;
    let (status, body) = server
        .send_json(
            "POST",
            "/api/admin/users",
            ADMIN_TOKEN,
            json!({"id": "rae", "plan_id": "free"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server
        .send_json("DELETE", "/api/admin/users/rae", ADMIN_TOKEN, json!(null))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["data"]["counters"]
            .as_str()
            .unwrap()
            .starts_with("not deleted"),
        "{body}"
    );
}
