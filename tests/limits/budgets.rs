//! Budgets that clamp instead of refuse: a call without an output cap reserves the model's
//! maximum output, which a small token budget cannot hold long before it is used. Admission
//! admits such a call with its output cap lowered to what is left, tells the client, and refuses
//! only when less than the plan's minimum output fits — and the budget is still never exceeded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use harness::{Gateway, Mock, Reply, Seen, client_key, key_entry, provider_key};
use serde_json::{Value, json};

const BUDGET: i64 = 100_000;
/// What the mock model writes when nothing caps it lower.
const ANSWER_TOKENS: u64 = 3_500;

/// Gemini generating `ANSWER_TOKENS`, or fewer when the request caps its output; its prompt
/// counts a token per four bytes of the request, as English text roughly does.
fn mock_gemini() -> Mock {
    Mock::with_handler(|seen: &Seen| {
        let request: Value = serde_json::from_slice(&seen.body).unwrap_or_default();
        let cap = request["generationConfig"]["maxOutputTokens"].as_u64();
        let output = cap.map_or(ANSWER_TOKENS, |cap| cap.min(ANSWER_TOKENS));
        let prompt = seen.body.len() as u64 / 4;
        Reply::json(
            json!({
                "candidates": [{"content": {"parts": [{"text": "…"}], "role": "model"},
                    "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": prompt,
                    "candidatesTokenCount": output,
                    "totalTokenCount": prompt + output},
                "modelVersion": "gemini-2.5-flash",
            })
            .to_string(),
        )
    })
}

fn start(mock: &Mock, on_short_budget: &str) -> Gateway {
    let rest = format!(
        "[providers.gemini]\nbase_url = \"http://127.0.0.1:{port}\"\nkey_env = \"TG_GEMINI_KEY\"\n\
         [plans.free]\nname = \"Free\"\ntier = \"free\"\non_short_budget = \"{on_short_budget}\"\n\
         [plans.free.providers]\ngemini = {{ calls = 100, tokens = {BUDGET} }}\n{key}",
        port = mock.port,
        key = key_entry("frank", "free", &client_key("frank")),
    );
    Gateway::start("", &rest, &[("TG_GEMINI_KEY", &provider_key("gemini"))])
}

/// An uncapped call with a prompt of `repeats` × 31 bytes: status, the cap header, the body.
fn call(gateway: &Gateway, repeats: usize) -> (u16, Option<String>, String) {
    let prompt = "Summarise the following notes. ".repeat(repeats);
    let body = json!({"contents": [{"role": "user", "parts": [{"text": prompt}]}]}).to_string();
    let response = harness::post_json(
        gateway.port,
        "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
        &[("x-goog-api-key", &client_key("frank"))],
        &body,
    );
    let cap = response
        .header("x-tollgate-max-output-tokens")
        .map(str::to_owned);
    (response.status, cap, response.text())
}

#[test]
fn uncapped_calls_are_clamped_to_the_budget_left_until_it_is_spent() {
    let mock = mock_gemini();
    let gateway = start(&mock, "clamp");
    let status = |gateway: &Gateway| {
        let auth = format!("Bearer {}", client_key("frank"));
        let path = "/api/subscription/status/frank";
        let response = harness::request(
            gateway.admin_port,
            "GET",
            path,
            &[("authorization", &auth)],
            b"",
        );
        assert_eq!(response.status, 200, "{}", response.text());
        serde_json::from_slice::<Value>(&response.body).unwrap()["data"]["can_use_api"].clone()
    };
    let (mut admitted, mut clamped) = (0, 0);
    loop {
        // The status page says what admission does for a small call.
        assert_eq!(status(&gateway), true, "after {admitted} calls");
        // A realistic prompt of ~5 KB.
        let (status, cap, body) = call(&gateway, 160);
        if status == 429 {
            assert!(body.contains("gemini_tokens"), "{body}");
            break;
        }
        assert_eq!(status, 200, "{body}");
        admitted += 1;
        clamped += usize::from(cap.is_some());
        assert!(admitted < 100, "never refused");
    }
    // What is left still takes a short call, as the status page said; once that is spent too,
    // the page says so.
    loop {
        let (status, cap, body) = call(&gateway, 1);
        if status != 200 {
            assert_eq!(status, 429, "{body}");
            break;
        }
        admitted += 1;
        clamped += usize::from(cap.is_some());
        assert!(admitted < 200, "never refused");
    }
    let rows = harness::wait_rows(&gateway.ledger_url(), "frank", admitted);
    // (The status page reads the ledger, which has every call's row now.)
    assert_eq!(status(&gateway), false);
    let billed: i64 = rows.iter().map(|r| r.input_tokens + r.output_tokens).sum();
    // Never over the budget, and refused only once less than a useful answer was left:
    // the last reservation needs the prompt's bound (its bytes) plus the minimum output.
    assert!(billed <= BUDGET, "{billed} billed");
    assert!(
        billed > BUDGET - 6_000,
        "refused with {} tokens left",
        BUDGET - billed
    );
    assert!(admitted >= 20, "{admitted} calls admitted");
    // Each clamped call reached the provider with the cap it was admitted with.
    let caps: Vec<u64> = mock
        .seen()
        .iter()
        .filter_map(|s| {
            let request: Value = serde_json::from_slice(&s.body).unwrap();
            request["generationConfig"]["maxOutputTokens"].as_u64()
        })
        .collect();
    assert_eq!(caps.len(), clamped, "{caps:?}");
    assert!(
        clamped > 0 && caps.iter().all(|&cap| cap >= 256),
        "{caps:?}"
    );
    gateway.stop();
}

#[test]
fn a_plan_that_refuses_refuses_the_uncapped_call_that_does_not_fit() {
    let mock = mock_gemini();
    let gateway = start(&mock, "refuse");
    let mut admitted = 0;
    while call(&gateway, 160).0 == 200 {
        admitted += 1;
    }
    // The reservation of an uncapped call (its bytes and the model's 65,535 output tokens) fits
    // the 100,000-token budget only while less than ~30,000 tokens are used.
    assert!((1..10).contains(&admitted), "{admitted} calls admitted");
    assert!(
        mock.seen()
            .iter()
            .all(|s| !String::from_utf8_lossy(&s.body).contains("maxOutputTokens"))
    );
    gateway.stop();
}
