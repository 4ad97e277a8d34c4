//! The edge traffic inspector's store: per endpoint, a bounded ring of
//! captured exchanges (newest last), and a broadcast of each new capture
//! for live streams. Filled by the drainer thread, read by the API; never
//! touched by a worker. A ring keeps the raw record frames the workers
//! queued ([`FrameRing`]: one copy per capture, nothing built or freed);
//! they become [`Captured`] values only when the API reads them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use serde_json::{json, Map, Value};

use super::config::CaptureMode;
use super::frames::FrameRing;
use super::head::Head;
use super::record::{self, HttpRecord, Record};

/// One captured exchange: its heads and captured bodies in one block.
#[derive(Debug)]
pub struct Captured {
    /// The inspector's sequence number (the id is `req_` + 12 digits).
    pub seq: u64,
    pub endpoint: Arc<str>,
    pub scheme: &'static str,
    pub proto: &'static str,
    pub client: std::net::SocketAddr,
    pub start: SystemTime,
    pub duration: Duration,
    pub mode: CaptureMode,
    pub status: u16,
    pub req_body_len: u64,
    pub res_body_len: u64,
    pub req_truncated: bool,
    pub res_truncated: bool,
    pub error_code: Option<Box<str>>,
    /// Set when this exchange is itself a replay of another.
    pub replay_of: Option<String>,
    /// Request head, response head, request body, response body.
    blob: Box<[u8]>,
    ends: [usize; 3],
}

/// `req_000000000042` → 42.
fn seq_of(id: &str) -> Option<u64> {
    id.strip_prefix("req_")?.parse().ok()
}

impl Captured {
    /// A capture of `r` numbered `seq`, for `endpoint` (`r.endpoint`).
    pub fn new(seq: u64, endpoint: Arc<str>, r: &HttpRecord<'_>) -> Captured {
        let (req_body, res_body) = if r.capture == CaptureMode::Full {
            (r.req_body, r.res_body)
        } else {
            (&b""[..], &b""[..])
        };
        let parts = [r.req_head, r.res_head, req_body, res_body];
        let mut blob = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0; 3];
        for (i, p) in parts.iter().enumerate() {
            blob.extend_from_slice(p);
            if i < 3 {
                ends[i] = blob.len();
            }
        }
        let replay_of = memchr::memmem::find(r.req_head, REPLAY_HEADER.as_bytes())
            .map(|_| Head::parse(r.req_head))
            .and_then(|h| h.get(REPLAY_HEADER).map(str::to_owned));
        Captured {
            seq,
            endpoint,
            scheme: r.scheme,
            proto: r.proto,
            client: r.client,
            start: r.start,
            duration: r.duration,
            mode: r.capture,
            status: r.status,
            req_body_len: r.req_body_len,
            res_body_len: r.res_body_len,
            req_truncated: r.req_body_truncated,
            res_truncated: r.res_body_truncated,
            error_code: r.error_code.map(Into::into),
            replay_of,
            blob: blob.into_boxed_slice(),
            ends,
        }
    }

    /// The capture a stored record frame holds (`None`: not an HTTP
    /// record).
    pub fn from_frame(seq: u64, frame: &[u8]) -> Option<Captured> {
        match record::decode(frame)? {
            Record::Http(r) => Some(Captured::new(seq, r.endpoint.into(), &r)),
            Record::Tcp(_) => None,
        }
    }

    pub fn id(&self) -> String {
        format!("req_{:012}", self.seq)
    }

    pub fn req_head(&self) -> &[u8] {
        &self.blob[..self.ends[0]]
    }

    pub fn res_head(&self) -> &[u8] {
        &self.blob[self.ends[0]..self.ends[1]]
    }

    pub fn req_body(&self) -> &[u8] {
        &self.blob[self.ends[1]..self.ends[2]]
    }

    pub fn res_body(&self) -> &[u8] {
        &self.blob[self.ends[2]..]
    }
}

fn fields(head: &Head) -> Value {
    let mut m = Map::new();
    for (n, v) in &head.fields {
        let e = m
            .entry(n.clone())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(l) = e {
            l.push(Value::String(v.clone()));
        }
    }
    Value::Object(m)
}

impl Captured {
    /// The JSON the API serves (shaped like the agent's `/api/requests/http`
    /// entries). `bodies`: include the captured bodies (base64).
    pub fn to_json(&self, bodies: bool) -> Value {
        let req = Head::parse(self.req_head());
        let res = Head::parse(self.res_head());
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut request = json!({
            "method": req.first,
            "proto": self.proto,
            "uri": req.second,
            "headers": fields(&req),
            "body_length": self.req_body_len,
        });
        let mut response = json!({
            "status": format!("{} {}", res.second, res.third).trim().to_owned(),
            "status_code": self.status,
            "headers": fields(&res),
            "body_length": self.res_body_len,
        });
        if bodies && self.mode == CaptureMode::Full {
            request["body"] = Value::String(b64.encode(self.req_body()));
            request["body_truncated"] = Value::Bool(self.req_truncated);
            response["body"] = Value::String(b64.encode(self.res_body()));
            response["body_truncated"] = Value::Bool(self.res_truncated);
        }
        json!({
            "id": self.id(),
            "endpoint": &*self.endpoint,
            "uri": req.second,
            "remote_addr": self.client.ip().to_canonical().to_string(),
            "start": super::events::rfc3339(self.start),
            "duration": self.duration.as_nanos() as u64,
            "capture": match self.mode { CaptureMode::Full => "full", _ => "metadata" },
            "ngrok_error_code": self.error_code,
            "replay_of": self.replay_of,
            "request": request,
            "response": response,
        })
    }
}

/// Rings by endpoint URL, and the live feed.
pub struct Inspector {
    ring: usize,
    rings: Mutex<HashMap<String, FrameRing>>,
    live: tokio::sync::broadcast::Sender<Arc<Captured>>,
    next: AtomicU64,
}

/// The request header a replay carries (passed to the upstream, which can
/// tell a replay by it); its value is the original capture's id.
pub const REPLAY_HEADER: &str = "ringress-replay-of";

/// The drainer's side of the inspector: a round's captures go straight
/// from the workers' record rings into the endpoints' rings, under one
/// lock taken at the round's first capture and released by
/// [`Self::store`] (never per request). Only when a live stream listens
/// are the frames also kept for the broadcast.
pub struct Capturer<'a> {
    ins: &'a Inspector,
    rings: Option<std::sync::MutexGuard<'a, HashMap<String, FrameRing>>>,
    /// Frames for the live feed (only with subscribers), back to back.
    live: Vec<u8>,
    items: Vec<(u64, std::ops::Range<usize>)>,
}

impl<'a> Capturer<'a> {
    pub fn new(ins: &'a Inspector) -> Self {
        Capturer {
            ins,
            rings: None,
            live: Vec::new(),
            items: Vec::new(),
        }
    }

    /// Captures `r` (decoded from `frame`) if its endpoint captures.
    pub fn add(&mut self, r: &HttpRecord<'_>, frame: &[u8]) {
        if r.capture == CaptureMode::Off || r.endpoint.is_empty() {
            return;
        }
        let ins = self.ins;
        let seq = ins.next.fetch_add(1, Ordering::Relaxed);
        let rings = self.rings.get_or_insert_with(|| ins.lock());
        let ring = match rings.get_mut(r.endpoint) {
            Some(ring) => ring,
            None => rings
                .entry(r.endpoint.to_owned())
                .or_insert_with(|| FrameRing::new(ins.ring)),
        };
        ring.push(seq, frame);
        if ins.live.receiver_count() > 0 {
            let at = self.live.len();
            self.live.extend_from_slice(frame);
            self.items.push((seq, at..self.live.len()));
        }
    }

    /// Ends the round: releases the rings and feeds the live streams.
    pub fn store(&mut self) {
        self.rings = None;
        for (seq, frame) in &self.items {
            if let Some(c) = Captured::from_frame(*seq, &self.live[frame.clone()]) {
                let _ = self.ins.live.send(Arc::new(c));
            }
        }
        self.items.clear();
        self.live.clear();
    }
}

impl Inspector {
    pub fn new(ring: usize) -> Self {
        let (live, _) = tokio::sync::broadcast::channel(1024);
        Inspector {
            ring,
            rings: Mutex::new(HashMap::new()),
            live,
            next: AtomicU64::new(1),
        }
    }

    /// Keeps one record (tests; the drainer batches with [`Capturer`]).
    pub fn add(&self, r: &HttpRecord<'_>) {
        let mut frame = Vec::new();
        record::encode_http(&mut frame, r);
        let mut c = Capturer::new(self);
        c.add(r, &frame);
        c.store();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, FrameRing>> {
        self.rings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An endpoint's captures, newest (by start time) first. Workers hand
    /// records over independently, so the ring is only roughly in order.
    pub fn list(&self, endpoint: &str, limit: usize) -> Vec<Arc<Captured>> {
        // Copied out under the lock, decoded outside it.
        let mut bytes = Vec::new();
        let frames = self
            .lock()
            .get(endpoint)
            .map(|r| r.copy_all(&mut bytes))
            .unwrap_or_default();
        let mut v: Vec<Arc<Captured>> = frames
            .into_iter()
            .filter_map(|(seq, f)| Captured::from_frame(seq, &bytes[f]).map(Arc::new))
            .collect();
        v.sort_by_key(|c| std::cmp::Reverse(c.start));
        v.truncate(limit);
        v
    }

    pub fn get(&self, endpoint: &str, id: &str) -> Option<Arc<Captured>> {
        let seq = seq_of(id)?;
        let mut frame = Vec::new();
        if !self.lock().get(endpoint)?.get(seq, &mut frame) {
            return None;
        }
        Captured::from_frame(seq, &frame).map(Arc::new)
    }

    /// Every capture from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Captured>> {
        self.live.subscribe()
    }

    /// Captures kept, over all endpoints.
    pub fn len(&self) -> usize {
        self.lock().values().map(|r| r.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u16) -> HttpRecord<'static> {
        let mut r = crate::observe::record::tests::http();
        r.endpoint = "http://a.test";
        r.start = SystemTime::UNIX_EPOCH + Duration::from_secs(i.into());
        r.status = 200 + i;
        r.req_head = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n";
        r.res_head = b"HTTP/1.1 200 OK\r\n\r\n";
        r.capture = CaptureMode::Full;
        r.req_body = b"abc";
        r
    }

    #[test]
    fn ring_is_bounded_newest_first() {
        let ins = Inspector::new(3);
        let mut live = ins.subscribe();
        for i in 0..5 {
            ins.add(&rec(i));
        }
        let l = ins.list("http://a.test", 10);
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].status, 204);
        assert_eq!(l[2].status, 202);
        assert_eq!(live.try_recv().unwrap().status, 200);
        let one = ins.get("http://a.test", &l[1].id()).unwrap();
        let v = one.to_json(true);
        assert_eq!(v["request"]["body"], "YWJj");
        assert_eq!(v["request"]["method"], "GET");
        assert!(ins.list("http://other", 10).is_empty());
    }

    #[test]
    fn a_batch_for_several_endpoints_lands_in_each_ring() {
        let ins = Inspector::new(2);
        let mut cap = Capturer::new(&ins);
        let eps = [
            "http://a.test",
            "http://a.test",
            "http://b.test",
            "http://a.test",
        ];
        let mut frame = Vec::new();
        for (i, ep) in eps.iter().enumerate() {
            let mut r = rec(i as u16);
            r.endpoint = ep;
            frame.clear();
            record::encode_http(&mut frame, &r);
            cap.add(&r, &frame);
        }
        let mut off = rec(9);
        off.capture = CaptureMode::Off;
        cap.add(&off, &frame);
        cap.store();
        let a = ins.list("http://a.test", 10);
        assert_eq!(a.iter().map(|c| c.status).collect::<Vec<_>>(), [203, 201]);
        assert_eq!(ins.list("http://b.test", 10)[0].status, 202);
        assert_eq!(ins.len(), 3);
        assert!(ins.get("http://a.test", "req_x").is_none());
    }

    #[test]
    fn captures_read_back_after_the_ring_wraps_and_readers_keep_theirs() {
        let ins = Inspector::new(2);
        let mut cap = Capturer::new(&ins);
        let mut frame = Vec::new();
        for i in 0..4 {
            let r = rec(i);
            frame.clear();
            record::encode_http(&mut frame, &r);
            cap.add(&r, &frame);
            cap.store();
        }
        let held = ins.list("http://a.test", 10);
        assert_eq!(
            held.iter().map(|c| c.status).collect::<Vec<_>>(),
            [203, 202]
        );
        for i in 4..8 {
            let mut r = rec(i);
            r.req_head = b"POST /long-enough-to-grow-the-buffer HTTP/1.1\r\nHost: a.test\r\nringress-replay-of: req_000000000001\r\n\r\n";
            frame.clear();
            record::encode_http(&mut frame, &r);
            cap.add(&r, &frame);
            cap.store();
        }
        // What a reader held is intact; the ring has the newest.
        assert_eq!(held[0].status, 203);
        assert_eq!(
            held[0].req_head(),
            b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"
        );
        let now = ins.list("http://a.test", 10);
        assert_eq!(now.iter().map(|c| c.status).collect::<Vec<_>>(), [207, 206]);
        assert!(now[0].req_head().starts_with(b"POST /long-enough"));
        assert_eq!(now[0].req_body(), b"abc");
        assert_eq!(now[0].replay_of.as_deref(), Some("req_000000000001"));
        assert_eq!(now[0].id(), format!("req_{:012}", 8));
        assert_eq!(&*now[0].endpoint, "http://a.test");
        assert!(ins.get("http://a.test", &held[0].id()).is_none(), "evicted");
        assert_eq!(ins.get("http://a.test", &now[1].id()).unwrap().status, 206);
        assert_eq!(ins.len(), 2);
    }
}
