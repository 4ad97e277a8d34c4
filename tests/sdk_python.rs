//! Compatibility with the official ngrok agent SDK: PyPI `ngrok` 1.7.x
//! (ngrok-rust 0.18 inside) forwards a local server through our edge,
//! unmodified, pointed at it with `server_addr` and `root_cas`.
//! scripts/test.sh installs the package; outside CI a missing package
//! skips these tests with a printed reason.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::agent::{curl_write_out, dev_ca, url_host_port};
use common::sdk::{sdk_available, Sdk};
use common::*;

fn dev_edge_with_tunnel(data: &std::path::Path, tunnel: &str) -> Edge {
    Edge::builder("")
        .arg("--dev")
        .arg("--data-dir")
        .arg(data.to_str().expect("utf-8"))
        .arg("--listen-https")
        .arg("127.0.0.1:0")
        .arg("--listen-tunnel")
        .arg(tunnel)
        .start()
}

/// GET over HTTPS with rustls, trusting the dev CA; the status code.
fn https_status(edge: &Edge, ca: &std::path::Path, host: &str, path: &str) -> Option<u16> {
    https_get(edge, ca, host, path, "").map(|(status, _)| status)
}

/// GET over HTTPS with extra header lines; the status and the whole
/// response as text.
fn https_get(
    edge: &Edge,
    ca: &std::path::Path,
    host: &str,
    path: &str,
    extra_headers: &str,
) -> Option<(u16, String)> {
    let addr = edge.listener_addr("https");
    let cfg = common::tls::client_config(ca, &[b"http/1.1"]);
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).ok()?;
    let conn = rustls::ClientConnection::new(cfg, name).ok()?;
    let tcp = TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra_headers}Connection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

#[test]
fn sdk_forward_serves_https_through_our_edge() {
    if !sdk_available() {
        return;
    }
    let up = Upstream::start(Behaviour::Echo);
    let data = tempfile::tempdir().expect("tempdir");
    let edge = dev_edge_with_tunnel(data.path(), "127.0.0.1:0");
    let ca = dev_ca(&edge);
    let sdk = Sdk::start(
        edge.listener_addr("tunnel"),
        &ca,
        "sdk.ringress.localhost",
        up.addr().port(),
    );
    let https = edge.listener_addr("https");
    assert_eq!(
        sdk.url,
        format!("https://sdk.ringress.localhost:{}", https.port())
    );
    let (host, _) = url_host_port(&sdk.url);
    assert_eq!(
        https_status(&edge, &ca, &host, "/from-sdk"),
        Some(200),
        "{}",
        sdk.stderr()
    );
    let req = up.last_request();
    assert_eq!(req.target, "/from-sdk");
    assert_eq!(req.header("host"), Some("sdk.ringress.localhost"));
    assert_eq!(req.header("x-forwarded-proto"), Some("https"));
    // curl over HTTP/2 too: the SDK still gets HTTP/1.1 on its stream.
    let (out, err) = curl_write_out(
        &format!("{}/h2", sdk.url),
        &ca,
        "%{http_code}",
        &["--http2"],
    );
    assert_eq!(out, "200", "{err}");
}

#[test]
fn sdk_reconnects_after_an_edge_restart() {
    if !sdk_available() {
        return;
    }
    let up = Upstream::start(Behaviour::Echo);
    let data = tempfile::tempdir().expect("tempdir");
    let tunnel = format!("127.0.0.1:{}", free_port());
    let mut edge = dev_edge_with_tunnel(data.path(), &tunnel);
    let ca = dev_ca(&edge);
    let sdk = Sdk::start(
        edge.listener_addr("tunnel"),
        &ca,
        "again.ringress.localhost",
        up.addr().port(),
    );
    assert_eq!(
        https_status(&edge, &ca, "again.ringress.localhost", "/"),
        Some(200)
    );
    // The SDK's own backoff is 0, 50 ms, 2.5 s, then minutes: the edge
    // must be back within about two seconds, which a restart is.
    edge.sigterm();
    assert!(
        edge.wait_exit(Duration::from_secs(10)).is_some(),
        "edge did not stop"
    );
    drop(edge);
    let edge = dev_edge_with_tunnel(data.path(), &tunnel);
    let back = wait_until(Duration::from_secs(20), || {
        https_status(&edge, &ca, "again.ringress.localhost", "/") == Some(200)
    });
    assert!(
        back,
        "the SDK did not serve again after the restart; SDK stderr:\n{}\nedge:\n{}",
        sdk.stderr(),
        edge.stderr_text()
    );
}

#[test]
fn sdk_session_carries_600_concurrent_connections() {
    if !sdk_available() {
        return;
    }
    // Slow answers keep all 600 in flight at once: more than the 512
    // streams the SDK's session survives, so the edge must queue.
    let up = Upstream::start(Behaviour::delayed(Duration::from_millis(300), "slow"));
    let data = tempfile::tempdir().expect("tempdir");
    let edge = dev_edge_with_tunnel(data.path(), "127.0.0.1:0");
    let ca = dev_ca(&edge);
    let sdk = Sdk::start(
        edge.listener_addr("tunnel"),
        &ca,
        "many.ringress.localhost",
        up.addr().port(),
    );
    let edge = Arc::new(edge);
    let n = 600;
    // Two waves: the second meets the idle streams the first left pooled.
    for wave in 0..2 {
        let barrier = Arc::new(Barrier::new(n));
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let edge = edge.clone();
                let ca = ca.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    https_status(
                        &edge,
                        &ca,
                        "many.ringress.localhost",
                        &format!("/c/{wave}/{i}"),
                    )
                })
            })
            .collect();
        let statuses: Vec<Option<u16>> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        let ok = statuses.iter().filter(|s| **s == Some(200)).count();
        assert_eq!(
            ok,
            n,
            "statuses: {:?}",
            statuses
                .iter()
                .filter(|s| **s != Some(200))
                .collect::<Vec<_>>()
        );
    }
    // One session did it all: the SDK never had to reconnect.
    let sessions = edge
        .stderr_text()
        .matches("agent session authenticated")
        .count();
    assert_eq!(
        sessions,
        1,
        "the SDK session was lost; SDK stderr:\n{}",
        sdk.stderr()
    );
}

#[test]
fn sdk_legacy_basic_auth_and_request_headers_are_enforced() {
    if !sdk_available() {
        return;
    }
    let up = Upstream::start(Behaviour::Echo);
    let data = tempfile::tempdir().expect("tempdir");
    let edge = dev_edge_with_tunnel(data.path(), "127.0.0.1:0");
    let ca = dev_ca(&edge);
    // The SDK sends these as the Bind's BasicAuth / RequestHeaders /
    // ResponseHeaders options, not as a traffic policy.
    let sdk = Sdk::start_with(
        edge.listener_addr("tunnel"),
        &ca,
        "legacy.ringress.localhost",
        up.addr().port(),
        &[
            "--basic-auth",
            "user:password1",
            "--basic-auth",
            "ops:password2",
            "--request-header-add",
            "x-from-sdk:legacy",
            "--response-header-add",
            "x-edge:added",
        ],
    );
    let (host, _) = url_host_port(&sdk.url);
    let (status, text) =
        https_get(&edge, &ca, &host, "/private", "").expect("response without credentials");
    assert_eq!(status, 401, "{text}\nSDK stderr:\n{}", sdk.stderr());
    assert!(
        text.to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{text}"
    );
    assert_eq!(
        up.request_count(),
        0,
        "nothing forwarded without credentials"
    );

    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let (status, _) = https_get(
        &edge,
        &ca,
        &host,
        "/private",
        &format!("Authorization: Basic {}\r\n", b64("user:wrong-one")),
    )
    .expect("response");
    assert_eq!(status, 401);
    for creds in ["user:password1", "ops:password2"] {
        let (status, text) = https_get(
            &edge,
            &ca,
            &host,
            "/private",
            &format!("Authorization: Basic {}\r\n", b64(creds)),
        )
        .expect("response");
        assert_eq!(status, 200, "{creds}: {text}");
        assert!(
            text.to_ascii_lowercase().contains("x-edge: added"),
            "{text}"
        );
        let seen = up.last_request();
        assert_eq!(seen.target, "/private");
        assert_eq!(
            seen.header("x-from-sdk"),
            Some("legacy"),
            "{}",
            seen.head_text()
        );
    }
}

#[test]
fn sdk_legacy_option_the_edge_cannot_honour_is_refused() {
    if !sdk_available() {
        return;
    }
    let data = tempfile::tempdir().expect("tempdir");
    let edge = dev_edge_with_tunnel(data.path(), "127.0.0.1:0");
    let ca = dev_ca(&edge);
    // A password shorter than basic-auth allows: the SDK passes it, the
    // edge refuses the bind with ERR_NGROK_9026 naming the option, and
    // forward() raises.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/forward.py");
    let tunnel = edge.listener_addr("tunnel");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args(["--server-addr", &format!("localhost:{}", tunnel.port())])
        .arg("--root-cas")
        .arg(&ca)
        .args(["--domain", "bad.ringress.localhost", "--port", "9"])
        .args(["--basic-auth", "user:short"]);
    let out = run_command(cmd, Duration::from_secs(30));
    assert!(!out.status.success(), "forward() should fail");
    assert!(
        out.stderr.contains("BasicAuth") && out.stderr.contains("ERR_NGROK_9026"),
        "{}",
        out.stderr
    );
}

/// Regression (issue 11): an upstream that accepts and closes without
/// answering, behind the SDK (one session, so on a two-worker edge half
/// the connections go through the relay), is ERR_NGROK_3004, not 3210.
#[test]
fn sdk_upstream_closing_unanswered_is_3004_not_3210() {
    if !sdk_available() {
        return;
    }
    let up = Upstream::start(Behaviour::fixed_then_close(""));
    let data = tempfile::tempdir().expect("tempdir");
    let edge = dev_edge_with_tunnel(data.path(), "127.0.0.1:0");
    let ca = dev_ca(&edge);
    let sdk = Sdk::start(
        edge.listener_addr("tunnel"),
        &ca,
        "closes.ringress.localhost",
        up.addr().port(),
    );
    let (host, _) = url_host_port(&sdk.url);
    for i in 0..12 {
        let (status, text) = https_get(&edge, &ca, &host, &format!("/c/{i}"), "")
            .unwrap_or_else(|| panic!("no response; sdk stderr:\n{}", sdk.stderr()));
        assert_eq!(status, 502, "{text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("ngrok-error-code: err_ngrok_3004"),
            "{text}"
        );
    }
}
