//! The records a worker hands to the drainer, and their byte encoding.
//!
//! A worker writes each finished exchange (or closed connection) as one
//! length-prefixed frame into its own byte ring (`queue.rs`): fixed-size
//! fields, then the variable parts (endpoint URL, heads, captured bodies)
//! copied raw. Nothing is allocated on the worker; the drainer decodes a
//! frame into borrowed [`HttpRecord`] / [`TcpRecord`] views. Sans-IO.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::config::CaptureMode;

/// One finished HTTP exchange, borrowed from a frame (or built in tests).
#[derive(Debug, Clone)]
pub struct HttpRecord<'a> {
    pub endpoint: &'a str,
    pub scheme: &'static str,
    pub proto: &'static str,
    pub client: SocketAddr,
    pub server_port: u16,
    pub conn_start: SystemTime,
    pub start: SystemTime,
    pub duration: Duration,
    pub status: u16,
    pub req_head: &'a [u8],
    pub res_head: &'a [u8],
    pub req_body_len: u64,
    pub res_body_len: u64,
    pub error_code: Option<&'a str>,
    pub capture: CaptureMode,
    pub events: bool,
    pub req_body: &'a [u8],
    pub res_body: &'a [u8],
    pub req_body_truncated: bool,
    pub res_body_truncated: bool,
}

/// A closed client connection.
#[derive(Debug, Clone)]
pub struct TcpRecord<'a> {
    pub client: SocketAddr,
    pub server_port: u16,
    pub server_name: &'a str,
    pub start: SystemTime,
    pub end: SystemTime,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

#[derive(Debug, Clone)]
pub enum Record<'a> {
    Http(HttpRecord<'a>),
    Tcp(TcpRecord<'a>),
}

const KIND_HTTP: u8 = 1;
const KIND_TCP: u8 = 2;

/// The schemes and protocols a record can name (an index on the wire).
const NAMES: &[&str] = &["", "http", "https", "HTTP/1.1", "HTTP/2.0", "HTTP/1.0"];

fn name_index(s: &str) -> u8 {
    NAMES.iter().position(|n| *n == s).unwrap_or(0) as u8
}

fn name_of(i: u8) -> &'static str {
    NAMES.get(usize::from(i)).copied().unwrap_or("")
}

fn capture_code(c: CaptureMode) -> u8 {
    match c {
        CaptureMode::Off => 0,
        CaptureMode::Metadata => 1,
        CaptureMode::Full => 2,
    }
}

fn capture_of(b: u8) -> CaptureMode {
    match b {
        1 => CaptureMode::Metadata,
        2 => CaptureMode::Full,
        _ => CaptureMode::Off,
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_addr(out: &mut Vec<u8>, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    put_u16(out, a.port());
}

/// Appends one frame: a `u32` length (of what follows), then the record.
pub fn encode_http(out: &mut Vec<u8>, r: &HttpRecord<'_>) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(KIND_HTTP);
    out.push(name_index(r.scheme));
    out.push(name_index(r.proto));
    out.push(capture_code(r.capture));
    out.push(
        u8::from(r.events)
            | u8::from(r.req_body_truncated) << 1
            | u8::from(r.res_body_truncated) << 2,
    );
    put_addr(out, r.client);
    put_u16(out, r.server_port);
    put_u16(out, r.status);
    put_u64(out, nanos(r.conn_start));
    put_u64(out, nanos(r.start));
    put_u64(out, r.duration.as_nanos().min(u128::from(u64::MAX)) as u64);
    put_u64(out, r.req_body_len);
    put_u64(out, r.res_body_len);
    put_bytes(out, r.endpoint.as_bytes());
    put_bytes(out, r.error_code.unwrap_or("").as_bytes());
    put_bytes(out, r.req_head);
    put_bytes(out, r.res_head);
    put_bytes(out, r.req_body);
    put_bytes(out, r.res_body);
    finish_frame(out, at);
}

/// Appends one frame for a closed connection.
pub fn encode_tcp(out: &mut Vec<u8>, r: &TcpRecord<'_>) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(KIND_TCP);
    put_addr(out, r.client);
    put_u16(out, r.server_port);
    put_u64(out, nanos(r.start));
    put_u64(out, nanos(r.end));
    put_u64(out, r.bytes_in);
    put_u64(out, r.bytes_out);
    put_bytes(out, r.server_name.as_bytes());
    finish_frame(out, at);
}

fn finish_frame(out: &mut [u8], at: usize) {
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// The length of the frame starting at `b` (prefix included), once its
/// prefix is there.
pub fn frame_len(b: &[u8]) -> Option<usize> {
    let p: [u8; 4] = b.get(..4)?.try_into().ok()?;
    Some(4 + u32::from_le_bytes(p) as usize)
}

/// Reads a frame's fields in order; `None` past the end.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn time(&mut self) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_nanos(self.u64()?))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(n)
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    fn addr(&mut self) -> Option<SocketAddr> {
        let ip = match self.u8()? {
            4 => {
                let o: [u8; 4] = self.take(4)?.try_into().ok()?;
                IpAddr::V4(Ipv4Addr::from(o))
            }
            6 => {
                let o: [u8; 16] = self.take(16)?.try_into().ok()?;
                IpAddr::V6(Ipv6Addr::from(o))
            }
            _ => return None,
        };
        Some(SocketAddr::new(ip, self.u16()?))
    }
}

/// Decodes one whole frame (length prefix included). `None`: not a frame
/// this module wrote (the drainer skips it).
pub fn decode(frame: &[u8]) -> Option<Record<'_>> {
    let mut r = Reader { b: frame.get(4..)? };
    match r.u8()? {
        KIND_HTTP => {
            let scheme = name_of(r.u8()?);
            let proto = name_of(r.u8()?);
            let capture = capture_of(r.u8()?);
            let flags = r.u8()?;
            let client = r.addr()?;
            let server_port = r.u16()?;
            let status = r.u16()?;
            let conn_start = r.time()?;
            let start = r.time()?;
            let duration = Duration::from_nanos(r.u64()?);
            let req_body_len = r.u64()?;
            let res_body_len = r.u64()?;
            let endpoint = r.str()?;
            let error_code = Some(r.str()?).filter(|c| !c.is_empty());
            Some(Record::Http(HttpRecord {
                endpoint,
                scheme,
                proto,
                client,
                server_port,
                conn_start,
                start,
                duration,
                status,
                req_head: r.bytes()?,
                res_head: r.bytes()?,
                req_body_len,
                res_body_len,
                error_code,
                capture,
                events: flags & 1 != 0,
                req_body: r.bytes()?,
                res_body: r.bytes()?,
                req_body_truncated: flags & 2 != 0,
                res_body_truncated: flags & 4 != 0,
            }))
        }
        KIND_TCP => {
            let client = r.addr()?;
            let server_port = r.u16()?;
            let start = r.time()?;
            let end = r.time()?;
            let bytes_in = r.u64()?;
            let bytes_out = r.u64()?;
            Some(Record::Tcp(TcpRecord {
                client,
                server_port,
                server_name: r.str()?,
                start,
                end,
                bytes_in,
                bytes_out,
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn http() -> HttpRecord<'static> {
        HttpRecord {
            endpoint: "http://app.example.com",
            scheme: "http",
            proto: "HTTP/1.1",
            client: "127.0.0.1:5000".parse().unwrap(),
            server_port: 80,
            conn_start: UNIX_EPOCH,
            start: UNIX_EPOCH,
            duration: Duration::from_micros(1500),
            status: 201,
            req_head: b"POST /x?y=1 HTTP/1.1\r\nHost: app.example.com:8080\r\nUser-Agent: Curl/8\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
            res_head: b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n",
            req_body_len: 3,
            res_body_len: 2,
            error_code: None,
            capture: CaptureMode::Off,
            events: true,
            req_body: b"",
            res_body: b"",
            req_body_truncated: false,
            res_body_truncated: false,
        }
    }

    #[test]
    fn http_frames_round_trip() {
        let mut r = http();
        r.client = "[2001:db8::1]:443".parse().unwrap();
        r.scheme = "https";
        r.proto = "HTTP/2.0";
        r.capture = CaptureMode::Full;
        r.error_code = Some("ERR_NGROK_3004");
        r.req_body = b"abc";
        r.res_body_truncated = true;
        r.start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let mut buf = vec![9, 9];
        encode_http(&mut buf, &r);
        let frame = &buf[2..];
        assert_eq!(frame_len(frame), Some(frame.len()));
        let Some(Record::Http(d)) = decode(frame) else {
            panic!("not an http record")
        };
        assert_eq!(d.client, r.client);
        assert_eq!((d.scheme, d.proto), ("https", "HTTP/2.0"));
        assert_eq!(d.capture, CaptureMode::Full);
        assert_eq!(d.error_code, Some("ERR_NGROK_3004"));
        assert_eq!(d.req_head, r.req_head);
        assert_eq!(d.res_head, r.res_head);
        assert_eq!(d.req_body, b"abc");
        assert!(d.res_body_truncated && !d.req_body_truncated && d.events);
        assert_eq!((d.start, d.duration, d.status), (r.start, r.duration, 201));
        assert_eq!(d.endpoint, r.endpoint);
    }

    /// A connection record for tests.
    pub fn tcp() -> TcpRecord<'static> {
        TcpRecord {
            client: "10.0.0.1:9".parse().unwrap(),
            server_port: 443,
            server_name: "a.test",
            start: UNIX_EPOCH,
            end: UNIX_EPOCH + Duration::from_secs(3),
            bytes_in: 10,
            bytes_out: 20,
        }
    }

    #[test]
    fn tcp_frames_round_trip_and_garbage_is_refused() {
        let t = tcp();
        let mut buf = Vec::new();
        encode_tcp(&mut buf, &t);
        let Some(Record::Tcp(d)) = decode(&buf) else {
            panic!("not a tcp record")
        };
        assert_eq!((d.server_name, d.bytes_out, d.end), ("a.test", 20, t.end));
        for cut in 0..buf.len() {
            assert!(
                decode(&buf[..cut]).is_none(),
                "a frame cut at {cut} decoded"
            );
        }
        assert!(decode(&[1, 0, 0, 0, 7]).is_none());
        assert_eq!(frame_len(&[1, 0]), None);
    }
}
