//! Sans-IO conversions for the HTTP/1.1 → HTTP/2 bridge: a parsed HTTP/1.1
//! request head into the request h2 sends, and an HTTP/2 response head
//! into the HTTP/1.1 head written back to the edge, with the body framing
//! that keeps trailers (gRPC's `grpc-status`) intact.

use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, TE, TRAILER};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Uri};

use crate::http1::head::HeaderRole;
use crate::http1::{list_items, name_eq, RequestHead};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("invalid method")]
    Method,
    #[error("invalid request target")]
    Target,
    #[error("invalid Host")]
    Authority,
    #[error("header field not representable in HTTP/2")]
    Field,
}

/// The HTTP/2 request for an HTTP/1.1 head (`buf` holds the head bytes).
///
/// `:authority` is the request's Host (the public host, as the edge sent
/// it), `:path` its origin-form target. Hop-by-hop fields and those named
/// in `Connection` are dropped, except that a `TE` listing `trailers`
/// becomes `te: trailers` (gRPC servers require it). Content-Length is
/// kept: h2 checks the DATA against it.
pub fn request_to_h2(
    head: &RequestHead,
    buf: &[u8],
    scheme: Scheme,
) -> Result<Request<()>, ConvertError> {
    let method = Method::from_bytes(head.method_span.get(buf)).map_err(|_| ConvertError::Method)?;
    let target = head.origin_form.get(buf);
    let path = if target.is_empty() {
        PathAndQuery::from_static("/")
    } else {
        PathAndQuery::try_from(target).map_err(|_| ConvertError::Target)?
    };
    let authority =
        Authority::try_from(head.authority.get(buf)).map_err(|_| ConvertError::Authority)?;
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|_| ConvertError::Target)?;
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for (h, role) in head.headers.iter().zip(&head.roles) {
        let name = h.name.get(buf);
        let value = h.value.get(buf);
        match role {
            HeaderRole::Host => continue,
            HeaderRole::HopByHop => {
                if name_eq(name, b"te")
                    && list_items(value).any(|t| t.eq_ignore_ascii_case(b"trailers"))
                {
                    headers.insert(TE, HeaderValue::from_static("trailers"));
                }
                continue;
            }
            _ => {}
        }
        let name = HeaderName::from_bytes(name).map_err(|_| ConvertError::Field)?;
        let value = HeaderValue::from_bytes(value.trim_ascii()).map_err(|_| ConvertError::Field)?;
        headers.append(name, value);
    }
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(req)
}

/// A copy of a body-less request (for a retry on a fresh connection).
pub fn clone_request(req: &Request<()>) -> Request<()> {
    let mut r = Request::new(());
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.headers_mut() = req.headers().clone();
    r
}

/// How the response body goes to the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H1Body {
    /// Nothing follows the head.
    None,
    /// `Content-Length` framing: DATA copied as is; trailers, if any came,
    /// cannot be carried and are dropped.
    Length,
    /// Chunked: each DATA frame a chunk, h2 trailers as chunked trailers.
    Chunked,
}

/// Writes the HTTP/1.1 head for an HTTP/2 response into `out` and says how
/// the body follows.
///
/// - HEAD, 1xx, 204, 304: fields as they are, no body.
/// - END_STREAM on the headers (`end_stream`): no body; `content-length: 0`
///   added when absent. gRPC's trailers-only responses land here, their
///   `grpc-status` travelling as an ordinary field.
/// - A `Content-Length`, no `Trailer` announcement and not gRPC: length.
/// - Otherwise chunked, so trailers can follow the body.
///
/// `close`: add `connection: close` (the edge asked for it).
pub fn response_to_h1(
    parts: &http::response::Parts,
    head_request: bool,
    end_stream: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> H1Body {
    let status = parts.status.as_u16();
    let h = &parts.headers;
    let bodiless =
        head_request || parts.status.is_informational() || status == 204 || status == 304;
    let grpc = h
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let body = if bodiless || end_stream {
        H1Body::None
    } else if h.contains_key(CONTENT_LENGTH) && !h.contains_key(TRAILER) && !grpc {
        H1Body::Length
    } else {
        H1Body::Chunked
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in h {
        let n = name.as_str();
        // h2 never yields connection-specific fields; transfer-encoding is
        // ours to decide.
        if n == "transfer-encoding" || n == "connection" {
            continue;
        }
        if body == H1Body::Chunked && name == CONTENT_LENGTH {
            continue;
        }
        push_field(out, n.as_bytes(), value.as_bytes());
    }
    if end_stream && !bodiless && !h.contains_key(CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    if body == H1Body::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    body
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn parse(raw: &[u8]) -> RequestHead {
        let mut h = RequestHead::new();
        assert_eq!(h.parse(raw, 1 << 20), Ok(true));
        h
    }

    #[test]
    fn request_fields() {
        let raw = b"POST /svc/Method?x=1 HTTP/1.1\r\nHost: app.example.com\r\nContent-Type: application/grpc\r\nTE: trailers\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nContent-Length: 5\r\nX-Keep: yes\r\n\r\n";
        let head = parse(raw);
        let req = request_to_h2(&head, raw, Scheme::HTTP).expect("ok");
        assert_eq!(req.method(), Method::POST);
        assert_eq!(
            req.uri().to_string(),
            "http://app.example.com/svc/Method?x=1"
        );
        let h = req.headers();
        assert_eq!(h.get("te").map(|v| v.as_bytes()), Some(&b"trailers"[..]));
        assert_eq!(
            h.get("content-length").map(|v| v.as_bytes()),
            Some(&b"5"[..])
        );
        assert_eq!(h.get("x-keep").map(|v| v.as_bytes()), Some(&b"yes"[..]));
        assert!(h.get("host").is_none());
        assert!(h.get("connection").is_none());
        assert!(h.get("x-hop").is_none(), "named in Connection");
    }

    #[test]
    fn absolute_form_and_te_without_trailers() {
        let raw = b"GET http://a.example/p HTTP/1.1\r\nHost: a.example\r\nTE: gzip\r\n\r\n";
        let head = parse(raw);
        let req = request_to_h2(&head, raw, Scheme::HTTP).expect("ok");
        assert_eq!(req.uri().path(), "/p");
        assert!(req.headers().get("te").is_none());
    }

    fn parts(status: u16, fields: &[(&str, &str)]) -> http::response::Parts {
        let mut b = http::Response::builder().status(StatusCode::from_u16(status).expect("s"));
        for (n, v) in fields {
            b = b.header(*n, *v);
        }
        b.body(()).expect("response").into_parts().0
    }

    fn head_of(p: &http::response::Parts, head: bool, end: bool, close: bool) -> (String, H1Body) {
        let mut out = Vec::new();
        let body = response_to_h1(p, head, end, close, &mut out);
        (String::from_utf8(out).expect("utf8"), body)
    }

    #[test]
    fn grpc_response_is_chunked() {
        let p = parts(
            200,
            &[
                ("content-type", "application/grpc"),
                ("content-length", "7"),
            ],
        );
        let (s, body) = head_of(&p, false, false, false);
        assert_eq!(body, H1Body::Chunked);
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(s.contains("transfer-encoding: chunked\r\n"));
        assert!(!s.contains("content-length"));
    }

    #[test]
    fn length_when_known_and_no_trailers() {
        let p = parts(
            200,
            &[("content-length", "3"), ("content-type", "text/plain")],
        );
        let (s, body) = head_of(&p, false, false, true);
        assert_eq!(body, H1Body::Length);
        assert!(s.contains("content-length: 3\r\n"));
        assert!(s.ends_with("connection: close\r\n\r\n"));
        let p = parts(200, &[("content-length", "3"), ("trailer", "x-sum")]);
        assert_eq!(head_of(&p, false, false, false).1, H1Body::Chunked);
        let p = parts(200, &[]);
        assert_eq!(head_of(&p, false, false, false).1, H1Body::Chunked);
    }

    #[test]
    fn bodiless_responses() {
        let p = parts(200, &[("content-length", "10")]);
        let (s, body) = head_of(&p, true, true, false);
        assert_eq!(body, H1Body::None);
        assert!(
            s.contains("content-length: 10\r\n"),
            "HEAD keeps the length"
        );
        let p = parts(204, &[]);
        let (s, body) = head_of(&p, false, true, false);
        assert_eq!(body, H1Body::None);
        assert!(!s.contains("content-length"));
        // Trailers-only gRPC answer.
        let p = parts(
            200,
            &[("content-type", "application/grpc"), ("grpc-status", "5")],
        );
        let (s, body) = head_of(&p, false, true, false);
        assert_eq!(body, H1Body::None);
        assert!(s.contains("grpc-status: 5\r\n"));
        assert!(s.contains("content-length: 0\r\n"));
    }
}
