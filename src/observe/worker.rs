//! The worker's side of observability: counters and latency histograms in
//! worker-local memory (published as a copy every 200 ms, never read by
//! another thread while the worker writes them), and the per-exchange
//! record that becomes an event and an inspector capture.
//!
//! This module must never block, lock, allocate per request, serialise
//! JSON or touch a shared atomic on the request path: a record is encoded
//! into a reused buffer and copied into this worker's own byte ring (no
//! room: dropped and counted), and with everything off each hook is one
//! branch.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;

use super::config::{CaptureMode, EndpointObserve, ObserveConfig};
use super::queue::RecordProducer;
use super::record::{self, HttpRecord, TcpRecord};
use crate::route::Endpoint;

/// How often a worker publishes its counters.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Latency histogram: 1 µs to 1 h, 2 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts (low >= 1, high >= 2 * low,
    // sigfig <= 5): not input-driven.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("constant histogram bounds")
}

/// Per-endpoint counters of one worker (cumulative since start).
#[derive(Clone)]
pub struct EndpointStats {
    /// Responses by status class: index 0 = no response, 1..=5 = 1xx..5xx.
    pub classes: [u64; 6],
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Head complete to response sent, in µs.
    pub latency: Histogram<u64>,
    pub latency_sum_us: u64,
}

impl EndpointStats {
    fn new() -> Self {
        EndpointStats {
            classes: [0; 6],
            bytes_in: 0,
            bytes_out: 0,
            latency: new_histogram(),
            latency_sum_us: 0,
        }
    }
}

/// What the listeners count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Http = 0,
    Https = 1,
    Tunnel = 2,
}

/// A worker's cumulative counters, as published.
#[derive(Clone, Default)]
pub struct WorkerStats {
    /// By endpoint URL, in first-seen order (`""`: requests that matched
    /// no endpoint); each URL once.
    pub endpoints: Vec<(String, EndpointStats)>,
    /// Edge error replies by ngrok error code.
    pub errors: HashMap<&'static str, u64>,
    pub tls_ok: [u64; 3],
    pub tls_failed: [u64; 3],
    pub accepted: [u64; 3],
    /// Events this worker dropped because its queue was full.
    pub events_dropped: u64,
    pub events_queued: u64,
    /// Gauges at publication time.
    pub active_connections: u64,
    pub agent_sessions: u64,
}

/// One worker's publication.
pub struct Flush {
    pub worker: usize,
    pub stats: Box<WorkerStats>,
}

/// What is switched on, resolved once at start.
#[derive(Debug, Clone, Copy)]
struct Flags {
    metrics: bool,
    /// `http_request_complete.v0` by default (a sink takes them).
    events: bool,
    /// `tcp_connection_closed.v0` (a sink takes them).
    tcp_events: bool,
    inspect: CaptureMode,
    /// Records may be queued (an inspector or a sink exists).
    any: bool,
    /// Some sink takes `http_request_complete.v0` events (endpoints may
    /// switch them on).
    sinks: bool,
    body_cap: usize,
}

/// Owned by one worker (in its `WorkerCtx`).
pub struct WorkerObs {
    id: usize,
    flags: Flags,
    stats: RefCell<WorkerStats>,
    dirty: Cell<bool>,
    queue: Option<RefCell<RecordProducer>>,
    /// A record being encoded (reused).
    frame: RefCell<Vec<u8>>,
    /// Where each endpoint's counters are in `stats.endpoints`, and the
    /// last one used (consecutive requests mostly go to the same one).
    slots: RefCell<HashMap<String, usize>>,
    last_slot: Cell<usize>,
    flush: Option<Sender<Flush>>,
    /// Wall clock at a monotonic instant, so that a request's wall start
    /// costs no second clock read (refreshed every second).
    anchor: Cell<(Instant, SystemTime)>,
}

/// How long the wall-clock anchor is used before it is read again.
const ANCHOR_FOR: Duration = Duration::from_secs(1);

impl WorkerObs {
    /// Everything off (tests, tools).
    pub fn disabled() -> Self {
        WorkerObs::new(0, &ObserveConfig::off(), None, None)
    }

    pub(super) fn new(
        id: usize,
        cfg: &ObserveConfig,
        queue: Option<RecordProducer>,
        flush: Option<Sender<Flush>>,
    ) -> Self {
        let queued = queue.is_some();
        let inspect = if queue.is_some() {
            cfg.inspect
        } else {
            CaptureMode::Off
        };
        WorkerObs {
            id,
            flags: Flags {
                metrics: cfg.metrics && flush.is_some(),
                events: queued && cfg.events && cfg.http_sinks(),
                tcp_events: queued && cfg.events && cfg.tcp_sinks(),
                inspect,
                // Per-endpoint overrides may switch capture or events on.
                any: queued,
                sinks: cfg.http_sinks(),
                body_cap: cfg.body_cap,
            },
            stats: RefCell::new(WorkerStats::default()),
            dirty: Cell::new(false),
            queue: queue.map(RefCell::new),
            frame: RefCell::new(Vec::with_capacity(4096)),
            slots: RefCell::new(HashMap::new()),
            last_slot: Cell::new(0),
            flush,
            anchor: Cell::new((Instant::now(), SystemTime::now())),
        }
    }

    /// Whether anything per request is on.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.flags.metrics || self.flags.any
    }

    /// The wall-clock time of `at` (a recent instant).
    fn wall(&self, at: Instant) -> SystemTime {
        let (i, w) = self.anchor.get();
        match at.checked_duration_since(i) {
            Some(d) if d < ANCHOR_FOR => w + d,
            _ => {
                let now = SystemTime::now();
                self.anchor.set((Instant::now(), now));
                now
            }
        }
    }

    fn resolve(&self, o: &EndpointObserve) -> (CaptureMode, bool) {
        if self.queue.is_none() {
            return (CaptureMode::Off, false);
        }
        (
            o.inspect.unwrap_or(self.flags.inspect),
            o.events.unwrap_or(self.flags.events) && self.flags.sinks,
        )
    }

    /// A TLS handshake ended.
    pub fn tls_handshake(&self, kind: ListenerKind, ok: bool) {
        if !self.flags.metrics {
            return;
        }
        let mut s = self.stats.borrow_mut();
        if ok {
            s.tls_ok[kind as usize] += 1;
        } else {
            s.tls_failed[kind as usize] += 1;
        }
        self.dirty.set(true);
    }

    /// A connection was accepted.
    pub fn accepted(&self, kind: ListenerKind) {
        if !self.flags.metrics {
            return;
        }
        self.stats.borrow_mut().accepted[kind as usize] += 1;
        self.dirty.set(true);
    }

    /// Records a finished exchange: metrics now, the record to the queue.
    pub fn finish(&self, ex: &mut Exchange, conn: &mut ConnMeta) {
        if !ex.active {
            return;
        }
        ex.active = false;
        let elapsed = ex.start.elapsed();
        let head_in = ex.req_head_len;
        let head_out = ex.res_head_len;
        conn.bytes_in += head_in + ex.req_body_len;
        conn.bytes_out += head_out + ex.res_body_len;
        if self.flags.metrics {
            let mut s = self.stats.borrow_mut();
            let url = if ex.has_endpoint {
                ex.endpoint.as_str()
            } else {
                ""
            };
            let slot = self.slot(&mut s.endpoints, url);
            let e = &mut s.endpoints[slot].1;
            let class = if (100..600).contains(&ex.status) {
                (ex.status / 100) as usize
            } else {
                0
            };
            e.classes[class] += 1;
            e.bytes_in += head_in + ex.req_body_len;
            e.bytes_out += head_out + ex.res_body_len;
            let us = elapsed.as_micros().min(u64::MAX as u128) as u64;
            e.latency.saturating_record(us.max(1));
            e.latency_sum_us += us;
            if let Some(code) = ex.error_code {
                *s.errors.entry(code).or_insert(0) += 1;
            }
            self.dirty.set(true);
        }
        if !(ex.events || ex.capture != CaptureMode::Off) || self.queue.is_none() {
            return;
        }
        let rec = HttpRecord {
            endpoint: if ex.has_endpoint { &ex.endpoint } else { "" },
            scheme: conn.scheme,
            proto: conn.proto,
            client: conn.client,
            server_port: ex.server_port,
            conn_start: conn.start,
            start: ex.start_wall,
            duration: elapsed,
            status: ex.status,
            req_head: &ex.req_head,
            res_head: &ex.res_head,
            req_body_len: ex.req_body_len,
            res_body_len: ex.res_body_len,
            error_code: ex.error_code,
            capture: ex.capture,
            events: ex.events,
            req_body: &ex.req_body,
            res_body: &ex.res_body,
            req_body_truncated: ex.req_truncated,
            res_body_truncated: ex.res_truncated,
        };
        let mut frame = self.frame.borrow_mut();
        frame.clear();
        record::encode_http(&mut frame, &rec);
        self.push(&frame);
    }

    /// The index of `url`'s counters in `eps` (added when new): the last
    /// one used if it matches, else one map lookup.
    fn slot(&self, eps: &mut Vec<(String, EndpointStats)>, url: &str) -> usize {
        let last = self.last_slot.get();
        if eps.get(last).is_some_and(|(u, _)| u == url) {
            return last;
        }
        let mut slots = self.slots.borrow_mut();
        let i = match slots.get(url) {
            Some(&i) => i,
            None => {
                eps.push((url.to_owned(), EndpointStats::new()));
                slots.insert(url.to_owned(), eps.len() - 1);
                eps.len() - 1
            }
        };
        self.last_slot.set(i);
        i
    }

    /// A client connection ended (HTTP/1.1; emits `tcp_connection_closed.v0`).
    pub fn conn_closed(&self, conn: &ConnMeta) {
        if !(self.flags.tcp_events && conn.observed) {
            return;
        }
        let rec = TcpRecord {
            client: conn.client,
            server_port: conn.server_port,
            server_name: &conn.server_name,
            start: conn.start,
            end: SystemTime::now(),
            bytes_in: conn.bytes_in,
            bytes_out: conn.bytes_out,
        };
        let mut frame = self.frame.borrow_mut();
        frame.clear();
        record::encode_tcp(&mut frame, &rec);
        self.push(&frame);
    }

    fn push(&self, frame: &[u8]) {
        let Some(q) = &self.queue else {
            return;
        };
        let ok = q.borrow_mut().push(frame);
        let mut s = self.stats.borrow_mut();
        if ok {
            s.events_queued += 1;
        } else {
            s.events_dropped += 1;
        }
        self.dirty.set(true);
    }

    /// Publishes a copy of the counters when they changed (or the gauges
    /// did). Runs in the worker's flush task, off the request path.
    pub fn publish(&self, active: u64, sessions: u64) {
        let Some(tx) = &self.flush else {
            return;
        };
        let changed = {
            let s = self.stats.borrow();
            s.active_connections != active || s.agent_sessions != sessions
        };
        if !self.dirty.get() && !changed {
            return;
        }
        self.dirty.set(false);
        let copy = {
            let mut s = self.stats.borrow_mut();
            s.active_connections = active;
            s.agent_sessions = sessions;
            Box::new(s.clone())
        };
        let _ = tx.send(Flush {
            worker: self.id,
            stats: copy,
        });
    }

    pub fn metrics_on(&self) -> bool {
        self.flags.metrics
    }
}

/// Per-connection facts for records.
pub struct ConnMeta {
    pub client: SocketAddr,
    pub scheme: &'static str,
    pub proto: &'static str,
    pub start: SystemTime,
    pub server_port: u16,
    pub server_name: String,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// At least one exchange was recorded.
    pub observed: bool,
}

impl ConnMeta {
    pub fn new(
        obs: &WorkerObs,
        client: SocketAddr,
        scheme: &'static str,
        proto: &'static str,
    ) -> Self {
        ConnMeta {
            client,
            scheme,
            proto,
            start: if obs.enabled() {
                SystemTime::now()
            } else {
                SystemTime::UNIX_EPOCH
            },
            server_port: 0,
            server_name: String::new(),
            bytes_in: 0,
            bytes_out: 0,
            observed: false,
        }
    }
}

/// The exchange in progress (reused for a connection's life).
pub struct Exchange {
    active: bool,
    start: Instant,
    start_wall: SystemTime,
    /// The endpoint's URL (a reused buffer), when `has_endpoint`.
    endpoint: String,
    has_endpoint: bool,
    capture: CaptureMode,
    events: bool,
    status: u16,
    server_port: u16,
    error_code: Option<&'static str>,
    req_head: Vec<u8>,
    res_head: Vec<u8>,
    req_head_len: u64,
    res_head_len: u64,
    req_body_len: u64,
    res_body_len: u64,
    req_body: Vec<u8>,
    res_body: Vec<u8>,
    req_truncated: bool,
    res_truncated: bool,
    body_cap: usize,
    keep_heads: bool,
}

impl Exchange {
    pub fn new() -> Self {
        Exchange {
            active: false,
            start: Instant::now(),
            start_wall: SystemTime::UNIX_EPOCH,
            endpoint: String::new(),
            has_endpoint: false,
            capture: CaptureMode::Off,
            events: false,
            status: 0,
            server_port: 0,
            error_code: None,
            req_head: Vec::new(),
            res_head: Vec::new(),
            req_head_len: 0,
            res_head_len: 0,
            req_body_len: 0,
            res_body_len: 0,
            req_body: Vec::new(),
            res_body: Vec::new(),
            req_truncated: false,
            res_truncated: false,
            body_cap: 0,
            keep_heads: false,
        }
    }

    /// A request head was read (empty when it could not be parsed).
    #[inline]
    pub fn begin(&mut self, obs: &WorkerObs, conn: &mut ConnMeta, head: &[u8]) {
        if !obs.enabled() {
            return;
        }
        self.active = true;
        self.start = Instant::now();
        conn.observed = true;
        self.has_endpoint = false;
        self.capture = CaptureMode::Off;
        self.events = obs.flags.events;
        self.status = 0;
        self.error_code = None;
        self.req_head_len = head.len() as u64;
        self.res_head_len = 0;
        self.req_body_len = 0;
        self.res_body_len = 0;
        self.req_truncated = false;
        self.res_truncated = false;
        self.body_cap = obs.flags.body_cap;
        self.keep_heads = obs.queue.is_some();
        self.req_head.clear();
        self.res_head.clear();
        self.req_body.clear();
        self.res_body.clear();
        if self.keep_heads {
            self.start_wall = obs.wall(self.start);
            self.req_head.extend_from_slice(head);
        }
    }

    /// The request was routed to `endpoint`; `port` is the authority's.
    #[inline]
    pub fn endpoint(&mut self, obs: &WorkerObs, endpoint: &Endpoint, port: u16) {
        if !self.active {
            return;
        }
        let (capture, events) = obs.resolve(&endpoint.observe);
        self.capture = capture;
        self.events = events;
        self.server_port = port;
        self.endpoint.clear();
        self.endpoint.push_str(&endpoint.url);
        self.has_endpoint = true;
    }

    /// The final response head as sent to the client.
    #[inline]
    pub fn response_head(&mut self, head: &[u8]) {
        if !self.active {
            return;
        }
        self.status = status_of(head);
        self.res_head_len = head.len() as u64;
        if self.keep_heads {
            self.res_head.clear();
            self.res_head.extend_from_slice(head);
        }
    }

    /// A whole reply the edge made (head and body in one buffer).
    #[inline]
    pub fn own_reply(&mut self, reply: &[u8]) {
        if !self.active {
            return;
        }
        let split = memchr::memmem::find(reply, b"\r\n\r\n").map_or(reply.len(), |i| i + 4);
        self.response_head(&reply[..split]);
        self.res_body_len = 0;
        self.res_body.clear();
        self.res_body(&reply[split..]);
    }

    /// An edge error reply with this ngrok error code.
    #[inline]
    pub fn error(&mut self, code: Option<&'static str>) {
        if self.active {
            self.error_code = code;
        }
    }

    #[inline]
    pub fn req_body(&mut self, bytes: &[u8]) {
        if !self.active {
            return;
        }
        self.req_body_len += bytes.len() as u64;
        if self.capture == CaptureMode::Full {
            keep(
                &mut self.req_body,
                bytes,
                self.body_cap,
                &mut self.req_truncated,
            );
        }
    }

    #[inline]
    pub fn res_body(&mut self, bytes: &[u8]) {
        if !self.active {
            return;
        }
        self.res_body_len += bytes.len() as u64;
        if self.capture == CaptureMode::Full {
            keep(
                &mut self.res_body,
                bytes,
                self.body_cap,
                &mut self.res_truncated,
            );
        }
    }

    pub fn is_active(&self) -> bool {
        self.active
    }
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange::new()
    }
}

fn keep(dst: &mut Vec<u8>, bytes: &[u8], cap: usize, truncated: &mut bool) {
    let room = cap.saturating_sub(dst.len());
    if bytes.len() > room {
        *truncated = true;
    }
    dst.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// The status code of an `HTTP/1.1 NNN ...` line; 0 if there is none.
pub fn status_of(head: &[u8]) -> u16 {
    match head.get(9..12) {
        Some(d) if head.starts_with(b"HTTP/") && d.iter().all(u8::is_ascii_digit) => {
            d.iter().fold(0u16, |n, b| n * 10 + u16::from(b - b'0'))
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line() {
        assert_eq!(status_of(b"HTTP/1.1 204 No Content\r\n"), 204);
        assert_eq!(status_of(b"HTTP/1.1 2x4"), 0);
        assert_eq!(status_of(b""), 0);
    }

    #[test]
    fn body_cap_truncates() {
        let mut v = Vec::new();
        let mut t = false;
        keep(&mut v, b"hello", 3, &mut t);
        keep(&mut v, b"x", 3, &mut t);
        assert_eq!(v, b"hel");
        assert!(t);
    }

    #[test]
    fn records_are_made_only_for_event_types_a_sink_takes() {
        use crate::observe::fields::{Pick, Selection};
        let mut cfg = ObserveConfig::off();
        cfg.events = true;
        cfg.sinks.push(crate::observe::config::SinkSpec {
            to: crate::observe::config::SinkConfig::Stdout,
            select: Selection {
                http: Pick::None,
                tcp: Pick::All,
            },
        });
        let (tx, _rx) = crate::observe::queue::channel(64 * 1024);
        let w = WorkerObs::new(0, &cfg, Some(tx), None);
        assert!(!w.flags.events && !w.flags.sinks && w.flags.tcp_events);
        cfg.sinks[0].select = Selection::all();
        let (tx, _rx) = crate::observe::queue::channel(64 * 1024);
        let w = WorkerObs::new(0, &cfg, Some(tx), None);
        assert!(w.flags.events && w.flags.sinks && w.flags.tcp_events);
    }
}
