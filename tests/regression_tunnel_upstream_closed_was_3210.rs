//! Regression (issue 11): when the agent's upstream accepted the request
//! and closed without answering, the client got 502 `ERR_NGROK_3210`
//! ("could not open a stream to the agent"), which sent users looking at
//! the tunnel instead of their app. The stream was opened and the agent
//! passed its upstream's EOF on: that is an incomplete upstream response,
//! `ERR_NGROK_3004`, the same as for a direct upstream. Checked on a
//! session held by the request's own worker and through the cross-core
//! relay (one agent session, two edge workers).

mod common;

use common::agent::{dev_edge, Agent};
use common::*;

fn assert_all_3004(edge: &Edge, host: &str, n: usize) {
    for i in 0..n {
        // A new connection each time, so that both workers take some.
        let r = get(edge.addr(), host, &format!("/closed/{i}"));
        assert_edge_error(&r, 502, "ERR_NGROK_3004");
    }
}

#[test]
fn agent_upstream_closing_unanswered_is_3004_on_the_agents_worker() {
    let up = Upstream::start(Behaviour::fixed_then_close(""));
    let edge = dev_edge("workers = 1\n");
    let (_agent, _) = Agent::start(
        &edge,
        &up.addr().port().to_string(),
        &["--url", "http://closes.ringress.localhost"],
    );
    assert_all_3004(&edge, "closes.ringress.localhost", 5);
}

#[test]
fn agent_upstream_closing_unanswered_is_3004_through_the_relay() {
    let up = Upstream::start(Behaviour::fixed_then_close(""));
    let healthy = Upstream::start(Behaviour::Echo);
    let edge = dev_edge("workers = 2\n");
    let (_agent, _) = Agent::start(
        &edge,
        &up.addr().port().to_string(),
        &[
            "--url",
            "http://relayed-closes.ringress.localhost",
            "--sessions",
            "1",
        ],
    );
    assert_all_3004(&edge, "relayed-closes.ringress.localhost", 30);
    // With a body: the head leaves before the body, and the end is seen
    // while reading the response head.
    for i in 0..10 {
        let r = send_request(
            edge.addr(),
            format!("POST /closed-post/{i} HTTP/1.1\r\nHost: relayed-closes.ringress.localhost\r\nContent-Length: 5\r\n\r\nhello"),
        );
        assert_edge_error(&r, 502, "ERR_NGROK_3004");
    }
    // The relay still serves a healthy agent afterwards.
    let (_ok_agent, _) = Agent::start(
        &edge,
        &healthy.addr().port().to_string(),
        &["--url", "http://ok.ringress.localhost", "--sessions", "1"],
    );
    for i in 0..10 {
        let r = get(edge.addr(), "ok.ringress.localhost", &format!("/ok/{i}"));
        assert_eq!(r.status, 200, "{}", r.text());
    }
}
