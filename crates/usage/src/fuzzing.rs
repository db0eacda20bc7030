//! The fuzz check, shared by the cargo-fuzz target (`fuzz/`) and the test that replays its
//! corpus, so both exercise the same code.
//!
//! An input's first byte picks a call (provider, endpoint, framing), its second a
//! Content-Encoding, its third a chunk size; the rest is the body. The body is fed whole, in
//! chunks of that size, and one byte at a time: none of it may panic, and all three must agree
//! (unless decompression failed, where how much output precedes the failure may depend on the
//! chunking).

use tollgate_domain::Provider;

use crate::{RequestFacts, RequestInfo, Scanned, UsageError, scanner};

/// One call shape the fuzzer can pick.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    pub provider: Provider,
    pub path: &'static str,
    pub query: Option<&'static str>,
    pub content_type: Option<&'static str>,
    pub request_body: Option<&'static str>,
    pub status: u16,
}

const fn call(provider: Provider, path: &'static str, content_type: Option<&'static str>) -> Call {
    Call {
        provider,
        path,
        query: None,
        content_type,
        request_body: None,
        status: 200,
    }
}

const SSE: Option<&str> = Some("text/event-stream");
const JSON: Option<&str> = Some("application/json");

/// Every scanner, each with the framings it meets.
pub const CALLS: &[Call] = &[
    call(Provider::OpenAi, "/v1/chat/completions", JSON),
    call(Provider::OpenAi, "/v1/chat/completions", SSE),
    call(Provider::OpenAi, "/v1/responses", JSON),
    call(Provider::OpenAi, "/v1/responses", SSE),
    call(Provider::OpenAi, "/v1/embeddings", JSON),
    call(Provider::OpenAi, "/v1/images/generations", JSON),
    call(Provider::OpenAi, "/v1/images/generations", SSE),
    call(Provider::Anthropic, "/v1/messages", JSON),
    call(Provider::Anthropic, "/v1/messages", SSE),
    call(
        Provider::Gemini,
        "/v1beta/models/gemini-2.5-pro:generateContent",
        JSON,
    ),
    call(
        Provider::Gemini,
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
        JSON,
    ),
    Call {
        query: Some("alt=sse"),
        ..call(
            Provider::Gemini,
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
            SSE,
        )
    },
    call(Provider::Mistral, "/v1/chat/completions", JSON),
    call(Provider::Mistral, "/v1/chat/completions", SSE),
    call(Provider::Mistral, "/v1/embeddings", JSON),
    Call {
        request_body: Some(r#"{"query":"q","search_depth":"advanced"}"#),
        ..call(Provider::Tavily, "/search", JSON)
    },
    call(Provider::Tavily, "/extract", JSON),
    call(Provider::Serper, "/search", JSON),
    call(Provider::Exa, "/search", JSON),
    call(Provider::Exa, "/answer", SSE),
    call(Provider::Firecrawl, "/v2/scrape", JSON),
    call(Provider::Firecrawl, "/v2/crawl/job-1", JSON),
    call(
        Provider::Stability,
        "/v2beta/stable-image/generate/core",
        JSON,
    ),
    call(
        Provider::Stability,
        "/v2beta/stable-image/generate/ultra",
        Some("image/png"),
    ),
    call(
        Provider::Stability,
        "/v2beta/stable-image/generate/sd3",
        None,
    ),
    Call {
        status: 400,
        ..call(Provider::OpenAi, "/v1/chat/completions", None)
    },
    call(Provider::Anthropic, "/v1/messages", None),
];

const ENCODINGS: &[Option<&str>] = &[
    None,
    None,
    None,
    Some("gzip"),
    Some("br"),
    Some("zstd"),
    Some("deflate"),
];

/// Feeds `body` to a scanner for `call` in chunks of `chunk` bytes (0: whole).
pub fn scan(call: &Call, encoding: Option<&str>, body: &[u8], chunk: usize) -> Scanned {
    let facts = call.request_body.map_or_else(RequestFacts::default, |b| {
        RequestFacts::read(call.provider, call.path, b.as_bytes()).unwrap_or_default()
    });
    let mut s = scanner(&RequestInfo {
        provider: call.provider,
        method: "POST",
        path: call.path,
        query: call.query,
        request: &facts,
        response_status: call.status,
        response_content_type: call.content_type,
        response_content_encoding: encoding,
    });
    if chunk == 0 {
        s.feed(body);
    } else {
        for piece in body.chunks(chunk) {
            s.feed(piece);
        }
    }
    s.finish()
}

/// Runs one fuzz input; `Err` is a disagreement between chunkings.
pub fn check(data: &[u8]) -> Result<(), UsageError> {
    let [pick, coding, size, body @ ..] = data else {
        return Ok(());
    };
    let call = &CALLS[usize::from(*pick) % CALLS.len()];
    let encoding = ENCODINGS[usize::from(*coding) % ENCODINGS.len()];
    check_call(call, encoding, body, usize::from(*size) + 1)
}

/// The agreement check for one call and body.
pub fn check_call(
    call: &Call,
    encoding: Option<&str>,
    body: &[u8],
    chunk: usize,
) -> Result<(), UsageError> {
    let scans = [
        scan(call, encoding, body, 0),
        scan(call, encoding, body, chunk),
        scan(call, encoding, body, 1),
    ];
    let failed = scans.iter().any(|s| s.decode_error.is_some());
    let [whole, chunked, bytewise] = &scans;
    if !failed && (whole != chunked || whole != bytewise) {
        return Err(UsageError::Disagreement {
            call: *call,
            encoding: encoding.map(str::to_owned),
            chunk,
            scans: Box::new(scans),
        });
    }
    Ok(())
}
