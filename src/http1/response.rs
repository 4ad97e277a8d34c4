//! Response heads from upstreams, parsed in place, with the body framing
//! decided by RFC 9112 §6.3 from the status and the request method.

use super::body::Framing;
use super::error::ParseError;
use super::head::{find_head_end, parse_content_length, transfer_coding_is_chunked, HeaderSpan};
use super::limits::{INLINE_HEADERS, MAX_HEADERS};
use super::{list_items, name_eq, Span};

#[derive(Debug, Default)]
pub struct ResponseHead {
    /// Minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub minor_version: u8,
    pub status: u16,
    pub reason: Span,
    pub headers: Vec<HeaderSpan>,
    pub head_len: usize,
    pub framing: Framing,
    /// The upstream is willing to reuse the connection.
    pub keep_alive: bool,
    pub upgrade: Option<Span>,
    pub connection_tokens: Vec<Span>,
    scan_from: usize,
}

impl ResponseHead {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn reset(&mut self) {
        self.headers.clear();
        self.connection_tokens.clear();
        self.scan_from = 0;
        self.head_len = 0;
    }

    /// Parses a response head to a request made with `head_request`
    /// (HEAD). `Ok(false)`: more bytes needed.
    pub fn parse(
        &mut self,
        buf: &[u8],
        max_head: usize,
        head_request: bool,
    ) -> Result<bool, ParseError> {
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
        let head = &buf[..end];
        let mut inline = [httparse::EMPTY_HEADER; INLINE_HEADERS];
        let mut res = httparse::Response::new(&mut inline);
        match res.parse(head) {
            Ok(httparse::Status::Complete(_)) => self.absorb(head, &res, head_request)?,
            Ok(httparse::Status::Partial) => return Err(ParseError::Syntax("incomplete head")),
            Err(httparse::Error::TooManyHeaders) => {
                let mut heap = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut res = httparse::Response::new(&mut heap);
                match res.parse(head) {
                    Ok(httparse::Status::Complete(_)) => self.absorb(head, &res, head_request)?,
                    _ => return Err(ParseError::Syntax("invalid response head")),
                }
            }
            Err(httparse::Error::Version) => return Err(ParseError::Version),
            Err(_) => return Err(ParseError::Syntax("invalid response head")),
        }
        self.head_len = end;
        Ok(true)
    }

    fn absorb(
        &mut self,
        buf: &[u8],
        res: &httparse::Response<'_, '_>,
        head_request: bool,
    ) -> Result<(), ParseError> {
        let (Some(version), Some(status)) = (res.version, res.code) else {
            return Err(ParseError::Syntax("incomplete status line"));
        };
        self.minor_version = version;
        self.status = status;
        self.reason = res
            .reason
            .map(|r| Span::of(buf, r.as_bytes()))
            .unwrap_or_default();
        self.keep_alive = version == 1;
        self.upgrade = None;
        let mut content_length = None;
        let mut has_te = false;
        let mut chunked = false;
        for h in res.headers.iter() {
            let name = h.name.as_bytes();
            let value = h.value;
            if name_eq(name, b"content-length") {
                let n = parse_content_length(value)?;
                if content_length.is_some_and(|p| p != n) {
                    return Err(ParseError::InvalidContentLength);
                }
                content_length = Some(n);
            } else if name_eq(name, b"transfer-encoding") {
                has_te = true;
                // A response may end in a non-chunked coding: then it is
                // close-delimited (RFC 9112 §6.3 item 4).
                chunked = transfer_coding_is_chunked(value, false).unwrap_or(false);
            } else if name_eq(name, b"connection") {
                for token in list_items(value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        self.keep_alive = false;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        self.keep_alive = true;
                    } else if !token.eq_ignore_ascii_case(b"upgrade") {
                        self.connection_tokens.push(Span::of(buf, token));
                    }
                }
            } else if name_eq(name, b"upgrade") {
                self.upgrade = Some(Span::of(buf, value));
            }
            self.headers.push(HeaderSpan {
                name: Span::of(buf, name),
                value: Span::of(buf, value),
            });
        }
        let bodiless =
            head_request || (100..200).contains(&status) || status == 204 || status == 304;
        self.framing = if bodiless {
            Framing::None
        } else {
            match (has_te, content_length) {
                (true, Some(_)) => return Err(ParseError::TransferEncodingWithContentLength),
                (true, None) if chunked => Framing::Chunked,
                (true, None) => Framing::CloseDelimited,
                (false, Some(n)) => Framing::Length(n),
                (false, None) => Framing::CloseDelimited,
            }
        };
        if self.framing == Framing::CloseDelimited {
            self.keep_alive = false;
        }
        Ok(())
    }

    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status)
    }

    pub fn is_connection_token(&self, buf: &[u8], name: &[u8]) -> bool {
        self.connection_tokens
            .iter()
            .any(|t| t.get(buf).eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8], head: bool) -> Result<ResponseHead, ParseError> {
        let mut r = ResponseHead::new();
        match r.parse(raw, 1 << 20, head)? {
            true => Ok(r),
            false => Err(ParseError::Syntax("partial")),
        }
    }

    #[test]
    fn length_framed() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false).expect("ok");
        assert_eq!(r.status, 200);
        assert_eq!(r.framing, Framing::Length(5));
        assert!(r.keep_alive);
    }

    #[test]
    fn bodiless_statuses_and_head() {
        for (raw, head) in [
            (
                &b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"[..],
                false,
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
                false,
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            (b"HTTP/1.1 100 Continue\r\n\r\n", false),
        ] {
            assert_eq!(parse(raw, head).expect("ok").framing, Framing::None);
        }
    }

    #[test]
    fn close_delimited() {
        let r = parse(b"HTTP/1.1 200 OK\r\n\r\nabc", false).expect("ok");
        assert_eq!(r.framing, Framing::CloseDelimited);
        assert!(!r.keep_alive);
        let r = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false).expect("ok");
        assert_eq!(r.framing, Framing::CloseDelimited);
    }

    #[test]
    fn ambiguous_responses_rejected() {
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            false
        )
        .is_err());
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            false
        )
        .is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", false).is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nX : a\r\n\r\n", false).is_err());
        assert!(parse(b"garbage\r\n\r\n", false).is_err());
    }

    #[test]
    fn http10_not_reused() {
        let r = parse(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false).expect("ok");
        assert!(!r.keep_alive);
        let r = parse(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .expect("ok");
        assert!(!r.keep_alive);
    }

    #[test]
    fn too_large() {
        let mut raw = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 5000));
        let mut r = ResponseHead::new();
        assert_eq!(r.parse(&raw, 1000, false), Err(ParseError::HeadTooLarge));
    }
}
