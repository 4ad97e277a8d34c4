//! A tiny cleartext HTTP/2 (h2c, prior knowledge) server answering every
//! request with a fixed 200, used by bench/h2_bridge.sh to compare the ways
//! of running h2 on monoio:
//!
//!   poll:         TcpStream::into_poll_io() -> ringress::h2::serve_poll
//!   compat:       ringress::h2::serve (StreamWrapper + write coalescing)
//!   compat-plain: monoio_compat::StreamWrapper::new (8 KiB buffers) alone
//!
//! Usage: h2_bridge --bridge poll|compat|compat-plain [--port 18443]
//!        [--buf READ,WRITE] [--body BYTES]
//! (`--buf`: compat's buffer sizes instead of serve's; `--body`: response
//! body size, default a 21-byte greeting.) One thread; pin it with taskset.

use bytes::Bytes;
use monoio::io::IntoPollIo;
use ringress::h2::{compat_io, serve, serve_poll, H2Limits};
use ringress::runtime::drain::Drain;

async fn respond(
    body: Bytes,
    _req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let res = http::Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(())
        .expect("static response");
    if let Ok(mut send) = respond.send_response(res, false) {
        let _ = send.send_data(body, true);
    }
}

fn main() {
    let mut bridge = String::from("compat");
    let mut port = 18443u16;
    let mut buf: Option<(usize, usize)> = None;
    let mut body = Bytes::from_static(b"hello from h2_bridge\n");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--bridge" => bridge = v,
            "--port" => port = v.parse().expect("--port"),
            "--buf" => {
                let (r, w) = v.split_once(',').expect("--buf READ,WRITE");
                buf = Some((
                    r.parse().expect("read size"),
                    w.parse().expect("write size"),
                ));
            }
            "--body" => body = Bytes::from(vec![b'x'; v.parse().expect("--body")]),
            _ => panic!("unknown argument {a}"),
        }
    }
    let kind: u8 = match bridge.as_str() {
        "poll" => 0,
        "compat" => 1,
        "compat-plain" => 2,
        _ => panic!("--bridge poll|compat|compat-plain"),
    };
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = monoio::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
        eprintln!("h2_bridge: {bridge} bridge on 127.0.0.1:{port}");
        let limits = std::rc::Rc::new(H2Limits::default());
        let drain = Drain::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (limits, drain, body) = (limits.clone(), drain.clone(), body.clone());
            let handler = move |req, res| respond(body.clone(), req, res);
            monoio::spawn(async move {
                let res = match (kind, buf) {
                    (0, _) => match stream.into_poll_io() {
                        Ok(io) => serve_poll(io, &limits, drain, handler).await,
                        Err(e) => return eprintln!("into_poll_io: {e}"),
                    },
                    (1, None) => serve(stream, &limits, drain, handler).await,
                    (1, Some((r, w))) => {
                        serve_poll(compat_io(stream, r, w), &limits, drain, handler).await
                    }
                    _ => {
                        let io = monoio_compat::StreamWrapper::new(stream);
                        serve_poll(io, &limits, drain, handler).await
                    }
                };
                if let Err(e) = res {
                    if !e.is_io() {
                        eprintln!("connection: {e}");
                    }
                }
            });
        }
    });
}
