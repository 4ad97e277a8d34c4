//! Zero-downtime upgrades (`ringress edge --upgrade`, SIGUSR2) and fast
//! stops, with the real binary: no request fails across an upgrade under
//! load, the ngrok Python SDK and our agent serve again at once through
//! the new process, a WebSocket opened before the upgrade finishes
//! cleanly, and a failed upgrade leaves the old edge serving.
//!
//! The new process is started by the edge under test, not by the test; it
//! is cleaned up by PID (`Successor`).

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::agent::{dev_ca, Agent};
use common::sdk::{sdk_available, Sdk};
use common::upgrade::{https_get, run_upgrade, upgrade_ok, Ctl};
use common::*;

/// What the load threads saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failures: Mutex<Vec<String>>,
    max_latency_us: AtomicU64,
}

impl Tally {
    fn record_named(&self, started: Instant, result: Result<(), String>, what: &str) {
        let us = started.elapsed().as_micros() as u64;
        if us > 2_000_000 {
            eprintln!("slow request ({us} µs): {what} {result:?}");
        }
        self.max_latency_us.fetch_max(us, Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.failures.lock().expect("lock").push(e),
        }
    }

    fn assert_clean(&self, min_ok: u64) {
        let failures = self.failures.lock().expect("lock");
        assert!(
            failures.is_empty(),
            "{} of {} requests failed: {:?}",
            failures.len(),
            failures.len() as u64 + self.ok.load(Ordering::Relaxed),
            &failures[..failures.len().min(10)]
        );
        let ok = self.ok.load(Ordering::Relaxed);
        assert!(ok >= min_ok, "only {ok} requests completed");
    }
}

/// One GET on `c`; checks the echo names `path`.
fn echo_get(c: &mut Client, path: &str) -> Result<Response, String> {
    c.send(format!("GET {path} HTTP/1.1\r\nHost: {APP_HOST}\r\n\r\n"))
        .map_err(|e| format!("send: {e}"))?;
    let r = c.read_response().map_err(|e| format!("read: {e}"))?;
    if r.status != 200 || !r.text().contains(path) {
        return Err(format!("{path}: status {} body {:?}", r.status, r.text()));
    }
    Ok(r)
}

/// Requests in a loop until `stop`: new connections, or keep-alive ones
/// (a request on a reused connection that the server closed before any
/// byte of an answer is retried once on a new one, as HTTP clients do,
/// RFC 9112 §9.3.1).
fn load(addr: SocketAddr, keep_alive: bool, id: usize, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut conn: Option<Client> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let path = format!("/load/{id}/{n}");
        let started = Instant::now();
        let mut retried = false;
        let result = (|| {
            let reused = conn.is_some();
            let mut c = match conn.take() {
                Some(c) => c,
                None => Client::try_connect(addr).map_err(|e| format!("connect: {e}"))?,
            };
            let r = match echo_get(&mut c, &path) {
                Ok(r) => r,
                Err(e) if reused && c.buffered().is_empty() && !e.contains("status") => {
                    retried = true;
                    c = Client::try_connect(addr).map_err(|e| format!("reconnect: {e}"))?;
                    echo_get(&mut c, &path)?
                }
                Err(e) => return Err(e),
            };
            if keep_alive && !r.connection_close() {
                conn = Some(c);
            }
            Ok(())
        })();
        tally.record_named(
            started,
            result,
            &format!("{path} keep_alive={keep_alive} retried={retried}"),
        );
    }
}

#[test]
fn upgrade_under_load_loses_no_request() {
    let up = Upstream::start(Behaviour::Echo);
    let ctl = Ctl::new();
    let edge = Edge::builder(&app_config(&up, ""))
        .arg("--upgrade-socket")
        .arg(&ctl.socket_str())
        .start();
    let mut edge = edge;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (stop, tally, addr) = (stop.clone(), tally.clone(), edge.addr());
            thread::spawn(move || load(addr, i % 2 == 0, i, stop, tally))
        })
        .collect();
    thread::sleep(Duration::from_millis(700));
    let (first, _) = upgrade_ok(&edge, &ctl, &[]);
    assert!(
        edge.wait_exit(Duration::from_secs(15)).is_some(),
        "the old edge did not drain and exit"
    );
    assert!(first.alive());
    // And once more, from the successor: an upgrade is repeatable.
    thread::sleep(Duration::from_millis(500));
    let (second, _) = upgrade_ok(&edge, &ctl, &[]);
    assert!(
        wait_until(Duration::from_secs(15), || !first.alive()),
        "the first successor did not drain and exit"
    );
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("load thread");
    }
    tally.assert_clean(200);
    assert!(second.alive());
    let log = edge.stderr_text();
    assert_eq!(log.matches("upgraded=true").count(), 2, "{log}");
}

#[test]
fn failed_upgrades_leave_the_old_edge_serving() {
    let up = Upstream::start(Behaviour::Echo);
    let ctl = Ctl::new();
    let mut edge = Edge::builder(&app_config(&up, ""))
        .arg("--upgrade-socket")
        .arg(&ctl.socket_str())
        .start();
    let mut keep = Client::connect(edge.addr());
    echo_get(&mut keep, "/before").expect("served");
    let good = std::fs::read_to_string(edge.config_path()).expect("config");

    // 1. A broken file: `--upgrade` refuses before asking the edge.
    edge.write_config_raw("this is [not valid toml\n");
    let out = run_upgrade(edge.config_path(), &ctl, &[]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("invalid config"), "{}", out.stderr);

    // 2. The new process itself refuses: fewer workers than the sockets
    // it would inherit.
    edge.write_config_raw(&good.replace("workers = 2", "workers = 1"));
    let out = run_upgrade(edge.config_path(), &ctl, &[]);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("cannot lower the worker count"),
        "{}",
        out.stderr
    );

    // 3. SIGUSR2 with a broken file: the new process fails, the old one
    // logs why and carries on.
    edge.write_config_raw("workers = \"many\"\n");
    edge.signal(libc::SIGUSR2);
    assert!(
        edge.wait_for_log(
            "upgrade failed, this edge keeps serving",
            Duration::from_secs(20)
        ),
        "{}",
        edge.stderr_text()
    );

    // 4. No edge behind the socket: a clear error.
    let nobody = Ctl::new();
    let out = run_upgrade(edge.config_path(), &nobody, &[]);
    assert!(!out.status.success());

    assert!(edge.is_running());
    echo_get(&mut keep, "/after").expect("the old connection is still served");
    assert_eq!(get(edge.addr(), APP_HOST, "/new").status, 200);
    edge.write_config_raw(&good);
    let (_next, _) = upgrade_ok(&edge, &ctl, &[]);
    assert!(edge.wait_exit(Duration::from_secs(15)).is_some());
    assert_eq!(get(edge.addr(), APP_HOST, "/upgraded").status, 200);
}

/// Requests for an agent host in a loop until `stop`, each checked.
fn agent_load(
    https: SocketAddr,
    ca: PathBuf,
    host: &'static str,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let path = format!("/{host}/{n}");
        let started = Instant::now();
        let result = match https_get(https, &ca, host, &path) {
            Ok((200, text)) if text.contains(&path) => Ok(()),
            Ok((status, text)) => Err(format!(
                "{path}: {status}: {}",
                &text[..text.len().min(300)]
            )),
            Err(e) => Err(format!("{path}: {e}")),
        };
        tally.record_named(started, result, &path);
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sdk_agent_and_websocket_serve_across_an_upgrade() {
    if !sdk_available() {
        return;
    }
    let up = Upstream::start(Behaviour::Echo);
    let ws_up = Upstream::start(Behaviour::WebSocketEcho);
    let ctl = Ctl::new();
    let data = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "{}{}",
        endpoint("http://app.example.com", &up.url()),
        endpoint("http://ws.example.com", &ws_up.url())
    );
    let mut edge = Edge::builder(&config)
        .arg("--log-level")
        .arg(&std::env::var("UPGRADE_TEST_LOG").unwrap_or_else(|_| "info".into()))
        .arg("--dev")
        .arg("--data-dir")
        .arg(data.path().to_str().expect("utf-8"))
        .arg("--listen-https")
        .arg("127.0.0.1:0")
        .arg("--upgrade-socket")
        .arg(&ctl.socket_str())
        .start();
    let ca = dev_ca(&edge);
    let https = edge.listener_addr("https");
    let sdk = Sdk::start(
        edge.listener_addr("tunnel"),
        &ca,
        "sdk.ringress.localhost",
        up.addr().port(),
    );
    let (_agent, agent_url) = Agent::start(
        &edge,
        &up.addr().port().to_string(),
        &["--url", "https://ours.ringress.localhost"],
    );
    assert!(
        agent_url.starts_with("https://ours.ringress.localhost"),
        "{agent_url}"
    );
    for host in ["sdk.ringress.localhost", "ours.ringress.localhost"] {
        let ok = wait_until(Duration::from_secs(10), || {
            matches!(https_get(https, &ca, host, "/warm"), Ok((200, _)))
        });
        assert!(ok, "{host} not served before the upgrade");
    }

    // A WebSocket through the old process.
    let stream = TcpStream::connect(edge.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (mut ws, resp) =
        tungstenite::client("ws://ws.example.com/chat", stream).expect("websocket handshake");
    assert_eq!(resp.status().as_u16(), 101);
    ws.send(tungstenite::Message::text("before")).expect("send");
    assert_eq!(
        ws.read().expect("echo").into_text().expect("text"),
        "before"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let direct = Arc::new(Tally::default());
    let mut threads = Vec::new();
    for host in ["sdk.ringress.localhost", "ours.ringress.localhost"] {
        let (stop, tally, ca) = (stop.clone(), tally.clone(), ca.clone());
        threads.push(thread::spawn(move || {
            agent_load(https, ca, host, stop, tally)
        }));
    }
    for i in 0..2 {
        let (stop, tally, addr) = (stop.clone(), direct.clone(), edge.addr());
        threads.push(thread::spawn(move || {
            load(addr, i == 0, 100 + i, stop, tally)
        }));
    }
    thread::sleep(Duration::from_millis(500));
    let (next, _) = upgrade_ok(
        &edge,
        &ctl,
        &["--dev", "--data-dir", data.path().to_str().expect("utf-8")],
    );

    // The WebSocket keeps working through the draining old process, and
    // finishes with a clean close handshake.
    ws.send(tungstenite::Message::text("after"))
        .expect("send after the upgrade");
    assert_eq!(ws.read().expect("echo").into_text().expect("text"), "after");
    ws.close(None).expect("close");
    let end = loop {
        match ws.read() {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(end, tungstenite::Error::ConnectionClosed),
        "the WebSocket did not close cleanly: {end:?}"
    );
    drop(ws);

    // Both agents reconnect to the new process at once; requests for
    // their hosts meanwhile wait for them instead of failing.
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("load thread");
    }
    tally.assert_clean(40);
    direct.assert_clean(100);
    // The gap: no agent request waited anywhere near the SDKs' 2.5 s.
    let max = Duration::from_micros(tally.max_latency_us.load(Ordering::Relaxed));
    assert!(
        max < Duration::from_millis(2500),
        "a request waited {max:?} for an agent to come back"
    );
    assert!(
        edge.wait_exit(Duration::from_secs(15)).is_some(),
        "the old edge did not drain"
    );
    // The new process serves the same URLs, and each agent authenticated
    // again (the SDK has one session, ours one per worker).
    for host in ["sdk.ringress.localhost", "ours.ringress.localhost"] {
        let r = https_get(https, &ca, host, "/later").expect("served");
        assert_eq!(r.0, 200, "{host}: {}", r.1);
    }
    let log = edge.stderr_text();
    let sdk_auths = log
        .lines()
        .filter(|l| l.contains("agent session authenticated") && l.contains("ngrok-python"))
        .count();
    assert!(
        sdk_auths >= 2,
        "the SDK did not reconnect:\n{log}\nSDK:\n{}",
        sdk.stderr()
    );
    assert!(next.alive());
}

#[test]
fn stop_with_idle_agent_sessions_is_quick() {
    if !sdk_available() {
        return;
    }
    let up = Upstream::start(Behaviour::Echo);
    let data = tempfile::tempdir().expect("tempdir");
    let mut edge = Edge::builder("")
        .arg("--dev")
        .arg("--data-dir")
        .arg(data.path().to_str().expect("utf-8"))
        .arg("--listen-https")
        .arg("127.0.0.1:0")
        .start();
    let ca = dev_ca(&edge);
    let https = edge.listener_addr("https");
    let _sdk = Sdk::start(
        edge.listener_addr("tunnel"),
        &ca,
        "idle.ringress.localhost",
        up.addr().port(),
    );
    let (_agent, _) = Agent::start(
        &edge,
        &up.addr().port().to_string(),
        &["--url", "https://idle2.ringress.localhost"],
    );
    for host in ["idle.ringress.localhost", "idle2.ringress.localhost"] {
        assert!(wait_until(Duration::from_secs(10), || {
            matches!(https_get(https, &ca, host, "/"), Ok((200, _)))
        }));
    }
    // Idle keep-alive client connections too.
    let _idle: Vec<Client> = (0..4)
        .map(|i| {
            let mut c = Client::connect(edge.addr());
            assert_eq!(c.get(APP_HOST, &format!("/idle/{i}")).status, 404);
            c
        })
        .collect();
    let t = Instant::now();
    edge.sigterm();
    assert!(edge.wait_exit(Duration::from_secs(10)).is_some());
    let took = t.elapsed();
    // Well inside the SDKs' 2.5 s retry window, so a stop→start keeps them.
    assert!(took < Duration::from_millis(1000), "stop took {took:?}");
}

#[test]
fn an_upgrade_may_add_workers() {
    let up = Upstream::start(Behaviour::Echo);
    let ctl = Ctl::new();
    let mut edge = Edge::builder(&app_config(&up, ""))
        .arg("--upgrade-socket")
        .arg(&ctl.socket_str())
        .start();
    let text = std::fs::read_to_string(edge.config_path()).expect("config");
    edge.write_config_raw(&text.replace("workers = 2", "workers = 3"));
    // The running edge's own arguments are used for the new process; the
    // file is re-read by it, so the new process runs 3 workers: 2 on the
    // inherited sockets, 1 on a new SO_REUSEPORT socket of the same port.
    let (next, _) = upgrade_ok(&edge, &ctl, &[]);
    assert!(edge.wait_exit(Duration::from_secs(15)).is_some());
    assert!(
        edge.stderr_text().contains("workers=3"),
        "{}",
        edge.stderr_text()
    );
    for i in 0..20 {
        let mut c = Client::connect(edge.addr());
        echo_get(&mut c, &format!("/more/{i}")).expect("served by the new process");
    }
    assert!(next.alive());
}

/// Cloud endpoints live in the store, which only one process may hold:
/// the old process releases it before starting its successor, which loads
/// them before it accepts. Requests to a cloud endpoint never fail across
/// the upgrade, and the API (same socket) answers from the new process.
#[test]
fn cloud_endpoints_and_the_api_survive_an_upgrade() {
    use common::api::{api_base, authed, bootstrap_key, data_dir};
    let data = data_dir();
    let ctl = Ctl::new();
    let mut edge = Edge::builder("")
        .arg("--dev")
        .arg("--data-dir")
        .arg(data.path().to_str().expect("utf-8"))
        .arg("--listen-api")
        .arg("127.0.0.1:0")
        .arg("--upgrade-socket")
        .arg(&ctl.socket_str())
        .start();
    let key = bootstrap_key(&edge);
    let base = api_base(&edge);
    let policy = |body: &str| {
        format!("on_http_request:\n  - actions:\n      - type: custom-response\n        config:\n          status_code: 200\n          body: {body}\n")
    };
    let ep = serde_json::json!({"url": "http://cloud.ringress.localhost", "traffic_policy": policy("cloud answer")});
    let (s, body) = authed(&base, &key, "POST", "/endpoints", Some(&ep.to_string()));
    assert_eq!(s, 201, "{body}");

    let get = |addr: SocketAddr, host: &str| -> Result<String, String> {
        let mut c = Client::try_connect(addr).map_err(|e| format!("connect: {e}"))?;
        c.send(format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ))
        .map_err(|e| format!("send: {e}"))?;
        let r = c.read_response().map_err(|e| format!("read: {e}"))?;
        if r.status != 200 {
            return Err(format!("status {} body {:?}", r.status, r.text()));
        }
        Ok(r.text())
    };
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let ok = Arc::new(AtomicU64::new(0));
    let addr = edge.addr();
    let load = {
        let (stop, failures, ok) = (stop.clone(), failures.clone(), ok.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match get(addr, "cloud.ringress.localhost") {
                    Ok(t) if t == "cloud answer" => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(t) => failures.lock().expect("lock").push(format!("body {t:?}")),
                    Err(e) => failures.lock().expect("lock").push(e),
                }
            }
        })
    };
    thread::sleep(Duration::from_millis(500));
    let (successor, _) = upgrade_ok(&edge, &ctl, &[]);
    assert!(
        edge.wait_exit(Duration::from_secs(15)).is_some(),
        "the old edge did not drain and exit"
    );
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load thread");
    let failures = failures.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "{} failures: {failures:?}",
        failures.len()
    );
    assert!(ok.load(Ordering::Relaxed) > 20, "too few requests");

    // The API is the new process's now: it lists the endpoint and takes a
    // new one, which routes at once.
    let (s, body) = authed(&base, &key, "GET", "/endpoints", None);
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("cloud.ringress.localhost"), "{body}");
    let ep2 = serde_json::json!({"url": "http://after.ringress.localhost", "traffic_policy": policy("after the upgrade")});
    let (s, body) = authed(&base, &key, "POST", "/endpoints", Some(&ep2.to_string()));
    assert_eq!(s, 201, "{body}");
    assert_eq!(
        get(addr, "after.ringress.localhost").as_deref(),
        Ok("after the upgrade")
    );
    assert!(successor.alive());
}
