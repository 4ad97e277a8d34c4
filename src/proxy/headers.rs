//! Head rewriting between client and upstream (seed: "Upstream Headers",
//! "Hop by hop headers"): hop-by-hop fields and those named in
//! `Connection` are dropped, `X-Forwarded-For`/`-Proto` are appended to
//! (merged into one field), `X-Forwarded-Host` is set when absent, and
//! framing headers are regenerated from the parsed framing so that no
//! ambiguous message leaves the edge.

use crate::http1::head::{header_role, HeaderRole};
use crate::http1::{name_eq, Framing, RequestHead, ResponseHead};
use crate::policy::exchange::{RequestEdits, ResponseEdits};

/// Per-connection facts the request encoder needs.
pub struct ForwardInfo<'a> {
    pub client_ip: &'a str,
    pub proto: &'static str,
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn push_merged(
    out: &mut Vec<u8>,
    name: &[u8],
    buf: &[u8],
    req: &RequestHead,
    role: HeaderRole,
    ours: &str,
) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    for (h, r) in req.headers.iter().zip(&req.roles) {
        if *r == role {
            let v = crate::http1::trim_ows(h.value.get(buf));
            if !v.is_empty() {
                out.extend_from_slice(v);
                out.extend_from_slice(b", ");
            }
        }
    }
    out.extend_from_slice(ours.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Encodes the head to send upstream for `req` (parsed from `buf`).
pub fn encode_request_head(
    buf: &[u8],
    req: &RequestHead,
    info: &ForwardInfo<'_>,
    out: &mut Vec<u8>,
) {
    encode_request_head_edited(buf, req, info, None, out);
}

/// Encodes the head to send upstream, applying a traffic policy's edits:
/// a rewritten target, a replaced Host, removed headers (including the
/// X-Forwarded-* the edge would add) and added headers.
pub fn encode_request_head_edited(
    buf: &[u8],
    req: &RequestHead,
    info: &ForwardInfo<'_>,
    edits: Option<&RequestEdits>,
    out: &mut Vec<u8>,
) {
    let edits = edits.filter(|e| !e.is_empty());
    let removed = |name: &[u8]| edits.is_some_and(|e| e.headers.is_removed(name));
    out.extend_from_slice(req.method_span.get(buf));
    out.push(b' ');
    match edits.and_then(RequestEdits::target) {
        Some(t) => out.extend_from_slice(t.as_bytes()),
        None => {
            let target = req.origin_form.get(buf);
            if req.absolute_form && !target.starts_with(b"/") {
                out.push(b'/');
            }
            out.extend_from_slice(target);
        }
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let new_host = edits.and_then(RequestEdits::host);
    let mut has_xfh = false;
    for (h, role) in req.headers.iter().zip(&req.roles) {
        match role {
            HeaderRole::Plain => {
                let name = h.name.get(buf);
                if !removed(name) {
                    push_header(out, name, h.value.get(buf));
                }
            }
            HeaderRole::Host => match new_host {
                Some(host) => push_header(out, b"Host", host.as_bytes()),
                None if req.absolute_form => push_header(out, b"Host", req.authority.get(buf)),
                None => push_header(out, h.name.get(buf), h.value.get(buf)),
            },
            HeaderRole::XForwardedHost => {
                has_xfh = true;
                if !removed(b"x-forwarded-host") {
                    push_header(out, h.name.get(buf), h.value.get(buf));
                }
            }
            HeaderRole::HopByHop
            | HeaderRole::ContentLength
            | HeaderRole::XForwardedFor
            | HeaderRole::XForwardedProto => {}
        }
    }
    if !removed(b"x-forwarded-for") {
        push_merged(
            out,
            b"X-Forwarded-For",
            buf,
            req,
            HeaderRole::XForwardedFor,
            info.client_ip,
        );
    }
    if !removed(b"x-forwarded-proto") {
        push_merged(
            out,
            b"X-Forwarded-Proto",
            buf,
            req,
            HeaderRole::XForwardedProto,
            info.proto,
        );
    }
    if !has_xfh && !removed(b"x-forwarded-host") {
        push_header(out, b"X-Forwarded-Host", req.authority.get(buf));
    }
    if let Some(e) = edits {
        for (n, v) in e.headers.added() {
            push_header(out, n.as_bytes(), v.as_bytes());
        }
    }
    match req.framing {
        Framing::Length(n) => {
            push_header(
                out,
                b"Content-Length",
                itoa::Buffer::new().format(n).as_bytes(),
            );
        }
        Framing::Chunked => {
            // Body bytes pass through verbatim, so the codings do too: all
            // of them in one field, lower case, ", " between (the parser
            // accepted only bare tokens ending in chunked).
            out.extend_from_slice(b"Transfer-Encoding: ");
            let mut first = true;
            for h in &req.headers {
                if name_eq(h.name.get(buf), b"transfer-encoding") {
                    for coding in crate::http1::list_items(h.value.get(buf)) {
                        if !first {
                            out.extend_from_slice(b", ");
                        }
                        first = false;
                        out.extend(coding.iter().map(u8::to_ascii_lowercase));
                    }
                }
            }
            out.extend_from_slice(b"\r\n");
        }
        Framing::None | Framing::CloseDelimited => {}
    }
    if req.is_upgrade() {
        out.extend_from_slice(b"Connection: upgrade\r\n");
        if let Some(u) = req.upgrade {
            push_header(out, b"Upgrade", u.get(buf));
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// How the client-facing response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientConn {
    KeepAlive,
    Close,
    Upgrade,
}

/// Encodes the head to send to the client for an upstream response.
pub fn encode_response_head(buf: &[u8], res: &ResponseHead, conn: ClientConn, out: &mut Vec<u8>) {
    encode_response_head_edited(buf, res, conn, None, out);
}

/// Encodes the client's response head, applying a traffic policy's
/// response edits: removed and added headers, `Location` rewritten back
/// to the endpoint's host after a Host rewrite, and compression (no
/// Content-Length, `Content-Encoding`, `Vary: accept-encoding`, chunked).
pub fn encode_response_head_edited(
    buf: &[u8],
    res: &ResponseHead,
    conn: ClientConn,
    edits: Option<&ResponseEdits>,
    out: &mut Vec<u8>,
) {
    let edits = edits.filter(|e| !e.is_empty());
    let compress = edits.and_then(|e| e.compress);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(res.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(res.reason.get(buf));
    out.extend_from_slice(b"\r\n");
    let mut seen_length = false;
    for h in &res.headers {
        let name = h.name.get(buf);
        match header_role(name) {
            HeaderRole::HopByHop => {
                if res.framing == Framing::Chunked
                    && compress.is_none()
                    && name_eq(name, b"transfer-encoding")
                {
                    push_header(out, name, h.value.get(buf));
                }
            }
            HeaderRole::ContentLength => {
                // Validated identical already; send one clean value.
                if !seen_length && res.framing != Framing::Chunked && compress.is_none() {
                    seen_length = true;
                    let v = h.value.get(buf);
                    let first = v.split(|b| *b == b',').next().unwrap_or(v);
                    push_header(out, name, crate::http1::trim_ows(first));
                }
            }
            _ if name_eq(name, b"ngrok-error-code") => {}
            _ if res.is_connection_token(buf, name) => {}
            _ => match edits {
                None => push_header(out, name, h.value.get(buf)),
                Some(e) => {
                    if e.headers.is_removed(name) {
                        continue;
                    }
                    let value = h.value.get(buf);
                    match name_eq(name, b"location")
                        .then(|| e.rewrite_location(value))
                        .flatten()
                    {
                        Some(v) => push_header(out, name, v.as_bytes()),
                        None => push_header(out, name, value),
                    }
                }
            },
        }
    }
    if let Some(e) = edits {
        for (n, v) in e.headers.added() {
            push_header(out, n.as_bytes(), v.as_bytes());
        }
    }
    if let Some(c) = compress {
        push_header(out, b"Content-Encoding", c.token().as_bytes());
        push_header(out, b"Vary", b"accept-encoding");
        if conn != ClientConn::Upgrade {
            push_header(out, b"Transfer-Encoding", b"chunked");
        }
    }
    match conn {
        ClientConn::KeepAlive => {}
        ClientConn::Close => out.extend_from_slice(b"Connection: close\r\n"),
        ClientConn::Upgrade => {
            out.extend_from_slice(b"Connection: upgrade\r\n");
            if let Some(u) = res.upgrade {
                push_header(out, b"Upgrade", u.get(buf));
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(raw: &[u8]) -> String {
        let mut req = RequestHead::new();
        assert_eq!(req.parse(raw, 1 << 20), Ok(true));
        let mut out = Vec::new();
        let info = ForwardInfo {
            client_ip: "10.0.0.9",
            proto: "http",
        };
        encode_request_head(raw, &req, &info, &mut out);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn forwarded_headers_appended_and_host_kept() {
        let out = forward(
            b"GET /p HTTP/1.1\r\nHost: App.example.com\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n",
        );
        assert!(
            out.starts_with("GET /p HTTP/1.1\r\nHost: App.example.com\r\n"),
            "{out}"
        );
        assert!(
            out.contains("X-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.0.0.9\r\n"),
            "{out}"
        );
        assert!(out.contains("X-Forwarded-Proto: https, http\r\n"), "{out}");
        assert!(
            out.contains("X-Forwarded-Host: App.example.com\r\n"),
            "{out}"
        );
        assert!(out.contains("Accept: */*\r\n"));
    }

    #[test]
    fn client_xfh_kept() {
        let out = forward(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Host: orig\r\n\r\n");
        assert!(out.contains("X-Forwarded-Host: orig\r\n"));
        assert_eq!(out.matches("X-Forwarded-Host").count(), 1);
    }

    #[test]
    fn hop_by_hop_dropped() {
        let out = forward(
            b"POST / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: 5\r\nX-Secret: s\r\nTE: trailers\r\nProxy-Authorization: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
        );
        for gone in [
            "Connection",
            "Keep-Alive",
            "X-Secret",
            "TE:",
            "Proxy-Authorization",
            "Expect",
        ] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
        assert!(out.contains("Content-Length: 2\r\n"));
    }

    #[test]
    fn websocket_upgrade_kept() {
        let out = forward(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n");
        assert!(
            out.contains("Connection: upgrade\r\nUpgrade: websocket\r\n"),
            "{out}"
        );
        assert!(out.contains("Sec-WebSocket-Key: k\r\n"));
    }

    /// Regression (smuggling battery): codings split over fields or in
    /// odd case were forwarded as sent; now one normalised field.
    #[test]
    fn regression_transfer_encoding_forwarded_as_one_lowercase_field() {
        let out = forward(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: GZIP\r\nTransfer-Encoding:\tChunked \r\n\r\n",
        );
        assert!(
            out.contains("Transfer-Encoding: gzip, chunked\r\n"),
            "{out}"
        );
        assert_eq!(out.matches("Transfer-Encoding").count(), 1, "{out}");
    }

    /// Regression (smuggling battery): an h2c upgrade was forwarded, so an
    /// upstream speaking h2c could take the connection past the edge.
    #[test]
    fn regression_h2c_upgrade_not_forwarded() {
        let out = forward(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n\r\n");
        for gone in ["Upgrade", "HTTP2-Settings", "Connection"] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
    }

    #[test]
    fn chunked_codings_pass_through() {
        let out =
            forward(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert!(
            out.contains("Transfer-Encoding: gzip, chunked\r\n"),
            "{out}"
        );
    }

    #[test]
    fn absolute_form_becomes_origin_form() {
        let out = forward(b"GET http://b.example/x?y=1 HTTP/1.1\r\nHost: ignored\r\n\r\n");
        assert!(
            out.starts_with("GET /x?y=1 HTTP/1.1\r\nHost: b.example\r\n"),
            "{out}"
        );
        let out = forward(b"GET http://b.example?q HTTP/1.1\r\nHost: b.example\r\n\r\n");
        assert!(out.starts_with("GET /?q HTTP/1.1\r\n"), "{out}");
    }

    #[test]
    fn response_rewrite() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: x-up, keep-alive\r\nX-Up: 1\r\nKeep-Alive: timeout=5\r\nngrok-error-code: ERR_NGROK_1\r\nContent-Length: 3, 3\r\nServer: s\r\n\r\n";
        let mut res = ResponseHead::new();
        assert_eq!(res.parse(raw, 1 << 20, false), Ok(true));
        let mut out = Vec::new();
        encode_response_head(raw, &res, ClientConn::Close, &mut out);
        let out = String::from_utf8(out).expect("ascii");
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nServer: s\r\nConnection: close\r\n\r\n"
        );
    }
}
