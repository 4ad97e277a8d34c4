//! Prometheus `/metrics` with real parts: the edge binary, an upstream,
//! concurrent keep-alive clients, and `promtool check metrics` (Debian
//! `prometheus`). Scrapes during the load must parse; after it, the
//! counts match the requests sent.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;

const KEY: &str = "observe-test-key-0123456789";

/// GET on the observe listener; (status, body).
fn api_get(addr: SocketAddr, path: &str, key: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, dechunk(&body))
}

fn dechunk(b: &str) -> String {
    // hyper sends Content-Length for full bodies; keep chunked just in case.
    if !b.contains("\r\n") || b.starts_with('#') {
        return b.to_owned();
    }
    let mut out = String::new();
    let mut rest = b;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n.min(tail.len())]);
        rest = tail.get(n + 2..).unwrap_or("");
    }
    out
}

fn metric(text: &str, line_prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_pass_promtool_and_count_every_request_under_load() {
    let up = Upstream::start(Behaviour::fixed(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ));
    let edge = Edge::start(&format!(
        "[[endpoints]]\nurl = \"http://{APP_HOST}\"\nupstream = \"{}\"\n[[endpoints]]\nurl = \"http://down.example.com\"\nupstream = \"http://127.0.0.1:1\"\n\n[observe]\nlisten = \"127.0.0.1:0\"\napi_keys = [\"{KEY}\"]\n",
        up.url()
    ));
    let api = edge.listener_addr("observe");
    let addr = edge.addr();

    // Without the key: 401.
    assert_eq!(api_get(api, "/metrics", None).0, 401);
    assert_eq!(
        api_get(api, "/metrics", Some("wrong-key-wrong-key-wrong")).0,
        401
    );

    // Load: 4 clients x 600 (500 to the app, 75 unknown host, 25 refused upstream),
    // scraped (and checked by promtool) while it runs.
    let running = Arc::new(AtomicBool::new(true));
    let scraper = {
        let running = running.clone();
        thread::spawn(move || {
            let mut scrapes = 0;
            while running.load(Ordering::Relaxed) {
                let (status, text) = api_get(api, "/metrics", Some(KEY));
                assert_eq!(status, 200);
                promtool_check(&text);
                scrapes += 1;
                thread::sleep(Duration::from_millis(50));
            }
            scrapes
        })
    };
    let clients: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..600 {
                    let (host, want) = match i % 24 {
                        0..=19 => (APP_HOST, 200),
                        20..=22 => ("nobody.example.com", 404),
                        _ => ("down.example.com", 502),
                    };
                    let r = c.get(host, "/");
                    assert_eq!(r.status, want, "{host}");
                    if r.connection_close() {
                        c = Client::connect(addr);
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    running.store(false, Ordering::Relaxed);
    assert!(scraper.join().unwrap() >= 1);

    let app = format!("endpoint=\"http://{APP_HOST}\"");
    let mut text = String::new();
    let settled = wait_until(Duration::from_secs(10), || {
        text = api_get(api, "/metrics", Some(KEY)).1;
        metric(&text, &format!("ringress_http_requests_total{{{app},status_class=\"2xx\"}}")) == 2000
            && metric(&text, "ringress_http_requests_total{endpoint=\"\",status_class=\"4xx\"}") == 300
            && metric(&text, "ringress_http_requests_total{endpoint=\"http://down.example.com\",status_class=\"5xx\"}") == 100
    });
    assert!(settled, "counts do not match the requests sent:\n{text}");
    promtool_check(&text);
    assert_eq!(
        metric(
            &text,
            &format!("ringress_http_request_duration_seconds_count{{{app}}}")
        ),
        2000
    );
    assert_eq!(
        metric(
            &text,
            &format!("ringress_http_request_duration_seconds_bucket{{{app},le=\"+Inf\"}}")
        ),
        2000
    );
    assert!(
        metric(
            &text,
            &format!("ringress_http_response_bytes_total{{{app}}}")
        ) >= 2000 * 40
    );
    assert_eq!(
        metric(&text, "ringress_edge_errors_total{code=\"ERR_NGROK_3200\"}"),
        300
    );
    assert!(metric(&text, "ringress_edge_errors_total{code=\"ERR_NGROK_") >= 300);
    assert!(
        metric(
            &text,
            "ringress_connections_accepted_total{listener=\"http\"}"
        ) >= 4
    );
    assert!(text.contains("ringress_active_connections "));
    assert!(text.contains("ringress_agent_sessions 0"));
    assert!(text.contains("ringress_events_dropped_total{stage=\"worker\"} 0"));
}

#[test]
fn metrics_off_is_a_404_and_bad_observe_config_is_refused() {
    let up = Upstream::start(Behaviour::fixed(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ));
    let edge = Edge::start(&format!(
        "[[endpoints]]\nurl = \"http://{APP_HOST}\"\nupstream = \"{}\"\n\n[observe]\nmetrics = false\nlisten = \"127.0.0.1:0\"\n",
        up.url()
    ));
    assert_eq!(get(edge.addr(), APP_HOST, "/").status, 200);
    let (status, body) = api_get(edge.listener_addr("observe"), "/metrics", None);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("metrics are off"));

    for (bad, needle) in [
        ("[observe]\ninspect = \"everything\"\n", "unknown variant"),
        ("[observe]\nlisten = \"0.0.0.0:9100\"\n", "needs observe.api_keys"),
        ("[observe]\n[[observe.sinks]]\ntype = \"http\"\nurl = \"ftp://x\"\n", "observe.sinks.url"),
        ("[[endpoints]]\nurl = \"http://a.example.com\"\nupstream = \"http://127.0.0.1:1\"\ninspect = \"all\"\n", "unknown variant"),
    ] {
        let out = run_ringress(bad, &["edge", "--check", "--config", "{CONFIG}"], Duration::from_secs(20));
        assert!(!out.status.success(), "{bad} was accepted");
        assert!(out.stderr.contains(needle), "{bad}: {}", out.stderr);
    }
}

#[test]
fn the_api_listener_mounts_the_observability_routes() {
    let up = Upstream::start(Behaviour::fixed(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ));
    let edge = Edge::start(&format!(
        "[[endpoints]]\nurl = \"http://{APP_HOST}\"\nupstream = \"{}\"\n\n[listen]\nhttp = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\n",
        up.url()
    ));
    let api = edge.listener_addr("api");
    // The page needs no key; the data routes need the API's.
    let (status, page) = api_get(api, "/inspect", None);
    assert_eq!(status, 200);
    assert!(page.contains("ringress inspector"));
    let (status, body) = api_get(api, "/metrics", None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("ERR_NGROK_"), "{body}");
    let (status, _) = api_get(
        api,
        "/endpoints/http%3A%2F%2Fapp.example.com/requests",
        Some("not-a-key"),
    );
    assert_eq!(status, 401);
    // Paths that are not the mount's are the API's (404 here).
    assert_eq!(api_get(api, "/no-such-route", None).0, 404);
}

#[test]
fn http2_and_tls_are_counted() {
    let up = Upstream::start(Behaviour::fixed(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ));
    let data = tempfile::tempdir().unwrap();
    let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let edge = Edge::builder(&format!(
        "[[endpoints]]\nurl = \"https://app.ringress.localhost\"\nupstream = \"{}\"\n\n[observe]\nlisten = \"127.0.0.1:0\"\n",
        up.url()
    ))
    .arg("--listen-https")
    .arg(&https.to_string())
    .arg("--dev")
    .arg("--data-dir")
    .arg(&data.path().to_string_lossy())
    .start();
    let ca = data.path().join("ca.pem");
    for proto in ["--http2", "--http1.1"] {
        let out = Command::new("curl")
            .args(["-sS", proto, "--max-time", "20", "--cacert"])
            .arg(&ca)
            .arg("--resolve")
            .arg(format!("app.ringress.localhost:{}:127.0.0.1", https.port()))
            .arg(format!("https://app.ringress.localhost:{}/", https.port()))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ok",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A handshake that fails (no SNI the edge knows... a plain-text hello).
    let mut s = TcpStream::connect(https).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let _ = s.read(&mut [0u8; 64]);
    drop(s);
    let api = edge.listener_addr("observe");
    let ep = "endpoint=\"https://app.ringress.localhost\"";
    let mut text = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            text = api_get(api, "/metrics", None).1;
            metric(
                &text,
                &format!("ringress_http_requests_total{{{ep},status_class=\"2xx\"}}"),
            ) == 2
                && metric(
                    &text,
                    "ringress_tls_handshakes_total{listener=\"https\",result=\"failed\"}",
                ) >= 1
        }),
        "{text}"
    );
    assert!(
        metric(
            &text,
            "ringress_tls_handshakes_total{listener=\"https\",result=\"ok\"}"
        ) >= 2
    );
    assert!(
        metric(
            &text,
            "ringress_connections_accepted_total{listener=\"https\"}"
        ) >= 3
    );
    promtool_check(&text);
}
