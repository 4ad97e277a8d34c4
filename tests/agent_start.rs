//! `ringress start` and `ringress config check` with ngrok's v3 YAML, and
//! the agent's `--log-format json`: a real ngrok config (several
//! endpoints, an inline traffic policy, `upstream.protocol: http2` to an
//! h2c upstream) against a `--dev` edge, and bad files refused with the
//! key and line.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::agent::{dev_ca, dev_edge, Agent};
use common::edge::binary;
use common::*;

/// An h2c (prior knowledge) upstream on tokio + h2: answers 200 with
/// `h2 upstream` and records "METHOD path version" of each request.
fn h2c_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).expect("listener");
            while let Ok((s, _)) = l.accept().await {
                let rec = rec.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(s).await else {
                        return;
                    };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        rec.lock().expect("lock").push(format!(
                            "{} {} {:?}",
                            req.method(),
                            req.uri().path(),
                            req.version()
                        ));
                        let resp = http::Response::builder()
                            .status(200)
                            .header("x-h2", "yes")
                            .body(())
                            .expect("response");
                        if let Ok(mut send) = respond.send_response(resp, false) {
                            let _ = send.send_data(bytes::Bytes::from_static(b"h2 upstream"), true);
                        }
                    }
                });
            }
        });
    });
    (addr, seen)
}

/// A config as ngrok users write it (`ngrok config upgrade` output plus
/// endpoints), with the two lines one changes for ringress kept apart in
/// `override_yml`.
fn ngrok_yml(site_port: u16, h2_addr: SocketAddr) -> String {
    format!(
        r#"# ngrok agent config, version 3
version: 3
agent:
  authtoken: 2abcDEFghiJKLmnoPQRstu_1v2W3x4Y5z6A7b8C9d0
  console_ui: true
  update_channel: stable
  log_level: info
  inspect_db_size: 10000000
endpoints:
  - name: site
    description: the web site
    metadata: '{{"team": "web"}}'
    url: http://site.ringress.localhost
    upstream:
      url: {site_port}
    traffic_policy:
      on_http_request:
        - actions:
            - type: add-headers
              config:
                headers:
                  x-from-policy: "yes"
      on_http_response:
        - actions:
            - type: add-headers
              config:
                headers:
                  x-policy-response: "1"
  - name: grpc
    url: http://grpc.ringress.localhost
    upstream:
      url: http://127.0.0.1:{}
      protocol: http2
  - name: spare
    url: http://spare.ringress.localhost
    pooling_enabled: true
    upstream:
      url: localhost:1
"#,
        h2_addr.port()
    )
}

fn override_yml(edge: &Edge) -> String {
    format!(
        "agent:\n  server_addr: {}\n  root_cas: {}\n  web_addr: 127.0.0.1:0\n",
        edge.listener_addr("tunnel"),
        dev_ca(edge).display()
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    p
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn a_real_ngrok_v3_config_starts_with_start_all() {
    let up = Upstream::start(Behaviour::Echo);
    let (h2_addr, h2_seen) = h2c_upstream();
    let edge = dev_edge("");
    let dir = tempfile::tempdir().expect("tempdir");
    // One file, as an existing ngrok.yml with server_addr/root_cas changed.
    let mut text = ngrok_yml(up.addr().port(), h2_addr);
    text = text.replace(
        "  console_ui: true\n",
        &format!(
            "  console_ui: true\n{}",
            &override_yml(&edge)["agent:\n".len()..]
        ),
    );
    let cfg = write(dir.path(), "ngrok.yml", &text);
    let (agent, urls) = Agent::spawn(&["start", "--all", "--config", s(&cfg)], 3);
    let port = edge.addr().port();
    for name in ["site", "grpc", "spare"] {
        let want = format!("http://{name}.ringress.localhost:{port}");
        assert!(urls.contains(&want), "{urls:?}");
    }

    let r = get(edge.addr(), "site.ringress.localhost", "/page");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-policy-response"), Some("1"));
    assert_eq!(up.last_request().header("x-from-policy"), Some("yes"));

    let r = get(edge.addr(), "grpc.ringress.localhost", "/svc.Greeter/Hello");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "h2 upstream");
    assert_eq!(r.header("x-h2"), Some("yes"));
    assert_eq!(
        h2_seen.lock().expect("lock").as_slice(),
        ["GET /svc.Greeter/Hello HTTP/2.0"]
    );

    // Every endpoint is in the agent API, each captured under its name.
    let web = agent.inspector();
    let api = Client::connect(web).roundtrip(format!(
        "GET /api/endpoints HTTP/1.1\r\nHost: {web}\r\n\r\n"
    ));
    let v: serde_json::Value = serde_json::from_str(&api.text()).expect("json");
    let names: Vec<&str> = v["endpoints"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names, ["site", "grpc", "spare"]);
    assert_eq!(v["endpoints"][1]["upstream"]["protocol"], "http2");
    assert_eq!(v["endpoints"][2]["pooling_enabled"], true);
    let ok = wait_until(Duration::from_secs(5), || {
        let r = Client::connect(web).roundtrip(format!(
            "GET /api/requests/http?tunnel_name=grpc HTTP/1.1\r\nHost: {web}\r\n\r\n"
        ));
        r.text().contains("/svc.Greeter/Hello") && !r.text().contains("/page")
    });
    assert!(ok, "the grpc endpoint's capture");
    assert!(
        agent.stderr().contains("agent.console_ui has no effect"),
        "{}",
        agent.stderr()
    );
}

#[test]
fn start_by_name_with_an_override_file_merged_over_ngrok_yml() {
    let up = Upstream::start(Behaviour::Echo);
    let edge = dev_edge("");
    let dir = tempfile::tempdir().expect("tempdir");
    let base = write(
        dir.path(),
        "ngrok.yml",
        &ngrok_yml(up.addr().port(), "127.0.0.1:1".parse().expect("addr")),
    );
    let over = write(dir.path(), "ringress.yml", &override_yml(&edge));
    let both = format!("{},{}", s(&base), s(&over));
    let (_agent, urls) = Agent::spawn(&["start", "site", "--config", &both], 1);
    assert_eq!(urls.len(), 1, "{urls:?}");
    assert_eq!(get(edge.addr(), "site.ringress.localhost", "/").status, 200);
    // Not started: the edge has no such endpoint.
    assert_eq!(get(edge.addr(), "grpc.ringress.localhost", "/").status, 404);

    // Unknown names and no selection are refused at start.
    let out = run_command(
        cmd(&["start", "nope", "--config", &both]),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("\"nope\"") && out.stderr.contains("site"),
        "{}",
        out.stderr
    );
    let out = run_command(cmd(&["start", "--config", &both]), Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("--all"), "{}", out.stderr);
}

fn cmd(args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(binary());
    c.args(args)
        .env_remove("RUST_LOG")
        .env_remove("RINGRESS_AUTHTOKEN");
    c
}

#[test]
fn config_check_accepts_ngrok_files_and_names_bad_keys_with_their_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write(
        dir.path(),
        "ngrok.yml",
        &ngrok_yml(8080, "127.0.0.1:50051".parse().expect("addr")),
    );
    let out = run_command(
        cmd(&["config", "check", "--config", s(&good)]),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("Valid configuration file at"),
        "{}",
        out.stdout
    );
    assert!(out
        .stdout
        .contains("endpoint grpc: http://grpc.ringress.localhost -> http://127.0.0.1:50051"));
    assert!(
        out.stdout.contains("agent.update_channel has no effect"),
        "{}",
        out.stdout
    );

    let cases: &[(&str, &[&str])] = &[
        (
            "version: 3\nagent:\n  authtoken: x\nendpoints:\n  - name: a\n    upstream:\n      url: 80\n      protocl: http2\n",
            &["protocl", "line 8", "bad.yml"],
        ),
        ("version: 3\nagent:\n  web_adr: 127.0.0.1:4040\n", &["web_adr", "line 3"]),
        ("version: 3\nendpoints:\n  - name: a\n", &["upstream.url"]),
        ("version: 3\nendpoints: [\n", &["bad.yml", "line"]),
        (
            "version: 3\nendpoints:\n  - name: a\n    upstream: {url: 80}\n    traffic_policy:\n      on_http_request:\n        - actions: [{type: no-such-action}]\n",
            &["endpoint \"a\"", "traffic_policy"],
        ),
        ("version: 3\nendpoints:\n  - name: a\n    upstream: {url: \"::1:3000\"}\n", &["endpoint \"a\""]),
    ];
    for (text, wants) in cases {
        let bad = write(dir.path(), "bad.yml", text);
        let out = run_command(
            cmd(&["config", "check", "--config", s(&bad)]),
            Duration::from_secs(10),
        );
        assert_eq!(out.status.code(), Some(1), "{text}: {}", out.stdout);
        for w in *wants {
            assert!(
                out.stderr.contains(w),
                "{text}: want {w:?} in {}",
                out.stderr
            );
        }
    }
    let missing = dir.path().join("missing.yml");
    let out = run_command(
        cmd(&["config", "check", "--config", s(&missing)]),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("missing.yml"), "{}", out.stderr);
}

#[test]
fn log_format_json_gives_structured_lines() {
    let up = Upstream::start(Behaviour::Echo);
    let edge = dev_edge("");
    let (agent, _) = Agent::start(
        &edge,
        &up.addr().port().to_string(),
        &[
            "--url",
            "http://json.ringress.localhost",
            "--log-format",
            "json",
        ],
    );
    let _ = agent.inspector();
    let text = agent.stderr();
    let mut messages = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        messages.push(v["fields"]["message"].as_str().unwrap_or("").to_owned());
    }
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("forwarding http://json.ringress.localhost")),
        "{messages:?}"
    );
}
