//! Owned-buffer I/O helpers over monoio: append-reads into a growing
//! buffer and whole writes of a buffer or a prefix of it, each bounded by
//! a timeout. The buffer always comes back to the caller.

use std::io;
use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

/// Spare capacity guaranteed before each read.
pub const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug)]
pub enum IoFail {
    TimedOut,
    Io(io::Error),
}

impl From<io::Error> for IoFail {
    fn from(e: io::Error) -> Self {
        IoFail::Io(e)
    }
}

/// Reads more bytes onto the end of `buf`. `Ok(0)` means EOF.
pub async fn read_append<S: AsyncReadRent>(
    stream: &mut S,
    mut buf: Vec<u8>,
    limit: Duration,
) -> (Result<usize, IoFail>, Vec<u8>) {
    if buf.capacity() - buf.len() < READ_CHUNK {
        buf.reserve(READ_CHUNK);
    }
    let len = buf.len();
    let cap = buf.capacity();
    match monoio::time::timeout(limit, stream.read(buf.slice_mut(len..cap))).await {
        Ok((res, slice)) => (res.map_err(IoFail::Io), slice.into_inner()),
        // The read was cancelled with the buffer inside it: start afresh.
        Err(_) => (Err(IoFail::TimedOut), Vec::new()),
    }
}

/// Writes all of `buf`.
pub async fn write_all<S: AsyncWriteRent>(
    stream: &mut S,
    buf: Vec<u8>,
    limit: Duration,
) -> (Result<(), IoFail>, Vec<u8>) {
    match monoio::time::timeout(limit, stream.write_all(buf)).await {
        Ok((res, buf)) => (res.map(|_| ()).map_err(IoFail::Io), buf),
        Err(_) => (Err(IoFail::TimedOut), Vec::new()),
    }
}

/// Writes the first `n` bytes of `buf`.
pub async fn write_prefix<S: AsyncWriteRent>(
    stream: &mut S,
    buf: Vec<u8>,
    n: usize,
    limit: Duration,
) -> (Result<(), IoFail>, Vec<u8>) {
    if n == buf.len() {
        return write_all(stream, buf, limit).await;
    }
    match monoio::time::timeout(limit, stream.write_all(buf.slice(0..n))).await {
        Ok((res, slice)) => (res.map(|_| ()).map_err(IoFail::Io), slice.into_inner()),
        Err(_) => (Err(IoFail::TimedOut), Vec::new()),
    }
}

/// Copies bytes from `r` to `w` until EOF or an error on either side, then
/// shuts `w` down (passing the half-close on). `last` records the time of
/// the latest byte, for an idle watchdog.
pub async fn copy_until_eof<R, W>(r: &mut R, w: &mut W, last: &std::cell::Cell<std::time::Instant>)
where
    R: AsyncReadRent,
    W: AsyncWriteRent,
{
    let mut buf = Vec::with_capacity(READ_CHUNK);
    loop {
        let (res, b) = r.read(buf).await;
        buf = b;
        match res {
            Ok(n) if n > 0 => {}
            _ => break,
        }
        last.set(std::time::Instant::now());
        let (res, b) = w.write_all(buf).await;
        buf = b;
        if res.is_err() {
            break;
        }
        buf.clear();
    }
    let _ = w.shutdown().await;
}
