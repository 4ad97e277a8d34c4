//! ACME through the edge itself, against a real pebble: pebble validates
//! HTTP-01 by fetching `/.well-known/acme-challenge/<token>` from the edge's
//! own HTTP listener; the certificate is installed without a restart; curl
//! then reaches the endpoint over HTTP/2 and HTTP/1.1 trusting pebble's
//! root; SIGUSR1 renews it and the edge serves the new one.

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use common::pebble::{self, Pebble};
use common::upstream::{Behaviour, Upstream};
use rustls::pki_types::ServerName;

const NAME: &str = "secure.ringress.localhost";

/// A `ringress edge` started directly (the harness picks its own HTTP port,
/// and pebble must know it first), killed by PID on drop.
struct RawEdge {
    child: Child,
    log: std::path::PathBuf,
}

impl RawEdge {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log_count(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().matches(needle).count() >= count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the PID of a child this test started.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }
}

impl Drop for RawEdge {
    fn drop(&mut self) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- edge log ---\n{}", self.log_text());
        }
    }
}

/// The leaf certificate the edge serves for NAME (DER).
fn served_leaf(https_port: u16, root_pem: &std::path::Path) -> Vec<u8> {
    let cfg = common::tls::client_config(root_pem, &[]);
    let mut conn = rustls::ClientConnection::new(cfg, ServerName::try_from(NAME).expect("name"))
        .expect("conn");
    let mut sock = TcpStream::connect(("127.0.0.1", https_port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .expect("handshake verifies against pebble's root");
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("leaf")
        .to_vec();
    leaf
}

#[test]
fn edge_gets_renews_and_serves_acme_certificates() {
    if !pebble::available() {
        return;
    }
    let http_port = free_port();
    let https_port = free_port();
    let pebble = Pebble::start(http_port, &[]);
    let up = Upstream::start(Behaviour::Echo);
    let dir = tempfile::tempdir().expect("tempdir");
    let root_pem = dir.path().join("pebble-root.pem");
    let roots = pebble.management_get("/roots/0");
    let pem_start = roots
        .find("-----BEGIN CERTIFICATE-----")
        .expect("pebble root PEM");
    std::fs::write(&root_pem, &roots[pem_start..]).expect("write root");
    let config = format!(
        "workers = 2\ndata_dir = \"{data}\"\n[listen]\nhttp = \"127.0.0.1:{http_port}\"\nhttps = \"127.0.0.1:{https_port}\"\n\
         [acme]\ndirectory = \"{dir_url}\"\nca_bundle = \"{bundle}\"\nemail = \"ops@ringress.localhost\"\n\
         [[endpoints]]\nurl = \"https://{NAME}\"\nupstream = \"{up}\"\n",
        data = dir.path().join("data").display(),
        dir_url = pebble.directory_url(),
        bundle = pebble.ca_bundle.display(),
        up = up.url(),
    );
    let config_path = dir.path().join("edge.toml");
    std::fs::write(&config_path, config).expect("config");
    let log = dir.path().join("edge.log");
    let child = Command::new(env!("CARGO_BIN_EXE_ringress"))
        .args(["edge", "--config"])
        .arg(&config_path)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start edge");
    let edge = RawEdge { child, log };
    assert!(
        edge.wait_log_count("certificate installed", 1, Duration::from_secs(60)),
        "no certificate installed:\n{}",
        edge.log_text()
    );

    for proto in ["--http2", "--http1.1"] {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", proto, "--cacert"])
            .arg(&root_pem)
            .args(["--resolve", &format!("{NAME}:{https_port}:127.0.0.1")])
            .arg(format!("https://{NAME}:{https_port}/acme-ok"))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{proto}: {text}");
        assert!(text.contains("GET /acme-ok HTTP/1.1"), "{proto}: {text}");
    }
    // Challenge interception is only for the managed name, and only for
    // pending tokens.
    let resp = common::client::get(
        format!("127.0.0.1:{http_port}").parse().expect("addr"),
        NAME,
        "/.well-known/acme-challenge/not-a-token",
    );
    assert_eq!(resp.status, 404);

    let before = served_leaf(https_port, &root_pem);
    edge.signal(libc::SIGUSR1);
    assert!(
        edge.wait_log_count("certificate installed", 2, Duration::from_secs(60)),
        "no renewal:\n{}",
        edge.log_text()
    );
    let after = served_leaf(https_port, &root_pem);
    assert_ne!(before, after, "the renewed certificate is served");
    drop(pebble);
}
