//! Upstream connection reuse: kept when the upstream allows it, never reused
//! after `Connection: close`, a pooled connection the upstream closed while
//! idle is not an error, and many concurrent clients all get answers.

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

use common::*;

#[test]
fn upstream_connection_close_is_not_reused() {
    let up = Upstream::start(Behaviour::fixed_then_close(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    ));
    let edge = Edge::start(&app_config(&up, ""));
    let mut c = Client::connect(edge.addr());
    for _ in 0..3 {
        let r = c.get(APP_HOST, "/");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "ok");
    }
    assert_eq!(up.accepted(), 3);
}

#[test]
fn pooled_connection_closed_by_upstream_while_idle_is_not_an_error() {
    // Like an upstream whose keepalive_timeout is shorter than the edge's:
    // it answers with keep-alive, then closes the idle connection. nginx
    // notices and does not hand the dead connection to the next request.
    let up = Upstream::start(Behaviour::handler(|_req, stream| {
        write_response(stream, 200, &[("content-type", "text/plain")], b"once")?;
        thread::sleep(Duration::from_millis(50));
        let _ = stream.flush();
        let _ = stream.shutdown(Shutdown::Both);
        Ok(false)
    }));
    let edge = Edge::start(&app_config(&up, ""));
    let mut c = Client::connect(edge.addr());
    for i in 0..3 {
        let r = c.get(APP_HOST, &format!("/{i}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.text(), "once");
        thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(up.accepted(), 3);
}

#[test]
fn concurrent_keep_alive_clients_all_succeed() {
    let up = Upstream::start(Behaviour::Echo);
    let edge = Edge::start(&app_config(&up, ""));
    let addr = edge.addr();
    let clients: Vec<_> = (0..32)
        .map(|n| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..20 {
                    let path = format!("/c{n}/r{i}");
                    let r = c.get(APP_HOST, &path);
                    assert_eq!(r.status, 200);
                    assert!(r.text().starts_with(&format!("GET {path} ")));
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    assert_eq!(up.request_count(), 32 * 20);
    assert!(
        up.accepted() <= 64 + 2,
        "{} upstream connections for 32 clients: pooling broken?",
        up.accepted()
    );
}

#[test]
fn upstream_idle_per_host_bounds_the_pool() {
    // With a pool of 1 per host, sequential requests still reuse it.
    let up = Upstream::start(Behaviour::Echo);
    let edge = Edge::start(&app_config(&up, "[limits]\nupstream_idle_per_host = 1\n"));
    for i in 0..5 {
        let r = get(edge.addr(), APP_HOST, &format!("/{i}"));
        assert_eq!(r.status, 200);
    }
    // Fresh client connections may land on either worker: one upstream
    // connection per worker at most.
    assert!(up.accepted() <= 2, "accepted {}", up.accepted());
}
