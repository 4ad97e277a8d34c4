//! The connection driver: handshake, accept loop, one task per stream,
//! idle timeout and graceful drain. It never looks inside requests.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::Request;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::time::Instant;

use super::error::H2Error;
use super::limits::H2Limits;
use crate::runtime::catch_unwind::{panic_message, CatchUnwind};
use crate::runtime::drain::Drain;

/// Read buffer of the bridge between monoio's owned-buffer I/O and h2's
/// poll-style I/O: one full 16 KiB frame per read.
pub const BRIDGE_READ_BUFFER: usize = 16 * 1024;
/// Write coalescing buffer of the bridge, and the most each socket write
/// carries. h2 writes a DATA frame as two pieces (9-byte head, payload)
/// unless the transport is vectored, and StreamWrapper waits for one write
/// to complete before it starts the next: uncoalesced, 16 KiB responses
/// cost 2.2-3.2x the CPU of the poll-io bridge; coalesced through 64 KiB
/// (four full frames per write) 1.1-1.5x. A buffer no larger than one frame
/// does not coalesce at all (docs/performance.md).
pub const BRIDGE_WRITE_BUFFER: usize = 64 * 1024;

/// The bridge `serve` puts under h2: monoio-compat's `StreamWrapper`
/// (owned-buffer reads and writes, one copy each way) behind a tokio
/// `BufWriter` that coalesces h2's small writes until h2 flushes.
/// Memory per connection: `read + 2 * write` bytes.
pub type CompatIo<IO> = tokio::io::BufWriter<monoio_compat::StreamWrapper<IO>>;

/// Builds the `serve` bridge with explicit buffer sizes (benchmarks).
pub fn compat_io<IO>(io: IO, read_buffer: usize, write_buffer: usize) -> CompatIo<IO>
where
    IO: AsyncReadRent + AsyncWriteRent + Unpin + 'static,
{
    let io = monoio_compat::StreamWrapper::new_with_buffer_size(io, read_buffer, write_buffer);
    tokio::io::BufWriter::with_capacity(write_buffer, io)
}

/// Serves one HTTP/2 connection (after TLS with ALPN "h2", or cleartext h2c
/// with prior knowledge) until it ends. Each request stream is handed to
/// `handler` in its own monoio task on this thread; a panic in a handler
/// ends that stream only. When `drain` fires: graceful GOAWAY, open streams
/// finish, then `serve` returns.
///
/// `IO` is any monoio owned-buffer stream: a `TcpStream`, a monoio-rustls
/// `TlsStream`, or `Rewind` over either. It is bridged to h2's poll-style
/// I/O by [`CompatIo`] (`monoio_compat::StreamWrapper` plus write
/// coalescing); docs/performance.md ("HTTP/2 bridge: poll-io vs
/// monoio-compat") has the measurements behind that choice.
///
/// Returns `Ok` when the client or the edge closed the connection
/// cleanly, including after a drain or the idle timeout.
pub async fn serve<IO, H, Fut>(
    io: IO,
    limits: &H2Limits,
    drain: Drain,
    handler: H,
) -> Result<(), H2Error>
where
    IO: AsyncReadRent + AsyncWriteRent + Unpin + 'static,
    H: Fn(Request<RecvStream>, SendResponse<Bytes>) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let io = compat_io(io, BRIDGE_READ_BUFFER, BRIDGE_WRITE_BUFFER);
    serve_poll(io, limits, drain, handler).await
}

/// `serve` over a stream that already has tokio-style poll I/O, such as
/// `monoio::net::TcpStream::into_poll_io()` (cleartext only: monoio-rustls
/// has no poll-style stream).
pub async fn serve_poll<T, H, Fut>(
    io: T,
    limits: &H2Limits,
    drain: Drain,
    handler: H,
) -> Result<(), H2Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
    H: Fn(Request<RecvStream>, SendResponse<Bytes>) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let handshake = limits.builder().handshake::<T, Bytes>(io);
    let mut conn = match monoio::time::timeout(limits.handshake_timeout, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(H2Error::Handshake(e)),
        Err(_) => return Err(H2Error::HandshakeTimeout),
    };

    let streams = Rc::new(Streams {
        active: Cell::new(0),
        last_active: Cell::new(Instant::now()),
    });
    let mut drain_wait = pin!(drain.wait());
    let mut draining = false;
    // After an idle GOAWAY: the time the close has to complete.
    let mut closing_since: Option<Instant> = None;
    let mut timer = pin!(monoio::time::sleep(limits.idle_timeout));

    loop {
        let event = poll_fn(|cx| {
            // Contain a panic from the I/O stack under h2 (see
            // `H2Error::Panic`) to this connection.
            let accepted = match catch_unwind(AssertUnwindSafe(|| conn.poll_accept(cx))) {
                Ok(polled) => polled,
                Err(p) => {
                    return Poll::Ready(Event::Panicked(panic_message(p.as_ref()).to_owned()))
                }
            };
            match accepted {
                Poll::Ready(Some(Ok((req, respond)))) => {
                    return Poll::Ready(Event::Stream(req, respond));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Event::Closed(Err(e))),
                Poll::Ready(None) => return Poll::Ready(Event::Closed(Ok(()))),
                Poll::Pending => {}
            }
            if !draining && drain_wait.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Drain);
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Timer);
            }
            Poll::Pending
        })
        .await;

        match event {
            Event::Stream(req, respond) => {
                streams.active.set(streams.active.get() + 1);
                let guard = ActiveStream(streams.clone());
                let fut = handler(req, respond);
                monoio::spawn(async move {
                    let _guard = guard;
                    if let Err(p) = CatchUnwind(Box::pin(fut)).await {
                        tracing::error!(
                            panic = panic_message(p.as_ref()),
                            "HTTP/2 stream handler panicked; stream reset"
                        );
                    }
                });
            }
            Event::Closed(Ok(())) => return Ok(()),
            Event::Panicked(msg) => return Err(H2Error::Panic(msg)),
            Event::Closed(Err(e)) => {
                // A clean GOAWAY from the client, or the socket simply
                // closing, is the normal end of a connection.
                if e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR) && e.is_remote() {
                    return Ok(());
                }
                return Err(H2Error::Connection(e));
            }
            Event::Drain => {
                draining = true;
                conn.graceful_shutdown();
            }
            Event::Timer => {
                let now = Instant::now();
                if let Some(since) = closing_since {
                    if now.duration_since(since) >= limits.handshake_timeout {
                        return Err(H2Error::CloseTimeout);
                    }
                    timer.as_mut().reset(since + limits.handshake_timeout);
                    continue;
                }
                if streams.active.get() > 0 {
                    timer.as_mut().reset(now + limits.idle_timeout);
                    continue;
                }
                let idle_until = streams.last_active.get() + limits.idle_timeout;
                if now >= idle_until {
                    conn.graceful_shutdown();
                    closing_since = Some(now);
                    timer.as_mut().reset(now + limits.handshake_timeout);
                } else {
                    timer.as_mut().reset(idle_until);
                }
            }
        }
    }
}

// Lives for one loop iteration on the stack; boxing the stream would cost
// an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Event {
    Stream(Request<RecvStream>, SendResponse<Bytes>),
    Closed(Result<(), h2::Error>),
    Panicked(String),
    Drain,
    Timer,
}

/// Handler tasks in progress, and when the last one ended (for the idle
/// timeout). Shared with the tasks; single-threaded.
struct Streams {
    active: Cell<usize>,
    last_active: Cell<Instant>,
}

struct ActiveStream(Rc<Streams>);

impl Drop for ActiveStream {
    fn drop(&mut self) {
        let s = &self.0;
        s.active.set(s.active.get() - 1);
        s.last_active.set(Instant::now());
    }
}

/// A stream whose first bytes were already read by someone else (the
/// HTTP/1.1 reader that saw the h2c preface "PRI * HTTP/2.0"): reads return
/// `prefix` first, then the stream's own bytes. Writes go straight through.
pub struct Rewind<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO> Rewind<IO> {
    pub fn new(prefix: Bytes, io: IO) -> Self {
        Self { prefix, io }
    }

    pub fn into_inner(self) -> (Bytes, IO) {
        (self.prefix, self.io)
    }
}

impl<IO: AsyncReadRent> AsyncReadRent for Rewind<IO> {
    async fn read<T: monoio::buf::IoBufMut>(&mut self, mut buf: T) -> monoio::BufResult<usize, T> {
        if self.prefix.is_empty() {
            return self.io.read(buf).await;
        }
        let n = self.prefix.len().min(buf.bytes_total());
        // SAFETY: `write_ptr` is valid for `bytes_total` bytes and n is no
        // more than that; `set_init(n)` covers exactly the bytes written.
        unsafe {
            std::ptr::copy_nonoverlapping(self.prefix.as_ptr(), buf.write_ptr(), n);
            buf.set_init(n);
        }
        let _ = self.prefix.split_to(n);
        (Ok(n), buf)
    }

    async fn readv<T: monoio::buf::IoVecBufMut>(
        &mut self,
        mut buf: T,
    ) -> monoio::BufResult<usize, T> {
        if self.prefix.is_empty() {
            return self.io.readv(buf).await;
        }
        // SAFETY: RawBuf points into `buf`'s first non-empty iovec, which
        // stays alive and unmoved for this call.
        let n = match unsafe { monoio::buf::RawBuf::new_from_iovec_mut(&mut buf) } {
            Some(raw) => {
                let (res, _) = self.read(raw).await;
                res.unwrap_or(0)
            }
            None => 0,
        };
        // SAFETY: the first n bytes of the iovec were just written.
        unsafe { buf.set_init(n) };
        (Ok(n), buf)
    }
}

impl<IO: AsyncWriteRent> AsyncWriteRent for Rewind<IO> {
    fn write<T: monoio::buf::IoBuf>(
        &mut self,
        buf: T,
    ) -> impl Future<Output = monoio::BufResult<usize, T>> {
        self.io.write(buf)
    }

    fn writev<T: monoio::buf::IoVecBuf>(
        &mut self,
        buf: T,
    ) -> impl Future<Output = monoio::BufResult<usize, T>> {
        self.io.writev(buf)
    }

    fn flush(&mut self) -> impl Future<Output = std::io::Result<()>> {
        self.io.flush()
    }

    fn shutdown(&mut self) -> impl Future<Output = std::io::Result<()>> {
        self.io.shutdown()
    }
}
