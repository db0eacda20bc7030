//! A key's own budget and per-minute windows through the real binary: 200 concurrent calls
//! against a key whose budget allows 100 get exactly 100 through, with one gateway and with
//! three sharing Redis and PostgreSQL; a per-minute limit of 60 under 200 concurrent callers
//! admits exactly 60 in the window, and its refusals say when to retry as the provider would.

use crate::harness;

use std::time::Duration;

use harness::{Gateway, Mock, Reply, Response};
use serde_json::Value;
use tollgate_ledger::test_database::TestDatabase;

const ADMIN_TOKEN: &str = "admin-token-key-budgets";
const SEARCH: &str = r#"{"q":"tollgate"}"#;

fn admin(admin_port: u16, method: &str, path: &str, body: &str) -> (u16, Value) {
    harness::admin_json(admin_port, ADMIN_TOKEN, method, path, body)
}

/// Serper answering every search with 1 credit ($0.001): what a call reserves is what it
/// costs, so a budget of N calls' cost admits exactly N.
fn serper() -> Mock {
    Mock::with_handler(|_| {
        Reply::json(r#"{"searchParameters":{"q":"tollgate"},"organic":[],"credits":1}"#)
    })
}

fn config(mock: &Mock, plan_lines: &str) -> String {
    format!(
        r#"
[providers.serper]
base_url = "http://127.0.0.1:{}"
key_env = "TG_TEST_SERPER_KEY"
[plans.search]
name = "Search"
tier = "pro"
{plan_lines}
[plans.search.providers]
serper = {{ calls = 10000 }}
"#,
        mock.port
    )
}

const ENV: [(&str, &str); 3] = [
    ("TG_TEST_SERPER_KEY", "real-serper-key"),
    ("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN),
    ("RUST_LOG", "warn"),
];

/// A user on plan `search` with a key issued with `rules` (a JSON object's fields); the key.
fn key_with(admin_port: u16, user: &str, rules: &str) -> String {
    let (status, body) = admin(
        admin_port,
        "PUT",
        &format!("/api/admin/users/{user}/subscription"),
        r#"{"plan_id":"search"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin(
        admin_port,
        "POST",
        &format!("/api/admin/users/{user}/keys"),
        rules,
    );
    assert_eq!(status, 201, "{body}");
    body["data"]["key"].as_str().unwrap().to_owned()
}

fn search(port: u16, key: &str) -> Response {
    harness::post_json(port, "/serper/search", &[("X-API-KEY", key)], SEARCH)
}

/// `n` searches at once over `ports`.
fn burst(ports: &[u16], key: &str, n: usize) -> Vec<Response> {
    let key = key.to_owned();
    harness::at_once(ports, n, move |port| search(port, &key))
}

fn count(responses: &[Response], status: u16) -> usize {
    responses.iter().filter(|r| r.status == status).count()
}

/// The 429s all name `limit`.
fn assert_refused_by(responses: &[Response], limit: &str) {
    for r in responses.iter().filter(|r| r.status == 429) {
        assert_eq!(r.json()["tollgate"]["limit"], limit, "{}", r.text());
    }
}

#[test]
fn a_keys_budget_admits_exactly_its_value_with_one_gateway() {
    let mock = serper();
    let gw = Gateway::start("", &config(&mock, ""), &ENV);
    // Bad input is refused naming the field, and nothing is issued.
    for (rules, field) in [
        (r#"{"max_budget":-1}"#, "max_budget"),
        (r#"{"rpm_limit":0}"#, "rpm_limit"),
        (r#"{"max_budgets":1}"#, "max_budgets"),
    ] {
        let (status, body) = admin(gw.admin_port, "POST", "/api/admin/users/kay/keys", rules);
        assert_eq!(status, 400, "{rules}: {body}");
        assert!(body.to_string().contains(field), "{rules}: {body}");
    }
    let key = key_with(gw.admin_port, "kay", r#"{"max_budget":"0.10"}"#);
    let other = key_with(gw.admin_port, "kay", "{}");

    let responses = burst(&[gw.port], &key, 200);
    assert_eq!(count(&responses, 200), 100);
    assert_eq!(count(&responses, 429), 100);
    assert_refused_by(&responses, "key_cost");
    let refused = responses.iter().find(|r| r.status == 429).unwrap();
    // A budget of the period: not retried by the SDKs.
    assert_eq!(refused.header("x-should-retry"), Some("false"));
    assert_eq!(refused.header("retry-after"), None);
    assert_eq!(mock.seen().len(), 100);
    // The user's other key is not held back by this one's budget.
    assert_eq!(search(gw.port, &other).status, 200);

    // The listing shows the key's budget.
    let (status, body) = admin(gw.admin_port, "GET", "/api/admin/users/kay/keys", "");
    assert_eq!(status, 200, "{body}");
    let budgets: Vec<&Value> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k.get("max_budget"))
        .collect();
    assert_eq!(budgets, [&Value::from("0.10")], "{body}");
    // Every admitted call has its row; the refusals theirs, costing nothing.
    let dir = gw.stop();
    let rows = harness::ledger_rows(
        &format!("sqlite://{}", dir.path().join("ledger.db").display()),
        "kay",
    );
    assert_eq!(
        rows.iter().filter(|r| r.cost_total_nanousd > 0).count(),
        101
    );
}

#[test]
fn a_keys_budget_and_minute_window_hold_across_three_gateways_sharing_redis() {
    let mock = serper();
    let database = TestDatabase::create("keybudgets");
    let user = "kim";
    harness::redis_cleanup(user);
    let storage = format!(
        "counters = \"redis\"\nredis_url = \"{}\"\nredis_timeout_ms = 2000",
        harness::redis_url()
    );
    let rest = config(&mock, "");
    let gateways: Vec<Gateway> = (0..3)
        .map(|_| Gateway::start_with_database("threads = 2", &database.url, &storage, &rest, &ENV))
        .collect();
    let ports: Vec<u16> = gateways.iter().map(|g| g.port).collect();

    let budget = key_with(gateways[0].admin_port, user, r#"{"max_budget":"0.10"}"#);
    let responses = burst(&ports, &budget, 200);
    assert_eq!((count(&responses, 200), count(&responses, 429)), (100, 100));
    assert_refused_by(&responses, "key_cost");
    assert_eq!(mock.seen().len(), 100);

    let rated = key_with(gateways[1].admin_port, user, r#"{"rpm_limit":60}"#);
    harness::well_inside_a_minute(10);
    let responses = burst(&ports, &rated, 200);
    assert_eq!((count(&responses, 200), count(&responses, 429)), (60, 140));
    assert_refused_by(&responses, "key_calls_per_minute");
    for r in responses.iter().filter(|r| r.status == 429) {
        let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        assert_eq!(r.header("x-should-retry"), None);
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("60"));
        assert_eq!(r.json()["tollgate"]["code"], "rate_limit_exceeded");
    }
    assert_eq!(mock.seen().len(), 160);
    for gw in gateways {
        gw.stop();
    }
    harness::redis_cleanup(user);
}

#[test]
fn a_plans_minute_window_admits_exactly_its_limit_and_reopens_on_the_minute() {
    let mock = serper();
    let gw = Gateway::start("", &config(&mock, "calls_per_minute = 60"), &ENV);
    let key = key_with(gw.admin_port, "pat", "{}");
    harness::well_inside_a_minute(10);
    let responses = burst(&[gw.port], &key, 200);
    assert_eq!((count(&responses, 200), count(&responses, 429)), (60, 140));
    assert_refused_by(&responses, "calls_per_minute");
    let refused = responses.iter().find(|r| r.status == 429).unwrap();
    let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    // Retried after the seconds it was told, the call goes through in the next window.
    std::thread::sleep(Duration::from_secs(wait));
    let again = search(gw.port, &key);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(mock.seen().len(), 61);
    gw.stop();
}
