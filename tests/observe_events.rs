//! Edge log-export events with real parts: the edge binary, an upstream,
//! raw keep-alive clients. 10,000 requests make 10,000
//! `http_request_complete.v0` lines with the right statuses and durations;
//! with an HTTP sink that never reads, requests still succeed and the drops
//! are counted.

mod common;

use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use common::*;

fn read_events(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn of_type<'a>(evs: &'a [serde_json::Value], t: &str) -> Vec<&'a serde_json::Value> {
    evs.iter().filter(|e| e["event_type"] == t).collect()
}

#[test]
fn ten_thousand_requests_make_ten_thousand_events() {
    let up = Upstream::start(Behaviour::handler(|req, stream| {
        if req.target.starts_with("/slow") {
            thread::sleep(Duration::from_millis(60));
        }
        let status = if req.target.starts_with("/created") {
            201
        } else {
            200
        };
        write_response(stream, status, &[], b"hello")?;
        Ok(true)
    }));
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let edge = Edge::start(&format!(
        "[[endpoints]]\nurl = \"http://{APP_HOST}\"\nupstream = \"{}\"\n\n[observe]\nevents_queue = 65536\n[[observe.sinks]]\ntype = \"file\"\npath = {:?}\n",
        up.url(),
        events.display().to_string()
    ));
    let addr = edge.addr();
    // 4 keep-alive clients x 2,500: per client 2,000 x 200, 400 x 201, 95 x 404
    // (no endpoint), 5 slow.
    let workers: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..2500 {
                    let (host, path, want) = match i % 25 {
                        0..=19 => (APP_HOST, "/ok", 200),
                        20..=23 => (APP_HOST, "/created", 201),
                        _ => ("nobody.example.com", "/x", 404),
                    };
                    let (host, path, want) = if i % 500 == 499 {
                        (APP_HOST, "/slow", 200)
                    } else {
                        (host, path, want)
                    };
                    let r = c.get(host, path);
                    assert_eq!(r.status, want, "{host}{path}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let mut evs = Vec::new();
    let ok = wait_until(Duration::from_secs(30), || {
        evs = read_events(&events);
        of_type(&evs, "http_request_complete.v0").len() >= 10_000
    });
    let http = of_type(&evs, "http_request_complete.v0");
    assert!(ok, "only {} events after 30 s", http.len());
    assert_eq!(http.len(), 10_000);
    let count = |code: u64| {
        http.iter()
            .filter(|e| e["object"]["http"]["response"]["status_code"] == code)
            .count()
    };
    // Per client: i%25 in 0..=19 → 200 (2,000), 20..=23 → 201 (400), 24 → 404 (100);
    // the 5 slow ones replace i = 499, 999, ... (i%25 = 24: 404s).
    assert_eq!(count(200), 4 * 2005);
    assert_eq!(count(201), 4 * 400);
    assert_eq!(count(404), 4 * 95);
    for e in &http {
        let o = &e["object"];
        let d = o["http"]["duration_ms"].as_f64().unwrap();
        assert!(d > 0.0 && d < 10_000.0, "duration {d}");
        assert_eq!(o["conn"]["client_ip"], "127.0.0.1");
        assert!(e["event_id"].as_str().unwrap().starts_with("ev_"));
        assert!(e["event_timestamp"].as_str().unwrap().ends_with('Z'));
        let path = o["http"]["request"]["url"]["path"].as_str().unwrap();
        if path == "/slow" {
            assert!(d >= 60.0, "slow request took {d} ms by its event");
        } else if path == "/ok" {
            assert_eq!(o["http"]["request"]["method"], "get");
            assert_eq!(o["http"]["response"]["body_length"], 5);
            assert_eq!(o["endpoint"]["url"], format!("http://{APP_HOST}"));
            assert_eq!(o["http"]["request"]["url"]["host"], APP_HOST);
        }
    }
    let slow = http
        .iter()
        .filter(|e| e["object"]["http"]["request"]["url"]["path"] == "/slow")
        .count();
    assert_eq!(slow, 20);
    let bad = http
        .iter()
        .find(|e| e["object"]["http"]["response"]["status_code"] == 404)
        .unwrap();
    assert_eq!(bad["object"]["ngrok_error_code"], "ERR_NGROK_3200");
    drop(edge); // closes the 4 connections' records? no: they closed already
}

#[test]
fn connections_closed_events_count_bytes() {
    let up = Upstream::start(Behaviour::fixed(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ));
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let edge = Edge::start(&format!(
        "[[endpoints]]\nurl = \"http://{APP_HOST}\"\nupstream = \"{}\"\n\n[observe]\n[[observe.sinks]]\ntype = \"file\"\npath = {:?}\n",
        up.url(),
        events.display().to_string()
    ));
    {
        let mut c = Client::connect(edge.addr());
        for _ in 0..3 {
            assert_eq!(c.get(APP_HOST, "/").status, 200);
        }
    }
    let mut evs = Vec::new();
    assert!(wait_until(Duration::from_secs(10), || {
        evs = read_events(&events);
        !of_type(&evs, "tcp_connection_closed.v0").is_empty()
    }));
    let tcp = of_type(&evs, "tcp_connection_closed.v0");
    assert_eq!(tcp.len(), 1);
    let c = &tcp[0]["object"]["conn"];
    assert!(c["bytes_in"].as_u64().unwrap() > 3 * 30, "{c}");
    assert!(c["bytes_out"].as_u64().unwrap() > 3 * 30, "{c}");
    assert_eq!(c["server_name"], APP_HOST);
    assert!(c["end_ts"].as_str().unwrap() >= c["start_ts"].as_str().unwrap());
}

#[test]
fn sinks_get_the_event_types_and_fields_their_sources_list() {
    // Three sinks: everything; ten access-log fields of HTTP events only;
    // TCP events only. Each file holds what its sink asked for.
    let up = Upstream::start(Behaviour::fixed(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Up: 1\r\n\r\nok",
    ));
    let dir = tempfile::tempdir().unwrap();
    let [all, access, tcp] =
        ["all", "access", "tcp"].map(|n| dir.path().join(format!("{n}.jsonl")));
    let edge = Edge::start(&format!(
        "[[endpoints]]\nurl = \"http://{APP_HOST}\"\nupstream = \"{}\"\n\n[observe]\n\
         [[observe.sinks]]\ntype = \"file\"\npath = {:?}\n\
         [[observe.sinks]]\ntype = \"file\"\npath = {:?}\n\
         [[observe.sinks.sources]]\ntype = \"http_request_complete.v0\"\n\
         fields = [\"conn.client_ip\", \"http.request.method\", \"http.request.url.path\", \"http.response.status_code\", \"http.duration_ms\", \"tls.version\"]\n\
         [[observe.sinks]]\ntype = \"file\"\npath = {:?}\n\
         [[observe.sinks.sources]]\ntype = \"tcp_connection_closed.v0\"\n",
        up.url(),
        all.display().to_string(),
        access.display().to_string(),
        tcp.display().to_string(),
    ));
    {
        let mut c = Client::connect(edge.addr());
        for _ in 0..5 {
            assert_eq!(c.get(APP_HOST, "/p?q=1").status, 200);
        }
    }
    let done = wait_until(Duration::from_secs(10), || {
        of_type(&read_events(&all), "tcp_connection_closed.v0").len() == 1
            && read_events(&access).len() == 5
            && read_events(&tcp).len() == 1
    });
    assert!(done, "events did not arrive");
    let full = read_events(&all);
    assert_eq!(of_type(&full, "http_request_complete.v0").len(), 5);
    let f = &of_type(&full, "http_request_complete.v0")[0]["object"];
    assert_eq!(
        f["http"]["response"]["headers"]["X-Up"],
        serde_json::json!(["1"])
    );
    let picked = read_events(&access);
    for e in &picked {
        assert_eq!(e["event_type"], "http_request_complete.v0");
        assert!(e["event_id"].as_str().unwrap().starts_with("ev_"));
        let o = e["object"].as_object().unwrap();
        let mut keys: Vec<_> = o.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["conn", "http"], "{e}");
        assert_eq!(o["conn"], serde_json::json!({"client_ip": "127.0.0.1"}));
        let h = o["http"].as_object().unwrap();
        let mut hk: Vec<_> = h.keys().cloned().collect();
        hk.sort();
        assert_eq!(hk, ["duration_ms", "request", "response"], "{e}");
        assert_eq!(
            h["request"],
            serde_json::json!({"method": "get", "url": {"path": "/p"}})
        );
        assert_eq!(h["response"], serde_json::json!({"status_code": 200}));
    }
    let t = read_events(&tcp);
    assert_eq!(t[0]["event_type"], "tcp_connection_closed.v0");
    assert_eq!(t[0]["object"]["conn"]["server_name"], APP_HOST);
}

#[test]
fn a_sink_that_never_reads_drops_events_and_requests_still_succeed() {
    // Accepts the sink's connection and never reads it: its POSTs block once
    // the socket buffers are full.
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let held = thread::spawn(move || {
        let (s, _) = sink.accept().unwrap();
        thread::sleep(Duration::from_secs(40));
        drop(s);
    });
    let up = Upstream::start(Behaviour::fixed(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ));
    let edge = Edge::start(&format!(
        "[[endpoints]]\nurl = \"http://{APP_HOST}\"\nupstream = \"{}\"\n\n[observe]\nevents_queue = 64\n[[observe.sinks]]\ntype = \"http\"\nurl = \"http://{sink_addr}/ingest\"\nbatch = 50\nflush_ms = 10\n",
        up.url(),
    ));
    // Long header values make each event big, so the socket fills sooner.
    let pad = "x".repeat(4000);
    let mut c = Client::connect(edge.addr());
    for i in 0..3000 {
        let raw = format!("GET /{i} HTTP/1.1\r\nHost: {APP_HOST}\r\nX-Pad: {pad}\r\n\r\n");
        let r = c.roundtrip(raw);
        assert_eq!(r.status, 200, "request {i}");
    }
    assert!(
        wait_until(Duration::from_secs(15), || edge
            .stderr_text()
            .contains("events dropped")),
        "no drop report; stderr:\n{}",
        edge.stderr_text()
    );
    drop(edge);
    drop(held);
}
