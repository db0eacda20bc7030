//! The mock upstream's answers, in OpenAI's wire format and rendered once: a chat completion as
//! JSON with its `usage` object, and the same completion as an SSE stream of
//! `chat.completion.chunk` events, a final usage chunk and `data: [DONE]`.

/// The rendered responses, head included.
#[derive(Debug, Clone)]
pub struct Responses {
    /// A non-streaming completion: one write.
    pub json: Vec<u8>,
    /// A gzip completion padded to [`HEAVY_DECODED_BYTES`] decoded: the most decoding work the
    /// gateway's budget lets one response cost (it compresses about six times, well within the
    /// budget's ratio), for measuring what such responses do to other calls' latency.
    pub heavy: Vec<u8>,
    /// A streaming completion, one element per write: the head with the first event, then one
    /// HTTP chunk per SSE event as a provider flushes them, the last with the terminating chunk.
    pub stream: Vec<Vec<u8>>,
}

const MODEL: &str = "gpt-4o-2024-08-06";

impl Responses {
    /// `content_events` is the number of content deltas in a stream (at least one).
    pub fn new(content_events: usize) -> Responses {
        let body = format!(
            r#"{{"id":"chatcmpl-load","object":"chat.completion","created":1735689600,"model":"{MODEL}","choices":[{{"index":0,"message":{{"role":"assistant","content":"Hello from the load harness."}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{{"cached_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0}}}}}}"#
        );
        let json = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();

        let content_events = content_events.max(1);
        let mut events = Vec::with_capacity(content_events + 3);
        for i in 0..content_events {
            let role = if i == 0 { r#""role":"assistant","# } else { "" };
            events.push(format!(
                r#"{{"id":"chatcmpl-load","object":"chat.completion.chunk","created":1735689600,"model":"{MODEL}","choices":[{{"index":0,"delta":{{{role}"content":"token{i} "}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#
            ));
        }
        events.push(format!(
            r#"{{"id":"chatcmpl-load","object":"chat.completion.chunk","created":1735689600,"model":"{MODEL}","choices":[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"stop"}}],"usage":null}}"#
        ));
        events.push(format!(
            r#"{{"id":"chatcmpl-load","object":"chat.completion.chunk","created":1735689600,"model":"{MODEL}","choices":[],"usage":{{"prompt_tokens":19,"completion_tokens":{content_events},"total_tokens":{},"prompt_tokens_details":{{"cached_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0}}}}}}"#,
            19 + content_events
        ));
        events.push("[DONE]".to_owned());

        let mut stream: Vec<Vec<u8>> = events
            .iter()
            .map(|e| {
                let sse = format!("data: {e}\n\n");
                format!("{:x}\r\n{sse}\r\n", sse.len()).into_bytes()
            })
            .collect();
        if let Some(first) = stream.first_mut() {
            let mut head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            head.append(first);
            *first = head;
        }
        if let Some(last) = stream.last_mut() {
            last.extend_from_slice(b"0\r\n\r\n");
        }
        Responses {
            json,
            stream,
            heavy: heavy(),
        }
    }
}

/// Decoded size of [`Responses::heavy`]: just under the gateway's absolute decoding budget.
pub const HEAVY_DECODED_BYTES: usize = 60 << 20;

fn heavy() -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut pad = vec![0u8; HEAVY_DECODED_BYTES];
    // Two letters at random: about one bit of entropy per byte, so gzip gets ~6×.
    let mut x: u32 = 0x9e37_79b9;
    for b in &mut pad {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = if x & 1 == 0 { b'a' } else { b'b' };
    }
    let written = gz
        .write_all(br#"{"id":"chatcmpl-heavy","object":"chat.completion","model":"gpt-4o","pad":""#)
        .and_then(|()| gz.write_all(&pad))
        .and_then(|()| {
            gz.write_all(
                br#"","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29}}"#,
            )
        });
    let body = written.and_then(|()| gz.finish()).unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_length_matches_its_body() {
        let r = Responses::new(3);
        let text = String::from_utf8(r.json).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(body.contains(r#""usage":{"prompt_tokens":19"#));
    }

    #[test]
    fn stream_ends_with_usage_then_done() {
        let r = Responses::new(3);
        // Head + 3 content events + finish + usage + [DONE].
        assert_eq!(r.stream.len(), 6);
        let wire = String::from_utf8(r.stream.concat()).unwrap();
        let (_, mut chunked) = wire.split_once("\r\n\r\n").unwrap();
        let mut sse = String::new();
        loop {
            let (size, rest) = chunked.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size, 16).unwrap();
            if size == 0 {
                assert_eq!(rest, "\r\n");
                break;
            }
            sse.push_str(&rest[..size]);
            assert_eq!(&rest[size..size + 2], "\r\n");
            chunked = &rest[size + 2..];
        }
        let events: Vec<&str> = sse.split_terminator("\n\n").collect();
        assert_eq!(events.len(), 6);
        assert_eq!(events[5], "data: [DONE]");
        assert!(
            events[4].contains(r#""completion_tokens":3"#),
            "{}",
            events[4]
        );
        assert!(events[3].contains(r#""finish_reason":"stop""#));
    }
}
