//! Small URL helpers for the auth actions: percent-encoding, form and
//! query strings, and a strict parse of absolute `http(s)` URLs. No I/O.

use std::fmt::Write;

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decodes `%XX` escapes and, for form data, `+` as a space. Invalid
/// escapes are kept as written; invalid UTF-8 is replaced.
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `k=v&k=v` with both sides percent-encoded.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&encode(k));
        out.push('=');
        out.push_str(&encode(v));
    }
    out
}

/// Parses a query or form body into decoded pairs, in order.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// The first value of `name` in a query string.
pub fn query_param(q: &str, name: &str) -> Option<String> {
    parse_query(q)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Splits a request target into path and query (without `?`).
pub fn split_target(path_and_query: &str) -> (&str, &str) {
    match path_and_query.split_once('?') {
        Some((p, q)) => (p, q),
        None => (path_and_query, ""),
    }
}

/// An absolute `scheme://host[:port]/path?query` URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    /// Lower-cased; IPv6 literals keep their brackets.
    pub host: String,
    pub port: Option<u16>,
    /// Path and query, `/` when empty.
    pub path_and_query: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| format!("{s:?} is not an absolute URL"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+')
        {
            return Err(format!("{s:?} has an invalid scheme"));
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        if authority.contains('@') {
            return Err(format!("{s:?}: user information is not allowed"));
        }
        let mut path_and_query = rest[end..].split('#').next().unwrap_or("").to_string();
        if path_and_query.is_empty() || path_and_query.starts_with('?') {
            path_and_query.insert(0, '/');
        }
        let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
            let close = stripped
                .find(']')
                .ok_or_else(|| format!("{s:?}: unclosed IPv6 literal"))?;
            let host = format!("[{}]", &stripped[..close]);
            let after = &stripped[close + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(parse_port(s, p)?),
                None if after.is_empty() => None,
                None => return Err(format!("{s:?}: bad authority")),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(parse_port(s, p)?)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty()
            || host.bytes().any(|b| {
                b.is_ascii_whitespace() || b.is_ascii_control() || matches!(b, b'<' | b'>' | b'"')
            })
        {
            return Err(format!("{s:?} has no valid host"));
        }
        Ok(Url {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            path_and_query,
        })
    }

    /// True for `localhost`, `*.localhost`, 127.0.0.0/8 and `[::1]`.
    pub fn is_loopback(&self) -> bool {
        let h = self.host.as_str();
        h == "localhost"
            || h.ends_with(".localhost")
            || h == "[::1]"
            || h.parse::<std::net::Ipv4Addr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false)
    }
}

fn parse_port(s: &str, p: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .map_err(|_| format!("{s:?} has an invalid port"))
}

/// Appends `pairs` to `url`'s query string.
pub fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{}", form_encode(pairs))
}

/// A redirect target supplied by a client: only a local absolute path
/// (`/x`), never `//host` or a scheme, without control characters.
pub fn safe_local_path(p: &str) -> Option<&str> {
    let ok = p.starts_with('/')
        && !p.starts_with("//")
        && !p.starts_with("/\\")
        && !p.bytes().any(|b| b.is_ascii_control() || b == b'\\')
        && p.len() <= 2048;
    ok.then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let s = "a b&c=d/é~";
        assert_eq!(encode(s), "a%20b%26c%3Dd%2F%C3%A9~");
        assert_eq!(decode(&encode(s)), s);
        assert_eq!(decode("a+b%2"), "a b%2");
        assert_eq!(decode("%zz%41"), "%zzA");
    }

    #[test]
    fn queries() {
        let q = "code=abc&state=x%2By&empty&redirect_path=%2Fa%3Fb%3D1";
        assert_eq!(query_param(q, "state").as_deref(), Some("x+y"));
        assert_eq!(query_param(q, "empty").as_deref(), Some(""));
        assert_eq!(query_param(q, "redirect_path").as_deref(), Some("/a?b=1"));
        assert_eq!(query_param(q, "none"), None);
        assert_eq!(split_target("/p?q=1"), ("/p", "q=1"));
        assert_eq!(split_target("/p"), ("/p", ""));
        assert_eq!(
            with_query("https://i/a?x=1", &[("y", "a b")]),
            "https://i/a?x=1&y=a%20b"
        );
    }

    #[test]
    fn urls() {
        let u = Url::parse("HTTPS://Login.Example.com:8443/realms/x?y=1#frag").expect("url");
        assert_eq!(u.scheme, "https");
        assert_eq!(u.host, "login.example.com");
        assert_eq!(u.port, Some(8443));
        assert_eq!(u.path_and_query, "/realms/x?y=1");
        let u = Url::parse("http://[::1]:9000").expect("url");
        assert_eq!((u.host.as_str(), u.port), ("[::1]", Some(9000)));
        assert!(u.is_loopback());
        assert!(Url::parse("http://a@b/").is_err());
        assert!(Url::parse("http:///x").is_err());
        assert!(Url::parse("http://h:99999/").is_err());
        assert!(Url::parse("/relative").is_err());
    }

    #[test]
    fn local_paths_only() {
        assert_eq!(safe_local_path("/a/b?c=d"), Some("/a/b?c=d"));
        assert_eq!(safe_local_path("//evil.example/"), None);
        assert_eq!(safe_local_path("/\\evil.example"), None);
        assert_eq!(safe_local_path("https://evil.example/"), None);
        assert_eq!(safe_local_path("/a\r\nset-cookie: x"), None);
    }
}
