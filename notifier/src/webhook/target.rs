//! A webhook URL taken apart: scheme, host, port and path. Only the syntax is checked here;
//! where the URL may point is [`super::address`]'s decision.

use crate::Error;

/// Longest webhook URL accepted.
pub const MAX_URL_LEN: usize = 2_048;
/// Longest host name (RFC 1035).
pub const MAX_HOST_LEN: usize = 253;

/// Where a webhook URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    /// Lowercase, without IPv6 brackets: a DNS name or an IP literal.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Target {
    /// Parses `url`: http(s), a host name or IP literal, an optional port, no credentials.
    pub fn parse(url: &str) -> Result<Self, Error> {
        if url.is_empty() {
            return Err(Error::invalid("url", "is required"));
        }
        if url.len() > MAX_URL_LEN || url.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(Error::invalid("url", format!("must be at most {MAX_URL_LEN} bytes without spaces")));
        }
        let (https, rest) = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
            _ => {
                return Err(Error::WebhookUrlNotAllowed {
                    problem: "must be an http:// or https:// URL".into(),
                });
            }
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return Err(Error::invalid("url", "must not carry credentials"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) =
                bracketed.split_once(']').ok_or_else(|| Error::invalid("url", "unclosed IPv6 bracket"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(Error::invalid("url", "brackets must hold an IPv6 address"));
            }
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(|| Error::invalid("url", "bad port"))?)),
            }
        } else {
            match authority.split_once(':') {
                Some((_, port)) if port.contains(':') => {
                    return Err(Error::invalid("url", "IPv6 hosts must be in brackets"));
                }
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(Error::invalid("url", "has no host"));
        }
        let host = host.to_ascii_lowercase();
        let is_ipv6 = host.contains(':');
        if !is_ipv6
            && (host.len() > MAX_HOST_LEN
                || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'))
        {
            return Err(Error::invalid("url", "host must be a DNS name or an IP address"));
        }
        let port = match port {
            None if https => 443,
            None => 80,
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| Error::invalid("url", "port must be 1-65535"))?,
        };
        let path = tail.split('#').next().unwrap_or_default();
        let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
        Ok(Self { https, host, port, path })
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        match (self.https, self.port) {
            (false, 80) | (true, 443) => host,
            (_, port) => format!("{host}:{port}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("http://127.0.0.1:8080/hook?a=1#frag").unwrap();
        assert_eq!(
            t,
            Target { https: false, host: "127.0.0.1".into(), port: 8080, path: "/hook?a=1".into() }
        );
        let t = Target::parse("https://[::1]/x").unwrap();
        assert_eq!((t.https, t.host.as_str(), t.port, t.host_header()), (true, "::1", 443, "[::1]".into()));
        let t = Target::parse("HTTPS://Hooks.Example.COM?x").unwrap();
        assert_eq!((t.host.as_str(), t.path.as_str(), t.port), ("hooks.example.com", "/?x", 443));
        assert_eq!(Target::parse("http://LOCALHOST").unwrap().host_header(), "localhost");
    }

    #[test]
    fn refuses_malformed_urls() {
        for url in ["ftp://127.0.0.1/", "127.0.0.1/x", "file:///etc/passwd", "gopher://x"] {
            assert!(matches!(Target::parse(url), Err(Error::WebhookUrlNotAllowed { .. })), "{url}");
        }
        for url in [
            "",
            "http://user@127.0.0.1/",
            "http://127.0.0.1:0/",
            "http://127.0.0.1:99999/",
            "http://127.0.0.1/a b",
            "http:///x",
            "http://::1/",
            "http://[::1/",
            "http://[not-v6]/",
            "http://[::1]x/",
            "http://ex%61mple.com/",
            "http://exa\u{e9}mple.com/",
        ] {
            assert!(matches!(Target::parse(url), Err(Error::InvalidInput { .. })), "{url}");
        }
    }
}
