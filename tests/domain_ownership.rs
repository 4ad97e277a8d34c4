//! Domain ownership at Bind on a production edge (no `--dev`): our agent
//! (`ringress http`) may bind a random name under the base domain or a
//! host that `[tunnel] reserved_domains` covers; any other host is refused
//! with ngrok's code, and the agent exits non-zero printing it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::agent::Agent;
use common::*;

/// A self-signed certificate for the tunnel listener (127.0.0.1) and the
/// endpoints' names, written as PEM files in `dir`.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let names = vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        "app.example.com".to_owned(),
        "*.apps.example.com".to_owned(),
        "*.tunnel.example.com".to_owned(),
    ];
    let cert = rcgen::generate_simple_self_signed(names).expect("certificate");
    let crt = dir.join("edge.crt");
    let key = dir.join("edge.key");
    std::fs::write(&crt, cert.cert.pem()).expect("write cert");
    std::fs::write(&key, cert.key_pair.serialize_pem()).expect("write key");
    (crt, key)
}

struct Prod {
    edge: Edge,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

fn production_edge() -> Prod {
    let dir = tempfile::tempdir().expect("tempdir");
    let (crt, key) = certificate(dir.path());
    let config = format!(
        "[tunnel]\nauth_tokens = [\"secret\"]\nbase_domain = \"tunnel.example.com\"\n\
         reserved_domains = [\"app.example.com\", \"*.apps.example.com\"]\n\n\
         [[tls.certificates]]\ndomains = [\"127.0.0.1\", \"app.example.com\", \"*.apps.example.com\", \"*.tunnel.example.com\"]\n\
         cert = {crt:?}\nkey = {key:?}\ndefault = true\n"
    );
    let edge = Edge::builder(&config)
        .arg("--data-dir")
        .arg(dir.path().to_str().expect("utf-8"))
        .arg("--listen-https")
        .arg("127.0.0.1:0")
        .start();
    Prod {
        edge,
        ca: crt,
        _dir: dir,
    }
}

fn refused(p: &Prod, url: &str) -> RunOutput {
    let mut cmd = Command::new(common::edge::binary());
    cmd.arg("http")
        .arg("9")
        .arg("--server-addr")
        .arg(p.edge.listener_addr("tunnel").to_string())
        .arg("--root-cas")
        .arg(&p.ca)
        .arg("--authtoken")
        .arg("secret")
        .arg("--url")
        .arg(url)
        .env_remove("RUST_LOG")
        .env_remove("RINGRESS_AUTHTOKEN");
    run_command(cmd, Duration::from_secs(20))
}

#[test]
fn production_edge_refuses_unreserved_domains_with_ngrok_codes() {
    let p = production_edge();
    for (url, code) in [
        ("https://other.example.com", "ERR_NGROK_319"),
        ("https://*.example.com", "ERR_NGROK_318"),
        ("https://named.tunnel.example.com", "ERR_NGROK_313"),
        ("https://a.b.tunnel.example.com", "ERR_NGROK_354"),
        ("https://app.example.nosuchtld", "ERR_NGROK_331"),
        ("https://app.example.com/", "ERR_NGROK_9038"),
    ] {
        let out = refused(&p, url);
        assert_ne!(out.status.code(), Some(0), "{url} was accepted");
        assert!(
            out.stderr.contains(code),
            "{url}: want {code}:\n{}",
            out.stderr
        );
    }
}

#[test]
fn production_edge_serves_reserved_and_random_names() {
    let p = production_edge();
    let up = Upstream::start(Behaviour::Echo);
    let port = up.addr().port().to_string();
    let auth = ["--authtoken", "secret"];
    let (_a, url) = Agent::start_trusting(
        &p.edge,
        &p.ca,
        &port,
        &[auth[0], auth[1], "--url", "http://app.example.com"],
    );
    assert_eq!(
        url,
        format!("http://app.example.com:{}", p.edge.addr().port())
    );
    let r = get(p.edge.addr(), "app.example.com", "/reserved");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last_request().target, "/reserved");

    // Covered by the wildcard reservation.
    let (_b, url) = Agent::start_trusting(
        &p.edge,
        &p.ca,
        &port,
        &[auth[0], auth[1], "--url", "http://deep.x.apps.example.com"],
    );
    assert!(url.starts_with("http://deep.x.apps.example.com:"), "{url}");
    assert_eq!(
        get(p.edge.addr(), "deep.x.apps.example.com", "/").status,
        200
    );

    // No name: a random one under the base domain.
    let (_c, url) = Agent::start_trusting(
        &p.edge,
        &p.ca,
        &port,
        &[auth[0], auth[1], "--url", "http://"],
    );
    let host = url
        .strip_prefix("http://")
        .and_then(|r| r.split(':').next())
        .unwrap_or_default()
        .to_owned();
    assert!(host.ends_with(".tunnel.example.com"), "{url}");
    assert_eq!(get(p.edge.addr(), &host, "/").status, 200);
}

/// The official ngrok Python SDK (PyPI `ngrok`, see tests/sdk_python.rs)
/// meets the same rule: the Bind error reaches it with ngrok's code.
fn sdk_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import ngrok"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let msg = "the ngrok Python SDK is not installed; scripts/test.sh installs it";
        assert!(std::env::var_os("CI").is_none(), "{msg}; CI is set");
        eprintln!("SKIPPED: {msg}");
    }
    ok
}

fn sdk_command(p: &Prod, domain: &str, port: u16) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/forward.py"))
        .args([
            "--server-addr",
            &format!("localhost:{}", p.edge.listener_addr("tunnel").port()),
        ])
        .arg("--root-cas")
        .arg(&p.ca)
        .args(["--authtoken", "secret", "--domain", domain])
        .args(["--port", &port.to_string()]);
    cmd
}

#[test]
fn python_sdk_gets_the_ownership_codes() {
    if !sdk_available() {
        return;
    }
    let p = production_edge();
    let up = Upstream::start(Behaviour::Echo);
    let out = run_command(
        sdk_command(&p, "nope.example.com", up.addr().port()),
        Duration::from_secs(30),
    );
    assert_ne!(out.status.code(), Some(0), "{}", out.stdout);
    assert!(out.stderr.contains("ERR_NGROK_319"), "{}", out.stderr);

    // A reserved name works: the SDK prints its URL and serves.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = sdk_command(&p, "sdk.apps.example.com", up.addr().port())
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(dir.path().join("out")).expect("out"))
        .stderr(std::fs::File::create(dir.path().join("err")).expect("err"))
        .spawn()
        .expect("spawn python3");
    let ok = wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(dir.path().join("out")).is_ok_and(|o| o.contains("://"))
    });
    let printed = std::fs::read_to_string(dir.path().join("out")).unwrap_or_default();
    let err = std::fs::read_to_string(dir.path().join("err")).unwrap_or_default();
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "no URL; stderr:\n{err}");
    assert!(
        printed.contains("https://sdk.apps.example.com"),
        "{printed}"
    );
}
