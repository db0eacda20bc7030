#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! Operators' controls over users and keys through the admin API: bodies with fields the API
//! does not know are refused (never silently ignored), and users are disabled, enabled again
//! and deleted.

mod common;

use chrono::Utc;
use common::{ADMIN_TOKEN, STATIC_KEY, Server, TestDb, call, load_config};
use serde_json::{Value, json};
use tollgate_domain::Provider;

async fn server(db: &TestDb) -> Server {
    let ledger = db.connect().await;
    let config = load_config(db.dir.path(), "");
    Server::start(ledger, config).await
}

/// Asserts a 400 in the admin API's error shape whose detail names `field`.
fn assert_refused_naming(status: u16, body: &Value, field: &str) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["code"], "bad_request", "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains(field), "{field} not named in {detail:?}");
}

#[tokio::test]
async fn unknown_fields_in_any_body_are_refused_naming_the_field() {
    let db = TestDb::sqlite();
    let server = server(&db).await;
    let (status, body) = server
        .send_json(
            "POST",
            "/api/admin/users",
            ADMIN_TOKEN,
            json!({"id": "frank", "plan_id": "free"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let bodies = [
        (
            "POST",
            "/api/admin/users",
            json!({"id": "gina", "plan": "free"}),
            "plan",
        ),
        (
            "POST",
            "/api/admin/users/frank/keys",
            json!({"name": "laptop", "max_budgett": 1}),
            "max_budgett",
        ),
        (
            "PUT",
            "/api/admin/users/frank/subscription",
            json!({"plan_id": "pro", "anchorday": 3}),
            "anchorday",
        ),
        (
            "POST",
            "/api/subscription/subscribe/frank",
            json!({"plan_id": "pro", "cycle": "yearly"}),
            "cycle",
        ),
        (
            "PUT",
            "/api/admin/log-level",
            json!({"level": "info", "scope": "all"}),
            "scope",
        ),
        (
            "POST",
            "/api/subscription/preflight-check",
            json!({"user_id": "frank", "operations": [], "dry": true}),
            "dry",
        ),
        (
            "POST",
            "/api/subscription/preflight-check",
            json!({"user_id": "frank",
                   "operations": [{"provider": "tavily", "tokens": 5}]}),
            "tokens",
        ),
    ];
    for (method, path, req, field) in bodies {
        let (status, body) = server.send_json(method, path, ADMIN_TOKEN, req).await;
        assert_refused_naming(status, &body, field);
    }
    // Nothing was done on the refused requests.
    let (status, _) = server.get("/api/admin/users/gina", ADMIN_TOKEN).await;
    assert_eq!(status, 404);
    let (_, keys) = server.get("/api/admin/users/frank/keys", ADMIN_TOKEN).await;
    assert_eq!(keys["data"].as_array().unwrap().len(), 0, "{keys}");
    let (_, user) = server.get("/api/admin/users/frank", ADMIN_TOKEN).await;
    assert_eq!(user["data"]["user"]["plan_id"], "free", "{user}");
}

#[tokio::test]
async fn users_are_disabled_enabled_and_deleted_with_their_rows() {
    let db = TestDb::sqlite();
    let server = server(&db).await;
    for id in ["erin", "frank"] {
        let (status, body) = server
            .send_json(
                "POST",
                "/api/admin/users",
                ADMIN_TOKEN,
                json!({"id": id, "email": format!("{id}@example.com"), "plan_id": "free"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, issued) = server
        .send_json("POST", "/api/admin/users/erin/keys", ADMIN_TOKEN, json!({}))
        .await;
    assert_eq!(status, 201, "{issued}");
    let key = issued["data"]["key"].as_str().unwrap().to_owned();
    let now = Utc::now();
    server
        .ledger
        .insert_batch(&[
            call("erin", Provider::Tavily, 0, 8_000_000, 200, now),
            call("frank", Provider::Tavily, 0, 8_000_000, 200, now),
        ])
        .await
        .unwrap();

    // Disabled: shown as such, and disabling again keeps the time.
    let (status, body) = server
        .send_json(
            "POST",
            "/api/admin/users/erin/disable",
            ADMIN_TOKEN,
            json!(null),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let disabled_at = body["data"]["disabled_at"].as_str().unwrap().to_owned();
    let (status, body) = server
        .send_json(
            "POST",
            "/api/admin/users/erin/disable",
            ADMIN_TOKEN,
            json!(null),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["disabled_at"], disabled_at.as_str());
    let (_, body) = server.get("/api/admin/users/erin", ADMIN_TOKEN).await;
    assert_eq!(body["data"]["user"]["disabled_at"], disabled_at.as_str());
    // The key stays stored, for when the user is enabled again.
    assert_eq!(body["data"]["keys"].as_array().unwrap().len(), 1, "{body}");

    let (status, body) = server
        .send_json(
            "POST",
            "/api/admin/users/erin/enable",
            ADMIN_TOKEN,
            json!(null),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"].get("disabled_at").is_none(), "{body}");

    // Static-key users are the configuration's; unknown users are 404.
    for path in [
        "/api/admin/users/carol/disable",
        "/api/admin/users/carol/enable",
    ] {
        let (status, body) = server
            .send_json("POST", path, ADMIN_TOKEN, json!(null))
            .await;
        assert_eq!(status, 409, "{body}");
        assert!(body["detail"].as_str().unwrap().contains("gateway.toml"));
    }
    let (status, _) = server
        .send_json("DELETE", "/api/admin/users/carol", ADMIN_TOKEN, json!(null))
        .await;
    assert_eq!(status, 409);
    let (status, _) = server
        .send_json(
            "POST",
            "/api/admin/users/nobody/disable",
            ADMIN_TOKEN,
            json!(null),
        )
        .await;
    assert_eq!(status, 404);
    // A user's own key cannot disable or delete anyone.
    let (status, _) = server
        .send_json("DELETE", "/api/admin/users/erin", &key, json!(null))
        .await;
    assert_eq!(status, 403);
    let (status, _) = server
        .send_json(
            "POST",
            "/api/admin/users/frank/disable",
            STATIC_KEY,
            json!(null),
        )
        .await;
    assert_eq!(status, 403);

    // Deleted: the user, the key and the usage rows are gone; frank's are not.
    let (status, body) = server
        .send_json("DELETE", "/api/admin/users/erin", ADMIN_TOKEN, json!(null))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["deleted_rows"]["users"], 1, "{body}");
    assert_eq!(body["data"]["deleted_rows"]["api_keys"], 1, "{body}");
    assert_eq!(body["data"]["deleted_rows"]["api_usage_logs"], 1, "{body}");
    let (status, _) = server.get("/api/admin/users/erin", ADMIN_TOKEN).await;
    assert_eq!(status, 404);
    let stored = server
        .ledger
        .api_key_by_hash(&common::sha256_hex(&key))
        .await
        .unwrap();
    assert!(stored.is_none());
    let (status, _) = server.get("/api/subscription/usage/erin", &key).await;
    assert_eq!(status, 401);
    let mut out = Vec::new();
    assert_eq!(
        server.ledger.export_user("erin", &mut out).await.unwrap(),
        0
    );
    let period = tollgate_ledger::UsageEvent::calendar_period(now);
    let frank = server
        .ledger
        .usage_for_period("frank", &period)
        .await
        .unwrap();
    assert_eq!(frank.totals.calls, 1);
    let (status, _) = server
        .send_json("DELETE", "/api/admin/users/erin", ADMIN_TOKEN, json!(null))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_keys_own_rules_are_issued_changed_listed_and_bad_ones_refused() {
    let db = TestDb::sqlite();
    let server = server(&db).await;
    let (status, body) = server
        .send_json(
            "POST",
            "/api/admin/users",
            ADMIN_TOKEN,
            json!({"id": "frank", "plan_id": "free"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let keys = "/api/admin/users/frank/keys";
    for (rules, field) in [
        (json!({"models": {"openai": ["gpt-4o?"]}}), "models.openai"),
        (json!({"models": ["gpt-4o"]}), "models"),
        (json!({"providers": ["openai", "openia"]}), "providers"),
        (json!({"expires": "2020-01-01"}), "expires"),
        (json!({"expires": "next week"}), "expires"),
        (
            json!({"providers": ["openai"], "models": {"gemini": ["gemini-*"]}}),
            "models.gemini",
        ),
    ] {
        let (status, body) = server.send_json("POST", keys, ADMIN_TOKEN, rules).await;
        assert_refused_naming(status, &body, field);
    }
    let (_, listed) = server.get(keys, ADMIN_TOKEN).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 0, "{listed}");

    let (status, issued) = server
        .send_json(
            "POST",
            keys,
            ADMIN_TOKEN,
            json!({"name": "ci", "expires": "2099-01-01", "providers": ["openai", "gemini"],
                   "models": {"openai": ["gpt-4o*"]}}),
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    let data = &issued["data"];
    assert_eq!(data["expires_at"], "2099-01-01T00:00:00.000Z", "{issued}");
    assert_eq!(data["providers"], json!(["openai", "gemini"]));
    assert_eq!(data["models"], json!({"openai": ["gpt-4o*"]}));
    let id = data["id"].as_str().unwrap().to_owned();
    let key = data["key"].as_str().unwrap().to_owned();
    // The user reads the same with their own key.
    let (status, own) = server.get("/api/subscription/keys/frank", &key).await;
    assert_eq!(status, 200, "{own}");
    assert_eq!(own["data"][0]["models"], json!({"openai": ["gpt-4o*"]}));

    let path = format!("/api/admin/keys/{id}");
    let (status, body) = server
        .send_json(
            "PATCH",
            &path,
            ADMIN_TOKEN,
            json!({"expires": "1999-12-31"}),
        )
        .await;
    assert_refused_naming(status, &body, "expires");
    let (status, body) = server
        .send_json("PATCH", &path, ADMIN_TOKEN, json!({"budget": 3}))
        .await;
    assert_refused_naming(status, &body, "budget");
    let (status, body) = server
        .send_json(
            "PATCH",
            &path,
            ADMIN_TOKEN,
            json!({"expires": null, "models": {"gemini": ["gemini-2.5-*"]}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["expires_at"].is_null(), "{body}");
    assert_eq!(body["data"]["providers"], json!(["openai", "gemini"]));
    assert_eq!(body["data"]["models"], json!({"gemini": ["gemini-2.5-*"]}));
    assert_eq!(body["data"]["name"], "ci");
    let (_, listed) = server.get(keys, ADMIN_TOKEN).await;
    assert_eq!(
        listed["data"][0]["models"],
        json!({"gemini": ["gemini-2.5-*"]})
    );

    let (status, _) = server
        .send_json("PATCH", "/api/admin/keys/key_nope", ADMIN_TOKEN, json!({}))
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .send_json("DELETE", &path, ADMIN_TOKEN, json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, body) = server
        .send_json("PATCH", &path, ADMIN_TOKEN, json!({"name": "x"}))
        .await;
    assert_eq!(status, 409, "{body}");
}
