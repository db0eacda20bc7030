//! Usage alerts raised by real traffic through the real binary: concurrent calls that cross
//! 80, 90 and 100 % of a plan's limits leave exactly three alerts per limit in the ledger, with
//! the right severities, and each is delivered exactly once to a webhook receiver, signed — with
//! one gateway, and with two gateways sharing Redis counters and one PostgreSQL ledger.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use harness::{Gateway, Mock, Reply, Seen, key_entry, ledger_alerts};
use tollgate_admin::WebhookSigner;
use tollgate_ledger::Alert;
use tollgate_ledger::test_database::TestDatabase;

const UPSTREAM_KEY: &str = "sk-upstream-secret";
const WEBHOOK_SECRET: &str = "whsec-alerts-e2e";
const WEBHOOK_PATH: &str = "/hooks/tollgate";
/// Every call sends this body; the mock reports its length as the prompt tokens and
/// `max_tokens` as the completion tokens, so a call uses exactly the tokens it reserved.
const BODY: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":50}"#;
const MAX_TOKENS: u64 = 50;
const CALL_LIMIT: u64 = 10;
/// Calls sent at once: more than the limit admits.
const CALLS: usize = 30;

fn tokens_per_call() -> u64 {
    BODY.len() as u64 + MAX_TOKENS
}

/// An OpenAI chat completion whose usage is the request's bound (see [`BODY`]). It answers
/// after a short pause so that the calls overlap.
fn openai_upstream() -> Mock {
    Mock::with_handler(|seen: &Seen| {
        std::thread::sleep(Duration::from_millis(20));
        let request: serde_json::Value = serde_json::from_slice(&seen.body).unwrap_or_default();
        let completion = request["max_tokens"].as_u64().unwrap_or(0);
        let prompt = seen.body.len() as u64;
        Reply::json(format!(
            r#"{{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[{{"index":0,"message":{{"role":"assistant","content":"Hello"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}}}"#,
            prompt + completion
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

/// A gateway whose plan `test` allows [`CALL_LIMIT`] OpenAI calls, as many tokens as those
/// calls use, and [`CALL_LIMIT`] calls plan-wide, and which delivers alerts to `webhook`.
fn start(
    upstream: &Mock,
    webhook: &Mock,
    user: &str,
    key: &str,
    database_url: &str,
    storage: &str,
) -> Gateway {
    let rest = format!(
        r#"
[alerts]
webhook_urls = ["http://127.0.0.1:{hook_port}{WEBHOOK_PATH}"]
webhook_timeout_ms = 5000
delivery_interval_ms = 100
[providers.openai]
base_url = "http://127.0.0.1:{upstream}"
key_env = "TG_TEST_OPENAI_KEY"
[plans.test]
name = "Test"
tier = "pro"
total_calls = {CALL_LIMIT}
[plans.test.providers]
openai = {{ calls = {CALL_LIMIT}, tokens = {tokens} }}
{keys}"#,
        hook_port = webhook.port,
        upstream = upstream.port,
        tokens = CALL_LIMIT * tokens_per_call(),
        keys = key_entry(user, "test", key),
    );
    Gateway::start_with_database(
        "threads = 2",
        database_url,
        storage,
        &rest,
        &[
            ("TG_TEST_OPENAI_KEY", UPSTREAM_KEY),
            ("TOLLGATE_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("RUST_LOG", "warn"),
        ],
    )
}

/// The status of one chat completion through the gateway.
fn call(port: u16, key: &str) -> u16 {
    let auth = format!("Bearer {key}");
    harness::post_json(
        port,
        "/openai/v1/chat/completions",
        &[("authorization", &auth)],
        BODY,
    )
    .status
}

/// [`CALLS`] calls at once, spread over the gateways; returns the statuses.
fn burst(ports: &[u16], key: &str) -> Vec<u16> {
    let key = key.to_owned();
    harness::at_once(ports, CALLS, move |port| call(port, &key))
}

/// Waits until the webhook has received `count` deliveries and the ledger marks `count` alerts
/// sent, then a while longer to catch any extra delivery; returns both.
fn wait_delivered(
    webhook: &Mock,
    ledger_url: &str,
    user: &str,
    count: usize,
) -> (Vec<Seen>, Vec<Alert>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let delivered = webhook.seen_at(WEBHOOK_PATH).len();
        let sent = ledger_alerts(ledger_url, user)
            .iter()
            .filter(|a| a.is_sent)
            .count();
        if (delivered >= count && sent >= count) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Many delivery rounds of every instance.
    std::thread::sleep(Duration::from_millis(1500));
    (
        webhook.seen_at(WEBHOOK_PATH),
        ledger_alerts(ledger_url, user),
    )
}

/// Exactly three alerts per limit, 80/90/100 % as info/warning/error, each delivered once with
/// a valid signature.
fn assert_alerted_once_each(alerts: &[Alert], deliveries: &[Seen]) {
    let mut by_limit: BTreeMap<&str, Vec<(i64, &str, &str)>> = BTreeMap::new();
    for a in alerts {
        by_limit.entry(&a.limit_key).or_default().push((
            a.threshold_percentage,
            a.severity.as_str(),
            a.alert_type.as_str(),
        ));
    }
    let expected = vec![
        (80, "info", "usage_warning"),
        (90, "warning", "usage_warning"),
        (100, "error", "limit_reached"),
    ];
    assert_eq!(
        by_limit.keys().copied().collect::<Vec<_>>(),
        ["openai_calls", "openai_tokens", "total_calls"],
        "{alerts:#?}"
    );
    for (limit, mut got) in by_limit {
        got.sort_unstable();
        assert_eq!(got, expected, "alerts of {limit}");
    }
    assert!(alerts.iter().all(|a| a.is_sent), "{alerts:#?}");

    let signer = WebhookSigner::new(Some(WEBHOOK_SECRET));
    let impostor = WebhookSigner::new(Some("another secret"));
    let mut delivered = BTreeSet::new();
    for d in deliveries {
        let timestamp: i64 = d.header("x-tollgate-timestamp").unwrap().parse().unwrap();
        let signature = d.header("x-tollgate-signature").unwrap();
        assert!(
            signer.verify(timestamp, &d.body, signature),
            "bad signature"
        );
        assert!(!impostor.verify(timestamp, &d.body, signature));
        let payload: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(payload["type"], "usage_alert");
        let id = payload["alert"]["id"].as_i64().unwrap();
        assert_eq!(
            d.header("x-tollgate-delivery"),
            Some(format!("alert-{id}").as_str())
        );
        let alert = alerts.iter().find(|a| a.id == id).expect("a stored alert");
        assert_eq!(payload["alert"]["limit_key"], alert.limit_key.as_str());
        assert_eq!(payload["alert"]["severity"], alert.severity.as_str());
        assert!(delivered.insert(id), "alert {id} delivered twice");
    }
    let stored: BTreeSet<i64> = alerts.iter().map(|a| a.id).collect();
    assert_eq!(delivered, stored, "every alert delivered");
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|&&s| s == status).count()
}

#[test]
fn concurrent_calls_crossing_every_threshold_alert_once_per_limit() {
    let upstream = openai_upstream();
    let webhook = Mock::start();
    webhook.script(WEBHOOK_PATH, Reply::json("{}"));
    let user = unique("alerts-one");
    let key = format!("tg_{user}");
    let gw = start(&upstream, &webhook, &user, &key, "sqlite://ledger.db", "");
    let statuses = burst(&[gw.port], &key);
    assert_eq!(count(&statuses, 200), CALL_LIMIT as usize, "{statuses:?}");
    assert_eq!(count(&statuses, 429), CALLS - CALL_LIMIT as usize);
    let (deliveries, alerts) = wait_delivered(&webhook, &gw.ledger_url(), &user, 9);
    assert_alerted_once_each(&alerts, &deliveries);
    gw.stop();
}

#[test]
fn two_gateways_sharing_redis_and_postgres_alert_and_deliver_once() {
    let upstream = openai_upstream();
    let webhook = Mock::start();
    webhook.script(WEBHOOK_PATH, Reply::json("{}"));
    let database = TestDatabase::create("alerts");
    let user = unique("alerts-two");
    let key = format!("tg_{user}");
    let storage = format!(
        "counters = \"redis\"\nredis_url = \"{}\"\nredis_timeout_ms = 2000",
        harness::redis_url()
    );
    let gateways: Vec<Gateway> = (0..2)
        .map(|_| start(&upstream, &webhook, &user, &key, &database.url, &storage))
        .collect();
    let ports: Vec<u16> = gateways.iter().map(|g| g.port).collect();
    let statuses = burst(&ports, &key);
    let (deliveries, alerts) = wait_delivered(&webhook, &database.url, &user, 9);
    for gw in gateways {
        gw.stop();
    }
    harness::redis_cleanup(&user);
    assert_eq!(count(&statuses, 200), CALL_LIMIT as usize, "{statuses:?}");
    assert_eq!(count(&statuses, 429), CALLS - CALL_LIMIT as usize);
    assert_alerted_once_each(&alerts, &deliveries);
}
