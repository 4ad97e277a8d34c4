//! A headless Chromium driven through chromedriver (W3C WebDriver over
//! HTTP on loopback): start, open a URL, wait for a CSS selector or a
//! text, click, run a script, save a PNG screenshot. Every wait is
//! bounded; the browser and the driver are ours (killed by PID on drop,
//! with their temporary profile removed).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use super::{free_port, require_tool};

pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

/// One WebDriver call: (HTTP status, JSON body).
fn call(port: u16, method: &str, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    // Read the head, then exactly Content-Length bytes (chromedriver may
    // keep the connection open despite `Connection: close`).
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let body = match len {
        Some(len) => {
            while buf.len() < head_end + len {
                let n = s.read(&mut chunk).ok()?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            String::from_utf8_lossy(&buf[head_end..(head_end + len).min(buf.len())]).into_owned()
        }
        None => {
            let _ = s.read_to_end(&mut buf);
            let text = String::from_utf8_lossy(&buf[head_end..]).into_owned();
            if head.contains("transfer-encoding: chunked") {
                dechunk(&text)
            } else {
                text
            }
        }
    };
    Some((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Starts chromedriver and a headless Chromium session; `None` when
    /// the tools are missing (the test is skipped, or fails under CI).
    pub fn start() -> Option<Browser> {
        let driver_bin = require_tool("chromedriver", &["/usr/bin/chromedriver", "chromedriver"])?;
        let chromium = require_tool("chromium", &["/usr/bin/chromium", "chromium"])?;
        let profile = tempfile::Builder::new()
            .prefix("ringress-chromium-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while call(port, "GET", "/status", None)
            .is_none_or(|(_, v)| v["value"]["ready"] != json!(true))
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,800",
                    format!("--user-data-dir={}", b._profile.path().display()),
                ],
            },
        }}});
        let (status, v) = call(port, "POST", "/session", Some(&caps)).expect("new session");
        assert_eq!(status, 200, "new session: {v}");
        b.session = v["value"]["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned();
        Some(b)
    }

    fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let path = format!("/session/{}{path}", self.session);
        call(self.port, method, &path, body).expect("webdriver call")
    }

    pub fn open(&self, url: &str) {
        let (s, v) = self.cmd("POST", "/url", Some(&json!({ "url": url })));
        assert_eq!(s, 200, "open {url}: {v}");
    }

    /// Runs `script` (a function body; `arguments` available) and returns
    /// its value.
    pub fn eval(&self, script: &str) -> Value {
        let (s, v) = self.cmd(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": []})),
        );
        assert_eq!(s, 200, "script failed: {v}");
        v["value"].clone()
    }

    fn find(&self, css: &str) -> Option<String> {
        let (s, v) = self.cmd(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": css})),
        );
        (s == 200).then(|| v["value"][ELEMENT].as_str().map(str::to_owned))?
    }

    /// Waits for an element matching `css`; panics after `timeout`.
    pub fn wait_for(&self, css: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.find(css).is_none() {
            assert!(
                Instant::now() < deadline,
                "no element {css:?} after {timeout:?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The text of the first element matching `css` ("" when none).
    pub fn text(&self, css: &str) -> String {
        let sel = serde_json::to_string(css).expect("json");
        self.eval(&format!(
            "const e = document.querySelector({sel}); return e ? e.innerText : '';"
        ))
        .as_str()
        .unwrap_or("")
        .to_owned()
    }

    /// Waits until an element matching `css` contains `text`.
    pub fn wait_for_text(&self, css: &str, text: &str, timeout: Duration) {
        let sel = serde_json::to_string(css).expect("json");
        let want = serde_json::to_string(text).expect("json");
        let script = format!(
            "return Array.from(document.querySelectorAll({sel})).some(e => e.innerText.includes({want}));"
        );
        let deadline = Instant::now() + timeout;
        while self.eval(&script) != json!(true) {
            assert!(
                Instant::now() < deadline,
                "no {css:?} with text {text:?} after {timeout:?}; page text:\n{}",
                self.text("body")
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the first element matching `css`.
    pub fn click(&self, css: &str) {
        let id = self
            .find(css)
            .unwrap_or_else(|| panic!("no element {css:?} to click"));
        let (s, v) = self.cmd("POST", &format!("/element/{id}/click"), Some(&json!({})));
        assert_eq!(s, 200, "click {css}: {v}");
    }

    /// Saves a PNG of the viewport.
    pub fn screenshot(&self, path: &Path) -> PathBuf {
        let (s, v) = self.cmd("GET", "/screenshot", None);
        assert_eq!(s, 200, "screenshot: {v}");
        let png = base64::engine::general_purpose::STANDARD
            .decode(v["value"].as_str().expect("base64"))
            .expect("decode");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        std::fs::write(path, png).expect("write png");
        path.to_owned()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = call(
                self.port,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
