//! Just enough HTTP/1.1 request framing for the mock upstream: where a request ends
//! (`Content-Length` or chunked, as Tollgate sends a body it may rewrite) and whether its JSON
//! body asked for a stream.

use memchr::memmem;

/// What the first bytes of a connection's buffer hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// More bytes are needed.
    Incomplete,
    /// A whole request occupies the first `len_bytes` bytes of the buffer; `heavy`: it has an
    /// `x-heavy` header (asking for [`Responses::heavy`](crate::responses::Responses)).
    Complete {
        len_bytes: usize,
        stream: bool,
        heavy: bool,
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
        }
    }
    let rest = &buf[body_start..];
    if chunked {
        return match dechunk(rest) {
            Dechunked::Incomplete => Framed::Incomplete,
            Dechunked::Invalid => Framed::Invalid,
            Dechunked::Complete { len_bytes, body } => Framed::Complete {
                len_bytes: body_start + len_bytes,
                stream: asks_for_stream(&body),
                heavy,
            },
        };
    }
    let body_len = content_length.unwrap_or(0);
    match rest.get(..body_len) {
        Some(body) => Framed::Complete {
            len_bytes: body_start + body_len,
            stream: asks_for_stream(body),
            heavy,
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

enum Dechunked {
    Incomplete,
    Invalid,
    Complete { len_bytes: usize, body: Vec<u8> },
}

/// Reads a chunked body from the start of `buf`: its length on the wire and its content.
fn dechunk(buf: &[u8]) -> Dechunked {
    let mut rest = buf;
    let mut body = Vec::new();
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
                        body,
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
        body.extend_from_slice(&chunk[..size]);
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
                heavy: false
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
                heavy: false
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
                heavy: false
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
}
