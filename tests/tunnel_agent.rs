//! Tunnels end to end with our own agent: `ringress http` against a `--dev`
//! edge, real sockets and real TLS on loopback. Plain-HTTP endpoints
//! (`--url http://...`) are checked with the raw client; HTTPS endpoints
//! with curl over HTTP/1.1 and HTTP/2.

mod common;

use std::process::Command;
use std::time::Duration;

use common::agent::{curl_write_out, dev_ca, dev_edge, url_host_port, Agent};
use common::*;
use tungstenite::Message;

fn http_get(edge: &Edge, host: &str, path: &str) -> Response {
    get(edge.addr(), host, path)
}

#[test]
fn agent_exposes_a_local_service_over_http() {
    let up = Upstream::start(Behaviour::Echo);
    let edge = dev_edge("");
    let (_agent, url) = Agent::start(
        &edge,
        &up.addr().port().to_string(),
        &["--url", "http://demo.ringress.localhost"],
    );
    assert_eq!(
        url,
        format!("http://demo.ringress.localhost:{}", edge.addr().port())
    );
    let r = http_get(&edge, "demo.ringress.localhost", "/hello?x=1");
    assert_eq!(r.status, 200, "{}", r.text());
    let req = up.last_request();
    assert_eq!(req.target, "/hello?x=1");
    assert_eq!(req.header("host"), Some("demo.ringress.localhost"));
    assert_eq!(req.header("x-forwarded-proto"), Some("http"));
    assert_eq!(req.header("x-forwarded-for"), Some("127.0.0.1"));
    // Keep-alive and many requests over both edge workers.
    let mut c = Client::connect(edge.addr());
    for i in 0..50 {
        let r = c.get("demo.ringress.localhost", &format!("/n/{i}"));
        assert_eq!(r.status, 200);
    }
}

#[test]
fn agent_https_endpoint_with_a_random_name_over_h1_and_h2() {
    let up = Upstream::start(Behaviour::Echo);
    let edge = dev_edge("");
    let (_agent, url) = Agent::start(&edge, &up.addr().port().to_string(), &[]);
    assert!(
        url.starts_with("https://") && url.contains(".ringress.localhost:"),
        "{url}"
    );
    let ca = dev_ca(&edge);
    for proto in ["--http1.1", "--http2"] {
        let (out, err) = curl_write_out(
            &format!("{url}/via-curl"),
            &ca,
            "%{http_code} %{http_version}",
            &[proto],
        );
        let want_version = if proto == "--http2" { "2" } else { "1.1" };
        assert_eq!(out, format!("200 {want_version}"), "{err}");
    }
    assert_eq!(up.last_request().header("x-forwarded-proto"), Some("https"));
}

#[test]
fn second_agent_on_a_taken_url_is_refused_unless_both_pool() {
    let a = Upstream::start(Behaviour::fixed(
        "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na",
    ));
    let b = Upstream::start(Behaviour::fixed(
        "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb",
    ));
    let edge = dev_edge("");
    let (_first, _) = Agent::start(
        &edge,
        &a.addr().port().to_string(),
        &["--url", "http://taken.ringress.localhost"],
    );
    let out = run_ringress_http(
        &edge,
        &b.addr().port().to_string(),
        &["--url", "http://taken.ringress.localhost"],
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(out.stderr.contains("ERR_NGROK_334"), "{}", out.stderr);

    let (_p1, _) = Agent::start(
        &edge,
        &a.addr().port().to_string(),
        &[
            "--url",
            "http://pool.ringress.localhost",
            "--pooling-enabled",
        ],
    );
    let (_p2, _) = Agent::start(
        &edge,
        &b.addr().port().to_string(),
        &[
            "--url",
            "http://pool.ringress.localhost",
            "--pooling-enabled",
        ],
    );
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let r = http_get(&edge, "pool.ringress.localhost", "/");
        assert_eq!(r.status, 200);
        seen.insert(r.text());
    }
    assert_eq!(
        seen.len(),
        2,
        "requests are balanced across the pool: {seen:?}"
    );
}

/// Runs `ringress http` to completion (for refusals).
fn run_ringress_http(edge: &Edge, upstream: &str, args: &[&str]) -> RunOutput {
    let mut cmd = Command::new(common::edge::binary());
    cmd.arg("http")
        .arg(upstream)
        .arg("--server-addr")
        .arg(edge.listener_addr("tunnel").to_string())
        .arg("--root-cas")
        .arg(dev_ca(edge))
        .args(args);
    run_command(cmd, Duration::from_secs(20))
}

#[test]
fn sigint_unbinds_and_exits_zero() {
    let up = Upstream::start(Behaviour::Echo);
    let edge = dev_edge("");
    let (mut agent, _) = Agent::start(
        &edge,
        &up.addr().port().to_string(),
        &["--url", "http://bye.ringress.localhost"],
    );
    assert_eq!(http_get(&edge, "bye.ringress.localhost", "/").status, 200);
    agent.signal(libc::SIGINT);
    assert_eq!(
        agent.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        agent.stderr()
    );
    // Unbound (not dropped): offline at once, and free for another agent.
    let r = http_get(&edge, "bye.ringress.localhost", "/");
    assert_edge_error(&r, 404, "ERR_NGROK_3200");
    let (_again, _) = Agent::start(
        &edge,
        &up.addr().port().to_string(),
        &["--url", "http://bye.ringress.localhost"],
    );
    assert_eq!(http_get(&edge, "bye.ringress.localhost", "/").status, 200);
}

#[test]
fn agent_with_its_upstream_down_answers_502() {
    let port = free_port();
    let edge = dev_edge("");
    let (_agent, _) = Agent::start(
        &edge,
        &port.to_string(),
        &["--url", "http://down.ringress.localhost"],
    );
    let r = http_get(&edge, "down.ringress.localhost", "/");
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("ERR_NGROK_8012"), "{}", r.text());
}

#[test]
fn one_session_is_relayed_across_edge_workers() {
    let up = Upstream::start(Behaviour::Echo);
    let edge = dev_edge("workers = 2\n");
    let (_agent, _) = Agent::start(
        &edge,
        &up.addr().port().to_string(),
        &[
            "--url",
            "http://relay.ringress.localhost",
            "--sessions",
            "1",
        ],
    );
    // New connections land on both workers; every one is served.
    for i in 0..40 {
        let r = http_get(&edge, "relay.ringress.localhost", &format!("/r/{i}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    // Upload through the relay.
    let mut c = Client::connect(edge.addr());
    let body = vec![b'x'; 3 << 20];
    let mut raw = format!(
        "POST /up HTTP/1.1\r\nHost: relay.ringress.localhost\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let r = c.roundtrip(raw);
    assert_eq!(r.status, 200);
    assert!(r.body.len() > body.len(), "echo includes the body");
}

#[test]
fn websocket_and_large_bodies_through_the_tunnel() {
    let ws_up = Upstream::start(Behaviour::WebSocketEcho);
    let big = Upstream::start(Behaviour::Stream {
        len: 8 << 20,
        chunked: true,
    });
    let edge = dev_edge("");
    let (_a, _) = Agent::start(
        &edge,
        &ws_up.addr().port().to_string(),
        &["--url", "http://ws.ringress.localhost"],
    );
    let (_b, _) = Agent::start(
        &edge,
        &big.addr().port().to_string(),
        &["--url", "http://big.ringress.localhost"],
    );

    let stream = Client::connect(edge.addr()).into_stream();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (mut ws, resp) =
        tungstenite::client("ws://ws.ringress.localhost/chat", stream).expect("ws handshake");
    assert_eq!(resp.status().as_u16(), 101);
    for m in [Message::text("hello"), Message::binary(vec![7u8; 300_000])] {
        ws.send(m.clone()).expect("send");
        assert_eq!(ws.read().expect("echo"), m);
    }

    let r = http_get(&edge, "big.ringress.localhost", "/big");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 8 << 20);
    assert_eq!(Digest::of(&r.body), Pattern::new().digest(8 << 20));
}

#[test]
fn agent_reconnects_after_an_edge_restart() {
    let up = Upstream::start(Behaviour::Echo);
    let tunnel = format!("127.0.0.1:{}", free_port());
    let data = tempfile::tempdir().expect("tempdir");
    let start_edge = || {
        Edge::builder("")
            .arg("--dev")
            .arg("--data-dir")
            .arg(data.path().to_str().expect("utf-8"))
            .arg("--listen-https")
            .arg("127.0.0.1:0")
            .arg("--listen-tunnel")
            .arg(&tunnel)
            .start()
    };
    let mut edge = start_edge();
    let (agent, _) = Agent::start(
        &edge,
        &up.addr().port().to_string(),
        &["--url", "http://back.ringress.localhost"],
    );
    assert_eq!(http_get(&edge, "back.ringress.localhost", "/").status, 200);
    edge.sigterm();
    assert!(edge.wait_exit(Duration::from_secs(10)).is_some());
    drop(edge);
    let edge = start_edge();
    let back = wait_until(Duration::from_secs(20), || {
        http_get(&edge, "back.ringress.localhost", "/").status == 200
    });
    assert!(
        back,
        "agent did not come back; agent stderr:\n{}",
        agent.stderr()
    );
}

#[test]
fn deep_agent_names_get_dev_certificates_on_demand() {
    let up = Upstream::start(Behaviour::Echo);
    let edge = dev_edge("");
    let (_agent, url) = Agent::start(
        &edge,
        &up.addr().port().to_string(),
        &["--url", "https://a.b.deep.ringress.localhost"],
    );
    let (host, _) = url_host_port(&url);
    assert_eq!(host, "a.b.deep.ringress.localhost");
    let (out, err) = curl_write_out(&format!("{url}/"), &dev_ca(&edge), "%{http_code}", &[]);
    assert_eq!(out, "200", "{err}");
}

#[test]
fn edge_shutdown_lets_tunnelled_requests_finish() {
    let up = Upstream::start(Behaviour::delayed(
        Duration::from_millis(800),
        "late but whole",
    ));
    let mut edge = dev_edge("");
    let (_agent, _) = Agent::start(
        &edge,
        &up.addr().port().to_string(),
        &["--url", "http://drain.ringress.localhost"],
    );
    let addr = edge.addr();
    let pending = std::thread::spawn(move || get(addr, "drain.ringress.localhost", "/slow"));
    std::thread::sleep(Duration::from_millis(200));
    edge.sigterm();
    let r = pending.join().expect("client thread");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "late but whole");
    assert!(
        edge.wait_exit(Duration::from_secs(10)).is_some(),
        "edge did not stop"
    );
}

#[test]
fn agent_deprecated_basic_auth_flag_is_enforced_by_the_edge() {
    use base64::Engine;
    let up = Upstream::start(Behaviour::Echo);
    let edge = dev_edge("");
    // Translated by the agent into a traffic policy sent with the Bind.
    let (_agent, _url) = Agent::start(
        &edge,
        &up.addr().port().to_string(),
        &[
            "--url",
            "http://locked.ringress.localhost",
            "--basic-auth",
            "user:password1",
            "--basic-auth",
            "ops:password2",
            "--request-header-add",
            "x-agent-flag:on",
        ],
    );
    let host = "locked.ringress.localhost";
    let r = http_get(&edge, host, "/secret");
    assert_edge_error(&r, 401, "ERR_NGROK_3401");
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"ngrok\""));
    assert_eq!(up.request_count(), 0);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let wrong = send_request(
        edge.addr(),
        format!(
            "GET /secret HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {}\r\n\r\n",
            b64("user:password2")
        ),
    );
    assert_eq!(wrong.status, 401);
    let mut c = Client::connect(edge.addr());
    for creds in ["user:password1", "ops:password2"] {
        let r = c.roundtrip(format!(
            "GET /secret HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {}\r\n\r\n",
            b64(creds)
        ));
        assert_eq!(r.status, 200, "{creds}: {}", r.text());
        let seen = up.last_request();
        assert_eq!(seen.target, "/secret");
        assert_eq!(seen.header("x-agent-flag"), Some("on"));
    }
    assert_eq!(up.request_count(), 2);
}

#[test]
fn agent_deprecated_flag_refused_by_the_edge_names_the_option() {
    let edge = dev_edge("");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(common::edge::binary());
    cmd.arg("http")
        .arg("9")
        .arg("--server-addr")
        .arg(edge.listener_addr("tunnel").to_string())
        .arg("--root-cas")
        .arg(dev_ca(&edge))
        .args(["--url", "http://short.ringress.localhost"])
        .args(["--basic-auth", "user:short"])
        .env_remove("RUST_LOG")
        .current_dir(dir.path());
    let out = run_command(cmd, Duration::from_secs(20));
    assert!(!out.status.success(), "the agent should fail to start");
    assert!(
        out.stderr.contains("legacy BasicAuth") && out.stderr.contains("8 to 128"),
        "{}",
        out.stderr
    );
}

#[test]
fn agent_cannot_bind_a_host_the_config_serves() {
    let up = Upstream::start(Behaviour::Echo);
    let config = custom_response_endpoint("http://cfg.ringress.localhost", 200, "from config", "");
    let edge = dev_edge(&config);
    let out = run_ringress_http(
        &edge,
        &up.addr().port().to_string(),
        &["--url", "http://cfg.ringress.localhost"],
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        out.stderr.contains("served by the edge's configuration")
            && out.stderr.contains("ERR_NGROK_334"),
        "{}",
        out.stderr
    );
    assert_eq!(
        http_get(&edge, "cfg.ringress.localhost", "/").text(),
        "from config"
    );
}
