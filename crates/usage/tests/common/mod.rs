//! The fixture table shared by the integration tests: each fixture, the call it answers, and
//! what the scanner must report for it.

#![allow(dead_code)]
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failure here is a failed test"
)]

use std::io::Write;
use std::path::PathBuf;

use tollgate_domain::{Provider, Usage};
use tollgate_usage::{RequestFacts, RequestInfo, Scanned, scanner};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[derive(Clone, Debug)]
pub struct Case {
    pub file: &'static str,
    pub provider: Provider,
    pub path: &'static str,
    pub query: Option<&'static str>,
    pub content_type: Option<&'static str>,
    pub status: u16,
    pub request: Option<&'static str>,
    pub want: Scanned,
}

impl Case {
    pub fn body(&self) -> Vec<u8> {
        std::fs::read(fixture(self.file)).unwrap()
    }
    pub fn is_sse(&self) -> bool {
        self.file.ends_with(".sse")
    }
    /// What the gateway reads from the case's request body, as it does before admission.
    pub fn facts(&self) -> RequestFacts {
        self.request.map_or_else(RequestFacts::default, |body| {
            RequestFacts::read(self.provider, self.path, body.as_bytes()).unwrap()
        })
    }
    pub fn info<'a>(
        &'a self,
        facts: &'a RequestFacts,
        encoding: Option<&'a str>,
    ) -> RequestInfo<'a> {
        RequestInfo {
            provider: self.provider,
            method: "POST",
            path: self.path,
            query: self.query,
            request: facts,
            response_status: self.status,
            response_content_type: self.content_type,
            response_content_encoding: encoding,
        }
    }
}

/// Feeds `body` in chunks of `chunk` bytes (0: whole).
pub fn scan_chunks(case: &Case, body: &[u8], encoding: Option<&str>, chunk: usize) -> Scanned {
    let mut s = scanner(&case.info(&case.facts(), encoding));
    if chunk == 0 {
        s.feed(body);
    } else {
        body.chunks(chunk).for_each(|c| s.feed(c));
    }
    s.finish()
}

/// Feeds `body` split at the given (sorted) offsets.
pub fn scan_splits(case: &Case, body: &[u8], encoding: Option<&str>, cuts: &[usize]) -> Scanned {
    let mut s = scanner(&case.info(&case.facts(), encoding));
    let mut from = 0;
    for &cut in cuts {
        s.feed(&body[from..cut]);
        from = cut;
    }
    s.feed(&body[from..]);
    s.finish()
}

pub fn compress(coding: &str, body: &[u8]) -> Vec<u8> {
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                e.write_all(body).unwrap();
            }
            out
        }
        "zstd" => zstd::encode_all(body, 3).unwrap(),
        other => panic!("unknown coding {other}"),
    }
}

fn tokens(input: u64, cached: u64, written: u64, output: u64, reasoning: u64) -> Usage {
    Usage {
        input_tokens: input,
        cached_input_tokens: cached,
        cache_creation_input_tokens: written,
        output_tokens: output,
        reasoning_tokens: reasoning,
        ..Usage::default()
    }
}

fn units(n: u64) -> Usage {
    Usage {
        units: n,
        ..Usage::default()
    }
}

/// A complete, successful read.
fn found(model: &str, usage: Usage) -> Scanned {
    Scanned {
        model: Some(model.to_owned()),
        usage,
        usage_found: true,
        units_from_tariff: false,
        complete: true,
        error: None,
        decode_error: None,
        unreadable_count: None,
    }
}

fn tariff(model: &str, n: u64) -> Scanned {
    Scanned {
        units_from_tariff: true,
        ..found(model, units(n))
    }
}

fn unknown(model: Option<&str>, complete: bool, error: Option<&str>) -> Scanned {
    Scanned {
        model: model.map(str::to_owned),
        usage: Usage::default(),
        usage_found: false,
        units_from_tariff: false,
        complete,
        error: error.map(str::to_owned),
        decode_error: None,
        unreadable_count: None,
    }
}

const SSE: Option<&str> = Some("text/event-stream");
const JSON: Option<&str> = Some("application/json");

fn case(file: &'static str, provider: Provider, path: &'static str, want: Scanned) -> Case {
    let content_type = if file.ends_with(".sse") {
        SSE
    } else if file.ends_with(".png") {
        Some("image/png")
    } else {
        JSON
    };
    Case {
        file,
        provider,
        path,
        query: None,
        content_type,
        status: 200,
        request: None,
        want,
    }
}

pub fn cases() -> Vec<Case> {
    use Provider::*;
    const CHAT: &str = "/v1/chat/completions";
    let mut all = vec![
        case(
            "openai-chat.json",
            OpenAi,
            CHAT,
            found("gpt-4o-2024-08-06", tokens(1117, 1024, 0, 46, 0)),
        ),
        case(
            "openai-chat-stream-usage.sse",
            OpenAi,
            CHAT,
            found("gpt-4o-mini-2024-07-18", tokens(9, 0, 0, 12, 0)),
        ),
        case(
            "openai-chat-stream-no-usage.sse",
            OpenAi,
            CHAT,
            unknown(Some("gpt-4o-mini-2024-07-18"), true, None),
        ),
        case(
            "openai-chat-stream-cut.sse",
            OpenAi,
            CHAT,
            unknown(Some("gpt-4o-mini-2024-07-18"), false, None),
        ),
        case(
            "openai-chat-stream-error.sse",
            OpenAi,
            CHAT,
            unknown(
                Some("o3-mini-2025-01-31"),
                false,
                Some("The server had an error while processing your request."),
            ),
        ),
        Case {
            status: 401,
            ..case(
                "openai-error-401.json",
                OpenAi,
                CHAT,
                unknown(
                    None,
                    true,
                    Some(
                        "Incorrect API key provided: sk-xxxx. You can find your API key at https://platform.openai.com/account/api-keys.",
                    ),
                ),
            )
        },
        case(
            "openai-responses.json",
            OpenAi,
            "/v1/responses",
            found("o3-2025-04-16", tokens(328, 128, 0, 552, 512)),
        ),
        case(
            "openai-responses-stream.sse",
            OpenAi,
            "/v1/responses",
            found("gpt-4.1-2025-04-14", tokens(37, 0, 0, 11, 0)),
        ),
        case(
            "openai-responses-stream-large.sse",
            OpenAi,
            "/v1/responses",
            found("gpt-4.1-2025-04-14", tokens(1200, 1024, 0, 20000, 0)),
        ),
        case(
            "openai-responses-stream-incomplete.sse",
            OpenAi,
            "/v1/responses",
            found("o3-2025-04-16", tokens(20, 0, 0, 16, 0)),
        ),
        case(
            "openai-responses-stream-failed.sse",
            OpenAi,
            "/v1/responses",
            Scanned {
                error: Some("The model failed to generate a response.".into()),
                ..found("o3-2025-04-16", tokens(20, 0, 0, 0, 0))
            },
        ),
        case(
            "openai-responses-stream-error-event.sse",
            OpenAi,
            "/v1/responses",
            unknown(Some("o3-2025-04-16"), false, Some("Something went wrong")),
        ),
        case(
            "openai-embeddings.json",
            OpenAi,
            "/v1/embeddings",
            found("text-embedding-3-small", tokens(8, 0, 0, 0, 0)),
        ),
        Case {
            request: Some(r#"{"model":"gpt-image-1","prompt":"a cat","n":1}"#),
            ..case(
                "openai-images.json",
                OpenAi,
                "/v1/images/generations",
                found(
                    "gpt-image-1",
                    Usage {
                        units: 1,
                        ..tokens(50, 0, 0, 50, 0)
                    },
                ),
            )
        },
        Case {
            request: Some(r#"{"model":"dall-e-3","prompt":"a cat","n":2}"#),
            ..case(
                "openai-images-dalle.json",
                OpenAi,
                "/v1/images/generations",
                found("dall-e-3", units(2)),
            )
        },
        Case {
            request: Some(
                r#"{"model":"gpt-image-1","prompt":"a cat","stream":true,"partial_images":1}"#,
            ),
            ..case(
                "openai-images-stream.sse",
                OpenAi,
                "/v1/images/generations",
                found(
                    "gpt-image-1",
                    Usage {
                        units: 1,
                        ..tokens(50, 0, 0, 4200, 0)
                    },
                ),
            )
        },
        case(
            "anthropic-messages.json",
            Anthropic,
            "/v1/messages",
            found(
                "claude-sonnet-4-20250514",
                Usage {
                    cache_creation_1h_input_tokens: 2051,
                    ..tokens(4146, 0, 2051, 503, 0)
                },
            ),
        ),
        case(
            "anthropic-messages-stream.sse",
            Anthropic,
            "/v1/messages",
            found("claude-opus-4-1-20250805", tokens(12500, 12000, 0, 140, 0)),
        ),
        case(
            "anthropic-messages-stream-error.sse",
            Anthropic,
            "/v1/messages",
            Scanned {
                complete: false,
                error: Some("Overloaded".into()),
                ..found("claude-3-5-haiku-20241022", tokens(25, 0, 0, 15, 0))
            },
        ),
        Case {
            status: 529,
            ..case(
                "anthropic-error-529.json",
                Anthropic,
                "/v1/messages",
                unknown(None, true, Some("Overloaded")),
            )
        },
        case(
            "gemini-generate.json",
            Gemini,
            "/v1beta/models/gemini-2.5-pro:generateContent",
            found("gemini-2.5-pro", tokens(4106, 2048, 0, 500, 380)),
        ),
        Case {
            query: Some("alt=sse"),
            ..case(
                "gemini-stream.sse",
                Gemini,
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                found("gemini-2.5-flash", tokens(5, 0, 0, 230, 186)),
            )
        },
        case(
            "gemini-stream-array.json",
            Gemini,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            found("gemini-2.5-flash", tokens(5, 0, 0, 230, 186)),
        ),
        Case {
            status: 429,
            ..case(
                "gemini-error.json",
                Gemini,
                "/v1beta/models/gemini-2.5-pro:generateContent",
                unknown(
                    Some("gemini-2.5-pro"),
                    true,
                    Some("Resource has been exhausted (e.g. check quota)."),
                ),
            )
        },
        case(
            "gemini-stream-array-error.json",
            Gemini,
            "/v1/models/gemini-2.5-flash:streamGenerateContent",
            Scanned {
                error: Some("An internal error has occurred.".into()),
                ..found("gemini-2.5-flash", tokens(5, 0, 0, 225, 186))
            },
        ),
        case(
            "mistral-chat.json",
            Mistral,
            CHAT,
            found("mistral-small-latest", tokens(16, 0, 0, 34, 0)),
        ),
        case(
            "mistral-chat-stream.sse",
            Mistral,
            CHAT,
            found("mistral-large-latest", tokens(10, 4, 0, 12, 0)),
        ),
        case(
            "mistral-embeddings.json",
            Mistral,
            "/v1/embeddings",
            found("mistral-embed", tokens(15, 0, 0, 0, 0)),
        ),
        case(
            "tavily-search.json",
            Tavily,
            "/search",
            found("search", units(2)),
        ),
        Case {
            request: Some(r#"{"query":"Who is Leo Messi?","search_depth":"advanced"}"#),
            ..case(
                "tavily-search-no-usage.json",
                Tavily,
                "/search",
                tariff("search", 2),
            )
        },
        Case {
            request: Some(r#"{"urls":["a","b","c","d","e","f","g","h"],"extract_depth":"basic"}"#),
            ..case(
                "tavily-extract.json",
                Tavily,
                "/extract",
                tariff("extract", 2),
            )
        },
        Case {
            status: 401,
            ..case(
                "tavily-error.json",
                Tavily,
                "/search",
                unknown(
                    Some("search"),
                    true,
                    Some("Unauthorized: missing or invalid API key."),
                ),
            )
        },
        case(
            "serper-search.json",
            Serper,
            "/search",
            found("search", units(1)),
        ),
        case(
            "exa-search.json",
            Exa,
            "/search",
            found(
                "search",
                Usage {
                    units: 1,
                    reported_cost_nanousd: Some(7_000_000),
                    ..Usage::default()
                },
            ),
        ),
        case(
            "firecrawl-scrape.json",
            Firecrawl,
            "/v2/scrape",
            found("scrape", units(5)),
        ),
        case(
            "firecrawl-crawl-status.json",
            Firecrawl,
            "/v2/crawl/123-456",
            found("crawl", units(36)),
        ),
        case(
            "firecrawl-search.json",
            Firecrawl,
            "/v2/search",
            found("search", units(2)),
        ),
        Case {
            status: 402,
            ..case(
                "firecrawl-error.json",
                Firecrawl,
                "/v2/scrape",
                unknown(
                    Some("scrape"),
                    true,
                    Some("Insufficient credits to perform this request."),
                ),
            )
        },
        case(
            "stability-core.json",
            Stability,
            "/v2beta/stable-image/generate/core",
            tariff("stable-image-core", 1),
        ),
        case(
            "stability-filtered.json",
            Stability,
            "/v2beta/stable-image/generate/sd3",
            tariff("sd3.5-large", 0),
        ),
        Case {
            status: 400,
            ..case(
                "stability-error.json",
                Stability,
                "/v2beta/stable-image/generate/ultra",
                unknown(
                    Some("stable-image-ultra"),
                    true,
                    Some("prompt: cannot be empty"),
                ),
            )
        },
        case(
            "stability-ultra.png",
            Stability,
            "/v2beta/stable-image/generate/ultra",
            tariff("stable-image-ultra", 1),
        ),
    ];
    all.sort_by_key(|c| c.file);
    all
}
