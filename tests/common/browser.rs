//! A headless Chromium driven through chromedriver (W3C WebDriver over
//! HTTP, spoken with a std `TcpStream`), for tests of web pages the edge
//! or the agent serves.
//!
//! Owns: the chromedriver child (which owns Chromium), its port and the
//! browser profile tempdir. `Drop` ends the session, then kills the
//! driver by PID and reaps it. Pages must be on 127.0.0.1.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{free_port, wait_until};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Any one WebDriver command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// The W3C element reference key.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

/// An element reference.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile.
    pub fn start() -> Browser {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("driver log");
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .arg(format!("--log-path={}", log.path().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (Debian package chromium-driver)");
        let up = wait_until(Duration::from_secs(20), || {
            request(port, "GET", "/status", None)
                .map(|v| v["value"]["ready"] == true)
                .unwrap_or(false)
        });
        if !up {
            let _ = driver.kill();
            let _ = driver.wait();
            panic!("chromedriver did not come up on port {port}");
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        "--disable-dev-shm-usage", "--window-size=1280,800",
                        format!("--user-data-dir={}", profile.path().display()),
                    ]
                }
            }}
        });
        let v = match request(port, "POST", "/session", Some(&caps)) {
            Ok(v) => v,
            Err(e) => {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("new session failed: {e}");
            }
        };
        let Some(session) = v["value"]["sessionId"].as_str().map(str::to_owned) else {
            let _ = driver.kill();
            let _ = driver.wait();
            panic!("new session refused: {v}");
        };
        Browser {
            driver,
            port,
            session,
            _profile: profile,
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let p = format!("/session/{}{path}", self.session);
        let v = request(self.port, method, &p, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        if v["value"].get("error").is_some() {
            panic!("WebDriver {method} {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(&json!({ "url": url })));
    }

    /// The first element matching a CSS selector, if any.
    pub fn find(&self, css: &str) -> Option<Element> {
        let p = format!("/session/{}/element", self.session);
        let v = request(
            self.port,
            "POST",
            &p,
            Some(&json!({ "using": "css selector", "value": css })),
        )
        .ok()?;
        v["value"][ELEMENT_KEY]
            .as_str()
            .map(|s| Element(s.to_owned()))
    }

    /// Waits up to `timeout` for an element matching `css`.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.find(css) {
                return e;
            }
            if Instant::now() > deadline {
                panic!(
                    "no element {css:?} after {timeout:?}; page text:\n{}",
                    self.page_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the page's text contains `needle`.
    pub fn wait_for_text(&self, needle: &str, timeout: Duration) {
        if !wait_until(timeout, || self.page_text().contains(needle)) {
            panic!(
                "{needle:?} not on the page after {timeout:?}; page text:\n{}",
                self.page_text()
            );
        }
    }

    /// Waits until some element matching `css` has `text` in its text.
    pub fn wait_for_text_in(&self, css: &str, text: &str, timeout: Duration) {
        let sel = serde_json::to_string(css).expect("json");
        let want = serde_json::to_string(text).expect("json");
        let script = format!(
            "return Array.from(document.querySelectorAll({sel})).some(e => e.innerText.includes({want}));"
        );
        if !wait_until(timeout, || self.eval(&script) == json!(true)) {
            panic!(
                "no {css:?} with text {text:?} after {timeout:?}; page text:\n{}",
                self.page_text()
            );
        }
    }

    /// Clicks the first element matching `css` (waiting up to 5 s for it).
    pub fn click_css(&self, css: &str) {
        let e = self.wait_for(css, Duration::from_secs(5));
        self.click(&e);
    }

    pub fn click(&self, e: &Element) {
        self.cmd("POST", &format!("/element/{}/click", e.0), Some(&json!({})));
    }

    pub fn text(&self, e: &Element) -> String {
        self.cmd("GET", &format!("/element/{}/text", e.0), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs a script in the page and returns its value.
    pub fn eval(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": [] })),
        )
    }

    pub fn page_text(&self) -> String {
        let p = format!("/session/{}/execute/sync", self.session);
        request(self.port, "POST", &p, Some(&json!({ "script": "return document.body ? document.body.innerText : ''", "args": [] })))
            .ok()
            .and_then(|v| v["value"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// A PNG of the viewport.
    pub fn screenshot_png(&self) -> Vec<u8> {
        use base64::Engine;
        let v = self.cmd("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("screenshot base64")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One WebDriver call (HTTP/1.1, `Connection: close`).
fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(COMMAND_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    s.write_all(body.as_bytes()).map_err(|e| e.to_string())?;
    // Read the head, then exactly Content-Length bytes (chromedriver may
    // keep the connection open), or to EOF for chunked / unframed bodies.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let split = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before a response head".into());
        }
        raw.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut body = raw[split + 4..].to_vec();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(len) => {
            while body.len() < len {
                let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        None => {
            s.read_to_end(&mut body).map_err(|e| e.to_string())?;
        }
    }
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    serde_json::from_slice(&body).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&body)))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..i])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = i + 2;
        let end = (start + size).min(b.len());
        out.extend_from_slice(&b[start..end]);
        b = &b[(end + 2).min(b.len())..];
    }
    out
}
