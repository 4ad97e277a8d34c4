//! A blocking HTTP/1.1 client connection: sends one request, reads one whole response
//! and discards its body (Content-Length, chunked with trailers, close-delimited, 1xx,
//! 204/304). Owns nothing but its socket and read buffer; never pipelines.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Largest response head (or chunk-size/trailer line) buffered before giving up.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;

pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(Conn {
        stream,
        buf: Vec::with_capacity(READ_CHUNK),
        pos: 0,
    })
}

pub struct Conn {
    stream: TcpStream,
    /// Received bytes; `buf[pos..]` is not consumed yet.
    buf: Vec<u8>,
    pos: usize,
}

pub struct Reply {
    pub status: u16,
    pub reusable: bool,
}

enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

fn proto_err(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Conn {
    /// Sends one request and reads one complete response (body discarded).
    pub fn exchange(&mut self, request: &[u8]) -> io::Result<Reply> {
        self.stream.write_all(request)?;
        loop {
            let (status, framing, close) = self.read_head()?;
            if (100..200).contains(&status) && status != 101 {
                continue; // interim response: the real one follows
            }
            let reusable = match framing {
                Framing::None => !close,
                Framing::Length(n) => {
                    self.skip(n)?;
                    !close
                }
                Framing::Chunked => {
                    self.skip_chunked()?;
                    !close
                }
                Framing::UntilClose => {
                    self.skip_to_eof()?;
                    false
                }
            };
            return Ok(Reply { status, reusable });
        }
    }

    fn read_head(&mut self) -> io::Result<(u16, Framing, bool)> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf[self.pos..]) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    let mut close = resp.version == Some(0);
                    let mut length = None;
                    let mut chunked = false;
                    for h in resp.headers.iter() {
                        let value = String::from_utf8_lossy(h.value);
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let n: u64 = value
                                .trim()
                                .parse()
                                .map_err(|_| proto_err("bad Content-Length"))?;
                            if length.is_some_and(|old| old != n) {
                                return Err(proto_err("conflicting Content-Length"));
                            }
                            length = Some(n);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = value
                                .rsplit(',')
                                .next()
                                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close |= value
                                .split(',')
                                .any(|t| t.trim().eq_ignore_ascii_case("close"));
                        }
                    }
                    self.pos += n;
                    let framing = if status == 204 || status == 304 || (100..200).contains(&status)
                    {
                        Framing::None
                    } else if chunked {
                        Framing::Chunked
                    } else if let Some(n) = length {
                        Framing::Length(n)
                    } else {
                        Framing::UntilClose
                    };
                    return Ok((status, framing, close));
                }
                Ok(httparse::Status::Partial) => {
                    if self.buf.len() - self.pos > MAX_HEAD_BYTES {
                        return Err(proto_err("response head too large"));
                    }
                    self.fill()?;
                }
                Err(e) => return Err(proto_err(format!("bad response head: {e}"))),
            }
        }
    }

    /// Reads more bytes after the unconsumed ones; EOF is an error here.
    fn fill(&mut self) -> io::Result<()> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let n = match self.stream.read(&mut self.buf[old..]) {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(old);
                return Err(e);
            }
        };
        self.buf.truncate(old + n);
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection mid-response",
            ));
        }
        Ok(())
    }

    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        loop {
            let avail = (self.buf.len() - self.pos) as u64;
            let take = avail.min(n);
            self.pos += take as usize;
            n -= take;
            if n == 0 {
                return Ok(());
            }
            self.fill()?;
        }
    }

    /// Returns the next line (without CR LF) as a range of `buf`.
    fn line(&mut self) -> io::Result<std::ops::Range<usize>> {
        loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let start = self.pos;
                let mut end = start + i;
                if end > start && self.buf[end - 1] == b'\r' {
                    end -= 1;
                }
                self.pos = start + i + 1;
                return Ok(start..end);
            }
            if self.buf.len() - self.pos > MAX_HEAD_BYTES {
                return Err(proto_err("chunk line too long"));
            }
            self.fill()?;
        }
    }

    fn skip_chunked(&mut self) -> io::Result<()> {
        loop {
            let range = self.line()?;
            let line = &self.buf[range];
            let hex = line.split(|&b| b == b';').next().unwrap_or_default();
            let hex = std::str::from_utf8(hex)
                .map_err(|_| proto_err("bad chunk size"))?
                .trim();
            let size = u64::from_str_radix(hex, 16).map_err(|_| proto_err("bad chunk size"))?;
            if size == 0 {
                // Trailers, then the empty line.
                while !self.line()?.is_empty() {}
                return Ok(());
            }
            self.skip(size)?;
            if !self.line()?.is_empty() {
                return Err(proto_err("missing CRLF after chunk"));
            }
        }
    }

    fn skip_to_eof(&mut self) -> io::Result<()> {
        loop {
            match self.fill() {
                Ok(()) => self.pos = self.buf.len(),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves `replies` in order on one connection, one per request head received.
    fn serve(replies: &'static [&'static [u8]]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 4096];
            for reply in replies {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let n = s.read(&mut buf).expect("read");
                    assert!(n > 0, "client closed early");
                    head.extend_from_slice(&buf[..n]);
                }
                s.write_all(reply).expect("write");
            }
        });
        addr
    }

    #[test]
    fn reads_each_framing_and_keeps_the_connection() {
        let addr = serve(&[
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nTrailer: t\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        ]);
        let mut c = connect(addr, Duration::from_secs(5)).expect("connect");
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let statuses: Vec<(u16, bool)> = (0..4)
            .map(|_| {
                c.exchange(req)
                    .map(|r| (r.status, r.reusable))
                    .expect("exchange")
            })
            .collect();
        assert_eq!(
            statuses,
            [(200, true), (201, true), (204, true), (404, false)]
        );
    }

    #[test]
    fn close_delimited_body_ends_the_connection() {
        let addr = serve(&[b"HTTP/1.1 200 OK\r\n\r\nuntil close"]);
        let mut c = connect(addr, Duration::from_secs(5)).expect("connect");
        let r = c
            .exchange(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("exchange");
        assert_eq!((r.status, r.reusable), (200, false));
    }
}
