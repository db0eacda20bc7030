//! The official `openai` and `anthropic` Python SDKs pointed at the real binary, which forwards
//! to a mock of each provider speaking its wire format: plain and streamed calls return what the
//! provider sent, parsed by the SDK as if it had talked to the provider; the provider sees its
//! own key; the ledger holds one event per call with the provider's counts; and the gateway's
//! refusals (plan limit, unknown key) surface as the SDK's usual exceptions.
//!
//! The scripts in `tests/harness/python/` make the calls and print what the SDK returned; they run under
//! the interpreter named by `TOLLGATE_SDK_PYTHON`, which `./dev test` prepares.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use harness::{
    Gateway, Mock, Reply, Seen, UsageLog, assert_key_swapped, client_key, fixture, provider_key,
};
use serde_json::{Value, json};

/// Calls per provider in the plan: each script makes three normal calls, so its fourth is over
/// the limit.
const PLAN_CALLS: u32 = 3;

/// A gateway with `provider` pointed at `mock` and `user` on a plan of [`PLAN_CALLS`] calls to it.
fn start_gateway(provider: &str, mock: &Mock, user: &str) -> Gateway {
    let key_env = format!("TG_SDK_{}_KEY", provider.to_ascii_uppercase());
    let rest = format!(
        "[providers.{provider}]\nbase_url = \"http://127.0.0.1:{port}\"\nkey_env = \"{key_env}\"\n\
         [plans.sdk]\nname = \"SDK\"\ntier = \"pro\"\n[plans.sdk.providers]\n\
         {provider} = {{ calls = {PLAN_CALLS} }}\n{key}",
        port = mock.port,
        key = harness::key_entry(user, "sdk", &client_key(user)),
    );
    Gateway::start("", &rest, &[(&key_env, &provider_key(provider))])
}

fn request_json(seen: &Seen) -> Value {
    serde_json::from_slice(&seen.body).unwrap_or_else(|e| panic!("{e}: {seen:#?}"))
}

/// The usage event of the call whose output token count is `output_tokens`.
fn row_with_output(rows: &[UsageLog], output_tokens: i64) -> &UsageLog {
    rows.iter()
        .find(|r| r.output_tokens == output_tokens)
        .unwrap_or_else(|| panic!("no row with {output_tokens} output tokens in {rows:#?}"))
}

// ---------------------------------------------------------------------------------------------
// OpenAI
// ---------------------------------------------------------------------------------------------

/// One `chat.completion.chunk` event of the `gpt-4.1-mini` stream.
fn openai_chunk(choices: Value, usage: Value) -> String {
    let chunk = json!({
        "id": "chatcmpl-sdk41",
        "object": "chat.completion.chunk",
        "created": 1_764_300_000,
        "model": "gpt-4.1-mini-2025-04-14",
        "system_fingerprint": "fp_6f2eabb9a5",
        "service_tier": "default",
        "choices": choices,
        "usage": usage,
    });
    format!("data: {chunk}\n\n")
}

/// The stream the helper call receives: three content deltas, a finish, then usage.
fn openai_helper_stream(include_usage: bool) -> String {
    let delta = |delta: Value, finish: Value| {
        openai_chunk(
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]),
            Value::Null,
        )
    };
    let mut body = delta(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    );
    for piece in ["Streamed ", "through the ", "helper."] {
        body.push_str(&delta(json!({"content": piece}), Value::Null));
    }
    body.push_str(&delta(json!({}), json!("stop")));
    if include_usage {
        body.push_str(&openai_chunk(
            json!([]),
            json!({
                "prompt_tokens": 2_000,
                "completion_tokens": 300,
                "total_tokens": 2_300,
                "prompt_tokens_details": {"cached_tokens": 1_500, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
            }),
        ));
    }
    body.push_str("data: [DONE]\n\n");
    body
}

/// OpenAI's chat completions: the recorded JSON answer, or for a stream the recorded
/// `gpt-4o-mini` stream or the `gpt-4.1-mini` one above. Like OpenAI, a stream ends with the
/// usage chunk only when the request asked for it with `stream_options.include_usage`.
fn mock_openai() -> Mock {
    Mock::with_handler(|seen: &Seen| {
        let request: Value = serde_json::from_slice(&seen.body).unwrap_or_default();
        if request["stream"] != true {
            return Reply::json(fixture("openai-chat.json"));
        }
        let include_usage = request["stream_options"]["include_usage"] == true;
        let body = if request["model"] == "gpt-4o-mini" {
            // The recording writes `"usage":"null"`, a quirk kept for the scanner's tests;
            // OpenAI sends `null`, which is what the SDK is given here.
            String::from_utf8(fixture("openai-chat-stream-usage.sse"))
                .unwrap()
                .replace(r#""usage":"null""#, r#""usage":null"#)
                .split_inclusive("\n\n")
                .filter(|event| include_usage || !event.contains(r#""choices":[]"#))
                .collect()
        } else {
            openai_helper_stream(include_usage)
        };
        // Paced as a provider generating tokens is: the SDK reads `[DONE]` and closes the
        // stream before the body's last bytes (its chunked ending) arrive.
        Reply::sse(body, 37).paced(std::time::Duration::from_millis(5))
    })
}

#[test]
fn openai_sdk_calls_stream_and_refusals() {
    let python = harness::sdk_python();
    let user = "sdk-openai-user";
    let mock = mock_openai();
    let gateway = start_gateway("openai", &mock, user);
    let base_url = format!("http://127.0.0.1:{}/openai/v1", gateway.port);

    let out = harness::run_sdk_script(&python, "openai_client.py", &[&base_url, &client_key(user)]);
    eprintln!("openai SDK {}", out["sdk"]);

    // What the application received, as the SDK parsed it.
    assert_eq!(out["create"]["model"], "gpt-4o-2024-08-06", "{out:#}");
    assert_eq!(
        out["create"]["text"],
        "The image shows a wooden boardwalk \"usage\": {} 🌿 日本語"
    );
    assert_eq!(out["create"]["finish_reason"], "stop");
    assert_eq!(
        out["create"]["usage"],
        json!({"prompt_tokens": 1_117, "completion_tokens": 46, "total_tokens": 1_163, "cached_tokens": 1_024})
    );
    assert_eq!(
        out["stream"]["text"], "Hello! How can I help 😊 you today? 日本語\"quoted\"",
        "{out:#}"
    );
    // Nine content chunks, as OpenAI would send them: the usage chunk the gateway asked for on
    // the client's behalf is metered (below) and kept from the SDK, which did not ask for it.
    assert_eq!(out["stream"]["chunks"], 9, "{out:#}");
    assert_eq!(out["stream"]["usage"], Value::Null, "{out:#}");
    assert_eq!(out["helper"]["model"], "gpt-4.1-mini-2025-04-14", "{out:#}");
    assert_eq!(out["helper"]["deltas"], "Streamed through the helper.");
    assert_eq!(out["helper"]["text"], "Streamed through the helper.");
    assert_eq!(
        out["helper"]["usage"],
        json!({"prompt_tokens": 2_000, "completion_tokens": 300, "total_tokens": 2_300, "cached_tokens": 1_500})
    );

    // The fourth call is over the plan: openai.RateLimitError, OpenAI's error fields, and the
    // SDK told not to retry it.
    assert_sdk_refusals(
        &out,
        "insufficient_quota",
        "openai_calls",
        "invalid_request_error",
    );
    assert_eq!(out["limit_error"]["code"], "usage_limit_exceeded");
    assert_eq!(out["auth_error"]["code"], "invalid_api_key");

    // Only the three admitted calls reached OpenAI, each with the real key.
    let seen = mock.seen();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    for s in &seen {
        assert_eq!(s.path, "/v1/chat/completions");
        assert_key_swapped(s, "openai", user, "authorization", "Bearer ");
    }
    assert_eq!(request_json(&seen[0])["model"], "gpt-4o");
    // stream=True alone: the gateway added include_usage so that the call could be metered.
    assert_eq!(
        request_json(&seen[1])["stream_options"],
        json!({"include_usage": true})
    );
    assert_eq!(request_json(&seen[2])["model"], "gpt-4.1-mini");

    // One usage event per call with OpenAI's counts, priced from pricing/openai.toml.
    let rows = harness::wait_rows(&gateway.ledger_url(), user, 3);
    // Clean calls, streams read to their end included: no error on any row.
    assert!(rows.iter().all(|r| r.error_message.is_none()), "{rows:#?}");
    let plain = row_with_output(&rows, 46);
    assert_eq!(plain.input_tokens, 1_117);
    assert_eq!(plain.cached_input_tokens, 1_024);
    assert_eq!(plain.model, "gpt-4o-2024-08-06");
    // gpt-4o: 93 × 2.50/M + 1,024 × 1.25/M + 46 × 10.00/M = 232,500 + 1,280,000 + 460,000.
    assert_eq!(plain.cost_total_nanousd, 1_972_500);
    let streamed = row_with_output(&rows, 12);
    assert_eq!(streamed.input_tokens, 9);
    assert_eq!(streamed.cached_input_tokens, 0);
    assert_eq!(streamed.model, "gpt-4o-mini-2024-07-18");
    // gpt-4o-mini: 9 × 0.15/M + 12 × 0.60/M = 1,350 + 7,200.
    assert_eq!(streamed.cost_total_nanousd, 8_550);
    let helper = row_with_output(&rows, 300);
    assert_eq!(helper.input_tokens, 2_000);
    assert_eq!(helper.cached_input_tokens, 1_500);
    assert_eq!(helper.model, "gpt-4.1-mini-2025-04-14");
    // gpt-4.1-mini: 500 × 0.40/M + 1,500 × 0.10/M + 300 × 1.60/M = 200,000 + 150,000 + 480,000.
    assert_eq!(helper.cost_total_nanousd, 830_000);
    assert!(
        rows.iter().all(|r| r.status_code == 200 && !r.estimated),
        "{rows:#?}"
    );
    gateway.stop();
}

// ---------------------------------------------------------------------------------------------
// Anthropic
// ---------------------------------------------------------------------------------------------

/// The `claude-haiku-4-5` stream, event by event as Anthropic sends it.
fn anthropic_haiku_stream() -> String {
    let events = [
        json!({"type": "message_start", "message": {
            "id": "msg_01SdkHaikuStream", "type": "message", "role": "assistant",
            "model": "claude-haiku-4-5-20251001", "content": [], "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": 2_400, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": 1,
                      "service_tier": "standard"}}}),
        json!({"type": "content_block_start", "index": 0,
               "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": "Hello"}}),
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": " from Haiku"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta",
               "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"output_tokens": 75}}),
        json!({"type": "message_stop"}),
    ];
    events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect()
}

/// Anthropic's messages: the recorded JSON answer, or for a stream the recorded `claude-opus-4-1`
/// stream or the `claude-haiku-4-5` one above.
fn mock_anthropic() -> Mock {
    Mock::with_handler(|seen: &Seen| {
        let request: Value = serde_json::from_slice(&seen.body).unwrap_or_default();
        if request["stream"] != true {
            Reply::json(fixture("anthropic-messages.json"))
        } else if request["model"] == "claude-opus-4-1" {
            Reply::sse(fixture("anthropic-messages-stream.sse"), 29)
        } else {
            Reply::sse(anthropic_haiku_stream(), 29)
        }
    })
}

#[test]
fn anthropic_sdk_calls_stream_and_refusals() {
    let python = harness::sdk_python();
    let user = "sdk-anthropic-user";
    let mock = mock_anthropic();
    let gateway = start_gateway("anthropic", &mock, user);
    let base_url = format!("http://127.0.0.1:{}/anthropic", gateway.port);

    let out = harness::run_sdk_script(
        &python,
        "anthropic_client.py",
        &[&base_url, &client_key(user)],
    );
    eprintln!("anthropic SDK {}", out["sdk"]);

    assert_eq!(
        out["create"]["model"], "claude-sonnet-4-20250514",
        "{out:#}"
    );
    assert_eq!(out["create"]["text"], "Hi! My name is Claude. 日本");
    assert_eq!(out["create"]["stop_reason"], "end_turn");
    assert_eq!(
        out["create"]["usage"],
        json!({"input_tokens": 2_095, "output_tokens": 503,
               "cache_creation_input_tokens": 2_051, "cache_read_input_tokens": 0})
    );
    assert_eq!(out["stream"]["text"], "Hello from Haiku", "{out:#}");
    assert_eq!(
        out["stream"]["events"],
        json!([
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]),
        "the SDK skips pings and nothing else"
    );
    assert_eq!(out["stream"]["input_tokens"], 2_400);
    assert_eq!(out["stream"]["output_tokens"], 75);
    let text = "Okay, let's check 🌦 天気 \"usage\": {\"output_tokens\": 999}";
    assert_eq!(
        out["helper"]["model"], "claude-opus-4-1-20250805",
        "{out:#}"
    );
    assert_eq!(out["helper"]["deltas"], text);
    assert_eq!(out["helper"]["text"], text);
    assert_eq!(out["helper"]["stop_reason"], "end_turn");
    // The SDK's final message takes the last cumulative counts, as the gateway does.
    assert_eq!(
        out["helper"]["usage"],
        json!({"input_tokens": 500, "output_tokens": 140,
               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 12_000})
    );

    assert_sdk_refusals(
        &out,
        "rate_limit_error",
        "anthropic_calls",
        "authentication_error",
    );

    let seen = mock.seen();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    for s in &seen {
        assert_eq!(s.path, "/v1/messages");
        assert_key_swapped(s, "anthropic", user, "x-api-key", "");
        assert!(s.header("anthropic-version").is_some(), "{s:#?}");
    }

    let rows = harness::wait_rows(&gateway.ledger_url(), user, 3);
    // Clean calls, streams read to their end included: no error on any row.
    assert!(rows.iter().all(|r| r.error_message.is_none()), "{rows:#?}");
    let plain = row_with_output(&rows, 503);
    // 2,095 uncached + 2,051 written to the cache (1-hour TTL).
    assert_eq!(plain.input_tokens, 4_146);
    assert_eq!(plain.cache_creation_1h_input_tokens, 2_051);
    // claude-sonnet-4: 2,095 × 3.00/M + 2,051 × 6.00/M + 503 × 15.00/M
    //   = 6,285,000 + 12,306,000 + 7,545,000.
    assert_eq!(plain.cost_total_nanousd, 26_136_000);
    let streamed = row_with_output(&rows, 75);
    assert_eq!(streamed.input_tokens, 2_400);
    assert_eq!(streamed.model, "claude-haiku-4-5-20251001");
    // claude-haiku-4-5: 2,400 × 1.00/M + 75 × 5.00/M = 2,400,000 + 375,000.
    assert_eq!(streamed.cost_total_nanousd, 2_775_000);
    let helper = row_with_output(&rows, 140);
    assert_eq!(helper.input_tokens, 12_500);
    assert_eq!(helper.cached_input_tokens, 12_000);
    // claude-opus-4-1: 500 × 15.00/M + 12,000 × 1.50/M + 140 × 75.00/M
    //   = 7,500,000 + 18,000,000 + 10,500,000.
    assert_eq!(helper.cost_total_nanousd, 36_000_000);
    assert!(
        rows.iter().all(|r| r.status_code == 200 && !r.estimated),
        "{rows:#?}"
    );
    gateway.stop();
}

/// The refusals as an SDK raised them: the over-limit call as its `RateLimitError` (429, the
/// provider's error `limit_type`, the limit named, not to be retried) and the unknown key
/// as its `AuthenticationError` (401, `auth_type`).
fn assert_sdk_refusals(out: &Value, limit_type: &str, limit_name: &str, auth_type: &str) {
    let limit = &out["limit_error"];
    assert_eq!(limit["class"], "RateLimitError", "{out:#}");
    assert_eq!(limit["status"], 429);
    assert_eq!(limit["type"], limit_type);
    assert!(
        limit["message"].as_str().unwrap().contains(limit_name),
        "{limit}"
    );
    assert_eq!(limit["retry_after"], Value::Null, "{limit}");
    assert_eq!(limit["should_retry"], "false", "{limit}");
    let auth = &out["auth_error"];
    assert_eq!(auth["class"], "AuthenticationError", "{out:#}");
    assert_eq!(auth["status"], 401);
    assert_eq!(auth["type"], auth_type);
}

// ---------------------------------------------------------------------------------------------
// Refusals at the SDKs' default settings
// ---------------------------------------------------------------------------------------------

/// The count of `tollgate_requests_total` for `provider` answered `status`.
fn requests_answered(gateway: &Gateway, provider: &str, status: u16) -> u64 {
    let series = format!("tollgate_requests_total{{provider=\"{provider}\",status=\"{status}\"}}");
    gateway.metric(&series).map_or(0, |n| n as u64)
}

/// A limit of the billing period cannot be met by retrying before it resets, days away. The
/// official SDKs at their default settings (default retries, no `max_retries`) must raise their
/// rate-limit error at once, having sent one request, for a calls, a token and a cost limit —
/// not sleep on a `Retry-After` of weeks, nor retry.
#[test]
fn period_limit_refusals_surface_at_once_at_default_retries() {
    let python = harness::sdk_python();
    let mock = Mock::with_handler(|_| Reply::json(r#"{"ok":true}"#));
    let providers = ["openai", "anthropic", "gemini"];
    let mut rest = String::new();
    let mut env = Vec::new();
    for provider in providers {
        let key_env = format!("TG_SDK_{}_KEY", provider.to_ascii_uppercase());
        rest += &format!(
            "[providers.{provider}]\nbase_url = \"http://127.0.0.1:{}\"\nkey_env = \"{key_env}\"\n",
            mock.port
        );
        env.push((key_env, provider_key(provider)));
    }
    let each = |limit: &str| {
        let limits: Vec<String> = providers
            .iter()
            .map(|p| format!("{p} = {{ {limit} }}"))
            .collect();
        limits.join("\n")
    };
    rest += &format!(
        "[plans.calls]\nname = \"Calls\"\ntier = \"pro\"\n[plans.calls.providers]\n{}\n\
         [plans.tokens]\nname = \"Tokens\"\ntier = \"pro\"\n[plans.tokens.providers]\n{}\n\
         [plans.cost]\nname = \"Cost\"\ntier = \"pro\"\ncost_cap = \"0.000000001\"\n",
        each("calls = 1"),
        each("tokens = 5"),
    );
    for plan in ["calls", "tokens", "cost"] {
        rest += &harness::key_entry(plan, plan, &client_key(plan));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let gateway = Gateway::start("", &rest, &env);
    let base = format!("http://127.0.0.1:{}", gateway.port);

    // The calls plan's one call, used up outside the SDKs.
    let calls_key = client_key("calls");
    for (path, body) in [
        ("/openai/v1/chat/completions", r#"{"model":"gpt-4o"}"#),
        (
            "/anthropic/v1/messages",
            r#"{"model":"claude-sonnet-4-20250514"}"#,
        ),
        (
            "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
            "{}",
        ),
    ] {
        let auth = format!("Bearer {calls_key}");
        let used = harness::post_json(gateway.port, path, &[("authorization", &auth)], body);
        assert_eq!(used.status, 200, "{path}: {}", used.text());
    }

    let sdks = [
        (
            "openai",
            "openai",
            format!("{base}/openai/v1"),
            "gpt-4o",
            "RateLimitError",
        ),
        (
            "anthropic",
            "anthropic",
            format!("{base}/anthropic"),
            "claude-sonnet-4-20250514",
            "RateLimitError",
        ),
        (
            "google-genai",
            "gemini",
            format!("{base}/gemini"),
            "gemini-2.5-flash",
            "ClientError",
        ),
    ];
    for plan in ["calls", "tokens", "cost"] {
        for (sdk, provider, url, model, class) in &sdks {
            let before = requests_answered(&gateway, provider, 429);
            let key = client_key(plan);
            let out = harness::run_sdk_script(
                &python,
                "refused_at_defaults.py",
                &[sdk, url, &key, model],
            );
            let what = format!("{sdk} on the {plan} plan: {out}");
            assert_eq!(out["class"], *class, "{what}");
            assert_eq!(out["status"], 429, "{what}");
            assert!(out["elapsed_s"].as_f64().unwrap() < 2.0, "{what}");
            assert_eq!(
                requests_answered(&gateway, provider, 429),
                before + 1,
                "{what}"
            );
        }
    }
    // Nothing refused reached a provider.
    assert_eq!(mock.seen().len(), 3);
    gateway.stop();
}

/// A per-minute window reopens within the minute, as a provider's own rate limit does: the
/// official SDKs at their default settings, refused with `Retry-After`, wait the seconds they
/// are told and retry, and the retried call goes through in the next window.
#[test]
fn minute_window_refusals_are_retried_by_the_sdks_at_defaults() {
    let python = harness::sdk_python();
    let mock = Mock::with_handler(|_| Reply::json(r#"{"ok":true}"#));
    let providers = ["openai", "anthropic"];
    let mut rest = String::new();
    let mut env = Vec::new();
    for provider in providers {
        let key_env = format!("TG_SDK_{}_KEY", provider.to_ascii_uppercase());
        rest += &format!(
            "[providers.{provider}]\nbase_url = \"http://127.0.0.1:{}\"\nkey_env = \"{key_env}\"\n",
            mock.port
        );
        env.push((key_env, provider_key(provider)));
    }
    rest += "[plans.minute]\nname = \"Minute\"\ntier = \"pro\"\n[plans.minute.providers]\n\
             openai = { calls_per_minute = 1 }\nanthropic = { calls_per_minute = 1 }\n";
    rest += &harness::key_entry("minute", "minute", &client_key("minute"));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let gateway = Gateway::start("", &rest, &env);
    let base = format!("http://127.0.0.1:{}", gateway.port);
    let key = client_key("minute");

    // Each provider's one call of this minute, used up outside the SDKs, with time left in the
    // minute for the SDKs to start and be refused in the same window.
    harness::well_inside_a_minute(20);
    for (path, body) in [
        ("/openai/v1/chat/completions", r#"{"model":"gpt-4o"}"#),
        (
            "/anthropic/v1/messages",
            r#"{"model":"claude-sonnet-4-20250514"}"#,
        ),
    ] {
        let auth = format!("Bearer {key}");
        let used = harness::post_json(gateway.port, path, &[("authorization", &auth)], body);
        assert_eq!(used.status, 200, "{path}: {}", used.text());
    }
    let sdks = [
        ("openai", "openai", format!("{base}/openai/v1"), "gpt-4o"),
        (
            "anthropic",
            "anthropic",
            format!("{base}/anthropic"),
            "claude-sonnet-4-20250514",
        ),
    ];
    // Both at once: the wait is for the same window.
    let runs: Vec<_> = sdks
        .into_iter()
        .map(|(sdk, provider, url, model)| {
            let (python, key) = (python.clone(), key.clone());
            std::thread::spawn(move || {
                let out = harness::run_sdk_script(
                    &python,
                    "refused_at_defaults.py",
                    &[sdk, &url, &key, model],
                );
                (provider, out)
            })
        })
        .collect();
    for run in runs {
        let (provider, out) = run.join().unwrap();
        assert_eq!(out["class"], Value::Null, "{provider}: {out}");
        assert!(
            out["elapsed_s"].as_f64().unwrap() < 62.0,
            "{provider}: {out}"
        );
        // One refusal, then the retry that went through.
        assert!(
            requests_answered(&gateway, provider, 429) >= 1,
            "{provider}: {out}"
        );
    }
    assert_eq!(mock.seen().len(), 4);
    gateway.stop();
}
