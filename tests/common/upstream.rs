//! A test upstream on std threads and `std::net`: no async runtime.
//!
//! Owns: a listener on 127.0.0.1:0, one thread per accepted connection, and a
//! record of every request it fully read (head, decoded body, trailers),
//! and of every byte each connection received (for the smuggling tests,
//! which parse those bytes again on their own).
//! Never answers anything but what its `Behaviour` says, so tests can feed the
//! edge malformed, oversized or slow responses.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{find_header, find_headers, Digest, Pattern, Trailers};

/// Upstream socket timeout: generous, but bounded.
const UPSTREAM_IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request head the upstream accepts.
const MAX_HEAD: usize = 8 << 20;

/// A handler gets the request it just read and the connection; it writes the
/// response itself and returns whether to keep the connection open.
pub type HandlerFn = dyn Fn(&RecordedRequest, &mut TcpStream) -> io::Result<bool> + Send + Sync;

/// What the upstream does with each request.
#[derive(Clone)]
pub enum Behaviour {
    /// 200, body = the request head as received followed by the decoded body;
    /// keep-alive; HEAD gets the headers only. Adds `x-upstream-port`.
    Echo,
    /// Writes these bytes verbatim for each request, keeps the connection open.
    Fixed(Vec<u8>),
    /// Writes these bytes verbatim, then closes the connection.
    FixedThenClose(Vec<u8>),
    /// Accepts and reads, never answers.
    Silent,
    /// WebSocket echo server (tungstenite); the handshake request is recorded.
    WebSocketEcho,
    /// Streams the request body into a digest without storing it and answers
    /// 200 with body `len=N digest=HEX`.
    BodyDigest,
    /// Answers 200 with `len` bytes of `Pattern`, chunked or with Content-Length.
    Stream { len: u64, chunked: bool },
    /// Custom handler.
    Handler(Arc<HandlerFn>),
}

impl Behaviour {
    /// `Fixed` from a string.
    pub fn fixed(s: &str) -> Behaviour {
        Behaviour::Fixed(s.as_bytes().to_vec())
    }

    /// `FixedThenClose` from a string.
    pub fn fixed_then_close(s: &str) -> Behaviour {
        Behaviour::FixedThenClose(s.as_bytes().to_vec())
    }

    /// A custom handler.
    pub fn handler<F>(f: F) -> Behaviour
    where
        F: Fn(&RecordedRequest, &mut TcpStream) -> io::Result<bool> + Send + Sync + 'static,
    {
        Behaviour::Handler(Arc::new(f))
    }

    /// Sleeps `delay`, then answers 200 with `body`.
    pub fn delayed(delay: Duration, body: &'static str) -> Behaviour {
        Behaviour::handler(move |_req, stream| {
            thread::sleep(delay);
            write_response(stream, 200, &[], body.as_bytes())?;
            Ok(true)
        })
    }
}

/// One request as the upstream read it.
#[derive(Clone, Debug, Default)]
pub struct RecordedRequest {
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    /// Head bytes as received, request line through the blank line.
    pub raw_head: Vec<u8>,
    /// Decoded body (empty for `BodyDigest`).
    pub body: Vec<u8>,
    /// Decoded body length.
    pub body_len: u64,
    /// `Digest` of the decoded body, hex.
    pub body_digest: String,
    /// Whether the body was chunked on the wire.
    pub chunked: bool,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
    /// Trailer section bytes as received (without the final CRLF).
    pub raw_trailers: Vec<u8>,
    /// Index of the upstream connection that carried it (0-based accept order).
    pub conn_id: usize,
}

impl RecordedRequest {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// All values of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        find_headers(&self.headers, name)
    }

    /// Head as text.
    pub fn head_text(&self) -> String {
        String::from_utf8_lossy(&self.raw_head).into_owned()
    }
}

struct State {
    behaviour: Behaviour,
    port: u16,
    stop: AtomicBool,
    accepted: AtomicUsize,
    requests: Mutex<Vec<RecordedRequest>>,
    /// Bytes received, per connection (index = `conn_id`).
    raw: Mutex<Vec<Vec<u8>>>,
    changed: Condvar,
    streams: Mutex<Vec<TcpStream>>,
}

/// A running test upstream; stops and closes every connection on drop.
pub struct Upstream {
    addr: SocketAddr,
    state: Arc<State>,
    accept_thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Listens on 127.0.0.1:0 and serves `behaviour`.
    pub fn start(behaviour: Behaviour) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(State {
            behaviour,
            port: addr.port(),
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            raw: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            streams: Mutex::new(Vec::new()),
        });
        let st = Arc::clone(&state);
        let accept_thread = thread::Builder::new()
            .name(format!("upstream-{}", addr.port()))
            .spawn(move || accept_loop(listener, st))
            .expect("spawn upstream");
        Upstream {
            addr,
            state,
            accept_thread: Some(accept_thread),
        }
    }

    /// Listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, for an endpoint's `upstream`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Requests fully read so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// Number of requests fully read so far.
    pub fn request_count(&self) -> usize {
        self.state.requests.lock().expect("lock").len()
    }

    /// Every byte each connection received so far, in accept order
    /// (request-reading behaviours only: not `Silent` or `WebSocketEcho`).
    pub fn raw_received(&self) -> Vec<Vec<u8>> {
        self.state.raw.lock().expect("lock").clone()
    }

    /// The most recent request; panics if there is none.
    pub fn last_request(&self) -> RecordedRequest {
        self.requests().pop().expect("upstream received no request")
    }

    /// Waits until at least `n` requests were read; returns them all.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.state.requests.lock().expect("lock");
        while guard.len() < n {
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "upstream got {} request(s) within {timeout:?}, wanted {n}",
                    guard.len()
                );
            }
            guard = self
                .state
                .changed
                .wait_timeout(guard, deadline - now)
                .expect("wait")
                .0;
        }
        guard.clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500));
        for s in self.state.streams.lock().expect("lock").iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, state: Arc<State>) {
    for stream in listener.incoming() {
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let conn_id = state.accepted.fetch_add(1, Ordering::SeqCst);
        if let Ok(clone) = stream.try_clone() {
            state.streams.lock().expect("lock").push(clone);
        }
        let st = Arc::clone(&state);
        let _ = thread::Builder::new()
            .name(format!("upstream-conn-{conn_id}"))
            .spawn(move || serve_conn(st, stream, conn_id));
    }
}

fn record(state: &State, req: RecordedRequest) {
    state.requests.lock().expect("lock").push(req);
    state.changed.notify_all();
}

fn serve_conn(state: Arc<State>, stream: TcpStream, conn_id: usize) {
    // `state.streams` holds a clone of this socket, so dropping `stream` would
    // not close it: shut it down explicitly when the connection is done.
    let Ok(own) = stream.try_clone() else { return };
    serve(&state, stream, conn_id);
    let _ = own.shutdown(Shutdown::Both);
}

fn serve(state: &Arc<State>, mut stream: TcpStream, conn_id: usize) {
    let _ = stream.set_read_timeout(Some(UPSTREAM_IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(UPSTREAM_IO_TIMEOUT));
    let _ = stream.set_nodelay(true);
    match &state.behaviour {
        Behaviour::Silent => {
            let mut buf = [0u8; 16 * 1024];
            while !state.stop.load(Ordering::SeqCst) {
                match stream.read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => return,
                }
            }
            return;
        }
        Behaviour::WebSocketEcho => {
            websocket_echo(state, stream, conn_id);
            return;
        }
        _ => {}
    }
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let tee = Tee {
        inner: read_half,
        state: Arc::clone(state),
        conn_id,
    };
    let mut reader = BufReader::with_capacity(64 * 1024, tee);
    let store_body = !matches!(state.behaviour, Behaviour::BodyDigest);
    loop {
        let req = match read_request(&mut reader, store_body) {
            Ok(Some(mut r)) => {
                r.conn_id = conn_id;
                r
            }
            Ok(None) | Err(_) => return,
        };
        record(state, req.clone());
        let keep = match respond(state, &req, &mut stream) {
            Ok(k) => k,
            Err(_) => return,
        };
        let wants_close = req
            .header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"));
        if !keep || wants_close {
            let _ = stream.flush();
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Reads from the connection and appends what it read to `State::raw`.
struct Tee {
    inner: TcpStream,
    state: Arc<State>,
    conn_id: usize,
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut raw = self.state.raw.lock().expect("lock");
        if raw.len() <= self.conn_id {
            raw.resize(self.conn_id + 1, Vec::new());
        }
        raw[self.conn_id].extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

fn respond(state: &State, req: &RecordedRequest, stream: &mut TcpStream) -> io::Result<bool> {
    match &state.behaviour {
        Behaviour::Echo => {
            let mut body = req.raw_head.clone();
            body.extend_from_slice(&req.body);
            let port = state.port.to_string();
            let headers = [
                ("content-type", "text/plain"),
                ("x-upstream-port", port.as_str()),
            ];
            if req.method == "HEAD" {
                write_head(stream, 200, &headers, Some(body.len() as u64))?;
            } else {
                write_response(stream, 200, &headers, &body)?;
            }
            Ok(true)
        }
        Behaviour::Fixed(bytes) => {
            stream.write_all(bytes)?;
            Ok(true)
        }
        Behaviour::FixedThenClose(bytes) => {
            stream.write_all(bytes)?;
            Ok(false)
        }
        Behaviour::BodyDigest => {
            let body = format!("len={} digest={}", req.body_len, req.body_digest);
            write_response(
                stream,
                200,
                &[("content-type", "text/plain")],
                body.as_bytes(),
            )?;
            Ok(true)
        }
        Behaviour::Stream { len, chunked } => {
            if *chunked {
                stream.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: application/octet-stream\r\n\r\n")?;
                Pattern::new().write_chunked(stream, *len)?;
            } else {
                write_head(
                    stream,
                    200,
                    &[("content-type", "application/octet-stream")],
                    Some(*len),
                )?;
                Pattern::new().write_to(stream, *len)?;
            }
            stream.flush()?;
            Ok(true)
        }
        Behaviour::Handler(f) => f(req, stream),
        Behaviour::Silent | Behaviour::WebSocketEcho => Ok(false),
    }
}

/// Writes a status line and headers; adds `content-length` when given.
pub fn write_head(
    stream: &mut impl Write,
    status: u16,
    headers: &[(&str, &str)],
    content_length: Option<u64>,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(n) = content_length {
        head.push_str(&format!("content-length: {n}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())
}

/// Writes a complete response with `content-length`.
pub fn write_response(
    stream: &mut impl Write,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let mut out = Vec::with_capacity(body.len() + 256);
    write_head(&mut out, status, headers, Some(body.len() as u64))?;
    out.extend_from_slice(body);
    stream.write_all(&out)?;
    stream.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        _ => "Whatever",
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_line_limited(
    reader: &mut impl BufRead,
    out: &mut Vec<u8>,
    limit: usize,
) -> io::Result<usize> {
    let n = reader.take(limit as u64).read_until(b'\n', out)?;
    Ok(n)
}

/// Reads one request. `Ok(None)` on a clean EOF before any byte.
pub fn read_request(
    reader: &mut impl BufRead,
    store_body: bool,
) -> io::Result<Option<RecordedRequest>> {
    let mut raw_head = Vec::new();
    let n = read_line_limited(reader, &mut raw_head, MAX_HEAD)?;
    if n == 0 {
        return Ok(None);
    }
    loop {
        if raw_head.len() > MAX_HEAD {
            return Err(bad("request head too large"));
        }
        if raw_head.ends_with(b"\r\n\r\n") || raw_head == b"\r\n" {
            break;
        }
        if !raw_head.ends_with(b"\n") {
            return Err(bad("eof in head"));
        }
        let n = read_line_limited(reader, &mut raw_head, MAX_HEAD)?;
        if n == 0 {
            return Err(bad("eof in head"));
        }
    }
    let text = String::from_utf8_lossy(&raw_head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.splitn(3, ' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let version = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| bad("header without colon"))?;
        headers.push((k.to_string(), v.trim().to_string()));
    }
    let mut req = RecordedRequest {
        method,
        target,
        version,
        headers,
        raw_head,
        ..Default::default()
    };
    let mut digest = Digest::new();
    let te = req
        .header_all("transfer-encoding")
        .join(",")
        .to_ascii_lowercase();
    if te.trim().ends_with("chunked") {
        req.chunked = true;
        let mut body = Vec::new();
        let (trailers, raw_trailers) = read_chunked(reader, &mut |chunk: &[u8]| {
            digest.update(chunk);
            if store_body {
                body.extend_from_slice(chunk);
            }
        })?;
        req.body = body;
        req.trailers = trailers;
        req.raw_trailers = raw_trailers;
    } else if let Some(cl) = req.header("content-length") {
        let len: u64 = cl.trim().parse().map_err(|_| bad("bad content-length"))?;
        let mut remaining = len;
        let mut buf = vec![0u8; 64 * 1024];
        while remaining > 0 {
            let want = remaining.min(buf.len() as u64) as usize;
            let n = reader.read(&mut buf[..want])?;
            if n == 0 {
                return Err(bad("eof in body"));
            }
            digest.update(&buf[..n]);
            if store_body {
                req.body.extend_from_slice(&buf[..n]);
            }
            remaining -= n as u64;
        }
    }
    req.body_len = digest.len();
    req.body_digest = digest.hex();
    Ok(Some(req))
}

/// Reads a chunked body from `reader`, passing decoded data to `sink`.
/// Returns the trailer fields and the raw trailer section (without the
/// final CRLF).
pub fn read_chunked(
    reader: &mut impl BufRead,
    sink: &mut dyn FnMut(&[u8]),
) -> io::Result<Trailers> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut line = Vec::new();
        if read_line_limited(reader, &mut line, 4096)? == 0 {
            return Err(bad("eof in chunk size"));
        }
        let text = String::from_utf8_lossy(&line);
        let size_str = text.trim_end_matches(['\r', '\n']);
        let size_str = size_str.split(';').next().unwrap_or_default().trim();
        let size = u64::from_str_radix(size_str, 16).map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            let mut raw = Vec::new();
            let mut fields = Vec::new();
            loop {
                let mut l = Vec::new();
                if read_line_limited(reader, &mut l, 64 * 1024)? == 0 {
                    return Err(bad("eof in trailers"));
                }
                if l == b"\r\n" || l == b"\n" {
                    return Ok((fields, raw));
                }
                raw.extend_from_slice(&l);
                let t = String::from_utf8_lossy(&l);
                let t = t.trim_end_matches(['\r', '\n']);
                if let Some((k, v)) = t.split_once(':') {
                    fields.push((k.to_string(), v.trim().to_string()));
                }
            }
        }
        let mut remaining = size;
        while remaining > 0 {
            let want = remaining.min(buf.len() as u64) as usize;
            let n = reader.read(&mut buf[..want])?;
            if n == 0 {
                return Err(bad("eof in chunk data"));
            }
            sink(&buf[..n]);
            remaining -= n as u64;
        }
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(bad("chunk data not followed by CRLF"));
        }
    }
}

// tungstenite's handshake error type is large; that is its API, not ours.
#[allow(clippy::result_large_err)]
fn websocket_echo(state: &State, stream: TcpStream, conn_id: usize) {
    use tungstenite::handshake::server::{Request, Response};
    let seen: Arc<Mutex<Option<RecordedRequest>>> = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&seen);
    let callback = move |req: &Request, resp: Response| {
        let mut head = format!("{} {} {:?}\r\n", req.method(), req.uri(), req.version());
        let mut headers = Vec::new();
        for (k, v) in req.headers() {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            head.push_str(&format!("{k}: {v}\r\n"));
            headers.push((k.as_str().to_string(), v));
        }
        head.push_str("\r\n");
        *slot.lock().expect("lock") = Some(RecordedRequest {
            method: req.method().to_string(),
            target: req.uri().to_string(),
            version: format!("{:?}", req.version()),
            headers,
            raw_head: head.into_bytes(),
            conn_id,
            ..Default::default()
        });
        Ok(resp)
    };
    let ws = tungstenite::accept_hdr(stream, callback);
    let req = seen.lock().expect("lock").take();
    if let Some(req) = req {
        record(state, req);
    }
    let Ok(mut ws) = ws else { return };
    loop {
        match ws.read() {
            Ok(msg) if msg.is_text() || msg.is_binary() => {
                if ws.send(msg).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}
