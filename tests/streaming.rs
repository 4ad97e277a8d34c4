//! Large bodies stream through the edge both ways without being buffered:
//! 64 MiB up and down, checked by digest, with the edge's peak RSS growing
//! far less than the body size.

mod common;

use std::time::{Duration, Instant};

use common::*;

const BIG: u64 = 64 << 20;
/// Allowed growth of the edge's peak RSS while moving `BIG` bytes. A
/// buffering edge grows by at least `BIG`.
const MAX_RSS_GROWTH_KIB: u64 = 24 << 10;
/// Generous for a debug build on 2 cores.
const TRANSFER_LIMIT: Duration = Duration::from_secs(60);

fn assert_not_buffered(edge: &Edge, before_kib: u64) {
    let after = edge.peak_rss_kib();
    eprintln!("edge peak RSS: {before_kib} KiB before, {after} KiB after");
    assert!(
        after.saturating_sub(before_kib) < MAX_RSS_GROWTH_KIB,
        "edge peak RSS grew from {before_kib} KiB to {after} KiB while streaming {} MiB: it buffers bodies",
        BIG >> 20
    );
}

#[test]
fn large_upload_with_content_length_streams_through() {
    let up = Upstream::start(Behaviour::BodyDigest);
    let edge = Edge::start(&app_config(&up, ""));
    let before = edge.peak_rss_kib();
    let mut c = Client::connect(edge.addr());
    let start = Instant::now();
    let pattern = Pattern::new();
    c.send(format!(
        "PUT /big HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: {BIG}\r\n\r\n"
    ))
    .expect("send head");
    pattern.write_to(c.stream_mut(), BIG).expect("send body");
    let r = c.read_response().expect("response");
    assert!(start.elapsed() < TRANSFER_LIMIT);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        format!("len={BIG} digest={}", pattern.digest(BIG))
    );
    assert_not_buffered(&edge, before);
}

#[test]
fn large_chunked_upload_streams_through() {
    let up = Upstream::start(Behaviour::BodyDigest);
    let edge = Edge::start(&app_config(&up, ""));
    let before = edge.peak_rss_kib();
    let mut c = Client::connect(edge.addr());
    let pattern = Pattern::new();
    c.send("POST /big HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n")
        .expect("send head");
    pattern
        .write_chunked(c.stream_mut(), BIG)
        .expect("send body");
    let r = c.read_response().expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        format!("len={BIG} digest={}", pattern.digest(BIG))
    );
    assert!(up.last_request().chunked);
    assert_not_buffered(&edge, before);
}

fn download(chunked: bool) {
    let up = Upstream::start(Behaviour::Stream { len: BIG, chunked });
    let edge = Edge::start(&app_config(&up, ""));
    let before = edge.peak_rss_kib();
    let mut c = Client::connect(edge.addr());
    c.send("GET /big HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .expect("send");
    let start = Instant::now();
    let mut d = Digest::new();
    let r = c
        .read_response_with("GET", &mut |b: &[u8]| d.update(b))
        .expect("response");
    assert!(start.elapsed() < TRANSFER_LIMIT);
    assert_eq!(r.status, 200);
    assert_eq!(r.is_chunked(), chunked, "framing kept");
    assert_eq!(d.len(), BIG);
    assert_eq!(d.hex(), Pattern::new().digest(BIG));
    // Framing intact: the connection serves another request.
    c.send("GET /again HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .expect("send");
    let mut d2 = Digest::new();
    let r = c
        .read_response_with("GET", &mut |b: &[u8]| d2.update(b))
        .expect("second response");
    assert_eq!(r.status, 200);
    assert_eq!(d2.len(), BIG);
    assert_not_buffered(&edge, before);
}

#[test]
fn large_download_with_content_length_streams_through() {
    download(false);
}

#[test]
fn large_chunked_download_streams_through() {
    download(true);
}

#[test]
fn slow_reader_does_not_make_the_edge_buffer() {
    // The client reads nothing for a while: the edge must apply back-pressure
    // to the upstream instead of reading the whole body into memory.
    let up = Upstream::start(Behaviour::Stream {
        len: BIG,
        chunked: false,
    });
    let edge = Edge::start(&app_config(&up, ""));
    let before = edge.peak_rss_kib();
    let mut c = Client::connect(edge.addr());
    c.send("GET /big HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .expect("send");
    std::thread::sleep(Duration::from_secs(2));
    assert_not_buffered(&edge, before);
    let mut d = Digest::new();
    let r = c
        .read_response_with("GET", &mut |b: &[u8]| d.update(b))
        .expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(d.hex(), Pattern::new().digest(BIG));
}
