//! A raw-socket HTTP/1.1 client for driving the edge byte by byte.
//!
//! Owns: one `TcpStream` with timeouts and a buffer of bytes read but not yet
//! consumed (so pipelined responses parse one after another). It never fixes
//! up what the server sends: framing errors are returned, not papered over.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{find_header, find_headers, Trailers};

/// Default timeout for every client socket operation.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_RESPONSE_HEAD: usize = 4 << 20;

/// A parsed response.
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    /// Head bytes as received.
    pub raw_head: Vec<u8>,
    /// Decoded body (empty when streamed to a sink).
    pub body: Vec<u8>,
    /// Decoded body length.
    pub body_len: u64,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
    /// Trailer section as received (without the final CRLF).
    pub raw_trailers: Vec<u8>,
    /// Statuses of 1xx responses received before this one.
    pub informational: Vec<u16>,
    /// The body was delimited by the connection closing.
    pub close_delimited: bool,
}

impl Response {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// All values of a header.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        find_headers(&self.headers, name)
    }

    /// Body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether a `Connection` header lists `close`.
    pub fn connection_close(&self) -> bool {
        self.header_all("connection")
            .iter()
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }

    /// Whether `Transfer-Encoding` ends in chunked.
    pub fn is_chunked(&self) -> bool {
        self.header_all("transfer-encoding")
            .join(",")
            .to_ascii_lowercase()
            .trim()
            .ends_with("chunked")
    }
}

/// What happened to a connection while waiting.
#[derive(Debug, PartialEq, Eq)]
pub enum ConnState {
    /// EOF or reset; carries bytes that arrived before it.
    Closed(Vec<u8>),
    /// Still open after the wait; carries bytes that arrived meanwhile.
    Open(Vec<u8>),
}

/// A client connection.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Client {
    /// Connects with `IO_TIMEOUT` on connect, read and write.
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    /// Connects, returning the error.
    pub fn try_connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::new(),
            eof: false,
        })
    }

    /// Wraps an existing stream (timeouts set as in `connect`).
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        Client {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// The socket, for writing large bodies directly.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// The socket, e.g. to hand it to tungstenite. Bytes already buffered by
    /// this client are lost; check `buffered()` first.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Bytes read from the socket but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Sets the read timeout.
    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).expect("set timeout");
    }

    /// Writes all bytes.
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) -> io::Result<()> {
        self.stream.write_all(bytes.as_ref())?;
        self.stream.flush()
    }

    /// Writes `bytes` from another thread (for big heads the server may
    /// reject before reading them all); the result is the write's.
    pub fn send_in_background(&self, bytes: Vec<u8>) -> JoinHandle<io::Result<()>> {
        let mut s = self.stream.try_clone().expect("clone stream");
        thread::spawn(move || {
            s.write_all(&bytes)?;
            s.flush()
        })
    }

    /// Half-closes the write side.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Sends `raw` and reads the response to it (`method` decides HEAD rules).
    pub fn roundtrip(&mut self, raw: impl AsRef<[u8]>) -> Response {
        let raw = raw.as_ref();
        let method = String::from_utf8_lossy(raw)
            .split(' ')
            .next()
            .unwrap_or("GET")
            .to_string();
        self.send(raw).expect("send request");
        self.read_response_to(&method)
            .unwrap_or_else(|e| panic!("reading response to {method}: {e}"))
    }

    /// `GET path` with this Host, keep-alive.
    pub fn get(&mut self, host: &str, path: &str) -> Response {
        self.roundtrip(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"))
    }

    fn fill(&mut self) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            self.eof = true;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn eof_error(&self, what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "connection closed {what}; had {} byte(s): {:?}",
                self.buf.len(),
                String::from_utf8_lossy(&self.buf[..self.buf.len().min(400)])
            ),
        )
    }

    /// Reads one response head (any status, including 1xx) and consumes it.
    pub fn read_head(&mut self) -> io::Result<Response> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                let raw_head: Vec<u8> = self.buf.drain(..pos + 4).collect();
                return parse_head(raw_head);
            }
            if self.buf.len() > MAX_RESPONSE_HEAD {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "response head too large",
                ));
            }
            if self.fill()? == 0 {
                return Err(self.eof_error("before a complete response head"));
            }
        }
    }

    /// Reads the final response to a GET-like request (skips 1xx but 101).
    pub fn read_response(&mut self) -> io::Result<Response> {
        self.read_response_to("GET")
    }

    /// Reads the final response to a request with this method.
    pub fn read_response_to(&mut self, method: &str) -> io::Result<Response> {
        let mut body = Vec::new();
        let mut resp =
            self.read_response_with(method, &mut |b: &[u8]| body.extend_from_slice(b))?;
        resp.body = body;
        Ok(resp)
    }

    /// Reads the final response, passing decoded body bytes to `sink`
    /// instead of storing them.
    pub fn read_response_with(
        &mut self,
        method: &str,
        sink: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Response> {
        let mut informational = Vec::new();
        let mut resp = loop {
            let r = self.read_head()?;
            if (100..200).contains(&r.status) && r.status != 101 {
                informational.push(r.status);
                continue;
            }
            break r;
        };
        resp.informational = informational;
        let bodiless = method.eq_ignore_ascii_case("HEAD")
            || resp.status == 204
            || resp.status == 304
            || (100..200).contains(&resp.status);
        if bodiless {
            return Ok(resp);
        }
        if resp.is_chunked() {
            let (trailers, raw) = self.read_chunked_body(sink, &mut resp.body_len)?;
            resp.trailers = trailers;
            resp.raw_trailers = raw;
        } else if let Some(cl) = resp.header("content-length") {
            let len: u64 = cl.trim().parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad content-length {cl:?}"),
                )
            })?;
            self.read_exact_body(len, sink)?;
            resp.body_len = len;
        } else {
            resp.close_delimited = true;
            loop {
                if !self.buf.is_empty() {
                    sink(&self.buf);
                    resp.body_len += self.buf.len() as u64;
                    self.buf.clear();
                }
                if self.fill()? == 0 {
                    break;
                }
            }
        }
        Ok(resp)
    }

    fn read_exact_body(&mut self, len: u64, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let mut remaining = len;
        while remaining > 0 {
            if self.buf.is_empty() && self.fill()? == 0 {
                return Err(self.eof_error(&format!("with {remaining} body byte(s) missing")));
            }
            let take = remaining.min(self.buf.len() as u64) as usize;
            sink(&self.buf[..take]);
            self.buf.drain(..take);
            remaining -= take as u64;
        }
        Ok(())
    }

    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n") {
                let mut line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                line.truncate(pos);
                return Ok(line);
            }
            if self.buf.len() > 64 * 1024 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            if self.fill()? == 0 {
                return Err(self.eof_error("in a chunked body line"));
            }
        }
    }

    fn read_chunked_body(
        &mut self,
        sink: &mut dyn FnMut(&[u8]),
        total: &mut u64,
    ) -> io::Result<Trailers> {
        loop {
            let line = self.read_line()?;
            let text = String::from_utf8_lossy(&line);
            let size_str = text.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(size_str, 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad chunk size {text:?}"),
                )
            })?;
            if size == 0 {
                let mut raw = Vec::new();
                let mut fields = Vec::new();
                loop {
                    let l = self.read_line()?;
                    if l.is_empty() {
                        return Ok((fields, raw));
                    }
                    raw.extend_from_slice(&l);
                    raw.extend_from_slice(b"\r\n");
                    let t = String::from_utf8_lossy(&l);
                    if let Some((k, v)) = t.split_once(':') {
                        fields.push((k.to_string(), v.trim().to_string()));
                    }
                }
            }
            self.read_exact_body(size, sink)?;
            *total += size;
            let crlf = self.read_line()?;
            if !crlf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "chunk data not followed by CRLF",
                ));
            }
        }
    }

    /// Reads everything until the server closes (bounded by the read timeout).
    pub fn read_to_close(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if self.fill()? == 0 {
                return Ok(std::mem::take(&mut self.buf));
            }
        }
    }

    /// Waits up to `timeout` for the server to close the connection. A reset
    /// counts as closed. Bytes that arrive meanwhile are returned.
    pub fn wait_closed(&mut self, timeout: Duration) -> ConnState {
        let deadline = Instant::now() + timeout;
        loop {
            if self.eof {
                return ConnState::Closed(std::mem::take(&mut self.buf));
            }
            let now = Instant::now();
            if now >= deadline {
                return ConnState::Open(std::mem::take(&mut self.buf));
            }
            let wait = (deadline - now).max(Duration::from_millis(1));
            self.stream.set_read_timeout(Some(wait)).expect("timeout");
            match self.fill() {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => {
                    self.eof = true;
                }
            }
            self.stream
                .set_read_timeout(Some(IO_TIMEOUT))
                .expect("timeout");
        }
    }

    /// Panics unless the server closes the connection within `timeout`
    /// without sending anything more.
    pub fn assert_closed(&mut self, timeout: Duration) {
        match self.wait_closed(timeout) {
            ConnState::Closed(extra) => assert!(
                extra.is_empty(),
                "unexpected bytes before close: {:?}",
                String::from_utf8_lossy(&extra)
            ),
            ConnState::Open(extra) => panic!(
                "connection still open after {timeout:?} (got {:?})",
                String::from_utf8_lossy(&extra)
            ),
        }
    }

    /// Panics if anything arrives (or the connection closes) within `wait`.
    pub fn assert_quiet(&mut self, wait: Duration) {
        match self.wait_closed(wait) {
            ConnState::Open(extra) => assert!(
                extra.is_empty(),
                "unexpected extra bytes: {:?}",
                String::from_utf8_lossy(&extra)
            ),
            ConnState::Closed(extra) => panic!(
                "connection closed unexpectedly (extra bytes {:?})",
                String::from_utf8_lossy(&extra)
            ),
        }
    }
}

fn parse_head(raw_head: Vec<u8>) -> io::Result<Response> {
    let text = String::from_utf8_lossy(&raw_head).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_string();
    let status: u16 = parts.next().unwrap_or_default().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad status line {status_line:?}"),
        )
    })?;
    if !version.starts_with("HTTP/") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad status line {status_line:?}"),
        ));
    }
    let reason = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (k, v) = line.split_once(':').ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad header line {line:?}"),
            )
        })?;
        headers.push((k.to_string(), v.trim().to_string()));
    }
    Ok(Response {
        version,
        status,
        reason,
        headers,
        raw_head,
        ..Default::default()
    })
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request on a fresh connection; panics on I/O errors.
pub fn send_request(addr: SocketAddr, raw: impl AsRef<[u8]>) -> Response {
    Client::connect(addr).roundtrip(raw)
}

/// `GET path` with this Host on a fresh connection.
pub fn get(addr: SocketAddr, host: &str, path: &str) -> Response {
    Client::connect(addr).get(host, path)
}
