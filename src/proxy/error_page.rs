//! Responses the edge makes itself when it cannot serve a request: the
//! status, `ngrok-error-code` when an ngrok code applies, and a short HTML
//! page, or JSON when the client asks for JSON.

use crate::http1::{name_eq, RequestHead};

use super::status::reason;

/// An edge-made error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeError {
    pub status: u16,
    /// `ERR_NGROK_<n>`, for routing and forwarding failures. Malformed
    /// requests (400/431/505) are protocol errors and carry none.
    pub code: Option<&'static str>,
    pub message: &'static str,
}

impl EdgeError {
    pub const NO_ENDPOINT: EdgeError = EdgeError {
        status: 404,
        code: Some("ERR_NGROK_3200"),
        message: "The endpoint is offline.",
    };
    pub const UPSTREAM_INVALID: EdgeError = EdgeError {
        status: 502,
        code: Some("ERR_NGROK_3004"),
        message: "The upstream returned an invalid or incomplete HTTP response.",
    };
    pub const UPSTREAM_UNREACHABLE: EdgeError = EdgeError {
        status: 502,
        code: Some("ERR_NGROK_8012"),
        message: "The upstream could not be reached.",
    };
    pub const UPSTREAM_TIMEOUT: EdgeError = EdgeError {
        status: 504,
        code: Some("ERR_NGROK_3008"),
        message: "The upstream did not answer in time.",
    };
    pub const AGENT_UNREACHABLE: EdgeError = EdgeError {
        status: 502,
        code: Some("ERR_NGROK_3210"),
        message: "The edge could not open a stream to the agent.",
    };
    pub const AGENT_BUSY: EdgeError = EdgeError {
        status: 503,
        code: Some("ERR_NGROK_3210"),
        message: "The agent has too many requests in progress.",
    };
    pub const WEBSOCKET_NO_CONNECTION_UPGRADE: EdgeError = EdgeError {
        status: 400,
        code: Some("ERR_NGROK_3206"),
        message: "A WebSocket upgrade needs `Connection: upgrade`.",
    };
    pub const METHOD_NOT_ALLOWED: EdgeError = EdgeError {
        status: 405,
        code: None,
        message: "CONNECT is not supported.",
    };
    pub const REQUEST_TIMEOUT: EdgeError = EdgeError {
        status: 408,
        code: None,
        message: "The request head was not received in time.",
    };

    /// A malformed request: status from the parse error.
    pub fn protocol(e: crate::http1::ParseError) -> EdgeError {
        let status = e.status();
        let message = match status {
            431 => "The request head is larger than the limit.",
            505 => "Only HTTP/1.1 (and HTTP/2 over TLS) is supported.",
            417 => "Only `Expect: 100-continue` is supported.",
            _ => "The request is malformed.",
        };
        EdgeError {
            status,
            code: None,
            message,
        }
    }
}

/// Whether the request prefers JSON to HTML (by its Accept header).
pub fn wants_json(buf: &[u8], req: &RequestHead) -> bool {
    req.headers.iter().any(|h| {
        name_eq(h.name.get(buf), b"accept") && {
            let v = h.value.get(buf);
            contains(v, b"application/json") && !contains(v, b"text/html")
        }
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// Writes a complete error response into `out`.
pub fn render(err: EdgeError, detail: &str, json: bool, close: bool, out: &mut Vec<u8>) {
    let body = if json {
        serde_json::json!({
            "status_code": err.status,
            "error_code": err.code,
            "msg": err.message,
            "details": detail,
        })
        .to_string()
    } else {
        let code = err
            .code
            .map(|c| format!("<p><code>{c}</code></p>"))
            .unwrap_or_default();
        format!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{status} {reason}</title></head>\
             <body><h1>{status} {reason}</h1><p>{message}</p><p>{detail}</p>{code}</body></html>\n",
            status = err.status,
            reason = reason(err.status),
            message = err.message,
            detail = html_escape(detail),
        )
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(err.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(err.status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(code) = err.code {
        out.extend_from_slice(b"ngrok-error-code: ");
        out.extend_from_slice(code.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(if json {
        b"content-type: application/json\r\n".as_slice()
    } else {
        b"content-type: text/html; charset=utf-8\r\n".as_slice()
    });
    out.extend_from_slice(b"cache-control: no-store\r\ncontent-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

/// Escapes text for HTML content and attribute values (the edge's error
/// pages, the agent's directory listings, the login pages).
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_page_with_code() {
        let mut out = Vec::new();
        render(EdgeError::NO_ENDPOINT, "<x>", false, false, &mut out);
        let s = String::from_utf8(out).expect("utf8");
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\nngrok-error-code: ERR_NGROK_3200\r\n"));
        assert!(s.contains("&lt;x&gt;"));
        let body_len = s.split("\r\n\r\n").nth(1).map(str::len).unwrap_or(0);
        assert!(s.contains(&format!("content-length: {body_len}\r\n")));
    }

    #[test]
    fn json_when_preferred() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nAccept: application/json\r\n\r\n";
        let mut req = RequestHead::new();
        assert_eq!(req.parse(raw, 1 << 20), Ok(true));
        assert!(wants_json(raw, &req));
        let mut out = Vec::new();
        render(EdgeError::UPSTREAM_TIMEOUT, "", true, true, &mut out);
        let s = String::from_utf8(out).expect("utf8");
        assert!(s.contains("\"error_code\":\"ERR_NGROK_3008\""));
        assert!(s.contains("connection: close\r\n"));
    }
}
