//! The one change the gateway makes to a request's body before it goes upstream: usage asked
//! for on the client's behalf, and a client key carried in a body removed.

use serde_json::Value;
use tollgate_domain::Provider;
use tollgate_usage::RequestFacts;

/// Where a request to `provider` at `path` sets its output cap, for the endpoints whose output
/// the gateway may cap to fit what is left of a budget: a top-level field, or Gemini's
/// `generationConfig.maxOutputTokens`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputCap {
    /// OpenAI chat: `max_completion_tokens`, or `max_tokens` when the request uses that.
    Chat,
    Field(&'static str),
    GeminiGenerationConfig,
}

pub fn output_cap_field(provider: Provider, path: &str) -> Option<OutputCap> {
    match provider {
        Provider::OpenAi if path.ends_with("/chat/completions") => Some(OutputCap::Chat),
        Provider::OpenAi if path.ends_with("/responses") => {
            Some(OutputCap::Field("max_output_tokens"))
        }
        Provider::OpenAi if path.ends_with("/completions") => Some(OutputCap::Field("max_tokens")),
        Provider::Anthropic if path.ends_with("/messages") => Some(OutputCap::Field("max_tokens")),
        Provider::Mistral
            if path.ends_with("/chat/completions") || path.ends_with("/fim/completions") =>
        {
            Some(OutputCap::Field("max_tokens"))
        }
        Provider::Gemini
            if path.ends_with(":generateContent") || path.ends_with(":streamGenerateContent") =>
        {
            Some(OutputCap::GeminiGenerationConfig)
        }
        _ => None,
    }
}

/// The body with its output cap set to `cap` (the request's own cap, lowered to fit a budget);
/// `None` when the body is not a JSON object or the endpoint has no cap to set.
pub fn cap_output(provider: Provider, path: &str, body: &[u8], cap: u64) -> Option<Vec<u8>> {
    let field = output_cap_field(provider, path)?;
    let mut json: Value = serde_json::from_slice(body).ok()?;
    let object = json.as_object_mut()?;
    match field {
        OutputCap::Chat => {
            let key = if object.contains_key("max_tokens")
                && !object.contains_key("max_completion_tokens")
            {
                "max_tokens"
            } else {
                "max_completion_tokens"
            };
            object.insert(key.to_owned(), Value::from(cap));
        }
        OutputCap::Field(key) => {
            object.insert(key.to_owned(), Value::from(cap));
        }
        OutputCap::GeminiGenerationConfig => {
            let config = object
                .entry("generationConfig")
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            config
                .as_object_mut()?
                .insert("maxOutputTokens".to_owned(), Value::from(cap));
        }
    }
    serde_json::to_vec(&json).ok()
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
    if options.is_null() {
        // `"stream_options": null` is OpenAI's way of leaving them unset.
        *options = Value::Object(serde_json::Map::new());
    }
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

    fn facts(provider: Provider, path: &str, body: &[u8]) -> RequestFacts {
        RequestFacts::read(provider, path, body).unwrap()
    }

    #[test]
    fn stream_usage_is_requested_once() {
        let rewrite = |path: &str, body: &[u8], inject: bool| {
            let facts = facts(Provider::OpenAi, path, body);
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
        let out = add(r#"{"stream":true,"stream_options":null}"#).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true, "{v}");
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
            let facts = facts(Provider::Tavily, "/search", body.as_bytes());
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

    #[test]
    fn output_caps_are_set_where_each_provider_reads_them() {
        let capped = |provider, path, body: &str| {
            let out = cap_output(provider, path, body.as_bytes(), 300).unwrap();
            serde_json::from_slice::<Value>(&out).unwrap()
        };
        let chat = "/v1/chat/completions";
        assert_eq!(
            capped(Provider::OpenAi, chat, r#"{"model":"o3"}"#)["max_completion_tokens"],
            300
        );
        let legacy = capped(
            Provider::OpenAi,
            chat,
            r#"{"model":"gpt-4o","max_tokens":9000}"#,
        );
        assert_eq!(
            (
                legacy["max_tokens"].as_u64(),
                legacy.get("max_completion_tokens")
            ),
            (Some(300), None)
        );
        assert_eq!(
            capped(Provider::OpenAi, "/v1/responses", "{}")["max_output_tokens"],
            300
        );
        assert_eq!(
            capped(
                Provider::Anthropic,
                "/v1/messages",
                r#"{"max_tokens":4096}"#
            )["max_tokens"],
            300
        );
        assert_eq!(capped(Provider::Mistral, chat, "{}")["max_tokens"], 300);
        let gemini = "/v1beta/models/gemini-2.5-pro:generateContent";
        let g = capped(
            Provider::Gemini,
            gemini,
            r#"{"generationConfig":{"temperature":0.5}}"#,
        );
        assert_eq!(
            g["generationConfig"],
            serde_json::json!({"temperature": 0.5, "maxOutputTokens": 300})
        );
        assert_eq!(
            capped(Provider::Gemini, gemini, "{}")["generationConfig"]["maxOutputTokens"],
            300
        );
        assert_eq!(
            cap_output(Provider::OpenAi, "/v1/embeddings", b"{}", 300),
            None
        );
        assert_eq!(cap_output(Provider::Tavily, "/search", b"{}", 300), None);
    }
}
