//! What the edge changes in forwarded heads: X-Forwarded-* rules, Host kept,
//! hop-by-hop and Connection-named headers removed, Expect answered by the
//! edge, and an upstream's `ngrok-error-code` never reaching the client.

mod common;

use std::time::Duration;

use common::*;

fn echo_edge() -> (Upstream, Edge) {
    let up = Upstream::start(Behaviour::Echo);
    let edge = Edge::start(&app_config(&up, ""));
    (up, edge)
}

/// Sends `raw`, expects 200, returns what the upstream received.
fn forwarded(raw: &str) -> RecordedRequest {
    let (up, edge) = echo_edge();
    let resp = send_request(edge.addr(), raw);
    assert_eq!(
        resp.status,
        200,
        "head:\n{}",
        String::from_utf8_lossy(&resp.raw_head)
    );
    up.last_request()
}

#[test]
fn x_forwarded_for_is_set_to_client_address() {
    let req = forwarded("GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n");
    assert_eq!(req.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
}

#[test]
fn x_forwarded_for_is_appended_into_one_merged_header() {
    let req = forwarded(
        "GET / HTTP/1.1\r\nHost: app.example.com\r\n\
         X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-For: 192.0.2.2, 198.51.100.3\r\n\r\n",
    );
    assert_eq!(
        req.header_all("x-forwarded-for"),
        vec!["192.0.2.1, 192.0.2.2, 198.51.100.3, 127.0.0.1"],
        "head:\n{}",
        req.head_text()
    );
}

#[test]
fn x_forwarded_proto_is_http_when_absent() {
    let req = forwarded("GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n");
    assert_eq!(req.header_all("x-forwarded-proto"), vec!["http"]);
}

#[test]
fn x_forwarded_proto_is_appended() {
    let req =
        forwarded("GET / HTTP/1.1\r\nHost: app.example.com\r\nX-Forwarded-Proto: https\r\n\r\n");
    assert_eq!(req.header_all("x-forwarded-proto"), vec!["https, http"]);
}

#[test]
fn x_forwarded_host_defaults_to_host() {
    let req = forwarded("GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n");
    assert_eq!(req.header_all("x-forwarded-host"), vec!["app.example.com"]);
}

#[test]
fn x_forwarded_host_keeps_host_port() {
    // Contract: "X-Forwarded-Host = ... else Host"; the Host value is taken
    // as sent (like nginx's $http_host), port included.
    let req = forwarded("GET / HTTP/1.1\r\nHost: app.example.com:8080\r\n\r\n");
    assert_eq!(
        req.header_all("x-forwarded-host"),
        vec!["app.example.com:8080"]
    );
}

#[test]
fn x_forwarded_host_from_client_is_kept() {
    let req = forwarded(
        "GET / HTTP/1.1\r\nHost: app.example.com\r\nX-Forwarded-Host: original.example.org\r\n\r\n",
    );
    assert_eq!(
        req.header_all("x-forwarded-host"),
        vec!["original.example.org"]
    );
}

#[test]
fn host_is_forwarded_unchanged() {
    let req = forwarded("GET /p?q=1 HTTP/1.1\r\nHost: app.example.com\r\n\r\n");
    assert_eq!(req.header_all("host"), vec!["app.example.com"]);
    assert_eq!(req.target, "/p?q=1");
    assert_eq!(req.method, "GET");
    assert_eq!(req.version, "HTTP/1.1");
}

#[test]
fn host_with_port_is_forwarded_unchanged() {
    let req = forwarded("GET / HTTP/1.1\r\nHost: App.Example.com:8080\r\n\r\n");
    assert_eq!(req.header_all("host"), vec!["App.Example.com:8080"]);
}

#[test]
fn end_to_end_headers_are_forwarded_in_order() {
    let req = forwarded(
        "GET / HTTP/1.1\r\nHost: app.example.com\r\nX-First: 1\r\nCookie: a=1\r\nCookie: b=2\r\n\
         Authorization: Bearer t0k3n\r\nX-Last: 9\r\n\r\n",
    );
    assert_eq!(req.header("x-first"), Some("1"));
    assert_eq!(req.header_all("cookie"), vec!["a=1", "b=2"]);
    assert_eq!(req.header("authorization"), Some("Bearer t0k3n"));
    assert_eq!(req.header("x-last"), Some("9"));
    let names: Vec<String> = req
        .headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    let pos = |n: &str| names.iter().position(|x| x == n).expect(n);
    assert!(pos("x-first") < pos("cookie") && pos("cookie") < pos("x-last"));
}

/// The client's Connection header may not reach the upstream; the edge may
/// send its own `Connection: keep-alive`/`close`, nothing else.
fn assert_no_client_connection_header(req: &RecordedRequest) {
    for v in req.header_all("connection") {
        for token in v.split(',') {
            let t = token.trim().to_ascii_lowercase();
            assert!(
                t == "keep-alive" || t == "close",
                "upstream got Connection: {v}; head:\n{}",
                req.head_text()
            );
        }
    }
}

#[test]
fn hop_by_hop_headers_are_removed() {
    let req = forwarded(
        "GET / HTTP/1.1\r\nHost: app.example.com\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\nTE: trailers\r\nX-Kept: yes\r\n\r\n",
    );
    for h in ["keep-alive", "proxy-connection", "te"] {
        assert!(
            req.header(h).is_none(),
            "{h} forwarded; head:\n{}",
            req.head_text()
        );
    }
    assert_no_client_connection_header(&req);
    assert_eq!(req.header("x-kept"), Some("yes"));
}

#[test]
fn headers_named_in_connection_are_removed() {
    let req = forwarded(
        "GET / HTTP/1.1\r\nHost: app.example.com\r\nConnection: keep-alive, X-Secret, x-other\r\n\
         X-Secret: s3cr3t\r\nX-Other: o\r\nX-Kept: yes\r\n\r\n",
    );
    assert!(
        req.header("x-secret").is_none(),
        "head:\n{}",
        req.head_text()
    );
    assert!(
        req.header("x-other").is_none(),
        "head:\n{}",
        req.head_text()
    );
    assert_eq!(req.header("x-kept"), Some("yes"));
    assert_no_client_connection_header(&req);
}

#[test]
fn headers_named_in_a_second_connection_header_are_removed() {
    let req = forwarded(
        "GET / HTTP/1.1\r\nHost: app.example.com\r\nConnection: keep-alive\r\nX-Secret: s3cr3t\r\n\
         Connection: X-Secret\r\nX-Kept: yes\r\n\r\n",
    );
    assert!(
        req.header("x-secret").is_none(),
        "head:\n{}",
        req.head_text()
    );
    assert_eq!(req.header("x-kept"), Some("yes"));
    assert_no_client_connection_header(&req);
}

#[test]
fn declined_h2c_upgrade_is_a_plain_request() {
    // Whether a non-WebSocket `Upgrade` is stripped or offered to the
    // upstream is not pinned by CONTRACT.md; either way the headers the
    // Connection header names go, and an upstream that answers 200 (declines)
    // leaves an ordinary keep-alive connection.
    let (up, edge) = echo_edge();
    let mut c = Client::connect(edge.addr());
    let r = c.roundtrip(
        "GET / HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let req = up.last_request();
    assert!(
        req.header("http2-settings").is_none(),
        "head:\n{}",
        req.head_text()
    );
    // Closing after a declined upgrade is allowed if announced.
    if r.connection_close() {
        c.assert_closed(Duration::from_secs(3));
    } else {
        assert_eq!(c.get(APP_HOST, "/after").status, 200);
    }
}

#[test]
fn expect_100_continue_is_answered_by_edge_and_not_forwarded() {
    let (up, edge) = echo_edge();
    let mut c = Client::connect(edge.addr());
    c.send(
        "POST /e HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
    )
    .expect("send head");
    c.set_read_timeout(Duration::from_secs(5));
    let interim = c.read_head().expect("the edge should send 100 Continue");
    assert_eq!(
        interim.status,
        100,
        "head:\n{}",
        String::from_utf8_lossy(&interim.raw_head)
    );
    c.send("hello world").expect("send body");
    let resp = c.read_response().expect("final response");
    assert_eq!(resp.status, 200);
    let req = up.last_request();
    assert!(req.header("expect").is_none(), "head:\n{}", req.head_text());
    assert_eq!(req.body, b"hello world");
}

#[test]
fn upstream_ngrok_error_code_is_stripped() {
    let up = Upstream::start(Behaviour::fixed(
        "HTTP/1.1 502 Bad Gateway\r\nngrok-error-code: ERR_NGROK_3004\r\nNgrok-Error-Code: ERR_NGROK_8012\r\n\
         X-Kept: yes\r\nContent-Length: 4\r\n\r\noops",
    ));
    let edge = Edge::start(&app_config(&up, ""));
    let mut c = Client::connect(edge.addr());
    for _ in 0..2 {
        let r = c.get(APP_HOST, "/");
        assert_eq!(r.status, 502, "upstream's own status passes through");
        assert!(
            r.header("ngrok-error-code").is_none(),
            "head:\n{}",
            String::from_utf8_lossy(&r.raw_head)
        );
        assert_eq!(r.header("x-kept"), Some("yes"));
        assert_eq!(r.text(), "oops");
    }
}

#[test]
fn upstream_ngrok_error_code_is_stripped_from_chunked_response() {
    let up = Upstream::start(Behaviour::fixed(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nNGROK-ERROR-CODE: ERR_NGROK_1\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ));
    let edge = Edge::start(&app_config(&up, ""));
    let r = get(edge.addr(), APP_HOST, "/");
    assert_eq!(r.status, 200);
    assert!(r.header("ngrok-error-code").is_none());
    assert_eq!(r.text(), "ok");
}

#[test]
fn multiple_set_cookie_response_headers_are_preserved() {
    let up = Upstream::start(Behaviour::fixed(
        "HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/\r\nSet-Cookie: b=2; HttpOnly\r\nContent-Length: 0\r\n\r\n",
    ));
    let edge = Edge::start(&app_config(&up, ""));
    let r = get(edge.addr(), APP_HOST, "/");
    assert_eq!(
        r.header_all("set-cookie"),
        vec!["a=1; Path=/", "b=2; HttpOnly"]
    );
}
