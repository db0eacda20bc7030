//! Shutdown loses nothing and waits for nothing: on SIGTERM the gateway lets the calls in flight
//! finish and exits as soon as the last one has (at once when idle); a call still running when
//! the grace period ends is recorded with what it had received, then the process exits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use std::time::{Duration, Instant};

use harness::{Gateway, Mock, Reply, client_key, key_entry, provider_key};

/// An OpenAI chat stream of `chunks` content events, one every `pause`, then usage and `[DONE]`.
fn slow_stream(chunks: usize, pause: Duration) -> Mock {
    Mock::with_handler(move |_| {
        let mut body = String::new();
        for _ in 0..chunks {
            body.push_str(
                "data: {\"id\":\"c\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"}}],\"usage\":null}\n\n",
            );
        }
        body.push_str("data: {\"id\":\"c\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":20,\"total_tokens\":30}}\n\ndata: [DONE]\n\n");
        let event = body.len() / (chunks + 2);
        Reply::sse(body, event).paced(pause)
    })
}

fn start(mock: &Mock, grace_secs: u64) -> Gateway {
    let rest = format!(
        "[providers.openai]\nbase_url = \"http://127.0.0.1:{}\"\nkey_env = \"TG_OPENAI_KEY\"\n\
         [plans.p]\nname = \"P\"\ntier = \"pro\"\n{}",
        mock.port,
        key_entry("sam", "p", &client_key("sam")),
    );
    Gateway::start(
        &format!("graceful_shutdown_secs = {grace_secs}"),
        &rest,
        &[("TG_OPENAI_KEY", &provider_key("openai"))],
    )
}

/// Streams a chat completion; answers the status and the body's text.
fn stream_call(port: u16) -> (u16, String) {
    let auth = format!("Bearer {}", client_key("sam"));
    let response = harness::post_json(
        port,
        "/openai/v1/chat/completions",
        &[("authorization", &auth)],
        r#"{"model":"gpt-4o","stream":true,"messages":[]}"#,
    );
    (response.status, response.text())
}

/// Streams a chat completion over a raw connection and answers everything received until the
/// connection closed, however it ended.
fn raw_stream_call(port: u16) -> String {
    use std::io::{Read, Write};
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[]}"#;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: localhost\r\n\
         authorization: Bearer {}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        client_key("sam"),
        body.len()
    )
    .unwrap();
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    String::from_utf8_lossy(&received).into_owned()
}

#[test]
fn an_idle_gateway_exits_at_once_whatever_its_grace_period() {
    let mock = slow_stream(1, Duration::ZERO);
    let gateway = start(&mock, 60);
    assert_eq!(stream_call(gateway.port).0, 200);
    let stopping = Instant::now();
    let dir = gateway.stop();
    // Within the harness's 30 s wait, and nowhere near the 60 s grace period.
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "{:?}",
        stopping.elapsed()
    );
    let db = format!("sqlite://{}", dir.path().join("ledger.db").display());
    assert_eq!(harness::ledger_rows(&db, "sam").len(), 1);
}

#[test]
fn calls_in_flight_finish_and_the_gateway_exits_after_the_last() {
    // Streams of about two seconds each.
    let mock = slow_stream(10, Duration::from_millis(200));
    let gateway = start(&mock, 60);
    let port = gateway.port;
    let calls: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || stream_call(port)))
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    let stopping = Instant::now();
    gateway.terminate();
    for call in calls {
        let (status, body) = call.join().unwrap();
        assert_eq!(status, 200);
        assert!(
            body.ends_with("data: [DONE]\n\n"),
            "a stream was cut: {body:?}"
        );
    }
    let dir = gateway.wait();
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "{:?}",
        stopping.elapsed()
    );
    let db = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let rows = harness::ledger_rows(&db, "sam");
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert!(
        rows.iter()
            .all(|r| r.error_message.is_none() && r.output_tokens == 20),
        "{rows:#?}"
    );
}

#[test]
fn calls_still_running_when_the_grace_period_ends_are_recorded_as_cut_off() {
    // Streams of about eight seconds, a grace period of one.
    let mock = slow_stream(40, Duration::from_millis(200));
    let gateway = start(&mock, 1);
    let port = gateway.port;
    let calls: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || raw_stream_call(port)))
        .collect();
    std::thread::sleep(Duration::from_millis(600));
    gateway.terminate();
    let dir = gateway.wait();
    for call in calls {
        // The client saw its stream cut (the connection closed before its end).
        let received = call.join().unwrap();
        assert!(received.contains("HTTP/1.1 200"), "{received:?}");
        assert!(!received.contains("[DONE]"), "{received:?}");
    }
    let db = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let rows = harness::ledger_rows(&db, "sam");
    assert_eq!(
        rows.len(),
        2,
        "every admitted call has its event: {rows:#?}"
    );
    for row in &rows {
        assert_eq!(row.status_code, 200, "{row:?}");
        assert!(row.estimated, "{row:?}");
        assert!(row.output_tokens > 0, "the usage seen so far: {row:?}");
        let error = row.error_message.as_deref().unwrap_or_default();
        assert!(error.contains("shut down"), "{row:?}");
    }
}
