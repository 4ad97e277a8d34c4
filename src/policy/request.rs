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
/// Which fields of `req` a policy reads, found at load by scanning its
/// expressions and templates. Building the whole `req` value costs
/// microseconds (URL parts, header and cookie maps); a policy that only
/// reads `req.method` should not pay for the rest. Unknown or indirect
/// uses (`req[...]`, `req` passed whole) mean every field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReqFields(u32);

impl ReqFields {
    pub const NONE: ReqFields = ReqFields(0);
    pub const ALL: ReqFields = ReqFields(u32::MAX);
    const METHOD: u32 = 1;
    const URL: u32 = 1 << 1;
    const URL_PARTS: u32 = 1 << 2;
    const HOST: u32 = 1 << 3;
    const HEADERS: u32 = 1 << 4;
    const QUERY_PARAMS: u32 = 1 << 5;
    const COOKIES: u32 = 1 << 6;
    const CONTENT_LENGTH: u32 = 1 << 7;
    const CONTENT_TYPE: u32 = 1 << 8;
    const CONTENT_ENCODING: u32 = 1 << 9;
    const USER_AGENT: u32 = 1 << 10;
    const LOCATION: u32 = 1 << 11;
    const VERSION: u32 = 1 << 12;

    fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }

    pub fn union(self, other: ReqFields) -> ReqFields {
        ReqFields(self.0 | other.0)
    }

    pub fn covers(self, other: ReqFields) -> bool {
        self.0 & other.0 == other.0
    }

    fn field(name: &str) -> u32 {
        match name {
            "method" => Self::METHOD,
            "url" => Self::URL | Self::URL_PARTS,
            "url_parts" => Self::URL_PARTS,
            "host" => Self::HOST,
            "headers" => Self::HEADERS,
            "query_params" => Self::QUERY_PARAMS,
            "cookies" => Self::COOKIES,
            "content_length" => Self::CONTENT_LENGTH,
            "content_type" => Self::CONTENT_TYPE,
            "content_encoding" => Self::CONTENT_ENCODING,
            "user_agent" => Self::USER_AGENT,
            "location" => Self::LOCATION,
            "version" => Self::VERSION,
            _ => u32::MAX,
        }
    }

    /// The fields `text` (an expression or a template) reads.
    pub fn scan(text: &str) -> ReqFields {
        let b = text.as_bytes();
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let mut bits = 0u32;
        for (name, bit) in [
            ("getReqHeader", Self::HEADERS),
            ("hasReqHeader", Self::HEADERS),
            ("getQueryParam", Self::QUERY_PARAMS),
            ("hasQueryParam", Self::QUERY_PARAMS),
            ("getReqCookie", Self::COOKIES),
            ("hasReqCookie", Self::COOKIES),
        ] {
            if text.contains(name) {
                bits |= bit;
            }
        }
        let mut i = 0;
        while let Some(at) = text[i..].find("req") {
            let start = i + at;
            let end = start + 3;
            i = end;
            if start > 0 && (ident(b[start - 1]) || b[start - 1] == b'.') {
                continue;
            }
            if end < b.len() && ident(b[end]) {
                continue;
            }
            if b.get(end) != Some(&b'.') {
                return ReqFields::ALL;
            }
            let f_end = b[end + 1..]
                .iter()
                .position(|c| !ident(*c))
                .map_or(b.len(), |p| end + 1 + p);
            bits |= Self::field(&text[end + 1..f_end]);
        }
        ReqFields(bits)
    }
}

pub fn req_value(r: &RequestInfo<'_>, want: ReqFields) -> Value {
    let target = String::from_utf8_lossy(r.path_and_query()).into_owned();
    let (path, query) = split_target(&target);
    let fields: Vec<(&[u8], &[u8])> = if want.has(
        ReqFields::HEADERS
            | ReqFields::COOKIES
            | ReqFields::CONTENT_TYPE
            | ReqFields::CONTENT_ENCODING
            | ReqFields::USER_AGENT
            | ReqFields::LOCATION,
    ) {
        r.headers().collect()
    } else {
        Vec::new()
    };
    let mut entries: Vec<(&str, Value)> = Vec::with_capacity(16);
    if want.has(ReqFields::METHOD) {
        entries.push(("method", text(r.method())));
    }
    if want.has(ReqFields::URL) {
        entries.push(("url", string(r.url())));
    }
    if want.has(ReqFields::URL_PARTS) {
        let authority = String::from_utf8_lossy(r.authority()).to_ascii_lowercase();
        let port = authority
            .rsplit_once(':')
            .filter(|(h, _)| !h.contains('[') || h.ends_with(']'))
            .and_then(|(_, p)| p.parse::<i64>().ok())
            .unwrap_or(match r.scheme {
                Scheme::Http => 80,
                Scheme::Https => 443,
            });
        entries.push((
            "url_parts",
            map([
                ("scheme", string(r.scheme.as_str())),
                ("host", string(r.host)),
                ("port", Value::Int(port)),
                ("path", string(percent_decode(path, false))),
                ("raw_path", string(path)),
                ("query", string(query)),
                ("query_params", params_value(query)),
                ("authority", string(authority.as_str())),
                ("raw", string(r.url().as_str())),
                ("uri", string(target.as_str())),
                ("user_password", string("")),
            ]),
        ));
    }
    if want.has(ReqFields::HOST) {
        entries.push(("host", string(r.host)));
    }
    if want.has(ReqFields::HEADERS) {
        entries.push(("headers", headers_value(fields.iter().copied())));
    }
    if want.has(ReqFields::QUERY_PARAMS) {
        entries.push(("query_params", params_value(query)));
    }
    if want.has(ReqFields::COOKIES) {
        entries.push((
            "cookies",
            cookies_value(
                fields
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(b"cookie"))
                    .map(|(_, v)| *v),
            ),
        ));
    }
    if want.has(ReqFields::CONTENT_LENGTH) {
        entries.push(("content_length", Value::Int(content_length(r.head.framing))));
    }
    if want.has(ReqFields::CONTENT_TYPE) {
        entries.push(("content_type", first_header(&fields, "content-type")));
    }
    if want.has(ReqFields::CONTENT_ENCODING) {
        entries.push((
            "content_encoding",
            first_header(&fields, "content-encoding"),
        ));
    }
    if want.has(ReqFields::USER_AGENT) {
        entries.push(("user_agent", first_header(&fields, "user-agent")));
    }
    if want.has(ReqFields::LOCATION) {
        entries.push(("location", first_header(&fields, "location")));
    }
    if want.has(ReqFields::VERSION) {
        entries.push(("version", string(r.version)));
    }
    map(entries)
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

#[cfg(test)]
mod req_fields_tests {
    use super::ReqFields;

    #[test]
    fn scan_finds_the_fields_read() {
        let m = ReqFields::scan("req.method == 'GET' && req.url.path.startsWith('/a')");
        assert!(m.has(ReqFields::METHOD) && m.has(ReqFields::URL_PARTS));
        assert!(!m.has(ReqFields::HEADERS) && !m.has(ReqFields::COOKIES));
        assert_eq!(ReqFields::scan("size(req) > 0"), ReqFields::ALL);
        assert_eq!(ReqFields::scan("req['method'] == 'GET'"), ReqFields::ALL);
        assert_eq!(ReqFields::scan("req.nosuchfield"), ReqFields::ALL);
        assert!(ReqFields::scan("getReqHeader('x') == ['1']").has(ReqFields::HEADERS));
        // Other identifiers containing "req" are not `req`.
        assert_eq!(
            ReqFields::scan("vars.request_id == 'x' && myreq.a"),
            ReqFields::NONE
        );
        assert_eq!(ReqFields::scan("true"), ReqFields::NONE);
    }
}
