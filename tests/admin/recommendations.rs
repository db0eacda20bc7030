//! Usage recommendations through the admin API of the real binary, after real traffic: a plan
//! whose OpenAI calls are used up says so with its numbers, the model that cost the most is
//! priced at a cheaper one from `pricing/`, the calls the gateway refused are counted by reason
//! from the ledger's refusal rows, apart from the calls the provider failed — the same list in
//! the dashboard, for the user's own key as for an admin.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use std::time::{Duration, Instant};

use harness::{Gateway, Mock, Reply, Seen, key_entry};
use serde_json::Value;

const ADMIN_TOKEN: &str = "admin-token-recommendations";
const CALL_LIMIT: u64 = 5;
const BODY: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":400}"#;
/// Refused before anything is sent: gpt-99 has no price.
const UNPRICED_BODY: &str = r#"{"model":"gpt-99","messages":[{"role":"user","content":"hi"}]}"#;
/// Answered 500 by the upstream.
const FAILING_BODY: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"fail"}],"max_tokens":400}"#;

/// gpt-4o answers whose usage is the request's bound (prompt = its bytes, completion = its
/// `max_tokens`), except a prompt saying "fail", which gets a 500.
fn openai_upstream() -> Mock {
    Mock::with_handler(|seen: &Seen| {
        if seen.contains("fail") {
            return Reply::json(r#"{"error":{"message":"boom","type":"server_error"}}"#)
                .status(500);
        }
        let request: Value = serde_json::from_slice(&seen.body).unwrap_or_default();
        let completion = request["max_tokens"].as_u64().unwrap_or(0);
        let prompt = seen.body.len() as u64;
        Reply::json(format!(
            r#"{{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[{{"index":0,"message":{{"role":"assistant","content":"Hello"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}}}"#,
            prompt + completion
        ))
    })
}

fn get(gw: &Gateway, path: &str, token: &str) -> Value {
    let auth = format!("Bearer {token}");
    let response = harness::request(gw.admin_port, "GET", path, &[("authorization", &auth)], b"");
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

#[test]
fn recommendations_name_the_limit_used_up_refused_calls_a_cheaper_model_and_failed_calls() {
    let upstream = openai_upstream();
    let user = format!("recs-{}", std::process::id());
    let key = format!("tg_{user}");
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
[plans.bigger]
name = "Bigger"
tier = "pro"
price_monthly = "50"
[plans.bigger.providers]
openai = {{ calls = 100000 }}
{keys}"#,
        port = upstream.port,
        keys = key_entry(&user, "small", &key),
    );
    let gw = Gateway::start(
        "",
        &rest,
        &[
            ("TG_TEST_OPENAI_KEY", "sk-upstream"),
            ("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN),
            ("RUST_LOG", "warn"),
        ],
    );
    let auth = format!("Bearer {key}");
    let call = |body: &str| {
        harness::post_json(
            gw.port,
            "/openai/v1/chat/completions",
            &[("authorization", &auth)],
            body,
        )
        .status
    };
    assert_eq!(call(FAILING_BODY), 500);
    let mut statuses = Vec::new();
    while statuses.last() != Some(&429) && statuses.len() < 10 {
        statuses.push(call(BODY));
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert_eq!(call(BODY), 429);
    assert_eq!(call(UNPRICED_BODY), 400);

    // The ledger is written in batches, and alerts beside it: wait until it holds every
    // admitted call and the 100 % alert.
    let admitted = statuses.iter().filter(|&&s| s == 200).count() as u64 + 1;
    let path = format!("/api/subscription/recommendations/{user}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let recs = loop {
        let body = get(&gw, &path, ADMIN_TOKEN);
        assert_eq!(body["success"], true);
        let recs = body["data"]["recommendations"].as_array().unwrap().clone();
        let calls = recs
            .iter()
            .find(|r| r["kind"] == "failed_calls")
            .map_or(0, |r| r["numbers"]["calls"].as_u64().unwrap());
        let alerted = recs
            .iter()
            .any(|r| r["kind"] == "limit_reached" && r["numbers"]["reached_at"].is_string());
        let refused = recs
            .iter()
            .find(|r| r["kind"] == "refused_calls")
            .map_or(0, |r| r["numbers"]["refused_calls"].as_u64().unwrap());
        if (calls >= admitted && alerted && refused >= 3) || Instant::now() > deadline {
            break recs;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let kinds: Vec<&str> = recs.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "limit_reached",
            "refused_calls",
            "cheaper_model",
            "failed_calls"
        ],
        "{recs:#?}"
    );

    let reached = &recs[0]["numbers"];
    assert_eq!(reached["limit_key"], "openai_calls");
    assert_eq!(reached["limit"], CALL_LIMIT);
    assert!(reached["used"].as_u64().unwrap() >= CALL_LIMIT, "{reached}");
    assert!(reached["resets_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        reached["reached_at"].is_string(),
        "the 100 % alert: {reached}"
    );

    // Two calls over the limit and one to a model without a price, by reason, from the
    // refusal rows; none of them among the failed calls below.
    let refused = &recs[1]["numbers"];
    assert_eq!(refused["refused_calls"], 3, "{refused}");
    assert_eq!(
        refused["by_reason"],
        serde_json::json!({"usage_limit_exceeded": 2, "model_not_priced": 1})
    );
    let detail = recs[1]["detail"].as_str().unwrap();
    assert!(
        detail.contains("2 usage_limit_exceeded: a limit of the plan was used up"),
        "{detail}"
    );

    let model = &recs[2]["numbers"];
    assert_eq!(model["provider"], "openai");
    assert_eq!(model["model"], "gpt-4o");
    assert_eq!(model["calls"], admitted);
    let cost = model["cost"].as_f64().unwrap();
    let alternative = model["alternative_cost"].as_f64().unwrap();
    assert!(cost > 0.0 && alternative < cost, "{model}");
    assert!(model["alternative_model"].as_str().unwrap() != "gpt-4o");
    assert!((model["savings"].as_f64().unwrap() - (cost - alternative)).abs() < 1e-9);
    assert_eq!(
        model["output_tokens"],
        400 * (admitted - 1),
        "the failed call produced nothing: {model}"
    );

    let failed = &recs[3]["numbers"];
    assert_eq!(failed["failed_calls"], 1);
    assert_eq!(failed["calls"], admitted);
    assert_eq!(failed["per_provider"]["openai"], 1);

    // The user's own key sees the same, and the dashboard carries the same list.
    let own = get(&gw, &path, &key);
    assert_eq!(own["data"]["recommendations"].as_array().unwrap(), &recs);
    let dashboard = get(&gw, &format!("/api/subscription/dashboard/{user}"), &key);
    assert_eq!(
        dashboard["data"]["recommendations"].as_array().unwrap(),
        &recs
    );
    gw.stop();
}
