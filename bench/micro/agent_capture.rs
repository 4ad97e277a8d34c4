//! Micro benchmark: the agent inspector's capture per exchange on one
//! keep-alive connection (`agent::inspect::capture::ConnTap`): a typical
//! request head, a 1 KiB JSON request body and a 4 KiB response, fed as
//! the tap sees them after each read and write, events drained as the
//! inspector thread would. This is the work added to the agent's session
//! thread per request when `--inspect` is on (the byte copy itself is
//! unchanged); `bench/tunnel_compare.sh` SYSTEMS="tunnel tunnel-inspect"
//! measures it end to end.

#[path = "harness.rs"]
mod harness;

use ringress::agent::inspect::capture::{ConnTap, TapConfig, DEFAULT_BODY_CAP};

fn main() {
    let body = vec![b'x'; 1024];
    let mut request = format!(
        "POST /hooks/github?delivery=1 HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: GitHub-Hookshot/abc\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let resp_body = vec![b'y'; 4096];
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDate: Thu, 03 Dec 2026 12:00:00 GMT\r\nContent-Length: {}\r\n\r\n",
        resp_body.len()
    )
    .into_bytes();
    response.extend_from_slice(&resp_body);

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cfg = TapConfig {
        sink: tx,
        tunnel_name: "bench".into(),
        body_cap: DEFAULT_BODY_CAP,
    };
    let mut tap = ConnTap::new(cfg, "203.0.113.7:40000".into(), None);
    harness::bench("capture: POST 1 KiB + 200 4 KiB, keep-alive", || {
        tap.on_request_bytes(&request);
        tap.on_response_bytes(&response);
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, 2);
        n
    });
}
