//! Soak: mixed traffic through config and agent endpoints for
//! `SOAK_DURATION` (default 90 s in the test suite; `loadtest/soak.sh`
//! runs 30 min), with agent churn (our agent SIGKILLed and restarted every
//! 3 s, the ngrok SDK every 15 s) and an edge upgrade in the middle.
//!
//! Checks: every response is either correct or, for a churned agent's
//! URL, a clean edge error (a complete 502/503/404 carrying an
//! `ngrok-error-code`); nothing else fails. The edge's RSS is sampled every
//! 2 s and must stay flat within each process. A summary line (`soak:`)
//! goes to stdout (`--nocapture`).
//!
//! Traffic: keep-alive and new-connection GETs to a config endpoint,
//! WebSocket sessions, 4 MiB downloads (digest checked), HTTPS GETs to the
//! SDK's and our agent's URLs.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::agent::{dev_ca, Agent};
use common::sdk::{sdk_available, Sdk};
use common::upgrade::{https_get, upgrade_ok, Ctl};
use common::*;

/// Download size (Pattern bytes, Content-Length).
const DOWNLOAD: u64 = 4 << 20;

fn soak_duration() -> Duration {
    match std::env::var("SOAK_DURATION") {
        Ok(v) => humantime::parse_duration(&v).expect("SOAK_DURATION like 90s or 30m"),
        Err(_) => Duration::from_secs(90),
    }
}

/// A tiny echo upstream that keeps no record (a 30 min soak would
/// otherwise keep every request in memory): 200, body = the request target.
struct Echo {
    addr: SocketAddr,
}

impl Echo {
    fn start() -> Echo {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(330)));
                    let mut r = BufReader::new(s.try_clone().expect("clone"));
                    let mut w = s;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let target = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                        loop {
                            let mut h = String::new();
                            if r.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            if h == "\r\n" || h == "\n" {
                                break;
                            }
                        }
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{target}",
                            target.len()
                        );
                        if w.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Echo { addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Outcomes by kind: `ok`, `clean_error`, and failures with a sample.
#[derive(Default)]
struct Stats {
    counts: Mutex<BTreeMap<String, (u64, u64)>>,
    failures: Mutex<Vec<String>>,
}

impl Stats {
    fn ok(&self, kind: &str) {
        self.counts
            .lock()
            .expect("lock")
            .entry(kind.into())
            .or_default()
            .0 += 1;
    }

    fn clean_error(&self, kind: &str) {
        self.counts
            .lock()
            .expect("lock")
            .entry(kind.into())
            .or_default()
            .1 += 1;
    }

    fn fail(&self, kind: &str, what: String) {
        self.failures
            .lock()
            .expect("lock")
            .push(format!("{kind}: {what}"));
    }
}

fn get_checked(c: &mut Client, path: &str) -> Result<Response, String> {
    c.send(format!("GET {path} HTTP/1.1\r\nHost: {APP_HOST}\r\n\r\n"))
        .map_err(|e| format!("send: {e}"))?;
    let r = c.read_response().map_err(|e| format!("read: {e}"))?;
    if r.status != 200 || r.text() != path {
        return Err(format!("{path}: {} {:?}", r.status, r.text()));
    }
    Ok(r)
}

/// Keep-alive (with the usual retry of a request on a reused connection
/// the server closed first) or a new connection per request.
fn http_loop(addr: SocketAddr, keep_alive: bool, id: usize, stop: &AtomicBool, stats: &Stats) {
    let kind = if keep_alive {
        "http_keepalive"
    } else {
        "http_new_conn"
    };
    let mut conn: Option<Client> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let path = format!("/{kind}/{id}/{n}");
        let reused = conn.is_some();
        let mut c = match conn.take() {
            Some(c) => c,
            None => match Client::try_connect(addr) {
                Ok(c) => c,
                Err(e) => {
                    stats.fail(kind, format!("connect: {e}"));
                    continue;
                }
            },
        };
        let r = match get_checked(&mut c, &path) {
            Err(e) if reused && c.buffered().is_empty() && !e.starts_with('/') => {
                Client::try_connect(addr)
                    .map_err(|e| format!("reconnect: {e}"))
                    .and_then(|mut c2| get_checked(&mut c2, &path).map(|r| (r, c2)))
                    .map(|(r, c2)| {
                        c = c2;
                        r
                    })
            }
            other => other,
        };
        match r {
            Ok(r) => {
                stats.ok(kind);
                if keep_alive && !r.connection_close() {
                    conn = Some(c);
                }
            }
            Err(e) => stats.fail(kind, e),
        }
        thread::sleep(Duration::from_millis(2));
    }
}

fn ws_loop(addr: SocketAddr, stop: &AtomicBool, stats: &Stats) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let result = (|| -> Result<(), String> {
            let s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            let (mut ws, _) = tungstenite::client("ws://ws.example.com/soak", s)
                .map_err(|e| format!("handshake: {e}"))?;
            for i in 0..20 {
                let msg = format!("ws {n} {i}");
                ws.send(tungstenite::Message::text(msg.clone()))
                    .map_err(|e| format!("send: {e}"))?;
                let back = ws.read().map_err(|e| format!("read: {e}"))?;
                if back.into_text().map_err(|e| e.to_string())? != msg {
                    return Err("echo mismatch".into());
                }
                thread::sleep(Duration::from_millis(50));
            }
            ws.close(None).map_err(|e| format!("close: {e}"))?;
            loop {
                match ws.read() {
                    Ok(_) => continue,
                    Err(tungstenite::Error::ConnectionClosed) => return Ok(()),
                    Err(e) => return Err(format!("close handshake: {e}")),
                }
            }
        })();
        match result {
            Ok(()) => stats.ok("websocket"),
            Err(e) => stats.fail("websocket", e),
        }
    }
}

fn download_loop(addr: SocketAddr, want: String, stop: &AtomicBool, stats: &Stats) {
    while !stop.load(Ordering::Relaxed) {
        let result = (|| -> Result<(), String> {
            let mut c = Client::try_connect(addr).map_err(|e| e.to_string())?;
            c.send("GET /big HTTP/1.1\r\nHost: dl.example.com\r\nConnection: close\r\n\r\n")
                .map_err(|e| e.to_string())?;
            let r = c.read_response().map_err(|e| format!("read: {e}"))?;
            let got = Digest::of(&r.body);
            if r.status != 200 || got != want {
                return Err(format!(
                    "status {} digest {got} len {}",
                    r.status,
                    r.body.len()
                ));
            }
            Ok(())
        })();
        match result {
            Ok(()) => stats.ok("download"),
            Err(e) => stats.fail("download", e),
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// HTTPS GETs to an agent URL; a churned agent's URL may answer with a
/// clean edge error while its agent is away.
fn agent_loop(
    https: SocketAddr,
    ca: PathBuf,
    host: &str,
    kind: &str,
    stop: &AtomicBool,
    stats: &Stats,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let path = format!("/{kind}/{n}");
        match https_get(https, &ca, host, &path) {
            Ok((200, text)) if text.ends_with(&path) => stats.ok(kind),
            Ok((status, text))
                if matches!(status, 404 | 502 | 503)
                    && text
                        .to_ascii_lowercase()
                        .contains("ngrok-error-code: err_ngrok_") =>
            {
                stats.clean_error(kind)
            }
            Ok((status, text)) => {
                stats.fail(kind, format!("{status}: {}", &text[..text.len().min(200)]))
            }
            Err(e) => stats.fail(kind, e),
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// RSS samples (KiB) of a PID, every 2 s.
fn rss_kib(pid: libc::pid_t) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn soak_mixed_traffic_agent_churn_and_an_upgrade() {
    if !sdk_available() {
        return;
    }
    let duration = soak_duration();
    let echo = Echo::start();
    let ws_up = Upstream::start(Behaviour::WebSocketEcho);
    let dl_up = Upstream::start(Behaviour::Stream {
        len: DOWNLOAD,
        chunked: false,
    });
    let ctl = Ctl::new();
    let data = tempfile::tempdir().expect("tempdir");
    let data_dir = data.path().to_str().expect("utf-8").to_owned();
    // reserve_grace 0: a restarted agent (a new token) takes its URL back
    // at once; handed-over URLs are still kept 10 s during the upgrade.
    let config = format!(
        "{}{}{}\n[tunnel]\nreserve_grace = \"0s\"\n",
        endpoint("http://app.example.com", &echo.url()),
        endpoint("http://ws.example.com", &ws_up.url()),
        endpoint("http://dl.example.com", &dl_up.url()),
    );
    let mut edge = Edge::builder(&config)
        .arg("--dev")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--listen-https")
        .arg("127.0.0.1:0")
        .arg("--upgrade-socket")
        .arg(&ctl.socket_str())
        .start();
    let ca = dev_ca(&edge);
    let https = edge.listener_addr("https");
    let tunnel = edge.listener_addr("tunnel");
    let echo_port = echo.addr.port().to_string();
    let sdk = Arc::new(Mutex::new(Some(Sdk::start(
        tunnel,
        &ca,
        "sdk.ringress.localhost",
        echo.addr.port(),
    ))));
    let ours_args = ["--url", "https://churn.ringress.localhost"];
    let agent = Arc::new(Mutex::new(Some(
        Agent::start(&edge, &echo_port, &ours_args).0,
    )));

    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Stats::default());
    let want = Pattern::new().digest(DOWNLOAD);
    let addr = edge.addr();
    let mut threads = Vec::new();
    let spawn = |f: Box<dyn FnOnce() + Send>| thread::spawn(f);
    for i in 0..2 {
        let (stop, stats) = (stop.clone(), stats.clone());
        threads.push(spawn(Box::new(move || {
            http_loop(addr, true, i, &stop, &stats)
        })));
    }
    {
        let (stop, stats) = (stop.clone(), stats.clone());
        threads.push(spawn(Box::new(move || {
            http_loop(addr, false, 9, &stop, &stats)
        })));
    }
    {
        let (stop, stats) = (stop.clone(), stats.clone());
        threads.push(spawn(Box::new(move || ws_loop(addr, &stop, &stats))));
    }
    {
        let (stop, stats) = (stop.clone(), stats.clone());
        threads.push(spawn(Box::new(move || {
            download_loop(addr, want, &stop, &stats)
        })));
    }
    for (host, kind) in [
        ("sdk.ringress.localhost", "agent_sdk"),
        ("churn.ringress.localhost", "agent_ours"),
    ] {
        let (stop, stats, ca) = (stop.clone(), stats.clone(), ca.clone());
        threads.push(spawn(Box::new(move || {
            agent_loop(https, ca, host, kind, &stop, &stats)
        })));
    }

    // Churn, the upgrade in the middle, RSS samples.
    let start = Instant::now();
    let mut samples: Vec<(libc::pid_t, Duration, u64)> = Vec::new();
    let mut pid = edge.pid();
    let mut successor = None;
    let mut last_ours = Instant::now();
    let mut last_sdk = Instant::now();
    let mut last_sample = Instant::now() - Duration::from_secs(10);
    let mut churns = (0u32, 0u32);
    let mut restart_races = 0u32;
    while start.elapsed() < duration {
        thread::sleep(Duration::from_millis(100));
        if successor.is_none() && start.elapsed() >= duration / 2 {
            let (s, took) = upgrade_ok(&edge, &ctl, &["--dev", "--data-dir", &data_dir]);
            println!(
                "soak: upgraded at {:?} in {took:?} (pid {} → {})",
                start.elapsed(),
                pid,
                s.0
            );
            pid = s.0;
            successor = Some(s);
            // Let the agents move over before the next kill: a kill while
            // an agent reconnects would leave its URL reserved (10 s) for
            // a token the restarted agent does not have.
            last_ours = Instant::now();
            last_sdk = Instant::now();
        }
        if last_ours.elapsed() >= Duration::from_secs(3) {
            let mut guard = agent.lock().expect("lock");
            if let Some(mut a) = guard.take() {
                a.signal(libc::SIGKILL);
                let _ = a.wait_exit(Duration::from_secs(5));
            }
            // Restart right away, as a supervisor would. The edge drops the
            // killed session when it reads the connection's end; a restart
            // that wins that race is refused ("already online") and tried
            // again, like a supervisor's next attempt.
            let restart_deadline = Instant::now() + Duration::from_secs(10);
            let restarted = loop {
                match Agent::try_start(&edge, &echo_port, &ours_args) {
                    Ok((a, _)) => break a,
                    Err(e) if e.contains("already online") && Instant::now() < restart_deadline => {
                        restart_races += 1;
                        thread::sleep(Duration::from_millis(200));
                    }
                    Err(e) => panic!("restarting our agent: {e}"),
                }
            };
            *guard = Some(restarted);
            churns.0 += 1;
            last_ours = Instant::now();
        }
        if last_sdk.elapsed() >= Duration::from_secs(15) {
            let mut guard = sdk.lock().expect("lock");
            drop(guard.take());
            *guard = Some(Sdk::start(
                tunnel,
                &ca,
                "sdk.ringress.localhost",
                echo.addr.port(),
            ));
            churns.1 += 1;
            last_sdk = Instant::now();
        }
        if last_sample.elapsed() >= Duration::from_secs(2) {
            if let Some(kib) = rss_kib(pid) {
                samples.push((pid, start.elapsed(), kib));
            }
            last_sample = Instant::now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("traffic thread");
    }
    assert!(
        edge.wait_exit(Duration::from_secs(40)).is_some(),
        "the old edge never exited"
    );

    let counts = stats.counts.lock().expect("lock").clone();
    let failures = stats.failures.lock().expect("lock").clone();
    let mut rss_line = String::new();
    let mut flat = true;
    for p in [edge.pid(), pid] {
        let mine: Vec<u64> = samples.iter().filter(|s| s.0 == p).map(|s| s.2).collect();
        if mine.len() < 4 {
            continue;
        }
        // After a warm-up quarter: the last sample against the first.
        let warm = mine[mine.len() / 4];
        let last = *mine.last().expect("sample");
        let max = *mine.iter().max().expect("sample");
        rss_line += &format!(" pid{p}: warm={warm}KiB last={last}KiB max={max}KiB");
        if last > warm + warm / 4 + 16 * 1024 {
            flat = false;
        }
    }
    println!(
        "soak: duration={duration:?} churn(ours,sdk)={churns:?} restart_races={restart_races} counts(ok,clean_error)={counts:?} failures={}{rss_line}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    for kind in [
        "http_keepalive",
        "http_new_conn",
        "websocket",
        "download",
        "agent_sdk",
        "agent_ours",
    ] {
        assert!(
            counts.get(kind).is_some_and(|c| c.0 > 0),
            "no successful {kind}: {counts:?}"
        );
    }
    assert!(flat, "RSS grew:{rss_line}");
    drop(successor);
    drop(agent);
    drop(sdk);
}
