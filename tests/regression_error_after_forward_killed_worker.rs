//! Regression: an edge-made error after the request head had been forwarded
//! (upstream closed without answering, sent garbage, or timed out) read the
//! head's spans from a buffer they no longer pointed into and panicked,
//! killing the worker: with one worker, the edge then accepted connections
//! and never answered. Each such error must be a clean 502/504, and the same
//! (single) worker must go on serving.

mod common;

use std::time::Duration;

use common::client::{get, Client};
use common::edge::Edge;
use common::upstream::{Behaviour, Upstream};
use common::{assert_edge_error, endpoint};

fn config(broken: &Upstream, healthy: &Upstream, extra: &str) -> String {
    format!(
        "workers = 1\n{extra}\n{}{}",
        endpoint("http://broken.example.com", &broken.url()),
        endpoint("http://ok.example.com", &healthy.url()),
    )
}

fn healthy_still_served(edge: &Edge) {
    let resp = get(edge.addr(), "ok.example.com", "/after");
    assert_eq!(resp.status, 200, "the worker must survive the error");
}

#[test]
fn upstream_closes_without_answering() {
    let broken = Upstream::start(Behaviour::fixed_then_close(""));
    let healthy = Upstream::start(Behaviour::Echo);
    let edge = Edge::start(&config(&broken, &healthy, ""));
    for _ in 0..3 {
        let resp = get(edge.addr(), "broken.example.com", "/x");
        assert_edge_error(&resp, 502, "ERR_NGROK_3004");
    }
    healthy_still_served(&edge);
    assert!(
        !edge.stderr_text().contains("panicked"),
        "{}",
        edge.stderr_text()
    );
}

#[test]
fn upstream_sends_garbage_with_json_accept() {
    let broken = Upstream::start(Behaviour::fixed("NOT HTTP AT ALL\r\n\r\n"));
    let healthy = Upstream::start(Behaviour::Echo);
    let edge = Edge::start(&config(&broken, &healthy, ""));
    let mut c = Client::connect(edge.addr());
    let resp = c.roundtrip(
        "GET /x HTTP/1.1\r\nHost: broken.example.com\r\nAccept: application/json\r\n\r\n",
    );
    assert_edge_error(&resp, 502, "ERR_NGROK_3004");
    assert!(resp.text().contains("ERR_NGROK_3004"), "{}", resp.text());
    healthy_still_served(&edge);
}

#[test]
fn upstream_times_out_after_body_was_sent() {
    let broken = Upstream::start(Behaviour::Silent);
    let healthy = Upstream::start(Behaviour::Echo);
    let edge = Edge::start(&config(
        &broken,
        &healthy,
        "[timeouts]\nupstream_idle = \"1s\"\n",
    ));
    let mut c = Client::connect(edge.addr());
    c.set_read_timeout(Duration::from_secs(10));
    let resp = c.roundtrip(
        "POST /x HTTP/1.1\r\nHost: broken.example.com\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_edge_error(&resp, 504, "ERR_NGROK_3008");
    assert!(
        resp.connection_close(),
        "a reply after the body left must close"
    );
    healthy_still_served(&edge);
}
