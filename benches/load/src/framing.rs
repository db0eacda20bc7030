//! Just enough HTTP/1.1 framing for the harness's own programs: for the mock upstream, where a
//! request ends (`Content-Length` or chunked, as Tollgate sends a body it may rewrite), whether
//! its JSON body asked for a stream and how it asked to be answered; for the load client, where
//! a response ends and its status.

use memchr::memmem;

/// What the first bytes of a connection's buffer hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// More bytes are needed.
    Incomplete,
    /// A whole request occupies the first `len_bytes` bytes of the buffer; `heavy`: it has an
    /// `x-heavy` header (asking for [`Responses::heavy`](crate::responses::Responses));
    /// `event_gap_ms`: the milliseconds its `x-event-gap-ms` header asks the mock to wait
    /// between two events of a stream (a slow stream), 0 without one.
    Complete {
        len_bytes: usize,
        stream: bool,
        heavy: bool,
        event_gap_ms: u64,
    },
    /// Not a request this mock understands: the connection is closed.
    Invalid,
}

/// Frames the request at the start of `buf`.
pub fn frame(buf: &[u8]) -> Framed {
    let Some(head_end) = memmem::find(buf, b"\r\n\r\n") else {
        return Framed::Incomplete;
    };
    let body_start = head_end + 4;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut heavy = false;
    let mut event_gap_ms = 0;
    for line in buf[..head_end].split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            match std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                Some(n) => content_length = Some(n),
                None => return Framed::Invalid,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = value.to_ascii_lowercase().ends_with(b"chunked");
        } else if name.eq_ignore_ascii_case(b"x-heavy") {
            heavy = true;
        } else if name.eq_ignore_ascii_case(b"x-event-gap-ms") {
            match std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                Some(ms) => event_gap_ms = ms,
                None => return Framed::Invalid,
            }
        }
    }
    let rest = &buf[body_start..];
    if chunked {
        let mut body = Vec::new();
        return match dechunk(rest, Some(&mut body)) {
            Dechunked::Incomplete => Framed::Incomplete,
            Dechunked::Invalid => Framed::Invalid,
            Dechunked::Complete { len_bytes } => Framed::Complete {
                len_bytes: body_start + len_bytes,
                stream: asks_for_stream(&body),
                heavy,
                event_gap_ms,
            },
        };
    }
    let body_len = content_length.unwrap_or(0);
    match rest.get(..body_len) {
        Some(body) => Framed::Complete {
            len_bytes: body_start + body_len,
            stream: asks_for_stream(body),
            heavy,
            event_gap_ms,
        },
        None => Framed::Incomplete,
    }
}

/// Whether an OpenAI request body has `"stream": true` (compact or with one space, as clients
/// and serde_json write it).
pub fn asks_for_stream(body: &[u8]) -> bool {
    memmem::find(body, br#""stream":true"#).is_some()
        || memmem::find(body, br#""stream": true"#).is_some()
}

/// What the first bytes of a client connection's buffer hold.
#[derive(Debug, PartialEq, Eq)]
pub enum ResponseFramed {
    /// More bytes are needed.
    Incomplete,
    /// A whole response occupies the first `len_bytes` bytes of the buffer.
    Complete { len_bytes: usize, status: u16 },
    /// Not a response this client understands (nor one delimited by its length or chunks).
    Invalid,
}

/// Frames the response at the start of `buf`: a response to a `POST`, so it has a body
/// delimited by `Content-Length` or chunked encoding, or none when its status says so.
pub fn frame_response(buf: &[u8]) -> ResponseFramed {
    let Some(head_end) = memmem::find(buf, b"\r\n\r\n") else {
        return ResponseFramed::Incomplete;
    };
    let body_start = head_end + 4;
    let mut lines = buf[..head_end].split(|&b| b == b'\n');
    // `HTTP/1.1 200 OK`: the status is the second word.
    let status = lines
        .next()
        .and_then(|line| line.split(|&b| b == b' ').nth(1))
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse::<u16>().ok());
    let Some(status) = status else {
        return ResponseFramed::Invalid;
    };
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            match std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                Some(n) => content_length = Some(n),
                None => return ResponseFramed::Invalid,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = value.to_ascii_lowercase().ends_with(b"chunked");
        }
    }
    let rest = &buf[body_start..];
    let body_len = if chunked {
        match dechunk(rest, None) {
            Dechunked::Incomplete => return ResponseFramed::Incomplete,
            Dechunked::Invalid => return ResponseFramed::Invalid,
            Dechunked::Complete { len_bytes } => len_bytes,
        }
    } else if let Some(n) = content_length {
        if rest.len() < n {
            return ResponseFramed::Incomplete;
        }
        n
    } else if status == 204 || status == 304 || status < 200 {
        0
    } else {
        // Delimited by the connection's end: not what a keep-alive client can use.
        return ResponseFramed::Invalid;
    };
    ResponseFramed::Complete {
        len_bytes: body_start + body_len,
        status,
    }
}

enum Dechunked {
    Incomplete,
    Invalid,
    Complete { len_bytes: usize },
}

/// Reads a chunked body from the start of `buf`: its length on the wire, and its content into
/// `body` when given one.
fn dechunk(buf: &[u8], mut body: Option<&mut Vec<u8>>) -> Dechunked {
    let mut rest = buf;
    loop {
        let Some(eol) = memmem::find(rest, b"\r\n") else {
            return Dechunked::Incomplete;
        };
        // A chunk extension (`;name=value`) is allowed after the size and ignored.
        let field = rest[..eol].split(|&b| b == b';').next().unwrap_or_default();
        let size = match std::str::from_utf8(field)
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
        {
            Some(size) => size,
            None => return Dechunked::Invalid,
        };
        rest = &rest[eol + 2..];
        if size == 0 {
            // Trailer lines, if any, end with an empty line.
            loop {
                let Some(eol) = memmem::find(rest, b"\r\n") else {
                    return Dechunked::Incomplete;
                };
                rest = &rest[eol + 2..];
                if eol == 0 {
                    return Dechunked::Complete {
                        len_bytes: buf.len() - rest.len(),
                    };
                }
            }
        }
        let Some(end) = size.checked_add(2) else {
            return Dechunked::Invalid;
        };
        let Some(chunk) = rest.get(..end) else {
            return Dechunked::Incomplete;
        };
        if !chunk.ends_with(b"\r\n") {
            return Dechunked::Invalid;
        }
        if let Some(body) = body.as_deref_mut() {
            body.extend_from_slice(&chunk[..size]);
        }
        rest = &rest[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM_BODY: &str = r#"{"model":"gpt-4o","stream":true,"messages":[]}"#;

    fn with_length(body: &str) -> String {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn content_length_request_is_framed_to_its_last_byte() {
        let request = with_length(STREAM_BODY);
        let mut buf = request.clone().into_bytes();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            frame(&buf),
            Framed::Complete {
                len_bytes: request.len(),
                stream: true,
                heavy: false,
                event_gap_ms: 0
            }
        );
        assert_eq!(
            frame(&request.as_bytes()[..request.len() - 1]),
            Framed::Incomplete
        );
        let plain = with_length(r#"{"model":"gpt-4o"}"#);
        assert_eq!(
            frame(plain.as_bytes()),
            Framed::Complete {
                len_bytes: plain.len(),
                stream: false,
                heavy: false,
                event_gap_ms: 0
            }
        );
    }

    #[test]
    fn chunked_request_is_reassembled_across_chunk_boundaries() {
        // The stream flag is split between two chunks.
        let (a, b) = STREAM_BODY.split_at(20);
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\ntransfer-encoding: Chunked\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        );
        assert_eq!(
            frame(request.as_bytes()),
            Framed::Complete {
                len_bytes: request.len(),
                stream: true,
                heavy: false,
                event_gap_ms: 0
            }
        );
        for cut in [request.len() - 1, request.len() - 3, 80] {
            assert_eq!(frame(&request.as_bytes()[..cut]), Framed::Incomplete);
        }
    }

    #[test]
    fn malformed_framing_is_invalid() {
        let bad_length = "POST / HTTP/1.1\r\ncontent-length: ten\r\n\r\n";
        assert_eq!(frame(bad_length.as_bytes()), Framed::Invalid);
        let bad_chunk = "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(frame(bad_chunk.as_bytes()), Framed::Invalid);
        let no_crlf = "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabcd";
        assert_eq!(frame(no_crlf.as_bytes()), Framed::Invalid);
    }

    #[test]
    fn event_gap_header_is_read() {
        let request = format!(
            "POST / HTTP/1.1\r\nx-event-gap-ms: 250\r\ncontent-length: {}\r\n\r\n{STREAM_BODY}",
            STREAM_BODY.len()
        );
        assert_eq!(
            frame(request.as_bytes()),
            Framed::Complete {
                len_bytes: request.len(),
                stream: true,
                heavy: false,
                event_gap_ms: 250
            }
        );
        let bad = "POST / HTTP/1.1\r\nx-event-gap-ms: soon\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(frame(bad.as_bytes()), Framed::Invalid);
    }

    #[test]
    fn responses_are_framed_by_length_or_chunks_at_every_cut() {
        let json = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        let sse = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\ndata: \r\n3\r\n[x]\r\n0\r\n\r\n";
        let refused = "HTTP/1.1 429 Too Many Requests\r\ncontent-length: 2\r\n\r\n{}";
        for (response, status) in [(json, 200), (sse, 200), (refused, 429)] {
            let mut buf = response.as_bytes().to_vec();
            buf.extend_from_slice(b"HTTP/1.1 200");
            assert_eq!(
                frame_response(&buf),
                ResponseFramed::Complete {
                    len_bytes: response.len(),
                    status
                }
            );
            for cut in 0..response.len() {
                assert_eq!(
                    frame_response(&response.as_bytes()[..cut]),
                    ResponseFramed::Incomplete,
                    "{response:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn responses_without_a_length_are_invalid() {
        let until_close = "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhello";
        assert_eq!(
            frame_response(until_close.as_bytes()),
            ResponseFramed::Invalid
        );
        assert_eq!(frame_response(b"garbage\r\n\r\n"), ResponseFramed::Invalid);
        assert_eq!(
            frame_response(b"HTTP/1.1 204 No Content\r\n\r\n"),
            ResponseFramed::Complete {
                len_bytes: 27,
                status: 204
            }
        );
    }
}
