//! Slowloris from loopback (issue 11): thousands of connections that
//! trickle a request head a byte at a time, while a normal client makes
//! requests. The edge must cut each slow connection once
//! `timeouts.header_read` has passed since its first byte (408), keep the
//! normal client's latency bounded meanwhile, and, when the slow
//! connections exceed `limits.max_connections_per_worker`, serve the
//! normal client once the cut frees slots.
//!
//! Timing assertions are generous (a noisy 2-core machine); the numbers
//! for docs/reliability.md come from a run with `--nocapture`, which
//! prints them (`SLOWLORIS_CONNS` changes the count).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Raises this process's open-file limit (children inherit it) towards
/// `want`; returns the soft limit in force.
fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            let _ = libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

fn conns_wanted(default: usize) -> usize {
    let want = std::env::var("SLOWLORIS_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let limit = raise_nofile(want as u64 * 2 + 2000) as usize;
    // Both ends of every connection are in this process tree: the test's
    // and the edge's (which inherits the limit), plus some spare.
    let n = want.min(limit.saturating_sub(200) / 2);
    assert!(n >= 300, "open-file limit {limit} is too low for this test");
    n
}

struct Slow {
    sock: TcpStream,
    opened: Instant,
    closed: Option<(Duration, bool)>,
}

/// The slow clients: `n` connections, each sent the start of a head and
/// then one more byte per round, until the edge closes it.
struct Attack {
    conns: Arc<Mutex<Vec<Slow>>>,
    stop: Arc<AtomicBool>,
    driver: Option<thread::JoinHandle<()>>,
    open_time: Duration,
}

const HEAD: &[u8] = b"GET /slow HTTP/1.1\r\nHost: app.example.com\r\nX-Slow: ";

impl Attack {
    fn start(addr: SocketAddr, n: usize) -> Attack {
        let t = Instant::now();
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let sock = TcpStream::connect(addr).expect("slow connect");
            sock.set_nonblocking(true).expect("nonblocking");
            let _ = (&sock).write(&HEAD[..1]);
            conns.push(Slow {
                sock,
                opened: Instant::now(),
                closed: None,
            });
        }
        let open_time = t.elapsed();
        let conns = Arc::new(Mutex::new(conns));
        let stop = Arc::new(AtomicBool::new(false));
        let driver = {
            let (conns, stop) = (conns.clone(), stop.clone());
            thread::spawn(move || {
                let mut round = 1usize;
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    {
                        let mut conns = conns.lock().expect("lock");
                        for c in conns.iter_mut().filter(|c| c.closed.is_none()) {
                            let byte = HEAD.get(round).copied().unwrap_or(b'a');
                            let ended = match (&c.sock).read(&mut buf) {
                                Ok(0) => Some(false),
                                Ok(n) => Some(buf[..n].starts_with(b"HTTP/1.1 408")),
                                Err(e) if e.kind() == ErrorKind::WouldBlock => None,
                                Err(_) => Some(false),
                            };
                            let ended = ended.or_else(|| match (&c.sock).write(&[byte]) {
                                Ok(_) => None,
                                Err(e) if e.kind() == ErrorKind::WouldBlock => None,
                                Err(_) => Some(false),
                            });
                            if let Some(got_408) = ended {
                                c.closed = Some((c.opened.elapsed(), got_408));
                            }
                        }
                        if conns.iter().all(|c| c.closed.is_some()) {
                            return;
                        }
                    }
                    round += 1;
                    thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Attack {
            conns,
            stop,
            driver: Some(driver),
            open_time,
        }
    }

    fn open_count(&self) -> usize {
        let conns = self.conns.lock().expect("lock");
        conns.iter().filter(|c| c.closed.is_none()).count()
    }

    /// Waits until every slow connection was closed (or `within`).
    fn wait_all_closed(&mut self, within: Duration) -> bool {
        wait_until(within, || self.open_count() == 0)
    }

    /// (closed, of which with a 408, min and max time to close).
    fn stats(&self) -> (usize, usize, Duration, Duration) {
        let conns = self.conns.lock().expect("lock");
        let closed: Vec<(Duration, bool)> = conns.iter().filter_map(|c| c.closed).collect();
        let with_408 = closed.iter().filter(|(_, r)| *r).count();
        let min = closed.iter().map(|c| c.0).min().unwrap_or_default();
        let max = closed.iter().map(|c| c.0).max().unwrap_or_default();
        (closed.len(), with_408, min, max)
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(d) = self.driver.take() {
            let _ = d.join();
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn edge_config(up: &Upstream, extra: &str) -> String {
    format!(
        "workers = 2\n{extra}\n{}",
        endpoint(&format!("http://{APP_HOST}"), &up.url())
    )
}

#[test]
fn slowloris_is_cut_at_header_read_and_a_normal_client_stays_fast() {
    let n = conns_wanted(2000);
    let up = Upstream::start(Behaviour::Echo);
    let header_read = Duration::from_secs(4);
    let edge = Edge::start(&edge_config(&up, "[timeouts]\nheader_read = \"4s\"\n"));
    let rss_before = edge.rss_kib();
    let mut attack = Attack::start(edge.addr(), n);
    // A normal client (a new connection per request) for as long as the
    // slow connections are open, including the moment they are all cut.
    let mut lat = Vec::new();
    let t = Instant::now();
    let mut rss_peak = 0;
    while attack.open_count() > 0 && t.elapsed() < header_read + Duration::from_secs(10) {
        let s = Instant::now();
        let r = get(edge.addr(), APP_HOST, "/normal");
        lat.push(s.elapsed());
        assert_eq!(r.status, 200, "normal request during the attack");
        rss_peak = rss_peak.max(edge.rss_kib());
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        attack.wait_all_closed(Duration::from_secs(10)),
        "{} slow connections still open",
        attack.open_count()
    );
    let (closed, with_408, min, max) = attack.stats();
    lat.sort();
    let (p50, p99, worst) = (
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[lat.len() - 1],
    );
    eprintln!(
        "slowloris: {n} slow connections opened in {:?}; {closed} closed by the edge ({with_408} with 408) after {min:?} to {max:?} (header_read {header_read:?}); normal client: {} requests, p50 {p50:?} p99 {p99:?} max {worst:?}; edge RSS {rss_before} KiB before, {rss_peak} KiB peak during",
        attack.open_time,
        lat.len(),
    );
    assert_eq!(closed, n);
    assert!(
        with_408 * 10 >= n * 9,
        "most slow clients get a 408: {with_408} of {n}"
    );
    assert!(
        min + Duration::from_millis(500) >= header_read,
        "cut too early: {min:?}"
    );
    assert!(
        max <= header_read + Duration::from_secs(8),
        "cut too late: {max:?}"
    );
    assert!(p99 < Duration::from_secs(1), "normal p99 {p99:?}");
    assert!(lat.len() >= 20, "only {} normal requests", lat.len());
    // Still serving after the attack.
    assert_eq!(get(edge.addr(), APP_HOST, "/after").status, 200);
}

/// More slow connections than the per-worker cap: accept pauses, the rest
/// wait in the kernel's backlog, and a normal client that arrives behind
/// them is served once header_read has cut the ones ahead of it (each
/// round of `cap` slow connections holds the slots for header_read).
#[test]
fn slowloris_over_the_connection_cap_only_delays_a_new_client() {
    let n = conns_wanted(1000).min(1000);
    let up = Upstream::start(Behaviour::Echo);
    let edge = Edge::start(&edge_config(
        &up,
        "[timeouts]\nheader_read = \"2s\"\n[limits]\nmax_connections_per_worker = 200\n",
    ));
    let attack = Attack::start(edge.addr(), n);
    assert!(
        edge.wait_for_log("connection cap reached", Duration::from_secs(10)),
        "the cap was not reached"
    );
    let s = Instant::now();
    let mut c = Client::connect(edge.addr());
    c.set_read_timeout(Duration::from_secs(20));
    let r = c.get(APP_HOST, "/behind-the-attack");
    let waited = s.elapsed();
    eprintln!(
        "slowloris over the cap: {n} slow connections, cap 2 x 200, header_read 2s; a new client waited {waited:?}"
    );
    assert_eq!(r.status, 200);
    // 1000 slow connections over 2 x 200 slots: at most three rounds of
    // 2 s ahead of the client.
    assert!(waited < Duration::from_secs(15), "waited {waited:?}");
    drop(attack);
}
