//! Upstream address normalization (`8080` → `http://localhost:8080`).
//!
//! Owns: turning what a user types after `ringress http` (or writes as
//! `upstream.url` in the v3 config) into one canonical [`UpstreamUrl`],
//! following ngrok's table (docs: agent forwarding, upstream URL forms).
//! Never: DNS, dialing, or touching the file system (a `file://` path is
//! only checked for being absolute). Pure and sans-IO.
//!
//! Rules, in order:
//! - `scheme://…` with scheme `http`, `https`, `tcp` or `file` (any case).
//!   A missing port is 80 for http, 443 for https; `tcp://` needs one.
//!   `http://` and `https://` alone mean `localhost` on the default port.
//! - Without a scheme: a bare port (`8080`), `host:port`, or a bare host
//!   (`example.org`, port 80). The scheme is `https` when the port is 443,
//!   else `http`.
//! - IPv6 literals must be bracketed (`[::1]:80`); `::1:3000` is refused
//!   with "too many colons", as ngrok does (ngrok/ngrok#65).
//! - `file:///abs/path` only: relative paths are refused.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// How the agent talks to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamScheme {
    Http,
    Https,
    /// The agent's built-in static file server.
    File,
    /// Raw TCP: bytes copied as they are (like `http`, without the name).
    Tcp,
}

impl UpstreamScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamScheme::Http => "http",
            UpstreamScheme::Https => "https",
            UpstreamScheme::File => "file",
            UpstreamScheme::Tcp => "tcp",
        }
    }

    fn parse(s: &str) -> Option<UpstreamScheme> {
        [
            UpstreamScheme::Http,
            UpstreamScheme::Https,
            UpstreamScheme::File,
            UpstreamScheme::Tcp,
        ]
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }
}

/// A normalized upstream.
///
/// `host` is lowercase and carries no brackets (an IPv6 literal is stored as
/// `::1`); `Display` adds them back. For `File`, `host` is empty, `port` is
/// 0 and `path` is the absolute directory; for the others `path` is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub scheme: UpstreamScheme,
    pub host: String,
    pub port: u16,
    pub path: PathBuf,
}

impl UpstreamUrl {
    /// `host:port`, with brackets around an IPv6 literal.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The host as an IP address, when it is a literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            UpstreamScheme::File => write!(f, "file://{}", self.path.display()),
            s => write!(f, "{}://{}", s.as_str(), self.authority()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UpstreamUrlError {
    #[error("empty upstream address")]
    Empty,
    #[error("unsupported upstream scheme {0:?} (use http, https, tcp or file)")]
    UnsupportedScheme(String),
    #[error("invalid upstream address {0:?}: too many colons (write IPv6 addresses in brackets, e.g. [::1]:80)")]
    TooManyColons(String),
    #[error("invalid upstream port {0:?} (1-65535)")]
    InvalidPort(String),
    #[error("a tcp:// upstream needs a port: {0:?}")]
    MissingPort(String),
    #[error("invalid upstream host {0:?}")]
    InvalidHost(String),
    #[error("upstream {0:?} has user information, which is not supported")]
    UserInfo(String),
    #[error("upstream {0:?} has a path; only scheme, host and port are allowed")]
    HasPath(String),
    #[error("file upstream {0:?} must be an absolute path (file:///abs/path)")]
    RelativeFilePath(String),
}

/// Normalizes an upstream address; see the module documentation.
pub fn normalize(given: &str) -> Result<UpstreamUrl, UpstreamUrlError> {
    let given = given.trim();
    if given.is_empty() {
        return Err(UpstreamUrlError::Empty);
    }
    let Some((scheme, rest)) = given.split_once("://") else {
        return without_scheme(given);
    };
    let scheme = UpstreamScheme::parse(scheme)
        .ok_or_else(|| UpstreamUrlError::UnsupportedScheme(scheme.to_owned()))?;
    if scheme == UpstreamScheme::File {
        return file(given, rest);
    }
    let authority = match rest.find(['/', '?', '#']) {
        Some(i) if &rest[i..] == "/" => &rest[..i],
        Some(_) => return Err(UpstreamUrlError::HasPath(given.to_owned())),
        None => rest,
    };
    if authority.contains('@') {
        return Err(UpstreamUrlError::UserInfo(given.to_owned()));
    }
    let default_port = match scheme {
        UpstreamScheme::Http => Some(80),
        UpstreamScheme::Https => Some(443),
        _ => None,
    };
    if authority.is_empty() {
        // Scheme shorthand: `https://` is localhost:443.
        let port = default_port.ok_or_else(|| UpstreamUrlError::MissingPort(given.to_owned()))?;
        return Ok(net(scheme, "localhost".to_owned(), port));
    }
    let (host, port) = split_host_port(authority)?;
    let port = match port {
        Some(p) => p,
        None => default_port.ok_or_else(|| UpstreamUrlError::MissingPort(given.to_owned()))?,
    };
    let host = if host.is_empty() {
        "localhost".to_owned()
    } else {
        host
    };
    Ok(net(scheme, host, port))
}

fn without_scheme(given: &str) -> Result<UpstreamUrl, UpstreamUrlError> {
    if given.contains(['/', '?', '#']) {
        return Err(UpstreamUrlError::HasPath(given.to_owned()));
    }
    if given.contains('@') {
        return Err(UpstreamUrlError::UserInfo(given.to_owned()));
    }
    let (host, port) = if given.bytes().all(|b| b.is_ascii_digit()) {
        ("localhost".to_owned(), parse_port(given)?)
    } else {
        let (host, port) = split_host_port(given)?;
        let host = if host.is_empty() {
            "localhost".to_owned()
        } else {
            host
        };
        (host, port.unwrap_or(80))
    };
    let scheme = if port == 443 {
        UpstreamScheme::Https
    } else {
        UpstreamScheme::Http
    };
    Ok(net(scheme, host, port))
}

fn net(scheme: UpstreamScheme, host: String, port: u16) -> UpstreamUrl {
    UpstreamUrl {
        scheme,
        host,
        port,
        path: PathBuf::new(),
    }
}

fn file(given: &str, rest: &str) -> Result<UpstreamUrl, UpstreamUrlError> {
    // `file://localhost/abs` names the local host explicitly (RFC 8089).
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    let path = Path::new(rest);
    if !path.is_absolute() {
        return Err(UpstreamUrlError::RelativeFilePath(given.to_owned()));
    }
    // Drop trailing slashes (but keep "/" itself) so Display is canonical.
    let trimmed = rest.trim_end_matches('/');
    let path = if trimmed.is_empty() {
        PathBuf::from("/")
    } else {
        PathBuf::from(trimmed)
    };
    Ok(UpstreamUrl {
        scheme: UpstreamScheme::File,
        host: String::new(),
        port: 0,
        path,
    })
}

/// Splits `host[:port]` or `[v6][:port]`; the host comes back lowercase
/// and without brackets, possibly empty (`:8080`).
fn split_host_port(s: &str) -> Result<(String, Option<u16>), UpstreamUrlError> {
    if let Some(inner) = s.strip_prefix('[') {
        let Some((v6, after)) = inner.split_once(']') else {
            return Err(UpstreamUrlError::InvalidHost(s.to_owned()));
        };
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(UpstreamUrlError::InvalidHost(s.to_owned()));
        }
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(parse_port(p)?),
                None => return Err(UpstreamUrlError::InvalidHost(s.to_owned())),
            },
        };
        return Ok((v6.to_ascii_lowercase(), port));
    }
    let (host, port) = match s.matches(':').count() {
        0 => (s, None),
        1 => {
            let (h, p) = s.split_once(':').unwrap_or((s, ""));
            (h, Some(parse_port(p)?))
        }
        _ => return Err(UpstreamUrlError::TooManyColons(s.to_owned())),
    };
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        || host.starts_with('.')
    {
        return Err(UpstreamUrlError::InvalidHost(host.to_owned()));
    }
    Ok((host.to_ascii_lowercase(), port))
}

fn parse_port(p: &str) -> Result<u16, UpstreamUrlError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UpstreamUrlError::InvalidPort(p.to_owned()));
    }
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(UpstreamUrlError::InvalidPort(p.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of the spec (ngrok-http-endpoints.md §1.8), plus the v3
    /// config forms listed under it.
    #[test]
    fn spec_table() {
        let rows = [
            // The table.
            ("http://localhost:1234", "http://localhost:1234"),
            ("https://localhost:1234", "https://localhost:1234"),
            ("localhost:1234", "http://localhost:1234"),
            ("1234", "http://localhost:1234"),
            ("localhost:443", "https://localhost:443"),
            ("443", "https://localhost:443"),
            // v3 `upstream.url` origin forms, missing port inferred.
            ("https://example.org", "https://example.org:443"),
            ("http://example.org:80", "http://example.org:80"),
            ("http://example.org", "http://example.org:80"),
            ("tcp://127.0.0.1:80", "tcp://127.0.0.1:80"),
            // Bare domain → http :80.
            ("example.org", "http://example.org:80"),
            // Scheme shorthand.
            ("https://", "https://localhost:443"),
            ("http://", "http://localhost:80"),
            // Bare port.
            ("8080", "http://localhost:8080"),
            // Non-local upstreams.
            ("192.168.1.2:80", "http://192.168.1.2:80"),
            ("servername.local:9000", "http://servername.local:9000"),
            // Bracketed IPv6.
            ("[::1]:80", "http://[::1]:80"),
            ("[::1]:443", "https://[::1]:443"),
            ("https://[::1]", "https://[::1]:443"),
            ("https://x:1234", "https://x:1234"),
            // Explicit scheme wins over the port rule.
            ("http://localhost:443", "http://localhost:443"),
            // File server, absolute paths only.
            ("file:///abs/path", "file:///abs/path"),
            ("file:///srv/site/", "file:///srv/site"),
            ("file:///", "file:///"),
        ];
        for (given, want) in rows {
            let got = normalize(given).unwrap_or_else(|e| panic!("{given}: {e}"));
            assert_eq!(got.to_string(), want, "{given}");
            // Normalizing the normalized form changes nothing.
            let again = normalize(&got.to_string()).expect("renormalize");
            assert_eq!(again, got, "{given}");
        }
    }

    #[test]
    fn fields() {
        let u = normalize("[::1]:80").expect("ok");
        assert_eq!(u.scheme, UpstreamScheme::Http);
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, 80);
        assert_eq!(u.ip(), Some("::1".parse().expect("ip")));
        let u = normalize("file:///abs/path").expect("ok");
        assert_eq!(u.scheme, UpstreamScheme::File);
        assert_eq!(u.path, PathBuf::from("/abs/path"));
        let u = normalize("HTTPS://Example.ORG").expect("ok");
        assert_eq!(u.to_string(), "https://example.org:443");
        assert_eq!(u.ip(), None);
    }

    #[test]
    fn rejected() {
        use std::mem::discriminant;
        use UpstreamUrlError as E;
        let s = String::new;
        let cases = [
            ("::1:3000", E::TooManyColons(s())),
            ("http://::1:3000", E::TooManyColons(s())),
            ("", E::Empty),
            ("ftp://x", E::UnsupportedScheme(s())),
            ("file://relative/dir", E::RelativeFilePath(s())),
            ("tcp://127.0.0.1", E::MissingPort(s())),
            ("tcp://", E::MissingPort(s())),
            ("0", E::InvalidPort(s())),
            ("70000", E::InvalidPort(s())),
            ("localhost:http", E::InvalidPort(s())),
            ("http://u:p@host", E::UserInfo(s())),
            ("http://host/path", E::HasPath(s())),
            ("[zz]:80", E::InvalidHost(s())),
            ("bad host:80", E::InvalidHost(s())),
        ];
        for (given, want) in cases {
            match normalize(given) {
                Ok(u) => panic!("{given:?} accepted as {u}"),
                Err(e) => assert_eq!(discriminant(&e), discriminant(&want), "{given:?}: {e:?}"),
            }
        }
    }

    #[test]
    fn too_many_colons_message_is_clear() {
        let e = normalize("::1:3000").expect_err("refused");
        let msg = e.to_string();
        assert!(msg.contains("too many colons"), "{msg}");
        assert!(msg.contains("[::1]:80"), "{msg}");
    }

    #[test]
    fn trailing_slash_allowed() {
        assert_eq!(
            normalize("http://localhost:8080/").expect("ok").to_string(),
            "http://localhost:8080"
        );
    }
}
