//! HTTP/1.1 framing as CONTRACT.md states it: every malformed-request rule
//! gets its own test (status, close, and that the upstream saw nothing),
//! plus head limits, keep-alive, pipelining, bodiless responses, chunked
//! passthrough with trailers and close-delimited upstream bodies.

mod common;

use std::time::Duration;

use common::*;

const CLOSE_WAIT: Duration = Duration::from_secs(3);

fn echo_edge(extra: &str) -> (Upstream, Edge) {
    let up = Upstream::start(Behaviour::Echo);
    let edge = Edge::start(&app_config(&up, extra));
    (up, edge)
}

/// Sends `raw` on a fresh connection; asserts `status`, then that the edge
/// closes the connection.
fn assert_status_then_close(edge: &Edge, raw: &[u8], status: u16) -> Response {
    let mut c = Client::connect(edge.addr());
    c.send(raw).expect("send");
    let resp = c
        .read_response()
        .unwrap_or_else(|e| panic!("no response to {:?}: {e}", String::from_utf8_lossy(raw)));
    assert_eq!(
        resp.status,
        status,
        "request {:?} got head:\n{}",
        String::from_utf8_lossy(raw),
        String::from_utf8_lossy(&resp.raw_head)
    );
    c.assert_closed(CLOSE_WAIT);
    resp
}

/// 400, close, and no byte reaches the upstream.
fn assert_rejected_400(raw: &str) {
    let (up, edge) = echo_edge("");
    assert_status_then_close(&edge, raw.as_bytes(), 400);
    assert_upstream_untouched(&up);
}

// ------------------------------------------------------------ malformed → 400

#[test]
fn transfer_encoding_and_content_length_together_is_400() {
    assert_rejected_400(
        "POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
}

#[test]
fn content_length_and_transfer_encoding_in_other_order_is_400() {
    assert_rejected_400(
        "POST / HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
}

#[test]
fn differing_content_length_headers_is_400() {
    assert_rejected_400(
        "POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    );
}

#[test]
fn differing_content_length_list_is_400() {
    assert_rejected_400(
        "POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5, 6\r\n\r\nhello!",
    );
}

#[test]
fn malformed_content_length_is_400() {
    let (up, edge) = echo_edge("");
    for cl in [
        "abc",
        "-1",
        "+5",
        "5x",
        "0x5",
        "1 2",
        "",
        "99999999999999999999999999",
    ] {
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: {cl}\r\n\r\nhello"
        );
        assert_status_then_close(&edge, raw.as_bytes(), 400);
    }
    assert_upstream_untouched(&up);
}

#[test]
fn transfer_encoding_not_ending_in_chunked_is_400() {
    let (up, edge) = echo_edge("");
    for te in ["gzip", "chunked, gzip", "identity", "x-custom"] {
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: {te}\r\n\r\nhello"
        );
        assert_status_then_close(&edge, raw.as_bytes(), 400);
    }
    assert_upstream_untouched(&up);
}

#[test]
fn bad_chunk_size_is_400() {
    let (up, edge) = echo_edge("");
    for size in ["zz", "-5", "0x5", "fffffffffffffffffffff", " "] {
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nhello\r\n0\r\n\r\n"
        );
        assert_status_then_close(&edge, raw.as_bytes(), 400);
    }
    // The head is valid, so a streaming edge may already have opened the
    // upstream request; what must not happen is a complete request.
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        up.request_count(),
        0,
        "upstream must not get a complete request"
    );
}

#[test]
fn chunk_data_not_followed_by_crlf_is_400() {
    // Not named in CONTRACT.md, but the same family as a bad chunk size:
    // nginx rejects it, and accepting it is a smuggling vector.
    let (up, edge) = echo_edge("");
    assert_status_then_close(
        &edge,
        b"POST / HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        400,
    );
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        up.request_count(),
        0,
        "upstream must not get a complete request"
    );
}

#[test]
fn obs_fold_is_400() {
    assert_rejected_400(
        "GET / HTTP/1.1\r\nHost: app.example.com\r\nX-Folded: first\r\n  second\r\n\r\n",
    );
}

#[test]
fn obs_fold_with_tab_is_400() {
    assert_rejected_400(
        "GET / HTTP/1.1\r\nHost: app.example.com\r\nX-Folded: first\r\n\tsecond\r\n\r\n",
    );
}

#[test]
fn whitespace_before_colon_is_400() {
    assert_rejected_400("GET / HTTP/1.1\r\nHost: app.example.com\r\nX-Foo : bar\r\n\r\n");
}

#[test]
fn tab_before_colon_is_400() {
    assert_rejected_400("GET / HTTP/1.1\r\nHost: app.example.com\r\nX-Foo\t: bar\r\n\r\n");
}

#[test]
fn missing_host_is_400() {
    assert_rejected_400("GET / HTTP/1.1\r\nUser-Agent: test\r\n\r\n");
}

#[test]
fn duplicate_host_is_400() {
    assert_rejected_400("GET / HTTP/1.1\r\nHost: app.example.com\r\nHost: app.example.com\r\n\r\n");
}

#[test]
fn duplicate_host_with_different_values_is_400() {
    assert_rejected_400(
        "GET / HTTP/1.1\r\nHost: app.example.com\r\nHost: other.example.com\r\n\r\n",
    );
}

// ------------------------------------------------------------ versions

#[test]
fn http_1_0_is_505() {
    let (up, edge) = echo_edge("");
    assert_status_then_close(
        &edge,
        b"GET / HTTP/1.0\r\nHost: app.example.com\r\n\r\n",
        505,
    );
    assert_upstream_untouched(&up);
}

#[test]
fn http_0_9_is_505() {
    let (up, edge) = echo_edge("");
    assert_status_then_close(&edge, b"GET /\r\n", 505);
    assert_upstream_untouched(&up);
}

// ------------------------------------------------------------ head limits

/// A request head of about `size` bytes spread over 30 KB headers.
fn big_head(size: usize) -> Vec<u8> {
    let mut head = String::from("GET /big HTTP/1.1\r\nHost: app.example.com\r\n");
    let mut i = 0;
    while head.len() + 40 < size {
        let n = (size - head.len() - 40).min(30_000);
        head.push_str(&format!("X-Big-{i}: {}\r\n", "a".repeat(n)));
        i += 1;
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[test]
fn head_over_one_megabyte_is_431() {
    let (up, edge) = echo_edge("");
    let head = big_head(1_100_000);
    assert!(head.len() > 1_048_576);
    let mut c = Client::connect(edge.addr());
    let writer = c.send_in_background(head);
    let resp = c
        .read_response()
        .expect("a 431 response (if this is a reset, the edge closed without draining)");
    assert_eq!(
        resp.status,
        431,
        "head:\n{}",
        String::from_utf8_lossy(&resp.raw_head)
    );
    let _ = writer.join();
    assert_upstream_untouched(&up);
}

#[test]
fn head_of_900_kilobytes_is_forwarded() {
    let (up, edge) = echo_edge("");
    let head = big_head(900_000);
    let len = head.len();
    let mut c = Client::connect(edge.addr());
    let writer = c.send_in_background(head);
    let resp = c.read_response().expect("response");
    writer.join().expect("join").expect("write head");
    assert_eq!(resp.status, 200);
    let req = up.last_request();
    let big: usize = req
        .headers
        .iter()
        .filter(|(k, _)| k.starts_with("X-Big-") || k.starts_with("x-big-"))
        .map(|(_, v)| v.len())
        .sum();
    assert!(
        big + 30 * 20 > len - 1000 && big < len,
        "upstream got {big} bytes of X-Big-* values out of a {len}-byte head"
    );
}

#[test]
fn configured_max_head_bytes_is_honoured() {
    let (up, edge) = echo_edge("[limits]\nmax_head_bytes = 4096\n");
    let mut c = Client::connect(edge.addr());
    let resp = c.roundtrip(big_head(2_000));
    assert_eq!(resp.status, 200);
    let mut c = Client::connect(edge.addr());
    let writer = c.send_in_background(big_head(8_000));
    let resp = c.read_response().expect("431 response");
    let _ = writer.join();
    assert_eq!(resp.status, 431);
    assert_eq!(up.request_count(), 1, "only the small request is forwarded");
}

// ------------------------------------------------------------ keep-alive, pipelining

#[test]
fn keep_alive_reuses_client_and_upstream_connection() {
    let (up, edge) = echo_edge("");
    let mut c = Client::connect(edge.addr());
    for i in 0..5 {
        let resp = c.get(APP_HOST, &format!("/req/{i}"));
        assert_eq!(resp.status, 200);
        assert!(resp
            .text()
            .starts_with(&format!("GET /req/{i} HTTP/1.1\r\n")));
        assert!(!resp.connection_close());
    }
    assert_eq!(up.request_count(), 5);
    assert_eq!(
        up.accepted(),
        1,
        "the edge should reuse its upstream connection"
    );
}

#[test]
fn three_pipelined_requests_are_answered_in_order() {
    let (up, edge) = echo_edge("");
    let mut c = Client::connect(edge.addr());
    c.send(
        "GET /one HTTP/1.1\r\nHost: app.example.com\r\n\r\n\
         POST /two HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 7\r\n\r\npayload\
         GET /three HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    )
    .expect("send");
    let one = c.read_response().expect("first");
    let two = c.read_response().expect("second");
    let three = c.read_response().expect("third");
    for r in [&one, &two, &three] {
        assert_eq!(r.status, 200);
    }
    assert!(one.text().starts_with("GET /one "), "{}", one.text());
    assert!(two.text().starts_with("POST /two "), "{}", two.text());
    assert!(two.text().ends_with("\r\n\r\npayload"), "{}", two.text());
    assert!(three.text().starts_with("GET /three "), "{}", three.text());
    c.assert_quiet(Duration::from_millis(300));
    assert_eq!(up.request_count(), 3);
}

#[test]
fn pipelined_requests_after_custom_response_stay_in_order() {
    let up = Upstream::start(Behaviour::Echo);
    let config = format!(
        "{}{}",
        endpoint("http://app.example.com", &up.url()),
        custom_response_endpoint(
            "http://hello.example.com",
            200,
            "Hello world!",
            "content-type = \"text/plain\""
        )
    );
    let edge = Edge::start(&config);
    let mut c = Client::connect(edge.addr());
    c.send(
        "GET /a HTTP/1.1\r\nHost: app.example.com\r\n\r\n\
         GET / HTTP/1.1\r\nHost: hello.example.com\r\n\r\n\
         GET /c HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    )
    .expect("send");
    let a = c.read_response().expect("first");
    let b = c.read_response().expect("second");
    let cc = c.read_response().expect("third");
    assert!(a.text().starts_with("GET /a "));
    assert_eq!(b.text(), "Hello world!");
    assert!(cc.text().starts_with("GET /c "));
}

#[test]
fn request_with_connection_close_is_answered_then_closed() {
    let (_up, edge) = echo_edge("");
    let mut c = Client::connect(edge.addr());
    let resp = c.roundtrip("GET / HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert!(
        resp.connection_close(),
        "response should say Connection: close"
    );
    c.assert_closed(CLOSE_WAIT);
}

// ------------------------------------------------------------ bodiless responses

#[test]
fn head_response_has_no_body() {
    let (_up, edge) = echo_edge("");
    let mut c = Client::connect(edge.addr());
    let head = c.roundtrip("HEAD /h HTTP/1.1\r\nHost: app.example.com\r\n\r\n");
    assert_eq!(head.status, 200);
    let cl: usize = head
        .header("content-length")
        .expect("HEAD keeps the upstream's Content-Length")
        .parse()
        .expect("numeric");
    assert!(cl > 0);
    // If the edge had sent body bytes, they would corrupt this response.
    let get = c.get(APP_HOST, "/after-head");
    assert_eq!(get.status, 200);
    assert!(get.text().starts_with("GET /after-head "));
}

#[test]
fn no_content_204_has_no_body() {
    let up = Upstream::start(Behaviour::fixed(
        "HTTP/1.1 204 No Content\r\nX-Answer: none\r\n\r\n",
    ));
    let edge = Edge::start(&app_config(&up, ""));
    let mut c = Client::connect(edge.addr());
    for _ in 0..2 {
        let r = c.get(APP_HOST, "/");
        assert_eq!(r.status, 204);
        assert_eq!(r.header("x-answer"), Some("none"));
        assert!(r.header("content-length").is_none_or(|v| v == "0"));
        assert!(!r.is_chunked(), "204 must not be chunked");
    }
    c.assert_quiet(Duration::from_millis(300));
}

#[test]
fn not_modified_304_has_no_body_even_with_content_length() {
    let up = Upstream::start(Behaviour::fixed(
        "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 42\r\n\r\n",
    ));
    let edge = Edge::start(&app_config(&up, ""));
    let mut c = Client::connect(edge.addr());
    for _ in 0..2 {
        let r =
            c.roundtrip("GET / HTTP/1.1\r\nHost: app.example.com\r\nIf-None-Match: \"v1\"\r\n\r\n");
        assert_eq!(r.status, 304);
        assert_eq!(r.header("etag"), Some("\"v1\""));
    }
    c.assert_quiet(Duration::from_millis(300));
}

// ------------------------------------------------------------ chunked passthrough

#[test]
fn chunked_request_body_and_trailers_pass_through() {
    let (up, edge) = echo_edge("");
    let mut c = Client::connect(edge.addr());
    let resp = c.roundtrip(
        "POST /upload HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
         4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Checksum: abc123\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let req = up.last_request();
    assert!(req.chunked, "upstream should receive a chunked body");
    assert_eq!(req.body, b"Wikipedia in\r\n\r\nchunks.");
    assert_eq!(
        req.raw_trailers, b"X-Checksum: abc123\r\n",
        "trailers verbatim"
    );
    assert!(req.header("content-length").is_none());
    // Connection still usable.
    assert_eq!(c.get(APP_HOST, "/next").status, 200);
}

#[test]
fn chunked_response_body_and_trailers_pass_through() {
    let up = Upstream::start(Behaviour::fixed(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n\
         4\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Sum: 42\r\nX-Other-Trailer: yes\r\n\r\n",
    ));
    let edge = Edge::start(&app_config(&up, ""));
    let mut c = Client::connect(edge.addr());
    for _ in 0..2 {
        let r = c.get(APP_HOST, "/");
        assert_eq!(r.status, 200);
        assert!(
            r.is_chunked(),
            "head:\n{}",
            String::from_utf8_lossy(&r.raw_head)
        );
        assert_eq!(r.body, b"Wikipedia");
        assert_eq!(
            String::from_utf8_lossy(&r.raw_trailers),
            "X-Sum: 42\r\nX-Other-Trailer: yes\r\n",
            "trailers verbatim"
        );
    }
    c.assert_quiet(Duration::from_millis(300));
}

// ------------------------------------------------------------ close-delimited

#[test]
fn close_delimited_upstream_body_is_delivered_with_connection_close() {
    let up = Upstream::start(Behaviour::fixed_then_close(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the upstream closes",
    ));
    let edge = Edge::start(&app_config(&up, ""));
    let mut c = Client::connect(edge.addr());
    c.send("GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .expect("send");
    let r = c.read_response().expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "until the upstream closes");
    assert!(
        r.connection_close(),
        "head must carry Connection: close:\n{}",
        String::from_utf8_lossy(&r.raw_head)
    );
}

#[test]
fn http_1_0_upstream_close_delimited_body_is_delivered() {
    let up = Upstream::start(Behaviour::fixed_then_close(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold school",
    ));
    let edge = Edge::start(&app_config(&up, ""));
    let mut c = Client::connect(edge.addr());
    c.send("GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .expect("send");
    let r = c.read_response().expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "old school");
    assert!(r.connection_close() || r.close_delimited);
}

// ------------------------------------------------------------ upstream errors

#[test]
fn upstream_head_over_one_megabyte_is_502_3004() {
    let mut raw = String::from("HTTP/1.1 200 OK\r\n");
    for i in 0..40 {
        raw.push_str(&format!("X-Huge-{i}: {}\r\n", "b".repeat(30_000)));
    }
    raw.push_str("Content-Length: 2\r\n\r\nok");
    let up = Upstream::start(Behaviour::FixedThenClose(raw.into_bytes()));
    let edge = Edge::start(&app_config(&up, ""));
    let r = get(edge.addr(), APP_HOST, "/");
    assert_edge_error(&r, 502, "ERR_NGROK_3004");
}

#[test]
fn invalid_upstream_reply_is_502_3004() {
    for reply in [
        "this is not http\r\n\r\n",
        "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
    ] {
        let up = Upstream::start(Behaviour::fixed_then_close(reply));
        let edge = Edge::start(&app_config(&up, ""));
        let r = get(edge.addr(), APP_HOST, "/");
        assert_edge_error(&r, 502, "ERR_NGROK_3004");
    }
}

#[test]
fn upstream_refused_is_502_8012() {
    let port = free_port();
    let config = endpoint(
        "http://app.example.com",
        &format!("http://127.0.0.1:{port}"),
    );
    let edge = Edge::start(&config);
    let r = get(edge.addr(), APP_HOST, "/");
    assert_edge_error(&r, 502, "ERR_NGROK_8012");
}

#[test]
fn silent_upstream_is_504_3008_after_upstream_idle() {
    let up = Upstream::start(Behaviour::Silent);
    let edge = Edge::start(&app_config(&up, &timeouts(&[("upstream_idle", "1s")])));
    let start = std::time::Instant::now();
    let r = get(edge.addr(), APP_HOST, "/");
    let took = start.elapsed();
    assert_edge_error(&r, 504, "ERR_NGROK_3008");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "504 after {took:?}, expected about 1 s"
    );
}

// ------------------------------------------------------------ timeouts

#[test]
fn slowloris_head_is_cut_off_after_header_read() {
    let (up, edge) = echo_edge(&timeouts(&[("header_read", "1s")]));
    let mut c = Client::connect(edge.addr());
    c.send("GET / HTTP/1.1\r\nHost: app.example.com\r\nX-Drip: ")
        .expect("send");
    let start = std::time::Instant::now();
    let mut received = Vec::new();
    let mut closed = false;
    while start.elapsed() < Duration::from_secs(6) {
        if c.send("a").is_err() {
            closed = true;
            break;
        }
        match c.wait_closed(Duration::from_millis(200)) {
            ConnState::Closed(b) => {
                received.extend(b);
                closed = true;
                break;
            }
            ConnState::Open(b) => received.extend(b),
        }
    }
    let took = start.elapsed();
    assert!(closed, "connection still open after {took:?} of dripping");
    assert!(
        took < Duration::from_secs(4),
        "closed only after {took:?}, header_read is 1s"
    );
    if !received.is_empty() {
        assert!(
            received.starts_with(b"HTTP/1.1 408"),
            "only a 408 may be sent: {:?}",
            String::from_utf8_lossy(&received)
        );
    }
    assert_upstream_untouched(&up);
}

#[test]
fn header_read_does_not_limit_idle_keep_alive() {
    let (_up, edge) = echo_edge(&timeouts(&[("header_read", "1s")]));
    let mut c = Client::connect(edge.addr());
    assert_eq!(c.get(APP_HOST, "/first").status, 200);
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(c.get(APP_HOST, "/second").status, 200);
}

#[test]
fn client_idle_closes_idle_connection() {
    let (_up, edge) = echo_edge(&timeouts(&[("client_idle", "1s")]));
    let mut c = Client::connect(edge.addr());
    assert_eq!(c.get(APP_HOST, "/").status, 200);
    let start = std::time::Instant::now();
    c.assert_closed(Duration::from_secs(5));
    assert!(start.elapsed() >= Duration::from_millis(700));
}
