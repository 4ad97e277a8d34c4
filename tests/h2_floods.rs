//! HTTP/2 floods against the edge over TLS (issue 11): CONTINUATION
//! floods (big and empty frames, never END_HEADERS), rapid reset
//! (HEADERS + RST_STREAM) on several connections at once, and SETTINGS and
//! PING floods from a client that never reads. Each must end the abusive
//! connection (GOAWAY or close) or stall it by backpressure, keep the
//! edge's memory bounded, and leave other clients served. The limits are
//! `h2::H2Limits` (docs/architecture.md). Run with `--nocapture` for the
//! numbers in docs/reliability.md.

mod common;

use std::thread;
use std::time::Duration;

use common::agent::{dev_ca, dev_edge};
use common::h2raw::*;
use common::*;

const HOST: &str = "app.ringress.localhost";

struct Setup {
    edge: Edge,
    _up: Upstream,
    ca: std::path::PathBuf,
    addr: std::net::SocketAddr,
}

fn setup() -> Setup {
    let up = Upstream::start(Behaviour::Echo);
    let edge = dev_edge(&format!(
        "workers = 2\n[[endpoints]]\nurl = \"https://{HOST}\"\nupstream = \"{}\"\n",
        up.url()
    ));
    let ca = dev_ca(&edge);
    let addr = edge.listener_addr("https");
    Setup {
        edge,
        _up: up,
        ca,
        addr,
    }
}

/// Runs `floods` connections of `flood` in threads while a normal client
/// makes requests; returns the outcomes and the normal latencies.
fn under_flood(
    s: &Setup,
    floods: usize,
    flood: fn(H2Conn) -> Outcome,
) -> (Vec<Outcome>, Vec<Duration>, u64) {
    let rss_before = s.edge.rss_kib();
    let handles: Vec<_> = (0..floods)
        .map(|_| {
            let conn = H2Conn::connect(s.addr, &s.ca, HOST);
            thread::spawn(move || flood(conn))
        })
        .collect();
    let mut lat = Vec::new();
    let mut rss_peak = rss_before;
    while !handles.iter().all(|h| h.is_finished()) && lat.len() < 500 {
        let (status, took) = https_get_h1(s.addr, &s.ca, HOST, "/normal");
        assert_eq!(status, 200, "a normal client during the flood");
        lat.push(took);
        rss_peak = rss_peak.max(s.edge.rss_kib());
        thread::sleep(Duration::from_millis(20));
    }
    let outcomes: Vec<Outcome> = handles
        .into_iter()
        .map(|h| h.join().expect("flood thread"))
        .collect();
    // And right after.
    let (status, took) = https_get_h1(s.addr, &s.ca, HOST, "/after");
    assert_eq!(status, 200, "served after the flood");
    lat.push(took);
    lat.sort();
    (outcomes, lat, rss_peak.saturating_sub(rss_before))
}

fn report(name: &str, outcomes: &[Outcome], lat: &[Duration], rss_growth_kib: u64) {
    let p99 = lat[((lat.len() - 1) as f64 * 0.99).round() as usize];
    eprintln!(
        "{name}: {outcomes:?}; normal client {} requests, p50 {:?} p99 {p99:?}; edge RSS +{rss_growth_kib} KiB at peak",
        lat.len(),
        lat[lat.len() / 2],
    );
    assert!(p99 < Duration::from_secs(2), "{name}: normal p99 {p99:?}");
    assert!(
        rss_growth_kib < 256 * 1024,
        "{name}: edge RSS grew {rss_growth_kib} KiB"
    );
}

/// The connection was ended by the edge: GOAWAY with an error code, or
/// a close/reset (the GOAWAY may be lost when the kernel resets a socket
/// closed with unread flood in it).
fn assert_ended(name: &str, o: &Outcome, budget: usize) {
    assert!(
        matches!(o.goaway, Some(0x1 | 0x9 | 0xb)) || o.closed || o.write_failed,
        "{name}: the edge did not end the connection: {o:?}"
    );
    assert!(
        o.sent < budget && !o.write_blocked,
        "{name}: the flood was not cut: {o:?}"
    );
    assert!(o.elapsed < Duration::from_secs(30), "{name}: {o:?}");
}

/// HEADERS without END_HEADERS, then CONTINUATION frames of 16 KB of valid
/// header fields, forever.
fn continuation_big(conn: H2Conn) -> Outcome {
    let mut first = true;
    let mut field = vec![0x00, 0x03];
    field.extend_from_slice(b"x-f");
    field.push(100);
    field.extend_from_slice(&[b'a'; 100]);
    let payload: Vec<u8> = field
        .iter()
        .copied()
        .cycle()
        .take(field.len() * 150)
        .collect();
    conn.flood(
        256 << 20,
        Duration::from_secs(20),
        Duration::from_secs(10),
        || {
            if std::mem::take(&mut first) {
                frame(HEADERS, END_STREAM, 1, &get_block(HOST))
            } else {
                frame(CONTINUATION, 0, 1, &payload)
            }
        },
    )
}

/// HEADERS without END_HEADERS, then empty CONTINUATION frames, forever.
fn continuation_empty(conn: H2Conn) -> Outcome {
    let mut first = true;
    let batch: Vec<u8> = (0..1000)
        .flat_map(|_| frame(CONTINUATION, 0, 1, &[]))
        .collect();
    conn.flood(
        256 << 20,
        Duration::from_secs(20),
        Duration::from_secs(10),
        || {
            if std::mem::take(&mut first) {
                frame(HEADERS, END_STREAM, 1, &get_block(HOST))
            } else {
                batch.clone()
            }
        },
    )
}

#[test]
fn continuation_flood_of_big_frames_is_cut() {
    let s = setup();
    let (outcomes, lat, rss) = under_flood(&s, 1, continuation_big);
    report("CONTINUATION flood, 16 KB frames", &outcomes, &lat, rss);
    assert_ended("CONTINUATION big", &outcomes[0], 256 << 20);
}

#[test]
fn continuation_flood_of_empty_frames_is_cut() {
    let s = setup();
    let (outcomes, lat, rss) = under_flood(&s, 1, continuation_empty);
    report("CONTINUATION flood, empty frames", &outcomes, &lat, rss);
    assert_ended("CONTINUATION empty", &outcomes[0], 256 << 20);
}

/// Rapid reset: HEADERS then RST_STREAM(CANCEL), new stream ids, forever.
fn rapid_reset(conn: H2Conn) -> Outcome {
    let mut next_id = 1u32;
    conn.flood(
        256 << 20,
        Duration::from_secs(20),
        Duration::from_secs(10),
        || {
            let mut buf = Vec::new();
            for _ in 0..100 {
                buf.extend_from_slice(&common::h2raw::get(next_id, HOST));
                buf.extend_from_slice(&frame(RST_STREAM, 0, next_id, &8u32.to_be_bytes()));
                next_id += 2;
            }
            buf
        },
    )
}

#[test]
fn rapid_reset_on_four_connections_at_once_is_cut() {
    let s = setup();
    let (outcomes, lat, rss) = under_flood(&s, 4, rapid_reset);
    report("rapid reset x4", &outcomes, &lat, rss);
    for o in &outcomes {
        assert!(
            o.goaway == Some(0xb) || o.closed || o.write_failed,
            "rapid reset not cut: {o:?}"
        );
        // Cut long before the budget (what was written includes the
        // kernel's socket buffers on both sides, several MB on loopback).
        assert!(o.sent < 32 << 20 && !o.write_blocked, "{o:?}");
        assert!(o.elapsed < Duration::from_secs(15), "{o:?}");
    }
}

/// SETTINGS (each needs an ACK) from a client that never reads.
fn settings_flood(conn: H2Conn) -> Outcome {
    let batch: Vec<u8> = (0..1000)
        .flat_map(|_| frame(SETTINGS, 0, 0, &[0x00, 0x03, 0, 0, 0, 100]))
        .collect();
    conn.flood(
        256 << 20,
        Duration::from_secs(10),
        Duration::from_secs(3),
        || batch.clone(),
    )
}

/// PINGs (each needs a PONG) from a client that never reads.
fn ping_flood(conn: H2Conn) -> Outcome {
    let batch: Vec<u8> = (0..1000u64)
        .flat_map(|i| frame(PING, 0, 0, &i.to_be_bytes()))
        .collect();
    conn.flood(
        256 << 20,
        Duration::from_secs(10),
        Duration::from_secs(3),
        || batch.clone(),
    )
}

/// A flood of frames the edge must answer, from a client that does not
/// read: the edge either ends the connection or stops reading it
/// (backpressure), and never queues answers without bound.
fn assert_bounded(name: &str, o: &Outcome) {
    assert!(
        o.goaway.is_some() || o.closed || o.write_failed || o.write_blocked,
        "{name}: neither cut nor backpressured: {o:?}"
    );
    assert!(o.sent < 256 << 20, "{name}: {o:?}");
}

#[test]
fn settings_flood_from_a_client_that_never_reads_is_bounded() {
    let s = setup();
    let (outcomes, lat, rss) = under_flood(&s, 2, settings_flood);
    report("SETTINGS flood x2", &outcomes, &lat, rss);
    for o in &outcomes {
        assert_bounded("SETTINGS", o);
    }
}

#[test]
fn ping_flood_from_a_client_that_never_reads_is_bounded() {
    let s = setup();
    let (outcomes, lat, rss) = under_flood(&s, 2, ping_flood);
    report("PING flood x2", &outcomes, &lat, rss);
    for o in &outcomes {
        assert_bounded("PING", o);
    }
}
