//! The facts a policy reads about an exchange, as borrowed views over the
//! pipeline's parsed heads, and their CEL values (`req`, `res`, `conn`,
//! `endpoint`, `time`) built only when an expression references them.

use std::net::SocketAddr;

use cel_interpreter::Value;

use super::cel::{list, map, string};
use crate::http1::{Framing, RequestHead, ResponseHead};
use crate::route::{Endpoint, Scheme};

/// Facts about the client connection.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    pub client: Option<SocketAddr>,
    /// The port the client connected to (the listener's, or the Host
    /// header's when the driver does not know it).
    pub server_port: u16,
    pub tls: Option<TlsInfo>,
}

/// What the TLS layer told the driver, when it did.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    pub version: Option<String>,
    pub sni: Option<String>,
    pub negotiated_alpn: Option<String>,
}

/// One request as the policy sees it: the parsed head over its buffer.
#[derive(Clone, Copy)]
pub struct RequestInfo<'a> {
    pub buf: &'a [u8],
    pub head: &'a RequestHead,
    /// The client connection's scheme.
    pub scheme: Scheme,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: &'static str,
    /// The normalized host (port stripped, lowercase).
    pub host: &'a str,
    pub conn: &'a ConnInfo,
}

/// An upstream response head as the policy sees it.
#[derive(Clone, Copy)]
pub struct ResponseInfo<'a> {
    pub buf: &'a [u8],
    pub head: &'a ResponseHead,
}

impl<'a> RequestInfo<'a> {
    pub fn method(&self) -> &'a [u8] {
        self.head.method_span.get(self.buf)
    }

    /// Path and query as sent (origin-form), `/` when empty.
    pub fn path_and_query(&self) -> &'a [u8] {
        let t = self.head.origin_form.get(self.buf);
        if t.is_empty() {
            b"/"
        } else {
            t
        }
    }

    /// The authority as sent (host[:port]).
    pub fn authority(&self) -> &'a [u8] {
        self.head.authority.get(self.buf)
    }

    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let buf = self.buf;
        self.head
            .headers
            .iter()
            .map(move |h| (h.name.get(buf), h.value.get(buf)))
    }

    /// Values of a header (case-insensitive name).
    pub fn header_values<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + 'n
    where
        'a: 'n,
    {
        self.headers()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| crate::http1::trim_ows(v))
    }

    /// The full URL: scheme://authority/path?query.
    pub fn url(&self) -> String {
        let mut u = String::with_capacity(64);
        u.push_str(self.scheme.as_str());
        u.push_str("://");
        u.push_str(&String::from_utf8_lossy(self.authority()).to_ascii_lowercase());
        u.push_str(&String::from_utf8_lossy(self.path_and_query()));
        u
    }

    pub fn client_ip(&self) -> Option<std::net::IpAddr> {
        self.conn.client.map(|a| a.ip().to_canonical())
    }
}

fn text(b: &[u8]) -> Value {
    string(String::from_utf8_lossy(b).into_owned())
}

/// Splits `path?query`.
pub fn split_target(t: &str) -> (&str, &str) {
    match t.split_once('?') {
        Some((p, q)) => (p, q),
        None => (t, ""),
    }
}

/// Decodes `%XX` escapes (and `+` as space when `plus`), lossily.
pub fn percent_decode(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' if plus => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters as name → values, in order.
pub fn query_params(q: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k, true);
        let v = percent_decode(v, true);
        match out.iter_mut().find(|(n, _)| *n == k) {
            Some((_, vs)) => vs.push(v),
            None => out.push((k, vec![v])),
        }
    }
    out
}

fn params_value(q: &str) -> Value {
    map(query_params(q)
        .into_iter()
        .map(|(k, vs)| (k, list(vs.into_iter().map(string).collect()))))
}

/// Header fields as lower-case name → list of values.
fn headers_value<'a>(fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Value {
    let mut grouped: Vec<(String, Vec<Value>)> = Vec::new();
    for (n, v) in fields {
        let n = String::from_utf8_lossy(n).to_ascii_lowercase();
        let v = text(crate::http1::trim_ows(v));
        match grouped.iter_mut().find(|(k, _)| *k == n) {
            Some((_, vs)) => vs.push(v),
            None => grouped.push((n, vec![v])),
        }
    }
    map(grouped.into_iter().map(|(k, vs)| (k, list(vs))))
}

fn cookies_value<'a>(values: impl Iterator<Item = &'a [u8]>) -> Value {
    let mut grouped: Vec<(String, Vec<Value>)> = Vec::new();
    for v in values {
        let v = String::from_utf8_lossy(v);
        for c in v.split(';') {
            let c = c.trim();
            if c.is_empty() {
                continue;
            }
            let (name, value) = c.split_once('=').unwrap_or((c, ""));
            let entry = map([("name", string(name)), ("value", string(value))]);
            match grouped.iter_mut().find(|(k, _)| k == name) {
                Some((_, vs)) => vs.push(entry),
                None => grouped.push((name.to_owned(), vec![entry])),
            }
        }
    }
    map(grouped.into_iter().map(|(k, vs)| (k, list(vs))))
}

fn content_length(f: Framing) -> i64 {
    match f {
        Framing::None => 0,
        Framing::Length(n) => i64::try_from(n).unwrap_or(i64::MAX),
        Framing::Chunked | Framing::CloseDelimited => -1,
    }
}

fn first_header(fields: &[(&[u8], &[u8])], name: &str) -> Value {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map_or_else(|| string(""), |(_, v)| text(crate::http1::trim_ows(v)))
}

/// `req`.
pub fn req_value(r: &RequestInfo<'_>) -> Value {
    let target = String::from_utf8_lossy(r.path_and_query()).into_owned();
    let (path, query) = split_target(&target);
    let authority = String::from_utf8_lossy(r.authority()).to_ascii_lowercase();
    let port = authority
        .rsplit_once(':')
        .filter(|(h, _)| !h.contains('[') || h.ends_with(']'))
        .and_then(|(_, p)| p.parse::<i64>().ok())
        .unwrap_or(match r.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        });
    let url = r.url();
    let fields: Vec<(&[u8], &[u8])> = r.headers().collect();
    let url_parts = map([
        ("scheme", string(r.scheme.as_str())),
        ("host", string(r.host)),
        ("port", Value::Int(port)),
        ("path", string(percent_decode(path, false))),
        ("raw_path", string(path)),
        ("query", string(query)),
        ("query_params", params_value(query)),
        ("authority", string(authority.as_str())),
        ("raw", string(url.as_str())),
        ("uri", string(target.as_str())),
        ("user_password", string("")),
    ]);
    map([
        ("method", text(r.method())),
        ("url", string(url)),
        ("url_parts", url_parts),
        ("host", string(r.host)),
        ("headers", headers_value(fields.iter().copied())),
        ("query_params", params_value(query)),
        (
            "cookies",
            cookies_value(
                fields
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(b"cookie"))
                    .map(|(_, v)| *v),
            ),
        ),
        ("content_length", Value::Int(content_length(r.head.framing))),
        ("content_type", first_header(&fields, "content-type")),
        (
            "content_encoding",
            first_header(&fields, "content-encoding"),
        ),
        ("user_agent", first_header(&fields, "user-agent")),
        ("location", first_header(&fields, "location")),
        ("version", string(r.version)),
    ])
}

/// `res`.
pub fn res_value(r: &ResponseInfo<'_>) -> Value {
    let fields: Vec<(&[u8], &[u8])> = r
        .head
        .headers
        .iter()
        .map(|h| (h.name.get(r.buf), h.value.get(r.buf)))
        .collect();
    map([
        ("status_code", Value::Int(i64::from(r.head.status))),
        ("headers", headers_value(fields.iter().copied())),
        ("content_length", Value::Int(content_length(r.head.framing))),
        ("content_type", first_header(&fields, "content-type")),
        (
            "content_encoding",
            first_header(&fields, "content-encoding"),
        ),
        ("location", first_header(&fields, "location")),
    ])
}

/// `conn`.
pub fn conn_value(c: &ConnInfo) -> Value {
    let (ip, port) = match c.client {
        Some(a) => (a.ip().to_canonical().to_string(), i64::from(a.port())),
        None => (String::new(), 0),
    };
    let mut entries = vec![
        ("client_ip", string(ip)),
        ("client_port", Value::Int(port)),
        ("server_port", Value::Int(i64::from(c.server_port))),
    ];
    if let Some(t) = &c.tls {
        let opt = |v: &Option<String>| string(v.clone().unwrap_or_default());
        entries.push((
            "tls",
            map([
                ("version", opt(&t.version)),
                ("sni", opt(&t.sni)),
                ("negotiated_alpn", opt(&t.negotiated_alpn)),
            ]),
        ));
    }
    map(entries)
}

/// `endpoint`.
pub fn endpoint_value(e: &Endpoint) -> Value {
    let port = match e.scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    };
    map([
        ("url", string(e.url.as_str())),
        ("host", string(e.host.as_str())),
        ("port", Value::Int(port)),
        ("protocol", string(e.scheme.as_str())),
        ("addr", string(format!("{}:{port}", e.host))),
        ("id", string("")),
    ])
}

/// `time`.
pub fn time_value() -> Value {
    let now = chrono::Utc::now().fixed_offset();
    map([("now", Value::Timestamp(now))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_and_query() {
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("a%2", false), "a%2");
        assert_eq!(percent_decode("%41", false), "A");
        let q = query_params("a=1&b=2&a=3&c");
        assert_eq!(q[0], ("a".into(), vec!["1".into(), "3".into()]));
        assert_eq!(q[2], ("c".into(), vec![String::new()]));
    }
}
