//! Sans-IO conversions between HTTP/2 messages (as h2 hands them over) and
//! the HTTP/1.1 messages the edge exchanges with upstreams: request heads,
//! response heads, chunked-body framing and trailers. No I/O, no state.
//!
//! h2 has already rejected what RFC 9113 calls malformed at the frame level
//! (connection-specific fields, `te` other than `trailers`, uppercase
//! names, pseudo-fields out of place); these functions check again so that
//! they are safe on their own, and add what only an intermediary checks
//! (`:authority` against `Host`, RFC 9113 §8.3.1).

use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, COOKIE, HOST, TE};
use http::{Method, Request, Response, StatusCode};

use super::error::ConvertError;
use crate::http1::Framing;

/// Fields RFC 9113 §8.2.2 forbids in HTTP/2 (and that are hop-by-hop in
/// HTTP/1.1). `te` is handled apart: `te: trailers` is allowed.
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// What `request_to_h1` wrote, for the proxy to drive the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H1Request {
    /// How the body is framed towards the upstream: `None` (no body),
    /// `Length(n)` (copy DATA as is) or `Chunked` (wrap each DATA frame
    /// with `write_chunk_header`, end with `h2_trailers_to_h1`).
    pub framing: Framing,
    /// Set for an extended CONNECT (RFC 8441) WebSocket: the head asks the
    /// upstream for `Upgrade: websocket` with this `Sec-WebSocket-Key`
    /// (base64 of 16 random bytes); the body is the tunnel, not a message.
    pub websocket_key: Option<String>,
}

/// The `:protocol` of an extended CONNECT request (RFC 8441), if any.
pub fn extended_connect_protocol<B>(req: &Request<B>) -> Option<&str> {
    if req.method() != Method::CONNECT {
        return None;
    }
    req.extensions()
        .get::<h2::ext::Protocol>()
        .map(|p| p.as_str())
}

/// Writes the HTTP/1.1 request head (request line, fields, blank line) for
/// an HTTP/2 request into `out`.
///
/// `end_of_stream`: the HEADERS frame carried END_STREAM, so there is no
/// body (`RecvStream::is_end_stream()` right after accepting).
///
/// - `:method :path` become the request line; an extended CONNECT for
///   `websocket` becomes `GET :path` with `Connection: Upgrade`,
///   `Upgrade: websocket` and a fresh `Sec-WebSocket-Key`.
/// - `Host` is kept when present, else made from `:authority`; both present
///   and naming different origins is an error (RFC 9113 §8.3.1), as are two
///   `Host` fields or neither.
/// - Connection-specific fields are an error; `te: trailers` is dropped
///   (the upstream is HTTP/1.1; trailers are forwarded regardless).
/// - `cookie` crumbs are joined with "; " into one field (RFC 9113 §8.2.3).
/// - `Content-Length` is kept (h2 checks it against the DATA received);
///   without it a body is sent chunked, and an empty POST/PUT/PATCH gets
///   `Content-Length: 0`.
///
/// On error `out` may hold a partial head: clear it.
pub fn request_to_h1<B>(
    req: &Request<B>,
    end_of_stream: bool,
    out: &mut Vec<u8>,
) -> Result<H1Request, ConvertError> {
    let method = req.method();
    let websocket = match extended_connect_protocol(req) {
        Some(p) if p.eq_ignore_ascii_case("websocket") => true,
        Some(_) => return Err(ConvertError::UnsupportedConnect),
        None if method == Method::CONNECT => return Err(ConvertError::UnsupportedConnect),
        None => false,
    };

    let uri = req.uri();
    let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
    let target_ok = target.starts_with('/') || (target == "*" && method == Method::OPTIONS);
    if !target_ok {
        return Err(ConvertError::InvalidPath);
    }

    let host = host_for(req)?;

    if websocket {
        out.extend_from_slice(b"GET");
    } else {
        out.extend_from_slice(method.as_str().as_bytes());
    }
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host);
    out.extend_from_slice(b"\r\n");

    let mut content_length: Option<u64> = None;
    let mut cookies = 0usize;
    for (name, value) in req.headers() {
        let n = name.as_str();
        if let Some(cs) = CONNECTION_SPECIFIC.iter().find(|c| **c == n) {
            return Err(ConvertError::ConnectionSpecificHeader(cs));
        }
        if name == TE {
            if !value
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"trailers")
            {
                return Err(ConvertError::InvalidTe);
            }
            continue;
        }
        if name == HOST {
            continue;
        }
        if name == COOKIE {
            cookies += 1;
            continue;
        }
        if name == CONTENT_LENGTH {
            let v = parse_content_length(value.as_bytes())?;
            if content_length.is_some_and(|prev| prev != v) {
                return Err(ConvertError::InvalidContentLength);
            }
            content_length = Some(v);
            continue;
        }
        if websocket && n == "sec-websocket-key" {
            continue;
        }
        push_field(out, n.as_bytes(), value.as_bytes());
    }
    if cookies > 0 {
        out.extend_from_slice(b"cookie: ");
        for (i, c) in req.headers().get_all(COOKIE).iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(c.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }

    let mut websocket_key = None;
    let framing = if websocket {
        if content_length.is_some_and(|n| n != 0) {
            return Err(ConvertError::InvalidContentLength);
        }
        let key = base64_16(&random_16());
        out.extend_from_slice(b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: ");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\r\n");
        websocket_key = Some(key);
        Framing::None
    } else if let Some(n) = content_length {
        if end_of_stream && n != 0 {
            return Err(ConvertError::InvalidContentLength);
        }
        push_field(
            out,
            b"Content-Length",
            itoa::Buffer::new().format(n).as_bytes(),
        );
        Framing::Length(n)
    } else if end_of_stream {
        if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
            out.extend_from_slice(b"Content-Length: 0\r\n");
            Framing::Length(0)
        } else {
            Framing::None
        }
    } else {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        Framing::Chunked
    };
    out.extend_from_slice(b"\r\n");
    Ok(H1Request {
        framing,
        websocket_key,
    })
}

/// The value for the upstream's `Host`: the `Host` field when present
/// (checked against `:authority`), else `:authority`.
fn host_for<B>(req: &Request<B>) -> Result<&[u8], ConvertError> {
    let authority = match req.uri().authority() {
        Some(a) => {
            let a = a.as_str();
            if a.contains('@') || !crate::http1::head::valid_authority(a.as_bytes()) {
                return Err(ConvertError::InvalidAuthority);
            }
            Some(a.as_bytes())
        }
        None => None,
    };
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next().map(|h| h.as_bytes().trim_ascii());
    if hosts.next().is_some() {
        return Err(ConvertError::DuplicateHost);
    }
    match (authority, host) {
        (None, None) => Err(ConvertError::MissingAuthority),
        (Some(a), None) => Ok(a),
        (a, Some(h)) => {
            if h.is_empty() || h.contains(&b'@') || !crate::http1::head::valid_authority(h) {
                return Err(ConvertError::InvalidAuthority);
            }
            if let Some(a) = a {
                let default_port = match req.uri().scheme_str() {
                    Some("http") => Some(&b"80"[..]),
                    Some("https") => Some(&b"443"[..]),
                    _ => None,
                };
                if !same_origin(a, h, default_port) {
                    return Err(ConvertError::AuthorityMismatch);
                }
            }
            Ok(h)
        }
    }
}

/// RFC 3986 §6.2 comparison of two authorities: host case-insensitive, an
/// explicit default port equal to none.
fn same_origin(a: &[u8], b: &[u8], default_port: Option<&[u8]>) -> bool {
    let (ha, pa) = split_port(a);
    let (hb, pb) = split_port(b);
    let norm = |p: Option<&[u8]>| -> Option<Vec<u8>> {
        match p {
            Some(p) if Some(p) == default_port || p.is_empty() => None,
            other => other.map(<[u8]>::to_vec),
        }
    };
    ha.eq_ignore_ascii_case(hb) && norm(pa) == norm(pb)
}

/// Splits "host:port" (or "[v6]:port") into host and port.
fn split_port(a: &[u8]) -> (&[u8], Option<&[u8]>) {
    let host_end = if a.first() == Some(&b'[') {
        match a.iter().position(|&c| c == b']') {
            Some(i) => i + 1,
            None => return (a, None),
        }
    } else {
        a.iter().position(|&c| c == b':').unwrap_or(a.len())
    };
    match a.get(host_end) {
        Some(b':') => (&a[..host_end], Some(&a[host_end + 1..])),
        _ => (a, None),
    }
}

fn parse_content_length(v: &[u8]) -> Result<u64, ConvertError> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(ConvertError::InvalidContentLength);
    }
    Ok(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Converts an upstream's HTTP/1.1 response head into the head h2 sends.
///
/// `headers` are (name, value) pairs as parsed; `Connection`, `Keep-Alive`,
/// `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`, `TE` and every field
/// `Connection` names are dropped. `extended_connect`: the request was an
/// RFC 8441 WebSocket CONNECT, so a 101 becomes the 200 that opens the
/// tunnel (without `Sec-WebSocket-Accept`, which belongs to HTTP/1.1's
/// handshake, or framing fields). A 1xx other than 101 is returned as is:
/// send it with `SendResponse::send_informational`, then wait for the final
/// head.
pub fn response_to_h2<'a, I>(
    status: u16,
    headers: I,
    extended_connect: bool,
) -> Result<Response<()>, ConvertError>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    I::IntoIter: Clone,
{
    let headers = headers.into_iter();
    let tunnel = extended_connect && status == 101;
    let status = match status {
        101 if tunnel => StatusCode::OK,
        101 => return Err(ConvertError::InvalidStatus),
        s => StatusCode::from_u16(s).map_err(|_| ConvertError::InvalidStatus)?,
    };
    // Names listed in Connection are hop-by-hop for this message.
    let mut listed: Vec<&[u8]> = Vec::new();
    for (n, v) in headers.clone() {
        if n.eq_ignore_ascii_case(b"connection") {
            listed.extend(
                v.split(|&c| c == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|t| !t.is_empty()),
            );
        }
    }
    let mut map = HeaderMap::new();
    for (n, v) in headers {
        let hop = CONNECTION_SPECIFIC
            .iter()
            .any(|c| n.eq_ignore_ascii_case(c.as_bytes()))
            || n.eq_ignore_ascii_case(b"te")
            || listed.iter().any(|l| l.eq_ignore_ascii_case(n))
            || (tunnel
                && (n.eq_ignore_ascii_case(b"sec-websocket-accept")
                    || n.eq_ignore_ascii_case(b"content-length")));
        if hop {
            continue;
        }
        let name = HeaderName::from_bytes(n).map_err(|_| ConvertError::InvalidField)?;
        let value =
            HeaderValue::from_bytes(v.trim_ascii()).map_err(|_| ConvertError::InvalidField)?;
        map.append(name, value);
    }
    let mut res = Response::new(());
    *res.status_mut() = status;
    *res.headers_mut() = map;
    Ok(res)
}

/// Trailer fields never forwarded: framing, routing, authentication and
/// connection control have no meaning after the body (RFC 9110 §6.5.1).
const FORBIDDEN_TRAILERS: [&str; 21] = [
    "authorization",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-range",
    "content-type",
    "expect",
    "host",
    "keep-alive",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "range",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "www-authenticate",
];

fn trailer_allowed(name: &[u8]) -> bool {
    !FORBIDDEN_TRAILERS
        .iter()
        .any(|f| name.eq_ignore_ascii_case(f.as_bytes()))
}

/// Writes the size line of one HTTP/1.1 chunk ("{hex}\r\n"). The caller
/// writes the data next, then "\r\n". Never call it with 0: that is the
/// last chunk, written by `h2_trailers_to_h1`.
pub fn write_chunk_header(len: usize, out: &mut Vec<u8>) {
    debug_assert!(len > 0, "a zero-size chunk ends the body");
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// Ends a chunked HTTP/1.1 body: the last chunk, the HTTP/2 request's
/// trailers (if any, minus the forbidden ones), and the final blank line.
pub fn h2_trailers_to_h1(trailers: Option<&HeaderMap>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    if let Some(t) = trailers {
        for (n, v) in t {
            if trailer_allowed(n.as_str().as_bytes()) {
                push_field(out, n.as_str().as_bytes(), v.as_bytes());
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Parses an HTTP/1.1 chunked body's trailer section (the field lines after
/// the last-chunk line "0\r\n", with or without the final blank line) into
/// HTTP/2 trailers, minus the forbidden ones. An empty result means "no
/// trailers": end the stream with an empty DATA frame instead.
pub fn h1_trailers_to_h2(section: &[u8]) -> Result<HeaderMap, ConvertError> {
    let mut map = HeaderMap::new();
    if section.is_empty() || section == b"\r\n" {
        return Ok(map);
    }
    let owned: Vec<u8>;
    let block = if section.ends_with(b"\r\n\r\n") {
        section
    } else {
        let mut v = section.to_vec();
        if !v.ends_with(b"\r\n") {
            v.extend_from_slice(b"\r\n");
        }
        v.extend_from_slice(b"\r\n");
        owned = v;
        &owned
    };
    let mut fields = [httparse::EMPTY_HEADER; 64];
    match httparse::parse_headers(block, &mut fields) {
        Ok(httparse::Status::Complete((used, parsed))) if used == block.len() => {
            for f in parsed {
                if !trailer_allowed(f.name.as_bytes()) {
                    continue;
                }
                let name = HeaderName::from_bytes(f.name.as_bytes())
                    .map_err(|_| ConvertError::InvalidTrailers)?;
                let value = HeaderValue::from_bytes(f.value.trim_ascii())
                    .map_err(|_| ConvertError::InvalidTrailers)?;
                map.append(name, value);
            }
            Ok(map)
        }
        _ => Err(ConvertError::InvalidTrailers),
    }
}

/// 16 bytes from the kernel's CSPRNG (getrandom(2), non-blocking once the
/// pool is initialised, which it is long before the edge serves traffic).
fn random_16() -> [u8; 16] {
    let mut b = [0u8; 16];
    let mut filled = 0;
    while filled < b.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `b`.
        let n = unsafe {
            libc::getrandom(
                b[filled..].as_mut_ptr().cast(),
                b.len() - filled,
                libc::GRND_NONBLOCK,
            )
        };
        if n > 0 {
            filled += n as usize;
        } else {
            // Not seeded yet (EAGAIN) or interrupted: the key only has to be
            // unpredictable to caches, so fall back to the clock.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let rest = 16 - filled;
            b[filled..].copy_from_slice(&t.to_le_bytes()[..rest]);
            break;
        }
    }
    b
}

fn base64_16(b: &[u8; 16]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(24);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        let chars = [
            T[(n >> 18) as usize & 63],
            T[(n >> 12) as usize & 63],
            T[(n >> 6) as usize & 63],
            T[n as usize & 63],
        ];
        let keep = c.len() + 1;
        for ch in &chars[..keep] {
            s.push(*ch as char);
        }
        for _ in keep..4 {
            s.push('=');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    fn head(r: &Request<()>, eos: bool) -> (String, H1Request) {
        let mut out = Vec::new();
        let info = request_to_h1(r, eos, &mut out).unwrap();
        (String::from_utf8(out).unwrap(), info)
    }

    #[test]
    fn get_becomes_request_line_and_host_from_authority() {
        let r = req("GET", "https://example.com/a/b?c=d", &[("accept", "*/*")]);
        let (h, info) = head(&r, true);
        assert_eq!(
            h,
            "GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\naccept: */*\r\n\r\n"
        );
        assert_eq!(info.framing, Framing::None);
        assert_eq!(info.websocket_key, None);
    }

    #[test]
    fn output_parses_as_http1() {
        let r = req(
            "POST",
            "http://a.test:8080/up",
            &[("content-length", "5"), ("x-a", "1")],
        );
        let (h, info) = head(&r, false);
        assert_eq!(info.framing, Framing::Length(5));
        let mut parsed = crate::http1::RequestHead::new();
        assert!(parsed.parse(h.as_bytes(), 1 << 20).unwrap());
        assert_eq!(parsed.framing, Framing::Length(5));
        assert_eq!(parsed.authority.get(h.as_bytes()), b"a.test:8080");
    }

    #[test]
    fn host_header_wins_when_it_matches_authority() {
        let r = req(
            "GET",
            "https://Example.COM:443/",
            &[("host", "example.com")],
        );
        let (h, _) = head(&r, true);
        assert!(h.contains("\r\nHost: example.com\r\n"), "{h}");
        assert_eq!(h.matches("Host").count() + h.matches("host:").count(), 1);
    }

    #[test]
    fn host_only_is_accepted() {
        // h2 lets a request omit :authority when Host is present.
        let r = req("GET", "/p", &[("host", "h.test")]);
        let (h, _) = head(&r, true);
        assert!(h.starts_with("GET /p HTTP/1.1\r\nHost: h.test\r\n"), "{h}");
    }

    #[test]
    fn differing_host_and_authority_are_rejected() {
        let r = req("GET", "https://a.test/", &[("host", "b.test")]);
        let e = request_to_h1(&r, true, &mut Vec::new()).unwrap_err();
        assert_eq!(e, ConvertError::AuthorityMismatch);
        assert!(e.is_malformed());
        let r = req("GET", "https://a.test:8443/", &[("host", "a.test")]);
        assert_eq!(
            request_to_h1(&r, true, &mut Vec::new()).unwrap_err(),
            ConvertError::AuthorityMismatch
        );
    }

    #[test]
    fn two_hosts_or_none_are_rejected() {
        let r = req("GET", "/", &[("host", "a.test"), ("host", "a.test")]);
        assert_eq!(
            request_to_h1(&r, true, &mut Vec::new()).unwrap_err(),
            ConvertError::DuplicateHost
        );
        let r = req("GET", "/", &[]);
        assert_eq!(
            request_to_h1(&r, true, &mut Vec::new()).unwrap_err(),
            ConvertError::MissingAuthority
        );
    }

    #[test]
    fn userinfo_in_authority_is_rejected() {
        let r = req("GET", "https://user@a.test/", &[]);
        assert_eq!(
            request_to_h1(&r, true, &mut Vec::new()).unwrap_err(),
            ConvertError::InvalidAuthority
        );
    }

    #[test]
    fn connection_specific_fields_are_errors() {
        for name in CONNECTION_SPECIFIC {
            let r = req("GET", "https://a.test/", &[(name, "x")]);
            assert_eq!(
                request_to_h1(&r, true, &mut Vec::new()).unwrap_err(),
                ConvertError::ConnectionSpecificHeader(name)
            );
        }
    }

    #[test]
    fn te_trailers_is_dropped_other_te_is_an_error() {
        let r = req("GET", "https://a.test/", &[("te", "trailers")]);
        let (h, _) = head(&r, true);
        assert!(!h.to_ascii_lowercase().contains("te:"), "{h}");
        let r = req("GET", "https://a.test/", &[("te", "gzip")]);
        assert_eq!(
            request_to_h1(&r, true, &mut Vec::new()).unwrap_err(),
            ConvertError::InvalidTe
        );
    }

    #[test]
    fn cookie_crumbs_are_joined() {
        let r = req(
            "GET",
            "https://a.test/",
            &[
                ("cookie", "a=1"),
                ("x", "y"),
                ("cookie", "b=2"),
                ("cookie", "c=3"),
            ],
        );
        let (h, _) = head(&r, true);
        assert!(h.contains("\r\ncookie: a=1; b=2; c=3\r\n"), "{h}");
        assert_eq!(h.matches("cookie").count(), 1);
    }

    #[test]
    fn body_framing() {
        let r = req("POST", "https://a.test/", &[]);
        let (h, info) = head(&r, false);
        assert_eq!(info.framing, Framing::Chunked);
        assert!(h.contains("Transfer-Encoding: chunked\r\n"));
        let (h, info) = head(&r, true);
        assert_eq!(info.framing, Framing::Length(0));
        assert!(h.contains("Content-Length: 0\r\n"));
        let r = req("GET", "https://a.test/", &[]);
        let (_, info) = head(&r, true);
        assert_eq!(info.framing, Framing::None);
        let r = req("PUT", "https://a.test/", &[("content-length", "10")]);
        assert_eq!(
            request_to_h1(&r, true, &mut Vec::new()).unwrap_err(),
            ConvertError::InvalidContentLength
        );
        let r = req(
            "PUT",
            "https://a.test/",
            &[("content-length", "10"), ("content-length", "11")],
        );
        assert_eq!(
            request_to_h1(&r, false, &mut Vec::new()).unwrap_err(),
            ConvertError::InvalidContentLength
        );
    }

    #[test]
    fn options_star_and_bad_paths() {
        let r = req("OPTIONS", "*", &[("host", "a.test")]);
        let (h, _) = head(&r, true);
        assert!(h.starts_with("OPTIONS * HTTP/1.1\r\n"), "{h}");
        let r = req("GET", "*", &[("host", "a.test")]);
        assert_eq!(
            request_to_h1(&r, true, &mut Vec::new()).unwrap_err(),
            ConvertError::InvalidPath
        );
    }

    #[test]
    fn plain_connect_is_unsupported() {
        let r = req("CONNECT", "a.test:443", &[]);
        assert_eq!(
            request_to_h1(&r, false, &mut Vec::new()).unwrap_err(),
            ConvertError::UnsupportedConnect
        );
    }

    #[test]
    fn extended_connect_websocket_becomes_upgrade() {
        let mut r = req(
            "CONNECT",
            "https://a.test/chat?room=1",
            &[
                ("sec-websocket-version", "13"),
                ("sec-websocket-protocol", "chat"),
            ],
        );
        r.extensions_mut()
            .insert(h2::ext::Protocol::from_static("websocket"));
        assert_eq!(extended_connect_protocol(&r), Some("websocket"));
        let (h, info) = head(&r, false);
        let key = info.websocket_key.expect("key");
        assert_eq!(key.len(), 24);
        assert!(key.ends_with("=="));
        assert!(
            h.starts_with("GET /chat?room=1 HTTP/1.1\r\nHost: a.test\r\n"),
            "{h}"
        );
        assert!(h.contains("Connection: Upgrade\r\nUpgrade: websocket\r\n"));
        assert!(h.contains(&format!("Sec-WebSocket-Key: {key}\r\n")));
        assert!(h.contains("sec-websocket-version: 13\r\n"));
        assert_eq!(info.framing, Framing::None);
        let mut parsed = crate::http1::RequestHead::new();
        assert!(parsed.parse(h.as_bytes(), 1 << 20).unwrap());
        assert!(parsed.is_upgrade());

        let mut other = req("CONNECT", "https://a.test/", &[]);
        other
            .extensions_mut()
            .insert(h2::ext::Protocol::from_static("connect-udp"));
        assert_eq!(
            request_to_h1(&other, false, &mut Vec::new()).unwrap_err(),
            ConvertError::UnsupportedConnect
        );
    }

    #[test]
    fn protocol_is_only_reported_for_connect() {
        let mut r = req("GET", "https://a.test/", &[]);
        r.extensions_mut()
            .insert(h2::ext::Protocol::from_static("websocket"));
        assert_eq!(extended_connect_protocol(&r), None);
    }

    #[test]
    fn websocket_keys_differ() {
        assert_ne!(random_16(), random_16());
        assert_eq!(base64_16(&[0u8; 16]), "AAAAAAAAAAAAAAAAAAAAAA==");
        assert_eq!(
            base64_16(b"the sample nonce"),
            "dGhlIHNhbXBsZSBub25jZQ==" // RFC 6455 §1.3
        );
    }

    #[test]
    fn response_drops_hop_by_hop_and_listed_fields() {
        let h: Vec<(&[u8], &[u8])> = vec![
            (b"Content-Type", b"text/plain"),
            (b"Connection", b"keep-alive, X-Secret"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Transfer-Encoding", b"chunked"),
            (b"X-Secret", b"1"),
            (b"Set-Cookie", b"a=1"),
            (b"Set-Cookie", b"b=2"),
            (b"Proxy-Connection", b"x"),
            (b"Upgrade", b"h2c"),
            (b"TE", b"trailers"),
            (b"Content-Length", b"12"),
        ];
        let r = response_to_h2(404, h.iter().copied(), false).unwrap();
        assert_eq!(r.status(), 404);
        let names: Vec<&str> = r.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type", "set-cookie", "content-length"]);
        assert_eq!(r.headers().get_all("set-cookie").iter().count(), 2);
    }

    #[test]
    fn response_101_only_for_extended_connect() {
        let h: Vec<(&[u8], &[u8])> = vec![
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            (b"Sec-WebSocket-Protocol", b"chat"),
        ];
        let r = response_to_h2(101, h.iter().copied(), true).unwrap();
        assert_eq!(r.status(), 200);
        let names: Vec<&str> = r.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["sec-websocket-protocol"]);
        assert_eq!(
            response_to_h2(101, h.iter().copied(), false).unwrap_err(),
            ConvertError::InvalidStatus
        );
        // A refusal is forwarded as is.
        let r = response_to_h2(403, h.iter().copied(), true).unwrap();
        assert_eq!(r.status(), 403);
        // 103 Early Hints passes for send_informational.
        let r = response_to_h2(103, std::iter::empty(), false).unwrap();
        assert!(r.status().is_informational());
    }

    #[test]
    fn response_rejects_unrepresentable_fields() {
        let h: Vec<(&[u8], &[u8])> = vec![(b"bad name", b"x")];
        assert_eq!(
            response_to_h2(200, h.iter().copied(), false).unwrap_err(),
            ConvertError::InvalidField
        );
        assert_eq!(
            response_to_h2(1000, std::iter::empty(), false).unwrap_err(),
            ConvertError::InvalidStatus
        );
    }

    #[test]
    fn chunk_headers_are_lowercase_hex() {
        let mut out = Vec::new();
        write_chunk_header(1, &mut out);
        write_chunk_header(0x1a2f, &mut out);
        write_chunk_header(usize::MAX, &mut out);
        assert_eq!(out, b"1\r\n1a2f\r\nffffffffffffffff\r\n");
    }

    #[test]
    fn h2_trailers_become_chunked_trailers() {
        let mut out = Vec::new();
        h2_trailers_to_h1(None, &mut out);
        assert_eq!(out, b"0\r\n\r\n");
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        t.insert("content-length", HeaderValue::from_static("3"));
        t.append("x-sum", HeaderValue::from_static("abc"));
        out.clear();
        h2_trailers_to_h1(Some(&t), &mut out);
        assert_eq!(out, b"0\r\ngrpc-status: 0\r\nx-sum: abc\r\n\r\n");
    }

    #[test]
    fn chunked_trailers_become_h2_trailers() {
        assert!(h1_trailers_to_h2(b"").unwrap().is_empty());
        assert!(h1_trailers_to_h2(b"\r\n").unwrap().is_empty());
        let t =
            h1_trailers_to_h2(b"Grpc-Status: 0\r\nX-Sum:  abc \r\nTransfer-Encoding: x\r\n\r\n")
                .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t["grpc-status"], "0");
        assert_eq!(t["x-sum"], "abc");
        let t = h1_trailers_to_h2(b"x-a: 1\r\n").unwrap();
        assert_eq!(t["x-a"], "1");
        let t = h1_trailers_to_h2(b"x-a: 1").unwrap();
        assert_eq!(t["x-a"], "1");
        assert_eq!(
            h1_trailers_to_h2(b"no colon here\r\n\r\n").unwrap_err(),
            ConvertError::InvalidTrailers
        );
    }

    #[test]
    fn ipv6_authorities_compare_by_port() {
        assert!(same_origin(b"[::1]:443", b"[::1]", Some(b"443")));
        assert!(!same_origin(b"[::1]:8443", b"[::1]", Some(b"443")));
        assert!(same_origin(b"A.test", b"a.TEST:", None));
    }
}
