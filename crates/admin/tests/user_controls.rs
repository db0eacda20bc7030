#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! Operators' controls over users and keys through the admin API: bodies with fields the API
//! does not know are refused (never silently ignored).

mod common;

use common::{ADMIN_TOKEN, Server, TestDb, load_config};
use serde_json::{Value, json};

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
