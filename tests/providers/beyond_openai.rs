//! The real binary in front of every provider beyond OpenAI, each pointed at a mock that answers
//! with a recorded response in that provider's wire format: the client receives exactly the bytes
//! the provider sent, the provider sees its real key in its own slot and never the Tollgate key,
//! and the ledger records the provider's own counts priced from `pricing/*.toml`.
//!
//! One gateway serves every test of this file; each test uses a user of its own, so the ledger
//! rows of one test never mix with another's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

use harness::{
    Gateway, Mock, Reply, Response, UsageLog, assert_key_swapped, client_key, fixture, provider_key,
};

const PROVIDERS: [&str; 9] = [
    "openai",
    "anthropic",
    "gemini",
    "mistral",
    "tavily",
    "serper",
    "exa",
    "firecrawl",
    "stability",
];

/// The users of this file; each has a key `tg_<user>_key_0123456789`.
const USERS: [&str; 10] = [
    "anthropic-user",
    "gemini-user",
    "mistral-user",
    "tavily-user",
    "serper-user",
    "exa-user",
    "firecrawl-user",
    "firecrawl-jobs-user",
    "stability-user",
    "gzip-user",
];

struct Env {
    gateway: Mutex<Gateway>,
    mocks: HashMap<&'static str, Mock>,
    ledger_url: String,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let mocks: HashMap<&'static str, Mock> =
            PROVIDERS.iter().map(|p| (*p, Mock::start())).collect();
        let mut rest = String::new();
        let mut env_vars = Vec::new();
        for provider in PROVIDERS {
            rest.push_str(&format!(
                "[providers.{provider}]\nbase_url = \"http://127.0.0.1:{}\"\nkey_env = \"TG_E2E_{}_KEY\"\n",
                mocks[provider].port,
                provider.to_ascii_uppercase(),
            ));
            env_vars.push((
                format!("TG_E2E_{}_KEY", provider.to_ascii_uppercase()),
                provider_key(provider),
            ));
        }
        rest.push_str("[plans.all]\nname = \"All\"\ntier = \"pro\"\n[plans.all.providers]\n");
        for provider in PROVIDERS {
            rest.push_str(&format!("{provider} = {{ calls = 100 }}\n"));
        }
        for user in USERS {
            rest.push_str(&harness::key_entry(user, "all", &client_key(user)));
        }
        let env_refs: Vec<(&str, &str)> = env_vars
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let gateway = Gateway::start("", &rest, &env_refs);
        let ledger_url = gateway.ledger_url();
        Env {
            gateway: Mutex::new(gateway),
            mocks,
            ledger_url,
        }
    })
}

fn port() -> u16 {
    env().gateway.lock().unwrap().port
}

/// The client received exactly the bytes the mock sent.
fn assert_passed_through(response: &Response, sent: &[u8]) {
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        response.body == sent,
        "the body changed on the way:\n{}\n---\n{}",
        response.text(),
        String::from_utf8_lossy(sent)
    );
}

/// The usage event of the call whose output token count is `output_tokens`.
fn row_with_output(rows: &[UsageLog], output_tokens: i64) -> &UsageLog {
    rows.iter()
        .find(|r| r.output_tokens == output_tokens)
        .unwrap_or_else(|| panic!("no row with {output_tokens} output tokens in {rows:#?}"))
}

#[test]
fn anthropic_messages_json_and_stream() {
    let user = "anthropic-user";
    let key = client_key(user);
    let mock = &env().mocks["anthropic"];
    let json = fixture("anthropic-messages.json");
    let sse = fixture("anthropic-messages-stream.sse");
    mock.script("/v1/messages", Reply::json(json.clone()));
    let headers = [
        ("x-api-key", key.as_str()),
        ("anthropic-version", "2023-06-01"),
    ];
    let response = harness::post_json(
        port(),
        "/anthropic/v1/messages",
        &headers,
        r#"{"model":"claude-sonnet-4-20250514","max_tokens":1024,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_passed_through(&response, &json);

    mock.script("/v1/messages", Reply::sse(sse.clone(), 29));
    let response = harness::post_json(
        port(),
        "/anthropic/v1/messages",
        &headers,
        r#"{"model":"claude-opus-4-1","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_passed_through(&response, &sse);

    let seen = mock.seen_at("/v1/messages");
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_key_swapped(s, "anthropic", user, "x-api-key", "");
        assert_eq!(s.header("anthropic-version"), Some("2023-06-01"));
    }

    let rows = harness::wait_rows(&env().ledger_url, user, 2);
    let plain = row_with_output(&rows, 503);
    // input_tokens excludes the cache: 2,095 + 2,051 written (all with the 1-hour TTL) + 0 read.
    assert_eq!(plain.input_tokens, 4_146);
    assert_eq!(plain.cache_creation_input_tokens, 2_051);
    assert_eq!(plain.cache_creation_1h_input_tokens, 2_051);
    assert_eq!(plain.cached_input_tokens, 0);
    // claude-sonnet-4: 2,095 × 3.00/M + 2,051 × 6.00/M (1-hour write) + 503 × 15.00/M
    //   = 6,285,000 + 12,306,000 + 7,545,000.
    assert_eq!(plain.cost_total_nanousd, 26_136_000);
    assert_eq!(plain.model, "claude-sonnet-4-20250514");
    let streamed = row_with_output(&rows, 140);
    // The last cumulative values: 500 uncached + 12,000 read from the cache.
    assert_eq!(streamed.input_tokens, 12_500);
    assert_eq!(streamed.cached_input_tokens, 12_000);
    // claude-opus-4-1: 500 × 15.00/M + 12,000 × 1.50/M + 140 × 75.00/M
    //   = 7,500,000 + 18,000,000 + 10,500,000.
    assert_eq!(streamed.cost_total_nanousd, 36_000_000);
    assert!(rows.iter().all(|r| !r.estimated && r.status_code == 200));
}

#[test]
fn gemini_generate_content_json_and_sse() {
    let user = "gemini-user";
    let key = client_key(user);
    let mock = &env().mocks["gemini"];
    let json = fixture("gemini-generate.json");
    let sse = fixture("gemini-stream.sse");
    mock.script(
        "/v1beta/models/gemini-2.5-pro:generateContent",
        Reply::json(json.clone()),
    );
    mock.script(
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        Reply::sse(sse.clone(), 41),
    );
    let body = r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#;
    let response = harness::post_json(
        port(),
        "/gemini/v1beta/models/gemini-2.5-pro:generateContent",
        &[("x-goog-api-key", &key)],
        body,
    );
    assert_passed_through(&response, &json);
    let response = harness::post_json(
        port(),
        "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        &[("x-goog-api-key", &key)],
        body,
    );
    assert_passed_through(&response, &sse);

    let seen = mock.seen();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    for s in &seen {
        assert_key_swapped(s, "gemini", user, "x-goog-api-key", "");
    }
    assert_eq!(seen[1].query.as_deref(), Some("alt=sse"));

    let rows = harness::wait_rows(&env().ledger_url, user, 2);
    // Output is candidates + thoughts: 120 + 380.
    let plain = row_with_output(&rows, 500);
    assert_eq!(plain.cached_input_tokens, 2_048);
    assert_eq!(plain.reasoning_tokens, 380);
    // gemini-2.5-pro: the prompt side is 4,096 + 10 tool-use tokens, 2,048 of them cached:
    //   2,058 × 1.25/M + 2,048 × 0.125/M + 500 × 10.00/M = 2,572,500 + 256,000 + 5,000,000.
    assert_eq!(plain.input_tokens, 4_106);
    assert_eq!(plain.cost_total_nanousd, 7_828_500);
    // The last cumulative chunk: candidates 44 + thoughts 186.
    let streamed = row_with_output(&rows, 230);
    assert_eq!(streamed.input_tokens, 5);
    // gemini-2.5-flash: 5 × 0.30/M + 230 × 2.50/M = 1,500 + 575,000.
    assert_eq!(streamed.cost_total_nanousd, 576_500);
    assert!(rows.iter().all(|r| !r.estimated && r.status_code == 200));
}

#[test]
fn mistral_chat_json_and_sse() {
    let user = "mistral-user";
    let auth = format!("Bearer {}", client_key(user));
    let mock = &env().mocks["mistral"];
    let json = fixture("mistral-chat.json");
    let sse = fixture("mistral-chat-stream.sse");
    mock.script("/v1/chat/completions", Reply::json(json.clone()));
    let response = harness::post_json(
        port(),
        "/mistral/v1/chat/completions",
        &[("authorization", &auth)],
        r#"{"model":"mistral-small-latest","messages":[{"role":"user","content":"Bonjour"}]}"#,
    );
    assert_passed_through(&response, &json);
    mock.script("/v1/chat/completions", Reply::sse(sse.clone(), 53));
    let response = harness::post_json(
        port(),
        "/mistral/v1/chat/completions",
        &[("authorization", &auth)],
        r#"{"model":"mistral-large-latest","stream":true,"messages":[{"role":"user","content":"Bonjour"}]}"#,
    );
    assert_passed_through(&response, &sse);

    let seen = mock.seen_at("/v1/chat/completions");
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_key_swapped(s, "mistral", user, "authorization", "Bearer ");
    }

    let rows = harness::wait_rows(&env().ledger_url, user, 2);
    let plain = row_with_output(&rows, 34);
    assert_eq!(plain.input_tokens, 16);
    // mistral-small-latest: 16 × 0.15/M + 34 × 0.60/M = 2,400 + 20,400.
    assert_eq!(plain.cost_total_nanousd, 22_800);
    let streamed = row_with_output(&rows, 12);
    assert_eq!(streamed.input_tokens, 10);
    assert_eq!(streamed.cached_input_tokens, 4);
    // mistral-large-latest: 6 × 0.50/M + 4 × 0.05/M (cached) + 12 × 1.50/M
    //   = 3,000 + 200 + 18,000.
    assert_eq!(streamed.cost_total_nanousd, 21_200);
    assert!(rows.iter().all(|r| !r.estimated && r.status_code == 200));
}

#[test]
fn tavily_search_is_priced_by_reported_credits() {
    let user = "tavily-user";
    let auth = format!("Bearer {}", client_key(user));
    let mock = &env().mocks["tavily"];
    let json = fixture("tavily-search.json");
    mock.script("/search", Reply::json(json.clone()));
    let response = harness::post_json(
        port(),
        "/tavily/search",
        &[("authorization", &auth)],
        &format!(
            r#"{{"query":"Who is Leo Messi?","search_depth":"advanced","api_key":"{}"}}"#,
            client_key(user)
        ),
    );
    assert_passed_through(&response, &json);
    let seen = mock.seen_at("/search");
    assert_eq!(seen.len(), 1);
    assert_key_swapped(&seen[0], "tavily", user, "authorization", "Bearer ");
    // The client's key in the body (older clients' slot) does not leave; the credits are asked
    // for.
    let sent: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(
        sent,
        serde_json::json!({"query": "Who is Leo Messi?", "search_depth": "advanced", "include_usage": true})
    );

    let rows = harness::wait_rows(&env().ledger_url, user, 1);
    assert_eq!(rows[0].units, 2);
    // 2 credits × 0.008 USD.
    assert_eq!(rows[0].cost_total_nanousd, 16_000_000);
    assert!(!rows[0].estimated);
}

#[test]
fn serper_search_is_priced_by_reported_credits() {
    let user = "serper-user";
    let key = client_key(user);
    let mock = &env().mocks["serper"];
    let json = fixture("serper-search.json");
    mock.script("/search", Reply::json(json.clone()));
    let response = harness::post_json(
        port(),
        "/serper/search",
        &[("X-API-KEY", &key)],
        r#"{"q":"apple inc"}"#,
    );
    assert_passed_through(&response, &json);
    let seen = mock.seen_at("/search");
    assert_eq!(seen.len(), 1);
    assert_key_swapped(&seen[0], "serper", user, "x-api-key", "");

    let rows = harness::wait_rows(&env().ledger_url, user, 1);
    assert_eq!(rows[0].units, 1);
    // 1 credit × 0.001 USD.
    assert_eq!(rows[0].cost_total_nanousd, 1_000_000);
}

#[test]
fn exa_search_is_priced_by_its_reported_cost() {
    let user = "exa-user";
    let key = client_key(user);
    let mock = &env().mocks["exa"];
    let json = fixture("exa-search.json");
    mock.script("/search", Reply::json(json.clone()));
    let response = harness::post_json(
        port(),
        "/exa/search",
        &[("x-api-key", &key)],
        r#"{"query":"large language models","contents":{"text":true}}"#,
    );
    assert_passed_through(&response, &json);
    let seen = mock.seen_at("/search");
    assert_eq!(seen.len(), 1);
    assert_key_swapped(&seen[0], "exa", user, "x-api-key", "");

    let rows = harness::wait_rows(&env().ledger_url, user, 1);
    // costDollars.total = 0.007 USD, taken as reported.
    assert_eq!(rows[0].reported_cost_nanousd, Some(7_000_000));
    assert_eq!(rows[0].cost_total_nanousd, 7_000_000);
}

#[test]
fn firecrawl_scrape_is_priced_by_credits_used() {
    let user = "firecrawl-user";
    let auth = format!("Bearer {}", client_key(user));
    let mock = &env().mocks["firecrawl"];
    let json = fixture("firecrawl-scrape.json");
    mock.script("/v2/scrape", Reply::json(json.clone()));
    let response = harness::post_json(
        port(),
        "/firecrawl/v2/scrape",
        &[("authorization", &auth)],
        r#"{"url":"https://firecrawl.dev","formats":["markdown"]}"#,
    );
    assert_passed_through(&response, &json);
    let seen = mock.seen_at("/v2/scrape");
    assert_eq!(seen.len(), 1);
    assert_key_swapped(&seen[0], "firecrawl", user, "authorization", "Bearer ");

    let rows = harness::wait_rows(&env().ledger_url, user, 1);
    assert_eq!(rows[0].units, 5);
    // 5 credits × 0.00083 USD = 0.00415 USD.
    assert_eq!(rows[0].cost_total_nanousd, 4_150_000);
}

#[test]
fn a_firecrawl_crawl_polled_many_times_bills_each_credit_once() {
    let user = "firecrawl-jobs-user";
    let auth = format!("Bearer {}", client_key(user));
    let mock = &env().mocks["firecrawl"];
    let status = |state: &str, credits: u64| {
        format!(
            r#"{{"status":"{state}","total":20,"completed":{credits},"creditsUsed":{credits},"expiresAt":"2026-12-01T00:00:00Z","data":[]}}"#
        )
    };
    // The job's status, polled as it runs: its cumulative credits go 5, 12, 12 (no progress),
    // 20 (done), 20 (polled again after it finished).
    let mut polls = Vec::new();
    for (state, credits) in [
        ("scraping", 5),
        ("scraping", 12),
        ("scraping", 12),
        ("completed", 20),
        ("completed", 20),
    ] {
        let body = status(state, credits);
        mock.script("/v2/crawl/job-42", Reply::json(body.clone()));
        let response = harness::request(
            port(),
            "GET",
            "/firecrawl/v2/crawl/job-42",
            &[("authorization", &auth)],
            b"",
        );
        assert_passed_through(&response, body.as_bytes());
        polls.push(credits);
        // One poll at a time, so that each is billed in order.
        harness::wait_rows(&env().ledger_url, user, polls.len());
    }
    let rows = harness::wait_rows(&env().ledger_url, user, 5);
    let mut units: Vec<i64> = rows.iter().map(|r| r.units).collect();
    units.sort_unstable();
    assert_eq!(
        units,
        [0, 0, 5, 7, 8],
        "each poll billed for the increase only"
    );
    let total: i64 = rows.iter().map(|r| r.cost_total_nanousd).sum();
    // 20 credits × 0.00083 USD, however many polls.
    assert_eq!(total, 16_600_000);
}

#[test]
fn stability_generation_is_one_image() {
    let user = "stability-user";
    let auth = format!("Bearer {}", client_key(user));
    let mock = &env().mocks["stability"];
    // 200 kB of base64 image in JSON: also a body far larger than one read.
    let json = fixture("stability-core.json");
    let path = "/v2beta/stable-image/generate/core";
    mock.script(path, Reply::json(json.clone()));
    let boundary = "tollgate-e2e-boundary";
    let form = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"prompt\"\r\n\r\na lighthouse\r\n\
         --{boundary}\r\ncontent-disposition: form-data; name=\"output_format\"\r\n\r\npng\r\n\
         --{boundary}--\r\n"
    );
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let response = harness::request(
        port(),
        "POST",
        &format!("/stability{path}"),
        &[
            ("authorization", &auth),
            ("content-type", &content_type),
            ("accept", "application/json"),
        ],
        form.as_bytes(),
    );
    assert_passed_through(&response, &json);
    let seen = mock.seen_at(path);
    assert_eq!(seen.len(), 1);
    assert_key_swapped(&seen[0], "stability", user, "authorization", "Bearer ");
    assert_eq!(
        seen[0].body,
        form.as_bytes(),
        "the form reaches Stability intact"
    );

    let rows = harness::wait_rows(&env().ledger_url, user, 1);
    assert_eq!(rows[0].units, 1);
    assert_eq!(rows[0].model, "stable-image-core");
    // 1 image × 0.03 USD (Stable Image Core, 3 credits).
    assert_eq!(rows[0].cost_total_nanousd, 30_000_000);
}

#[test]
fn gzip_response_is_passed_through_and_still_metered() {
    let user = "gzip-user";
    let auth = format!("Bearer {}", client_key(user));
    let mock = &env().mocks["mistral"];
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(&fixture("mistral-embeddings.json"))
        .unwrap();
    let gzipped = encoder.finish().unwrap();
    mock.script(
        "/v1/embeddings",
        Reply::json(gzipped.clone()).header("content-encoding", "gzip"),
    );
    let response = harness::post_json(
        port(),
        "/mistral/v1/embeddings",
        &[("authorization", &auth), ("accept-encoding", "gzip")],
        r#"{"model":"mistral-embed","input":["Embed this sentence."]}"#,
    );
    assert_passed_through(&response, &gzipped);
    assert_eq!(response.header("content-encoding"), Some("gzip"));

    let rows = harness::wait_rows(&env().ledger_url, user, 1);
    assert_eq!(rows[0].input_tokens, 15);
    assert_eq!(rows[0].output_tokens, 0);
    // mistral-embed: 15 × 0.10/M.
    assert_eq!(rows[0].cost_total_nanousd, 1_500);
    assert!(!rows[0].estimated);
}
