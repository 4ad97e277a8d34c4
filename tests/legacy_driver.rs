//! The epoll fallback (`MONOIO_FORCE_LEGACY_DRIVER=1`): the startup log names
//! the driver, and a smoke subset of the suite passes on it. The default
//! driver is io_uring wherever the kernel allows io_uring.

mod common;

use std::time::Duration;

use common::*;
use tungstenite::Message;

const LEGACY_ENV: &str = "MONOIO_FORCE_LEGACY_DRIVER";

fn legacy_edge(config: &str) -> Edge {
    Edge::builder(config).legacy_driver().start()
}

/// Whether this kernel lets us create an io_uring.
fn io_uring_available() -> bool {
    let mut params = [0u8; 120]; // struct io_uring_params
                                 // SAFETY: io_uring_setup(2) with a zeroed params struct of the right size.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        return false;
    }
    // SAFETY: closing the fd we just got.
    unsafe { libc::close(fd as libc::c_int) };
    true
}

#[test]
fn startup_log_says_driver_legacy() {
    let edge = legacy_edge(&custom_response_endpoint(
        "http://x.example.com",
        200,
        "x",
        "",
    ));
    let log = edge.stderr_text();
    assert!(log.contains("driver=legacy"), "stderr:\n{log}");
    assert!(!log.contains("driver=io_uring"), "stderr:\n{log}");
}

#[test]
fn startup_log_says_driver_io_uring_by_default() {
    let edge = Edge::builder(&custom_response_endpoint(
        "http://x.example.com",
        200,
        "x",
        "",
    ))
    .env_remove(LEGACY_ENV)
    .start();
    let log = edge.stderr_text();
    if io_uring_available() {
        assert!(log.contains("driver=io_uring"), "stderr:\n{log}");
        assert!(!log.contains("driver=legacy"), "stderr:\n{log}");
    } else {
        eprintln!("io_uring_setup is not permitted here; expecting the legacy fallback");
        assert!(log.contains("driver=legacy"), "stderr:\n{log}");
    }
}

#[test]
fn legacy_proxying_keep_alive_and_pipelining() {
    let up = Upstream::start(Behaviour::Echo);
    let edge = legacy_edge(&app_config(&up, ""));
    let mut c = Client::connect(edge.addr());
    for i in 0..3 {
        let r = c.get(APP_HOST, &format!("/{i}"));
        assert_eq!(r.status, 200);
        assert!(r.text().starts_with(&format!("GET /{i} ")));
    }
    c.send(
        "GET /p1 HTTP/1.1\r\nHost: app.example.com\r\n\r\nGET /p2 HTTP/1.1\r\nHost: app.example.com\r\n\r\n\
         GET /p3 HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    )
    .expect("send");
    for p in ["/p1", "/p2", "/p3"] {
        let r = c.read_response().expect("pipelined response");
        assert!(r.text().starts_with(&format!("GET {p} ")), "{}", r.text());
    }
    assert_eq!(up.accepted(), 1);
    assert_eq!(
        up.last_request().header("x-forwarded-for"),
        Some("127.0.0.1")
    );
}

#[test]
fn legacy_chunked_upload_and_download() {
    let up = Upstream::start(Behaviour::Echo);
    let edge = legacy_edge(&app_config(&up, ""));
    let mut c = Client::connect(edge.addr());
    let r = c.roundtrip(
        "POST / HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let req = up.last_request();
    assert_eq!(req.body, b"hello");
    assert_eq!(req.raw_trailers, b"X-T: 1\r\n");

    let stream = Upstream::start(Behaviour::Stream {
        len: 8 << 20,
        chunked: true,
    });
    let edge = legacy_edge(&app_config(&stream, ""));
    let mut c = Client::connect(edge.addr());
    c.send("GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .expect("send");
    let mut d = Digest::new();
    let r = c
        .read_response_with("GET", &mut |b: &[u8]| d.update(b))
        .expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(d.hex(), Pattern::new().digest(8 << 20));
}

#[test]
fn legacy_errors_and_custom_response() {
    let port = free_port();
    let config = format!(
        "{}{}",
        endpoint(
            "http://down.example.com",
            &format!("http://127.0.0.1:{port}")
        ),
        custom_response_endpoint("http://hello.example.com", 200, "Hello world!", "")
    );
    let edge = legacy_edge(&config);
    assert_edge_error(
        &get(edge.addr(), "nobody.example.com", "/"),
        404,
        "ERR_NGROK_3200",
    );
    assert_edge_error(
        &get(edge.addr(), "down.example.com", "/"),
        502,
        "ERR_NGROK_8012",
    );
    assert_eq!(
        get(edge.addr(), "hello.example.com", "/").text(),
        "Hello world!"
    );
    let r = send_request(edge.addr(), "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert_eq!(r.status, 400);
}

#[test]
fn legacy_silent_upstream_times_out() {
    let up = Upstream::start(Behaviour::Silent);
    let edge = legacy_edge(&app_config(&up, &timeouts(&[("upstream_idle", "1s")])));
    assert_edge_error(&get(edge.addr(), APP_HOST, "/"), 504, "ERR_NGROK_3008");
}

#[test]
fn legacy_websocket_echo() {
    let up = Upstream::start(Behaviour::WebSocketEcho);
    let edge = legacy_edge(&app_config(&up, ""));
    let stream = Client::connect(edge.addr()).into_stream();
    let (mut ws, _) = tungstenite::client("ws://app.example.com/", stream).expect("handshake");
    ws.send(Message::text("legacy")).expect("send");
    assert_eq!(ws.read().expect("read"), Message::text("legacy"));
}

#[test]
fn legacy_reload_and_graceful_shutdown() {
    let slow = Upstream::start(Behaviour::delayed(Duration::from_millis(1000), "done"));
    let mut edge = legacy_edge(&endpoint("http://app.example.com", &slow.url()));
    edge.write_config(&format!(
        "{}{}",
        endpoint("http://app.example.com", &slow.url()),
        custom_response_endpoint("http://new.example.com", 200, "new", "")
    ));
    edge.sighup();
    assert!(
        wait_until(Duration::from_secs(10), || {
            Client::try_connect(edge.addr())
                .ok()
                .and_then(|mut c| {
                    c.send("GET / HTTP/1.1\r\nHost: new.example.com\r\n\r\n")
                        .ok()?;
                    c.read_response().ok()
                })
                .is_some_and(|r| r.status == 200)
        }),
        "reload not applied"
    );
    let mut c = Client::connect(edge.addr());
    c.send("GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .expect("send");
    slow.wait_for_requests(1, Duration::from_secs(5));
    edge.sigterm();
    let r = c.read_response().expect("in-flight response");
    assert_eq!(r.text(), "done");
    let status = edge.wait_exit(Duration::from_secs(10)).expect("exit");
    assert!(status.success(), "exit status {status}");
}
