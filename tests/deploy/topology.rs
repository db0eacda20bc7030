//! The compose topology of deploy/, run as processes on loopback: two gateways sharing one Redis
//! (a key prefix of the test's own) and one PostgreSQL (a database of its own), scraped by
//! Debian's Prometheus with the shipped scrape configuration and alert rules. Calls sent
//! through both gateways at once are admitted exactly up to the plan's limit; Prometheus sees
//! both targets, its summed request and cost series equal what was sent and billed; every
//! alert rule and every query of the shipped Grafana dashboard evaluates without error, and
//! the traffic panels chart data.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;
use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use harness::{Gateway, Mock, Reply, Seen, client_key, free_port, key_entry, redis_url, wait_rows};
use support::prometheus::Prometheus;
use support::{deploy_dir, require_tool};
use tollgate_ledger::test_database::TestDatabase;

const BODY: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":50}"#;
const CALL_LIMIT: usize = 10;
/// Calls sent at once, half through each gateway: more than the limit admits.
const CALLS: usize = 30;
/// The dashboard panels that chart the calls' traffic: each must show data after them.
const TRAFFIC_PANELS: [&str; 7] = [
    "Requests per second",
    "Gateway overhead",
    "Upstream latency p95",
    "Instances up",
    "Cost per provider",
    "Tokens per provider",
    "Refusals by limit",
];

/// An OpenAI chat completion reporting the request's length as prompt tokens and its
/// `max_tokens` as completion tokens; it answers after a pause, so the calls overlap.
fn openai_upstream() -> Mock {
    Mock::with_handler(|seen: &Seen| {
        std::thread::sleep(Duration::from_millis(20));
        let prompt = seen.body.len();
        Reply::json(format!(
            r#"{{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[{{"index":0,"message":{{"role":"assistant","content":"Hello"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{prompt},"completion_tokens":50,"total_tokens":{}}}}}"#,
            prompt + 50
        ))
    })
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Deletes every key under `prefix` from the shared Redis.
fn redis_delete_prefix(prefix: &str) {
    let url = redis_url();
    let pattern = format!("{prefix}*");
    let keys = Command::new("redis-cli")
        .args(["-u", &url, "--scan", "--pattern", &pattern])
        .output()
        .unwrap();
    for key in String::from_utf8_lossy(&keys.stdout).lines() {
        Command::new("redis-cli")
            .args(["-u", &url, "del", key])
            .output()
            .unwrap();
    }
}

/// Every query of the shipped dashboard with its panel's title, Grafana's interval variables
/// given values that suit a one-second scrape.
fn dashboard_queries() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(deploy_dir().join("monitoring/grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    let mut panels: Vec<serde_json::Value> = dashboard["panels"].as_array().unwrap().clone();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().cloned().unwrap_or_default());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$__range", "5m");
            assert!(
                !expr.contains('$'),
                "a variable the test does not know: {expr}"
            );
            let title = panel["title"].as_str().unwrap().to_owned();
            queries.push((title, expr));
        }
    }
    queries
}

/// The `tollgate_…` metric names a PromQL expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    expr.match_indices("tollgate_")
        .map(|(start, _)| {
            expr[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// Polls `check` every 200 ms until it holds; fails with `what` after 30 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn two_gateways_over_one_redis_and_one_postgres_are_metered_charted_and_alerted() {
    let Some(prometheus_binary) = require_tool("prometheus") else {
        return;
    };
    let database = TestDatabase::create("deploy");
    let prefix = format!("{}:", unique("tollgate-deploy"));
    let upstream = openai_upstream();
    let user = unique("deploy");
    let key = client_key(&user);
    let rest = format!(
        r#"
[providers.openai]
base_url = "http://127.0.0.1:{port}"
key_env = "TG_TEST_OPENAI_KEY"
[plans.test]
name = "Test"
tier = "pro"
[plans.test.providers]
openai = {{ calls = {CALL_LIMIT} }}
{keys}"#,
        port = upstream.port,
        keys = key_entry(&user, "test", &key),
    );
    let storage = format!(
        "counters = \"redis\"\nredis_url = \"{}\"\nredis_key_prefix = \"{prefix}\"",
        redis_url()
    );
    let env = [("TG_TEST_OPENAI_KEY", "sk-upstream"), ("RUST_LOG", "warn")];
    let start =
        || Gateway::start_with_database("threads = 2", &database.url, &storage, &rest, &env);
    let gateways = [start(), start()];
    let ports: Vec<u16> = gateways.iter().map(|g| g.port).collect();
    let targets: Vec<String> = gateways
        .iter()
        .map(|g| format!("127.0.0.1:{}", g.admin_port))
        .collect();
    let prometheus = Prometheus::start(&prometheus_binary, [&targets[0], &targets[1]], free_port());

    eventually("both gateways are up in Prometheus", || {
        prometheus.query(r#"up{job="tollgate"} == 1"#).len() == 2
    });

    let auth = format!("Bearer {key}");
    let statuses = harness::at_once(&ports, CALLS, move |port| {
        harness::post_json(
            port,
            "/openai/v1/chat/completions",
            &[("authorization", &auth)],
            BODY,
        )
        .status
    });
    let admitted = statuses.iter().filter(|&&s| s == 200).count();
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(
        (admitted, refused),
        (CALL_LIMIT, CALLS - CALL_LIMIT),
        "{statuses:?}"
    );
    let rows = wait_rows(&database.url, &user, CALL_LIMIT);
    let billed: i64 = rows.iter().map(|row| row.cost_total_nanousd).sum();
    assert!(billed > 0);

    // What Prometheus sums over both targets is what was sent and billed.
    let sums = [
        ("sum(tollgate_requests_total)", CALLS as f64),
        (
            r#"sum(tollgate_requests_total{status="200"})"#,
            CALL_LIMIT as f64,
        ),
        (
            r#"sum(tollgate_limit_refusals_total)"#,
            (CALLS - CALL_LIMIT) as f64,
        ),
        ("sum(tollgate_cost_nanousd_total)", billed as f64),
    ];
    for (query, expected) in sums {
        eventually(&format!("{query} = {expected}"), || {
            prometheus.scalar(query) == Some(expected)
        });
    }
    let serving = prometheus.query("sum by (instance) (tollgate_requests_total) > 0");
    assert_eq!(serving.len(), 2, "both gateways served calls: {serving:?}");

    // Every alert rule has been evaluated, and none failed.
    eventually("every alert rule evaluated", || {
        let groups = prometheus.api("/api/v1/rules")["groups"].clone();
        let rules: Vec<serde_json::Value> = groups
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        assert_eq!(rules.len(), 9, "the shipped rules are loaded: {groups}");
        for rule in &rules {
            assert_ne!(rule["health"], "err", "{rule}");
        }
        rules.iter().all(|rule| rule["health"] == "ok")
    });

    // Every dashboard query evaluates (a query error fails `query_range`); the traffic panels
    // chart data once two scrapes have seen the calls.
    let queries = dashboard_queries();
    assert!(queries.len() > 20, "{queries:?}");
    for (title, expr) in &queries {
        prometheus.query_range(expr, 60);
        if TRAFFIC_PANELS.contains(&title.as_str()) {
            eventually(&format!("panel {title:?} charts data: {expr}"), || {
                !prometheus.query_range(expr, 60).is_empty()
            });
        }
    }
    for title in TRAFFIC_PANELS {
        assert!(
            queries.iter().any(|(t, _)| t == title),
            "no panel {title:?}"
        );
    }

    // Every metric they chart or alert on is one the gateways export.
    let exported = prometheus.api("/api/v1/label/__name__/values");
    let exported: Vec<&str> = exported
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|name| name.as_str())
        .collect();
    let rules = std::fs::read_to_string(deploy_dir().join("monitoring/alerts.yml")).unwrap();
    let named = queries
        .iter()
        .flat_map(|(_, expr)| metric_names(expr))
        .chain(metric_names(&rules));
    for name in named {
        assert!(
            exported.contains(&name.as_str()),
            "{name} is charted or alerted on, but no gateway exports it"
        );
    }
    redis_delete_prefix(&prefix);
}
