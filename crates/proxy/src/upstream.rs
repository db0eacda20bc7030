//! Where a provider's requests go: its configured base URL, parsed once at load.

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
    pub fn parse(base_url: &str) -> Result<Upstream, String> {
        let bad = || format!("{base_url:?} is not an http:// or https:// URL with a host");
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

#[cfg(test)]
mod tests {
    use super::*;

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
