//! Driver tests on real loopback sockets: a client Session and a server
//! Session over one TCP connection.

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncReadRentExt, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::{TcpListener, TcpStream};
use monoio::task::JoinHandle;

use super::*;
use crate::tunnel::muxado::frame::DEFAULT_WINDOW;

type Ended = JoinHandle<Result<(), MuxError>>;

struct Pair {
    client: Session,
    server: Session,
    client_ended: Ended,
    server_ended: Ended,
}

async fn pair_with(client_cfg: Config, server_cfg: Config) -> Pair {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (client_io, accepted) = monoio::join!(TcpStream::connect_addr(addr), listener.accept());
    let client_io = client_io.unwrap();
    let (server_io, _) = accepted.unwrap();
    client_io.set_nodelay(true).unwrap();
    server_io.set_nodelay(true).unwrap();
    let (client, cf) = Session::new(client_io, Role::Client, client_cfg);
    let (server, sf) = Session::new(server_io, Role::Server, server_cfg);
    Pair {
        client,
        server,
        client_ended: monoio::spawn(cf),
        server_ended: monoio::spawn(sf),
    }
}

async fn pair() -> Pair {
    pair_with(Config::default(), Config::default()).await
}

async fn within<F: std::future::Future>(secs: u64, f: F) -> F::Output {
    match monoio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("test timed out after {secs}s"),
    }
}

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(31)
                .wrapping_add(seed.wrapping_mul(7)) as u8
        })
        .collect()
}

/// Reads until EOF; an error is returned as is.
async fn read_to_end<R: AsyncReadRent>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let (res, b) = r.read(buf).await;
        buf = b;
        match res? {
            0 => return Ok(out),
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

async fn write_all<W: AsyncWriteRent>(w: &mut W, data: Vec<u8>) -> io::Result<()> {
    let (res, _) = w.write_all(data).await;
    res.map(|_| ())
}

#[monoio::test_all(enable_timer = true)]
async fn many_streams_many_bytes() {
    const STREAMS: u32 = 200;
    const SIZE: usize = 1024 * 1024;
    let p = pair().await;
    within(120, async {
        let server = p.server.clone();
        let acceptor = monoio::spawn(async move {
            let mut tasks = Vec::new();
            while let Some(mut s) = server.accept().await {
                tasks.push(monoio::spawn(async move {
                    let data = read_to_end(&mut s).await.unwrap();
                    let seed = u32::from_be_bytes(data[..4].try_into().unwrap());
                    assert_eq!(data.len(), 4 + SIZE, "stream {}", s.id());
                    assert!(
                        data[4..] == pattern(seed, SIZE)[..],
                        "stream {} corrupted",
                        s.id()
                    );
                    write_all(&mut s, (data.len() as u64).to_be_bytes().to_vec())
                        .await
                        .unwrap();
                    s.shutdown().await.unwrap();
                }));
                if tasks.len() == STREAMS as usize {
                    break;
                }
            }
            for t in tasks {
                t.await;
            }
        });
        let mut tasks = Vec::new();
        for k in 0..STREAMS {
            let mut s = p.client.open().await.unwrap();
            tasks.push(monoio::spawn(async move {
                let mut msg = k.to_be_bytes().to_vec();
                msg.extend_from_slice(&pattern(k, SIZE));
                write_all(&mut s, msg).await.unwrap();
                s.shutdown().await.unwrap();
                let ack = read_to_end(&mut s).await.unwrap();
                assert_eq!(ack, ((4 + SIZE) as u64).to_be_bytes());
            }));
        }
        for t in tasks {
            t.await;
        }
        acceptor.await;
        assert_eq!(p.client.open_streams(), 0);
        assert_eq!(p.server.open_streams(), 0);
    })
    .await;
    p.client.close();
    within(5, p.client_ended).await.unwrap();
    within(5, p.server_ended).await.unwrap();
}

#[monoio::test_all(enable_timer = true)]
async fn echo_with_half_close() {
    let p = pair().await;
    within(20, async {
        let server = p.server.clone();
        let echo = monoio::spawn(async move {
            let mut s = server.accept().await.unwrap();
            let data = read_to_end(&mut s).await.unwrap();
            assert!(s.is_read_closed());
            // the write side is still open after the peer's FIN
            write_all(&mut s, data).await.unwrap();
            s.shutdown().await.unwrap();
        });
        let mut s = p.client.open().await.unwrap();
        assert_eq!(s.id(), 3);
        for chunk in [&b"hello "[..], b"muxado ", b"world"] {
            write_all(&mut s, chunk.to_vec()).await.unwrap();
        }
        s.shutdown().await.unwrap();
        assert_eq!(read_to_end(&mut s).await.unwrap(), b"hello muxado world");
        assert!(s.is_read_closed());
        echo.await;
    })
    .await;
}

#[monoio::test(enable_timer = true)]
async fn a_stream_larger_than_the_window_flows() {
    const SIZE: usize = 8 * DEFAULT_WINDOW as usize + 123;
    let p = pair().await;
    within(30, async {
        let server = p.server.clone();
        let reader = monoio::spawn(async move {
            let mut s = server.accept().await.unwrap();
            // a slow reader: the sender must wait for WNDINC
            let mut got = Vec::new();
            let mut buf = vec![0u8; 50_000];
            loop {
                let (res, b) = s.read(buf).await;
                buf = b;
                match res.unwrap() {
                    0 => break,
                    n => got.extend_from_slice(&buf[..n]),
                }
                monoio::time::sleep(Duration::from_micros(200)).await;
            }
            got
        });
        let mut s = p.client.open().await.unwrap();
        write_all(&mut s, pattern(9, SIZE)).await.unwrap();
        s.shutdown().await.unwrap();
        let got = reader.await;
        assert_eq!(got.len(), SIZE);
        assert!(got == pattern(9, SIZE));
    })
    .await;
}

#[monoio::test(enable_timer = true)]
async fn reset_propagates() {
    let p = pair().await;
    within(10, async {
        let mut s = p.server.open().await.unwrap();
        assert_eq!(s.id(), 2);
        write_all(&mut s, b"ping".to_vec()).await.unwrap();
        let mut c = p.client.accept().await.unwrap();
        let (res, buf) = c.read(vec![0u8; 4]).await;
        assert_eq!(res.unwrap(), 4);
        assert_eq!(buf, b"ping");
        c.reset(ErrorCode::StreamReset);
        let err = read_to_end(&mut s).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert!(s.is_read_closed());
        let (res, _) = s.write(b"more".to_vec()).await;
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
        // the local side sees its own reset too
        let (res, _) = c.read(vec![0u8; 4]).await;
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(p.server.open_streams(), 0);
    })
    .await;
}

#[monoio::test(enable_timer = true)]
async fn dropping_a_stream_sends_rst() {
    let p = pair().await;
    within(10, async {
        let mut s = p.client.open().await.unwrap();
        write_all(&mut s, b"x".to_vec()).await.unwrap();
        let mut c = p.server.accept().await.unwrap();
        drop(s);
        let err = read_to_end(&mut c).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert!(err.to_string().contains("StreamCancelled"), "{err}");
        assert_eq!(p.client.open_streams(), 0);
        assert_eq!(p.server.open_streams(), 0);
        // a stream reset before it was accepted never shows up
        let mut s = p.client.open().await.unwrap();
        write_all(&mut s, b"y".to_vec()).await.unwrap();
        drop(s);
        let mut s = p.client.open().await.unwrap();
        write_all(&mut s, b"z".to_vec()).await.unwrap();
        let mut c = p.server.accept().await.unwrap();
        assert_eq!(c.id(), 7);
        let (res, buf) = c.read(vec![0u8; 1]).await;
        assert_eq!(res.unwrap(), 1);
        assert_eq!(buf, b"z");
    })
    .await;
}

#[monoio::test(enable_timer = true)]
async fn goaway_ends_both_sessions() {
    let p = pair().await;
    within(10, async {
        let s = p.client.open().await.unwrap();
        let mut accepted = {
            let mut s = s;
            write_all(&mut s, b"hi".to_vec()).await.unwrap();
            let a = p.server.accept().await.unwrap();
            (s, a)
        };
        p.server.goaway(ErrorCode::None, "shutting down");
        assert!(p.server.is_closed());
        p.client.closed().await;
        assert!(p.client.is_closed());
        assert!(p.client.accept().await.is_none());
        assert!(matches!(
            p.client.open().await,
            Err(MuxError::SessionClosed)
        ));
        let err = read_to_end(&mut accepted.0).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        // data that arrived before the end is still readable
        let (res, buf) = accepted.1.read(vec![0u8; 8]).await;
        assert_eq!(&buf[..res.unwrap()], b"hi");
    })
    .await;
    within(5, p.server_ended).await.unwrap();
    within(5, p.client_ended).await.unwrap();
}

#[monoio::test(enable_timer = true)]
async fn goaway_with_an_error_reaches_the_peer() {
    let p = pair().await;
    p.client.goaway(ErrorCode::Internal, "agent crashed");
    within(5, p.client_ended).await.unwrap();
    let res = within(5, p.server_ended).await;
    match res {
        Err(MuxError::RemoteGoAway { code, message }) => {
            assert_eq!(code, ErrorCode::Internal);
            assert_eq!(message, "agent crashed");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[monoio::test(enable_timer = true)]
async fn close_ends_now_and_the_peer_sees_eof() {
    let p = pair().await;
    let mut s = p.server.open().await.unwrap();
    write_all(&mut s, b"x".to_vec()).await.unwrap();
    p.server.close();
    within(5, p.server_ended).await.unwrap();
    within(5, p.client_ended).await.unwrap();
    assert!(p.client.is_closed());
    assert_eq!(p.client.open_streams(), 0);
    let (res, _) = s.write(b"y".to_vec()).await;
    assert_eq!(res.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
}

#[monoio::test(enable_timer = true)]
async fn split_halves_work_concurrently() {
    const SIZE: usize = 3 * DEFAULT_WINDOW as usize;
    let p = pair().await;
    within(30, async {
        let server = p.server.clone();
        // server: echo with split halves
        let echo = monoio::spawn(async move {
            let s = server.accept().await.unwrap();
            let (mut r, mut w) = s.into_split();
            let mut buf = vec![0u8; 40_000];
            loop {
                let (res, b) = r.read(buf).await;
                buf = b;
                let n = res.unwrap();
                if n == 0 {
                    break;
                }
                let (res, b) = w.write_all(buf.slice(..n)).await;
                buf = b.into_inner();
                res.unwrap();
            }
            w.shutdown().await.unwrap();
        });
        let s = p.client.open().await.unwrap();
        let (mut r, mut w) = s.into_split();
        // writing more than a window in each direction at once would stall
        // if the halves could not run concurrently
        let writer = monoio::spawn(async move {
            write_all(&mut w, pattern(3, SIZE)).await.unwrap();
            w.shutdown().await.unwrap();
            w
        });
        let got = read_to_end(&mut r).await.unwrap();
        let w = writer.await;
        assert!(got == pattern(3, SIZE));
        echo.await;
        drop((r, w));
    })
    .await;
    assert_eq!(p.client.open_streams(), 0);
}

#[monoio::test(enable_timer = true)]
async fn dropped_write_half_sends_fin() {
    let p = pair().await;
    within(10, async {
        let s = p.client.open().await.unwrap();
        let (r, mut w) = s.into_split();
        write_all(&mut w, b"req".to_vec()).await.unwrap();
        drop(w);
        let mut c = p.server.accept().await.unwrap();
        assert_eq!(read_to_end(&mut c).await.unwrap(), b"req");
        drop(r);
    })
    .await;
}

#[monoio::test(enable_timer = true)]
async fn open_waits_for_a_free_slot() {
    let small = Config {
        max_streams: 2,
        ..Config::default()
    };
    let p = pair_with(small, Config::default()).await;
    within(10, async {
        let a = p.client.open().await.unwrap();
        let _b = p.client.open().await.unwrap();
        let opened = Rc::new(Cell::new(false));
        let flag = opened.clone();
        let client = p.client.clone();
        let third = monoio::spawn(async move {
            let s = client.open().await.unwrap();
            flag.set(true);
            s.id()
        });
        monoio::time::sleep(Duration::from_millis(20)).await;
        assert!(!opened.get());
        drop(a); // never written: freed without a frame
        assert_eq!(third.await, 7);
    })
    .await;
}

#[monoio::test(enable_timer = true)]
async fn one_write_is_one_frame_on_the_wire() {
    // A raw TCP peer sees exactly what a Go or Rust SDK would: the stream
    // type and header in the SYN frame.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (client_io, accepted) = monoio::join!(TcpStream::connect_addr(addr), listener.accept());
    let (mut raw, _) = accepted.unwrap();
    let (client, fut) = Session::new(client_io.unwrap(), Role::Client, Config::default());
    let ended = monoio::spawn(fut);
    within(10, async {
        let mut s = client.open().await.unwrap();
        let mut msg = 0u32.to_be_bytes().to_vec();
        msg.extend_from_slice(b"{\"json\":1}");
        let (res, _) = s.write(msg).await;
        assert_eq!(res.unwrap(), 14);
        let (res, buf) = raw.read_exact(vec![0u8; 8 + 14]).await;
        res.unwrap();
        assert_eq!(&buf[..8], &[0, 0, 14, 0x12, 0, 0, 0, 3]);
        assert_eq!(&buf[8..12], &[0, 0, 0, 0]);
        // a peer that sends garbage gets a GOAWAY and the connection closes
        let (res, _) = raw.write_all(vec![0, 0, 0, 0x70, 0, 0, 0, 3]).await;
        res.unwrap();
        let rest = read_to_end(&mut raw).await.unwrap();
        assert_eq!(rest[3], 0x30, "GOAWAY");
        assert_eq!(&rest[12..16], &ErrorCode::Protocol.as_u32().to_be_bytes());
    })
    .await;
    drop(raw); // ends our lingering close at once
    assert!(matches!(within(5, ended).await, Err(MuxError::Frame(_))));
}

#[monoio::test(enable_timer = true)]
async fn goaway_to_a_peer_that_does_not_read_still_ends() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (peer, accepted) = monoio::join!(TcpStream::connect_addr(addr), listener.accept());
    let _peer = peer.unwrap(); // never reads, never closes
    let (server, fut) = Session::new(accepted.unwrap().0, Role::Server, Config::default());
    let ended = monoio::spawn(fut);
    // fill the socket buffers so that the writer blocks
    for _ in 0..64 {
        let mut s = server.open().await.unwrap();
        monoio::spawn(async move {
            let _ = write_all(&mut s, vec![0u8; DEFAULT_WINDOW as usize]).await;
            s
        });
    }
    monoio::time::sleep(Duration::from_millis(200)).await;
    server.goaway(ErrorCode::None, "bye");
    // bounded final flush plus bounded linger
    within(8, ended).await.unwrap();
}
