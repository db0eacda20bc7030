//! What a request says about its cost, read once per request and shared by admission (the bound
//! it reserves) and the scanner (what its response is priced as).
//!
//! The facts: the model (from the body, or from the path for Gemini, or from Stability's form),
//! the most output the request allows, whether it streams, a bound on its input (the body's size
//! in bytes: a tokenizer never produces more tokens than the bytes of the text it encodes), and
//! Tavily's search and extract depths. A JSON body is read borrowing the few fields it needs and
//! checking the rest for syntax only; the prompt is never built.

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tollgate_domain::{Provider, RequestFields};

use crate::UsageError;

/// The facts of a request that bound and price what it can cost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// The model the request names: Gemini's from its path, else the body's `model` (a JSON
    /// field, or a field of Stability's form).
    pub model: Option<String>,
    /// The request's own output cap (`max_completion_tokens`, `max_tokens`,
    /// `max_output_tokens`, `generationConfig.maxOutputTokens`), if it sets one.
    pub max_output_tokens: Option<u64>,
    pub stream: bool,
    /// Upper bound on input tokens.
    pub input_tokens_bound: u64,
    /// The body is a JSON object with no top-level `stream_options`: the key can be spliced in
    /// without parsing the body again.
    pub lacks_stream_options: bool,
    /// Tavily's `search_depth` and `extract_depth`.
    pub search_depth: Option<String>,
    pub extract_depth: Option<String>,
    /// Elements of a Tavily extract's `urls` array (a single string counts as none here).
    pub urls: u64,
    /// The body's fields a price entry's bound reads (per-call providers and OpenAI images);
    /// `None` for other requests and for a request without a JSON body.
    pub fields: Option<RequestFields>,
}

impl RequestFacts {
    /// Reads the facts of a request to `provider` at `path` with a JSON (or empty) body;
    /// Stability's multipart form gives its `model` field. A body that is not a JSON object
    /// where the provider takes JSON is an error.
    pub fn read(provider: Provider, path: &str, body: &[u8]) -> Result<RequestFacts, UsageError> {
        let base = base(provider, path, body);
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(base);
        }
        if provider == Provider::Stability && !is_json_object(body) {
            return Ok(RequestFacts {
                model: multipart_field(body, "model"),
                ..base
            });
        }
        if crate::request_fields::wanted(provider, path) {
            // The bound reads the body's options: built whole, once (these bodies are small).
            return parse(body, base, true);
        }
        match peek(body, base.clone()) {
            Some(facts) => Ok(facts),
            None => parse(body, base, false),
        }
    }

    /// No facts at all, for scanning a response whose request is not known.
    pub fn none() -> &'static RequestFacts {
        static NONE: RequestFacts = RequestFacts {
            model: None,
            max_output_tokens: None,
            stream: false,
            input_tokens_bound: 0,
            lacks_stream_options: false,
            search_depth: None,
            extract_depth: None,
            urls: 0,
            fields: None,
        };
        &NONE
    }

    /// The facts of a request whose body is not read (one streamed through, or none).
    pub fn of_path(provider: Provider, path: &str) -> RequestFacts {
        RequestFacts::read(provider, path, b"").unwrap_or_else(|_| RequestFacts::default())
    }
}

/// Whether a body is (the start of) a JSON object, not a form: Stability takes both.
fn is_json_object(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// What the path and the body's size say, before the body is read.
pub(crate) fn base(provider: Provider, path: &str, body: &[u8]) -> RequestFacts {
    RequestFacts {
        model: path_model(provider, path),
        stream: path.ends_with(":streamGenerateContent"),
        input_tokens_bound: body.len() as u64,
        ..RequestFacts::default()
    }
}

/// The one rule for a model named by the path: Gemini's `/v1beta/models/{model}:{method}`.
pub fn path_model(provider: Provider, path: &str) -> Option<String> {
    if provider != Provider::Gemini {
        return None;
    }
    crate::gemini::model_and_method(path).map(|(model, _)| model.to_owned())
}

/// The facts of a JSON body built whole as a `Value`: the reference for [`peek`], and the
/// errors of a body that is not a JSON object.
pub(crate) fn parse(
    body: &[u8],
    base: RequestFacts,
    fields: bool,
) -> Result<RequestFacts, UsageError> {
    let json: Value =
        serde_json::from_slice(body).map_err(|e| UsageError::RequestNotJson(e.to_string()))?;
    let Some(object) = json.as_object() else {
        return Err(UsageError::RequestNotAnObject);
    };
    let number = |v: Option<&Value>| v.and_then(Value::as_u64);
    let text = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
    let max_output_tokens = number(object.get("max_completion_tokens"))
        .or_else(|| number(object.get("max_tokens")))
        .or_else(|| number(object.get("max_output_tokens")))
        .or_else(|| number(json.pointer("/generationConfig/maxOutputTokens")));
    Ok(RequestFacts {
        model: base.model.or_else(|| text("model")),
        max_output_tokens,
        stream: base.stream || object.get("stream").and_then(Value::as_bool) == Some(true),
        input_tokens_bound: base.input_tokens_bound,
        lacks_stream_options: !object.contains_key("stream_options"),
        search_depth: text("search_depth"),
        extract_depth: text("extract_depth"),
        urls: object
            .get("urls")
            .and_then(Value::as_array)
            .map_or(0, |a| a.len() as u64),
        fields: fields.then(|| crate::request_fields::read(object)),
    })
}

/// The fields the facts come from, borrowed from the body; everything else (the messages) is
/// checked for syntax and skipped without being built.
#[derive(serde::Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    max_output_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    stream: Option<&'a RawValue>,
    #[serde(borrow, rename = "generationConfig")]
    generation_config: Option<&'a RawValue>,
    /// Present at all, `null` included (an `Option` would read `null` as absent).
    #[serde(default, deserialize_with = "present")]
    stream_options: bool,
    #[serde(borrow)]
    search_depth: Option<&'a RawValue>,
    #[serde(borrow)]
    extract_depth: Option<&'a RawValue>,
    #[serde(borrow)]
    urls: Option<&'a RawValue>,
}

/// A field is there, whatever its value.
fn present<'de, D: serde::Deserializer<'de>>(value: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(value).map(|_| true)
}

#[derive(serde::Deserialize)]
struct PeekGenerationConfig<'a> {
    #[serde(borrow, rename = "maxOutputTokens")]
    max_output_tokens: Option<&'a RawValue>,
}

/// The facts of a JSON object body without building it as a `Value`. `None` when the body is
/// not a plain, well-formed JSON object (not an object, malformed, or naming one of these keys
/// twice): the full parse then gives the same facts, or the error.
fn peek(body: &[u8], base: RequestFacts) -> Option<RequestFacts> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let peek: Peek<'_> = serde_json::from_slice(body).ok()?;
    let number = |v: Option<&RawValue>| v.and_then(|v| serde_json::from_str::<u64>(v.get()).ok());
    let text = |v: Option<&RawValue>| v.and_then(|v| serde_json::from_str::<String>(v.get()).ok());
    let nested = match peek.generation_config {
        Some(v) if v.get().starts_with('{') => {
            let config: PeekGenerationConfig<'_> = serde_json::from_str(v.get()).ok()?;
            number(config.max_output_tokens)
        }
        _ => None,
    };
    let urls = match peek.urls {
        Some(v) if v.get().starts_with('[') => {
            serde_json::from_str::<Vec<&RawValue>>(v.get()).ok()?.len() as u64
        }
        _ => 0,
    };
    Some(RequestFacts {
        model: base.model.or_else(|| text(peek.model)),
        max_output_tokens: number(peek.max_completion_tokens)
            .or_else(|| number(peek.max_tokens))
            .or_else(|| number(peek.max_output_tokens))
            .or(nested),
        stream: base.stream || peek.stream.is_some_and(|v| v.get() == "true"),
        input_tokens_bound: base.input_tokens_bound,
        lacks_stream_options: !peek.stream_options,
        search_depth: text(peek.search_depth),
        extract_depth: text(peek.extract_depth),
        urls,
        fields: None,
    })
}

/// The value of a text field in a `multipart/form-data` body, without knowing the boundary:
/// the part whose header names it, up to the next CRLF.
fn multipart_field(body: &[u8], name: &str) -> Option<String> {
    let needle = format!("name=\"{name}\"");
    let at = memchr::memmem::find(body, needle.as_bytes())?;
    let rest = &body[at + needle.len()..];
    let start = memchr::memmem::find(rest, b"\r\n\r\n")? + 4;
    let value = &rest[start..];
    let end = memchr::memmem::find(value, b"\r\n").unwrap_or(value.len());
    let text = std::str::from_utf8(&value[..end]).ok()?.trim();
    (!text.is_empty() && text.len() <= 128).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &str = "/v1/chat/completions";

    #[test]
    fn openai_chat_facts() {
        let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":256,"stream":true}"#;
        let f = RequestFacts::read(Provider::OpenAi, CHAT, body).unwrap();
        assert_eq!(f.model.as_deref(), Some("gpt-4o"));
        assert_eq!(f.max_output_tokens, Some(256));
        assert!(f.stream);
        assert_eq!(f.input_tokens_bound, body.len() as u64);
    }

    #[test]
    fn gemini_model_comes_from_the_path() {
        let body = br#"{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":100}}"#;
        let path = "/v1beta/models/gemini-2.5-pro:streamGenerateContent";
        let f = RequestFacts::read(Provider::Gemini, path, body).unwrap();
        assert_eq!(f.model.as_deref(), Some("gemini-2.5-pro"));
        assert_eq!(f.max_output_tokens, Some(100));
        assert!(f.stream);
        // One rule for the path's model, whoever asks: a `/` is not part of a model's name.
        assert_eq!(
            path_model(Provider::Gemini, "/v1beta/models/a/b:generateContent"),
            None
        );
        assert_eq!(path_model(Provider::OpenAi, path), None);
    }

    #[test]
    fn reads_tavily_and_multipart_facts() {
        let f = RequestFacts::read(
            Provider::Tavily,
            "/extract",
            br#"{"messages":[{"content":"{\"model\":\"no\"}"}],"search_depth":"advanced",
                "extract_depth":"basic","urls":["a","b"]}"#,
        )
        .unwrap();
        assert_eq!(f.model, None);
        assert_eq!(f.search_depth.as_deref(), Some("advanced"));
        assert_eq!(f.extract_depth.as_deref(), Some("basic"));
        assert_eq!(f.urls, 2);
        // A per-call provider's options are kept for its bound; a chat request's are not.
        let fields = f.fields.unwrap();
        assert!(fields.fields.contains_key("search_depth"));
        let chat = RequestFacts::read(Provider::OpenAi, CHAT, br#"{"model":"gpt-4o"}"#).unwrap();
        assert_eq!(chat.fields, None);
        // No body: no fields (a job's status poll is bounded at one unit).
        let poll = RequestFacts::read(Provider::Firecrawl, "/v2/crawl/abc", b"").unwrap();
        assert_eq!(poll.fields, None);
        let form = b"--xyz\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\na cat\r\n\
                     --xyz\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nsd3.5-medium\r\n--xyz--\r\n";
        let path = "/v2beta/stable-image/generate/sd3";
        let f = RequestFacts::read(Provider::Stability, path, form).unwrap();
        assert_eq!(f.model.as_deref(), Some("sd3.5-medium"));
        // A legacy v1 generation's JSON: its `samples` is kept for the bound.
        let v1 = "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image";
        let body = br#" {"text_prompts":[{"text":"a cat"}],"samples":4}"#;
        let f = RequestFacts::read(Provider::Stability, v1, body).unwrap();
        let samples = f.fields.unwrap().fields.get("samples").cloned();
        assert_eq!(samples, Some(tollgate_domain::FieldValue::Count(4)));
    }

    #[test]
    fn peeking_reads_the_same_facts_as_the_full_parse() {
        let bodies = [
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"{\"model\":\"x\"}"}],"max_tokens":50}"#,
            r#"{"model":"gpt-4o","max_completion_tokens":7,"max_tokens":9,"stream":true}"#,
            r#"{"model":"o3","max_tokens":"many","max_output_tokens":12,"stream":"true"}"#,
            r#"{"model":42,"max_tokens":50.0,"stream":false}"#,
            r#"{"model":"m\u0031","max_tokens":-3}"#,
            r#"{"generationConfig":{"maxOutputTokens":64,"temperature":0.2},"contents":[]}"#,
            r#"{"generationConfig":[64],"max_output_tokens":5}"#,
            r#"{"generationConfig":{"maxOutputTokens":1,"maxOutputTokens":2}}"#,
            r#"{"model":"a","model":"b"}"#,
            r#"  {"stream" : true , "model" : "spaced"}  "#,
            r#"{"search_depth":"advanced","urls":["a",{"b":1},3],"extract_depth":7}"#,
            r#"{"urls":"one"}"#,
            r#"{"stream_options":null,"stream":true}"#,
            r#"{}"#,
        ];
        for body in bodies {
            let base = RequestFacts {
                input_tokens_bound: body.len() as u64,
                ..RequestFacts::default()
            };
            let full = parse(body.as_bytes(), base.clone(), false).unwrap();
            let read = RequestFacts::read(Provider::OpenAi, CHAT, body.as_bytes());
            assert_eq!(read.unwrap(), full, "{body}");
            if let Some(peeked) = peek(body.as_bytes(), base) {
                assert_eq!(peeked, full, "{body}");
            }
        }
        // The common body is read without the full parse.
        assert!(peek(bodies[0].as_bytes(), RequestFacts::default()).is_some());
        for bad in ["[1,2]", "{\"model\":", "\"text\"", "{\"a\":1}x"] {
            assert!(
                peek(bad.as_bytes(), RequestFacts::default()).is_none(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_body_that_is_not_a_json_object_is_an_error() {
        let read = |provider, body: &[u8]| RequestFacts::read(provider, CHAT, body);
        assert!(matches!(
            read(Provider::Anthropic, b"{\"model\": "),
            Err(UsageError::RequestNotJson(_))
        ));
        assert!(matches!(
            read(Provider::OpenAi, b"[1]"),
            Err(UsageError::RequestNotAnObject)
        ));
        // Multipart bodies are not JSON; an empty body is fine.
        assert!(read(Provider::Stability, b"--x\r\n").is_ok());
        assert!(read(Provider::Tavily, b" \n").is_ok());
    }
}
