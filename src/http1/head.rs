//! Request heads: located, parsed in place with httparse, then checked
//! against RFC 9112's framing rules so that no ambiguous request is ever
//! forwarded.

use super::body::Framing;
use super::error::ParseError;
use super::limits::{INLINE_HEADERS, MAX_HEADERS};
use super::{list_items, name_eq, trim_ows, Span};

/// Request methods the proxy treats specially; the rest are `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Trace,
    Patch,
    Connect,
    Other,
}

impl Method {
    fn from_bytes(m: &[u8]) -> Method {
        match m {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"PATCH" => Method::Patch,
            b"CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }

    /// RFC 9110 §9.2.2: safe to send again after a failure.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Put
                | Method::Delete
                | Method::Options
                | Method::Trace
        )
    }
}

/// One header field as offsets into the head's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderSpan {
    pub name: Span,
    pub value: Span,
}

/// What is known about a header's role once the head is parsed, so the
/// encoder does not compare names twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderRole {
    /// Forwarded as is.
    Plain,
    /// Hop-by-hop (RFC 9110 §7.6.1 and RFC 2616 §13.5.1) or one the proxy
    /// regenerates itself: never copied.
    HopByHop,
    Host,
    ContentLength,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
}

/// Classifies a header name by its role in proxying.
pub fn header_role(name: &[u8]) -> HeaderRole {
    // Dispatch on length first: most names are rejected by one compare.
    match name.len() {
        2 if name_eq(name, b"te") => HeaderRole::HopByHop,
        4 if name_eq(name, b"host") => HeaderRole::Host,
        6 if name_eq(name, b"expect") => HeaderRole::HopByHop,
        7 if name_eq(name, b"upgrade") => HeaderRole::HopByHop,
        10 if name_eq(name, b"connection") || name_eq(name, b"keep-alive") => HeaderRole::HopByHop,
        14 if name_eq(name, b"content-length") => HeaderRole::ContentLength,
        15 if name_eq(name, b"x-forwarded-for") => HeaderRole::XForwardedFor,
        16 if name_eq(name, b"x-forwarded-host") => HeaderRole::XForwardedHost,
        16 if name_eq(name, b"proxy-connection") => HeaderRole::HopByHop,
        17 if name_eq(name, b"transfer-encoding") => HeaderRole::HopByHop,
        17 if name_eq(name, b"x-forwarded-proto") => HeaderRole::XForwardedProto,
        18 if name_eq(name, b"proxy-authenticate") => HeaderRole::HopByHop,
        19 if name_eq(name, b"proxy-authorization") => HeaderRole::HopByHop,
        _ => HeaderRole::Plain,
    }
}

/// A parsed request head. Reused across requests on a connection: `parse`
/// clears it, keeping the allocations.
#[derive(Debug, Default)]
pub struct RequestHead {
    pub method: Option<Method>,
    pub method_span: Span,
    /// The request-target as sent.
    pub target: Span,
    /// The origin-form to forward: the target itself, or for an
    /// absolute-form target its path and query (empty means "/").
    pub origin_form: Span,
    /// Authority used for routing: the absolute-form target's, else Host's.
    pub authority: Span,
    /// Whether `authority` came from an absolute-form target.
    pub absolute_form: bool,
    pub headers: Vec<HeaderSpan>,
    pub roles: Vec<HeaderRole>,
    /// Length of the head including the blank line.
    pub head_len: usize,
    pub framing: Framing,
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// `Upgrade` header value when present.
    pub upgrade: Option<Span>,
    /// `Connection` lists `upgrade`.
    pub connection_upgrade: bool,
    /// Header names listed in `Connection` (other than close, keep-alive,
    /// upgrade): hop-by-hop for this message.
    pub connection_tokens: Vec<Span>,
    /// Where to resume looking for the end of the head.
    scan_from: usize,
    line_checked: bool,
}

impl RequestHead {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the previous request, keeping allocations.
    pub fn reset(&mut self) {
        self.headers.clear();
        self.roles.clear();
        self.connection_tokens.clear();
        self.scan_from = 0;
        self.line_checked = false;
        self.head_len = 0;
    }

    /// Parses a request head at the start of `buf`.
    ///
    /// Returns `Ok(false)` when more bytes are needed, `Ok(true)` when the
    /// head is complete (see `head_len`). Call `reset` before a new request;
    /// between partial calls the scan position is kept, so a head arriving
    /// in many small reads is scanned once, not quadratically.
    pub fn parse(&mut self, buf: &[u8], max_head: usize) -> Result<bool, ParseError> {
        if !self.line_checked {
            let Some(lf) = memchr::memchr(b'\n', buf) else {
                return if buf.len() > max_head {
                    Err(ParseError::HeadTooLarge)
                } else {
                    Ok(false)
                };
            };
            check_request_line(&buf[..lf])?;
            self.line_checked = true;
        }
        let Some(end) = find_head_end(buf, self.scan_from) else {
            if buf.len() > max_head {
                return Err(ParseError::HeadTooLarge);
            }
            self.scan_from = buf.len().saturating_sub(2);
            return Ok(false);
        };
        if end > max_head {
            return Err(ParseError::HeadTooLarge);
        }
        self.parse_complete(&buf[..end])?;
        self.head_len = end;
        Ok(true)
    }

    fn parse_complete(&mut self, head: &[u8]) -> Result<(), ParseError> {
        let mut inline = [httparse::EMPTY_HEADER; INLINE_HEADERS];
        let mut req = httparse::Request::new(&mut inline);
        match req.parse(head) {
            Ok(httparse::Status::Complete(_)) => self.absorb(head, &req),
            Ok(httparse::Status::Partial) => Err(ParseError::Syntax("incomplete head")),
            Err(httparse::Error::TooManyHeaders) => {
                let mut heap = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut heap);
                match req.parse(head) {
                    Ok(httparse::Status::Complete(_)) => self.absorb(head, &req),
                    Ok(httparse::Status::Partial) => Err(ParseError::Syntax("incomplete head")),
                    Err(e) => Err(map_httparse(e)),
                }
            }
            Err(e) => Err(map_httparse(e)),
        }
    }

    fn absorb(&mut self, buf: &[u8], req: &httparse::Request<'_, '_>) -> Result<(), ParseError> {
        if req.version != Some(1) {
            return Err(ParseError::Version);
        }
        let (Some(method), Some(path)) = (req.method, req.path) else {
            return Err(ParseError::Syntax("incomplete request line"));
        };
        self.method_span = Span::of(buf, method.as_bytes());
        let method = Method::from_bytes(method.as_bytes());
        self.method = Some(method);
        self.target = Span::of(buf, path.as_bytes());
        self.absolute_form = false;
        self.origin_form = self.target;
        self.authority = Span::default();
        self.classify_target(buf, method, path.as_bytes())?;

        self.keep_alive = true;
        self.expect_continue = false;
        self.upgrade = None;
        self.connection_upgrade = false;
        let mut host: Option<Span> = None;
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        let mut has_te = false;

        for h in req.headers.iter() {
            let name = h.name.as_bytes();
            let value = h.value;
            let span = HeaderSpan {
                name: Span::of(buf, name),
                value: Span::of(buf, value),
            };
            let role = header_role(name);
            match role {
                HeaderRole::Host => {
                    if host.is_some() {
                        return Err(ParseError::DuplicateHost);
                    }
                    let v = trim_ows(value);
                    if !valid_authority(v) {
                        return Err(ParseError::InvalidHost);
                    }
                    host = Some(Span::of(buf, v));
                }
                HeaderRole::ContentLength => {
                    let n = parse_content_length(value)?;
                    if content_length.is_some_and(|prev| prev != n) {
                        return Err(ParseError::InvalidContentLength);
                    }
                    content_length = Some(n);
                }
                HeaderRole::HopByHop => {
                    if name_eq(name, b"transfer-encoding") {
                        has_te = true;
                        chunked = transfer_coding_is_chunked(value, chunked)?;
                    } else if name_eq(name, b"connection") {
                        self.absorb_connection(buf, value);
                    } else if name_eq(name, b"expect") {
                        if trim_ows(value).eq_ignore_ascii_case(b"100-continue") {
                            self.expect_continue = true;
                        } else {
                            return Err(ParseError::Expectation);
                        }
                    } else if name_eq(name, b"upgrade") {
                        // h2c is never tunnelled: an upstream that switched
                        // would give the client an HTTP/2 channel past the
                        // edge's routing and policy ("h2c smuggling"). The
                        // request goes on as a plain one, Upgrade dropped
                        // as hop-by-hop.
                        if !list_items(value).any(|p| p.eq_ignore_ascii_case(b"h2c")) {
                            self.upgrade = Some(span.value);
                        }
                    }
                }
                _ => {}
            }
            self.headers.push(span);
            self.roles.push(role);
        }
        // Connection may come after the headers it names: re-mark them.
        if !self.connection_tokens.is_empty() {
            for i in 0..self.headers.len() {
                if self.roles[i] == HeaderRole::Plain
                    && self.is_connection_token(buf, self.headers[i].name.get(buf))
                {
                    self.roles[i] = HeaderRole::HopByHop;
                }
            }
        }

        let Some(host) = host else {
            return Err(ParseError::MissingHost);
        };
        if !self.absolute_form {
            if host.is_empty() {
                return Err(ParseError::InvalidHost);
            }
            self.authority = host;
        }
        self.framing = match (has_te, content_length) {
            (true, Some(_)) => return Err(ParseError::TransferEncodingWithContentLength),
            (true, None) if chunked => Framing::Chunked,
            (true, None) => return Err(ParseError::TransferEncodingNotChunked),
            (false, Some(0)) | (false, None) => Framing::None,
            (false, Some(n)) => Framing::Length(n),
        };
        Ok(())
    }

    fn classify_target(&mut self, buf: &[u8], method: Method, t: &[u8]) -> Result<(), ParseError> {
        match t.first() {
            Some(b'/') => Ok(()),
            Some(b'*') if t.len() == 1 && method == Method::Options => Ok(()),
            _ if method == Method::Connect => {
                if valid_authority(t) {
                    self.authority = self.target;
                    Ok(())
                } else {
                    Err(ParseError::Syntax("invalid CONNECT target"))
                }
            }
            _ => {
                let rest = strip_scheme(t).ok_or(ParseError::Syntax("invalid request-target"))?;
                let end = rest
                    .iter()
                    .position(|b| matches!(b, b'/' | b'?' | b'#'))
                    .unwrap_or(rest.len());
                let authority = &rest[..end];
                if authority.is_empty() || !valid_authority(authority) {
                    return Err(ParseError::InvalidHost);
                }
                self.absolute_form = true;
                self.authority = Span::of(buf, authority);
                self.origin_form = Span::of(buf, &rest[end..]);
                Ok(())
            }
        }
    }

    fn absorb_connection(&mut self, buf: &[u8], value: &[u8]) {
        for token in list_items(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.keep_alive = false;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.connection_upgrade = true;
            } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                self.connection_tokens.push(Span::of(buf, token));
            }
        }
    }

    fn is_connection_token(&self, buf: &[u8], name: &[u8]) -> bool {
        self.connection_tokens
            .iter()
            .any(|t| t.get(buf).eq_ignore_ascii_case(name))
    }

    pub fn method(&self) -> Method {
        self.method.unwrap_or(Method::Other)
    }

    /// True when this is a WebSocket-style upgrade the proxy should tunnel.
    pub fn is_upgrade(&self) -> bool {
        self.upgrade.is_some() && self.connection_upgrade
    }
}

/// Finds the end of a head (index just past the blank line), accepting
/// CRLF or bare LF line ends (RFC 9112 §2.2), starting the scan at `from`.
pub fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let from = from.min(buf.len());
    for lf in memchr::memchr_iter(b'\n', &buf[from..]) {
        let i = from + lf;
        match buf.get(i + 1) {
            Some(b'\n') => return Some(i + 2),
            Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some(i + 3),
            _ => {}
        }
    }
    None
}

/// The request line must end in an HTTP version: a line without one is
/// HTTP/0.9 (RFC 9112 §2.3), which gets 505, not a parse error.
fn check_request_line(line: &[u8]) -> Result<(), ParseError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(ParseError::Syntax("empty request line"));
    }
    match memchr::memrchr(b' ', line) {
        Some(sp) if line[sp + 1..].starts_with(b"HTTP/") => Ok(()),
        _ => Err(ParseError::Version),
    }
}

fn map_httparse(e: httparse::Error) -> ParseError {
    match e {
        httparse::Error::Version => ParseError::Version,
        httparse::Error::TooManyHeaders => ParseError::TooManyHeaders,
        httparse::Error::HeaderName => ParseError::Syntax("invalid header name"),
        httparse::Error::HeaderValue => ParseError::Syntax("invalid header value"),
        httparse::Error::NewLine => ParseError::Syntax("invalid line ending"),
        httparse::Error::Token => ParseError::Syntax("invalid token"),
        httparse::Error::Status => ParseError::Syntax("invalid status"),
    }
}

fn strip_scheme(t: &[u8]) -> Option<&[u8]> {
    if t.len() > 7 && t[..7].eq_ignore_ascii_case(b"http://") {
        Some(&t[7..])
    } else if t.len() > 8 && t[..8].eq_ignore_ascii_case(b"https://") {
        Some(&t[8..])
    } else {
        None
    }
}

/// RFC 3986 authority without userinfo: reg-name / IPv4 / IP-literal,
/// optional port. Empty is allowed here (the caller decides).
pub fn valid_authority(v: &[u8]) -> bool {
    v.iter().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
                    | b'%'
            )
    })
}

/// Content-Length: `1*DIGIT`, or a list of identical values (RFC 9110
/// §8.6); anything else is invalid.
pub fn parse_content_length(value: &[u8]) -> Result<u64, ParseError> {
    let mut out: Option<u64> = None;
    let mut items = 0;
    for item in value.split(|b| *b == b',') {
        let item = trim_ows(item);
        items += 1;
        if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
            return Err(ParseError::InvalidContentLength);
        }
        let mut n: u64 = 0;
        for d in item {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d - b'0')))
                .ok_or(ParseError::InvalidContentLength)?;
        }
        if out.is_some_and(|prev| prev != n) {
            return Err(ParseError::InvalidContentLength);
        }
        out = Some(n);
    }
    match out {
        Some(n) if items > 0 => Ok(n),
        _ => Err(ParseError::InvalidContentLength),
    }
}

/// Folds one Transfer-Encoding field into the running state: returns
/// whether the final coding so far is `chunked`. `chunked` applied twice,
/// or anything after `chunked`, is an error (RFC 9112 §6.1).
pub fn transfer_coding_is_chunked(value: &[u8], chunked_so_far: bool) -> Result<bool, ParseError> {
    let mut last_chunked = chunked_so_far;
    let mut any = false;
    for coding in list_items(value) {
        any = true;
        if last_chunked {
            return Err(ParseError::TransferEncodingNotChunked);
        }
        // A coding is a bare token: parameters (";q=...") and anything
        // else are refused, so that what is forwarded (see
        // `proxy::headers`) reads the same to every upstream.
        if !coding.iter().all(|b| is_tchar(*b)) {
            return Err(ParseError::Syntax("invalid transfer coding"));
        }
        last_chunked = coding.eq_ignore_ascii_case(b"chunked");
    }
    if !any {
        return Err(ParseError::TransferEncodingNotChunked);
    }
    Ok(last_chunked)
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024 * 1024;

    fn parse(raw: &[u8]) -> Result<RequestHead, ParseError> {
        let mut h = RequestHead::new();
        match h.parse(raw, MAX)? {
            true => Ok(h),
            false => Err(ParseError::Syntax("partial")),
        }
    }

    #[test]
    fn simple_get() {
        let raw = b"GET /a?b=1 HTTP/1.1\r\nHost: Example.com:8080\r\nX-A: 1\r\n\r\nrest";
        let h = parse(raw).expect("parse");
        assert_eq!(h.method(), Method::Get);
        assert_eq!(h.target.get(raw), b"/a?b=1");
        assert_eq!(h.authority.get(raw), b"Example.com:8080");
        assert_eq!(h.head_len, raw.len() - 4);
        assert_eq!(h.framing, Framing::None);
        assert!(h.keep_alive);
        assert_eq!(h.headers.len(), 2);
    }

    #[test]
    fn partial_then_complete_without_rescanning() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut h = RequestHead::new();
        for n in 1..raw.len() {
            assert_eq!(h.parse(&raw[..n], MAX), Ok(false), "prefix {n}");
        }
        assert_eq!(h.parse(raw, MAX), Ok(true));
    }

    #[test]
    fn bare_lf_line_endings() {
        let h = parse(b"GET / HTTP/1.1\nHost: a\n\n").expect("parse");
        assert_eq!(h.head_len, 24);
    }

    #[test]
    fn te_and_cl_rejected() {
        let r = parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(r.err(), Some(ParseError::TransferEncodingWithContentLength));
    }

    #[test]
    fn differing_content_lengths_rejected() {
        let r =
            parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n");
        assert_eq!(r.err(), Some(ParseError::InvalidContentLength));
        let r = parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n");
        assert_eq!(r.err(), Some(ParseError::InvalidContentLength));
    }

    #[test]
    fn identical_content_lengths_accepted() {
        let h = parse(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\n",
        )
        .expect("parse");
        assert_eq!(h.framing, Framing::Length(3));
    }

    #[test]
    fn malformed_content_length_rejected() {
        for v in [
            "-1",
            "+1",
            "1.0",
            "0x10",
            "",
            " ",
            "1 2",
            "99999999999999999999999",
        ] {
            let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {v}\r\n\r\n");
            assert!(parse(raw.as_bytes()).is_err(), "value {v:?}");
        }
    }

    /// Regression (smuggling battery): `chunked;foo=bar` counted as
    /// chunked and was forwarded verbatim; a strict upstream does not read
    /// it as chunked, so the body became its next request.
    #[test]
    fn regression_transfer_coding_with_parameters_refused() {
        for v in [
            "chunked;foo=bar",
            "chunked ;x",
            "gzip;q=1, chunked",
            "gz\"ip, chunked",
            "\"chunked\"",
        ] {
            let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {v}\r\n\r\n");
            assert!(parse(raw.as_bytes()).is_err(), "value {v:?}");
        }
    }

    #[test]
    fn h2c_upgrade_is_not_an_upgrade() {
        let r = parse(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
            .expect("ok");
        assert!(!r.is_upgrade());
        let r = parse(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .expect("ok");
        assert!(r.is_upgrade());
    }

    #[test]
    fn te_last_coding_must_be_chunked() {
        let ok = parse(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
            .expect("ok");
        assert_eq!(ok.framing, Framing::Chunked);
        for v in ["gzip", "chunked, gzip", "chunked, chunked", "identity", ""] {
            let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {v}\r\n\r\n");
            assert!(parse(raw.as_bytes()).is_err(), "value {v:?}");
        }
        // Split across two fields: chunked then gzip.
        let r = parse(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(r.err(), Some(ParseError::TransferEncodingNotChunked));
        let ok = parse(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .expect("ok");
        assert_eq!(ok.framing, Framing::Chunked);
    }

    #[test]
    fn obs_fold_rejected() {
        let r = parse(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n");
        assert!(r.is_err());
    }

    #[test]
    fn whitespace_before_colon_rejected() {
        assert!(parse(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n").is_err());
        assert!(parse(b"GET / HTTP/1.1\r\nHost: a\r\nX-A\t: 1\r\n\r\n").is_err());
    }

    #[test]
    fn host_missing_duplicate_invalid() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nX: y\r\n\r\n").err(),
            Some(ParseError::MissingHost)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n").err(),
            Some(ParseError::DuplicateHost)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n").err(),
            Some(ParseError::InvalidHost)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n").err(),
            Some(ParseError::InvalidHost)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n").err(),
            Some(ParseError::InvalidHost)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost:\r\n\r\n").err(),
            Some(ParseError::InvalidHost)
        );
    }

    #[test]
    fn old_and_unknown_versions_get_505() {
        assert_eq!(
            parse(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n").err(),
            Some(ParseError::Version)
        );
        assert_eq!(parse(b"GET /\r\n").err(), Some(ParseError::Version));
        assert_eq!(
            parse(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n").err(),
            Some(ParseError::Version)
        );
        assert_eq!(ParseError::Version.status(), 505);
    }

    #[test]
    fn head_too_large() {
        let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 2000));
        let mut h = RequestHead::new();
        assert_eq!(h.parse(&raw, 1000), Err(ParseError::HeadTooLarge));
        raw.extend_from_slice(b"\r\n\r\n");
        let mut h = RequestHead::new();
        assert_eq!(h.parse(&raw, 1000), Err(ParseError::HeadTooLarge));
        assert_eq!(ParseError::HeadTooLarge.status(), 431);
    }

    #[test]
    fn many_headers_use_heap_array() {
        let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..500 {
            raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        let h = parse(&raw).expect("parse");
        assert_eq!(h.headers.len(), 501);
    }

    #[test]
    fn connection_tokens_and_upgrade() {
        let raw = b"GET / HTTP/1.1\r\nX-Drop: 1\r\nHost: a\r\nConnection: Upgrade, x-drop, close\r\nUpgrade: websocket\r\n\r\n";
        let h = parse(raw).expect("parse");
        assert!(h.is_upgrade());
        assert!(!h.keep_alive);
        assert_eq!(h.roles[0], HeaderRole::HopByHop, "named in Connection");
        assert_eq!(h.upgrade.map(|s| s.get(raw)), Some(&b"websocket"[..]));
    }

    #[test]
    fn expect_values() {
        let h = parse(
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n",
        )
        .expect("ok");
        assert!(h.expect_continue);
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n").err(),
            Some(ParseError::Expectation)
        );
    }

    #[test]
    fn absolute_form_routes_by_target_authority() {
        let raw = b"GET http://App.example.com:80/x?y HTTP/1.1\r\nHost: other\r\n\r\n";
        let h = parse(raw).expect("parse");
        assert!(h.absolute_form);
        assert_eq!(h.authority.get(raw), b"App.example.com:80");
        assert_eq!(h.origin_form.get(raw), b"/x?y");
        assert!(parse(b"GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n").is_err());
        assert!(parse(b"GET foo HTTP/1.1\r\nHost: h\r\n\r\n").is_err());
    }

    #[test]
    fn roles_classified() {
        assert_eq!(header_role(b"X-Forwarded-For"), HeaderRole::XForwardedFor);
        assert_eq!(header_role(b"TRANSFER-ENCODING"), HeaderRole::HopByHop);
        assert_eq!(header_role(b"Proxy-Authorization"), HeaderRole::HopByHop);
        assert_eq!(header_role(b"content-type"), HeaderRole::Plain);
    }
}
