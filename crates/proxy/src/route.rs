//! Routing: `/{provider}/rest?query` → the provider and the path to send upstream.
//!
//! The path after the provider segment and the query are kept byte for byte, so an SDK whose
//! base URL is `http://gw:8080/openai/v1` reaches `https://api.openai.com/v1/...` unchanged.

use tollgate_domain::Provider;

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route<'a> {
    pub provider: Provider,
    /// The path after `/{provider}`, always starting with `/` (just `/` when nothing follows).
    pub path: &'a str,
    pub query: Option<&'a str>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no provider in the path: send requests to /<provider>/... (known: {known})", known = Provider::known_names())]
    NoProvider,
    #[error("unknown provider {0:?} in the path (known: {known})", known = Provider::known_names())]
    UnknownProvider(String),
    /// `.` or `..` as a path segment, also percent-encoded (RFC 3986, 3.3 and 6.2.2.3): such a
    /// path could name something other than what it routes to once an upstream resolves it.
    #[error("the path has a dot segment (`.` or `..`, perhaps percent-encoded); send it resolved")]
    DotSegment,
}

/// Splits a request target (`/openai/v1/chat/completions?x=1`) into its route. Provider names
/// are matched exactly in lower case, as SDK base URLs are written.
pub fn route(target: &str) -> Result<Route<'_>, RouteError> {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let rest = path.strip_prefix('/').ok_or(RouteError::NoProvider)?;
    let (segment, remainder) = match rest.find('/') {
        Some(at) => (
            rest.get(..at).unwrap_or_default(),
            rest.get(at..).unwrap_or("/"),
        ),
        None => (rest, "/"),
    };
    if segment.is_empty() {
        return Err(RouteError::NoProvider);
    }
    if path.split('/').any(is_dot_segment) {
        return Err(RouteError::DotSegment);
    }
    let provider = Provider::ALL
        .into_iter()
        .find(|p| p.as_str() == segment)
        .ok_or_else(|| RouteError::UnknownProvider(segment.to_owned()))?;
    Ok(Route {
        provider,
        path: remainder,
        query,
    })
}

/// `.` or `..`, with any of its dots written `%2e` or `%2E`.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
            _ => return false,
        };
        dots += 1;
    }
    matches!(dots, 1 | 2)
}

/// The upstream request target: the configured base URL's path prefix (if any), the route's
/// path, and the query.
pub fn upstream_target(base_path: &str, path: &str, query: Option<&str>) -> String {
    let base = base_path.trim_end_matches('/');
    let mut target = String::with_capacity(base.len() + path.len() + query.map_or(0, str::len) + 1);
    target.push_str(base);
    target.push_str(path);
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        target.push('?');
        target.push_str(query);
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_paths_route_to_their_provider() {
        let r = route("/openai/v1/chat/completions").unwrap();
        assert_eq!(
            (r.provider, r.path, r.query),
            (Provider::OpenAi, "/v1/chat/completions", None)
        );
        let r =
            route("/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse").unwrap();
        assert_eq!(r.provider, Provider::Gemini);
        assert_eq!(
            r.path,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
        );
        assert_eq!(r.query, Some("alt=sse"));
        let r = route("/tavily").unwrap();
        assert_eq!(r.path, "/");
        let r = route("/exa/search?").unwrap();
        assert_eq!(r.query, Some(""));
    }

    #[test]
    fn unknown_and_missing_providers_are_refused() {
        assert_eq!(route("/"), Err(RouteError::NoProvider));
        assert_eq!(route(""), Err(RouteError::NoProvider));
        assert_eq!(route("//v1"), Err(RouteError::NoProvider));
        assert_eq!(
            route("/openia/v1/chat"),
            Err(RouteError::UnknownProvider("openia".into()))
        );
        assert!(route("/OpenAI/v1").is_err());
        assert!(route("/metaphor/search").is_err(), "the route name is exa");
    }

    #[test]
    fn upstream_targets_keep_path_and_query() {
        assert_eq!(upstream_target("", "/v1/messages", None), "/v1/messages");
        assert_eq!(
            upstream_target("/v2/", "/scrape", Some("a=1")),
            "/v2/scrape?a=1"
        );
        assert_eq!(upstream_target("", "/search", Some("")), "/search");
    }

    #[test]
    fn dot_segments_are_refused_however_they_are_written() {
        for target in [
            "/openai/../admin",
            "/openai/v1/../../admin",
            "/openai/%2e%2e/admin",
            "/openai/v1/.%2E/x",
            "/openai/./v1/chat/completions",
            "/openai/v1/%2E",
            "/../openai/v1",
        ] {
            assert_eq!(route(target), Err(RouteError::DotSegment), "{target}");
        }
        // Dots inside a segment are names, not dot segments; the query is not a path.
        for target in [
            "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
            "/openai/v1/files/a..b",
            "/openai/v1/x...",
            "/openai/v1/models?after=..",
        ] {
            assert!(route(target).is_ok(), "{target}");
        }
    }
}
