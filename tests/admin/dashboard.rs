//! The dashboard in a real browser: headless Chromium, driven over WebDriver, against the real
//! binary with real traffic through a mock OpenAI. A user signs in with their own key and sees
//! the numbers the API answers (a refused call among the recent calls with its reason), marks an
//! alert read and cannot reach the operators' view; an operator signs in with the admin token,
//! sees every user's spend and the period's refused calls from the ledger, changes a plan (which puts
//! the user over their new cost cap, and the user's view says so) and issues a key that is
//! shown once. With `TOLLGATE_SCREENSHOTS=<dir>` both views are saved there at desktop and
//! phone width (`docs/img` holds the ones in the docs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::{Browser, Gateway, Mock, Reply, Seen, request};
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "admin-token-dashboard-e2e";
const UPSTREAM_KEY: &str = "sk-upstream-dashboard";
const DESKTOP: u32 = 1280;
const PHONE: u32 = 390;
/// Successful calls and the one the upstream fails.
const CALLS_OK: usize = 8;

/// An OpenAI chat completion using the request's length as prompt tokens and its
/// `max_tokens` as completion tokens; a request whose prompt says "fail" gets a 500.
fn openai_upstream() -> Mock {
    Mock::with_handler(|seen: &Seen| {
        if seen.contains("fail") {
            return Reply::new(500, "application/json", r#"{"error":{"message":"boom"}}"#);
        }
        let request: Value = serde_json::from_slice(&seen.body).unwrap_or_default();
        let model = request["model"].as_str().unwrap_or("gpt-4o").to_owned();
        let completion = request["max_tokens"].as_u64().unwrap_or(0);
        let prompt = seen.body.len() as u64;
        Reply::json(format!(
            r#"{{"id":"c1","object":"chat.completion","model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"Hello"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}}}"#,
            prompt + completion
        ))
    })
}

/// Plan `pro` allows 10 OpenAI calls: the 8 that succeed cross its 80 % alert (a call the
/// upstream fails counts in the ledger's total, not against the limit); `small` has a cost cap
/// the calls already exceed, and 5 calls.
fn start(upstream: &Mock) -> Gateway {
    let rest = format!(
        r#"
[alerts]
thresholds = [80, 90, 100]
[providers.openai]
base_url = "http://127.0.0.1:{port}"
key_env = "TG_TEST_OPENAI_KEY"
[plans.pro]
name = "Pro"
tier = "pro"
price_monthly = "20"
cost_cap = "5.00"
[plans.pro.providers]
openai = {{ calls = 10, tokens = 100000 }}
[plans.small]
name = "Small"
tier = "basic"
price_monthly = "5"
cost_cap = "0.0024"
[plans.small.providers]
openai = {{ calls = 5, tokens = 100000 }}
"#,
        port = upstream.port,
    );
    Gateway::start(
        "",
        &rest,
        &[
            ("TG_TEST_OPENAI_KEY", UPSTREAM_KEY),
            ("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN),
            ("RUST_LOG", "warn"),
        ],
    )
}

/// An admin API call with `token`; status and JSON body.
fn admin(gw: &Gateway, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut headers = vec![("authorization", auth.as_str())];
    if !body.is_empty() {
        headers.push(("content-type", "application/json"));
    }
    let r = request(gw.admin_port, method, path, &headers, body.as_bytes());
    let json = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, json)
}

fn get(gw: &Gateway, path: &str, token: &str) -> Value {
    let (status, body) = admin(gw, "GET", path, token, None);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

fn chat(gw: &Gateway, key: &str, model: &str, prompt: &str) -> u16 {
    let auth = format!("Bearer {key}");
    let body = json!({"model": model, "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 50});
    harness::post_json(
        gw.port,
        "/openai/v1/chat/completions",
        &[("authorization", &auth)],
        &body.to_string(),
    )
    .status
}

/// Waits until `check` holds of the API, polling.
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Dollars as the page shows them in en-US: to the cent with thousands separators, amounts
/// under a cent with four decimals.
fn money(dollars: f64) -> String {
    if dollars == 0.0 || dollars.abs() >= 0.01 {
        let cents = (dollars * 100.0).round() as i64;
        let whole = (cents / 100).to_string();
        let mut grouped = String::new();
        for (i, c) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        format!("${grouped}.{:02}", cents % 100)
    } else if dollars.abs() >= 0.0001 {
        format!("${dollars:.4}")
    } else {
        "<$0.0001".to_owned()
    }
}

fn screenshots_dir() -> Option<PathBuf> {
    std::env::var_os("TOLLGATE_SCREENSHOTS")
        .filter(|d| !d.is_empty())
        .map(|d| {
            let dir = PathBuf::from(d);
            let dir = if dir.is_absolute() {
                dir
            } else {
                // Relative to the repository, as `TOLLGATE_SCREENSHOTS=docs/img` means it.
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join(dir)
            };
            std::fs::create_dir_all(&dir).unwrap();
            dir
        })
}

/// Saves the page at desktop and phone width as `<name>-desktop.png` and `<name>-phone.png`.
fn screenshots(browser: &Browser, name: &str) {
    let Some(dir) = screenshots_dir() else {
        return;
    };
    for (width, suffix) in [(DESKTOP, "desktop"), (PHONE, "phone")] {
        browser.resize(width, 900);
        std::thread::sleep(Duration::from_millis(300));
        browser.screenshot(&dir.join(format!("{name}-{suffix}.png")), width);
    }
    browser.resize(DESKTOP, 900);
}

/// The page's `data-value` of `selector` (the number as the API sent it).
fn shown_value(browser: &Browser, selector: &str) -> Value {
    browser.js(
        "const e = document.querySelector(arguments[0]); \
         return e ? (e.querySelector('[data-value]') || e).dataset.value : null;",
        &[json!(selector)],
    )
}

fn signed_in(browser: &Browser, gw: &Gateway, token: &str) {
    browser.goto(&format!("http://127.0.0.1:{}/dashboard", gw.admin_port));
    browser.wait_for("document.getElementById('token')", "the sign-in form");
    browser.type_into("#token", token);
    browser.click("#sign-in-form button[type=submit]");
}

#[test]
fn the_dashboard_shows_what_the_api_answers_to_users_and_operators() {
    let Some(browser) = Browser::start(DESKTOP, 900) else {
        return;
    };
    let upstream = openai_upstream();
    let gw = start(&upstream);

    // alice is created on Pro and given a key, as an operator would, and makes real calls.
    let (status, body) = admin(
        &gw,
        "POST",
        "/api/admin/users",
        ADMIN_TOKEN,
        Some(json!({"id": "alice", "display_name": "Alice", "plan_id": "pro"})),
    );
    assert_eq!(status, 201, "{body}");
    let (status, issued) = admin(
        &gw,
        "POST",
        "/api/admin/users/alice/keys",
        ADMIN_TOKEN,
        Some(json!({"name": "laptop"})),
    );
    assert_eq!(status, 201, "{issued}");
    let key = issued["data"]["key"].as_str().unwrap().to_owned();
    for i in 0..CALLS_OK {
        let model = if i < 4 { "gpt-4o" } else { "gpt-4o-mini" };
        assert_eq!(chat(&gw, &key, model, "hello there"), 200);
    }
    assert_eq!(chat(&gw, &key, "gpt-4o", "please fail"), 500);
    // A model without a price is refused before anything is sent: a row of its own.
    assert_eq!(chat(&gw, &key, "gpt-99", "hello there"), 400);
    eventually("the calls in the ledger and the 80 % alert", || {
        let logs = get(
            &gw,
            "/api/subscription/usage-logs?user_id=alice",
            ADMIN_TOKEN,
        );
        let alerts = get(&gw, "/api/subscription/alerts/alice", ADMIN_TOKEN);
        logs["total_count"] == CALLS_OK + 2 && alerts["data"]["unread_count"].as_u64() >= Some(1)
    });

    // ---- alice, with her own key ----
    signed_in(&browser, &gw, &key);
    browser.wait_for(
        "document.querySelector('#sum-cost [data-value]') && \
         document.querySelector('#unread-count').dataset.value !== '0' && \
         document.querySelector('#logs-page').dataset.value",
        "alice's usage",
    );
    let dash = get(&gw, "/api/subscription/dashboard/alice", &key);
    let usage = &dash["data"]["current_usage"];
    assert_eq!(
        shown_value(&browser, "#sum-calls"),
        json!(usage["total_calls"].to_string())
    );
    assert_eq!(usage["total_calls"], CALLS_OK + 1);
    assert_eq!(browser.text("#sum-calls .value"), "9");
    let cost = usage["total_cost"].as_f64().unwrap();
    assert!(cost > 0.0);
    assert_eq!(
        shown_value(&browser, "#sum-cost"),
        json!(usage["total_cost"].to_string())
    );
    assert_eq!(browser.text("#sum-cost .value"), money(cost));
    // A gauge for each limit the plan sets, at the API's percentage: 9 of 10 calls is past the
    // 80 % threshold and coloured so.
    for (limit, pct_key) in [
        ("openai_calls", "openai_calls"),
        ("openai_tokens", "openai_tokens"),
        ("monthly_cost", "cost"),
    ] {
        let shown = browser.js(
            "const g = document.querySelector(`.gauge[data-limit=\"${arguments[0]}\"]`); \
             return g ? [g.dataset.pct, g.className] : null;",
            &[json!(limit)],
        );
        let on_screen: f64 = shown[0].as_str().unwrap_or_default().parse().unwrap();
        assert_eq!(
            on_screen,
            usage["usage_percentages"][pct_key].as_f64().unwrap(),
            "{limit}: {shown}"
        );
        if limit == "openai_calls" {
            // Past the 80 % threshold, and coloured so.
            assert!(!shown[1].as_str().unwrap().contains("level-ok"), "{shown}");
        }
    }
    assert!(
        browser.js("return document.getElementById('cap-banner').hidden;", &[]) == json!(true),
        "nothing is exceeded yet"
    );
    // Providers by their names, Exa never "metaphor"; models by cost.
    let models = get(&gw, "/api/subscription/usage/alice/models", &key);
    assert_eq!(models["data"]["models"][0]["model"], "gpt-4o");
    let by_model = browser.text("#by-model");
    assert!(by_model.contains("gpt-4o-mini"), "{by_model}\n{models}");
    assert!(browser.text("#by-provider").contains("OpenAI"));
    let options = browser.text("#log-provider");
    assert!(
        options.contains("Exa") && !options.contains("metaphor"),
        "{options}"
    );

    // Recent calls: all of them, then the failed one alone, as the API counts them.
    let logs = get(&gw, "/api/subscription/usage-logs?user_id=alice", &key);
    assert_eq!(
        shown_value(&browser, "#logs-page"),
        json!(logs["total_count"].to_string())
    );
    browser.choose("#log-status", "failed");
    browser.wait_for(
        "document.querySelector('#logs-page').dataset.value === '2'",
        "the failed and the refused call",
    );
    assert!(browser.text("#logs").contains("500"));
    // The refused call alone, with its reason.
    browser.choose("#log-status", "refused");
    browser.wait_for(
        "document.querySelector('#logs-page').dataset.value === '1'",
        "the refused call alone",
    );
    let refused = browser.text("#logs");
    assert!(
        refused.contains("400 refused: model not priced"),
        "{refused}"
    );

    // Marking the alert read lowers the unread count, on the page and in the API.
    assert!(browser.text("#alerts").contains("OpenAI"));
    let unread = get(&gw, "/api/subscription/alerts/alice", &key)["data"]["unread_count"]
        .as_u64()
        .unwrap();
    assert_eq!(
        shown_value(&browser, "#unread-count"),
        json!(unread.to_string())
    );
    browser.click("#alerts .mark-read");
    browser.wait_for(
        &format!(
            "document.querySelector('#unread-count').dataset.value === '{}'",
            unread - 1
        ),
        "the unread count to drop",
    );
    let alerts = get(&gw, "/api/subscription/alerts/alice", &key);
    assert_eq!(alerts["data"]["unread_count"], unread - 1);

    // The recommendations the API gives are on the page, the first one by its title.
    let advice = get(&gw, "/api/subscription/recommendations/alice", &key);
    let first = advice["data"]["recommendations"][0]["title"]
        .as_str()
        .expect("a recommendation for a user past 80 % of a limit")
        .to_owned();
    browser.wait_for(
        "!document.getElementById('recommendations').hidden",
        "the recommendations",
    );
    let shown = browser.text("#recommendations");
    assert!(shown.contains(&first), "{first:?} not in {shown:?}");

    // The session survives a reload of the page.
    browser.goto(&format!("http://127.0.0.1:{}/dashboard", gw.admin_port));
    browser.wait_for(
        "document.querySelector('#sum-cost [data-value]')",
        "the session after a reload",
    );

    // A user key cannot reach the operators' view: no way to it on the page, the page refuses
    // to show it, and the API refuses the data.
    assert_eq!(
        browser.js(
            "return document.getElementById('nav-operator').hidden;",
            &[]
        ),
        json!(true)
    );
    browser.goto(&format!(
        "http://127.0.0.1:{}/dashboard#operator",
        gw.admin_port
    ));
    browser.wait_for(
        "!document.getElementById('error').hidden",
        "the refusal of the operator view",
    );
    assert!(browser.text("#error").contains("admin token"));
    assert_eq!(
        browser.js(
            "return document.getElementById('operator-view').hidden;",
            &[]
        ),
        json!(true)
    );
    assert_eq!(admin(&gw, "GET", "/api/admin/overview", &key, None).0, 403);

    // Signing out forgets the key.
    browser.click("#sign-out");
    assert_eq!(browser.js("return sessionStorage.length;", &[]), json!(0));
    assert_eq!(
        browser.js("return document.getElementById('sign-in').hidden;", &[]),
        json!(false)
    );

    // ---- an operator, with the admin token ----
    signed_in(&browser, &gw, ADMIN_TOKEN);
    browser.wait_for(
        "document.querySelector('#op-users [data-value]') && \
         document.querySelector('#op-config').dataset.value",
        "the operator view",
    );
    let overview = get(&gw, "/api/admin/overview", ADMIN_TOKEN);
    let alice = &overview["data"]["users"][0];
    assert_eq!(alice["user_id"], "alice");
    assert_eq!(
        shown_value(&browser, "#op-users tbody tr"),
        json!(alice["cost"].to_string())
    );
    assert!(browser.text("#op-users").contains(&money(cost)));
    let config = get(&gw, "/api/admin/config", ADMIN_TOKEN);
    assert_eq!(
        browser.js(
            "return document.getElementById('op-config').dataset.value;",
            &[]
        ),
        config["data"]["version"]
    );
    assert!(browser.text("#op-providers").contains("OpenAI"));
    // Refusals from the ledger, as the API counts them: the unpriced call, through OpenAI.
    assert_eq!(overview["data"]["refused_calls"], 1);
    assert_eq!(
        browser.js(
            "return document.getElementById('op-refusals').dataset.value;",
            &[]
        ),
        json!("1")
    );
    assert!(
        browser.text("#op-refusals").contains("1 model not priced"),
        "{}",
        browser.text("#op-refusals")
    );
    let openai_refused = browser.js(
        "const row = [...document.querySelectorAll('#op-providers tbody tr')] \
           .find((r) => r.textContent.startsWith('OpenAI')); \
         return row ? row.lastElementChild.querySelector('[data-value]').dataset.value : null;",
        &[],
    );
    assert_eq!(openai_refused, json!("1"));
    assert!(browser.text("#op-models").contains("gpt-4o"));
    // Search narrows the users.
    browser.type_into("#op-search", "nobody-like-this");
    browser.wait_for(
        "!document.querySelector('#op-users tbody [data-value]')",
        "the search to hide alice",
    );
    browser.js(
        "const s = document.getElementById('op-search'); s.value = ''; \
         s.dispatchEvent(new Event('input'));",
        &[],
    );
    screenshots(&browser, "dashboard-operator");

    // An issued key is shown once: on the page now, and nowhere after the view changes.
    browser.type_into("#op-key-name", "phone");
    browser.click("#op-issue button[type=submit]");
    browser.wait_for("document.getElementById('new-key-value')", "the new key");
    let new_key = browser.text("#new-key-value");
    assert!(new_key.starts_with("tg_"), "{new_key}");
    let who = get(&gw, "/api/session", &new_key);
    assert_eq!(who["data"]["user_id"], "alice");
    let keys = get(&gw, "/api/admin/users/alice/keys", ADMIN_TOKEN);
    assert_eq!(keys["data"].as_array().unwrap().len(), 2);
    browser.goto(&format!("http://127.0.0.1:{}/dashboard", gw.admin_port));
    browser.wait_for(
        "document.querySelector('#op-users [data-value]')",
        "the operator view again",
    );
    let page = browser.js("return document.documentElement.outerHTML;", &[]);
    assert!(!page.as_str().unwrap().contains(&new_key));

    // Moving alice to Small puts her past its cost cap and call limit.
    browser.choose("#op-user", "alice");
    browser.choose("#op-plan", "small");
    browser.click("#op-set-plan");
    eventually("alice on Small", || {
        get(&gw, "/api/admin/users/alice", ADMIN_TOKEN)["data"]["user"]["plan_id"] == "small"
    });

    // ---- alice's view, opened by the operator: the exceeded cap is unmistakable ----
    browser.wait_for(
        "document.querySelector('#op-users tbody tr') && \
         document.querySelector('#op-users tbody tr').textContent.includes('Small')",
        "the users on their new plans",
    );
    browser.click("#op-users tbody button");
    browser.wait_for(
        "!document.getElementById('cap-banner').hidden",
        "the exceeded-cap banner",
    );
    let dash = get(&gw, "/api/subscription/dashboard/alice", ADMIN_TOKEN);
    let pct = dash["data"]["current_usage"]["usage_percentages"]["cost"]
        .as_f64()
        .unwrap();
    assert!(pct > 100.0, "{pct}");
    let banner = browser.text("#cap-banner");
    let over = cost - 0.0024;
    assert!(banner.contains("Cost cap"), "{banner}");
    assert!(
        banner.contains(&format!("exceeded by {}", money(over))),
        "{banner}"
    );
    assert!(banner.contains("OpenAI"), "{banner}");
    assert!(banner.contains("gpt-4o"), "{banner}");
    let gauge = browser.js(
        "return document.querySelector('.gauge[data-limit=\"monthly_cost\"]').className;",
        &[],
    );
    assert!(gauge.as_str().unwrap().contains("level-100"), "{gauge}");
    screenshots(&browser, "dashboard-user");

    gw.stop();
}
