//! The edge traffic inspector with real parts: the edge binary, an echo
//! upstream, curl, and a headless Chromium (through chromedriver) on the
//! inspector page: a request made with curl appears live, opens, and
//! replays (the upstream sees the replay). The JSON routes are checked
//! without the browser too.
//!
//! `RINGRESS_SCREENSHOT=path.png` saves the page after the replay (that
//! is how docs/observability-inspector.png was made).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::browser::Browser;
use common::*;

const KEY: &str = "inspector-test-key-0123456789";

fn api(addr: SocketAddr, method: &str, path: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

fn enc(url: &str) -> String {
    url.replace(':', "%3A").replace('/', "%2F")
}

fn edge_with(up: &Upstream, inspect: &str) -> Edge {
    Edge::start(&format!(
        "[[endpoints]]\nurl = \"http://{APP_HOST}\"\nupstream = \"{}\"\ninspect = \"{inspect}\"\n\n[observe]\nlisten = \"127.0.0.1:0\"\napi_keys = [\"{KEY}\"]\n",
        up.url()
    ))
}

fn curl(edge: &Edge, path: &str, data: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-H",
            &format!("Host: {APP_HOST}"),
            "-d",
            data,
        ])
        .arg(format!("http://{}{path}", edge.addr()))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn browser_sees_a_curl_request_live_opens_it_and_replays_it() {
    let up = Upstream::start(Behaviour::Echo);
    let edge = edge_with(&up, "full");
    let obs = edge.listener_addr("observe");
    let browser = Browser::start();
    browser.goto(&format!(
        "http://{obs}/inspect?endpoint={}#token={KEY}",
        enc(&format!("http://{APP_HOST}"))
    ));
    let state = browser.wait_for("#state", Duration::from_secs(20));
    assert!(
        wait_until(Duration::from_secs(20), || browser.text(&state) == "live"),
        "the page did not go live: {}",
        browser.page_text()
    );

    let echoed = curl(&edge, "/from-curl?x=1", "hello=inspector");
    assert!(echoed.contains("POST /from-curl?x=1"), "{echoed}");

    // Appears live (no reload), then opens.
    browser.wait_for_text("/from-curl?x=1", Duration::from_secs(20));
    let row = browser.wait_for("#requests tbody tr", Duration::from_secs(5));
    browser.click(&row);
    let title = browser.wait_for("#detail-title", Duration::from_secs(20));
    assert_eq!(browser.text(&title), "POST /from-curl?x=1");
    browser.wait_for_text("hello=inspector", Duration::from_secs(10));
    browser.wait_for_text("User-Agent: curl/", Duration::from_secs(10));

    // Replay: through the edge, to the upstream.
    let replay = browser.wait_for("#replay", Duration::from_secs(5));
    browser.click(&replay);
    let status = browser.wait_for("#replay-status", Duration::from_secs(5));
    assert!(
        wait_until(Duration::from_secs(30), || browser.text(&status)
            == "replayed: 200"),
        "replay status: {}",
        browser.text(&status)
    );
    let seen = up.wait_for_requests(2, Duration::from_secs(10));
    assert_eq!(seen.len(), 2);
    let again = &seen[1];
    assert_eq!(again.method, "POST");
    assert_eq!(again.target, "/from-curl?x=1");
    assert_eq!(again.body, b"hello=inspector");
    assert!(again
        .header("ringress-replay-of")
        .is_some_and(|v| v.starts_with("req_")));
    // The replay is captured too, and shows up live.
    browser.wait_for_text("(replay)", Duration::from_secs(20));

    if let Ok(path) = std::env::var("RINGRESS_SCREENSHOT") {
        std::fs::write(&path, browser.screenshot_png()).unwrap();
    }
}

#[test]
fn json_routes_list_get_and_refuse_what_they_cannot_do() {
    let up = Upstream::start(Behaviour::Echo);
    let edge = edge_with(&up, "metadata");
    let obs = edge.listener_addr("observe");
    let ep = enc(&format!("http://{APP_HOST}"));
    curl(&edge, "/one", "body-not-kept");
    assert_eq!(get(edge.addr(), APP_HOST, "/two").status, 200);

    let mut list = serde_json::Value::Null;
    assert!(wait_until(Duration::from_secs(10), || {
        list = api(obs, "GET", &format!("/endpoints/{ep}/requests")).1;
        list["requests"].as_array().is_some_and(|a| a.len() == 2)
    }));
    let reqs = list["requests"].as_array().unwrap();
    assert_eq!(reqs[0]["uri"], "/two", "newest first");
    assert_eq!(reqs[1]["request"]["method"], "POST");
    assert_eq!(reqs[1]["request"]["body_length"], 13);
    assert_eq!(reqs[1]["response"]["status_code"], 200);
    assert_eq!(reqs[1]["capture"], "metadata");

    let id = reqs[1]["id"].as_str().unwrap();
    let (st, one) = api(obs, "GET", &format!("/endpoints/{ep}/requests/{id}"));
    assert_eq!(st, 200);
    assert!(
        one["request"].get("body").is_none(),
        "metadata mode keeps no body: {one}"
    );
    // A body that was not captured cannot be replayed; a bodiless request can.
    let (st, err) = api(
        obs,
        "POST",
        &format!("/endpoints/{ep}/requests/{id}/replay"),
    );
    assert_eq!(st, 409, "{err}");
    let id2 = reqs[0]["id"].as_str().unwrap();
    let (st, ok) = api(
        obs,
        "POST",
        &format!("/endpoints/{ep}/requests/{id2}/replay"),
    );
    assert_eq!((st, ok["status_code"].as_u64()), (200, Some(200)), "{ok}");
    assert_eq!(up.wait_for_requests(3, Duration::from_secs(10)).len(), 3);

    // Unknown ids, wrong methods, no key.
    assert_eq!(
        api(obs, "GET", &format!("/endpoints/{ep}/requests/req_999")).0,
        404
    );
    assert_eq!(api(obs, "GET", "/endpoints/ep_unknown/requests").0, 404);
    assert_eq!(
        api(obs, "DELETE", &format!("/endpoints/{ep}/requests")).0,
        405
    );
    assert_eq!(
        api(obs, "GET", &format!("/endpoints/{ep}/requests/{id}/replay")).0,
        405
    );
    let mut s = TcpStream::connect(obs).unwrap();
    write!(
        s,
        "GET /endpoints/{ep}/requests HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 401"), "{raw}");
}
