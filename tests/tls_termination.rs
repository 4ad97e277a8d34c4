//! TLS termination at the edge, with real clients: curl trusting the dev
//! CA (`--dev`), certificates from files, SNI selection (exact, wildcard,
//! none), clean handshake failures that do not disturb other connections,
//! session resumption, and certificate reload on SIGHUP.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::edge::Edge;
use common::upstream::{Behaviour, Upstream};
use common::{free_port, require_tool};
use rustls::pki_types::ServerName;

fn https_edge(config: &str, extra: &[&str]) -> (Edge, SocketAddr) {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut b = Edge::builder(config)
        .arg("--listen-https")
        .arg(&addr.to_string());
    for a in extra {
        b = b.arg(a);
    }
    let edge = b.start();
    assert!(
        edge.stderr_text().contains(&format!("https={addr}")),
        "ready line names the HTTPS listener:\n{}",
        edge.stderr_text()
    );
    (edge, addr)
}

/// A `--dev` edge with its own data dir (removed when the test ends).
struct DevEdge {
    _edge: Edge,
    _data: tempfile::TempDir,
}

fn dev_edge(config: &str) -> (DevEdge, SocketAddr, std::path::PathBuf) {
    let data = tempfile::tempdir().expect("tempdir");
    let data_s = data.path().to_string_lossy().to_string();
    let (edge, addr) = https_edge(config, &["--dev", "--data-dir", &data_s]);
    let ca = data.path().join("ca.pem");
    (
        DevEdge {
            _edge: edge,
            _data: data,
        },
        addr,
        ca,
    )
}

/// curl over HTTPS; returns (exit code, stdout).
fn curl(addr: SocketAddr, host: &str, cacert: &Path, extra: &[&str]) -> (i32, String) {
    assert!(
        require_tool("curl", &["curl"]).is_some(),
        "curl is required"
    );
    let url = format!("https://{host}:{}/tls-test", addr.port());
    let resolve = format!("{host}:{}:{}", addr.port(), addr.ip());
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(cacert)
        .args(["--resolve", &resolve])
        .args(extra)
        .arg(&url)
        .output()
        .expect("run curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn echo_endpoints(up: &Upstream) -> String {
    format!(
        "workers = 2\n\
         [[endpoints]]\nurl = \"https://app.ringress.localhost\"\nupstream = \"{u}\"\n\
         [[endpoints]]\nurl = \"https://api.ringress.localhost\"\nupstream = \"{u}\"\n\
         [[endpoints]]\nurl = \"https://*.wild.ringress.localhost\"\nupstream = \"{u}\"\n",
        u = up.url()
    )
}

#[test]
fn dev_ca_serves_exact_and_wildcard_names_over_http11() {
    let up = Upstream::start(Behaviour::Echo);
    let (_edge, addr, ca) = dev_edge(&echo_endpoints(&up));
    for host in [
        "app.ringress.localhost",
        "api.ringress.localhost",
        "x.wild.ringress.localhost",
        "a.b.wild.ringress.localhost",
    ] {
        let (code, out) = curl(addr, host, &ca, &["--http1.1"]);
        assert_eq!(code, 0, "{host}: {out}");
        assert!(out.contains("GET /tls-test HTTP/1.1"), "{host}: {out}");
        assert!(
            out.to_ascii_lowercase()
                .contains("x-forwarded-proto: https"),
            "{out}"
        );
    }
    let reqs = up.requests();
    assert!(reqs
        .iter()
        .all(|r| r.header("x-forwarded-proto") == Some("https")));
}

#[test]
fn http_and_https_routes_are_separate() {
    let up = Upstream::start(Behaviour::Echo);
    let (edge, addr, ca) = dev_edge(&echo_endpoints(&up));
    // The https-only endpoint is not served on the plain listener.
    let resp = common::client::get(edge._edge.addr(), "app.ringress.localhost", "/");
    assert_eq!(resp.status, 404);
    assert_eq!(resp.header("ngrok-error-code"), Some("ERR_NGROK_3200"));
    let (code, out) = curl(addr, "nothing.ringress.localhost", &ca, &["-i"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ERR_NGROK_3200"), "{out}");
}

/// A self-signed certificate for `names`, written as PEM files.
fn write_cert(dir: &Path, stem: &str, names: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params")
            .self_signed(&key)
            .expect("cert");
    let c = dir.join(format!("{stem}.crt"));
    let k = dir.join(format!("{stem}.key"));
    std::fs::write(&c, cert.pem()).expect("write cert");
    std::fs::write(&k, key.serialize_pem()).expect("write key");
    (c, k)
}

fn file_cert_config(up: &Upstream, cert: &Path, key: &Path) -> String {
    format!(
        "workers = 2\n\
         [[tls.certificates]]\ndomains = [\"files.example.com\", \"*.files.example.com\"]\ncert = \"{}\"\nkey = \"{}\"\n\
         [[endpoints]]\nurl = \"https://files.example.com\"\nupstream = \"{u}\"\n\
         [[endpoints]]\nurl = \"https://*.files.example.com\"\nupstream = \"{u}\"\n",
        cert.display(),
        key.display(),
        u = up.url()
    )
}

#[test]
fn file_certificates_by_sni_and_clean_failures() {
    let up = Upstream::start(Behaviour::Echo);
    let dir = tempfile::tempdir().expect("tempdir");
    let (c, k) = write_cert(
        dir.path(),
        "files",
        &["files.example.com", "*.files.example.com"],
    );
    let (_edge, addr) = https_edge(&file_cert_config(&up, &c, &k), &[]);
    let (code, out) = curl(addr, "files.example.com", &c, &["--http1.1"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = curl(addr, "www.files.example.com", &c, &["--http1.1"]);
    assert_eq!(code, 0, "{out}");

    // Unknown name and no SNI: a handshake alert, nothing served.
    let (code, out) = curl(addr, "other.example.net", &c, &[]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("alert") || out.contains("handshake"), "{out}");
    let (code, _) = curl_ip(addr, &c);
    assert_ne!(code, 0);
    // TLS 1.0 is refused.
    let (code, out) = curl(
        addr,
        "files.example.com",
        &c,
        &["--tlsv1.0", "--tls-max", "1.1"],
    );
    assert_ne!(code, 0, "{out}");
    // And none of that disturbed a good client.
    let (code, out) = curl(addr, "files.example.com", &c, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(up.requests().len() >= 3);
}

fn curl_ip(addr: SocketAddr, cacert: &Path) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(cacert)
        .arg(format!("https://{addr}/"))
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn a_configured_default_certificate_answers_clients_without_sni() {
    let up = Upstream::start(Behaviour::Echo);
    let dir = tempfile::tempdir().expect("tempdir");
    let (c, k) = write_cert(dir.path(), "files", &["files.example.com", "127.0.0.1"]);
    let config = file_cert_config(&up, &c, &k).replace("key = \"", "default = true\nkey = \"");
    let (_edge, addr) = https_edge(&config, &[]);
    // By IP: no SNI, so only the default certificate can answer.
    let (code, out) = curl_ip(addr, &c);
    assert_eq!(code, 0, "{out}");
    let two_defaults = format!(
        "{}[[tls.certificates]]\ndomains = [\"x.example.com\"]\ncert = \"{}\"\nkey = \"{}\"\ndefault = true\n",
        config,
        c.display(),
        k.display()
    );
    let out = common::edge::run_ringress(
        &two_defaults,
        &["edge", "--config", "{CONFIG}", "--check"],
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    assert!(
        out.stderr
            .contains("at most one certificate can be the default"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_handshake_that_never_completes_does_not_block_others() {
    let up = Upstream::start(Behaviour::Echo);
    let (_edge, addr, ca) = dev_edge(&echo_endpoints(&up));
    // Half a ClientHello, then silence.
    let mut stalled = TcpStream::connect(addr).expect("connect");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("write");
    let (code, out) = curl(addr, "app.ringress.localhost", &ca, &[]);
    assert_eq!(code, 0, "{out}");
    // Garbage instead of TLS: the edge closes, it does not answer in clear.
    let mut junk = TcpStream::connect(addr).expect("connect");
    junk.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    junk.write_all(b"GET / HTTP/1.1\r\nHost: app.ringress.localhost\r\n\r\n")
        .expect("write");
    let mut buf = Vec::new();
    let _ = junk.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"));
}

fn rustls_client(ca: &Path) -> Arc<rustls::ClientConfig> {
    common::tls::client_config(ca, &[])
}

fn tls_get(
    cfg: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    host: &str,
) -> (String, Option<rustls::HandshakeKind>) {
    let name = ServerName::try_from(host.to_string()).expect("name");
    let conn = rustls::ClientConnection::new(cfg.clone(), name).expect("conn");
    let sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("write");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    (
        String::from_utf8_lossy(&out).to_string(),
        tls.conn.handshake_kind(),
    )
}

#[test]
fn sessions_resume() {
    let up = Upstream::start(Behaviour::Echo);
    let (_edge, addr, ca) = dev_edge(&echo_endpoints(&up));
    let cfg = rustls_client(&ca);
    let (first, kind) = tls_get(&cfg, addr, "app.ringress.localhost");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert_eq!(kind, Some(rustls::HandshakeKind::Full));
    // Several times: the kernel may pick either worker; tickets are shared.
    for _ in 0..4 {
        let (again, kind) = tls_get(&cfg, addr, "app.ringress.localhost");
        assert!(again.starts_with("HTTP/1.1 200"), "{again}");
        assert_eq!(kind, Some(rustls::HandshakeKind::Resumed));
    }
}

#[test]
fn sighup_swaps_a_file_certificate_without_dropping_connections() {
    let up = Upstream::start(Behaviour::Echo);
    let dir = tempfile::tempdir().expect("tempdir");
    let (c1, k1) = write_cert(
        dir.path(),
        "one",
        &["files.example.com", "*.files.example.com"],
    );
    let (edge, addr) = https_edge(&file_cert_config(&up, &c1, &k1), &[]);
    // An open keep-alive TLS connection before the reload.
    let cfg = rustls_client(&c1);
    let name = ServerName::try_from("files.example.com").expect("name");
    let conn = rustls::ClientConnection::new(cfg, name).expect("conn");
    let sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut open = rustls::StreamOwned::new(conn, sock);
    let req = b"GET /1 HTTP/1.1\r\nHost: files.example.com\r\n\r\n";
    open.write_all(req).expect("write");
    let mut buf = [0u8; 4096];
    let n = open.read(&mut buf).expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let (c2, k2) = write_cert(
        dir.path(),
        "two",
        &["files.example.com", "*.files.example.com"],
    );
    edge.write_config(&file_cert_config(&up, &c2, &k2));
    edge.sighup();
    assert!(
        edge.wait_for_log("config reloaded", Duration::from_secs(10)),
        "{}",
        edge.stderr_text()
    );
    // New handshakes get the new certificate (the old CA no longer verifies).
    let (code, out) = curl(addr, "files.example.com", &c2, &[]);
    assert_eq!(code, 0, "{out}");
    let (code, _) = curl(addr, "files.example.com", &c1, &[]);
    assert_ne!(code, 0, "old certificate still served");
    // The connection opened before the reload still works.
    open.write_all(b"GET /2 HTTP/1.1\r\nHost: files.example.com\r\n\r\n")
        .expect("write");
    let n = open.read(&mut buf).expect("read after reload");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[test]
fn https_endpoint_without_a_certificate_source_is_refused_at_load() {
    let out = common::edge::run_ringress(
        "[[endpoints]]\nurl = \"https://nocert.example.com\"\nupstream = \"http://127.0.0.1:9\"\n",
        &["edge", "--config", "{CONFIG}", "--check"],
        Duration::from_secs(20),
    );
    assert!(!out.status.success(), "{}", out.stderr);
    assert!(out.stderr.contains("no certificate"), "{}", out.stderr);
}

#[test]
fn tls_on_the_legacy_driver() {
    let up = Upstream::start(Behaviour::Echo);
    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let edge = Edge::builder(&echo_endpoints(&up))
        .legacy_driver()
        .arg("--listen-https")
        .arg(&addr.to_string())
        .arg("--dev")
        .arg("--data-dir")
        .arg(&data.path().to_string_lossy())
        .start();
    assert!(edge.stderr_text().contains("driver=legacy"));
    let (code, out) = curl(
        addr,
        "app.ringress.localhost",
        &data.path().join("ca.pem"),
        &[],
    );
    assert_eq!(code, 0, "{out}");
}
