//! What admission needs to know from a request, and the one rewrite the gateway makes to it.
//!
//! Admission reserves an upper bound before anything is sent upstream, so it needs the model
//! (from the body, or from the path for Gemini), the most output the request allows, and a bound
//! on its input. The input bound is the body's size in bytes: a tokenizer never produces more
//! tokens than the bytes of the text it encodes.

use serde_json::Value;
use serde_json::value::RawValue;
use tollgate_domain::Provider;

use crate::errors::GatewayError;

/// The facts of a request that bound what it can cost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestFacts {
    pub model: Option<String>,
    /// The request's own output cap (`max_tokens`, `max_completion_tokens`, `max_output_tokens`,
    /// `generationConfig.maxOutputTokens`), if it sets one.
    pub max_output_tokens: Option<u64>,
    pub stream: bool,
    /// Upper bound on input tokens.
    pub input_tokens_bound: u64,
    /// The body is a JSON object with no top-level `stream_options`: the key can be spliced in
    /// without parsing the body again.
    pub lacks_stream_options: bool,
}

/// Reads the facts of a request to `provider` at `path` with a JSON (or empty) body. A body that
/// is not JSON where the gateway must read it is a 400 in the provider's shape.
pub fn inspect(provider: Provider, path: &str, body: &[u8]) -> Result<RequestFacts, GatewayError> {
    let input_tokens_bound = body.len() as u64;
    let path_model = gemini_model(provider, path);
    let stream = path.ends_with(":streamGenerateContent");
    if body.iter().all(u8::is_ascii_whitespace) || !expects_json(provider) {
        return Ok(RequestFacts {
            model: path_model,
            max_output_tokens: None,
            stream,
            input_tokens_bound,
            lacks_stream_options: false,
        });
    }
    match peek(body, path_model.as_deref(), stream, input_tokens_bound) {
        Some(facts) => Ok(facts),
        None => parse(body, path_model, stream, input_tokens_bound),
    }
}

/// The facts of a JSON body built whole as a `Value`: the reference for [`peek`], and the
/// errors of a body that is not a JSON object.
fn parse(
    body: &[u8],
    path_model: Option<String>,
    stream: bool,
    input_tokens_bound: u64,
) -> Result<RequestFacts, GatewayError> {
    let json: Value = serde_json::from_slice(body).map_err(|e| {
        GatewayError::BadRequest(format!("the request body is not valid JSON: {e}"))
    })?;
    let Some(object) = json.as_object() else {
        return Err(GatewayError::BadRequest(
            "the request body must be a JSON object".to_owned(),
        ));
    };
    let number = |v: Option<&Value>| v.and_then(Value::as_u64);
    let max_output_tokens = number(object.get("max_completion_tokens"))
        .or_else(|| number(object.get("max_tokens")))
        .or_else(|| number(object.get("max_output_tokens")))
        .or_else(|| number(json.pointer("/generationConfig/maxOutputTokens")));
    let model = path_model.or_else(|| {
        object
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    Ok(RequestFacts {
        model,
        max_output_tokens,
        stream: stream || object.get("stream").and_then(Value::as_bool) == Some(true),
        input_tokens_bound,
        lacks_stream_options: !object.contains_key("stream_options"),
    })
}

/// The fields admission reads, borrowed from the body; everything else (the messages) is
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
    #[serde(borrow)]
    stream_options: Option<&'a RawValue>,
}

#[derive(serde::Deserialize)]
struct PeekGenerationConfig<'a> {
    #[serde(borrow, rename = "maxOutputTokens")]
    max_output_tokens: Option<&'a RawValue>,
}

/// The facts of a JSON object body without building it as a `Value`. `None` when the body is
/// not a plain, well-formed JSON object (not an object, malformed, or naming one of these keys
/// twice): the full parse then gives the same facts, or the error, as before.
fn peek(
    body: &[u8],
    path_model: Option<&str>,
    stream: bool,
    input_tokens_bound: u64,
) -> Option<RequestFacts> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let peek: Peek<'_> = serde_json::from_slice(body).ok()?;
    let number = |v: Option<&RawValue>| v.and_then(|v| serde_json::from_str::<u64>(v.get()).ok());
    let nested = match peek.generation_config {
        Some(v) if v.get().starts_with('{') => {
            let config: PeekGenerationConfig<'_> = serde_json::from_str(v.get()).ok()?;
            number(config.max_output_tokens)
        }
        _ => None,
    };
    let max_output_tokens = number(peek.max_completion_tokens)
        .or_else(|| number(peek.max_tokens))
        .or_else(|| number(peek.max_output_tokens))
        .or(nested);
    let model = path_model.map(str::to_owned).or_else(|| {
        peek.model
            .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
    });
    Some(RequestFacts {
        model,
        max_output_tokens,
        stream: stream || peek.stream.is_some_and(|v| v.get() == "true"),
        input_tokens_bound,
        lacks_stream_options: peek.stream_options.is_none(),
    })
}

/// The name a request whose body names no model is priced under: the usage crate's name for
/// the path (a per-call endpoint, a Stability model), the one settlement prices the response
/// under; else the path's last segment lower-cased (an endpoint that is not billed per call,
/// priced by the provider's `"*"` entry if it has one).
pub fn endpoint_name(provider: Provider, path: &str) -> String {
    tollgate_usage::path_priced_name(provider, path).unwrap_or_else(|| {
        path.trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    })
}

/// Stability takes multipart form data; every other provider's API takes JSON.
fn expects_json(provider: Provider) -> bool {
    provider != Provider::Stability
}

/// Gemini names the model in the path: `/v1beta/models/gemini-2.5-pro:generateContent`.
fn gemini_model(provider: Provider, path: &str) -> Option<String> {
    if provider != Provider::Gemini {
        return None;
    }
    let after = path.split_once("/models/")?.1;
    let model = after.split_once(':').map_or(after, |(m, _)| m);
    (!model.is_empty()).then(|| model.to_owned())
}

/// Whether the gateway may rewrite a request's body before it goes upstream, so that the
/// upstream request must be sent chunked (its length is not known when its head leaves).
/// `inject_usage` is the `proxy.inject_stream_usage` setting.
pub fn may_rewrite(provider: Provider, path: &str, inject_usage: bool) -> bool {
    match provider {
        Provider::OpenAi => inject_usage && path.ends_with("/chat/completions"),
        // A Tavily body may carry the client's key (`api_key`, older clients), always removed.
        Provider::Tavily => true,
        _ => false,
    }
}

/// The body as it goes upstream when the gateway changes it; `None` when it goes unchanged.
///
/// - OpenAI-compatible streaming chat: `stream_options.include_usage: true` added (when
///   `inject_usage`) so that the final chunk carries usage.
/// - Tavily: the client's `api_key` removed from the body, wherever it is the credential slot
///   (the real key goes in `Authorization`), and `include_usage: true` added (when
///   `inject_usage`) so that the response reports the credits it cost.
///
/// A body that is not a JSON object goes unchanged; admission has already refused it where
/// it had to be JSON.
pub fn rewrite_body(
    provider: Provider,
    path: &str,
    body: &[u8],
    facts: &RequestFacts,
    inject_usage: bool,
) -> Option<Vec<u8>> {
    // A chat completion that is not a stream (most of them) goes as it came: its facts say so
    // without parsing the body a second time.
    if !may_rewrite(provider, path, inject_usage) || (provider == Provider::OpenAi && !facts.stream)
    {
        return None;
    }
    if provider == Provider::OpenAi && facts.lacks_stream_options {
        return Some(splice_stream_usage(body));
    }
    let mut json: Value = serde_json::from_slice(body).ok()?;
    let object = json.as_object_mut()?;
    let changed = match provider {
        Provider::OpenAi => request_stream_usage(object),
        Provider::Tavily => {
            let had_key = object.remove("api_key").is_some();
            let asked = inject_usage && object.get("include_usage") != Some(&Value::Bool(true));
            if asked {
                object.insert("include_usage".to_owned(), Value::Bool(true));
            }
            had_key || asked
        }
        _ => false,
    };
    if changed {
        serde_json::to_vec(&json).ok()
    } else {
        None
    }
}

/// A streaming chat request without `stream_options`, as it came with the key inserted first:
/// `{"stream_options":{"include_usage":true},` then the rest of the object. The object has a
/// member (its `stream`), so the comma always separates two, and the client's bytes, order and
/// spacing are kept.
fn splice_stream_usage(body: &[u8]) -> Vec<u8> {
    const MEMBER: &[u8] = br#""stream_options":{"include_usage":true},"#;
    let open = body.iter().position(|&b| b == b'{').map_or(0, |i| i + 1);
    let mut out = Vec::with_capacity(body.len() + MEMBER.len());
    out.extend_from_slice(&body[..open]);
    out.extend_from_slice(MEMBER);
    out.extend_from_slice(&body[open..]);
    out
}

/// Adds `stream_options.include_usage: true` to a streaming request that lacks it; answers
/// whether it changed anything.
fn request_stream_usage(object: &mut serde_json::Map<String, Value>) -> bool {
    if object.get("stream").and_then(Value::as_bool) != Some(true) {
        return false;
    }
    let options = object
        .entry("stream_options")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    let Some(options) = options.as_object_mut() else {
        return false;
    };
    if options.get("include_usage").and_then(Value::as_bool) == Some(true) {
        return false;
    }
    options.insert("include_usage".to_owned(), Value::Bool(true));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_chat_facts() {
        let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":256,"stream":true}"#;
        let f = inspect(Provider::OpenAi, "/v1/chat/completions", body).unwrap();
        assert_eq!(f.model.as_deref(), Some("gpt-4o"));
        assert_eq!(f.max_output_tokens, Some(256));
        assert!(f.stream);
        assert_eq!(f.input_tokens_bound, body.len() as u64);
    }

    #[test]
    fn gemini_model_comes_from_the_path() {
        let body = br#"{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":100}}"#;
        let f = inspect(
            Provider::Gemini,
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
            body,
        )
        .unwrap();
        assert_eq!(f.model.as_deref(), Some("gemini-2.5-pro"));
        assert_eq!(f.max_output_tokens, Some(100));
        assert!(f.stream);
    }

    #[test]
    fn reservations_and_settlement_price_the_same_name() {
        let name = |p, path| endpoint_name(p, path);
        assert_eq!(
            name(Provider::Stability, "/v2beta/stable-image/generate/core"),
            "stable-image-core"
        );
        assert_eq!(
            name(Provider::Stability, "/v2beta/stable-image/generate/sd3"),
            "sd3.5-large"
        );
        assert_eq!(
            name(Provider::Firecrawl, "/v2/batch/scrape/xyz"),
            "batch-scrape"
        );
        assert_eq!(name(Provider::Exa, "/findSimilar"), "findsimilar");
        assert_eq!(name(Provider::Tavily, "/usage"), "usage");
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
            r#"{}"#,
        ];
        for body in bodies {
            let full = parse(body.as_bytes(), None, false, body.len() as u64).unwrap();
            let inspected = inspect(Provider::OpenAi, "/v1/chat/completions", body.as_bytes());
            assert_eq!(inspected.unwrap(), full, "{body}");
            if let Some(peeked) = peek(body.as_bytes(), None, false, body.len() as u64) {
                assert_eq!(peeked, full, "{body}");
            }
        }
        // The common body is read without the full parse.
        assert!(peek(bodies[0].as_bytes(), None, false, 0).is_some());
        for bad in ["[1,2]", "{\"model\":", "\"text\"", "{\"a\":1}x"] {
            assert!(peek(bad.as_bytes(), None, false, 0).is_none(), "{bad}");
        }
    }

    #[test]
    fn malformed_json_is_a_400() {
        let e = inspect(Provider::Anthropic, "/v1/messages", b"{\"model\": ").unwrap_err();
        assert_eq!(e.status(), 400);
        let e = inspect(Provider::OpenAi, "/v1/chat/completions", b"[1]").unwrap_err();
        assert_eq!(e.status(), 400);
        // Multipart bodies are not read; an empty body is fine.
        assert!(
            inspect(
                Provider::Stability,
                "/v2beta/stable-image/generate/core",
                b"--x\r\n"
            )
            .is_ok()
        );
        assert!(inspect(Provider::Tavily, "/search", b"").is_ok());
    }

    #[test]
    fn stream_usage_is_requested_once() {
        let rewrite = |path: &str, body: &[u8], inject: bool| {
            let facts = inspect(Provider::OpenAi, path, body).unwrap();
            rewrite_body(Provider::OpenAi, path, body, &facts, inject)
        };
        let add = |body: &str| {
            rewrite("/v1/chat/completions", body.as_bytes(), true)
                .map(|b| String::from_utf8(b).unwrap())
        };
        // Spliced in: the client's bytes stay as they were around it.
        let out = add(" {\"model\": \"gpt-4o\",\n \"stream\": true}\n").unwrap();
        assert_eq!(
            out,
            " {\"stream_options\":{\"include_usage\":true},\"model\": \"gpt-4o\",\n \"stream\": true}\n"
        );
        let out = add(r#"{"stream":true,"stream_options":{"include_obfuscation":false}}"#).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["stream_options"]["include_obfuscation"], false);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(
            add(r#"{"stream":true,"stream_options":{"include_usage":true}}"#),
            None
        );
        assert_eq!(add(r#"{"stream":false}"#), None);
        assert_eq!(rewrite("/v1/responses", br#"{"stream":true}"#, true), None);
        assert_eq!(
            rewrite("/v1/chat/completions", br#"{"stream":true}"#, false),
            None
        );
    }

    #[test]
    fn a_tavily_body_loses_the_clients_key_and_asks_for_its_credits() {
        let rewrite = |body: &str, inject: bool| {
            let facts = inspect(Provider::Tavily, "/search", body.as_bytes()).unwrap();
            rewrite_body(Provider::Tavily, "/search", body.as_bytes(), &facts, inject)
                .map(|b| serde_json::from_slice::<Value>(&b).unwrap())
        };
        let v = rewrite(r#"{"query":"q","api_key":"tg-secret"}"#, true).unwrap();
        assert_eq!(v, serde_json::json!({"query": "q", "include_usage": true}));
        // The key goes even when usage is not injected.
        let v = rewrite(r#"{"query":"q","api_key":"tg-secret"}"#, false).unwrap();
        assert_eq!(v, serde_json::json!({"query": "q"}));
        // A client that asked for usage and sent no body key: nothing to change.
        assert_eq!(rewrite(r#"{"query":"q","include_usage":true}"#, true), None);
        assert_eq!(rewrite(r#"{"query":"q"}"#, false), None);
        let v = rewrite(r#"{"query":"q","include_usage":false}"#, true).unwrap();
        assert_eq!(v["include_usage"], true);
    }
}
