//! The edge traffic inspector's store: per endpoint, a bounded ring of
//! captured exchanges (newest last), and a broadcast of each new capture
//! for live streams. Filled by the drainer thread, read by the API; never
//! touched by a worker.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use serde_json::{json, Map, Value};

use super::config::CaptureMode;
use super::head::Head;
use super::worker::HttpRecord;

/// One captured exchange.
#[derive(Debug)]
pub struct Captured {
    pub id: String,
    pub endpoint: String,
    pub scheme: &'static str,
    pub proto: &'static str,
    pub client: std::net::SocketAddr,
    pub start: SystemTime,
    pub duration: Duration,
    pub mode: CaptureMode,
    pub status: u16,
    pub req_head: Vec<u8>,
    pub res_head: Vec<u8>,
    pub req_body_len: u64,
    pub res_body_len: u64,
    pub req_body: Vec<u8>,
    pub res_body: Vec<u8>,
    pub req_truncated: bool,
    pub res_truncated: bool,
    pub error_code: Option<&'static str>,
    /// Set when this exchange is itself a replay of another.
    pub replay_of: Option<String>,
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
        let req = Head::parse(&self.req_head);
        let res = Head::parse(&self.res_head);
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
            request["body"] = Value::String(b64.encode(&self.req_body));
            request["body_truncated"] = Value::Bool(self.req_truncated);
            response["body"] = Value::String(b64.encode(&self.res_body));
            response["body_truncated"] = Value::Bool(self.res_truncated);
        }
        json!({
            "id": self.id,
            "endpoint": self.endpoint,
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
    rings: Mutex<HashMap<String, VecDeque<Arc<Captured>>>>,
    live: tokio::sync::broadcast::Sender<Arc<Captured>>,
    next: AtomicU64,
}

/// The request header a replay carries (passed to the upstream, which can
/// tell a replay by it); its value is the original capture's id.
pub const REPLAY_HEADER: &str = "ringress-replay-of";

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

    /// Keeps a record the worker captured.
    pub fn add(&self, r: &mut HttpRecord) {
        if r.capture == CaptureMode::Off || r.endpoint.is_empty() {
            return;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("req_{n:012}");
        // Replays carry the header exactly as `replay` writes it; looking
        // for those bytes avoids parsing every head.
        let replay_of = memchr::memmem::find(&r.req_head, REPLAY_HEADER.as_bytes())
            .map(|_| Head::parse(&r.req_head))
            .and_then(|h| h.get(REPLAY_HEADER).map(str::to_owned));
        let c = Arc::new(Captured {
            id,
            endpoint: r.endpoint.clone(),
            scheme: r.scheme,
            proto: r.proto,
            client: r.client,
            start: r.start,
            duration: r.duration,
            mode: r.capture,
            status: r.status,
            req_head: std::mem::take(&mut r.req_head),
            res_head: std::mem::take(&mut r.res_head),
            req_body_len: r.req_body_len,
            res_body_len: r.res_body_len,
            req_body: std::mem::take(&mut r.req_body),
            res_body: std::mem::take(&mut r.res_body),
            req_truncated: r.req_body_truncated,
            res_truncated: r.res_body_truncated,
            error_code: r.error_code,
            replay_of,
        });
        {
            let mut rings = self.lock();
            let ring = rings.entry(c.endpoint.clone()).or_default();
            if ring.len() >= self.ring {
                ring.pop_front();
            }
            ring.push_back(c.clone());
        }
        let _ = self.live.send(c);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Arc<Captured>>>> {
        self.rings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An endpoint's captures, newest (by start time) first. Workers hand
    /// records over independently, so the ring is only roughly in order.
    pub fn list(&self, endpoint: &str, limit: usize) -> Vec<Arc<Captured>> {
        let mut v: Vec<Arc<Captured>> = self
            .lock()
            .get(endpoint)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default();
        v.sort_by_key(|c| std::cmp::Reverse(c.start));
        v.truncate(limit);
        v
    }

    pub fn get(&self, endpoint: &str, id: &str) -> Option<Arc<Captured>> {
        self.lock()
            .get(endpoint)
            .and_then(|r| r.iter().find(|c| c.id == id).cloned())
    }

    /// Every capture from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Captured>> {
        self.live.subscribe()
    }

    /// Captures kept, over all endpoints.
    pub fn len(&self) -> usize {
        self.lock().values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u16) -> HttpRecord {
        HttpRecord {
            endpoint: "http://a.test".into(),
            scheme: "http",
            proto: "HTTP/1.1",
            client: "127.0.0.1:1".parse().unwrap(),
            server_port: 80,
            conn_start: SystemTime::UNIX_EPOCH,
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(i.into()),
            duration: Duration::from_millis(1),
            status: 200 + i,
            req_head: b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec(),
            res_head: b"HTTP/1.1 200 OK\r\n\r\n".to_vec(),
            req_body_len: 0,
            res_body_len: 0,
            error_code: None,
            capture: CaptureMode::Full,
            events: false,
            req_body: b"abc".to_vec(),
            res_body: vec![],
            req_body_truncated: false,
            res_body_truncated: false,
        }
    }

    #[test]
    fn ring_is_bounded_newest_first() {
        let ins = Inspector::new(3);
        let mut live = ins.subscribe();
        for i in 0..5 {
            ins.add(&mut rec(i));
        }
        let l = ins.list("http://a.test", 10);
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].status, 204);
        assert_eq!(l[2].status, 202);
        assert_eq!(live.try_recv().unwrap().status, 200);
        let one = ins.get("http://a.test", &l[1].id).unwrap();
        let v = one.to_json(true);
        assert_eq!(v["request"]["body"], "YWJj");
        assert_eq!(v["request"]["method"], "GET");
        assert!(ins.list("http://other", 10).is_empty());
    }
}
