//! Host routing (exact, then most specific wildcard; port stripped; case
//! insensitive), the 404 ERR_NGROK_3200 page in HTML and JSON, and
//! custom-response endpoints.

mod common;

use common::*;

/// Which upstream (by port) answered an echo response.
fn answered_by(r: &Response) -> u16 {
    assert_eq!(
        r.status,
        200,
        "head:\n{}",
        String::from_utf8_lossy(&r.raw_head)
    );
    r.header("x-upstream-port")
        .expect("echo upstream answered")
        .parse()
        .expect("port")
}

#[test]
fn exact_host_routes_to_its_upstream() {
    let a = Upstream::start(Behaviour::Echo);
    let b = Upstream::start(Behaviour::Echo);
    let config = format!(
        "{}{}",
        endpoint("http://a.example.com", &a.url()),
        endpoint("http://b.example.com", &b.url())
    );
    let edge = Edge::start(&config);
    assert_eq!(
        answered_by(&get(edge.addr(), "a.example.com", "/")),
        a.addr().port()
    );
    assert_eq!(
        answered_by(&get(edge.addr(), "b.example.com", "/")),
        b.addr().port()
    );
}

#[test]
fn host_port_is_stripped_for_routing() {
    let a = Upstream::start(Behaviour::Echo);
    let edge = Edge::start(&endpoint("http://a.example.com", &a.url()));
    assert_eq!(
        answered_by(&get(edge.addr(), "a.example.com:8080", "/")),
        a.addr().port()
    );
    assert_eq!(
        answered_by(&get(edge.addr(), "a.example.com:80", "/")),
        a.addr().port()
    );
}

#[test]
fn host_matching_is_case_insensitive() {
    let a = Upstream::start(Behaviour::Echo);
    let edge = Edge::start(&endpoint("http://a.example.com", &a.url()));
    assert_eq!(
        answered_by(&get(edge.addr(), "A.EXAMPLE.com", "/")),
        a.addr().port()
    );
    let b = Upstream::start(Behaviour::Echo);
    let edge = Edge::start(&endpoint("http://Mixed.Example.COM", &b.url()));
    assert_eq!(
        answered_by(&get(edge.addr(), "mixed.example.com", "/")),
        b.addr().port()
    );
}

#[test]
fn wildcard_most_specific_wins() {
    let broad = Upstream::start(Behaviour::Echo);
    let narrow = Upstream::start(Behaviour::Echo);
    let exact = Upstream::start(Behaviour::Echo);
    // Broad first and exact last so config order cannot be what decides.
    let config = format!(
        "{}{}{}",
        endpoint("http://*.example.com", &broad.url()),
        endpoint("http://*.api.example.com", &narrow.url()),
        endpoint("http://exact.api.example.com", &exact.url())
    );
    let edge = Edge::start(&config);
    let port = |host: &str| answered_by(&get(edge.addr(), host, "/"));
    assert_eq!(port("www.example.com"), broad.addr().port());
    assert_eq!(port("v1.api.example.com"), narrow.addr().port());
    assert_eq!(port("exact.api.example.com"), exact.addr().port());
    assert_eq!(port("EXACT.api.example.com:443"), exact.addr().port());
    assert_eq!(port("Other.API.example.com"), narrow.addr().port());
}

#[test]
fn exact_beats_wildcard_listed_first() {
    let wild = Upstream::start(Behaviour::Echo);
    let exact = Upstream::start(Behaviour::Echo);
    let config = format!(
        "{}{}",
        endpoint("http://*.example.com", &wild.url()),
        endpoint("http://app.example.com", &exact.url())
    );
    let edge = Edge::start(&config);
    assert_eq!(
        answered_by(&get(edge.addr(), "app.example.com", "/")),
        exact.addr().port()
    );
    assert_eq!(
        answered_by(&get(edge.addr(), "api.example.com", "/")),
        wild.addr().port()
    );
}

#[test]
fn wildcard_does_not_match_apex_or_other_domain() {
    // Like ngrok and TLS wildcards: `*.example.com` is subdomains only.
    let wild = Upstream::start(Behaviour::Echo);
    let edge = Edge::start(&endpoint("http://*.example.com", &wild.url()));
    for host in [
        "example.com",
        "example.org",
        "notexample.com",
        "x.example.com.evil.test",
    ] {
        let r = get(edge.addr(), host, "/");
        assert_edge_error(&r, 404, "ERR_NGROK_3200");
    }
    assert_eq!(wild.request_count(), 0);
}

#[test]
fn unknown_host_is_404_3200_html() {
    let a = Upstream::start(Behaviour::Echo);
    let edge = Edge::start(&endpoint("http://a.example.com", &a.url()));
    let r = get(edge.addr(), "nobody.example.com", "/");
    assert_edge_error(&r, 404, "ERR_NGROK_3200");
    let ct = r
        .header("content-type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(ct.starts_with("text/html"), "content-type {ct:?}");
    assert!(
        r.text().to_ascii_lowercase().contains("<html"),
        "body {:?}",
        r.text()
    );
    assert_eq!(a.request_count(), 0);
}

#[test]
fn unknown_host_is_json_when_accept_prefers_json() {
    let a = Upstream::start(Behaviour::Echo);
    let edge = Edge::start(&endpoint("http://a.example.com", &a.url()));
    let r = send_request(
        edge.addr(),
        "GET / HTTP/1.1\r\nHost: nobody.example.com\r\nAccept: application/json\r\n\r\n",
    );
    assert_edge_error(&r, 404, "ERR_NGROK_3200");
    let ct = r
        .header("content-type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    let v: serde_json::Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("JSON body ({e}): {:?}", r.text()));
    assert!(v.to_string().contains("ERR_NGROK_3200"), "{v}");
}

#[test]
fn error_page_stays_html_when_html_is_preferred() {
    let edge = Edge::start(&endpoint("http://a.example.com", "http://127.0.0.1:9"));
    for accept in [
        "text/html, application/json;q=0.5",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "*/*",
    ] {
        let r = send_request(
            edge.addr(),
            format!("GET / HTTP/1.1\r\nHost: nobody.example.com\r\nAccept: {accept}\r\n\r\n"),
        );
        assert_edge_error(&r, 404, "ERR_NGROK_3200");
        let ct = r
            .header("content-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(ct.starts_with("text/html"), "Accept {accept:?} gave {ct:?}");
    }
}

#[test]
fn json_error_page_for_upstream_errors_too() {
    let port = free_port();
    let edge = Edge::start(&endpoint(
        "http://a.example.com",
        &format!("http://127.0.0.1:{port}"),
    ));
    let r = send_request(
        edge.addr(),
        "GET / HTTP/1.1\r\nHost: a.example.com\r\nAccept: application/json\r\n\r\n",
    );
    assert_edge_error(&r, 502, "ERR_NGROK_8012");
    let _: serde_json::Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("JSON body ({e}): {:?}", r.text()));
}

#[test]
fn connection_survives_a_404() {
    let a = Upstream::start(Behaviour::Echo);
    let edge = Edge::start(&endpoint("http://a.example.com", &a.url()));
    let mut c = Client::connect(edge.addr());
    assert_eq!(c.get("nobody.example.com", "/").status, 404);
    assert_eq!(answered_by(&c.get("a.example.com", "/")), a.addr().port());
}

// ------------------------------------------------------------ custom-response

/// The Hello world example from CONTRACT.md, verbatim.
const HELLO_CONFIG: &str = r#"
[[endpoints]]
url = "http://hello.example.com"
traffic_policy = { on_http_request = [ { actions = [ { type = "custom-response", config = { status_code = 200, body = "Hello world!", headers = { content-type = "text/plain" } } } ] } ] }
"#;

#[test]
fn custom_response_hello_world() {
    let edge = Edge::start(HELLO_CONFIG);
    let mut c = Client::connect(edge.addr());
    for _ in 0..2 {
        let r = c.get("hello.example.com", "/any/path?x=1");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "Hello world!");
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert!(r.header("ngrok-error-code").is_none());
    }
}

#[test]
fn custom_response_status_body_and_headers() {
    let config = custom_response_endpoint(
        "http://teapot.example.com",
        418,
        "short and stout",
        "content-type = \"text/plain; charset=utf-8\", x-teapot = \"yes\", cache-control = \"no-store\"",
    );
    let edge = Edge::start(&config);
    let r = get(edge.addr(), "teapot.example.com", "/");
    assert_eq!(r.status, 418);
    assert_eq!(r.text(), "short and stout");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("x-teapot"), Some("yes"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("content-length"), Some("15"));
}

#[test]
fn custom_response_accepts_content_as_old_name_for_body() {
    let config = r#"
[[endpoints]]
url = "http://old.example.com"
traffic_policy = { on_http_request = [ { actions = [ { type = "custom-response", config = { status_code = 503, content = "down for maintenance" } } ] } ] }
"#;
    let edge = Edge::start(config);
    let r = get(edge.addr(), "old.example.com", "/");
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "down for maintenance");
}

#[test]
fn custom_response_written_as_toml_tables() {
    // The same policy spelled with TOML tables instead of inline tables.
    let config = r#"
[[endpoints]]
url = "http://tables.example.com"

[[endpoints.traffic_policy.on_http_request]]
[[endpoints.traffic_policy.on_http_request.actions]]
type = "custom-response"
[endpoints.traffic_policy.on_http_request.actions.config]
status_code = 201
body = "from tables"
[endpoints.traffic_policy.on_http_request.actions.config.headers]
x-from = "tables"
"#;
    let edge = Edge::start(config);
    let r = get(edge.addr(), "tables.example.com", "/");
    assert_eq!(r.status, 201);
    assert_eq!(r.text(), "from tables");
    assert_eq!(r.header("x-from"), Some("tables"));
}

#[test]
fn custom_response_drains_request_body_and_keeps_connection() {
    let edge = Edge::start(HELLO_CONFIG);
    let mut c = Client::connect(edge.addr());
    let r = c.roundtrip(
        "POST / HTTP/1.1\r\nHost: hello.example.com\r\nContent-Length: 10\r\n\r\n0123456789",
    );
    assert_eq!(r.status, 200);
    assert!(
        !r.connection_close(),
        "a small body is drained, like nginx does"
    );
    let r = c.get("hello.example.com", "/");
    assert_eq!(r.text(), "Hello world!");
    // A chunked body may be drained or the connection closed; a close must
    // be announced, and body bytes must never be read as a request.
    let r = c.roundtrip(
        "POST / HTTP/1.1\r\nHost: hello.example.com\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    if r.connection_close() {
        c.assert_closed(std::time::Duration::from_secs(3));
    } else {
        assert_eq!(c.get("hello.example.com", "/").text(), "Hello world!");
    }
}

#[test]
fn custom_response_head_has_no_body() {
    let edge = Edge::start(HELLO_CONFIG);
    let mut c = Client::connect(edge.addr());
    let r = c.roundtrip("HEAD / HTTP/1.1\r\nHost: hello.example.com\r\n\r\n");
    assert_eq!(r.status, 200);
    let r = c.get("hello.example.com", "/");
    assert_eq!(r.text(), "Hello world!");
}
