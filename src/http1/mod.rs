//! Sans-IO HTTP/1.1: request and response heads parsed in place (offsets into
//! the read buffer, never copies), message framing per RFC 9112 §6, a
//! streaming body scanner, and head encoding for the proxy.
//!
//! This module owns protocol rules only. It never performs I/O, never
//! allocates per byte, and never panics on input: every malformed message is
//! a typed [`ParseError`].

pub mod body;
pub mod error;
pub mod head;
pub mod limits;
pub mod response;

#[cfg(test)]
mod proptests;

pub use body::{BodyDecoder, Framing};
pub use error::ParseError;
pub use head::{HeaderSpan, Method, RequestHead};
pub use response::ResponseHead;

/// Byte range into a buffer, kept small: heads are bounded by
/// [`limits::MAX_HEAD_BYTES_CEILING`], which fits in `u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    #[inline]
    pub fn of(buf: &[u8], part: &[u8]) -> Span {
        // Both slices come from httparse over `buf`, so `part` lies within it.
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    #[inline]
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// Case-insensitive ASCII comparison of a header name.
#[inline]
pub fn name_eq(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len() && name.eq_ignore_ascii_case(lower)
}

/// Iterates the comma-separated, trimmed, non-empty elements of a list
/// header value (RFC 9110 §5.6.1).
pub fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(trim_ows)
        .filter(|item| !item.is_empty())
}

/// Trims optional whitespace (SP / HTAB) at both ends.
pub fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}
