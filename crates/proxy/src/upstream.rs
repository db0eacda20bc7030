//! Where a provider's requests go: its configured base URL, parsed once at load, its address,
//! resolved asynchronously and cached for a short time, and the head each request carries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::{Error, ErrorType};
use tollgate_config::ProxySettings;

use crate::context::{BodyState, RequestCtx};
use crate::credentials::CREDENTIAL_HEADERS;
use crate::errors::ProxyError;
use crate::route::upstream_target;
use crate::snapshot::ProviderRoute;

/// How long a resolved upstream address is reused before it is looked up again.
const ADDRESS_TTL: Duration = Duration::from_secs(30);

/// A provider's upstream: the address to connect to, TLS and SNI, and the path prefix that
/// comes before the client's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// `host:port`.
    pub address: String,
    pub tls: bool,
    /// The host name: SNI for TLS, and the `Host` header.
    pub host: String,
    /// The `Host` header value (with the port when it is not the scheme's default).
    pub authority: String,
    /// Path prefix without a trailing slash (empty for an origin).
    pub base_path: String,
}

impl Upstream {
    /// Parses `https://api.openai.com`, `http://127.0.0.1:8001/prefix`, `http://[::1]:9000`.
    pub fn parse(base_url: &str) -> Result<Upstream, ProxyError> {
        let bad = || ProxyError::BadUpstream {
            url: base_url.to_owned(),
            reason: "not an http:// or https:// URL with a host",
        };
        let (tls, rest) = if let Some(rest) = base_url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = base_url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad());
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => (
                rest.get(..at).unwrap_or_default(),
                rest.get(at..).unwrap_or_default(),
            ),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(bad());
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse::<u16>().map_err(|_| bad())?,
                None => default_port,
            };
            (format!("[{host}]"), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), port.parse::<u16>().map_err(|_| bad())?),
                None => (authority.to_owned(), default_port),
            }
        };
        Ok(Upstream {
            address: format!("{host}:{port}"),
            tls,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            authority: authority.to_owned(),
            base_path: path.trim_end_matches('/').to_owned(),
        })
    }
}

/// Resolved upstream addresses. Pingora's own peer constructor resolves names on the request
/// thread and panics when resolution fails, so names are resolved here, off the request
/// thread's blocking path, and only an address is handed to Pingora.
#[derive(Debug, Default)]
pub struct AddressCache {
    entries: Mutex<HashMap<String, (SocketAddr, Instant)>>,
}

impl AddressCache {
    /// The address of `host:port`; `None` when the name does not resolve.
    pub async fn resolve(&self, address: &str) -> Option<SocketAddr> {
        if let Ok(literal) = address.parse::<SocketAddr>() {
            return Some(literal);
        }
        let cached = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(address)
            .filter(|(_, at)| at.elapsed() < ADDRESS_TTL)
            .map(|(addr, _)| *addr);
        if cached.is_some() {
            return cached;
        }
        let resolved = tokio::net::lookup_host(address).await.ok()?.next()?;
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(address.to_owned(), (resolved, Instant::now()));
        Some(resolved)
    }
}

/// The Pingora peer for a provider's request, with the snapshot's timeouts.
pub async fn peer(
    addresses: &AddressCache,
    upstream: &Upstream,
    proxy: &ProxySettings,
) -> pingora::Result<Box<HttpPeer>> {
    let address = addresses.resolve(&upstream.address).await.ok_or_else(|| {
        Error::explain(
            ErrorType::ConnectNoRoute,
            format!("cannot resolve {}", upstream.host),
        )
    })?;
    let mut peer = HttpPeer::new(address, upstream.tls, upstream.host.clone());
    peer.options.connection_timeout =
        Some(Duration::from_millis(proxy.upstream_connect_timeout_ms));
    peer.options.read_timeout = Some(Duration::from_millis(proxy.upstream_read_timeout_ms));
    Ok(Box::new(peer))
}

/// The request head as it goes to the provider: its target under the upstream's base path, its
/// `Host`, the client's credential removed from every slot and the real key injected, and
/// `Accept-Encoding: identity` (the body is scanned for usage; an uncompressed response keeps
/// that cheap and exact). A body read and admitted whole goes with its exact length; one that
/// may be rewritten goes chunked.
pub fn prepare_request(
    route: &ProviderRoute,
    ctx: &RequestCtx,
    request: &mut RequestHeader,
) -> pingora::Result<()> {
    let (name, value) = route
        .credential
        .clone()
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "provider key"))?;
    let target = upstream_target(&route.upstream.base_path, &ctx.path, ctx.query.as_deref());
    let uri = http::Uri::try_from(target)
        .map_err(|e| Error::because(ErrorType::InternalError, "upstream target", e))?;
    request.set_uri(uri);
    request.insert_header(http::header::HOST, route.host.clone())?;
    // Through RequestHeader, not its HeaderMap, so that its header-case map stays in step.
    for name in &CREDENTIAL_HEADERS {
        request.remove_header(name);
    }
    request.insert_header(name, value)?;
    request.insert_header(
        http::header::ACCEPT_ENCODING,
        http::HeaderValue::from_static("identity"),
    )?;
    match &ctx.body {
        BodyState::Admitted(body) => {
            let length = http::HeaderValue::from(body.len());
            request.insert_header(http::header::CONTENT_LENGTH, length)?;
            request.remove_header(&http::header::EXPECT);
        }
        BodyState::Held { chunked: true, .. } => {
            request.remove_header(&http::header::CONTENT_LENGTH);
            request.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
        }
        BodyState::Held { .. } | BodyState::PassThrough => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_resolve_and_unknown_names_do_not() {
        let cache = AddressCache::default();
        let literal = cache.resolve("127.0.0.1:8001").await;
        assert_eq!(literal, Some("127.0.0.1:8001".parse().unwrap()));
        let named = cache.resolve("localhost:8001").await.unwrap();
        assert!(named.ip().is_loopback());
        assert_eq!(cache.resolve("localhost:8001").await, Some(named));
        assert_eq!(cache.resolve("no-such-host.invalid:443").await, None);
    }

    #[test]
    fn base_urls_parse() {
        let u = Upstream::parse("https://api.openai.com").unwrap();
        assert_eq!(
            (
                u.address.as_str(),
                u.tls,
                u.host.as_str(),
                u.base_path.as_str()
            ),
            ("api.openai.com:443", true, "api.openai.com", "")
        );
        let u = Upstream::parse("http://127.0.0.1:8001/v2/").unwrap();
        assert_eq!((u.address.as_str(), u.tls), ("127.0.0.1:8001", false));
        assert_eq!(
            (u.authority.as_str(), u.base_path.as_str()),
            ("127.0.0.1:8001", "/v2")
        );
        let u = Upstream::parse("http://[::1]:9000").unwrap();
        assert_eq!((u.address.as_str(), u.host.as_str()), ("[::1]:9000", "::1"));
        for bad in ["ftp://x", "https://", "http://host:port", "api.openai.com"] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }
}
