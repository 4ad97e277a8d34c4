//! Request smuggling and desync battery (docs/reliability.md, "Request
//! smuggling"): hostile HTTP/1.1 messages on a raw socket, and hostile
//! HTTP/2 HEADERS/DATA built by hand (HPACK literals) over TLS with ALPN
//! h2, against the real binary and a recording upstream.
//!
//! Every case asserts that the edge either refuses (an error status, and
//! for HTTP/1.1 the connection closed) or normalises (exactly one clean
//! request forwarded), and that the upstream never sees two requests where
//! the client sent one: the upstream's own parser and a strict,
//! independent parse of the raw bytes it received must both count at most
//! the one request, and neither may find the smuggled `/smuggled` request.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::client::find;
use common::*;

/// The request an attacker hides in a body or a header.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: app.example.com\r\n\r\n";
const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// Time a misbehaving edge gets to forward something it should not.
const SETTLE: Duration = Duration::from_millis(250);

// ---------------------------------------------------------------- upstream view

/// One request as a strict HTTP/1.1 parser reads the upstream's bytes.
#[derive(Debug)]
struct WireRequest {
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// Splits the bytes one upstream connection received into requests, with
/// strict framing (exactly one of Content-Length / `Transfer-Encoding:
/// chunked`, CRLF everywhere). Returns the complete requests and whether
/// an incomplete one follows (the edge gave up on a body mid-way).
/// Panics on framing a strict upstream would read differently from a
/// lenient one: that is a desync the edge let through.
fn wire_requests(mut raw: &[u8]) -> (Vec<WireRequest>, bool) {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let mut hs = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut hs);
        let head_len = match req.parse(raw) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return (out, true),
            Err(e) => panic!(
                "upstream received an unparsable head ({e}): {:?}",
                String::from_utf8_lossy(raw)
            ),
        };
        let head = &raw[..head_len];
        for (i, b) in head.iter().enumerate() {
            assert!(
                *b != b'\n' || (i > 0 && head[i - 1] == b'\r'),
                "bare LF in a forwarded head: {:?}",
                String::from_utf8_lossy(head)
            );
        }
        let headers: Vec<(String, Vec<u8>)> = req
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect();
        let te: Vec<&Vec<u8>> = headers
            .iter()
            .filter(|(n, _)| n == "transfer-encoding")
            .map(|(_, v)| v)
            .collect();
        let cl: Vec<&Vec<u8>> = headers
            .iter()
            .filter(|(n, _)| n == "content-length")
            .map(|(_, v)| v)
            .collect();
        assert!(
            te.is_empty() || cl.is_empty(),
            "forwarded both Transfer-Encoding and Content-Length"
        );
        assert!(
            cl.len() <= 1,
            "forwarded {} Content-Length fields",
            cl.len()
        );
        assert!(
            te.len() <= 1,
            "forwarded {} Transfer-Encoding fields",
            te.len()
        );
        let target = req.path.unwrap_or_default().to_string();
        let mut rest = &raw[head_len..];
        let body;
        if let Some(te) = te.first() {
            // What a strict upstream reads as chunked: lower-case tokens,
            // ", " between them, `chunked` last.
            let codings: Vec<&[u8]> = te.split(|b| *b == b',').collect();
            let plain = codings.iter().enumerate().all(|(i, c)| {
                let c = if i == 0 {
                    *c
                } else {
                    c.strip_prefix(b" ").unwrap_or(b"")
                };
                !c.is_empty()
                    && c.iter()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            });
            assert!(
                plain && te.ends_with(b"chunked") && (te.len() == 7 || te.ends_with(b", chunked")),
                "forwarded Transfer-Encoding {:?}: a strict upstream may not read it as chunked",
                String::from_utf8_lossy(te)
            );
            match dechunk(rest) {
                Some((b, used)) => {
                    body = b;
                    rest = &rest[used..];
                }
                None => return (out, true),
            }
        } else if let Some(cl) = cl.first() {
            let n: usize = std::str::from_utf8(cl)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("forwarded Content-Length {cl:?}"));
            if rest.len() < n {
                return (out, true);
            }
            body = rest[..n].to_vec();
            rest = &rest[n..];
        } else {
            body = Vec::new();
        }
        out.push(WireRequest {
            target,
            headers,
            body,
        });
        raw = rest;
    }
    (out, false)
}

/// Strict chunked decoding; `None` when incomplete.
fn dechunk(mut b: &[u8]) -> Option<(Vec<u8>, usize)> {
    let total = b.len();
    let mut body = Vec::new();
    loop {
        let line_end = find(b, b"\r\n")?;
        let line = &b[..line_end];
        let size_part = line.split(|c| *c == b';').next().unwrap_or(line);
        let size = usize::from_str_radix(std::str::from_utf8(size_part).ok()?, 16)
            .unwrap_or_else(|_| panic!("forwarded chunk size line {line:?}"));
        b = &b[line_end + 2..];
        if size == 0 {
            // Trailer fields, then the final CRLF.
            loop {
                let end = find(b, b"\r\n")?;
                b = &b[end + 2..];
                if end == 0 {
                    return Some((body, total - b.len()));
                }
            }
        }
        if b.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&b[..size]);
        assert_eq!(
            &b[size..size + 2],
            b"\r\n",
            "chunk data not followed by CRLF"
        );
        b = &b[size + 2..];
    }
}

/// Waits for a misbehaving edge, then checks the upstream's view: at most
/// `max` requests by both parsers, none of them the smuggled one. Returns
/// the strict parser's requests.
fn upstream_view(up: &Upstream, max: usize) -> Vec<WireRequest> {
    std::thread::sleep(SETTLE);
    let mut all = Vec::new();
    for (conn, raw) in up.raw_received().iter().enumerate() {
        let (reqs, _partial) = wire_requests(raw);
        for r in &reqs {
            assert!(
                !r.target.contains("smuggled"),
                "connection {conn}: the upstream parsed the smuggled request"
            );
        }
        all.extend(reqs);
    }
    let lenient = up.requests();
    assert!(
        lenient.iter().all(|r| !r.target.contains("smuggled")),
        "the upstream's reader found the smuggled request: {lenient:?}"
    );
    assert!(
        all.len() <= max && lenient.len() <= max,
        "client sent one request; strict parse found {}, the upstream's reader {}:\n{:?}",
        all.len(),
        lenient.len(),
        up.raw_received()
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        all.len(),
        lenient.len(),
        "strict and lenient upstream parsers disagree: {all:?} vs {lenient:?}"
    );
    all
}

// ---------------------------------------------------------------- HTTP/1.1

/// What the edge must do with a case.
enum Want {
    /// This status, then close; no complete request upstream.
    Refuse(u16),
    /// 200 from the upstream, which got exactly one request with this body.
    Forward(&'static [u8]),
    /// As `Forward`, plus a check of the forwarded request.
    ForwardWith(&'static [u8], fn(&WireRequest)),
}

/// Sends `raw` to a fresh edge in front of an echo upstream; returns
/// them with the response and the client connection.
fn h1_case(raw: &[u8]) -> (Upstream, Edge, Response, Client) {
    let up = Upstream::start(Behaviour::Echo);
    let edge = Edge::start(&app_config(&up, "workers = 1\n"));
    let mut c = Client::connect(edge.addr());
    c.send(raw).expect("send");
    let resp = c
        .read_response()
        .unwrap_or_else(|e| panic!("no response to {:?}: {e}", String::from_utf8_lossy(raw)));
    (up, edge, resp, c)
}

fn check_h1(raw: &[u8], want: Want) {
    let (up, _edge, resp, mut c) = h1_case(raw);
    let shown = String::from_utf8_lossy(raw).into_owned();
    match want {
        Want::Refuse(status) => {
            assert_eq!(
                resp.status,
                status,
                "request {shown:?} got:\n{}",
                String::from_utf8_lossy(&resp.raw_head)
            );
            c.assert_closed(CLOSE_WAIT);
            let reqs = upstream_view(&up, 0);
            assert!(reqs.is_empty());
        }
        Want::Forward(body) | Want::ForwardWith(body, _) => {
            assert_eq!(
                resp.status,
                200,
                "request {shown:?} got:\n{}{}",
                String::from_utf8_lossy(&resp.raw_head),
                resp.text()
            );
            // Nothing else answered: the edge saw one request too.
            match c.wait_closed(SETTLE) {
                ConnState::Open(extra) | ConnState::Closed(extra) => assert!(
                    extra.is_empty(),
                    "a second response: {:?}",
                    String::from_utf8_lossy(&extra)
                ),
            }
            let reqs = upstream_view(&up, 1);
            assert_eq!(reqs.len(), 1, "the upstream must get the one request");
            assert_eq!(
                String::from_utf8_lossy(&reqs[0].body),
                String::from_utf8_lossy(body),
                "forwarded body"
            );
            if let Want::ForwardWith(_, check) = want {
                check(&reqs[0]);
            }
        }
    }
}

fn header<'a>(r: &'a WireRequest, name: &str) -> Vec<&'a [u8]> {
    r.headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
        .collect()
}

fn post(headers: &str, body: &str) -> String {
    format!("POST / HTTP/1.1\r\nHost: {APP_HOST}\r\n{headers}\r\n{body}")
}

const CHUNKED_HELLO: &str = "5\r\nhello\r\n0\r\n\r\n";

macro_rules! h1_cases {
    ($($(#[$m:meta])* $name:ident: $raw:expr => $want:expr;)*) => {
        $(
            $(#[$m])*
            #[test]
            fn $name() {
                let raw: Vec<u8> = AsRef::<[u8]>::as_ref(&$raw).to_vec();
                check_h1(&raw, $want);
            }
        )*
    };
}

h1_cases! {
    // --- CL.TE and TE.CL: both framings present is always refused.
    cl_te_content_length_first:
        post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", &format!("0\r\n\r\nX{SMUGGLED}"))
        => Want::Refuse(400);
    te_cl_transfer_encoding_first:
        post("Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", &format!("5c\r\n{SMUGGLED}\r\n0\r\n\r\n"))
        => Want::Refuse(400);
    cl_te_with_obfuscated_coding:
        post("Content-Length: 5\r\nTransfer-Encoding: xchunked\r\n", &format!("hello{SMUGGLED}"))
        => Want::Refuse(400);
    cl_te_with_te_identity:
        post("Transfer-Encoding: identity\r\nContent-Length: 5\r\n", &format!("hello{SMUGGLED}"))
        => Want::Refuse(400);

    // --- TE.TE obfuscations.
    te_space_before_colon:
        post("Transfer-Encoding : chunked\r\nContent-Length: 5\r\n", &format!("hello{SMUGGLED}"))
        => Want::Refuse(400);
    te_tab_before_value_is_normalised:
        post("Transfer-Encoding:\tchunked\r\n", CHUNKED_HELLO)
        => Want::ForwardWith(b"hello", |r| assert_eq!(header(r, "transfer-encoding"), [b"chunked"]));
    te_uppercase_coding_is_normalised:
        post("Transfer-Encoding: CHUNKED\r\n", CHUNKED_HELLO)
        => Want::ForwardWith(b"hello", |r| assert_eq!(header(r, "transfer-encoding"), [b"chunked"]));
    te_chunked_twice_in_one_field:
        post("Transfer-Encoding: chunked, chunked\r\n", &format!("0\r\n\r\n{SMUGGLED}"))
        => Want::Refuse(400);
    te_chunked_then_identity_field:
        post("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", &format!("0\r\n\r\n{SMUGGLED}"))
        => Want::Refuse(400);
    te_empty_field_then_chunked:
        post("Transfer-Encoding: \r\nTransfer-Encoding: chunked\r\n", CHUNKED_HELLO)
        => Want::Refuse(400);
    /// Regression (found by this battery): `chunked;foo=bar` was read as
    /// chunked by the edge and forwarded verbatim, which a strict upstream
    /// does not read as chunked, so the body became the next request.
    te_chunked_with_parameter:
        post("Transfer-Encoding: chunked;foo=bar\r\n", &format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len()))
        => Want::Refuse(400);
    te_quoted_coding:
        post("Transfer-Encoding: \"chunked\"\r\n", &format!("0\r\n\r\n{SMUGGLED}"))
        => Want::Refuse(400);
    te_vertical_tab_before_coding:
        post("Transfer-Encoding: \x0bchunked\r\n", &format!("0\r\n\r\n{SMUGGLED}"))
        => Want::Refuse(400);
    te_obs_fold:
        post("Transfer-Encoding:\r\n chunked\r\n", &format!("0\r\n\r\n{SMUGGLED}"))
        => Want::Refuse(400);
    te_nul_after_coding:
        post("Transfer-Encoding: chunked\0\r\n", &format!("0\r\n\r\n{SMUGGLED}"))
        => Want::Refuse(400);
    te_in_http_1_0:
        format!("POST / HTTP/1.0\r\nHost: {APP_HOST}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}")
        => Want::Refuse(505);
    /// Codings before chunked stay (the body passes through encoded),
    /// in one lower-case field.
    te_gzip_chunked_two_fields_become_one:
        post("Transfer-Encoding: gzip\r\nTransfer-Encoding: Chunked\r\n", CHUNKED_HELLO)
        => Want::ForwardWith(b"hello", |r| assert_eq!(header(r, "transfer-encoding"), [b"gzip, chunked"]));
    /// Regression (found by this battery): a coding that is not a token
    /// was forwarded as sent.
    te_coding_that_is_not_a_token:
        post("Transfer-Encoding: gz\"ip, chunked\r\n", CHUNKED_HELLO)
        => Want::Refuse(400);

    // --- Content-Length.
    duplicate_content_length_same_value_is_normalised:
        post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello")
        => Want::ForwardWith(b"hello", |r| assert_eq!(header(r, "content-length"), [b"5"]));
    duplicate_content_length_different_values:
        post("Content-Length: 5\r\nContent-Length: 50\r\n", &format!("hello{SMUGGLED}"))
        => Want::Refuse(400);
    content_length_list_same_value_is_normalised:
        post("Content-Length: 5, 5\r\n", "hello")
        => Want::ForwardWith(b"hello", |r| assert_eq!(header(r, "content-length"), [b"5"]));
    content_length_leading_zeros_is_normalised:
        post("Content-Length: 0005\r\n", "hello")
        => Want::ForwardWith(b"hello", |r| assert_eq!(header(r, "content-length"), [b"5"]));
    content_length_overflow:
        post("Content-Length: 18446744073709551621\r\n", &format!("hello{SMUGGLED}"))
        => Want::Refuse(400);
    content_length_space_before_colon:
        post("Content-Length : 5\r\n", &format!("hello{SMUGGLED}"))
        => Want::Refuse(400);
    content_length_plus_sign:
        post("Content-Length: +5\r\n", &format!("hello{SMUGGLED}"))
        => Want::Refuse(400);
    /// A GET may have a body: it stays a body, not a second request.
    get_with_body_holding_a_request:
        format!("GET / HTTP/1.1\r\nHost: {APP_HOST}\r\nContent-Length: {}\r\n\r\n{SMUGGLED}", SMUGGLED.len())
        => Want::Forward(SMUGGLED.as_bytes());
    /// Hop-by-hop by `Connection` never strips framing.
    connection_naming_content_length_keeps_framing:
        post("Connection: Content-Length\r\nContent-Length: 5\r\n", "hello")
        => Want::ForwardWith(b"hello", |r| assert_eq!(header(r, "content-length"), [b"5"]));
    connection_naming_transfer_encoding_keeps_framing:
        post("Connection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n", CHUNKED_HELLO)
        => Want::ForwardWith(b"hello", |r| assert_eq!(header(r, "transfer-encoding"), [b"chunked"]));

    // --- Line ends.
    bare_lf_head_is_normalised_to_crlf:
        format!("GET / HTTP/1.1\nHost: {APP_HOST}\nX-A: 1\n\n")
        => Want::ForwardWith(b"", |r| assert_eq!(header(r, "x-a"), [b"1"]));
    bare_lf_after_chunk_size:
        post("Transfer-Encoding: chunked\r\n", "5\nhello\r\n0\r\n\r\n")
        => Want::Refuse(400);
    bare_lf_after_chunk_data:
        post("Transfer-Encoding: chunked\r\n", "5\r\nhello\n0\r\n\r\n")
        => Want::Refuse(400);
    bare_lf_after_last_chunk:
        post("Transfer-Encoding: chunked\r\n", &format!("5\r\nhello\r\n0\n\n{SMUGGLED}"))
        => Want::Refuse(400);
    bare_cr_in_header_value:
        post("X-A: a\rContent-Length: 5\r\n", &format!("hello{SMUGGLED}"))
        => Want::Refuse(400);

    // --- Bytes in field names and values.
    nul_in_header_name:
        post("X-\0A: 1\r\nContent-Length: 5\r\n", "hello")
        => Want::Refuse(400);
    obs_text_in_header_name:
        post("X-\u{e9}: 1\r\nContent-Length: 5\r\n", "hello")
        => Want::Refuse(400);
    nul_in_header_value:
        post("X-A: a\0b\r\nContent-Length: 5\r\n", "hello")
        => Want::Refuse(400);
    space_inside_header_name:
        post("Content Length: 5\r\n", &format!("hello{SMUGGLED}"))
        => Want::Refuse(400);
    empty_header_name:
        post(": 5\r\nContent-Length: 5\r\n", "hello")
        => Want::Refuse(400);

    // --- Chunk sizes and extensions.
    chunk_size_of_17_digits:
        post("Transfer-Encoding: chunked\r\n", &format!("00000000000000005\r\nhello\r\n0\r\n\r\n{SMUGGLED}"))
        => Want::Refuse(400);
    chunk_size_of_16_digits_is_accepted:
        post("Transfer-Encoding: chunked\r\n", "0000000000000005\r\nhello\r\n0\r\n\r\n")
        => Want::Forward(b"hello");
    chunk_size_overflowing_u64:
        post("Transfer-Encoding: chunked\r\n", &format!("10000000000000005\r\nhello\r\n0\r\n\r\n{SMUGGLED}"))
        => Want::Refuse(400);
    chunk_size_with_0x_prefix:
        post("Transfer-Encoding: chunked\r\n", &format!("0x5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"))
        => Want::Refuse(400);
    chunk_extension_too_long:
        post("Transfer-Encoding: chunked\r\n", &format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(5000)))
        => Want::Refuse(400);
    chunk_data_longer_than_size:
        post("Transfer-Encoding: chunked\r\n", &format!("3\r\nhello\r\n0\r\n\r\n{SMUGGLED}"))
        => Want::Refuse(400);
    /// A framing field in the trailers never re-frames the body.
    content_length_in_trailers:
        post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n")
        => Want::Forward(b"hello");

    // --- Request-line tricks.
    request_line_double_space:
        format!("GET  / HTTP/1.1\r\nHost: {APP_HOST}\r\n\r\n")
        => Want::Refuse(400);
    request_line_tab_separator:
        format!("GET\t/ HTTP/1.1\r\nHost: {APP_HOST}\r\n\r\n")
        => Want::Refuse(400);
    request_target_with_space_and_second_version:
        format!("GET /a HTTP/1.1 /smuggled HTTP/1.1\r\nHost: {APP_HOST}\r\n\r\n")
        => Want::Refuse(400);
    /// RFC 9112 §2.2: an empty line before the request line is ignored.
    leading_empty_line_is_skipped:
        format!("\r\nGET / HTTP/1.1\r\nHost: {APP_HOST}\r\n\r\n")
        => Want::Forward(b"");
    /// The absolute-form authority wins over Host (RFC 9112 §3.2.2), and
    /// the upstream gets it as Host with an origin-form target.
    absolute_form_replaces_host:
        "GET http://app.example.com/x HTTP/1.1\r\nHost: other.example.com\r\n\r\n"
        => Want::ForwardWith(b"", |r| {
            assert_eq!(r.target, "/x");
            assert_eq!(header(r, "host"), [b"app.example.com"]);
        });
    refused_request_with_a_pipelined_one:
        post("Content-Length: abc\r\n", SMUGGLED)
        => Want::Refuse(400);
    /// h2c upgrade smuggling: an upstream that switches to h2c would give
    /// the client a channel past the edge's routing and policy. The edge
    /// drops the h2c upgrade (and HTTP2-Settings) and forwards a plain GET.
    h2c_upgrade_is_not_forwarded:
        format!("GET / HTTP/1.1\r\nHost: {APP_HOST}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        => Want::ForwardWith(b"", |r| {
            assert!(header(r, "upgrade").is_empty(), "Upgrade forwarded");
            assert!(header(r, "http2-settings").is_empty(), "HTTP2-Settings forwarded");
            assert!(header(r, "connection").is_empty(), "Connection forwarded");
        });
}

// ---------------------------------------------------------------- HTTP/2

struct H2Edge {
    up: Upstream,
    _edge: Edge,
    _data: tempfile::TempDir,
    addr: SocketAddr,
    ca: PathBuf,
}

const H2_HOST: &str = "app.ringress.localhost";

fn h2_edge() -> H2Edge {
    let up = Upstream::start(Behaviour::Echo);
    let data = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let config = format!(
        "workers = 1\n[[endpoints]]\nurl = \"https://{H2_HOST}\"\nupstream = \"{}\"\n",
        up.url()
    );
    let edge = Edge::builder(&config)
        .arg("--listen-https")
        .arg(&addr.to_string())
        .arg("--dev")
        .arg("--data-dir")
        .arg(&data.path().to_string_lossy())
        .start();
    let ca = data.path().join("ca.pem");
    H2Edge {
        up,
        _edge: edge,
        _data: data,
        addr,
        ca,
    }
}

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literals without indexing, new names, no Huffman
/// (RFC 7541 §6.2.2): any bytes at all, in the order given.
fn hpack_block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name);
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value);
    }
    out
}

/// How the edge answered stream 1.
#[derive(Debug, PartialEq)]
enum H2Outcome {
    Response(u16),
    Reset(u32),
    GoAway(u32),
    Closed,
}

/// `:status` from the first field of a response header block as h2
/// encodes it: indexed (static 8..=14), or a literal with name index 8
/// and a plain or Huffman-coded three-digit value.
fn decode_status(block: &[u8]) -> u16 {
    let mut b = block;
    // Dynamic table size updates.
    while let Some(first) = b.first() {
        if first & 0xe0 == 0x20 {
            b = &b[1..];
        } else {
            break;
        }
    }
    let first = b[0];
    if first & 0x80 != 0 {
        return match first & 0x7f {
            8 => 200,
            9 => 204,
            10 => 206,
            11 => 304,
            12 => 400,
            13 => 404,
            14 => 500,
            i => panic!("indexed field {i} first in a response block"),
        };
    }
    let name_index = if first & 0x40 != 0 {
        first & 0x3f
    } else {
        first & 0x0f
    };
    assert!((8..=14).contains(&name_index), "first field is not :status");
    let len = usize::from(b[1] & 0x7f);
    let value = &b[2..2 + len];
    let text = if b[1] & 0x80 == 0 {
        String::from_utf8_lossy(value).into_owned()
    } else {
        huffman_digits(value)
    };
    text.parse().expect("status digits")
}

/// Huffman-coded decimal digits (RFC 7541 Appendix B: '0'-'2' are 5 bits
/// 00000-00010, '3'-'9' are 6 bits 011001-011111).
fn huffman_digits(bytes: &[u8]) -> String {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let mut out = String::new();
    let mut i = 0;
    let take = |i: usize, n: usize| bits[i..i + n].iter().fold(0u8, |a, b| a << 1 | b);
    while i + 5 <= bits.len() {
        let five = take(i, 5);
        if five <= 2 {
            out.push((b'0' + five) as char);
            i += 5;
        } else if i + 6 <= bits.len() && (0b011001..=0b011111).contains(&take(i, 6)) {
            out.push((b'3' + take(i, 6) - 0b011001) as char);
            i += 6;
        } else {
            break; // EOS padding (all ones)
        }
    }
    out
}

/// Opens a TLS connection with ALPN h2, sends the preface, HEADERS for
/// stream 1 with `fields`, then `data` as DATA frames (END_STREAM on the
/// last one, or on HEADERS when there is none), and reads until stream 1
/// is answered or reset, or the connection ends.
fn h2_send(e: &H2Edge, fields: &[(&[u8], &[u8])], data: &[&[u8]]) -> H2Outcome {
    let cfg = common::tls::client_config(&e.ca, &[b"h2"]);
    let name = rustls::pki_types::ServerName::try_from(H2_HOST).expect("name");
    let conn = rustls::ClientConnection::new(cfg, name).expect("tls client");
    let sock = TcpStream::connect(e.addr).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    let flags = if data.is_empty() { 0x5 } else { 0x4 };
    out.extend(frame(0x1, flags, 1, &hpack_block(fields)));
    for (i, d) in data.iter().enumerate() {
        let end = if i + 1 == data.len() { 0x1 } else { 0 };
        out.extend(frame(0x0, end, 1, d));
    }
    tls.write_all(&out).expect("send h2");
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut header = [0u8; 9];
    while Instant::now() < deadline {
        if tls.read_exact(&mut header).is_err() {
            return H2Outcome::Closed;
        }
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let (ty, fl) = (header[3], header[4]);
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if tls.read_exact(&mut payload).is_err() {
            return H2Outcome::Closed;
        }
        let word = |at: usize| {
            u32::from_be_bytes([
                payload[at],
                payload[at + 1],
                payload[at + 2],
                payload[at + 3],
            ])
        };
        match (ty, stream) {
            (0x4, 0) if fl & 0x1 == 0 => {
                let _ = tls.write_all(&frame(0x4, 0x1, 0, &[]));
            }
            (0x1, 1) => {
                let mut block = &payload[..];
                if fl & 0x8 != 0 {
                    let pad = usize::from(block[0]);
                    block = &block[1..block.len() - pad];
                }
                if fl & 0x20 != 0 {
                    block = &block[5..];
                }
                return H2Outcome::Response(decode_status(block));
            }
            (0x3, 1) => return H2Outcome::Reset(word(0)),
            (0x7, _) => return H2Outcome::GoAway(word(4)),
            _ => {}
        }
    }
    panic!("no answer on stream 1 within 8 s");
}

/// The pseudo-fields of a GET to the app, then `extra`.
fn get_fields<'a>(extra: &[(&'a [u8], &'a [u8])]) -> Vec<(&'a [u8], &'a [u8])> {
    let mut f: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", H2_HOST.as_bytes()),
        (b":path", b"/"),
    ];
    f.extend_from_slice(extra);
    f
}

fn post_fields<'a>(extra: &[(&'a [u8], &'a [u8])]) -> Vec<(&'a [u8], &'a [u8])> {
    let mut f = get_fields(extra);
    f[0].1 = b"POST";
    f
}

/// Refused: reset, GOAWAY, or a 4xx; nothing complete upstream.
fn assert_h2_refused(fields: &[(&[u8], &[u8])], data: &[&[u8]]) {
    let e = h2_edge();
    let outcome = h2_send(&e, fields, data);
    eprintln!("h2 outcome: {outcome:?}");
    assert!(
        matches!(
            outcome,
            H2Outcome::Reset(_) | H2Outcome::GoAway(_) | H2Outcome::Response(400..=499)
        ),
        "fields {fields:?} were answered {outcome:?}"
    );
    assert!(upstream_view(&e.up, 0).is_empty());
}

/// Normalised: 200, and exactly one clean HTTP/1.1 request upstream.
fn assert_h2_forwarded(fields: &[(&[u8], &[u8])], data: &[&[u8]]) -> WireRequest {
    let e = h2_edge();
    let outcome = h2_send(&e, fields, data);
    assert_eq!(outcome, H2Outcome::Response(200), "fields {fields:?}");
    let mut reqs = upstream_view(&e.up, 1);
    assert_eq!(reqs.len(), 1);
    reqs.remove(0)
}

#[test]
fn h2_baseline_post_with_matching_content_length() {
    let r = assert_h2_forwarded(&post_fields(&[(b"content-length", b"5")]), &[b"hello"]);
    assert_eq!(r.body, b"hello");
    assert_eq!(header(&r, "content-length"), [b"5"]);
}

#[test]
fn h2_content_length_larger_than_data() {
    assert_h2_refused(&post_fields(&[(b"content-length", b"50")]), &[b"hello"]);
}

#[test]
fn h2_content_length_smaller_than_data_holding_a_request() {
    let data = format!("hello{SMUGGLED}");
    assert_h2_refused(
        &post_fields(&[(b"content-length", b"5")]),
        &[data.as_bytes()],
    );
}

#[test]
fn h2_content_length_list_of_different_values() {
    assert_h2_refused(&post_fields(&[(b"content-length", b"5, 6")]), &[b"hello"]);
}

/// Without Content-Length the body is sent chunked; a DATA payload that
/// looks like a chunk terminator and a request stays body bytes.
#[test]
fn h2_data_resembling_chunked_end_and_a_request_stays_body() {
    let data = format!("0\r\n\r\n{SMUGGLED}");
    let r = assert_h2_forwarded(&post_fields(&[]), &[data.as_bytes()]);
    assert_eq!(r.body, data.as_bytes());
}

#[test]
fn h2_connection_header() {
    assert_h2_refused(&get_fields(&[(b"connection", b"close")]), &[]);
}

#[test]
fn h2_transfer_encoding_chunked() {
    let data = format!("0\r\n\r\n{SMUGGLED}");
    assert_h2_refused(
        &post_fields(&[(b"transfer-encoding", b"chunked")]),
        &[data.as_bytes()],
    );
}

#[test]
fn h2_keep_alive_header() {
    assert_h2_refused(&get_fields(&[(b"keep-alive", b"timeout=5")]), &[]);
}

#[test]
fn h2_upgrade_header() {
    assert_h2_refused(&get_fields(&[(b"upgrade", b"h2c")]), &[]);
}

#[test]
fn h2_proxy_connection_header() {
    assert_h2_refused(&get_fields(&[(b"proxy-connection", b"keep-alive")]), &[]);
}

#[test]
fn h2_te_other_than_trailers() {
    assert_h2_refused(&get_fields(&[(b"te", b"gzip")]), &[]);
}

#[test]
fn h2_te_trailers_is_dropped_towards_http1() {
    let r = assert_h2_forwarded(&get_fields(&[(b"te", b"trailers")]), &[]);
    assert!(header(&r, "te").is_empty(), "te forwarded");
}

#[test]
fn h2_duplicate_path_pseudo_header() {
    let mut f = get_fields(&[]);
    f.push((b":path", b"/smuggled"));
    assert_h2_refused(&f, &[]);
}

#[test]
fn h2_missing_method_pseudo_header() {
    let f = get_fields(&[]);
    assert_h2_refused(&f[1..], &[]);
}

#[test]
fn h2_pseudo_header_after_regular_header() {
    let mut f = get_fields(&[]);
    let path = f.pop().expect("path");
    f.push((b"x-a", b"1"));
    f.push(path);
    assert_h2_refused(&f, &[]);
}

#[test]
fn h2_unknown_pseudo_header() {
    assert_h2_refused(&get_fields(&[(b":smuggle", b"1")]), &[]);
}

#[test]
fn h2_empty_path() {
    let mut f = get_fields(&[]);
    f[3].1 = b"";
    assert_h2_refused(&f, &[]);
}

#[test]
fn h2_path_not_starting_with_slash() {
    let mut f = get_fields(&[]);
    f[3].1 = b"smuggled";
    assert_h2_refused(&f, &[]);
}

#[test]
fn h2_path_with_request_line_injection() {
    let mut f = get_fields(&[]);
    let path = format!("/ HTTP/1.1\r\nHost: {APP_HOST}\r\n\r\n{SMUGGLED}");
    let path: &'static [u8] = Box::leak(path.into_bytes().into_boxed_slice());
    f[3].1 = path;
    assert_h2_refused(&f, &[]);
}

#[test]
fn h2_method_with_space() {
    let mut f = get_fields(&[]);
    f[0].1 = b"GET /smuggled";
    assert_h2_refused(&f, &[]);
}

#[test]
fn h2_crlf_in_header_value() {
    let value = format!("a\r\n\r\n{SMUGGLED}");
    assert_h2_refused(&get_fields(&[(b"x-a", value.as_bytes())]), &[]);
}

#[test]
fn h2_lf_in_header_value() {
    assert_h2_refused(&get_fields(&[(b"x-a", b"a\nX-Smuggled: 1")]), &[]);
}

#[test]
fn h2_nul_in_header_value() {
    assert_h2_refused(&get_fields(&[(b"x-a", b"a\0b")]), &[]);
}

#[test]
fn h2_crlf_in_header_name() {
    assert_h2_refused(&get_fields(&[(b"x-a\r\nx-smuggled", b"1")]), &[]);
}

#[test]
fn h2_colon_in_header_name() {
    assert_h2_refused(&get_fields(&[(b"x-a:b", b"1")]), &[]);
}

#[test]
fn h2_uppercase_header_name() {
    assert_h2_refused(&get_fields(&[(b"X-Upper", b"1")]), &[]);
}

#[test]
fn h2_host_differing_from_authority() {
    assert_h2_refused(&get_fields(&[(b"host", b"other.example.com")]), &[]);
}
