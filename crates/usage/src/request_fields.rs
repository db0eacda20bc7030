//! The fields of a request's JSON body that a price entry's bound reads (`[models."x".bound]`
//! in `pricing/`): Exa's `numResults` and `contents.summary`, Firecrawl's `formats` and
//! `limit`, Tavily's depths and `urls`, Serper's `num`, an image request's `n` and `quality`.
//! Read from the body parsed once by [`crate::RequestFacts::read`], for the requests whose
//! charge depends on their options: per-call providers and OpenAI's image endpoints.

use serde_json::{Map, Value};
use tollgate_domain::{FieldValue, Provider, RequestFields};

/// The most texts kept of one array (`formats`): a bound asks whether one is there.
const MAX_LIST_TEXTS: usize = 16;

/// Whether a request's bound reads its fields.
pub(crate) fn wanted(provider: Provider, path: &str) -> bool {
    match provider {
        Provider::Tavily | Provider::Serper | Provider::Exa | Provider::Firecrawl => true,
        Provider::OpenAi => path.contains("/images/"),
        Provider::Stability => reads_options(provider, path),
        _ => false,
    }
}

/// Whether a Stability request's JSON body holds options its bound reads: the legacy v1
/// generation API's (`samples`). Every other Stability body (v2beta's multipart forms) is
/// streamed through unread, and bounded at one image.
pub fn reads_options(provider: Provider, path: &str) -> bool {
    provider == Provider::Stability && path.starts_with("/v1/generation/")
}

/// Top-level keys, and the keys of objects one level down as `outer.inner`.
pub(crate) fn read(object: &Map<String, Value>) -> RequestFields {
    let mut fields = RequestFields::default();
    for (key, value) in object {
        if let Value::Object(inner) = value {
            for (inner_key, inner_value) in inner {
                if let Some(v) = field(inner_value) {
                    fields.insert(format!("{key}.{inner_key}"), v);
                }
            }
        }
        if let Some(v) = field(value) {
            fields.insert(key.clone(), v);
        }
    }
    fields
}

/// A JSON value as a field; `null` is no field at all.
fn field(value: &Value) -> Option<FieldValue> {
    let short = |t: &str| (t.len() <= RequestFields::MAX_TEXT).then(|| t.to_owned());
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => FieldValue::Flag(*b),
        Value::Number(n) => n.as_u64().map_or(FieldValue::Other, FieldValue::Count),
        Value::String(t) => short(t).map_or(FieldValue::Other, FieldValue::Text),
        Value::Array(items) => FieldValue::List {
            len: items.len() as u64,
            texts: items
                .iter()
                .filter_map(|item| match item {
                    Value::String(t) => short(t),
                    Value::Object(o) => o.get("type").and_then(Value::as_str).and_then(short),
                    _ => None,
                })
                .take(MAX_LIST_TEXTS)
                .collect(),
        },
        Value::Object(_) => FieldValue::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(body: &str) -> RequestFields {
        let json: Value = serde_json::from_str(body).unwrap();
        read(json.as_object().unwrap())
    }

    #[test]
    fn reads_top_level_and_one_level_down() {
        let f = fields(
            r#"{"url":"https://a","limit":50,"scrapeOptions":{"formats":["markdown",{"type":"json","schema":{}}],"proxy":"enhanced","deep":{"x":1}},
                "contents":{"summary":true,"text":null},"numResults":-3,"ratio":0.5,"flag":false}"#,
        );
        let get = |k: &str| f.fields.get(k).cloned();
        assert_eq!(get("limit"), Some(FieldValue::Count(50)));
        assert_eq!(
            get("scrapeOptions.formats"),
            Some(FieldValue::List {
                len: 2,
                texts: vec!["markdown".into(), "json".into()]
            })
        );
        assert_eq!(
            get("scrapeOptions.proxy"),
            Some(FieldValue::Text("enhanced".into()))
        );
        assert_eq!(get("scrapeOptions"), Some(FieldValue::Other));
        assert_eq!(get("contents.summary"), Some(FieldValue::Flag(true)));
        // Two levels down is not read; null is absent; a number that is not a count is Other.
        assert_eq!(get("scrapeOptions.deep.x"), None);
        assert_eq!(get("contents.text"), None);
        assert_eq!(get("numResults"), Some(FieldValue::Other));
        assert_eq!(get("ratio"), Some(FieldValue::Other));
        assert_eq!(get("flag"), Some(FieldValue::Flag(false)));
    }

    #[test]
    fn keeps_few_and_short_fields() {
        let long = "x".repeat(RequestFields::MAX_TEXT + 1);
        let f = fields(&format!(r#"{{"query":"{long}"}}"#));
        assert_eq!(f.fields.get("query"), Some(&FieldValue::Other));
        let many: Vec<String> = (0..500).map(|i| format!("\"k{i}\":{i}")).collect();
        let f = fields(&format!("{{{}}}", many.join(",")));
        assert_eq!(f.fields.len(), RequestFields::MAX_FIELDS);
        assert!(wanted(Provider::OpenAi, "/v1/images/generations"));
        assert!(!wanted(Provider::OpenAi, "/v1/chat/completions"));
        assert!(wanted(Provider::Exa, "/search"));
    }
}
