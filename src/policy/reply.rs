//! Responses the policy makes itself, written as HTTP/1.1 bytes into the
//! driver's buffer (the h2 driver converts them): prepared responses
//! (custom-response, deny, redirect) and edge error pages with an ngrok
//! error code (auth failures, policy runtime errors).

use crate::proxy::error_page::{self, EdgeError};

/// How the driver wants an edge-made reply framed.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplyStyle {
    /// The client prefers JSON error pages.
    pub json: bool,
    /// Add `connection: close`.
    pub close: bool,
    /// The request was HEAD: no body.
    pub head_request: bool,
}

/// A response prepared at load time (or rendered per request): status
/// line and headers without the final blank line, and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedResponse {
    pub status: u16,
    pub head: Vec<u8>,
    pub body: Vec<u8>,
}

/// ngrok error codes the policy answers with.
pub mod codes {
    use super::EdgeError;

    pub const RUNTIME: EdgeError = EdgeError {
        status: 500,
        code: Some("ERR_NGROK_3900"),
        message: "The traffic policy failed to evaluate.",
    };
    pub const BAD_REGEX: EdgeError = EdgeError {
        status: 500,
        code: Some("ERR_NGROK_3901"),
        message: "The traffic policy produced an invalid regular expression.",
    };
    pub const BODY_TOO_LARGE: EdgeError = EdgeError {
        status: 413,
        code: Some("ERR_NGROK_3902"),
        message: "The request body is larger than the traffic policy can buffer.",
    };
    pub const IP_RESTRICTED: EdgeError = EdgeError {
        status: 403,
        code: Some("ERR_NGROK_3205"),
        message: "The client IP address is not allowed.",
    };
    pub const WEBHOOK: EdgeError = EdgeError {
        status: 403,
        code: Some("ERR_NGROK_3204"),
        message: "The webhook signature could not be verified.",
    };
    pub const UNAUTHORIZED: EdgeError = EdgeError {
        status: 401,
        code: Some("ERR_NGROK_3401"),
        message: "Valid credentials are required.",
    };
    pub const RATE_LIMITED: EdgeError = EdgeError {
        status: 429,
        code: None,
        message: "Too many requests.",
    };
    pub const HOP_LIMIT: EdgeError = EdgeError {
        status: 508,
        code: Some("ERR_NGROK_3501"),
        message: "The forward-internal hop limit was exceeded.",
    };
    pub const INTERNAL_NOT_FOUND: EdgeError = EdgeError {
        status: 502,
        code: Some("ERR_NGROK_3200"),
        message: "The internal endpoint is offline.",
    };
}

/// Writes a prepared response.
pub fn write_prepared(r: &PreparedResponse, style: ReplyStyle, out: &mut Vec<u8>) {
    out.extend_from_slice(&r.head);
    if style.close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !style.head_request {
        out.extend_from_slice(&r.body);
    }
}

/// Writes an edge error page with extra headers after the status line.
pub fn write_error(
    err: EdgeError,
    detail: &str,
    extra: &[(&str, &str)],
    style: ReplyStyle,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    error_page::render(err, detail, style.json, style.close, out);
    if extra.is_empty() {
        return;
    }
    let Some(eol) = memchr::memmem::find(&out[start..], b"\r\n") else {
        return;
    };
    let at = start + eol + 2;
    let mut ins = Vec::with_capacity(64);
    for (n, v) in extra {
        ins.extend_from_slice(n.as_bytes());
        ins.extend_from_slice(b": ");
        ins.extend_from_slice(v.as_bytes());
        ins.extend_from_slice(b"\r\n");
    }
    out.splice(at..at, ins);
}

/// Builds a response head (status line and headers, no blank line) with
/// a content-type inferred from the body when none is given, and the
/// content-length.
pub fn prepare(status: u16, headers: &[(String, String)], body: Vec<u8>) -> PreparedResponse {
    let mut head = Vec::with_capacity(128);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    head.push(b' ');
    head.extend_from_slice(crate::proxy::status::reason(status).as_bytes());
    head.extend_from_slice(b"\r\n");
    let mut has_content_type = false;
    for (name, value) in headers {
        has_content_type |= name.eq_ignore_ascii_case("content-type");
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !has_content_type && !body.is_empty() {
        head.extend_from_slice(b"content-type: ");
        head.extend_from_slice(infer_content_type(&body).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"content-length: ");
    head.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    head.extend_from_slice(b"\r\n");
    PreparedResponse { status, head, body }
}

fn infer_content_type(body: &[u8]) -> &'static str {
    let t = body.trim_ascii_start();
    if (t.starts_with(b"{") || t.starts_with(b"["))
        && serde_json::from_slice::<serde_json::Value>(t).is_ok()
    {
        "application/json"
    } else if t.starts_with(b"<") {
        "text/html; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    }
}

/// A header value must not break the head.
pub fn safe_value(v: &str) -> bool {
    !v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_with_extra_header() {
        let mut out = Vec::new();
        write_error(
            codes::UNAUTHORIZED,
            "",
            &[("www-authenticate", "Basic realm=\"ngrok\"")],
            ReplyStyle::default(),
            &mut out,
        );
        let s = String::from_utf8(out).expect("ascii");
        assert!(
            s.starts_with(
                "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic realm=\"ngrok\"\r\n"
            ),
            "{s}"
        );
        assert!(s.contains("ERR_NGROK_3401"));
    }

    #[test]
    fn prepared_infers_type() {
        let r = prepare(200, &[], b"{\"a\":1}".to_vec());
        assert!(String::from_utf8_lossy(&r.head).contains("content-type: application/json"));
        let mut out = Vec::new();
        write_prepared(
            &r,
            ReplyStyle {
                close: true,
                head_request: true,
                ..ReplyStyle::default()
            },
            &mut out,
        );
        let s = String::from_utf8(out).expect("ascii");
        assert!(s.ends_with("connection: close\r\n\r\n"), "{s}");
    }
}
