//! The client's credential: found wherever its SDK puts it, removed from every slot, and
//! replaced by the real provider key in the slot that provider reads.
//!
//! SDKs disagree on where a key goes (`Authorization: Bearer`, `x-api-key`, `x-goog-api-key`,
//! `?key=`, Serper's `X-API-KEY`), and some send it in two places: the official Anthropic SDK
//! sends `Authorization: Bearer` as well as `x-api-key`. So every provider's route accepts every
//! slot, and every slot is stripped before the request leaves, whatever the provider.

use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use tollgate_domain::Provider;

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const X_GOOG_API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("no API key: send your Tollgate key where the provider's key would go")]
    Missing,
    #[error("two different API keys in one request: send one key")]
    Conflicting,
}

/// The client's key, taken from the first slot that has one, checking that any other slot
/// carries the same key.
pub fn client_key<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Result<&'a str, CredentialError> {
    let bearer = headers
        .get_all(AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let plain = [X_API_KEY, X_GOOG_API_KEY].into_iter().flat_map(|name| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .collect::<Vec<_>>()
    });
    let from_query = query.into_iter().flat_map(query_keys);
    let mut found: Option<&str> = None;
    for key in bearer
        .chain(plain)
        .chain(from_query)
        .filter(|k| !k.is_empty())
    {
        match found {
            None => found = Some(key),
            Some(existing) if existing == key => {}
            Some(_) => return Err(CredentialError::Conflicting),
        }
    }
    found.ok_or(CredentialError::Missing)
}

fn query_keys(query: &str) -> impl Iterator<Item = &str> {
    query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("key="))
}

/// Every header in which some provider's SDK sends a key: all are stripped before a request
/// leaves, whatever the provider.
pub const CREDENTIAL_HEADERS: [HeaderName; 3] = [AUTHORIZATION, X_API_KEY, X_GOOG_API_KEY];

/// Removes every credential slot from the headers.
pub fn strip_client_credentials(headers: &mut HeaderMap) {
    for name in CREDENTIAL_HEADERS {
        headers.remove(name);
    }
}

/// The query without any `key=` parameter (Gemini's query-string key), or `None` if nothing
/// remains.
pub fn strip_query_key(query: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && *pair != "key" && !pair.starts_with("key="))
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// The header through which `provider` reads its key, with the value to send.
pub fn provider_credential(
    provider: Provider,
    key: &str,
) -> Result<(HeaderName, HeaderValue), http::header::InvalidHeaderValue> {
    let (name, value) = match provider {
        Provider::Anthropic | Provider::Exa | Provider::Serper => (X_API_KEY, key.to_owned()),
        Provider::Gemini => (X_GOOG_API_KEY, key.to_owned()),
        Provider::OpenAi
        | Provider::Mistral
        | Provider::Tavily
        | Provider::Firecrawl
        | Provider::Stability => (AUTHORIZATION, format!("Bearer {key}")),
    };
    let mut value = HeaderValue::from_str(&value)?;
    value.set_sensitive(true);
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn every_sdk_slot_is_read() {
        let cases = [
            (headers(&[("authorization", "Bearer tg_a")]), None),
            (headers(&[("Authorization", "bearer  tg_a ")]), None),
            (headers(&[("x-api-key", "tg_a")]), None),
            (headers(&[("X-API-KEY", "tg_a")]), None),
            (headers(&[("x-goog-api-key", "tg_a")]), None),
            (headers(&[]), Some("alt=sse&key=tg_a")),
            // The Anthropic SDK sends both.
            (
                headers(&[("x-api-key", "tg_a"), ("authorization", "Bearer tg_a")]),
                None,
            ),
        ];
        for (h, q) in &cases {
            assert_eq!(client_key(h, *q), Ok("tg_a"), "{h:?} {q:?}");
        }
    }

    #[test]
    fn missing_and_conflicting_keys_are_refused() {
        assert_eq!(
            client_key(&headers(&[]), None),
            Err(CredentialError::Missing)
        );
        assert_eq!(
            client_key(&headers(&[("authorization", "Basic abc")]), Some("alt=sse")),
            Err(CredentialError::Missing)
        );
        assert_eq!(
            client_key(&headers(&[("x-api-key", "tg_a")]), Some("key=tg_b")),
            Err(CredentialError::Conflicting)
        );
    }

    #[test]
    fn every_slot_is_stripped_and_the_provider_slot_injected() {
        let mut h = headers(&[
            ("authorization", "Bearer tg_a"),
            ("x-api-key", "tg_a"),
            ("x-goog-api-key", "tg_a"),
            ("anthropic-version", "2023-06-01"),
        ]);
        strip_client_credentials(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(
            strip_query_key("alt=sse&key=tg_a").as_deref(),
            Some("alt=sse")
        );
        assert_eq!(strip_query_key("key=tg_a"), None);
        assert_eq!(
            strip_query_key("keyword=x&key").as_deref(),
            Some("keyword=x")
        );

        let (name, value) = provider_credential(Provider::Anthropic, "sk-ant").unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("x-api-key", "sk-ant")
        );
        assert!(value.is_sensitive());
        let (name, value) = provider_credential(Provider::OpenAi, "sk").unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("authorization", "Bearer sk")
        );
        let (name, _) = provider_credential(Provider::Gemini, "g").unwrap();
        assert_eq!(name.as_str(), "x-goog-api-key");
        assert!(provider_credential(Provider::Serper, "bad\nkey").is_err());
    }
}
