//! Sans-IO capture of one proxied connection: the HTTP/1.1 bytes the edge
//! sends (requests) and the bytes written back (responses) are fed in as
//! they pass; request/response pairs come out as [`Event`]s.
//!
//! Owns: head parsing (the project's `http1` parser), keep-alive request
//! boundaries (the body framing scanner), teeing heads and bodies up to a
//! cap. Never: changes, delays or refuses a byte of what is forwarded. A
//! connection whose bytes stop making sense as HTTP (a parse error, an
//! upgrade to WebSocket) is simply no longer captured.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc::UnboundedSender;

use crate::http1::limits::DEFAULT_MAX_HEAD_BYTES;
use crate::http1::{BodyDecoder, Method, RequestHead, ResponseHead, Span};
use crate::tunnel::registry::random_hex;

/// Default cap on the bytes kept of one body (request or response).
pub const DEFAULT_BODY_CAP: usize = 1 << 20;

/// Header fields as (name, value), in wire order.
pub type Fields = Vec<(String, String)>;

/// One captured message: its wire bytes (head and body, up to the cap)
/// and the decoded body payload (up to the cap).
#[derive(Debug, Clone, Default)]
pub struct Message {
    pub proto: String,
    pub headers: Fields,
    /// Head and body as they went over the wire, up to `head_len + cap`.
    pub raw: Vec<u8>,
    pub head_len: usize,
    /// Decoded payload (chunk framing removed), up to the cap.
    pub body: Vec<u8>,
    /// Decoded payload size seen (may exceed `body.len()`).
    pub body_size: u64,
    /// Some of the body was not kept (cap) or not seen.
    pub truncated: bool,
}

impl Message {
    /// Bytes this message holds in memory.
    pub fn mem_size(&self) -> usize {
        self.raw.len()
            + self.body.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + 16)
                .sum::<usize>()
    }

    fn tee(&mut self, wire: &[u8], data: &[&[u8]], cap: usize) {
        let room = (self.head_len + cap).saturating_sub(self.raw.len());
        let take = room.min(wire.len());
        self.raw.extend_from_slice(&wire[..take]);
        for d in data {
            self.body_size += d.len() as u64;
            let room = cap.saturating_sub(self.body.len());
            let take = room.min(d.len());
            self.body.extend_from_slice(&d[..take]);
            if take < d.len() {
                self.truncated = true;
            }
        }
        if take < wire.len() {
            self.truncated = true;
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The request target (`/path?query`).
    pub uri: String,
    pub msg: Message,
}

#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status_code: u16,
    /// `200 OK`.
    pub status: String,
    pub msg: Message,
}

/// A captured exchange.
#[derive(Debug, Clone)]
pub struct Capture {
    /// 16 hex characters.
    pub id: String,
    pub tunnel_name: Arc<str>,
    pub remote_addr: String,
    pub start: SystemTime,
    pub duration: Option<Duration>,
    pub request: Request,
    pub response: Option<Response>,
    /// For a replay: the id of the capture it replays.
    pub replay_of: Option<String>,
}

impl Capture {
    pub fn mem_size(&self) -> usize {
        self.request.msg.mem_size()
            + self.response.as_ref().map_or(0, |r| r.msg.mem_size())
            + self.remote_addr.len()
            + self.request.uri.len()
            + 128
    }
}

/// What a tap reports.
#[derive(Debug, Clone)]
pub enum Event {
    /// A request was read (its response may follow).
    Request(Box<Capture>),
    /// The response to request `id`.
    Response {
        id: String,
        duration: Duration,
        response: Box<Response>,
    },
}

/// Where captures go, and what a new tap is labelled with.
#[derive(Debug, Clone)]
pub struct TapConfig {
    pub sink: UnboundedSender<Event>,
    pub tunnel_name: Arc<str>,
    pub body_cap: usize,
}

/// A request in flight whose response has not been seen.
struct Awaiting {
    id: String,
    started: Instant,
    head_request: bool,
}

struct InRequest {
    capture: Capture,
    dec: BodyDecoder,
    /// Already reported (its response came first).
    reported: bool,
}

struct InResponse {
    response: Response,
    dec: BodyDecoder,
}

/// Capture state of one connection.
pub struct ConnTap {
    cfg: TapConfig,
    remote_addr: String,
    replay_of: Option<String>,
    req_buf: Vec<u8>,
    req_head: RequestHead,
    req: Option<InRequest>,
    /// Requests stop being parsed (after an upgrade request).
    req_stopped: bool,
    awaiting: VecDeque<Awaiting>,
    resp_buf: Vec<u8>,
    resp_head: ResponseHead,
    resp: Option<InResponse>,
    dead: bool,
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn fields(buf: &[u8], spans: &[crate::http1::HeaderSpan]) -> Fields {
    spans
        .iter()
        .map(|h| (lossy(h.name.get(buf)), lossy(h.value.get(buf))))
        .collect()
}

impl ConnTap {
    pub fn new(cfg: TapConfig, remote_addr: String, replay_of: Option<String>) -> ConnTap {
        ConnTap {
            cfg,
            remote_addr,
            replay_of,
            req_buf: Vec::new(),
            req_head: RequestHead::new(),
            req: None,
            req_stopped: false,
            awaiting: VecDeque::new(),
            resp_buf: Vec::new(),
            resp_head: ResponseHead::new(),
            resp: None,
            dead: false,
        }
    }

    /// Whether this connection is still being captured.
    pub fn is_live(&self) -> bool {
        !self.dead
    }

    fn emit(&self, ev: Event) {
        // The inspector may be gone (agent stopping): nothing to do then.
        let _ = self.cfg.sink.send(ev);
    }

    fn give_up(&mut self, why: &str) {
        tracing::debug!(why, "inspector stops capturing a connection");
        self.dead = true;
        self.req_buf = Vec::new();
        self.resp_buf = Vec::new();
    }

    /// Bytes the edge sent towards the upstream.
    pub fn on_request_bytes(&mut self, mut input: &[u8]) {
        while !input.is_empty() && !self.dead && !self.req_stopped {
            if self.req.is_none() {
                let before = self.req_buf.len();
                self.req_buf.extend_from_slice(input);
                match self.req_head.parse(&self.req_buf, DEFAULT_MAX_HEAD_BYTES) {
                    Ok(false) => return,
                    Err(_) => return self.give_up("request head does not parse"),
                    Ok(true) => {}
                }
                let hl = self.req_head.head_len;
                input = &input[hl.saturating_sub(before).min(input.len())..];
                self.start_request(hl);
                continue;
            }
            let cap = self.cfg.body_cap;
            let Some(r) = self.req.as_mut() else { return };
            let mut ranges = Vec::new();
            let n = match r.dec.scan_with(input, |rg| ranges.push(rg), |_, _| {}) {
                Ok(n) => n,
                Err(_) => return self.give_up("request body framing"),
            };
            let data: Vec<&[u8]> = ranges.iter().map(|rg| &input[rg.clone()]).collect();
            if !r.reported {
                r.capture.request.msg.tee(&input[..n], &data, cap);
            }
            input = &input[n..];
            if r.dec.is_done() {
                self.finish_request();
            }
        }
    }

    fn start_request(&mut self, head_len: usize) {
        let buf = &self.req_buf[..head_len];
        let h = &self.req_head;
        let method = lossy(h.method_span.get(buf));
        let uri = lossy(h.target.get(buf));
        let upgrade = h.is_upgrade();
        let head_request = matches!(h.method, Some(Method::Head));
        let framing = h.framing;
        let msg = Message {
            proto: "HTTP/1.1".into(),
            headers: fields(buf, &h.headers),
            raw: buf.to_vec(),
            head_len,
            ..Message::default()
        };
        let id = random_hex(8);
        let capture = Capture {
            id: id.clone(),
            tunnel_name: self.cfg.tunnel_name.clone(),
            remote_addr: self.remote_addr.clone(),
            start: SystemTime::now(),
            duration: None,
            request: Request { method, uri, msg },
            response: None,
            replay_of: self.replay_of.clone(),
        };
        self.awaiting.push_back(Awaiting {
            id,
            started: Instant::now(),
            head_request,
        });
        self.req = Some(InRequest {
            capture,
            dec: BodyDecoder::new(framing),
            reported: false,
        });
        self.req_buf.clear();
        self.req_head.reset();
        if upgrade {
            // What follows may not be HTTP: stop parsing requests here.
            self.req_stopped = true;
        }
        if self.req.as_ref().is_some_and(|r| r.dec.is_done()) {
            self.finish_request();
        }
    }

    fn finish_request(&mut self) {
        if let Some(r) = self.req.take() {
            if !r.reported {
                self.emit(Event::Request(Box::new(r.capture)));
            }
        }
    }

    /// Bytes written back towards the edge.
    pub fn on_response_bytes(&mut self, mut input: &[u8]) {
        while !input.is_empty() && !self.dead {
            if self.resp.is_none() {
                let Some(head_request) = self.awaiting.front().map(|a| a.head_request) else {
                    return self.give_up("response without a request");
                };
                let before = self.resp_buf.len();
                self.resp_buf.extend_from_slice(input);
                match self
                    .resp_head
                    .parse(&self.resp_buf, DEFAULT_MAX_HEAD_BYTES, head_request)
                {
                    Ok(false) => return,
                    Err(_) => return self.give_up("response head does not parse"),
                    Ok(true) => {}
                }
                let hl = self.resp_head.head_len;
                input = &input[hl.saturating_sub(before).min(input.len())..];
                self.start_response(hl);
                continue;
            }
            let cap = self.cfg.body_cap;
            let Some(r) = self.resp.as_mut() else { return };
            let mut ranges = Vec::new();
            let n = match r.dec.scan_with(input, |rg| ranges.push(rg), |_, _| {}) {
                Ok(n) => n,
                Err(_) => return self.give_up("response body framing"),
            };
            let data: Vec<&[u8]> = ranges.iter().map(|rg| &input[rg.clone()]).collect();
            r.response.msg.tee(&input[..n], &data, cap);
            input = &input[n..];
            if r.dec.is_done() {
                self.finish_response();
            }
        }
    }

    fn start_response(&mut self, head_len: usize) {
        let buf = &self.resp_buf[..head_len];
        let h = &self.resp_head;
        let code = h.status;
        if h.is_informational() && code != 101 {
            // 100 Continue and friends are not shown (as ngrok).
            self.resp_buf.clear();
            self.resp_head.reset();
            return;
        }
        let reason = lossy(Span::get(&h.reason, buf));
        let response = Response {
            status_code: code,
            status: if reason.is_empty() {
                code.to_string()
            } else {
                format!("{code} {reason}")
            },
            msg: Message {
                proto: format!("HTTP/1.{}", h.minor_version),
                headers: fields(buf, &h.headers),
                raw: buf.to_vec(),
                head_len,
                ..Message::default()
            },
        };
        let framing = h.framing;
        self.resp_buf.clear();
        self.resp_head.reset();
        self.resp = Some(InResponse {
            response,
            dec: BodyDecoder::new(framing),
        });
        if code == 101 {
            self.finish_response();
            return self.give_up("upgraded");
        }
        if self.resp.as_ref().is_some_and(|r| r.dec.is_done()) {
            self.finish_response();
        }
    }

    fn finish_response(&mut self) {
        let Some(r) = self.resp.take() else { return };
        let Some(a) = self.awaiting.pop_front() else {
            return;
        };
        // An early answer (before the request body ended): report the
        // request as far as it got.
        if let Some(req) = self.req.as_mut().filter(|q| q.capture.id == a.id) {
            if !req.reported {
                req.reported = true;
                let mut c = req.capture.clone();
                c.request.msg.truncated = true;
                self.emit(Event::Request(Box::new(c)));
            }
        }
        self.emit(Event::Response {
            id: a.id,
            duration: a.started.elapsed(),
            response: Box::new(r.response),
        });
        if self.awaiting.is_empty() && self.req_stopped && self.req.is_none() {
            // The upgrade was refused: the connection may go on, but its
            // later bytes were not followed.
            self.give_up("after a refused upgrade");
        }
    }

    /// The response side ended (FIN towards the edge): a close-delimited
    /// body ends here.
    pub fn on_response_end(&mut self) {
        if self.dead {
            return;
        }
        if let Some(r) = self.resp.as_mut() {
            if r.dec.ends_at_eof() {
                self.finish_response();
            } else {
                r.response.msg.truncated = true;
                self.finish_response();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap() -> (ConnTap, tokio::sync::mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let cfg = TapConfig {
            sink: tx,
            tunnel_name: "t".into(),
            body_cap: 8,
        };
        (ConnTap::new(cfg, "127.0.0.1:1".into(), None), rx)
    }

    fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) -> Vec<Event> {
        let mut v = Vec::new();
        while let Ok(e) = rx.try_recv() {
            v.push(e);
        }
        v
    }

    #[test]
    fn keep_alive_pairs_at_any_split() {
        let req: &[u8] = b"POST /a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: h\r\n\r\n";
        let resp: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        for split in 1..req.len().min(resp.len()) {
            let (mut t, mut rx) = tap();
            t.on_request_bytes(&req[..split]);
            t.on_request_bytes(&req[split..]);
            t.on_response_bytes(&resp[..split]);
            t.on_response_bytes(&resp[split..]);
            let ev = drain(&mut rx);
            assert_eq!(ev.len(), 4, "split {split}: {ev:?}");
            let Event::Request(a) = &ev[0] else { panic!() };
            assert_eq!(a.request.method, "POST");
            assert_eq!(a.request.uri, "/a?x=1");
            assert_eq!(a.request.msg.body, b"hello");
            assert!(a.request.msg.raw.ends_with(b"\r\n\r\nhello"));
            let Event::Request(b) = &ev[1] else { panic!() };
            assert_eq!(b.request.uri, "/b");
            let Event::Response { id, response, .. } = &ev[2] else {
                panic!()
            };
            assert_eq!(id, &a.id);
            assert_eq!(response.status, "200 OK");
            assert_eq!(response.msg.body, b"ok");
            let Event::Response { id, response, .. } = &ev[3] else {
                panic!()
            };
            assert_eq!(id, &b.id);
            assert_eq!(response.status_code, 404);
            assert_eq!(response.msg.body, b"abc");
            assert!(t.is_live());
        }
    }

    #[test]
    fn bodies_are_capped() {
        let (mut t, mut rx) = tap();
        t.on_request_bytes(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 20\r\n\r\n");
        t.on_request_bytes(b"0123456789abcdefghij");
        let ev = drain(&mut rx);
        let Event::Request(a) = &ev[0] else { panic!() };
        assert_eq!(a.request.msg.body, b"01234567");
        assert_eq!(a.request.msg.body_size, 20);
        assert!(a.request.msg.truncated);
    }

    #[test]
    fn garbage_stops_capture_only() {
        let (mut t, mut rx) = tap();
        t.on_request_bytes(b"\x16\x03\x01 not http\r\n\r\n");
        assert!(!t.is_live());
        t.on_response_bytes(b"HTTP/1.1 200 OK\r\n\r\n");
        assert!(drain(&mut rx).is_empty());
    }

    #[test]
    fn upgrade_then_stop() {
        let (mut t, mut rx) = tap();
        t.on_request_bytes(
            b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
        );
        t.on_response_bytes(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x02hi");
        let ev = drain(&mut rx);
        assert_eq!(ev.len(), 2);
        assert!(!t.is_live());
    }

    #[test]
    fn close_delimited_response_ends_at_fin() {
        let (mut t, mut rx) = tap();
        t.on_request_bytes(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        t.on_response_bytes(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc");
        assert_eq!(drain(&mut rx).len(), 1);
        t.on_response_end();
        let ev = drain(&mut rx);
        let Event::Response { response, .. } = &ev[0] else {
            panic!()
        };
        assert_eq!(response.msg.body, b"abc");
    }

    #[test]
    fn early_answer_reports_the_partial_request() {
        let (mut t, mut rx) = tap();
        t.on_request_bytes(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nabc");
        t.on_response_bytes(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n");
        let ev = drain(&mut rx);
        assert_eq!(ev.len(), 2);
        t.on_request_bytes(&[b'x'; 97]);
        assert!(drain(&mut rx).is_empty());
    }
}
