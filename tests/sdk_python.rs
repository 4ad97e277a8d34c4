//! Compatibility with the official ngrok agent SDK: PyPI `ngrok` 1.7.x
//! (ngrok-rust 0.18 inside) forwards a local server through our edge,
//! unmodified, pointed at it with `server_addr` and `root_cas`.
//! scripts/test.sh installs the package; outside CI a missing package
//! skips these tests with a printed reason.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::agent::{dev_ca, url_host_port};
use common::*;

fn sdk_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import ngrok"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let msg = "the ngrok Python SDK is not installed (pip install --ignore-requires-python 'ngrok==1.7.*'); scripts/test.sh installs it";
        assert!(
            std::env::var_os("CI").is_none(),
            "{msg}; CI is set, so this test must not be skipped"
        );
        eprintln!("SKIPPED: {msg}");
    }
    ok
}

/// A running `tests/sdk/forward.py`.
struct Sdk {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
}

impl Sdk {
    fn start(tunnel: std::net::SocketAddr, ca: &std::path::Path, domain: &str, port: u16) -> Sdk {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/forward.py");
        let child = Command::new("python3")
            .arg(script)
            .args(["--server-addr", &format!("localhost:{}", tunnel.port())])
            .arg("--root-cas")
            .arg(ca)
            .args(["--domain", domain, "--port", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(File::create(dir.path().join("out")).expect("out"))
            .stderr(File::create(dir.path().join("err")).expect("err"))
            .spawn()
            .expect("spawn python3");
        let mut sdk = Sdk {
            child,
            dir,
            url: String::new(),
        };
        let mut url = String::new();
        let ok = wait_until(Duration::from_secs(20), || {
            let out = std::fs::read_to_string(sdk.dir.path().join("out")).unwrap_or_default();
            match out.lines().find(|l| l.contains("://")) {
                Some(l) => {
                    url = l.trim().to_owned();
                    true
                }
                None => false,
            }
        });
        assert!(ok, "the SDK printed no URL; stderr:\n{}", sdk.stderr());
        sdk.url = url;
        sdk
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("err")).unwrap_or_default()
    }
}

impl Drop for Sdk {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    let addr = edge.listener_addr("https");
    let cfg = common::tls::client_config(ca, &[b"http/1.1"]);
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).ok()?;
    let conn = rustls::ClientConnection::new(cfg, name).ok()?;
    let tcp = TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace().nth(1)?.parse().ok()
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
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(&ca)
        .args(["--resolve", &format!("{host}:{}:127.0.0.1", https.port())])
        .arg(format!("{}/h2", sdk.url))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
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
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let edge = edge.clone();
            let ca = ca.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                https_status(&edge, &ca, "many.ringress.localhost", &format!("/c/{i}"))
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
