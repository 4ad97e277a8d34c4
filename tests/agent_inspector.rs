//! The agent's local inspector with real parts: a `--dev` edge, our agent
//! (`ringress http`), a recording upstream, ngrok's agent API over
//! loopback, and a headless Chromium (chromedriver) on the inspector page:
//! a request made through the edge shows up live, opens, and is replayed
//! to the upstream.
//!
//! `RINGRESS_SCREENSHOTS=1` also writes docs/img/agent-inspector.png.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use common::agent::{curl_write_out, dev_ca, dev_edge, Agent};
use common::browser::Browser;
use common::*;
use serde_json::Value;

const HOST: &str = "insp.ringress.localhost";

/// One call to the agent API: (status, JSON or Null).
fn api(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    api_host(addr, method, path, body, &addr.to_string())
}

fn api_host(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    host: &str,
) -> (u16, Value) {
    let body = body.unwrap_or("");
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let r = Client::connect(addr).roundtrip(raw);
    (
        r.status,
        serde_json::from_str(&r.text()).unwrap_or(Value::Null),
    )
}

fn captures(addr: SocketAddr) -> Vec<Value> {
    let (s, v) = api(addr, "GET", "/api/requests/http", None);
    assert_eq!(s, 200, "{v}");
    v["requests"].as_array().cloned().unwrap_or_default()
}

/// Waits until the newest capture has its response.
fn wait_captures(addr: SocketAddr, n: usize) -> Vec<Value> {
    let mut list = Vec::new();
    let ok = wait_until(Duration::from_secs(10), || {
        list = captures(addr);
        list.len() >= n && list.iter().all(|c| !c["response"].is_null())
    });
    assert!(ok, "wanted {n} answered captures, have {list:?}");
    list
}

fn b64(v: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or(""))
        .expect("base64");
    String::from_utf8_lossy(&bytes).into_owned()
}

fn post(edge: &Edge, path: &str, body: &str) -> Response {
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nX-Test: one\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    Client::connect(edge.addr()).roundtrip(raw)
}

fn start_agent(edge: &Edge, up: &Upstream, extra: &[&str]) -> (Agent, String) {
    let mut args = vec!["--url", "http://insp.ringress.localhost"];
    args.extend_from_slice(extra);
    Agent::start(edge, &up.addr().port().to_string(), &args)
}

#[test]
fn agent_api_lists_captures_and_replays_to_the_upstream() {
    let up = Upstream::start(Behaviour::Echo);
    let edge = dev_edge("");
    let (agent, url) = start_agent(&edge, &up, &[]);
    let web = agent.inspector();

    let r = post(&edge, "/hook?x=1", r#"{"event":"push"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let list = wait_captures(web, 1);
    let c = &list[0];
    assert_eq!(c["tunnel_name"], "command_line");
    assert_eq!(c["request"]["method"], "POST");
    assert_eq!(c["request"]["uri"], "/hook?x=1");
    assert_eq!(c["request"]["proto"], "HTTP/1.1");
    assert_eq!(
        c["request"]["headers"]["X-Test"],
        serde_json::json!(["one"])
    );
    assert!(b64(&c["request"]["raw"]).starts_with("POST /hook?x=1 HTTP/1.1\r\n"));
    assert!(b64(&c["request"]["raw"]).ends_with(r#"{"event":"push"}"#));
    assert_eq!(b64(&c["request"]["body"]["data"]), r#"{"event":"push"}"#);
    assert_eq!(c["response"]["status"], "200 OK");
    assert_eq!(c["response"]["status_code"], 200);
    assert!(b64(&c["response"]["raw"]).starts_with("HTTP/1.1 200"));
    assert!(c["duration"].as_u64().unwrap_or(0) > 0);
    assert!(c["start"].as_str().is_some_and(|s| s.contains('T')));
    assert_eq!(
        c["remote_addr"]
            .as_str()
            .map(|a| a.starts_with("127.0.0.1")),
        Some(true)
    );
    let id = c["id"].as_str().expect("id").to_owned();
    assert_eq!(id.len(), 16);
    let (s, one) = api(web, "GET", &format!("/api/requests/http/{id}"), None);
    assert_eq!((s, &one["id"]), (200, &c["id"]));

    let (s, t) = api(web, "GET", "/api/tunnels", None);
    assert_eq!(s, 200);
    assert_eq!(t["uri"], "/api/tunnels");
    assert_eq!(t["tunnels"][0]["name"], "command_line");
    assert_eq!(t["tunnels"][0]["public_url"], url.as_str());
    assert_eq!(t["tunnels"][0]["proto"], "http");
    assert_eq!(t["tunnels"][0]["config"]["inspect"], true);
    assert_eq!(t["tunnels"][0]["metrics"]["http"]["count"], 1);
    let (s, e) = api(web, "GET", "/api/endpoints/command_line", None);
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["upstream"]["protocol"], "http1");
    let (s, st) = api(web, "GET", "/api/status", None);
    assert_eq!((s, &st["status"]), (200, &serde_json::json!("online")));

    // Replay, as captured: the upstream sees the same request again.
    let (s, v) = api(
        web,
        "POST",
        "/api/requests/http",
        Some(&format!(r#"{{"id":"{id}"}}"#)),
    );
    assert_eq!(s, 204, "{v}");
    let seen = up.wait_for_requests(2, Duration::from_secs(10));
    assert_eq!(seen[1].target, "/hook?x=1");
    assert_eq!(seen[1].body, br#"{"event":"push"}"#);
    assert_eq!(seen[1].header("x-test"), Some("one"));
    assert_eq!(seen[1].header("host"), Some(HOST));
    let list = wait_captures(web, 2);
    assert_eq!(list[0]["replay_of"], id.as_str());
    assert_eq!(list[0]["response"]["status_code"], 200);

    // Replay with modifications.
    let edit = format!(
        r#"{{"id":"{id}","modify":{{"method":"PUT","path":"/edited","headers":[["Host","{HOST}"],["X-Test","two"]],"body":"new body"}}}}"#
    );
    let (s, v) = api(web, "POST", "/api/requests/http", Some(&edit));
    assert_eq!(s, 204, "{v}");
    let seen = up.wait_for_requests(3, Duration::from_secs(10));
    assert_eq!(seen[2].method, "PUT");
    assert_eq!(seen[2].target, "/edited");
    assert_eq!(seen[2].header("x-test"), Some("two"));
    assert_eq!(seen[2].body, b"new body");

    // Bad input: a clear error, nothing sent.
    let (s, v) = api(
        web,
        "POST",
        "/api/requests/http",
        Some(r#"{"id":"0000000000000000"}"#),
    );
    assert_eq!(s, 404, "{v}");
    let (s, v) = api(web, "POST", "/api/requests/http", Some(r#"{"idd":"x"}"#));
    assert_eq!(s, 400, "{v}");
    assert!(v["msg"].as_str().is_some_and(|m| m.contains("idd")), "{v}");
    let bad = format!(r#"{{"id":"{id}","modify":{{"headers":[["X","a\r\nInjected: 1"]]}}}}"#);
    let (s, _) = api(web, "POST", "/api/requests/http", Some(&bad));
    assert_eq!(s, 400);
    let (s, _) = api(web, "GET", "/api/requests/http?limit=x", None);
    assert_eq!(s, 400);
    assert_eq!(up.request_count(), 3);
    // A page on another site cannot read the API (DNS rebinding).
    let (s, _) = api_host(web, "GET", "/api/requests/http", None, "evil.example:4040");
    assert_eq!(s, 403);

    let (s, _) = api(web, "DELETE", "/api/requests/http", None);
    assert_eq!(s, 204);
    assert!(captures(web).is_empty());
    let (s, _) = api(web, "GET", &format!("/api/requests/http/{id}"), None);
    assert_eq!(s, 404);
}

#[test]
fn https_keep_alive_and_a_502_are_captured() {
    let up = Upstream::start(Behaviour::Echo);
    let edge = dev_edge("");
    let (agent, url) = Agent::start(&edge, &up.addr().port().to_string(), &[]);
    let web = agent.inspector();
    let ca = dev_ca(&edge);
    // Two requests on one connection (curl reuses it), HTTP/2 from curl.
    let (out, err) = curl_write_out(
        &format!("{url}/a"),
        &ca,
        "%{http_code} ",
        &["--http2", "-o", "/dev/null", &format!("{url}/b")],
    );
    assert_eq!(out, "200 200 ", "{err}");
    let list = wait_captures(web, 2);
    let uris: Vec<&str> = list
        .iter()
        .filter_map(|c| c["request"]["uri"].as_str())
        .collect();
    assert_eq!(uris, ["/a", "/b"]);

    // An agent whose upstream is down: the 502 it answers is captured.
    let port = free_port();
    let (down, url) = Agent::start(&edge, &port.to_string(), &[]);
    let web = down.inspector();
    let (out, _) = curl_write_out(&format!("{url}/down"), &ca, "%{http_code}", &[]);
    assert_eq!(out, "502");
    let list = wait_captures(web, 1);
    assert_eq!(list[0]["response"]["status_code"], 502);
}

#[test]
fn inspect_false_captures_nothing_and_web_addr_false_serves_nothing() {
    let up = Upstream::start(Behaviour::Echo);
    let edge = dev_edge("");
    let (agent, _) = start_agent(&edge, &up, &["--inspect=false"]);
    let web = agent.inspector();
    assert_eq!(post(&edge, "/x", "{}").status, 200);
    let (_, t) = api(web, "GET", "/api/tunnels", None);
    assert_eq!(t["tunnels"][0]["config"]["inspect"], false);
    assert!(captures(web).is_empty());
    let (s, _) = api(web, "POST", "/api/requests/http", Some(r#"{"id":"x"}"#));
    assert_eq!(s, 404);
    drop(agent);

    let (agent, _) = start_agent(&edge, &up, &["--web-addr", "false"]);
    assert_eq!(post(&edge, "/y", "{}").status, 200);
    assert!(
        !agent.stderr().contains("inspector listening"),
        "{}",
        agent.stderr()
    );
}

#[test]
fn a_taken_inspector_port_falls_back_to_the_next() {
    let up = Upstream::start(Behaviour::Echo);
    let edge = dev_edge("");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let wanted = format!("127.0.0.1:{port}");
    let (agent, _) = start_agent(&edge, &up, &["--web-addr", &wanted]);
    let web = agent.inspector();
    assert_ne!(web.port(), port);
    assert!(web.port() > port && web.port() <= port + 10, "{web}");
    assert_eq!(post(&edge, "/z", "{}").status, 200);
    assert_eq!(wait_captures(web, 1).len(), 1);
}

#[test]
fn chromium_sees_a_request_live_opens_it_and_replays_it() {
    let browser = Browser::start();
    let up = Upstream::start(Behaviour::Echo);
    let edge = dev_edge("");
    let (agent, _) = start_agent(&edge, &up, &[]);
    let web = agent.inspector();
    // An earlier request, already there when the page loads.
    assert_eq!(post(&edge, "/earlier", r#"{"n":0}"#).status, 200);
    wait_captures(web, 1);

    browser.goto(&format!("http://{web}/"));
    browser.wait_for_text_in("#live", "live", Duration::from_secs(15));
    browser.wait_for_text_in("#list .row .p", "/earlier", Duration::from_secs(10));

    // Made with curl after the page loaded: it appears without a reload.
    let ca = dev_ca(&edge);
    let url = format!("http://{HOST}:{}", edge.addr().port());
    let (out, err) = curl_write_out(
        &format!("{url}/webhook/42?source=curl"),
        &ca,
        "%{http_code}",
        &[
            "-H",
            "Content-Type: application/json",
            "--data",
            r#"{"action":"opened","number":42}"#,
        ],
    );
    assert_eq!(out, "200", "{err}");
    browser.wait_for_text_in("#list .row .p", "/webhook/42", Duration::from_secs(10));
    assert_eq!(up.request_count(), 2);

    browser.click_css("#list .row");
    browser.wait_for_text_in(
        "#d-line",
        "POST /webhook/42?source=curl",
        Duration::from_secs(5),
    );
    browser.wait_for_text_in("#d-status", "200 OK", Duration::from_secs(5));
    browser.wait_for_text_in("#d-request .body", "\"number\": 42", Duration::from_secs(5));

    browser.click_css("#replay");
    let seen = up.wait_for_requests(3, Duration::from_secs(10));
    assert_eq!(seen[2].target, "/webhook/42?source=curl");
    assert_eq!(seen[2].body, br#"{"action":"opened","number":42}"#);
    browser.wait_for_text_in("#list .row .tag", "replay", Duration::from_secs(10));
    // The original request stays selected and shown.
    browser.wait_for_text_in("#d-line", "/webhook/42", Duration::from_secs(5));

    let dir = tempfile::tempdir().expect("tempdir");
    let shot = dir.path().join("agent-inspector.png");
    std::fs::write(&shot, browser.screenshot_png()).expect("write png");
    assert!(std::fs::metadata(&shot).expect("png").len() > 10_000);
    if std::env::var_os("RINGRESS_SCREENSHOTS").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/img/agent-inspector.png");
        std::fs::create_dir_all(docs.parent().expect("dir")).expect("mkdir");
        std::fs::copy(&shot, &docs).expect("copy screenshot");
    }

    // Replay with modifications: the editor's path and body are sent.
    browser.click_css("#modify");
    browser.wait_for("#edit.open", Duration::from_secs(5));
    browser.eval(
        "document.getElementById('e-path').value = '/webhook/42?source=edited';\
         document.getElementById('e-body').value = '{\"edited\":true}'; return true;",
    );
    browser.click_css("#e-send");
    let seen = up.wait_for_requests(4, Duration::from_secs(10));
    assert_eq!(seen[3].target, "/webhook/42?source=edited");
    assert_eq!(seen[3].body, br#"{"edited":true}"#);
    browser.wait_for_text_in("#list .row .p", "source=edited", Duration::from_secs(10));
}
