//! The real binary between a client and a mock OpenAI upstream that speaks OpenAI's wire format:
//! key swap, admission, streaming pass-through with usage injection, refusals in OpenAI's shape,
//! and one usage event per admitted call in the SQLite ledger.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use harness::{Gateway, Mock, Reply, Seen};

const CLIENT_KEY: &str = "tg_test_alice_0123456789";
const UPSTREAM_KEY: &str = "sk-upstream-secret";

/// An OpenAI-speaking upstream: chat completions as JSON or as an SSE stream with a final usage
/// chunk when asked for it.
fn mock_openai() -> Mock {
    Mock::with_handler(|seen: &Seen| {
        let request: serde_json::Value = serde_json::from_slice(&seen.body).unwrap_or_default();
        let stream_usage = request["stream_options"]["include_usage"] == true;
        if request["stream"] == true {
            // Split mid-event, as a network would.
            Reply::sse(mock_stream(stream_usage), 37)
        } else {
            Reply::json(
                r#"{"id":"c2","object":"chat.completion","model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0}}}"#,
            )
        }
    })
}

/// The mock's chat stream, with the final usage chunk when the request asked for it.
fn mock_stream(stream_usage: bool) -> Vec<u8> {
    let mut events = vec![
                r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}],"usage":null}"#.to_owned(),
                r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}],"usage":null}"#.to_owned(),
            ];
    if stream_usage {
        events.push(r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-2024-08-06","choices":[],"usage":{"prompt_tokens":1337,"completion_tokens":211,"total_tokens":1548,"prompt_tokens_details":{"cached_tokens":1152}}}"#.to_owned());
    }
    let mut body = String::new();
    for e in events {
        body.push_str(&format!("data: {e}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    body.into_bytes()
}

fn start_gateway(upstream_port: u16, openai_calls: u64) -> Gateway {
    start_gateway_for(
        "openai",
        upstream_port,
        &format!("openai = {{ calls = {openai_calls} }}\nanthropic = {{ calls = 0 }}"),
        &[
            ("TG_TEST_PROVIDER_KEY", UPSTREAM_KEY),
            ("ANTHROPIC_API_KEY", "sk-ant-unused"),
        ],
    )
}

/// The gateway with `provider` at the mock on `upstream_port` (its key from
/// `TG_TEST_PROVIDER_KEY`), alice's key on plan `test` with `limits` (lines of
/// `[plans.test.providers]`), and short header and body deadlines.
fn start_gateway_for(
    provider: &str,
    upstream_port: u16,
    limits: &str,
    env: &[(&str, &str)],
) -> Gateway {
    let rest = format!(
        r#"
[providers.{provider}]
base_url = "http://127.0.0.1:{upstream_port}"
key_env = "TG_TEST_PROVIDER_KEY"
[plans.test]
name = "Test"
tier = "pro"
[plans.test.providers]
{limits}
{key}"#,
        key = harness::key_entry("alice", "test", CLIENT_KEY),
    );
    Gateway::start(
        "header_read_timeout_ms = 300\nbody_read_timeout_ms = 1000",
        &rest,
        env,
    )
}

/// One JSON POST on a fresh connection; returns status, head and (de-chunked) body text.
fn request(port: u16, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    let response = harness::post_json(port, path, headers, body);
    (response.status, response.head.clone(), response.text())
}

fn bearer() -> String {
    format!("Bearer {CLIENT_KEY}")
}

#[test]
fn openai_calls_are_forwarded_metered_and_limited() {
    let upstream = mock_openai();
    let gw = start_gateway(upstream.port, 4);
    let auth = bearer();
    let path = "/openai/v1/chat/completions";

    // 1. A plain completion: passed through unchanged, key swapped.
    let (status, _, body) = request(
        gw.port,
        path,
        &[("authorization", &auth)],
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":50}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""content":"Hello""#), "{body}");
    {
        let seen = upstream.seen();
        let first = &seen[0];
        assert_eq!(first.path, "/v1/chat/completions");
        assert_eq!(
            first.header("authorization"),
            Some("Bearer sk-upstream-secret")
        );
        assert!(
            first.headers.iter().all(|(_, v)| !v.contains(CLIENT_KEY)),
            "the Tollgate key must not reach the provider"
        );
    }

    // 2. A stream without include_usage: the gateway asks for usage and meters it, and the
    //    client gets the provider's stream without the usage chunk it did not ask for, byte for
    //    byte; a client that asked for it gets it.
    let (status, _, body) = request(
        gw.port,
        path,
        &[("x-api-key", CLIENT_KEY)],
        r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(status, 200, "{body}");
    let forwarded: serde_json::Value = serde_json::from_slice(&upstream.seen()[1].body).unwrap();
    assert_eq!(forwarded["stream_options"]["include_usage"], true);
    let provider_stream = String::from_utf8(mock_stream(true)).unwrap();
    let usage_chunk = provider_stream
        .split_inclusive("\n\n")
        .find(|event| event.contains(r#""choices":[]"#))
        .unwrap();
    assert_eq!(body, provider_stream.replace(usage_chunk, ""));
    let (status, _, asked) = request(
        gw.port,
        path,
        &[("x-api-key", CLIENT_KEY)],
        r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}"#,
    );
    assert_eq!(status, 200, "{asked}");
    assert_eq!(asked, provider_stream);

    // 3. Missing and unknown keys: 401 in OpenAI's shape, nothing forwarded.
    let (status, _, body) = request(gw.port, path, &[], r#"{"model":"gpt-4o"}"#);
    assert_eq!(status, 401, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "missing_api_key");
    let (status, _, _) = request(
        gw.port,
        path,
        &[("authorization", "Bearer tg_wrong")],
        r#"{"model":"gpt-4o"}"#,
    );
    assert_eq!(status, 401);

    // 4. Malformed JSON: 400, nothing forwarded, nothing billed.
    let (status, _, body) = request(gw.port, path, &[("authorization", &auth)], "{\"model\": ");
    assert_eq!(status, 400, "{body}");

    // 5. An unpriced model is refused before it reaches the provider.
    let (status, _, body) = request(
        gw.port,
        path,
        &[("authorization", &auth)],
        r#"{"model":"gpt-unknown-9","messages":[]}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("model_not_priced"), "{body}");

    // 6. The fourth call uses the last of 4; the fifth is refused with 429 naming the limit.
    let (status, _, _) = request(
        gw.port,
        path,
        &[("authorization", &auth)],
        r#"{"model":"gpt-4o","messages":[]}"#,
    );
    assert_eq!(status, 200);
    let (status, head, body) = request(
        gw.port,
        path,
        &[("authorization", &auth)],
        r#"{"model":"gpt-4o","messages":[]}"#,
    );
    assert_eq!(status, 429, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "usage_limit_exceeded");
    assert_eq!(error["tollgate"]["limit"], "openai_calls");
    assert_eq!(error["tollgate"]["limit_value"], 4);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("x-should-retry: false"), "{head}");
    assert!(!head.contains("retry-after: "), "{head}");

    // 7. A provider outside the plan: 403 in Anthropic's shape.
    let (status, _, body) = request(
        gw.port,
        "/anthropic/v1/messages",
        &[("x-api-key", CLIENT_KEY)],
        r#"{"model":"claude-sonnet-4-20250514","max_tokens":10,"messages":[]}"#,
    );
    assert_eq!(status, 403, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "permission_error");

    // 8. A header block over the cap (32 KiB by default): 431 in OpenAI's shape.
    let big = "x".repeat(40 * 1024);
    let (status, head, body) = request(
        gw.port,
        path,
        &[("authorization", &auth), ("x-padding", &big)],
        r#"{"model":"gpt-4o","messages":[]}"#,
    );
    assert_eq!(status, 431, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "request_headers_too_large");
    assert_eq!(
        head.to_ascii_lowercase().matches("content-type:").count(),
        1,
        "{head}"
    );

    // 8b. Dot segments, plain or percent-encoded, are refused with 400 before routing: they
    //     would reach something else upstream.
    let before = upstream.seen().len();
    for target in ["/openai/../admin", "/openai/v1/%2e%2e/%2E%2E/admin"] {
        let (status, _, body) = request(gw.port, target, &[("authorization", &auth)], "{}");
        assert_eq!(status, 400, "{target}: {body}");
        assert!(body.contains("dot segment"), "{body}");
    }
    assert_eq!(upstream.seen().len(), before);

    // 9. A client that sends its head a byte at a time, each byte well within any per-read
    //    timeout, is cut off by the total deadline (header_read_timeout_ms = 300 here) with 408.
    let mut slow = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    for b in format!("POST {path} HTTP/1.1\r\nhost: localhost\r\nx-slow: ")
        .bytes()
        .chain(std::iter::repeat(b'a'))
    {
        if slow.write_all(&[b]).is_err() || started.elapsed() > Duration::from_secs(5) {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
        let mut probe = [0u8; 1];
        slow.set_nonblocking(true).unwrap();
        let got = slow.read(&mut probe);
        slow.set_nonblocking(false).unwrap();
        if let Ok(1) = got {
            answer.push(probe[0]);
            break;
        }
    }
    let _ = slow.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");

    // Only the four admitted calls reached the provider; refused bodies never completed.
    let complete: Vec<_> = upstream
        .seen()
        .into_iter()
        .filter(|s| !s.body.is_empty())
        .collect();
    assert_eq!(complete.len(), 4, "{complete:?}");

    // Every admitted call is one usage event, priced from pricing/openai.toml.
    let dir = gw.stop();
    let db = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let rows = harness::ledger_rows(&db, "alice");
    assert_eq!(rows.len(), 4, "{rows:?}");
    let streamed: Vec<_> = rows.iter().filter(|r| r.input_tokens == 1_337).collect();
    assert_eq!(streamed.len(), 2, "both streams metered: {rows:?}");
    let streamed = streamed[0];
    assert_eq!(streamed.cached_input_tokens, 1_152);
    assert_eq!(streamed.output_tokens, 211);
    // 185 × 2.50/M + 1,152 × 1.25/M + 211 × 10.00/M.
    assert_eq!(streamed.cost_total_nanousd, 4_012_500);
    assert!(!streamed.estimated);
    assert_eq!(streamed.model, "gpt-4o-2024-08-06");
    let plain: Vec<_> = rows.iter().filter(|r| r.input_tokens == 19).collect();
    assert_eq!(plain.len(), 2);
    // 19 × 2.50/M + 10 × 10.00/M = 47,500 + 100,000.
    assert!(plain.iter().all(|r| r.cost_total_nanousd == 147_500));
    assert!(
        rows.iter()
            .all(|r| r.key_id.as_deref().is_some_and(|k| !k.contains("tg_")))
    );
}

/// Bodies reach the provider byte for byte, whichever way the gateway reads them: one of known
/// length up to 64 KiB is read before the upstream request begins and keeps an exact
/// `Content-Length` (also when rewritten); a larger one, or one the client sends chunked, is held
/// while the upstream request has begun, so it goes chunked.
#[test]
fn request_bodies_reach_the_provider_whole_with_their_length() {
    let upstream = mock_openai();
    let gw = start_gateway(upstream.port, 100);
    let auth = bearer();
    let path = "/openai/v1/chat/completions";
    // A body of exactly `total` bytes with the given stream flag.
    let body_of = |total: usize, stream: bool| {
        let head = format!(
            r#"{{"model":"gpt-4o","stream":{stream},"max_tokens":5,"messages":[{{"role":"user","content":""#
        );
        let tail = r#""}]}"#;
        let body = format!(
            "{head}{}{tail}",
            "a".repeat(total - head.len() - tail.len())
        );
        assert_eq!(body.len(), total);
        body
    };
    let cases = [
        (200, false, "length"),
        (64 * 1024, false, "length"),
        (64 * 1024 + 1, false, "chunked"),
        (300 * 1024, false, "chunked"),
        (200, true, "length"),
        (64 * 1024, true, "length"),
        (100 * 1024, true, "chunked"),
    ];
    for (i, (size, stream, framing)) in cases.into_iter().enumerate() {
        let body = body_of(size, stream);
        let (status, _, text) = request(gw.port, path, &[("authorization", &auth)], &body);
        assert_eq!(status, 200, "{size} bytes: {text}");
        let seen = &upstream.seen()[i];
        let forwarded: serde_json::Value = serde_json::from_slice(&seen.body)
            .unwrap_or_else(|e| panic!("{size} bytes: {e}: {seen:?}"));
        if stream {
            // Rewritten: the same request with usage asked for.
            assert_eq!(forwarded["stream_options"]["include_usage"], true);
            let mut sent: serde_json::Value = serde_json::from_str(&body).unwrap();
            sent["stream_options"] = forwarded["stream_options"].clone();
            assert_eq!(forwarded, sent, "{size} bytes");
        } else {
            assert_eq!(seen.body, body.as_bytes(), "{size} bytes, unchanged");
        }
        match framing {
            "length" => {
                assert_eq!(
                    seen.header("content-length"),
                    Some(seen.body.len().to_string().as_str()),
                    "{size} bytes"
                );
                assert_eq!(seen.header("transfer-encoding"), None, "{size} bytes");
            }
            _ => assert_eq!(seen.header("transfer-encoding"), Some("chunked"), "{size}"),
        }
    }

    // A small body the client sends chunked: no length is known before it is read, so it is
    // held, admitted and forwarded as it came.
    let body = body_of(500, false);
    let response = harness::post_json_chunked(gw.port, path, &auth, &body, 128);
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(seen.body, body.as_bytes());

    let rows = harness::wait_rows(&gw.ledger_url(), "alice", cases.len() + 1);
    assert_eq!(rows.len(), cases.len() + 1);
    gw.stop();
}

/// A client that sends `Expect: 100-continue` (curl does for bodies over 1 KiB) gets the
/// go-ahead from the gateway once its key and plan are checked, sends its body, and gets the
/// provider's answer; the provider sees a plain request with the whole body.
#[test]
fn expect_100_continue_gets_its_go_ahead_from_the_gateway() {
    let upstream = mock_openai();
    let gw = start_gateway(upstream.port, 10);
    let body = format!(
        r#"{{"model":"gpt-4o","max_tokens":5,"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "b".repeat(2_000)
    );
    let mut stream = send_head(gw.port, &bearer(), body.len(), "expect: 100-continue\r\n");
    // Without the go-ahead this read times out: the gateway would be waiting for the body.
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(body.as_bytes()).unwrap();
    let response = read_answer(stream);
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(seen.body, body.as_bytes());
    assert_eq!(seen.header("expect"), None);

    // Refused before the body is asked for: no go-ahead, the 401 straight away.
    let stream = send_head(
        gw.port,
        "Bearer tg_nobody",
        body.len(),
        "expect: 100-continue\r\n",
    );
    let response = read_answer(stream);
    assert_eq!(response.status, 401, "{}", response.text());
    gw.stop();
}

/// Waiting for a slow client's body is not the gateway's own work: a body sent 400 ms after its
/// head leaves the gateway-overhead histogram well under that.
#[test]
fn a_slow_body_is_not_counted_as_gateway_overhead() {
    let upstream = mock_openai();
    let gw = start_gateway(upstream.port, 10);
    let body = r#"{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut stream = send_head(gw.port, &bearer(), body.len(), "");
    std::thread::sleep(Duration::from_millis(400));
    stream.write_all(body.as_bytes()).unwrap();
    assert_eq!(read_answer(stream).status, 200);
    let count = gw
        .metric("tollgate_gateway_overhead_seconds_count")
        .unwrap();
    let sum = gw.metric("tollgate_gateway_overhead_seconds_sum").unwrap();
    assert_eq!(count, 1.0);
    assert!(sum < 0.2, "overhead {sum} s includes the client's pause");
    gw.stop();
}

/// A body sent a few bytes at a time, each write well within Pingora's per-read timeout, is cut
/// off by the total deadline (`body_read_timeout_ms` = 1000 here) with 408 in OpenAI's shape:
/// a small body read before anything goes upstream, and a large one held for admission. The
/// provider gets neither, and neither is billed.
#[test]
fn a_body_trickled_past_its_deadline_is_answered_408() {
    let upstream = mock_openai();
    let gw = start_gateway(upstream.port, 10);
    for (length, sent_at_once) in [(200, 10), (100 * 1024, 70 * 1024)] {
        let stream = send_head(gw.port, &bearer(), length, "");
        let (took, response) = trickle(stream, length, sent_at_once);
        assert_eq!(response.status, 408, "{length} B: {}", response.text());
        let error: serde_json::Value = serde_json::from_str(&response.text()).unwrap();
        assert_eq!(error["error"]["code"], "request_timeout", "{error}");
        assert!(error["error"]["message"].is_string(), "{error}");
        assert!(
            took < Duration::from_secs(3),
            "{length} B: cut off after {took:?}"
        );
    }
    assert!(
        upstream.seen().iter().all(|s| s.body.is_empty()),
        "a body reached the provider"
    );
    let dir = gw.stop();
    let db = format!("sqlite://{}", dir.path().join("ledger.db").display());
    assert!(harness::ledger_rows(&db, "alice").is_empty());
}

/// A body streamed through to the provider rather than held (a Stability upload: admission
/// needs only its path) is under the same total deadline: trickled past it, the client gets 408
/// in Stability's shape, the provider's request is abandoned unanswered, and the admitted call
/// leaves exactly one usage event, unbilled.
#[test]
fn an_upload_streamed_through_is_cut_off_at_its_deadline() {
    let upstream = mock_openai();
    let gw = start_gateway_for(
        "stability",
        upstream.port,
        "stability = { calls = 10 }",
        &[("TG_TEST_PROVIDER_KEY", "sk-stability-secret")],
    );
    let length = 64 * 1024;
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "POST /stability/v2beta/stable-image/generate/core HTTP/1.1\r\nhost: localhost\r\n\
         authorization: {auth}\r\ncontent-type: multipart/form-data; boundary=x\r\n\
         content-length: {length}\r\nconnection: close\r\n\r\n",
        auth = bearer(),
    )
    .unwrap();
    let (took, response) = trickle(stream, length, 1024);
    assert_eq!(response.status, 408, "{}", response.text());
    let error: serde_json::Value = serde_json::from_str(&response.text()).unwrap();
    assert!(error["errors"].is_array(), "{error}");
    assert!(took < Duration::from_secs(3), "cut off after {took:?}");
    assert!(
        upstream.seen().is_empty(),
        "the provider answered a request whose body never completed"
    );
    let dir = gw.stop();
    let db = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let rows = harness::ledger_rows(&db, "alice");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].provider, "stability");
    assert_eq!(rows[0].status_code, 408);
    assert_eq!(rows[0].cost_total_nanousd, 0);
    assert!(rows[0].error_message.is_some(), "{:?}", rows[0]);
}

/// Opens a connection and sends only the head of a chat completion whose body of
/// `content_length` bytes the caller sends (or not) itself; `extra` are more header lines.
fn send_head(port: u16, authorization: &str, content_length: usize, extra: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: localhost\r\nauthorization: {authorization}\r\n\
         content-type: application/json\r\ncontent-length: {content_length}\r\n{extra}\
         connection: close\r\n\r\n"
    )
    .unwrap();
    stream
}

/// Sends a body of `length` bytes after its head: `at_once` of them, then one every 50 ms for
/// at most 4 s or until the gateway stops taking them; how long that went on, and the answer.
fn trickle(mut stream: TcpStream, length: usize, at_once: usize) -> (Duration, harness::Response) {
    let started = Instant::now();
    stream.write_all(&vec![b' '; at_once]).unwrap();
    for _ in at_once..length {
        if stream.write_all(b" ").is_err() || started.elapsed() > Duration::from_secs(4) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (started.elapsed(), read_answer(stream))
}

/// Everything the gateway answers until it closes the connection.
fn read_answer(mut stream: TcpStream) -> harness::Response {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    harness::parse_response(&answer)
}
