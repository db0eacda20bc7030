//! The one change the gateway makes to a request's body before it goes upstream: usage asked
//! for on the client's behalf, and a client key carried in a body removed.

use serde_json::Value;
use tollgate_domain::Provider;
use tollgate_usage::RequestFacts;

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
}
