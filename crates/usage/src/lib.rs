//! Reads the usage out of every provider's responses, JSON and streaming, as the body streams to
//! the client.
//!
//! [`scanner`] picks a [`Scanner`] for a call from its provider, path, request body and response
//! headers; [`Scanner::feed`] takes the body chunk by chunk exactly as it was received (still
//! compressed, if it was); [`Scanner::finish`] reports the normalized usage as [`Scanned`]. It is
//! pure and synchronous: no I/O, no allocation per chunk in steady state, memory bounded
//! whatever the body's length, and the same result for every way of splitting the body.
//!
//! How a body is read: an SSE stream is framed by [`sse`](crate::sse) and only events that can
//! carry usage are kept (64 KiB each, larger ones are streamed); a JSON body (and Gemini's
//! streamed JSON array) is never buffered: [`json_scan`](crate::json_scan) tokenizes it as it
//! arrives and copies out only the values below (16 KiB each at most).
//!
//! | provider / endpoint | values read | normalized |
//! |---|---|---|
//! | OpenAI chat, completions, embeddings (JSON, SSE) | `usage.{prompt_tokens, completion_tokens, prompt_tokens_details.{cached_tokens, cache_write_tokens}, completion_tokens_details.reasoning_tokens}`, `model`, `error`; `data: [DONE]` | input = prompt, output = completion (both already include cached / reasoning) |
//! | OpenAI Responses (JSON; SSE `response.completed` / `.incomplete` / `.failed`, `error`) | `[response.]usage.{input_tokens, output_tokens, input_tokens_details.{cached_tokens, cache_write_tokens}, output_tokens_details.reasoning_tokens}`, `[response.]model`, `[response.]error`, `message` | as chat |
//! | OpenAI images (JSON; SSE `image_generation.completed`) | `usage` (GPT image models), `data[]` | tokens as Responses; units = images returned |
//! | Anthropic messages (JSON; SSE `message_start`, `message_delta`, `message_stop`, `error`) | `[message.]usage.{input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens, cache_creation.ephemeral_1h_input_tokens}`, `[message.]model`, `error` | input = input + cache writes + cache reads; deltas are cumulative (last wins) |
//! | Gemini `generateContent`, `streamGenerateContent` (JSON, JSON array, `alt=sse`) | `[*.]usageMetadata.{promptTokenCount, cachedContentTokenCount, candidatesTokenCount, thoughtsTokenCount, toolUsePromptTokenCount}`, `[*.]error`, `candidates[].finishReason`; model from the URL | input = prompt + tool-use prompt; output = candidates + thoughts; cumulative (last wins) |
//! | Mistral chat, FIM, embeddings (JSON, SSE) | as OpenAI chat, plus `num_cached_tokens` | as OpenAI chat |
//! | Tavily search, extract, crawl, map, research | `usage.credits`, `results[]`, `detail` | units = credits, else the depth tariff (see `search`) |
//! | Serper | `credits`, `message` | units = credits, else 1 |
//! | Exa search, contents, findSimilar, answer | `costDollars.total`, `error` | reported cost in nano-USD (exact decimal), units = 1 |
//! | Firecrawl scrape, crawl, map, search, extract, batch scrape | `creditsUsed`, `data.metadata.creditsUsed`, `error` | units = credits, else 1 for scrape and map |
//! | Stability image generation | `finish_reason`, `image`, `artifacts[].finishReason`, `errors`; raw image bytes | units = successful images |
//!
//! `usage_found` distinguishes unknown usage from zero; `complete` says the terminal event (or
//! the end of the JSON value) was reached; `error` carries a provider error, including one sent
//! inside a 200 stream. A truncated stream reports the last cumulative values seen with
//! `complete = false`. A token count is a non-negative integer up to `u64::MAX` (`12`, `12.0`,
//! `"12"`); anything else in its place (`-5`, `12.5`, `1e30`) is not read as usage but reported
//! as `unreadable_count`, so that the gateway can say what the provider sent.

mod anthropic;
mod decode;
mod error;
pub mod fuzzing;
mod gemini;
mod handler;
pub mod inspect;
mod json_scan;
mod mistral;
mod openai;
mod request;
mod request_fields;
mod search;
mod sse;
mod stability;

use tollgate_domain::{Provider, Usage};

use crate::decode::{Body, Encoding};
use crate::handler::{Ctx, ErrorsOnly, Handler};
use crate::json_scan::JsonScan;
pub use crate::request::{RequestFacts, path_model};
pub use crate::request_fields::reads_options;
use crate::sse::SseFramer;

pub use crate::error::UsageError;

/// What the scanner needs to know about a call, all of it available when the response headers
/// arrive.
#[derive(Clone, Copy, Debug)]
pub struct RequestInfo<'a> {
    pub provider: Provider,
    pub method: &'a str,
    /// The path after the `/{provider}` prefix, e.g. `/v1/chat/completions` or
    /// `/v1beta/models/gemini-2.5-pro:streamGenerateContent`.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// What the request said, read once by [`RequestFacts::read`] for admission: the model,
    /// Tavily's depths, Stability's `model`.
    pub request: &'a RequestFacts,
    pub response_status: u16,
    pub response_content_type: Option<&'a str>,
    pub response_content_encoding: Option<&'a str>,
}

/// The usage read from one response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scanned {
    /// The response's model (OpenAI, Anthropic, Mistral), else the request's; Gemini's from the
    /// URL; for per-call providers the endpoint name prices are keyed by.
    pub model: Option<String>,
    /// Normalized usage; its subsets are clamped to their supersets.
    pub usage: Usage,
    /// Whether the usage is known; `false` means unknown, not zero.
    pub usage_found: bool,
    /// The units were computed from the tariff (a request's depth, one image, one credit)
    /// rather than reported by the provider.
    pub units_from_tariff: bool,
    /// The body reached its terminal event or the end of its JSON value.
    pub complete: bool,
    /// A provider error: the body of a non-2xx response, or an error inside a 200 stream.
    pub error: Option<String>,
    /// The body could not be decompressed (or its Content-Encoding is not supported); whatever
    /// was read before that is still reported.
    pub decode_error: Option<String>,
    /// The first token count the provider sent that is not one — negative, fractional, beyond
    /// `u64`, not a number — as `field = text` (`prompt_tokens = 1e30`). It is left out of
    /// `usage`; the gateway bills such a call at its reservation instead.
    pub unreadable_count: Option<String>,
}

/// How the decoded body is framed.
#[derive(Debug)]
enum Framing {
    Sse(SseFramer),
    Json(JsonScan),
    /// Image bytes: only their count matters.
    Raw,
    /// No Content-Type: decided by the first byte (`{` or `[` is JSON, else SSE or raw bytes).
    Auto {
        raw_otherwise: bool,
    },
}

/// The decoded side of a scanner: framing plus the provider's handler.
#[derive(Debug)]
pub(crate) struct Core {
    framing: Framing,
    handler: Handler,
    /// Compressed bytes handed to the decoder in front of this core, and the bytes it decoded
    /// from them: the decoder's budget ([`decode`](crate::decode)).
    compressed_in: u64,
    decoded_out: u64,
}

impl Default for Core {
    fn default() -> Self {
        Core {
            framing: Framing::Raw,
            handler: Handler::Unmetered(ErrorsOnly::default()),
            compressed_in: 0,
            decoded_out: 0,
        }
    }
}

impl Core {
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        if let Framing::Auto { raw_otherwise } = self.framing {
            let Some(&first) = chunk.iter().find(|b| !b.is_ascii_whitespace()) else {
                return;
            };
            self.framing = if first == b'{' || first == b'[' {
                Framing::Json(JsonScan::new(self.handler.body_spec()))
            } else if raw_otherwise {
                Framing::Raw
            } else {
                Framing::Sse(SseFramer::new())
            };
        }
        let handler = &mut self.handler;
        match &mut self.framing {
            Framing::Sse(f) => f.feed(chunk, handler),
            Framing::Json(scan) => scan.feed(chunk, &mut |id, c| handler.capture(id, c)),
            Framing::Raw => handler.raw(chunk.len()),
            Framing::Auto { .. } => {}
        }
    }

    fn finish(mut self, ctx: &Ctx) -> handler::Outcome {
        if let Framing::Json(scan) = &mut self.framing {
            let handler = &mut self.handler;
            scan.finish(&mut |id, c| handler.capture(id, c));
            handler.body_end(scan.is_complete());
        }
        self.handler.finish(ctx)
    }
}

/// What a decoder writes into: the scanner, within the decoding budget. Past it the write fails,
/// which ends the decoding (and the scan) of that body; the body itself still reaches the client.
impl std::io::Write for Core {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.decoded_out += buf.len() as u64;
        if self.decoded_out > decode::budget(self.compressed_in) {
            return Err(std::io::Error::other(decode::OVER_BUDGET));
        }
        self.feed(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads one response body. Create it with [`scanner`] when the response headers arrive.
#[derive(Debug)]
pub struct Scanner {
    body: Body,
    /// Compressed bytes received but not decoded yet (decoding is sliced in time, see
    /// [`decode`](crate::decode)).
    backlog: Vec<u8>,
    /// The last feed decoded for a good part of its slice (see [`Scanner::busy`]).
    busy: bool,
    ctx: Ctx,
    /// The model named by the path (Gemini, Stability), which outranks the body's.
    path_model: Option<String>,
    decode_error: Option<String>,
}

impl Scanner {
    /// Feeds the next chunk of the body as received. Never fails and never panics; memory stays
    /// bounded however much is fed.
    ///
    /// A compressed body is decoded for about a millisecond per feed; what is left waits for
    /// the next one, or for [`Scanner::finish`] (see [`Scanner::has_backlog`]).
    pub fn feed(&mut self, chunk: &[u8]) {
        self.busy = self.body.feed_sliced(&mut self.backlog, chunk);
    }

    /// Whether the last feed held its thread a while decoding (a good part of its slice), or
    /// left compressed bytes for later: a proxy should then let other requests run before it
    /// passes this body's next chunk, or a body slow to decode takes its thread slice after
    /// slice.
    pub fn busy(&self) -> bool {
        self.busy || self.has_backlog()
    }

    /// Whether compressed bytes are still waiting to be decoded: [`Scanner::finish`] may then
    /// take up to the decoding budget's worth of CPU, so it belongs off a request thread.
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Bytes held by the scanner's growable buffers (event data and value captures), which
    /// [`sse::EVENT_CAP`](crate) and the capture cap bound; the decoders' buffers are fixed at
    /// creation. For tests and metrics.
    pub fn buffered_capacity(&self) -> usize {
        match &self.body.core().framing {
            Framing::Sse(f) => f.buffered_capacity(),
            Framing::Json(scan) => scan.buffered_capacity(),
            Framing::Raw | Framing::Auto { .. } => 0,
        }
    }

    /// Ends the body (complete or cut short) and reports what was read.
    pub fn finish(mut self) -> Scanned {
        self.body.feed_backlog(std::mem::take(&mut self.backlog));
        let (core, decode_error) = self.body.finish();
        let outcome = core.finish(&self.ctx);
        let error = match outcome.error {
            Some(e) => Some(e),
            None if !self.ctx.success() => Some(format!("HTTP {}", self.ctx.status)),
            None => None,
        };
        Scanned {
            model: self.path_model.or(outcome.model).or(self.ctx.request_model),
            usage: outcome.usage.clamped(),
            usage_found: outcome.usage_found,
            units_from_tariff: outcome.units_from_tariff,
            complete: outcome.complete,
            error,
            decode_error: self.decode_error.or(decode_error),
            unreadable_count: outcome.unreadable_count,
        }
    }
}

/// The name a call whose body names no model is priced under, read from its path: a per-call
/// provider's endpoint (`search`, `batch-scrape`) or Stability's model (`stable-image-core`,
/// `sd3.5-large` for an SD3 call whose form is not read). Admission reserves under this name and
/// the scanner reports it, so both find the same price. `None` for a path that is not billed
/// per call.
pub fn path_priced_name(provider: Provider, path: &str) -> Option<String> {
    match provider {
        Provider::Stability => stability::handler(path, None).1,
        Provider::Tavily | Provider::Serper | Provider::Exa | Provider::Firecrawl => {
            search::endpoint(provider, path)
        }
        Provider::OpenAi | Provider::Anthropic | Provider::Gemini | Provider::Mistral => None,
    }
}

/// The job a status poll reports on, when its response carries the job's credits so far
/// rather than the poll's own: Firecrawl's `GET /v2/crawl/{id}` and `GET /v2/batch/scrape/{id}`
/// (also under `/v1`). Such a poll is billed only for the increase over what earlier polls of
/// the job billed.
pub fn cumulative_job<'a>(provider: Provider, method: &str, path: &'a str) -> Option<&'a str> {
    if provider != Provider::Firecrawl || !method.eq_ignore_ascii_case("GET") {
        return None;
    }
    let mut segments = path
        .split('/')
        .filter(|s| !s.is_empty())
        .skip_while(|s| matches!(*s, "v0" | "v1" | "v2"));
    let id = match (segments.next(), segments.next(), segments.next()) {
        (Some("crawl"), Some(id), None) => id,
        (Some("batch"), Some("scrape"), Some(id)) => id,
        _ => return None,
    };
    segments.next().is_none().then_some(id)
}

/// The name a call is priced under: the model its request names, else the name of its path
/// ([`path_priced_name`]: a per-call endpoint, a Stability model), else the path's last segment
/// lower-cased (an endpoint that is not billed per call, priced by the provider's `"*"` entry if
/// it has one). Admission reserves under this name and settlement prices under it unless the
/// response names the model.
pub fn priced_name(provider: Provider, path: &str, request_model: Option<&str>) -> String {
    if let Some(model) = request_model {
        return model.to_owned();
    }
    path_priced_name(provider, path).unwrap_or_else(|| {
        path.trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    })
}

/// The scanner for one call.
pub fn scanner(req: &RequestInfo<'_>) -> Scanner {
    let facts = req.request;
    let (handler, path_model) = match req.provider {
        Provider::OpenAi => (openai::handler(req.path), None),
        Provider::Mistral => (mistral::handler(req.path), None),
        Provider::Anthropic => (anthropic::handler(req.path), None),
        Provider::Gemini => gemini::handler(req.path),
        Provider::Stability => stability::handler(req.path, facts.model.as_deref()),
        Provider::Tavily | Provider::Serper | Provider::Exa | Provider::Firecrawl => {
            match search::PerCall::new(
                req.provider,
                req.path,
                facts.search_depth.as_deref(),
                facts.extract_depth.as_deref(),
            ) {
                Some(h) => (Handler::PerCall(h), None),
                None => (Handler::Unmetered(ErrorsOnly::default()), None),
            }
        }
    };
    let content_type = req
        .response_content_type
        .map(|ct| ct.trim().to_ascii_lowercase());
    let framing = match content_type.as_deref() {
        Some(ct) if ct.contains("event-stream") => Framing::Sse(SseFramer::new()),
        Some(ct) if ct.starts_with("image/") => Framing::Raw,
        Some(ct) if ct.contains("json") => Framing::Json(JsonScan::new(handler.body_spec())),
        Some(_) if req.provider == Provider::Stability => Framing::Raw,
        Some(_) => Framing::Json(JsonScan::new(handler.body_spec())),
        None if req.provider == Provider::Gemini && gemini::is_sse(req.path, req.query) => {
            Framing::Sse(SseFramer::new())
        }
        None => Framing::Auto {
            raw_otherwise: req.provider == Provider::Stability,
        },
    };
    let sniff_gzip = !matches!(framing, Framing::Raw);
    let core = Core {
        framing,
        handler,
        ..Core::default()
    };
    let (body, decode_error) = match Encoding::parse(req.response_content_encoding) {
        Ok(encoding) => (Body::new(core, encoding, sniff_gzip), None),
        Err(reason) => (
            Body::Failed {
                core,
                reason: String::new(),
            },
            Some(reason.to_string()),
        ),
    };
    Scanner {
        body,
        backlog: Vec::new(),
        busy: false,
        ctx: Ctx {
            status: req.response_status,
            request_model: facts.model.clone(),
        },
        path_model,
        decode_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_status_polls_are_recognised() {
        let job = |method, path| cumulative_job(Provider::Firecrawl, method, path);
        assert_eq!(job("GET", "/v2/crawl/abc-123"), Some("abc-123"));
        assert_eq!(job("GET", "/v1/batch/scrape/xyz/"), Some("xyz"));
        assert_eq!(job("GET", "/v2/crawl/abc-123/errors"), None);
        assert_eq!(job("POST", "/v2/crawl"), None);
        assert_eq!(job("DELETE", "/v2/crawl/abc-123"), None);
        assert_eq!(job("GET", "/v2/scrape"), None);
        assert_eq!(
            cumulative_job(Provider::Tavily, "GET", "/crawl/abc-123"),
            None
        );
    }

    fn info(provider: Provider, path: &'static str) -> RequestInfo<'static> {
        RequestInfo {
            provider,
            method: "POST",
            path,
            query: None,
            request: RequestFacts::none(),
            response_status: 200,
            response_content_type: None,
            response_content_encoding: None,
        }
    }

    #[test]
    fn framing_without_a_content_type_follows_the_first_byte() {
        let mut s = scanner(&info(Provider::OpenAi, "/v1/chat/completions"));
        s.feed(b"data: {\"model\":\"m\",\"usage\":{\"prompt_tokens\":2}}\n\ndata: [DONE]\n\n");
        let got = s.finish();
        assert_eq!((got.usage.input_tokens, got.complete), (2, true));

        let mut s = scanner(&info(Provider::OpenAi, "/v1/chat/completions"));
        s.feed(b"  {\"usage\":{\"prompt_tokens\":2}}");
        assert_eq!(s.finish().usage.input_tokens, 2);

        let mut s = scanner(&info(
            Provider::Stability,
            "/v2beta/stable-image/generate/core",
        ));
        s.feed(b"\x89PNG\r\n");
        assert_eq!(s.finish().usage.units, 1);
    }

    #[test]
    fn the_request_model_is_the_fallback_for_the_responses() {
        let response = b"{\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1}}";
        let path = "/v1/chat/completions";
        let facts = RequestFacts::read(Provider::OpenAi, path, br#"{"model":"gpt-4o-mini"}"#);
        let facts = facts.unwrap();
        let mut s = scanner(&RequestInfo {
            request: &facts,
            ..info(Provider::OpenAi, path)
        });
        s.feed(response);
        assert_eq!(s.finish().model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(
            priced_name(Provider::Exa, "/findSimilar", None),
            "findsimilar"
        );
        assert_eq!(priced_name(Provider::Tavily, "/usage", None), "usage");
        assert_eq!(priced_name(Provider::OpenAi, path, Some("o3")), "o3");
    }

    #[test]
    fn an_empty_body_is_unknown_usage() {
        for provider in Provider::ALL {
            let got = scanner(&info(provider, "/v1/chat/completions")).finish();
            assert!(!got.usage_found, "{provider}");
            assert!(!got.complete, "{provider}");
        }
    }

    #[test]
    fn a_count_that_is_not_one_is_reported_not_read() {
        let scan = |provider, path, body: &str| {
            let mut s = scanner(&info(provider, path));
            s.feed(body.as_bytes());
            s.finish()
        };
        let chat = "/v1/chat/completions";
        for reported in ["-5", "12.5", "1e30", "18446744073709551616"] {
            let body =
                format!(r#"{{"usage":{{"prompt_tokens":{reported},"completion_tokens":10}}}}"#);
            let got = scan(Provider::OpenAi, chat, &body);
            let want = format!("prompt_tokens = {reported}");
            assert_eq!(got.unreadable_count.as_deref(), Some(want.as_str()));
            assert_eq!((got.usage.input_tokens, got.usage.output_tokens), (0, 10));
        }
        // At the top of u64 it is a count; whether a call could use it is the gateway's rule.
        let body = r#"{"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":10}}"#;
        let got = scan(Provider::OpenAi, chat, body);
        assert_eq!(
            (got.usage.input_tokens, got.unreadable_count),
            (u64::MAX, None)
        );

        // A stream keeps the first one, whatever later events say.
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":\
            {\"model\":\"claude\",\"usage\":{\"input_tokens\":-3,\"output_tokens\":1}}}\n\n\
            event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n";
        let mut s = scanner(&RequestInfo {
            response_content_type: Some("text/event-stream"),
            ..info(Provider::Anthropic, "/v1/messages")
        });
        s.feed(stream.as_bytes());
        let got = s.finish();
        assert_eq!(got.unreadable_count.as_deref(), Some("input_tokens = -3"));
        assert_eq!(got.usage.output_tokens, 7);

        let gemini = "/v1beta/models/gemini-2.5-pro:generateContent";
        let body = r#"{"usageMetadata":{"promptTokenCount":"lots","candidatesTokenCount":2}}"#;
        let got = scan(Provider::Gemini, gemini, body);
        assert_eq!(
            got.unreadable_count.as_deref(),
            Some(r#"promptTokenCount = "lots""#)
        );
    }

    #[test]
    fn a_non_2xx_without_a_body_names_the_status() {
        let req = RequestInfo {
            response_status: 503,
            ..info(Provider::Anthropic, "/v1/messages")
        };
        assert_eq!(scanner(&req).finish().error.as_deref(), Some("HTTP 503"));
    }
}
