//! Usage alerts mailed through a real SMTP server (aiosmtpd) by the real binary: calls crossing
//! 80, 90 and 100 % of a plan's limit send exactly one message per threshold, to the user's
//! address (set through the admin API) and to the operators, naming the limit, the percentage,
//! the amounts, the reset and the dashboard; and a mail server that is down slows no call and
//! is retried until it takes the messages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use std::time::{Duration, Instant};

use chrono::{Datelike, TimeZone, Utc};
use harness::{Gateway, Mail, Mock, Reply, SmtpServer, key_entry, ledger_mail_states};
use serde_json::Value;

const ADMIN_TOKEN: &str = "admin-token-email";
const USER_ADDRESS: &str = "alice@example.test";
const OPERATOR_ADDRESS: &str = "ops@gateway.test";
const DASHBOARD_URL: &str = "https://gateway.example.test/dashboard";
const CALL_LIMIT: usize = 10;
const BODY: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#;

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn openai_upstream() -> Mock {
    let mock = Mock::start();
    mock.script(
        "/v1/chat/completions",
        Reply::json(
            r#"{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
        ),
    );
    mock
}

/// A gateway whose plan allows [`CALL_LIMIT`] OpenAI calls a period and mails alerts through
/// `smtp_port` with `timeout_ms`.
fn start(upstream: &Mock, smtp_port: u16, timeout_ms: u64, user: &str, key: &str) -> Gateway {
    let rest = format!(
        r#"
[alerts]
delivery_interval_ms = 100
retry_backoff_initial_ms = 100
retry_backoff_max_ms = 400
[alerts.email]
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
tls = "none"
from = "Tollgate <alerts@gateway.test>"
operator_addresses = ["{OPERATOR_ADDRESS}"]
dashboard_url = "{DASHBOARD_URL}"
timeout_ms = {timeout_ms}
[providers.openai]
base_url = "http://127.0.0.1:{upstream}"
key_env = "TG_TEST_OPENAI_KEY"
[plans.test]
name = "Test"
tier = "pro"
[plans.test.providers]
openai = {{ calls = {CALL_LIMIT} }}
{keys}"#,
        upstream = upstream.port,
        keys = key_entry(user, "test", key),
    );
    Gateway::start(
        "",
        &rest,
        &[
            ("TG_TEST_OPENAI_KEY", "sk-upstream"),
            ("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN),
            ("RUST_LOG", "warn"),
        ],
    )
}

fn admin(gw: &Gateway, method: &str, path: &str, body: &str) -> (u16, Value) {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let response = harness::request(
        gw.admin_port,
        method,
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.as_bytes(),
    );
    let body = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (response.status, body)
}

/// The user's row, with the address given through the admin API (a bad one refused first).
fn give_address(gw: &Gateway, user: &str) {
    let (status, body) = admin(
        gw,
        "POST",
        "/api/admin/users",
        &format!(r#"{{"id":"{user}"}}"#),
    );
    assert_eq!(status, 201, "{body}");
    let path = format!("/api/admin/users/{user}/email");
    let (status, body) = admin(gw, "PUT", &path, r#"{"email":"not an address"}"#);
    assert_eq!(status, 400, "{body}");
    let (status, body) = admin(
        gw,
        "PUT",
        &path,
        &format!(r#"{{"email":"{USER_ADDRESS}"}}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["email"], USER_ADDRESS);
}

/// `CALL_LIMIT + 2` calls one after the other; answers the statuses and the slowest call.
fn calls(gw: &Gateway, key: &str) -> (Vec<u16>, Duration) {
    let auth = format!("Bearer {key}");
    let mut statuses = Vec::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..CALL_LIMIT + 2 {
        let started = Instant::now();
        let response = harness::post_json(
            gw.port,
            "/openai/v1/chat/completions",
            &[("authorization", &auth)],
            BODY,
        );
        slowest = slowest.max(started.elapsed());
        statuses.push(response.status);
    }
    (statuses, slowest)
}

/// One message per threshold, 80, 90 and 100 %, each to the user and the operator and saying
/// what the user needs to know.
fn assert_one_mail_per_threshold(mails: &[Mail]) {
    assert_eq!(mails.len(), 3, "{mails:#?}");
    let next = Utc::now().date_naive();
    let (year, month) = if next.month() == 12 {
        (next.year() + 1, 1)
    } else {
        (next.year(), next.month() + 1)
    };
    let reset = Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).unwrap();
    let mut thresholds = Vec::new();
    for mail in mails {
        let mut to = mail.rcpt_tos.clone();
        to.sort();
        assert_eq!(to, [USER_ADDRESS, OPERATOR_ADDRESS], "{mail:#?}");
        assert_eq!(mail.mail_from, "alerts@gateway.test");
        let text = mail.text();
        // Operators are blind copies: the user never sees their addresses.
        assert!(!text.contains(OPERATOR_ADDRESS), "{text}");
        for part in [
            "Limit:      openai_calls",
            "Allowed:    10 per billing period",
            &format!("Resets:     {}", reset.format("%Y-%m-%d %H:%M UTC")),
            DASHBOARD_URL,
        ] {
            assert!(text.contains(part), "{part:?} missing from:\n{text}");
        }
        let threshold = [80, 90, 100]
            .into_iter()
            .find(|t| text.contains(&format!("Threshold:  {t}% of the limit")))
            .unwrap_or_else(|| panic!("no threshold in:\n{text}"));
        let amounts = match threshold {
            80 => "used 8 of 10",
            90 => "used 9 of 10",
            _ => "limit of 10 for this billing period (10 used)",
        };
        assert!(text.contains(amounts), "{amounts:?} missing from:\n{text}");
        thresholds.push(threshold);
    }
    thresholds.sort_unstable();
    assert_eq!(thresholds, [80, 90, 100]);
}

#[test]
fn every_threshold_is_mailed_once_to_the_user_and_the_operators() {
    let upstream = openai_upstream();
    let smtp = SmtpServer::start();
    let user = unique("mail");
    let key = format!("tg_{user}");
    let gw = start(&upstream, smtp.port, 5_000, &user, &key);
    give_address(&gw, &user);
    let (statuses, _) = calls(&gw, &key);
    assert_eq!(&statuses[..CALL_LIMIT], [200; CALL_LIMIT]);
    assert_eq!(&statuses[CALL_LIMIT..], [429, 429]);
    let mails = smtp.wait_mails(3, Duration::from_secs(30));
    assert_one_mail_per_threshold(&mails);
    let states = ledger_mail_states(&gw.ledger_url(), &user);
    assert_eq!(states.len(), 3);
    assert!(states.iter().all(|(_, mailed, _)| *mailed), "{states:#?}");
    gw.stop();
}

#[test]
fn a_mail_server_that_is_down_slows_no_call_and_is_retried() {
    const SMTP_TIMEOUT_MS: u64 = 2_000;
    let upstream = openai_upstream();
    // Nobody listens on the port yet: every attempt fails until the server comes up.
    let port = harness::free_port();
    let user = unique("mail-down");
    let key = format!("tg_{user}");
    let gw = start(&upstream, port, SMTP_TIMEOUT_MS, &user, &key);
    give_address(&gw, &user);
    let (statuses, slowest) = calls(&gw, &key);
    assert_eq!(&statuses[..CALL_LIMIT], [200; CALL_LIMIT]);
    // A call that waited for the mail server would take the SMTP timeout at least.
    assert!(
        slowest < Duration::from_millis(SMTP_TIMEOUT_MS / 2),
        "the slowest call took {slowest:?}"
    );
    // An attempt times out and is recorded, to be tried again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states = ledger_mail_states(&gw.ledger_url(), &user);
        if states.iter().any(|(_, _, error)| error.is_some()) {
            assert!(states.iter().all(|(_, mailed, _)| !mailed), "{states:#?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed attempt recorded: {states:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The server comes up on that port: every alert is mailed, once.
    let smtp = SmtpServer::start_on(port);
    let mails = smtp.wait_mails(3, Duration::from_secs(60));
    assert_one_mail_per_threshold(&mails);
    let states = ledger_mail_states(&gw.ledger_url(), &user);
    assert!(
        states
            .iter()
            .all(|(_, mailed, error)| *mailed && error.is_none()),
        "{states:#?}"
    );
    gw.stop();
}
