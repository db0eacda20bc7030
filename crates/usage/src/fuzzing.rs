//! The fuzz checks, shared by the cargo-fuzz targets (`fuzz/`) and the tests that replay their
//! corpora, so both exercise the same code.
//!
//! [`check`] is the scanners': an input's first byte picks a call (provider, endpoint,
//! framing), its second a Content-Encoding, its third a chunk size; the rest is the body. The
//! body is fed whole, in chunks of that size, and one byte at a time: none of it may panic, and
//! all three must agree (unless decompression failed, where how much output precedes the
//! failure may depend on the chunking). [`check_request`] is the request-facts reader's.

use tollgate_domain::Provider;

use crate::{RequestFacts, RequestInfo, Scanned, UsageError, request, scanner};

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

/// The requests the facts check reads bodies for: each way a body's facts are read (JSON for
/// chat, messages and search, Gemini's model from its path, Stability's form).
pub const REQUESTS: &[(Provider, &str)] = &[
    (Provider::OpenAi, "/v1/chat/completions"),
    (Provider::Anthropic, "/v1/messages"),
    (
        Provider::Gemini,
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
    ),
    (Provider::Tavily, "/extract"),
    (Provider::Stability, "/v2beta/stable-image/generate/sd3"),
];

/// Runs one request-facts fuzz input: the first byte picks a request, the rest is its body.
/// Reading never panics, and for a JSON body it agrees with the full parse it stands in for:
/// the same facts, or an error both ways (but for the one thing JSON allows and a `Value`
/// cannot hold). (The borrowing read skips the prompt without building
/// it; this is what keeps that shortcut honest.)
pub fn check_request(data: &[u8]) -> Result<(), UsageError> {
    let [pick, body @ ..] = data else {
        return Ok(());
    };
    let (provider, path) = REQUESTS[usize::from(*pick) % REQUESTS.len()];
    let read = RequestFacts::read(provider, path, body);
    if provider == Provider::Stability || body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let fields = crate::request_fields::wanted(provider, path);
    let parsed = request::parse(body, request::base(provider, path, body), fields);
    match (read, parsed) {
        (Ok(read), Ok(parsed)) if read == parsed => Ok(()),
        (Err(_), Err(_)) => Ok(()),
        // JSON's grammar allows a string to hold a lone surrogate escape (`"\ud800"`, RFC 8259
        // §8.2), which a `Value` cannot: the shortcut, skipping the string, takes the body as
        // the providers' own parsers do. Anything else the full parse refuses, it must too.
        (Ok(_), Err(_)) if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() => Ok(()),
        (read, parsed) => Err(UsageError::FactsDisagree {
            provider,
            path,
            read: Box::new(read.map_err(|e| e.to_string())),
            parsed: Box::new(parsed.map_err(|e| e.to_string())),
        }),
    }
}
