//! Integration-test harness shared by every file in `tests/`.
//!
//! - `edge`: spawns `ringress edge` in a tempdir and owns its lifetime.
//! - `upstream`: a std-thread upstream that records what the edge forwarded.
//! - `client`: a raw-socket HTTP/1.1 client.
//! - `h2raw`: raw HTTP/2 frames over TLS for hostile-client tests.
//! - `oidc`: a real OpenID provider (npm oidc-provider) for login tests.
//! - `browser`: headless Chromium through chromedriver (WebDriver), for web pages.
//! - `sdk`: the ngrok Python SDK forwarding a port (tests/sdk/forward.py).
//! - `upgrade`: `ringress edge --upgrade` and the successor it starts.
//!
//! Everything binds or connects to 127.0.0.1 only, and every wait is bounded.
#![allow(dead_code)]

pub mod agent;
pub mod api;
pub mod browser;
pub mod client;
pub mod edge;
pub mod h2raw;
pub mod oidc;
pub mod pebble;
pub mod sdk;
pub mod tls;
pub mod upgrade;
pub mod upstream;

use std::fs::{self, File};
use std::io::{self, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use client::{get, send_request, Client, ConnState, Response};
#[allow(unused_imports)]
pub use edge::{run_ringress, Edge, RunOutput};
#[allow(unused_imports)]
pub use upstream::{write_head, write_response, Behaviour, RecordedRequest, Upstream};

/// Header fields as (name, value) pairs, in wire order.
pub type Fields = Vec<(String, String)>;

/// Trailer fields and the raw trailer section of a chunked body.
pub type Trailers = (Fields, Vec<u8>);

/// The Host most tests route on.
pub const APP_HOST: &str = "app.example.com";

/// A port that was free a moment ago on 127.0.0.1.
///
/// Picked at random below the kernel's ephemeral range
/// (`ip_local_port_range`), not with `bind(:0)`: a port from the ephemeral
/// range can be taken by any test's outgoing connection before the edge
/// binds it (seen as "Address already in use" under a loaded suite).
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(0);
    if low > 12_000 {
        let span = 10_000u32;
        let base = low - span - 1_000;
        for _ in 0..200 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            h.write_u32(std::process::id());
            let port = (base + (h.finish() % u64::from(span)) as u32) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Removes ANSI escape sequences (colours) from log text.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// First value of a header (case-insensitive).
pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// All values of a header (case-insensitive), in order.
pub fn find_headers<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

// ---------------------------------------------------------------- configs

/// An `[[endpoints]]` entry forwarding `url` to `upstream`.
pub fn endpoint(url: &str, upstream: &str) -> String {
    format!("[[endpoints]]\nurl = \"{url}\"\nupstream = \"{upstream}\"\n\n")
}

/// An `[[endpoints]]` entry answering with a custom response. `headers` are
/// TOML inline-table pairs, e.g. `content-type = "text/plain"`.
pub fn custom_response_endpoint(url: &str, status: u16, body: &str, headers: &str) -> String {
    format!(
        "[[endpoints]]\nurl = \"{url}\"\ntraffic_policy = {{ on_http_request = [ {{ actions = [ {{ type = \"custom-response\", config = {{ status_code = {status}, body = \"{body}\", headers = {{ {headers} }} }} }} ] }} ] }}\n\n"
    )
}

/// `[timeouts]` with the given `key = "value"` lines.
pub fn timeouts(lines: &[(&str, &str)]) -> String {
    let mut s = String::from("[timeouts]\n");
    for (k, v) in lines {
        s.push_str(&format!("{k} = \"{v}\"\n"));
    }
    s.push('\n');
    s
}

/// One echo upstream behind `http://app.example.com`, plus extra config.
pub fn app_config(upstream: &Upstream, extra: &str) -> String {
    format!(
        "{extra}\n{}",
        endpoint(&format!("http://{APP_HOST}"), &upstream.url())
    )
}

// ---------------------------------------------------------------- asserts

/// Asserts an edge-made error: status, `ngrok-error-code` header and the
/// code in the body.
pub fn assert_edge_error(resp: &Response, status: u16, code: &str) {
    assert_eq!(
        resp.status,
        status,
        "status; head:\n{}",
        String::from_utf8_lossy(&resp.raw_head)
    );
    assert_eq!(
        resp.header("ngrok-error-code"),
        Some(code),
        "ngrok-error-code header; head:\n{}",
        String::from_utf8_lossy(&resp.raw_head)
    );
    assert!(
        resp.text().contains(code),
        "error page body should name {code}; body: {:?}",
        resp.text()
    );
}

/// Asserts the upstream neither accepted a connection nor read a request.
pub fn assert_upstream_untouched(up: &Upstream) {
    // Give a misbehaving edge a moment to forward.
    thread::sleep(Duration::from_millis(150));
    assert_eq!(up.request_count(), 0, "upstream must receive no request");
    assert_eq!(up.accepted(), 0, "upstream must receive no connection");
}

// ---------------------------------------------------------------- bodies

/// A streaming, split-invariant 64-bit digest (not cryptographic).
#[derive(Clone, Debug)]
pub struct Digest {
    h: u64,
    len: u64,
    pending: [u8; 8],
    npending: usize,
}

impl Default for Digest {
    fn default() -> Self {
        Digest::new()
    }
}

impl Digest {
    pub fn new() -> Digest {
        Digest {
            h: 0xcbf2_9ce4_8422_2325,
            len: 0,
            pending: [0; 8],
            npending: 0,
        }
    }

    fn mix(&mut self, w: u64) {
        self.h = (self.h ^ w)
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(29);
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.npending > 0 {
            let take = (8 - self.npending).min(data.len());
            self.pending[self.npending..self.npending + take].copy_from_slice(&data[..take]);
            self.npending += take;
            data = &data[take..];
            if self.npending < 8 {
                return;
            }
            let w = u64::from_le_bytes(self.pending);
            self.mix(w);
            self.npending = 0;
        }
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.mix(w);
        }
        let rest = chunks.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.npending = rest.len();
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn hex(&self) -> String {
        let mut h = self.h;
        for b in &self.pending[..self.npending] {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= self.len;
        format!("{h:016x}")
    }

    /// Digest of a whole slice.
    pub fn of(data: &[u8]) -> String {
        let mut d = Digest::new();
        d.update(data);
        d.hex()
    }
}

/// A deterministic pseudo-random byte stream, served in blocks of an odd
/// size so they never line up with anyone's buffers.
pub struct Pattern {
    block: Vec<u8>,
}

impl Default for Pattern {
    fn default() -> Self {
        Pattern::new()
    }
}

impl Pattern {
    pub const BLOCK: usize = (1 << 20) + 7;

    pub fn new() -> Pattern {
        let mut block = Vec::with_capacity(Self::BLOCK + 8);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        while block.len() < Self::BLOCK {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            block.extend_from_slice(&x.to_le_bytes());
        }
        block.truncate(Self::BLOCK);
        Pattern { block }
    }

    /// Calls `f` with consecutive slices totalling `len` bytes.
    pub fn for_each(&self, len: u64, mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        let mut remaining = len;
        while remaining > 0 {
            let n = remaining.min(Self::BLOCK as u64) as usize;
            // Sub-slices of 64 KiB + a bit so writes are of ordinary size.
            for piece in self.block[..n].chunks(65_543) {
                f(piece)?;
            }
            remaining -= n as u64;
        }
        Ok(())
    }

    /// Digest hex and length of the first `len` bytes.
    pub fn digest(&self, len: u64) -> String {
        let mut d = Digest::new();
        self.for_each(len, |b| {
            d.update(b);
            Ok(())
        })
        .expect("infallible");
        d.hex()
    }

    /// Writes the first `len` bytes.
    pub fn write_to(&self, w: &mut impl Write, len: u64) -> io::Result<()> {
        self.for_each(len, |b| w.write_all(b))
    }

    /// Writes the first `len` bytes as chunks, then the last chunk.
    pub fn write_chunked(&self, w: &mut impl Write, len: u64) -> io::Result<()> {
        self.for_each(len, |b| {
            w.write_all(format!("{:x}\r\n", b.len()).as_bytes())?;
            w.write_all(b)?;
            w.write_all(b"\r\n")
        })?;
        w.write_all(b"0\r\n\r\n")
    }
}

// ---------------------------------------------------------------- processes

/// Output of a finished external command.
pub fn run_command(mut cmd: Command, timeout: Duration) -> RunOutput {
    let dir = tempfile::Builder::new()
        .prefix("ringress-cmd-")
        .tempdir()
        .expect("tempdir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"));
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&fs::read(&err_path).unwrap_or_default())
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    RunOutput {
        status,
        stdout: String::from_utf8_lossy(&fs::read(&out_path).unwrap_or_default()).into_owned(),
        stderr: strip_ansi(&String::from_utf8_lossy(
            &fs::read(&err_path).unwrap_or_default(),
        )),
    }
}

/// Finds an executable on `PATH` (or an absolute path).
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = Path::new(name);
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// An external tool a test needs. Missing: skip (with a printed reason)
/// outside CI, fail when the `CI` env var is set.
pub fn require_tool(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(p) = candidates.iter().find_map(|c| which(c)) {
        return Some(p);
    }
    let msg =
        format!("{name} is not installed (looked for {candidates:?}); scripts/test.sh installs it");
    if std::env::var_os("CI").is_some() {
        panic!("{msg}; CI is set, so this test must not be skipped");
    }
    // Written to the real stderr, not through the test harness's capture,
    // so the skip shows in a passing run.
    let _ = writeln!(io::stderr(), "SKIPPED: {msg}");
    None
}
