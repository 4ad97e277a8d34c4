//! Traffic policies on HTTP/2 streams (TLS + ALPN h2, curl --http2): the
//! same phases as HTTP/1.1, request and response header edits, replies
//! from the policy, compression and a buffered webhook body.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::edge::Edge;
use common::upstream::{write_response, Behaviour, Upstream};
use common::{free_port, require_tool};

struct H2Edge {
    _edge: Edge,
    _data: tempfile::TempDir,
    addr: SocketAddr,
    ca: std::path::PathBuf,
}

const POLICY: &str = r#"on_http_request:
  - expressions: ["req.url.path == '/teapot'"]
    actions:
      - type: custom-response
        config:
          status_code: 418
          body: "short and stout over ${req.version}"
  - expressions: ["req.url.path == '/hook'"]
    actions:
      - type: verify-webhook
        config:
          provider: github
          secret: It's a Secret to Everybody
  - actions:
      - type: add-headers
        config:
          headers:
            x-via: policy
      - type: remove-headers
        config:
          headers: [x-forwarded-for]
on_http_response:
  - actions:
      - type: add-headers
        config:
          headers:
            x-resp: "${res.status_code}"
      - type: compress-response
"#;

fn start(up: &Upstream) -> H2Edge {
    let data = tempfile::tempdir().expect("tempdir");
    let policy = data.path().join("policy.yml");
    std::fs::write(&policy, POLICY).expect("write policy");
    let config = format!(
        "workers = 2\n[[endpoints]]\nurl = \"https://app.ringress.localhost\"\nupstream = \"{}\"\ntraffic_policy_file = {:?}\n",
        up.url(),
        policy.display().to_string()
    );
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let edge = Edge::builder(&config)
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

fn curl(e: &H2Edge, path: &str, extra: &[&str]) -> Option<String> {
    require_tool("curl", &["curl"])?;
    let host = "app.ringress.localhost";
    let resolve = format!("{host}:{}:127.0.0.1", e.addr.port());
    let out = Command::new("curl")
        .args(["-sS", "--http2", "--max-time", "20", "-D", "-", "--cacert"])
        .arg(&e.ca)
        .args(["--resolve", &resolve])
        .args(extra)
        .arg(format!("https://{host}:{}{path}", e.addr.port()))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

const TEXT: &str = "HTTP/2 streams go through the same policy. ";

fn text_upstream() -> Upstream {
    Upstream::start(Behaviour::handler(|req, stream| {
        let body = format!(
            "via={} xff={}\n{}",
            req.header("x-via").unwrap_or("-"),
            req.header("x-forwarded-for").unwrap_or("-"),
            TEXT.repeat(100)
        );
        write_response(
            stream,
            200,
            &[("Content-Type", "text/plain")],
            body.as_bytes(),
        )?;
        Ok(true)
    }))
}

#[test]
fn h2_request_and_response_edits_and_compression() {
    let up = text_upstream();
    let e = start(&up);
    let Some(out) = curl(&e, "/", &["--compressed"]) else {
        return;
    };
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    assert!(out.contains("x-resp: 200"), "{out}");
    assert!(out.contains("content-encoding: "), "{out}");
    assert!(out.contains("via=policy xff=-\n"), "{out}");
    assert!(out.ends_with(&TEXT.repeat(100)), "{out}");
}

#[test]
fn h2_policy_reply() {
    let up = text_upstream();
    let e = start(&up);
    let Some(out) = curl(&e, "/teapot", &[]) else {
        return;
    };
    assert!(out.starts_with("HTTP/2 418"), "{out}");
    assert!(out.ends_with("short and stout over HTTP/2.0"), "{out}");
    assert_eq!(up.request_count(), 0);
}

#[test]
fn h2_webhook_body_buffered_and_forwarded() {
    let up = Upstream::start(Behaviour::Echo);
    let e = start(&up);
    let sig = "X-Hub-Signature-256: sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let Some(out) = curl(&e, "/hook", &["-H", sig, "--data-binary", "Hello, World!"]) else {
        return;
    };
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    assert_eq!(up.last_request().body, b"Hello, World!");
    let out = curl(&e, "/hook", &["-H", sig, "--data-binary", "Hello, World?"]).unwrap_or_default();
    assert!(out.starts_with("HTTP/2 403"), "{out}");
    assert!(out.contains("ERR_NGROK_3204"), "{out}");
}
