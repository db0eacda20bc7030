//! The configuration changed while the real binary serves traffic: a limit raised through the
//! admin API applies to the very next call with nothing reset; a broken edit is refused with
//! its `file:line` while the old configuration keeps serving; SIGHUP reloads; the file watcher
//! applies an edited pricing file; and `/readyz` follows the database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{Gateway, Mock, Reply, key_entry, request, wait_rows};
use tollgate_ledger::test_database::TestDatabase;

const ADMIN_TOKEN: &str = "admin-token-live-config";

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// An OpenAI-speaking upstream answering every chat completion with 29 tokens of usage.
fn upstream() -> Mock {
    Mock::with_handler(|_| {
        Reply::json(
            r#"{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29}}"#,
        )
    })
}

/// The configuration after the harness's `[pricing]`: the mock as OpenAI, plan `test` with
/// `openai_limits`, and `user`'s key on it.
fn plan_config(upstream: u16, user: &str, key: &str, openai_limits: &str) -> String {
    format!(
        r#"
[providers.openai]
base_url = "http://127.0.0.1:{upstream}"
key_env = "TG_TEST_OPENAI_KEY"
[plans.test]
name = "Test"
tier = "pro"
[plans.test.providers]
openai = {{ {openai_limits} }}
{keys}"#,
        keys = key_entry(user, "test", key),
    )
}

const ENV: [(&str, &str); 2] = [
    ("TG_TEST_OPENAI_KEY", "sk-upstream"),
    ("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN),
];

fn start(upstream: u16, user: &str, key: &str, openai_limits: &str) -> Gateway {
    Gateway::start(
        "threads = 2",
        &plan_config(upstream, user, key, openai_limits),
        &ENV,
    )
}

fn call(port: u16, key: &str) -> harness::Response {
    let auth = format!("Bearer {key}");
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":50}"#;
    harness::post_json(
        port,
        "/openai/v1/chat/completions",
        &[("authorization", &auth)],
        body,
    )
}

fn admin(gw: &Gateway, method: &str, path: &str) -> harness::Response {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    request(
        gw.admin_port,
        method,
        path,
        &[("authorization", &auth)],
        b"",
    )
}

fn config_status(gw: &Gateway) -> serde_json::Value {
    let response = admin(gw, "GET", "/api/admin/config");
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["data"].clone()
}

/// Waits until the configuration in force is no longer `version`; returns its status.
fn wait_new_version(gw: &Gateway, version: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = config_status(gw);
        if status["version"] != version {
            return status;
        }
        assert!(Instant::now() < deadline, "no reload: {status:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A call of the traffic thread: when it started, its status and its body.
type Logged = (Instant, u16, serde_json::Value);

/// A thread calling the gateway one call after another until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Logged>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Traffic {
    fn start(port: u16, key: &str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let log: Arc<Mutex<Vec<Logged>>> = Arc::default();
        let (stopped, calls, key) = (Arc::clone(&stop), Arc::clone(&log), key.to_owned());
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                let at = Instant::now();
                let response = call(port, &key);
                let body = serde_json::from_slice(&response.body).unwrap_or_default();
                calls.lock().unwrap().push((at, response.status, body));
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Traffic { stop, log, thread }
    }

    fn calls(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the calls so far.
    fn wait(&self, what: &str, done: impl Fn(&[Logged]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(&self.calls()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(self) -> Vec<Logged> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
        self.log.lock().unwrap().clone()
    }
}

fn count(calls: &[Logged], status: u16) -> usize {
    calls.iter().filter(|c| c.1 == status).count()
}

#[test]
fn a_limit_raised_under_traffic_applies_to_the_next_call_and_nothing_is_reset() {
    let mock = upstream();
    let user = unique("live-raise");
    let key = format!("tg_{user}");
    let gw = start(mock.port, &user, &key, "calls = 5");
    let traffic = Traffic::start(gw.port, &key);
    traffic.wait("the limit of 5 reached", |c| count(c, 429) >= 3);

    gw.edit_config(|text| text.replace("calls = 5", "calls = 8"));
    let reload = admin(&gw, "POST", "/api/admin/reload");
    let reloaded = Instant::now();
    assert_eq!(reload.status, 200, "{}", reload.text());
    assert_eq!(reload.json()["data"]["trigger"], "admin");
    traffic.wait("the raised limit reached", |c| {
        c.iter()
            .any(|(at, status, _)| *at > reloaded && *status == 429)
    });
    let calls = traffic.stop();

    let statuses: Vec<u16> = calls.iter().map(|c| c.1).collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "only answers and refusals: {statuses:?}"
    );
    // The 5 calls used before the reload still count: 3 more, not 8.
    assert_eq!(count(&calls, 200), 8, "{statuses:?}");
    let next = calls.iter().find(|(at, ..)| *at > reloaded).unwrap();
    assert_eq!(next.1, 200, "the first call after the reload: {statuses:?}");
    let (_, _, refusal) = calls.last().unwrap();
    assert_eq!(refusal["tollgate"]["limit_value"], 8, "{refusal:#}");
    assert_eq!(refusal["tollgate"]["used"], 8, "{refusal:#}");
    assert_eq!(wait_rows(&gw.ledger_url(), &user, 8).len(), 8);
    gw.stop();
}

#[test]
fn a_broken_edit_is_refused_with_its_line_while_the_old_configuration_serves() {
    let mock = upstream();
    let user = unique("live-broken");
    let key = format!("tg_{user}");
    let gw = start(mock.port, &user, &key, "calls = 1000");
    let before = config_status(&gw);
    let traffic = Traffic::start(gw.port, &key);
    traffic.wait("traffic", |c| count(c, 200) >= 3);

    gw.edit_config(|text| text.replace("calls = 1000", "calls = \"lots\""));
    let text = std::fs::read_to_string(gw.config_path()).unwrap();
    let line = 1 + text.lines().position(|l| l.contains("\"lots\"")).unwrap();
    let refused = admin(&gw, "POST", "/api/admin/reload");
    assert_eq!(refused.status, 422, "{}", refused.text());
    let body = refused.json();
    assert_eq!(body["code"], "invalid_config", "{body:#}");
    let at = format!("{}:{line}: error:", gw.config_path().display());
    let problems = body["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().starts_with(&at)),
        "{at} in {body:#}"
    );
    assert!(body["detail"].as_str().unwrap().contains(&at), "{body:#}");

    // Calls go on under the configuration in force, which says it refused the edit.
    let seen = traffic.calls().len();
    traffic.wait("traffic after the refusal", |c| c.len() >= seen + 5);
    let status = config_status(&gw);
    assert_eq!(status["version"], before["version"], "{status:#}");
    assert_eq!(status["last_refused"]["problems"], body["problems"]);
    let refusals = r#"tollgate_config_reloads_total{result="error"}"#;
    assert_eq!(gw.metric(refusals), Some(1.0));
    assert_eq!(
        gw.metric(r#"tollgate_config_reloads_total{result="ok"}"#),
        Some(0.0)
    );
    let info = format!(
        r#"tollgate_config_info{{version="{}",loaded_at="{}"}}"#,
        before["version"].as_str().unwrap(),
        before["loaded_at"].as_str().unwrap()
    );
    assert_eq!(gw.metric(&info), Some(1.0));
    // The watcher saw the same edit and does not try it again.
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(gw.metric(refusals), Some(1.0));
    let calls = traffic.stop();
    let statuses: Vec<u16> = calls.iter().map(|c| c.1).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    gw.stop();
}

#[test]
fn sighup_reloads_the_configuration() {
    let mock = upstream();
    let user = unique("live-hup");
    let key = format!("tg_{user}");
    let gw = start(mock.port, &user, &key, "calls = 1");
    let before = config_status(&gw);
    assert_eq!(call(gw.port, &key).status, 200);
    assert_eq!(call(gw.port, &key).status, 429);

    gw.edit_config(|text| text.replace("calls = 1", "calls = 3"));
    gw.signal("HUP");
    // Sent at once after the edit, the signal's reload comes before the watcher's could.
    let status = wait_new_version(&gw, before["version"].as_str().unwrap());
    assert_eq!(status["trigger"], "sighup", "{status:#}");
    assert_eq!(status["pending_restart"], serde_json::json!([]));
    let statuses: Vec<u16> = (0..3).map(|_| call(gw.port, &key).status).collect();
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(
        gw.metric(r#"tollgate_config_reloads_total{result="ok"}"#),
        Some(1.0)
    );
    gw.stop();
}

#[test]
fn the_watcher_applies_an_edited_pricing_file_to_the_calls_after_it() {
    let mock = upstream();
    let user = unique("live-watch");
    let key = format!("tg_{user}");
    let gw = start(mock.port, &user, &key, "calls = 100");
    assert_eq!(call(gw.port, &key).status, 200);

    // The gateway moves to a pricing directory of its own: an edit of gateway.toml, seen by
    // the watcher.
    let repo_pricing = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pricing");
    let pricing = gw.dir.path().join("pricing");
    std::fs::create_dir(&pricing).unwrap();
    for entry in std::fs::read_dir(&repo_pricing).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), pricing.join(entry.file_name())).unwrap();
    }
    let before = config_status(&gw);
    gw.edit_config(|text| {
        text.replace(
            &format!("dir = \"{}\"", repo_pricing.display()),
            &format!("dir = \"{}\"", pricing.display()),
        )
    });
    let moved = wait_new_version(&gw, before["version"].as_str().unwrap());
    assert_eq!(moved["trigger"], "watch", "{moved:#}");

    // Then the price file is edited in place.
    let openai = pricing.join("openai.toml");
    let text = std::fs::read_to_string(&openai).unwrap();
    std::fs::write(&openai, text.replace("2026-11-28", "2027-01-01")).unwrap();
    let edited = wait_new_version(&gw, moved["version"].as_str().unwrap());
    assert_eq!(edited["trigger"], "watch", "{edited:#}");
    assert_eq!(call(gw.port, &key).status, 200);

    let rows = wait_rows(&gw.ledger_url(), &user, 2);
    // Newest first.
    assert_eq!(rows[1].price_version, "openai/gpt-4o@2026-11-28");
    assert_eq!(rows[0].price_version, "openai/gpt-4o@2027-01-01");
    assert_eq!(
        gw.metric(r#"tollgate_config_reloads_total{result="ok"}"#),
        Some(2.0)
    );
    gw.stop();
}

/// Runs `sql` on the PostgreSQL server the test databases are created on.
fn on_server(sql: &str) {
    use sqlx::Connection;
    let server = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut connection = sqlx::PgConnection::connect(&server).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut connection).await.unwrap();
        connection.close().await.unwrap();
    });
}

/// Waits until `/readyz` answers `status`; returns its body.
fn wait_ready(gw: &Gateway, status: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = request(gw.admin_port, "GET", "/readyz", &[], b"");
        if response.status == status {
            return response.json();
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never answered {status}: {} {}",
            response.status,
            response.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn readyz_follows_the_database() {
    let mock = upstream();
    let user = unique("live-ready");
    let key = format!("tg_{user}");
    let database = TestDatabase::create("readyz");
    let name = database.url.rsplit('/').next().unwrap().to_owned();
    let gw = Gateway::start_with_database(
        "threads = 2",
        &database.url,
        "",
        &plan_config(mock.port, &user, &key, "calls = 100"),
        &ENV,
    );
    let alive = request(gw.admin_port, "GET", "/healthz", &[], b"");
    assert_eq!(alive.status, 200);
    let ready = wait_ready(&gw, 200);
    assert_eq!(ready["ready"], true, "{ready:#}");

    // The database stops taking connections and drops the gateway's.
    on_server(&format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ));
    let unready = wait_ready(&gw, 503);
    assert_eq!(unready["ready"], false);
    let reasons = unready["reasons"].to_string();
    assert!(reasons.contains("database unreachable"), "{unready:#}");
    // Alive all the same: nothing to restart.
    assert_eq!(
        request(gw.admin_port, "GET", "/healthz", &[], b"").status,
        200
    );

    on_server(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"));
    let ready = wait_ready(&gw, 200);
    assert_eq!(ready["ready"], true, "{ready:#}");
    gw.stop();
}

#[test]
fn a_limit_lowered_below_use_refuses_the_next_call_and_a_provider_turned_off_is_not_found() {
    let mock = upstream();
    let user = unique("live-rules");
    let key = format!("tg_{user}");
    let gw = start(mock.port, &user, &key, "calls = 10");
    for _ in 0..3 {
        assert_eq!(call(gw.port, &key).status, 200);
    }

    // Lowered below the 3 calls used: refused, and the use is still 3.
    gw.edit_config(|text| text.replace("calls = 10", "calls = 2"));
    assert_eq!(admin(&gw, "POST", "/api/admin/reload").status, 200);
    let refused = call(gw.port, &key);
    assert_eq!(refused.status, 429, "{}", refused.text());
    let details = &refused.json()["tollgate"];
    assert_eq!(
        (details["used"].as_u64(), details["limit_value"].as_u64()),
        (Some(3), Some(2)),
        "{details:#}"
    );
    // Raised again, the 3 calls still count: 2 more.
    gw.edit_config(|text| text.replace("calls = 2", "calls = 5"));
    assert_eq!(admin(&gw, "POST", "/api/admin/reload").status, 200);
    let statuses: Vec<u16> = (0..3).map(|_| call(gw.port, &key).status).collect();
    assert_eq!(statuses, [200, 200, 429]);

    // The provider turned off: 404 in its own shape, and nothing reaches it.
    let reached = mock.seen().len();
    gw.edit_config(|text| {
        text.replace(
            "key_env = \"TG_TEST_OPENAI_KEY\"",
            "key_env = \"TG_TEST_OPENAI_KEY\"\nenabled = false",
        )
    });
    let reload = admin(&gw, "POST", "/api/admin/reload");
    assert_eq!(reload.status, 200, "{}", reload.text());
    let off = call(gw.port, &key);
    assert_eq!(off.status, 404, "{}", off.text());
    assert_eq!(
        off.json()["error"]["code"],
        "unknown_route",
        "{}",
        off.text()
    );
    assert_eq!(mock.seen().len(), reached);

    // A setting read only at start: reported, not applied, and the rest still reloads.
    gw.edit_config(|text| {
        text.replace("threads = 2", "threads = 3")
            .replace("enabled = false", "enabled = true")
    });
    let reload = admin(&gw, "POST", "/api/admin/reload");
    assert_eq!(reload.status, 200, "{}", reload.text());
    let status = &reload.json()["data"];
    assert_eq!(
        status["pending_restart"],
        serde_json::json!(["proxy.threads"])
    );
    assert_eq!(
        call(gw.port, &key).status,
        429,
        "openai is back, its limit reached"
    );
    gw.stop();
}
