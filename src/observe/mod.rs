//! Edge observability (issue 10): Prometheus metrics, log-export events
//! (`http_request_complete.v0`, `tcp_connection_closed.v0`) and the edge
//! traffic inspector.
//!
//! Workers only ever touch their own `WorkerObs` (worker-local counters
//! and a bounded queue); the `Hub` owns everything shared: the drainer
//! thread that turns records into events and captures, the published
//! counters, the inspector rings and the sinks. This module must never
//! make a worker wait: no lock, no JSON, no I/O on the request path.

pub mod api;
pub mod config;
pub mod events;
pub mod fields;
pub mod frames;
pub mod head;
pub mod inspector;
pub mod metrics;
pub mod mount;
pub mod queue;
pub mod record;
pub mod replay;
pub mod server;
pub mod sink;
pub mod timestamp;
pub mod worker;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tracing::warn;

pub use config::{CaptureMode, EndpointObserve, ObserveConfig};
pub use worker::{ConnMeta, Exchange, ListenerKind, WorkerObs};

use queue::RecordConsumer;
use record::Record;
use worker::{Flush, WorkerStats};

/// Where the edge listens, for replays.
#[derive(Debug, Clone, Copy, Default)]
pub struct Listeners {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
}

/// A sink's counters, for `/metrics`.
struct SinkCounters {
    name: String,
    written: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

/// Process-wide observability state (control plane).
pub struct Hub {
    pub config: ObserveConfig,
    stats: Mutex<Vec<Option<Box<WorkerStats>>>>,
    pub inspector: inspector::Inspector,
    sinks: Vec<SinkCounters>,
    events_emitted: AtomicU64,
    listeners: Mutex<Listeners>,
}

impl Hub {
    /// The Prometheus text of everything published so far.
    pub fn render_metrics(&self) -> String {
        let hub = metrics::HubCounters {
            sinks: self
                .sinks
                .iter()
                .map(|s| {
                    (
                        s.name.clone(),
                        s.written.load(Ordering::Relaxed),
                        s.dropped.load(Ordering::Relaxed),
                    )
                })
                .collect(),
            captures: self.inspector.len() as u64,
            events_emitted: self.events_emitted.load(Ordering::Relaxed),
        };
        let stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        metrics::render(stats.iter().flatten().map(|b| &**b), &hub)
    }

    pub fn set_listeners(&self, l: Listeners) {
        *self.listeners.lock().unwrap_or_else(|p| p.into_inner()) = l;
    }

    pub fn listeners(&self) -> Listeners {
        *self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Starts the hub (drainer thread and sinks) and makes one `WorkerObs`
/// per worker. `overrides`: some endpoint sets `inspect` or `events`, so
/// records must be queued even if `[observe]` switches both off.
pub fn start(
    cfg: &ObserveConfig,
    overrides: bool,
    workers: usize,
) -> std::io::Result<(Arc<Hub>, Vec<WorkerObs>)> {
    let mut sinks = Vec::with_capacity(cfg.sinks.len());
    for s in &cfg.sinks {
        sinks.push((sink::start(&s.to, cfg.queue)?, s.select.clone()));
    }
    let queues = cfg.inspect != CaptureMode::Off || cfg.events_on() || overrides;
    let hub = Arc::new(Hub {
        config: cfg.clone(),
        stats: Mutex::new((0..workers).map(|_| None).collect()),
        inspector: inspector::Inspector::new(cfg.ring),
        sinks: sinks
            .iter()
            .map(|(s, _)| SinkCounters {
                name: s.name.clone(),
                written: s.written.clone(),
                dropped: s.dropped.clone(),
            })
            .collect(),
        events_emitted: AtomicU64::new(0),
        listeners: Mutex::new(Listeners::default()),
    });
    let (flush_tx, flush_rx) = mpsc::channel::<Flush>();
    let mut rxs = Vec::with_capacity(workers);
    let mut obs = Vec::with_capacity(workers);
    for id in 0..workers {
        let queue = if queues {
            let (tx, rx) = queue::channel(queue_bytes(cfg));
            rxs.push(rx);
            Some(tx)
        } else {
            None
        };
        let flush = cfg.metrics.then(|| flush_tx.clone());
        obs.push(WorkerObs::new(id, cfg, queue, flush));
    }
    drop(flush_tx);
    let h = hub.clone();
    std::thread::Builder::new()
        .name("ringress-observe".into())
        .spawn(move || drain(&h, flush_rx, rxs, groups(sinks)))?;
    Ok((hub, obs))
}

/// The bytes of a worker's record ring: `events_queue` KiB (a typical
/// record with its heads is well under 1 KiB), and room for a few records
/// with both bodies captured in full.
fn queue_bytes(cfg: &ObserveConfig) -> usize {
    cfg.queue
        .saturating_mul(1024)
        .max(4 * (2 * cfg.body_cap + 64 * 1024))
}

/// How long the drainer sleeps after a round with work (records wait in
/// the rings meanwhile: a worker never wakes the drainer), and when idle.
const DRAIN_EVERY: Duration = Duration::from_millis(20);
const DRAIN_IDLE: Duration = Duration::from_millis(50);

/// A batch every sink has finished with, emptied for reuse (the big
/// buffers are recycled instead of allocated every round).
fn reuse(sent: &mut std::collections::VecDeque<Arc<sink::Batch>>) -> Option<sink::Batch> {
    let i = sent.iter().position(|b| Arc::strong_count(b) == 1)?;
    let mut b = Arc::try_unwrap(sent.remove(i)?).ok()?;
    b.bytes.clear();
    b.lines = 0;
    Some(b)
}

/// Sinks that asked for the same events and fields: their events are
/// written once per round, into one batch they all get.
struct Group {
    plans: events::Plans,
    sinks: Vec<sink::Sink>,
    batch: sink::Batch,
    /// Batches handed to the sinks, recycled once they are done.
    sent: std::collections::VecDeque<Arc<sink::Batch>>,
}

fn groups(sinks: Vec<(sink::Sink, fields::Selection)>) -> Vec<Group> {
    let mut out: Vec<(fields::Selection, Group)> = Vec::new();
    for (s, sel) in sinks {
        match out.iter_mut().find(|(k, _)| *k == sel) {
            Some((_, g)) => g.sinks.push(s),
            None => {
                let g = Group {
                    plans: events::Plans::new(&sel),
                    sinks: vec![s],
                    batch: sink::Batch::default(),
                    sent: std::collections::VecDeque::new(),
                };
                out.push((sel, g));
            }
        }
    }
    out.into_iter().map(|(_, g)| g).collect()
}

impl Group {
    /// Adds one line to this round's batch if `write` writes an event
    /// under this group's plans; whether it did.
    fn line(&mut self, write: impl FnOnce(&mut Vec<u8>, &events::Plans) -> bool) -> bool {
        if !write(&mut self.batch.bytes, &self.plans) {
            return false;
        }
        self.batch.bytes.push(b'\n');
        self.batch.lines += 1;
        true
    }

    /// Hands this round's batch to the sinks (if it has lines).
    fn send(&mut self) {
        if self.batch.lines == 0 {
            return;
        }
        let next = reuse(&mut self.sent).unwrap_or_else(|| sink::Batch {
            bytes: Vec::with_capacity(self.batch.bytes.capacity()),
            lines: 0,
        });
        let full = Arc::new(std::mem::replace(&mut self.batch, next));
        for s in &self.sinks {
            s.offer(&full);
        }
        self.sent.push_back(full);
        if self.sent.len() > 4 {
            self.sent.pop_front();
        }
    }
}

/// The drainer: published counters in, records out to the inspector and
/// the sinks, a batch per sink group per round.
fn drain(hub: &Hub, flush: Receiver<Flush>, mut rxs: Vec<RecordConsumer>, mut groups: Vec<Group>) {
    let mut idle_rounds = 0u32;
    let mut flush_open = true;
    let mut last_report = std::time::Instant::now();
    let mut reported = 0u64;
    let mut writer = events::EventWriter::default();
    let mut capturer = inspector::Capturer::new(&hub.inspector);
    loop {
        let mut work = 0usize;
        while flush_open {
            match flush.try_recv() {
                Ok(f) => {
                    let mut s = hub.stats.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(slot) = s.get_mut(f.worker) {
                        *slot = Some(f.stats);
                    }
                    work += 1;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => flush_open = false,
            }
        }
        let now = SystemTime::now();
        let mut emitted = 0u64;
        for rx in &mut rxs {
            work += rx.drain(usize::MAX, |frame| match record::decode(frame) {
                Some(Record::Http(r)) => {
                    if r.events {
                        let mut any = false;
                        for g in &mut groups {
                            any |= g.line(|o, p| writer.http(o, &r, now, p));
                        }
                        emitted += u64::from(any);
                    }
                    capturer.add(&r, frame);
                }
                Some(Record::Tcp(r)) => {
                    let mut any = false;
                    for g in &mut groups {
                        any |= g.line(|o, p| writer.tcp(o, &r, now, p));
                    }
                    emitted += u64::from(any);
                }
                None => warn!("observe: an undecodable record was skipped"),
            });
            // The rings' lock is held for one worker's records at most.
            capturer.store();
        }
        if emitted > 0 {
            hub.events_emitted.fetch_add(emitted, Ordering::Relaxed);
        }
        for g in &mut groups {
            g.send();
        }
        if !flush_open && rxs.iter().all(RecordConsumer::finished) {
            return;
        }
        report_drops(hub, &mut last_report, &mut reported);
        if work > 0 {
            idle_rounds = 0;
            std::thread::sleep(DRAIN_EVERY);
            continue;
        }
        idle_rounds = idle_rounds.saturating_add(1);
        std::thread::sleep(if idle_rounds < 50 {
            DRAIN_EVERY
        } else {
            DRAIN_IDLE
        });
    }
}

/// Logs, at most every 5 s, how many events were dropped since the last
/// report (worker queues and sinks).
fn report_drops(hub: &Hub, last: &mut std::time::Instant, reported: &mut u64) {
    if last.elapsed() < Duration::from_secs(5) {
        return;
    }
    *last = std::time::Instant::now();
    let sinks: u64 = hub
        .sinks
        .iter()
        .map(|s| s.dropped.load(Ordering::Relaxed))
        .sum();
    let workers: u64 = hub
        .stats
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .flatten()
        .map(|s| s.events_dropped)
        .sum();
    let total = sinks + workers;
    if total > *reported {
        warn!(
            dropped = total - *reported,
            total, "events dropped: a sink or the drainer cannot keep up (see ringress_events_dropped_total)"
        );
        *reported = total;
    }
}

#[cfg(test)]
mod cost {
    use super::*;

    /// `cargo test --release --lib observe::cost -- --ignored --nocapture`:
    /// the drainer's work per record (decode, a ten-field event, a
    /// metadata capture), hot and with a cold ring, in ns.
    #[test]
    #[ignore]
    fn drainer_cost_per_record() {
        let mut r = record::tests::http();
        r.req_head = b"GET / HTTP/1.1\r\nHost: bench.local\r\n\r\n";
        r.res_head = b"HTTP/1.1 200 OK\r\nServer: nginx/1.26.3\r\nDate: Fri, 04 Dec 2026 04:35:08 GMT\r\nContent-Type: application/octet-stream\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n";
        r.endpoint = "http://bench.local";
        r.capture = CaptureMode::Metadata;
        let mut frames = Vec::new();
        const N: usize = 860;
        for _ in 0..N {
            record::encode_http(&mut frames, &r);
        }
        let mut sel = fields::Selection::none();
        let ten: Vec<String> = [
            "conn.client_ip",
            "http.request.method",
            "http.request.url.host",
            "http.request.url.path",
            "http.request.url.query",
            "http.request.user_agent",
            "http.response.status_code",
            "http.response.body_length",
            "http.duration_ms",
            "endpoint.url",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        sel.add("http_request_complete.v0", Some(&ten)).unwrap();
        let plans = events::Plans::new(&sel);
        let ins = inspector::Inspector::new(500);
        let mut writer = events::EventWriter::default();
        let mut capturer = inspector::Capturer::new(&ins);
        let mut batch = Vec::with_capacity(512 * 1024);
        let now = SystemTime::now();
        let frame_len = frames.len() / N;
        for what in ["decode", "event", "capture", "both"] {
            let rounds = 100;
            let mut best = f64::MAX;
            for _ in 0..8 {
                let t = std::time::Instant::now();
                for _ in 0..rounds {
                    batch.clear();
                    for f in frames.chunks(frame_len) {
                        let Some(Record::Http(d)) = record::decode(f) else {
                            panic!()
                        };
                        if what == "event" || what == "both" {
                            writer.http(&mut batch, &d, now, &plans);
                            batch.push(b'\n');
                        }
                        if what == "capture" || what == "both" {
                            capturer.add(&d, f);
                        }
                        std::hint::black_box(&d);
                    }
                    capturer.store();
                }
                best = best.min(t.elapsed().as_nanos() as f64 / (rounds * N) as f64);
            }
            let ns = best;
            println!(
                "{what}: {ns:.0} ns/record (frame {frame_len} B, line {} B)",
                batch.len() / N.max(1)
            );
        }
    }
}
