//! Test helpers: a monoio runtime per test and a loopback socket pair that
//! stands in for the edge's muxado stream.

use std::future::Future;

use monoio::net::{TcpListener, TcpStream};

/// Runs `f` to completion on a fresh monoio runtime (with timers).
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime");
    rt.block_on(f)
}

/// Two connected TCP sockets on 127.0.0.1: (agent side, edge side).
pub async fn stream_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (edge, accepted) = monoio::join!(TcpStream::connect_addr(addr), listener.accept());
    (accepted.expect("accept").0, edge.expect("connect"))
}
