//! Raw HTTP/2 over TLS (ALPN h2) for hostile-client tests: frames built by
//! hand, written without reading, and what the edge answered (GOAWAY code
//! or the end of the connection).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// One HTTP/2 frame.
pub fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The HPACK block of GET https://{authority}/: indexed :method GET,
/// :scheme https, :path /, and a literal :authority.
pub fn get_block(authority: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x87, 0x84, 0x01, authority.len() as u8];
    block.extend_from_slice(authority.as_bytes());
    block
}

/// HEADERS (END_STREAM | END_HEADERS) for GET https://{authority}/.
pub fn get(stream: u32, authority: &str) -> Vec<u8> {
    frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        stream,
        &get_block(authority),
    )
}

/// A TLS connection that negotiated h2, with the client preface and an
/// empty SETTINGS already sent.
pub struct H2Conn {
    pub tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

/// How a flood ended.
#[derive(Debug)]
pub struct Outcome {
    /// Bytes of flood written before the write side stopped.
    pub sent: usize,
    /// The edge stopped reading (a write blocked past the write timeout).
    pub write_blocked: bool,
    /// A write failed: the edge closed or reset the connection.
    pub write_failed: bool,
    /// The GOAWAY error code received, if any.
    pub goaway: Option<u32>,
    /// Frames read before GOAWAY or the end.
    pub frames_read: usize,
    /// The connection ended (EOF or reset) while reading.
    pub closed: bool,
    pub elapsed: Duration,
}

impl H2Conn {
    pub fn connect(addr: SocketAddr, ca: &Path, host: &str) -> H2Conn {
        let cfg = super::tls::client_config(ca, &[b"h2"]);
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).expect("name");
        let conn = rustls::ClientConnection::new(cfg, name).expect("tls client");
        let sock = TcpStream::connect(addr).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        sock.set_write_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let mut tls = rustls::StreamOwned::new(conn, sock);
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .expect("preface");
        tls.write_all(&frame(SETTINGS, 0, 0, &[]))
            .expect("settings");
        assert_eq!(tls.conn.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
        H2Conn { tls }
    }

    /// Writes `next()` chunks (without reading) until `budget` bytes, the
    /// time limit, a failed write or a blocked one; then reads frames until
    /// GOAWAY, the end of the connection, or `read_for`.
    pub fn flood(
        mut self,
        budget: usize,
        time_limit: Duration,
        read_for: Duration,
        mut next: impl FnMut() -> Vec<u8>,
    ) -> Outcome {
        let started = Instant::now();
        let mut out = Outcome {
            sent: 0,
            write_blocked: false,
            write_failed: false,
            goaway: None,
            frames_read: 0,
            closed: false,
            elapsed: Duration::ZERO,
        };
        while out.sent < budget && started.elapsed() < time_limit {
            let chunk = next();
            match self.tls.write_all(&chunk).and_then(|_| self.tls.flush()) {
                Ok(()) => out.sent += chunk.len(),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    out.write_blocked = true;
                    break;
                }
                Err(_) => {
                    out.write_failed = true;
                    break;
                }
            }
        }
        let _ = self.tls.sock.set_read_timeout(Some(Duration::from_secs(2)));
        let read_until = Instant::now() + read_for;
        let mut header = [0u8; 9];
        while Instant::now() < read_until {
            match self.tls.read_exact(&mut header) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => {
                    out.closed = true;
                    break;
                }
            }
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let mut payload = vec![0u8; len];
            if self.tls.read_exact(&mut payload).is_err() {
                out.closed = true;
                break;
            }
            out.frames_read += 1;
            if header[3] == GOAWAY && payload.len() >= 8 {
                out.goaway = Some(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
                break;
            }
        }
        out.elapsed = started.elapsed();
        out
    }
}

/// One GET over HTTPS with HTTP/1.1 on a new connection: the status and
/// how long it took.
pub fn https_get_h1(addr: SocketAddr, ca: &Path, host: &str, path: &str) -> (u16, Duration) {
    let started = Instant::now();
    let cfg = super::tls::client_config(ca, &[b"http/1.1"]);
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).expect("name");
    let conn = rustls::ClientConnection::new(cfg, name).expect("tls client");
    let sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if tls.write_all(req.as_bytes()).is_err() {
        return (0, started.elapsed());
    }
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, started.elapsed())
}
