//! Process lifecycle: SIGHUP reload (new routes apply, open connections
//! survive, a broken file keeps the old config) and graceful SIGTERM/SIGINT
//! (in-flight requests finish, idle keep-alive connections close, exit 0).

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;

const RELOAD_WAIT: Duration = Duration::from_secs(10);
const EXIT_WAIT: Duration = Duration::from_secs(10);

fn status_of(edge: &Edge, host: &str) -> u16 {
    match Client::try_connect(edge.addr()) {
        Ok(mut c) => c
            .send(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"))
            .ok()
            .and_then(|_| c.read_response().ok())
            .map(|r| r.status)
            .unwrap_or(0),
        Err(_) => 0,
    }
}

/// Polls with new connections until `host` answers `status` five times in
/// a row (every worker has the new config).
fn wait_for_status(edge: &Edge, host: &str, status: u16) {
    let mut streak = 0;
    let ok = wait_until(RELOAD_WAIT, || {
        if status_of(edge, host) == status {
            streak += 1;
        } else {
            streak = 0;
        }
        streak >= 5
    });
    assert!(ok, "{host} never answered {status} after reload");
}

#[test]
fn sighup_applies_new_routes_and_keeps_open_connections() {
    let a = Upstream::start(Behaviour::Echo);
    let b = Upstream::start(Behaviour::Echo);
    let edge = Edge::start(&endpoint("http://app.example.com", &a.url()));
    let mut old = Client::connect(edge.addr());
    assert_eq!(old.get(APP_HOST, "/before").status, 200);
    assert_eq!(status_of(&edge, "new.example.com"), 404);

    edge.write_config(&format!(
        "{}{}",
        endpoint("http://app.example.com", &b.url()),
        custom_response_endpoint("http://new.example.com", 200, "new route", "")
    ));
    edge.sighup();
    wait_for_status(&edge, "new.example.com", 200);

    // New connections go to the new upstream.
    let r = get(edge.addr(), APP_HOST, "/new-conn");
    assert_eq!(
        r.header("x-upstream-port"),
        Some(b.addr().port().to_string().as_str())
    );

    // The connection opened before the reload is still served. Whether its
    // next request uses the old or new route is not pinned by the contract.
    let r = old.get(APP_HOST, "/after");
    assert_eq!(r.status, 200);
    let port = r.header("x-upstream-port").unwrap_or_default().to_string();
    assert!(
        port == a.addr().port().to_string() || port == b.addr().port().to_string(),
        "answered by {port}"
    );
    assert!(edge
        .stderr_text()
        .lines()
        .all(|l| !l.contains("reload rejected")));
}

#[test]
fn sighup_keeps_in_flight_request_running() {
    let slow = Upstream::start(Behaviour::delayed(Duration::from_millis(1500), "slow done"));
    let edge = Edge::start(&endpoint("http://app.example.com", &slow.url()));
    let mut c = Client::connect(edge.addr());
    c.send("GET /slow HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .expect("send");
    slow.wait_for_requests(1, Duration::from_secs(5));
    edge.write_config(&format!(
        "{}{}",
        endpoint("http://app.example.com", &slow.url()),
        custom_response_endpoint("http://new.example.com", 200, "new", "")
    ));
    edge.sighup();
    let r = c
        .read_response()
        .expect("in-flight response survives reload");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "slow done");
    wait_for_status(&edge, "new.example.com", 200);
}

#[test]
fn broken_config_on_reload_is_rejected_and_old_config_stays() {
    let a = Upstream::start(Behaviour::Echo);
    let mut edge = Edge::start(&endpoint("http://app.example.com", &a.url()));
    let mut conn = Client::connect(edge.addr());
    assert_eq!(conn.get(APP_HOST, "/").status, 200);

    edge.write_config_raw("this is [not valid toml\n");
    edge.sighup();
    assert!(
        edge.wait_for_log("reload rejected", RELOAD_WAIT),
        "no `reload rejected` in the log"
    );
    assert!(edge.is_running(), "a bad reload must not stop the edge");
    assert_eq!(status_of(&edge, APP_HOST), 200, "old routes still served");
    assert_eq!(
        conn.get(APP_HOST, "/").status,
        200,
        "open connection survives"
    );

    // A semantically invalid config is rejected the same way.
    let before = edge.stderr_text().matches("reload rejected").count();
    edge.write_config(
        "[[endpoints]]\nurl = \"http://app.example.com\"\ntraffic_policy = { on_http_request = [ { actions = [ { type = \"no-such-action\" } ] } ] }\n",
    );
    edge.sighup();
    assert!(
        wait_until(RELOAD_WAIT, || edge
            .stderr_text()
            .matches("reload rejected")
            .count()
            > before),
        "second bad reload not rejected"
    );
    assert_eq!(status_of(&edge, APP_HOST), 200, "old routes still served");

    // And a good config afterwards still applies.
    edge.write_config(&format!(
        "{}{}",
        endpoint("http://app.example.com", &a.url()),
        custom_response_endpoint("http://fixed.example.com", 200, "fixed", "")
    ));
    edge.sighup();
    wait_for_status(&edge, "fixed.example.com", 200);
}

#[test]
fn sigterm_finishes_in_flight_request_then_exits_0() {
    let slow = Upstream::start(Behaviour::delayed(Duration::from_secs(2), "finished"));
    let mut edge = Edge::start(&format!(
        "{}{}",
        timeouts(&[("shutdown_grace", "20s")]),
        endpoint("http://app.example.com", &slow.url())
    ));
    let mut c = Client::connect(edge.addr());
    c.send("GET /slow HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .expect("send");
    slow.wait_for_requests(1, Duration::from_secs(5));
    let start = Instant::now();
    edge.sigterm();

    // While draining, new connections are not served.
    thread::sleep(Duration::from_millis(300));
    if let Ok(mut late) = Client::try_connect(edge.addr()) {
        late.set_read_timeout(Duration::from_millis(1000));
        let served = late
            .send("GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
            .ok()
            .and_then(|_| late.read_response().ok())
            .is_some_and(|r| r.status == 200);
        assert!(!served, "a connection made after SIGTERM was served");
    }

    let r = c.read_response().expect("in-flight response after SIGTERM");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "finished");
    let status = edge.wait_exit(EXIT_WAIT).expect("edge did not exit");
    assert!(status.success(), "exit status {status}");
    assert!(start.elapsed() < Duration::from_secs(12));
    assert_eq!(
        slow.request_count(),
        1,
        "the late request must not reach the upstream"
    );
}

#[test]
fn sigterm_closes_idle_keep_alive_connections_promptly() {
    let a = Upstream::start(Behaviour::Echo);
    let mut edge = Edge::start(&format!(
        "{}{}",
        timeouts(&[("shutdown_grace", "30s"), ("client_idle", "5m")]),
        endpoint("http://app.example.com", &a.url())
    ));
    let mut idle = Client::connect(edge.addr());
    assert_eq!(idle.get(APP_HOST, "/").status, 200);
    let mut idle2 = Client::connect(edge.addr());
    assert_eq!(idle2.get(APP_HOST, "/").status, 200);
    let start = Instant::now();
    edge.sigterm();
    idle.assert_closed(Duration::from_secs(5));
    idle2.assert_closed(Duration::from_secs(5));
    let status = edge
        .wait_exit(Duration::from_secs(5))
        .expect("edge did not exit");
    assert!(status.success(), "exit status {status}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "idle connections must not hold shutdown for shutdown_grace"
    );
}

#[test]
fn sigterm_with_no_connections_exits_0_quickly() {
    let mut edge = Edge::start(&custom_response_endpoint(
        "http://x.example.com",
        200,
        "x",
        "",
    ));
    let start = Instant::now();
    edge.sigterm();
    let status = edge
        .wait_exit(Duration::from_secs(5))
        .expect("edge did not exit");
    assert!(status.success(), "exit status {status}");
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn sigint_exits_0() {
    let mut edge = Edge::start(&custom_response_endpoint(
        "http://x.example.com",
        200,
        "x",
        "",
    ));
    edge.sigint();
    let status = edge
        .wait_exit(Duration::from_secs(5))
        .expect("edge did not exit");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn shutdown_grace_bounds_a_stuck_request() {
    let silent = Upstream::start(Behaviour::Silent);
    let mut edge = Edge::start(&format!(
        "{}{}",
        timeouts(&[("shutdown_grace", "1s"), ("upstream_idle", "5m")]),
        endpoint("http://app.example.com", &silent.url())
    ));
    let mut c = Client::connect(edge.addr());
    c.send("GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .expect("send");
    assert!(wait_until(Duration::from_secs(5), || silent.accepted() == 1));
    thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    edge.sigterm();
    let status = edge
        .wait_exit(Duration::from_secs(6))
        .expect("edge must exit once shutdown_grace is over");
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "exited after {:?}, before shutdown_grace",
        start.elapsed()
    );
    assert!(status.success(), "exit status {status}");
    // The client is not left hanging.
    let _ = c.wait_closed(Duration::from_secs(2));
}
