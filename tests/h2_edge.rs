//! HTTP/2 to clients through the edge (TLS + ALPN h2), each stream proxied
//! as HTTP/1.1 to the upstream: real clients (curl --http2, h2load).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use common::edge::Edge;
use common::upstream::{Behaviour, Upstream};
use common::{free_port, require_tool};

struct H2Edge {
    _edge: Edge,
    _data: tempfile::TempDir,
    addr: SocketAddr,
    ca: std::path::PathBuf,
}

fn start(config: &str) -> H2Edge {
    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let edge = Edge::builder(config)
        .arg("--listen-https")
        .arg(&addr.to_string())
        .arg("--dev")
        .arg("--data-dir")
        .arg(&data.path().to_string_lossy())
        .start();
    let ca = data.path().join("ca.pem");
    H2Edge {
        _edge: edge,
        _data: data,
        addr,
        ca,
    }
}

fn config(up: &Upstream) -> String {
    format!(
        "workers = 2\n\
         [[endpoints]]\nurl = \"https://app.ringress.localhost\"\nupstream = \"{}\"\n\
         [[endpoints]]\nurl = \"https://hello.ringress.localhost\"\n\
         traffic_policy = {{ on_http_request = [ {{ actions = [ {{ type = \"custom-response\", config = {{ status_code = 201, body = \"Hello h2\", headers = {{ x-hello = \"1\" }} }} }} ] }} ] }}\n",
        up.url()
    )
}

/// curl --http2; returns (exit code, stdout+stderr).
fn curl(e: &H2Edge, host: &str, path: &str, extra: &[&str]) -> (i32, String) {
    assert!(
        require_tool("curl", &["curl"]).is_some(),
        "curl is required"
    );
    let resolve = format!("{host}:{}:127.0.0.1", e.addr.port());
    let out = Command::new("curl")
        .args(["-sS", "--http2", "--max-time", "20", "--cacert"])
        .arg(&e.ca)
        .args(["--resolve", &resolve])
        .args(extra)
        .arg(format!("https://{host}:{}{path}", e.addr.port()))
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn get_is_proxied_over_h2_with_forwarded_headers() {
    let up = Upstream::start(Behaviour::Echo);
    let e = start(&config(&up));
    let (code, out) = curl(
        &e,
        "app.ringress.localhost",
        "/x?y=1",
        &["-i", "-H", "X-Forwarded-For: 9.9.9.9"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    let reqs = up.requests();
    let r = reqs.last().expect("the upstream got the request");
    assert_eq!(r.header("x-forwarded-proto"), Some("https"));
    assert_eq!(r.header("x-forwarded-for"), Some("9.9.9.9, 127.0.0.1"));
    assert!(r
        .header("host")
        .is_some_and(|h| h.starts_with("app.ringress.localhost")));
}

#[test]
fn custom_response_and_edge_errors_over_h2() {
    let up = Upstream::start(Behaviour::Echo);
    let e = start(&config(&up));
    let (code, out) = curl(&e, "hello.ringress.localhost", "/", &["-i"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("HTTP/2 201"), "{out}");
    assert!(out.contains("x-hello: 1"), "{out}");
    assert!(out.ends_with("Hello h2"), "{out}");
    let (code, out) = curl(
        &e,
        "nothing.ringress.localhost",
        "/",
        &["-i", "-H", "Accept: application/json"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("HTTP/2 404"), "{out}");
    assert!(out.contains("ngrok-error-code: ERR_NGROK_3200"), "{out}");
    assert!(out.contains("\"error_code\":\"ERR_NGROK_3200\""), "{out}");
}

#[test]
fn upstream_ngrok_error_code_never_reaches_h2_clients() {
    let up = Upstream::start(Behaviour::fixed(
        "HTTP/1.1 200 OK\r\nngrok-error-code: ERR_NGROK_FAKE\r\nContent-Length: 2\r\n\r\nok",
    ));
    let e = start(&config(&up));
    let (code, out) = curl(&e, "app.ringress.localhost", "/", &["-i"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.to_ascii_lowercase().contains("ngrok-error-code"),
        "{out}"
    );
}

fn digest_of(path: &Path) -> String {
    let data = std::fs::read(path).expect("read");
    format!("len={}", data.len())
}

#[test]
fn uploads_with_and_without_length_and_large_downloads() {
    let up = Upstream::start(Behaviour::BodyDigest);
    let e = start(&config(&up));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("up.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).expect("write");
    let (code, out) = curl(
        &e,
        "app.ringress.localhost",
        "/up",
        &["--data-binary", &format!("@{}", file.display())],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&digest_of(&file)), "{out}");
    // From stdin: no content-length, so the edge sends it chunked.
    let (code, out) = {
        let resolve = format!("app.ringress.localhost:{}:127.0.0.1", e.addr.port());
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "curl -sS --http2 --max-time 20 --cacert '{}' --resolve '{}' -T - 'https://app.ringress.localhost:{}/stdin' < '{}'",
                e.ca.display(),
                resolve,
                e.addr.port(),
                file.display()
            ))
            .output()
            .expect("curl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&digest_of(&file)), "{out}");
    let reqs = up.requests();
    assert!(reqs
        .iter()
        .any(|r| r.header("transfer-encoding") == Some("chunked")));

    let down = Upstream::start(Behaviour::Stream {
        len: 20_000_000,
        chunked: true,
    });
    let e2 = start(&config(&down));
    let out_file = dir.path().join("down.bin");
    let (code, out) = curl(
        &e2,
        "app.ringress.localhost",
        "/big",
        &["-o", &out_file.display().to_string()],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        std::fs::metadata(&out_file).expect("downloaded").len(),
        20_000_000
    );
}

#[test]
fn many_concurrent_streams_with_h2load() {
    let Some(h2load) = require_tool("h2load", &["h2load"]) else {
        return;
    };
    let up = Upstream::start(Behaviour::Echo);
    let e = start(&config(&up));
    let out = Command::new(h2load)
        .args(["-c", "4", "-m", "50", "-n", "4000", "--connect-to"])
        .arg(format!("127.0.0.1:{}", e.addr.port()))
        .arg(format!(
            "https://hello.ringress.localhost:{}/",
            e.addr.port()
        ))
        .output()
        .expect("h2load");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("4000 succeeded"), "{text}");
    assert!(text.contains("h2"), "{text}");
}

// ------------------------------------------------------------ reset storm

use common::h2raw::{frame as h2_frame, get as h2_get};

#[test]
fn rapid_reset_storm_over_tls_gets_goaway_and_the_edge_keeps_serving() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    let up = Upstream::start(Behaviour::Echo);
    let e = start(&config(&up));
    let cfg = common::tls::client_config(&e.ca, &[b"h2"]);
    let name = rustls::pki_types::ServerName::try_from("app.ringress.localhost").expect("name");
    let conn = rustls::ClientConnection::new(cfg, name).expect("conn");
    let sock = std::net::TcpStream::connect(e.addr).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    sock.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .expect("preface");
    tls.write_all(&h2_frame(0x4, 0, 0, &[])).expect("settings");
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");

    let started = Instant::now();
    let mut sent = 0u32;
    'storm: for batch in 0..100u32 {
        let mut buf = Vec::new();
        for i in 0..100u32 {
            let id = 2 * (batch * 100 + i) + 1;
            buf.extend_from_slice(&h2_get(id, "app.ringress.localhost"));
            buf.extend_from_slice(&h2_frame(0x3, 0, id, &8u32.to_be_bytes())); // RST CANCEL
        }
        if tls.write_all(&buf).is_err() {
            break 'storm;
        }
        sent += 100;
    }
    // Read frames until GOAWAY or the end of the connection.
    let mut goaway_code = None;
    let mut header = [0u8; 9];
    while tls.read_exact(&mut header).is_ok() {
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; len];
        if tls.read_exact(&mut payload).is_err() {
            break;
        }
        if header[3] == 0x7 && payload.len() >= 8 {
            goaway_code = Some(u32::from_be_bytes([
                payload[4], payload[5], payload[6], payload[7],
            ]));
            break;
        }
    }
    // The edge answers the flood with GOAWAY(ENHANCE_YOUR_CALM) and closes;
    // when it closes with the rest of the flood unread, the kernel resets
    // the connection and the GOAWAY may be lost on the way: either way the
    // abusive connection must end long before the flood does.
    assert!(
        goaway_code == Some(0xb) || (goaway_code.is_none() && sent < 10_000),
        "the edge let the storm run: {sent} pairs sent, GOAWAY {goaway_code:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    let reached = up.requests().len();
    eprintln!(
        "storm: {sent} HEADERS+RST pairs sent, {reached} reached the upstream, {:?}",
        started.elapsed()
    );
    assert!(
        reached < 1000,
        "{reached} storm requests reached the upstream"
    );
    // The edge (and its worker) still serve a normal client.
    let (code, out) = curl(&e, "app.ringress.localhost", "/after-storm", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("GET /after-storm HTTP/1.1"), "{out}");
}
