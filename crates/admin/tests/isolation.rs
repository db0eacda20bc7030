#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! Tenant isolation: with user A's own key, every route of the API — the list comes from the
//! OpenAPI document the router generates, so a new route without a case here fails — is walked
//! against user B's ids. B's data never shows, B's alerts stay unread, and A's key works on
//! A's own data (so the test can tell a refusal from a broken route).

mod common;

use std::collections::BTreeMap;

use chrono::Utc;
use common::{ADMIN_TOKEN, Server, TestDb, call, load_config};
use serde_json::{Value, json};
use tollgate_domain::Provider;

/// What A's key gets on a route when it names B (or, for routes without a user in the path,
/// when it names B in the query or body).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Answered 404, as an unknown user would be.
    NotFound,
    /// An operators' route: 403 whoever is named.
    Forbidden,
    /// Public catalogue data (plans, prices): 200, and nothing of B's in it.
    Catalogue,
}

fn cases() -> BTreeMap<&'static str, Expect> {
    use Expect::*;
    BTreeMap::from([
        ("GET /api/subscription/plans", Catalogue),
        ("GET /api/subscription/pricing", Catalogue),
        (
            "GET /api/subscription/user/{user_id}/subscription",
            NotFound,
        ),
        ("GET /api/subscription/status/{user_id}", NotFound),
        ("POST /api/subscription/subscribe/{user_id}", NotFound),
        ("GET /api/subscription/usage/{user_id}", NotFound),
        ("GET /api/subscription/usage/{user_id}/trends", NotFound),
        ("GET /api/subscription/dashboard/{user_id}", NotFound),
        ("GET /api/subscription/recommendations/{user_id}", NotFound),
        ("GET /api/subscription/usage/{user_id}/daily", NotFound),
        ("GET /api/subscription/usage/{user_id}/models", NotFound),
        ("GET /api/subscription/keys/{user_id}", NotFound),
        ("GET /api/subscription/billing-history/{user_id}", NotFound),
        // Who the caller is: A's own session, nothing of B's.
        ("GET /api/session", Catalogue),
        ("GET /api/subscription/alerts/{user_id}", NotFound),
        (
            "POST /api/subscription/alerts/{alert_id}/mark-read",
            NotFound,
        ),
        ("GET /api/subscription/usage-logs", NotFound),
        ("POST /api/subscription/preflight-check", NotFound),
        ("GET /api/admin/users", Forbidden),
        ("POST /api/admin/users", Forbidden),
        ("GET /api/admin/users/{user_id}", Forbidden),
        ("DELETE /api/admin/users/{user_id}", Forbidden),
        ("GET /api/admin/users/{user_id}/export", Forbidden),
        ("POST /api/admin/users/{user_id}/disable", Forbidden),
        ("POST /api/admin/users/{user_id}/enable", Forbidden),
        ("PUT /api/admin/users/{user_id}/subscription", Forbidden),
        ("PUT /api/admin/users/{user_id}/email", Forbidden),
        ("GET /api/admin/users/{user_id}/keys", Forbidden),
        ("POST /api/admin/users/{user_id}/keys", Forbidden),
        ("DELETE /api/admin/keys/{key_id}", Forbidden),
        ("PATCH /api/admin/keys/{key_id}", Forbidden),
        ("GET /api/admin/config", Forbidden),
        ("GET /api/admin/overview", Forbidden),
        ("POST /api/admin/reload", Forbidden),
        ("GET /api/admin/log-level", Forbidden),
        ("PUT /api/admin/log-level", Forbidden),
        ("GET /metrics", Forbidden),
    ])
}

/// A request for `path`, naming `user` (and their alert and key) everywhere it can.
fn concrete(path: &str, user: &str, alert_id: i64, key_id: &str) -> (String, Value) {
    let mut p = path
        .replace("{user_id}", user)
        .replace("{alert_id}", &alert_id.to_string())
        .replace("{key_id}", key_id);
    if p.ends_with("/usage-logs") {
        p.push_str(&format!("?user_id={user}"));
    }
    // Each route's own fields only: a field a route does not know is refused (400).
    let body = if p.ends_with("/preflight-check") {
        json!({
            "user_id": user,
            "operations": [{"provider": "gemini", "operation_type": "chat"}],
        })
    } else if p.ends_with("/log-level") {
        json!({"level": "trace"})
    } else if p == "/api/admin/users" {
        json!({"id": "mallory", "plan_id": "pro"})
    } else if p.ends_with("/keys") {
        json!({"name": "mallory's"})
    } else if p.contains("/subscribe/") || p.ends_with("/subscription") {
        json!({"plan_id": "pro"})
    } else {
        json!({})
    };
    (p, body)
}

#[tokio::test]
async fn a_users_key_reaches_nothing_of_another_user_on_any_route() {
    let db = TestDb::sqlite();
    let ledger = db.connect().await;
    let server = Server::start(ledger.clone(), load_config(db.dir.path(), "")).await;
    let mut keys = BTreeMap::new();
    for user in ["usera", "userb"] {
        let (status, _) = server
            .send_json(
                "POST",
                "/api/admin/users",
                ADMIN_TOKEN,
                json!({"id": user, "plan_id": "free"}),
            )
            .await;
        assert_eq!(status, 201);
        let (_, issued) = server
            .send_json(
                "POST",
                &format!("/api/admin/users/{user}/keys"),
                ADMIN_TOKEN,
                json!({}),
            )
            .await;
        keys.insert(
            user,
            (
                issued["data"]["key"].as_str().unwrap().to_owned(),
                issued["data"]["id"].as_str().unwrap().to_owned(),
            ),
        );
    }
    let now = Utc::now();
    ledger
        .insert_batch(&[
            call("usera", Provider::Tavily, 0, 1_000, 200, now),
            call("userb", Provider::Tavily, 0, 1_000, 200, now),
        ])
        .await
        .unwrap();
    let plan = server.config.plans["free"].clone();
    let period = tollgate_ledger::UsageEvent::calendar_period(now);
    let crossings = tollgate_domain::crossings(&plan.all_limits(), |_| 0, |_| 20, &[80]);
    for user in ["usera", "userb"] {
        ledger.raise(user, &period, &crossings).await.unwrap();
    }
    let alert_of = |user: &'static str| {
        let ledger = ledger.clone();
        async move { ledger.alerts(user, false, 10).await.unwrap()[0].id }
    };
    let (a_alert, b_alert) = (alert_of("usera").await, alert_of("userb").await);
    let (a_key, a_key_id) = keys["usera"].clone();
    let (_, b_key_id) = keys["userb"].clone();

    let (_, doc) = server.get("/api/openapi.json", "").await;
    let cases = cases();
    let mut seen = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let route = format!("{} {path}", method.to_uppercase());
            let Some(expect) = cases.get(route.as_str()).copied() else {
                panic!("no isolation case for {route}: add one to cases()");
            };
            seen.push(route.clone());
            let (url, body) = concrete(path, "userb", b_alert, &b_key_id);
            let r = server
                .request(&method.to_uppercase(), &url, &a_key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            match expect {
                Expect::NotFound => assert_eq!(status, 404, "{route}: {text}"),
                Expect::Forbidden => assert_eq!(status, 403, "{route}: {text}"),
                Expect::Catalogue => {
                    assert_eq!(status, 200, "{route}: {text}");
                    assert!(!text.contains("userb"), "{route} leaked: {text}");
                }
            }
            if expect != Expect::Catalogue {
                // An error body and nothing else: the same answer as for an unknown id.
                let v: Value = serde_json::from_str(&text).unwrap();
                let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
                assert_eq!(keys, ["code", "detail", "success"], "{route}: {text}");
            }

            // The same route on A's own ids works (or is refused for being an operator's).
            if expect == Expect::NotFound {
                let (url, body) = concrete(path, "usera", a_alert, &a_key_id);
                let r = server
                    .request(&method.to_uppercase(), &url, &a_key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let own = r.status().as_u16();
                let subscribe = path.contains("/subscribe/");
                assert_eq!(own, if subscribe { 403 } else { 200 }, "{route} on own id");
            }
        }
    }
    let missing: Vec<_> = cases
        .keys()
        .filter(|c| !seen.iter().any(|s| s == *c))
        .collect();
    assert!(
        missing.is_empty(),
        "cases for routes that do not exist: {missing:?}"
    );

    // B's alert is still unread, B still has their plan and key.
    assert!(!ledger.alert(b_alert).await.unwrap().unwrap().is_read);
    assert_eq!(
        ledger.subscription("userb").await.unwrap().unwrap().plan_id,
        "free"
    );
    assert!(
        ledger
            .api_key(&b_key_id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );
    // Without a user named, the logs are A's own only.
    let (status, body) = server.get("/api/subscription/usage-logs", &a_key).await;
    assert_eq!(status, 200);
    assert_eq!(body["total_count"], 1);
    assert_eq!(body["logs"][0]["user_id"], "usera");
}
