#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! Every route of the admin API against a real ledger: statuses, shapes, the field lists of
//! alwrity-api.md §7.1/§7.3, money without float noise, CORS, and 401 without credentials.

mod common;

use chrono::Utc;
use common::{ADMIN_TOKEN, STATIC_KEY, Server, TestDb, call, load_config};
use serde_json::{Value, json};
use tollgate_domain::Provider;
use tollgate_ledger::NewAlert;

/// A server with alice on Free (a key issued through the API, some usage, an alert), bob on
/// Pro, and carol known only by a static key.
async fn setup(db: &TestDb) -> (Server, String) {
    let ledger = db.connect().await;
    let config = load_config(db.dir.path(), "");
    let server = Server::start(ledger.clone(), config).await;
    let (status, _) = server
        .send_json(
            "POST",
            "/api/admin/users",
            ADMIN_TOKEN,
            json!({"id": "alice", "display_name": "Alice", "plan_id": "free"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, issued) = server
        .send_json(
            "POST",
            "/api/admin/users/alice/keys",
            ADMIN_TOKEN,
            json!({"name": "laptop"}),
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    let key = issued["data"]["key"].as_str().unwrap().to_owned();
    let (status, _) = server
        .send_json(
            "POST",
            "/api/subscription/subscribe/bob",
            ADMIN_TOKEN,
            json!({"plan_id": "pro", "billing_cycle": "monthly"}),
        )
        .await;
    assert_eq!(status, 200);
    let now = Utc::now();
    let mut events = vec![];
    for i in 0..16 {
        // 19_000_000 nano-USD each: the seed's float sum would show 0.30400000000000005.
        events.push(call(
            "alice",
            Provider::Tavily,
            0,
            19_000_000,
            if i == 0 { 500 } else { 200 },
            now,
        ));
    }
    events.push(call("alice", Provider::Gemini, 1_000, 813_000, 200, now));
    events.push(call("bob", Provider::Gemini, 5, 1, 200, now));
    ledger.insert_batch(&events).await.unwrap();
    ledger
        .insert_alert_once(&NewAlert {
            user_id: "alice".into(),
            billing_period: tollgate_ledger::UsageEvent::calendar_period(now),
            limit_key: "tavily_calls".into(),
            threshold_percentage: 80,
            alert_type: "usage_warning".into(),
            provider: Some(Provider::Tavily),
            title: "API Usage Notice - Tavily".into(),
            message: "You have used 16 of 20 tavily API calls.".into(),
            severity: "info".into(),
        })
        .await
        .unwrap();
    (server, key)
}

const PROVIDERS: [&str; 9] = [
    "gemini",
    "openai",
    "anthropic",
    "mistral",
    "tavily",
    "serper",
    "metaphor",
    "firecrawl",
    "stability",
];

const SEED_LIMIT_KEYS: [&str; 14] = [
    "gemini_calls",
    "openai_calls",
    "anthropic_calls",
    "mistral_calls",
    "tavily_calls",
    "serper_calls",
    "metaphor_calls",
    "firecrawl_calls",
    "stability_calls",
    "gemini_tokens",
    "openai_tokens",
    "anthropic_tokens",
    "mistral_tokens",
    "monthly_cost",
];

/// No `null` anywhere: optional fields are left out (zod's `.optional()` refuses null).
fn assert_no_nulls(v: &Value, path: &str) {
    match v {
        Value::Null => panic!("null at {path}"),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                assert_no_nulls(item, &format!("{path}[{i}]"));
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                assert_no_nulls(item, &format!("{path}.{k}"));
            }
        }
        _ => {}
    }
}

fn assert_limits_block(l: &Value) {
    for key in ["plan_name", "tier", "limits", "features"] {
        assert!(l.get(key).is_some(), "limits.{key} missing in {l}");
    }
    assert!(["free", "basic", "pro", "enterprise"].contains(&l["tier"].as_str().unwrap()));
    for key in SEED_LIMIT_KEYS {
        assert!(l["limits"][key].is_number(), "limits.limits.{key} in {l}");
    }
    assert!(
        l["features"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_string)
    );
}

/// The full alert form of §7.1.
fn assert_full_alert(a: &Value) {
    for key in [
        "id",
        "type",
        "threshold_percentage",
        "title",
        "message",
        "severity",
        "is_sent",
        "is_read",
        "billing_period",
        "created_at",
    ] {
        assert!(a.get(key).is_some(), "alert.{key} missing in {a}");
    }
    assert!(["info", "warning", "error"].contains(&a["severity"].as_str().unwrap()));
}

/// UsageStats with all 12 keys of §7.3, all nine providers, every percentage a number.
fn assert_usage_stats(u: &Value) {
    for key in [
        "billing_period",
        "usage_status",
        "total_calls",
        "total_tokens",
        "total_cost",
        "avg_response_time",
        "error_rate",
        "limits",
        "provider_breakdown",
        "alerts",
        "usage_percentages",
        "last_updated",
    ] {
        assert!(u.get(key).is_some(), "usage.{key} missing");
    }
    assert!(["active", "warning", "limit_reached"].contains(&u["usage_status"].as_str().unwrap()));
    assert_limits_block(&u["limits"]);
    let breakdown = u["provider_breakdown"].as_object().unwrap();
    for p in PROVIDERS {
        let b = &breakdown[p];
        for f in ["calls", "tokens", "cost"] {
            assert!(b[f].is_number(), "provider_breakdown.{p}.{f}");
        }
    }
    assert!(
        !breakdown.contains_key("huggingface"),
        "mistral must not also appear as huggingface (HEAD would double-count)"
    );
    let pct = u["usage_percentages"].as_object().unwrap();
    for p in PROVIDERS {
        assert!(pct[&format!("{p}_calls")].is_number(), "{p}_calls %");
    }
    assert!(pct["cost"].is_number());
    assert!(pct.values().all(Value::is_number));
    for a in u["alerts"].as_array().unwrap() {
        assert_full_alert(a);
    }
    assert_no_nulls(u, "usage");
}

#[tokio::test]
async fn dashboard_and_usage_hold_to_the_field_lists_of_both_frontends() {
    let db = TestDb::sqlite();
    let (server, _) = setup(&db).await;
    let (status, body) = server
        .get("/api/subscription/dashboard/alice", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    let d = &body["data"];
    for key in ["current_usage", "total_usage", "current_period_usage"] {
        assert_usage_stats(&d[key]);
    }
    assert_limits_block(&d["limits"]);
    for key in ["periods", "total_calls", "total_cost", "total_tokens"] {
        assert_eq!(
            d["trends"][key].as_array().unwrap().len(),
            6,
            "trends.{key}"
        );
    }
    assert_eq!(d["trends"]["provider_trends"].as_object().unwrap().len(), 9);
    for key in [
        "projected_monthly_cost",
        "cost_limit",
        "projected_usage_percentage",
    ] {
        assert!(d["projections"][key].is_number());
    }
    for key in [
        "total_api_calls_this_month",
        "total_cost_this_month",
        "usage_status",
        "unread_alerts",
    ] {
        assert!(d["summary"].get(key).is_some(), "summary.{key}");
    }
    let alerts = d["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1);
    assert_full_alert(&alerts[0]);
    assert!(alerts[0].get("read_at").is_none() && alerts[0].get("sent_at").is_none());
    assert_eq!(alerts[0]["provider"], "tavily");
    assert_no_nulls(d, "dashboard");

    let u = &d["current_usage"];
    assert_eq!(u["total_calls"], 17);
    assert_eq!(
        u["usage_status"], "warning",
        "16 of 20 tavily calls is 80 %"
    );
    assert_eq!(u["provider_breakdown"]["tavily"]["calls"], 16);
    assert_eq!(u["usage_percentages"]["tavily_calls"], 80.0);
    assert_eq!(u["usage_percentages"]["openai_calls"], 0.0);
    assert_eq!(u["limits"]["limits"]["openai_calls"], 0);
    assert_eq!(u["limits"]["limits"]["tavily_calls"], 20);
    assert_eq!(u["limits"]["limits"]["monthly_cost"], 2.0);
    assert_eq!(d["summary"]["unread_alerts"], 1);
    assert_eq!(d["summary"]["total_api_calls_this_month"], 17);
    assert_eq!(d["projections"]["cost_limit"], 2.0);

    let (status, body) = server
        .get("/api/subscription/usage/alice", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200);
    assert_usage_stats(&body["data"]);
    // An empty period still has all 12 keys and all nine providers.
    let (status, body) = server
        .get(
            "/api/subscription/usage/alice?billing_period=2020-01",
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(status, 200);
    assert_usage_stats(&body["data"]);
    assert_eq!(body["data"]["total_calls"], 0);
    assert_eq!(body["data"]["usage_status"], "active");
}

#[tokio::test]
async fn money_is_rendered_from_integers_without_float_noise() {
    let db = TestDb::sqlite();
    let (server, _) = setup(&db).await;
    let text = server
        .request("GET", "/api/subscription/usage/alice", ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // 16 × $0.019 = $0.304 and $0.000813: exact in nano-USD, so exact on the wire.
    assert!(text.contains("\"total_cost\":0.304813"), "{text}");
    assert!(text.contains("\"cost\":0.304}"), "{text}");
    assert!(text.contains("\"cost\":0.000813}"), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let ts = v["data"]["last_updated"].as_str().unwrap();
    assert!(
        ts.ends_with('Z') && ts.parse::<chrono::DateTime<Utc>>().is_ok(),
        "{ts}"
    );
    assert_eq!(v["data"]["error_rate"], 5.88, "1 failed call of 17");
}

#[tokio::test]
async fn plans_pricing_subscription_and_status() {
    let db = TestDb::sqlite();
    let (server, _) = setup(&db).await;

    let (status, body) = server.get("/api/subscription/plans", ADMIN_TOKEN).await;
    assert_eq!(status, 200);
    let plans = body["data"]["plans"].as_array().unwrap();
    assert_eq!(body["data"]["total"], 2);
    assert_eq!(plans[0]["id"], "free");
    assert_eq!(plans[1]["price_monthly"], 79.0);
    for p in plans {
        for key in SEED_LIMIT_KEYS {
            assert!(p["limits"][key].is_number(), "plan {key}");
        }
    }
    assert_eq!(
        plans[0]["limits"]["_zero_means"]["openai_calls"],
        "disabled"
    );
    assert_eq!(
        plans[1]["limits"]["_zero_means"]["anthropic_calls"],
        "unlimited"
    );

    let (status, body) = server
        .get("/api/subscription/pricing?provider=tavily", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200);
    let rows = body["data"]["pricing"].as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["provider"] == "tavily"));
    assert_eq!(rows[0]["cost_per_credit"], 0.008);
    // What a call with the provider's default options reserves, and why where the request
    // cannot bound it.
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["model_name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(row("search")["max_cost_per_call"], 0.008);
    assert_eq!(row("map")["max_cost_per_call"], 0.04);
    assert_eq!(row("*")["max_cost_per_call"], 2.0);
    assert!(
        row("*")["max_cost_reason"]
            .as_str()
            .unwrap()
            .contains("250 credits")
    );
    assert!(row("search").get("max_cost_reason").is_none());
    let (status, body) = server
        .get("/api/subscription/pricing?provider=nope", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["success"], false);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("Invalid provider")
    );
    let (_, body) = server
        .get("/api/subscription/pricing?provider=metaphor", ADMIN_TOKEN)
        .await;
    assert!(body["data"]["total"].as_u64().unwrap() > 0);

    let (status, body) = server
        .get("/api/subscription/user/bob/subscription", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200);
    let d = &body["data"];
    assert_eq!(d["plan"]["id"], "pro");
    assert_eq!(d["status"], "active");
    assert_eq!(d["subscription"]["billing_cycle"], "monthly");
    assert!(d["limits"]["gemini_calls"] == 5000);
    // carol: a static key only, on its plan, without a subscription.
    let (status, body) = server
        .get("/api/subscription/user/carol/subscription", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["plan"]["id"], "pro");
    assert_eq!(body["data"]["status"], "free");
    assert!(body["data"].get("subscription").is_none());
    let (status, body) = server
        .get("/api/subscription/user/nobody/subscription", ADMIN_TOKEN)
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));

    let (status, body) = server
        .get("/api/subscription/status/bob", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["active"], true);
    assert_eq!(body["data"]["can_use_api"], true);
    assert_eq!(body["data"]["tier"], "pro");
    assert!(body["data"].get("reason").is_none());

    // Subscribe: by id, by position in /plans, errors.
    let (status, body) = server
        .send_json(
            "POST",
            "/api/subscription/subscribe/dave",
            ADMIN_TOKEN,
            json!({"plan_id": 2, "billing_cycle": "yearly", "anchor_day": 15}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Successfully subscribed to Pro");
    assert_eq!(body["data"]["anchor_day"], 15);
    assert!(
        body["data"]["current_period_start"]
            .as_str()
            .unwrap()
            .contains("-15T00:00:00")
    );
    // A change of plan that names no anchor day keeps the subscription's.
    let (status, body) = server
        .send_json(
            "POST",
            "/api/subscription/subscribe/dave",
            ADMIN_TOKEN,
            json!({"plan_id": "free"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["anchor_day"], 15, "{body}");
    for (req, want) in [
        (json!({"billing_cycle": "monthly"}), 400),
        (json!({"plan_id": "platinum"}), 404),
        (json!({"plan_id": "pro", "billing_cycle": "weekly"}), 400),
        (json!({"plan_id": "pro", "anchor_day": 32}), 400),
    ] {
        let (status, body) = server
            .send_json("POST", "/api/subscription/subscribe/dave", ADMIN_TOKEN, req)
            .await;
        assert_eq!(status, want, "{body}");
        assert_eq!(body["success"], false);
    }
}

#[tokio::test]
async fn trends_alerts_mark_read_logs_and_preflight() {
    let db = TestDb::sqlite();
    let (server, _) = setup(&db).await;

    let (status, body) = server
        .get("/api/subscription/usage/alice/trends?months=3", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200);
    let t = &body["data"];
    let periods: Vec<String> = serde_json::from_value(t["periods"].clone()).unwrap();
    let now = tollgate_domain::BillingPeriod::containing(Utc::now(), Default::default());
    let expected: Vec<String> = now.last_n(3).into_iter().map(|p| p.key()).collect();
    assert_eq!(periods, expected);
    assert_eq!(t["total_calls"][2], 17);
    assert_eq!(t["provider_trends"]["tavily"]["calls"][2], 16);
    let (status, _) = server
        .get(
            "/api/subscription/usage/alice/trends?months=30",
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = server
        .get(
            "/api/subscription/usage/alice?billing_period=2026-13",
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(status, 400);

    let (status, body) = server
        .get(
            "/api/subscription/alerts/alice?unread_only=true&limit=10",
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["total"], 1);
    assert_eq!(body["data"]["unread_count"], 1);
    let alert = &body["data"]["alerts"][0];
    assert_full_alert(alert);
    let id = alert["id"].as_i64().unwrap();
    let (status, _) = server
        .get("/api/subscription/alerts/alice?limit=0", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 400);

    let (status, body) = server
        .send_json(
            "POST",
            &format!("/api/subscription/alerts/{id}/mark-read"),
            ADMIN_TOKEN,
            json!(null),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"success": true, "message": "Alert marked as read"})
    );
    let (_, body) = server
        .get("/api/subscription/alerts/alice", ADMIN_TOKEN)
        .await;
    assert_eq!(body["data"]["unread_count"], 0);
    assert!(body["data"]["alerts"][0]["read_at"].is_string());
    for (path, want) in [
        ("/api/subscription/alerts/999999/mark-read", 404),
        ("/api/subscription/alerts/abc/mark-read", 400),
    ] {
        let (status, body) = server
            .send_json("POST", path, ADMIN_TOKEN, json!(null))
            .await;
        assert_eq!(status, want, "{path}: {body}");
    }

    let (status, body) = server
        .get(
            "/api/subscription/usage-logs?user_id=alice&limit=5&provider=tavily",
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["total_count"], 16);
    assert_eq!(body["logs"].as_array().unwrap().len(), 5);
    assert_eq!(body["has_more"], true);
    let log = &body["logs"][0];
    assert_eq!(log["provider"], "tavily");
    assert_eq!(log["cost_total"], 0.019);
    assert_eq!(log["request_id"], "req-admin-test");
    assert!(
        body.get("success").is_none(),
        "HEAD's usage-logs has no envelope"
    );
    let (_, body) = server
        .get(
            "/api/subscription/usage-logs?user_id=alice&status_code=500",
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(body["total_count"], 1);
    assert_eq!(body["logs"][0]["status"], "failed");
    let (status, _) = server
        .get("/api/subscription/usage-logs?limit=6000", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 400);

    let (status, body) = server
        .send_json(
            "POST",
            "/api/subscription/preflight-check",
            ADMIN_TOKEN,
            json!({"user_id": "alice", "operations": [
                {"provider": "tavily", "operation_type": "search"},
                {"provider": "openai", "model": "gpt-4o", "tokens_requested": 100,
                 "operation_type": "chat"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let d = &body["data"];
    assert_eq!(d["can_proceed"], false, "openai is not in Free");
    assert_eq!(d["operations"][0]["allowed"], true);
    assert_eq!(d["operations"][0]["limit_info"]["remaining"], 4);
    assert_eq!(d["operations"][1]["allowed"], false);
    assert_no_nulls(d, "preflight");
    // The bound admission reserves, from the request the call will send: 25 results with
    // summaries are $0.007 + 15 × $0.001 + 25 × $0.001; a crawl without a limit is 10,000
    // pages; the operation's type names the endpoint when no path is given.
    let (status, body) = server
        .send_json(
            "POST",
            "/api/subscription/preflight-check",
            ADMIN_TOKEN,
            json!({"user_id": "alice", "operations": [
                {"provider": "exa", "endpoint": "/search",
                 "request": {"query": "q", "numResults": 25, "contents": {"summary": true}}},
                {"provider": "firecrawl", "endpoint": "/v2/crawl", "request": {"url": "https://a"}},
                {"provider": "metaphor", "operation_type": "search"},
                {"provider": "openai", "endpoint": "/v1/images/generations",
                 "request": {"model": "gpt-image-1", "prompt": "p", "n": 2, "quality": "low"}}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let costs: Vec<f64> = body["data"]["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["cost"].as_f64().unwrap())
        .collect();
    // Images: 816 output tokens at $40/M, and the body's bytes as input at $5/M.
    let image_input = json!({"model": "gpt-image-1", "prompt": "p", "n": 2, "quality": "low"})
        .to_string()
        .len() as f64;
    let image = (816.0 * 40.0 + image_input * 5.0) / 1e6;
    assert_eq!(costs[..3], [0.047, 8.3, 0.007], "{body}");
    assert!((costs[3] - image).abs() < 1e-9, "{} vs {image}", costs[3]);
    let (status, _) = server
        .send_json(
            "POST",
            "/api/subscription/preflight-check",
            ADMIN_TOKEN,
            json!({"user_id": "alice", "operations": []}),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn users_keys_metrics_and_pages() {
    let db = TestDb::sqlite();
    let (server, alice_key) = setup(&db).await;

    let (status, body) = server.get("/api/admin/users", ADMIN_TOKEN).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["data"]["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alice", "bob"]);
    let (status, _) = server
        .send_json(
            "POST",
            "/api/admin/users",
            ADMIN_TOKEN,
            json!({"id": "alice"}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = server
        .send_json(
            "POST",
            "/api/admin/users",
            ADMIN_TOKEN,
            json!({"id": "a b"}),
        )
        .await;
    assert_eq!(status, 400);

    let (status, body) = server
        .send_json(
            "PUT",
            "/api/admin/users/alice/subscription",
            ADMIN_TOKEN,
            json!({"plan_id": "pro", "anchor_day": 31}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["plan_id"], "pro");
    assert_eq!(body["data"]["anchor_day"], 31);

    let (status, body) = server.get("/api/admin/users/alice", ADMIN_TOKEN).await;
    assert_eq!(status, 200);
    let keys = body["data"]["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(alice_key.starts_with(keys[0]["prefix"].as_str().unwrap()));
    assert!(
        !body.to_string().contains(&alice_key),
        "a listing never shows a key"
    );
    // The key is stored as its SHA-256, as the gateway hashes a presented key.
    let stored = server
        .ledger
        .api_key_by_hash(&common::sha256_hex(&alice_key))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.user_id, "alice");

    // The key works until it is revoked.
    let (status, _) = server
        .get("/api/subscription/usage/alice", &alice_key)
        .await;
    assert_eq!(status, 200);
    let key_id = keys[0]["id"].as_str().unwrap();
    let (status, body) = server
        .send_json(
            "DELETE",
            &format!("/api/admin/keys/{key_id}"),
            ADMIN_TOKEN,
            json!(null),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["revoked_at"].is_string());
    let (status, _) = server
        .get("/api/subscription/usage/alice", &alice_key)
        .await;
    assert_eq!(status, 401);
    let (status, _) = server
        .send_json(
            "DELETE",
            &format!("/api/admin/keys/{key_id}"),
            ADMIN_TOKEN,
            json!(null),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = server
        .send_json(
            "DELETE",
            "/api/admin/keys/key_nope",
            ADMIN_TOKEN,
            json!(null),
        )
        .await;
    assert_eq!(status, 404);

    let (status, body) = server.get("/api/admin/users/carol/keys", ADMIN_TOKEN).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"][0]["source"], "config");
    // carol's static key reads carol's usage.
    let (status, _) = server
        .get("/api/subscription/dashboard/carol", STATIC_KEY)
        .await;
    assert_eq!(status, 200);

    let r = server
        .request("GET", "/metrics", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(r.text().await.unwrap().contains("tollgate_test_metric 1"));
    // The page and its two files are served without credentials, from the binary, under a
    // policy that lets nothing from elsewhere run in them.
    for (path, kind, needle) in [
        ("/dashboard", "text/html", "/dashboard/dashboard.js"),
        (
            "/dashboard/dashboard.js",
            "text/javascript",
            "/api/subscription/dashboard/",
        ),
        ("/dashboard/dashboard.css", "text/css", ".gauge"),
    ] {
        let r = server.request("GET", path, "").send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let header = |name: &str| r.headers()[name].to_str().unwrap().to_owned();
        assert!(header("content-type").starts_with(kind), "{path}");
        assert!(header("content-security-policy").contains("script-src 'self'"));
        assert!(r.text().await.unwrap().contains(needle), "{path}");
    }
    let r = server.request("GET", "/healthz", "").send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn every_route_of_the_openapi_document_needs_credentials() {
    let db = TestDb::sqlite();
    let (server, _) = setup(&db).await;
    let (status, doc) = server.get("/api/openapi.json", "").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    // The seed's eight, HEAD's four, the operators' routes and /metrics.
    for path in [
        "/api/subscription/plans",
        "/api/subscription/user/{user_id}/subscription",
        "/api/subscription/pricing",
        "/api/subscription/usage/{user_id}",
        "/api/subscription/usage/{user_id}/trends",
        "/api/subscription/dashboard/{user_id}",
        "/api/subscription/recommendations/{user_id}",
        "/api/subscription/alerts/{user_id}",
        "/api/subscription/alerts/{alert_id}/mark-read",
        "/api/subscription/status/{user_id}",
        "/api/subscription/subscribe/{user_id}",
        "/api/subscription/usage-logs",
        "/api/subscription/preflight-check",
        "/api/subscription/billing-history/{user_id}",
        "/api/admin/users",
        "/api/admin/users/{user_id}",
        "/api/admin/users/{user_id}/disable",
        "/api/admin/users/{user_id}/enable",
        "/api/admin/users/{user_id}/keys",
        "/api/admin/users/{user_id}/email",
        "/api/admin/keys/{key_id}",
        "/metrics",
    ] {
        assert!(paths.contains_key(path), "{path} missing from the document");
    }
    // A key's own rules, issued and changed.
    assert!(paths["/api/admin/keys/{key_id}"]["patch"].is_object());
    let schemas = &doc["components"]["schemas"];
    for schema in ["NewKeyRequest", "KeyChange"] {
        for field in [
            "expires",
            "providers",
            "models",
            "max_budget",
            "token_budget",
            "rpm_limit",
            "tpm_limit",
        ] {
            assert!(
                schemas[schema]["properties"][field].is_object(),
                "{schema}.{field} missing from the document"
            );
        }
    }
    let mut checked = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["security"].is_array(),
                "{method} {path} declares no security"
            );
            let concrete = path
                .replace("{user_id}", "alice")
                .replace("{alert_id}", "1")
                .replace("{key_id}", "key_x");
            for token in ["", "wrong-token", "tg_not_a_key"] {
                let r = server
                    .request(&method.to_uppercase(), &concrete, token)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 401, "{method} {path} with {token:?}");
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["code"], "unauthorized");
            }
            checked += 1;
        }
    }
    assert!(checked >= 19, "{checked} operations");
}

#[tokio::test]
async fn cors_allows_configured_origins_with_authorization() {
    let db = TestDb::sqlite();
    let (server, _) = setup(&db).await;
    let preflight = |origin: &'static str| {
        server
            .request("OPTIONS", "/api/subscription/dashboard/alice", "")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let r = preflight("https://app.example.com").await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        r.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    let r = preflight("https://evil.example.com").await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = server
        .request("GET", "/api/subscription/plans", ADMIN_TOKEN)
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
}

#[tokio::test]
async fn the_dashboard_pages_reads() {
    let db = TestDb::sqlite();
    let (server, alice_key) = setup(&db).await;

    let (status, body) = server.get("/api/session", &alice_key).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], json!({"role": "user", "user_id": "alice"}));
    let (_, body) = server.get("/api/session", ADMIN_TOKEN).await;
    assert_eq!(body["data"], json!({"role": "admin"}));
    let (status, _) = server.get("/api/session", "tg_not_a_key").await;
    assert_eq!(status, 401);

    // Every day of the period, today's with the 17 calls of setup.
    let (status, body) = server
        .get("/api/subscription/usage/alice/daily", &alice_key)
        .await;
    assert_eq!(status, 200, "{body}");
    let today = Utc::now().date_naive().to_string();
    let days = body["data"]["days"].as_array().unwrap();
    assert!((28..=31).contains(&days.len()), "{}", days.len());
    let day = days.iter().find(|d| d["day"] == today.as_str()).unwrap();
    assert_eq!(
        (&day["calls"], &day["error_calls"]),
        (&json!(17), &json!(1))
    );
    assert_eq!(day["cost"].to_string(), "0.304813");
    let (status, _) = server
        .get("/api/subscription/usage/bob/daily", &alice_key)
        .await;
    assert_eq!(status, 404);

    // Models, costliest first, with the provider's name for people.
    let (status, body) = server
        .get("/api/subscription/usage/alice/models", &alice_key)
        .await;
    assert_eq!(status, 200, "{body}");
    let models = body["data"]["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(
        (&models[0]["provider"], &models[0]["provider_name"]),
        (&json!("tavily"), &json!("Tavily"))
    );
    assert_eq!(
        (&models[0]["calls"], &models[0]["error_calls"]),
        (&json!(16), &json!(1))
    );
    assert_eq!(models[0]["cost"].to_string(), "0.304");
    assert_eq!(models[1]["provider"], "gemini");
    let (status, body) = server
        .get(
            "/api/subscription/usage/alice/models?billing_period=2025-01",
            &alice_key,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["models"], json!([]));

    // A user reads their own keys, never another's.
    let (status, body) = server.get("/api/subscription/keys/alice", &alice_key).await;
    assert_eq!(status, 200);
    assert!(alice_key.starts_with(body["data"][0]["prefix"].as_str().unwrap()));
    assert!(!body.to_string().contains(&alice_key));
    let (status, _) = server.get("/api/subscription/keys/bob", &alice_key).await;
    assert_eq!(status, 404);

    // The operators' overview: users by spend with plan, status and share of the cap.
    let (status, _) = server.get("/api/admin/overview", &alice_key).await;
    assert_eq!(status, 403);
    let (status, body) = server.get("/api/admin/overview", ADMIN_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert_no_nulls(&body, "");
    let users = body["data"]["users"].as_array().unwrap();
    assert_eq!(users[0]["user_id"], "alice");
    assert_eq!(users[0]["plan_id"], "free");
    // 16 of 20 Tavily calls.
    assert_eq!(users[0]["usage_status"], "warning");
    assert_eq!(users[0]["cost"].to_string(), "0.304813");
    assert_eq!(users[0]["cost_cap"].to_string(), "2.0");
    assert_eq!(users[0]["cost_percentage"].to_string(), "15.24");
    assert_eq!(users[1]["user_id"], "bob");
    let providers = body["data"]["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 9);
    let exa = providers.iter().find(|p| p["provider"] == "exa").unwrap();
    assert_eq!(exa["provider_name"], "Exa");
    let tavily = providers
        .iter()
        .find(|p| p["provider"] == "tavily")
        .unwrap();
    assert_eq!(
        (&tavily["calls"], &tavily["error_calls"]),
        (&json!(16), &json!(1))
    );
    assert_eq!(body["data"]["top_models"][0]["provider"], "tavily");
    let (status, _) = server
        .get("/api/admin/overview?billing_period=soon", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 400);

    // The log filters by outcome.
    for (status_filter, expected) in [("failed", 1), ("success", 16)] {
        let (status, body) = server
            .get(
                &format!("/api/subscription/usage-logs?status={status_filter}"),
                &alice_key,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["total_count"], expected, "{status_filter}");
    }
    let (status, _) = server
        .get("/api/subscription/usage-logs?status=maybe", &alice_key)
        .await;
    assert_eq!(status, 400);

    // Refused calls, from the ledger: per provider and reason, counted in nothing else.
    let refused = |user: &str, provider, reason: &str, status| {
        let mut e = call(user, provider, 0, 0, status, Utc::now());
        e.refusal_reason = Some(reason.to_owned());
        e
    };
    server
        .ledger
        .insert_batch(&[
            refused("alice", Provider::Tavily, "usage_limit_exceeded", 429),
            refused("alice", Provider::Tavily, "usage_limit_exceeded", 429),
            refused("bob", Provider::OpenAi, "provider_not_in_plan", 403),
        ])
        .await
        .unwrap();
    let (status, body) = server.get("/api/admin/overview", ADMIN_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["refused_calls"], 3);
    assert_eq!(
        data["refused_by_reason"],
        json!({"usage_limit_exceeded": 2, "provider_not_in_plan": 1})
    );
    let provider = |name: &str| {
        data["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["provider"] == name)
            .unwrap()
            .clone()
    };
    let tavily = provider("tavily");
    assert_eq!(
        (&tavily["calls"], &tavily["refused_calls"]),
        (&json!(16), &json!(2))
    );
    assert_eq!(
        tavily["refused_by_reason"],
        json!({"usage_limit_exceeded": 2})
    );
    assert_eq!(
        provider("openai")["refused_by_reason"],
        json!({"provider_not_in_plan": 1})
    );
    assert_eq!(provider("gemini")["refused_calls"], 0);
    let (_, body) = server
        .get("/api/admin/overview?billing_period=2025-01", ADMIN_TOKEN)
        .await;
    assert_eq!(body["data"]["refused_calls"], 0);
    assert_eq!(body["data"]["refused_by_reason"], json!({}));
}

/// Two closed months of bob (on Pro) and the current month of alice, which is not closed yet.
async fn close_two_months_of_bob(server: &Server) {
    // The plan table mirrors gateway.toml, as the gateway keeps it at start.
    server
        .ledger
        .upsert_plan(&tollgate_ledger::PlanRecord {
            id: "pro".into(),
            name: "Pro".into(),
            tier: "pro".into(),
            price_monthly_nanousd: 79_000_000_000,
            price_yearly_nanousd: 790_000_000_000,
            limits_json: "{}".into(),
            features_json: "[]".into(),
            description: None,
            is_active: true,
        })
        .await
        .unwrap();
    let at = |m: u32| chrono::TimeZone::with_ymd_and_hms(&Utc, 2025, m, 15, 12, 0, 0).unwrap();
    server
        .ledger
        .insert_batch(&[
            call("bob", Provider::Gemini, 1_000, 19_000_000, 200, at(1)),
            call("bob", Provider::Gemini, 2_500, 813_000, 200, at(2)),
            call("bob", Provider::Tavily, 0, 8_000_000, 200, at(2)),
        ])
        .await
        .unwrap();
    server.ledger.close_periods(Utc::now()).await.unwrap();
}

#[tokio::test]
async fn billing_history_lists_closed_periods_newest_first() {
    let db = TestDb::sqlite();
    let (server, alice_key) = setup(&db).await;
    close_two_months_of_bob(&server).await;

    let (status, body) = server
        .get("/api/subscription/billing-history/bob?limit=1", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_no_nulls(&body, "");
    let data = &body["data"];
    assert_eq!(data["user_id"], "bob");
    assert_eq!(
        (&data["total_count"], &data["limit"], &data["offset"]),
        (&json!(2), &json!(1), &json!(0))
    );
    assert_eq!(data["has_more"], true);
    let bill = &data["history"][0];
    assert_eq!(bill["billing_period"], "2025-02");
    assert_eq!(bill["period_start"], "2025-02-01T00:00:00.000Z");
    assert_eq!(bill["period_end"], "2025-03-01T00:00:00.000Z");
    assert_eq!(bill["plan_name"], "Pro");
    // Money is dollars from integers: 813_000 + 8_000_000 nano-USD, never 0.008813000000000001.
    assert_eq!(bill["base_cost"].to_string(), "79.0");
    assert_eq!(bill["usage_cost"].to_string(), "0.008813");
    assert_eq!(bill["overage_cost"].to_string(), "0.0");
    assert_eq!(bill["total_cost"].to_string(), "79.0");
    assert_eq!(
        (&bill["total_api_calls"], &bill["total_tokens"]),
        (&json!(2), &json!(2_500))
    );
    assert_eq!(bill["payment_status"], "pending");

    let (_, body) = server
        .get(
            "/api/subscription/billing-history/bob?limit=1&offset=1",
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(body["data"]["history"][0]["billing_period"], "2025-01");
    assert_eq!(
        body["data"]["history"][0]["usage_cost"].to_string(),
        "0.019"
    );
    assert_eq!(body["data"]["has_more"], false);

    // alice's own key reads alice's (empty: her month is still open), never bob's.
    let (status, body) = server
        .get("/api/subscription/billing-history/alice", &alice_key)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["history"], json!([]));
    assert_eq!(body["data"]["total_count"], 0);
    let (status, _) = server
        .get("/api/subscription/billing-history/bob", &alice_key)
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .get("/api/subscription/billing-history/nobody", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 404);
    let (status, body) = server
        .get("/api/subscription/billing-history/bob?limit=0", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 400);
    assert!(body["detail"].as_str().unwrap().contains("limit"));
}

#[tokio::test]
async fn the_dashboard_on_postgresql() {
    let db = TestDb::postgres().await;
    let (server, alice_key) = setup(&db).await;
    let (status, body) = server
        .get("/api/subscription/dashboard/alice", &alice_key)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_usage_stats(&body["data"]["current_usage"]);
    assert_eq!(body["data"]["current_usage"]["total_calls"], 17);
    assert_eq!(body["data"]["alerts"].as_array().unwrap().len(), 1);
    close_two_months_of_bob(&server).await;
    let (status, body) = server
        .get("/api/subscription/billing-history/bob", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200, "{body}");
    let periods: Vec<&str> = body["data"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["billing_period"].as_str().unwrap())
        .collect();
    assert_eq!(periods, ["2025-02", "2025-01"]);
    // Models for one user and for everyone, and the days, on PostgreSQL's SQL too.
    let (status, body) = server
        .get("/api/subscription/usage/alice/models", &alice_key)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["models"][0]["calls"], 16);
    let (status, body) = server.get("/api/admin/overview", ADMIN_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["top_models"][0]["calls"], 16);
    assert_eq!(body["data"]["users"][0]["user_id"], "alice");
    let (status, _) = server
        .get("/api/subscription/usage/alice/daily", &alice_key)
        .await;
    assert_eq!(status, 200);
    server.ledger.close().await;
}
