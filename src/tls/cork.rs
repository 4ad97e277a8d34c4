//! TCP_CORK for the server's first TLS flight.
//!
//! monoio-rustls hands rustls's output to the socket one record batch per
//! write, so a full handshake's ServerHello, ChangeCipherSpec and the
//! encrypted flight leave as three writes (three pushes, more and smaller
//! packets than one write would make). Corking the socket from accept until
//! the server next reads lets the kernel send the whole flight in as few
//! full segments as possible; the first read after a write uncorks, which
//! flushes at once. Only the first flight is corked: after that the stream
//! behaves exactly like the TcpStream inside it.

use std::os::fd::AsRawFd;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::BufResult;

pub struct CorkedTcp {
    inner: TcpStream,
    corked: bool,
    wrote: bool,
}

fn set_cork(stream: &TcpStream, on: bool) -> bool {
    let v: libc::c_int = on.into();
    // SAFETY: setsockopt on a valid socket fd with a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

impl CorkedTcp {
    /// Corks `inner` until the first read that follows a write.
    pub fn new(inner: TcpStream) -> CorkedTcp {
        let corked = set_cork(&inner, true);
        CorkedTcp {
            inner,
            corked,
            wrote: false,
        }
    }

    fn uncork_if_flight_written(&mut self) {
        if self.corked && self.wrote {
            set_cork(&self.inner, false);
            self.corked = false;
        }
    }
}

impl AsyncReadRent for CorkedTcp {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        self.uncork_if_flight_written();
        self.inner.read(buf).await
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        self.uncork_if_flight_written();
        self.inner.readv(buf).await
    }
}

impl AsyncWriteRent for CorkedTcp {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        self.wrote = true;
        self.inner.write(buf).await
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        self.wrote = true;
        self.inner.writev(buf).await
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().await
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        if self.corked {
            set_cork(&self.inner, false);
            self.corked = false;
        }
        self.inner.shutdown().await
    }
}

// SAFETY: after the handshake (the only time the flags change) reads and
// writes touch only the TcpStream, which is itself safe to split; during
// the handshake monoio-rustls never reads and writes concurrently.
unsafe impl monoio::io::Split for CorkedTcp {}
