//! monoio driver for a muxado [`Core`]: the session future that owns the
//! connection, the [`Session`] handle, and [`Stream`] with monoio's
//! owned-buffer I/O traits.
//!
//! One task per session runs a reader loop (64 KiB reads, every frame in
//! them decoded at once) and a writer loop (takes all queued frames and
//! writes them with one `write_all` per wakeup). Stream tasks park on
//! wakers stored in the core. Everything is single-threaded: the core sits
//! in `Rc<RefCell<_>>` and no borrow is held across an await. The runtime
//! must have its timer enabled (the final flush is bounded in time).

use std::cell::RefCell;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split, Splitable};
use monoio::BufResult;

use super::core::{Config, Core, Role};
use super::error::{MuxError, StreamError};
use super::frame::ErrorCode;

/// Bytes asked for per read of the connection.
const READ_CHUNK: usize = 64 * 1024;
/// Write buffers bigger than this are not kept between writes.
const WRITE_BUF_KEEP: usize = 1024 * 1024;
/// Longest we keep writing (GOAWAY, last frames) and shutting down once
/// the session has ended.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest we wait for the peer to close after our side has finished.
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

struct Shared {
    core: RefCell<Core>,
}

/// Handle to a running session. Cheap to clone; the session runs until
/// the peer leaves, an error, [`Session::goaway`] or [`Session::close`]
/// (dropping every handle does not end it).
#[derive(Clone)]
pub struct Session {
    shared: Rc<Shared>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = self.shared.core.try_borrow();
        f.debug_struct("Session")
            .field("role", &core.as_ref().map(|c| c.role()).ok())
            .field(
                "open_streams",
                &core.as_ref().map(|c| c.open_streams()).ok(),
            )
            .finish()
    }
}

impl Session {
    /// Builds a session over an established byte stream (e.g. a TLS
    /// stream). The returned future drives all reads and writes of the
    /// connection and resolves when the session ends (EOF, error, goaway,
    /// close); the caller spawns it with `monoio::spawn`. It resolves to
    /// `Ok` for EOF, our own goaway/close, or a peer GOAWAY with code None.
    pub fn new<IO>(
        io: IO,
        role: Role,
        cfg: Config,
    ) -> (
        Session,
        impl Future<Output = Result<(), MuxError>> + 'static,
    )
    where
        IO: AsyncReadRent + AsyncWriteRent + Split + 'static,
    {
        let shared = Rc::new(Shared {
            core: RefCell::new(Core::new(role, cfg)),
        });
        let fut = run(io, shared.clone());
        (Session { shared }, fut)
    }

    /// Opens a stream of our parity. No frame is sent until the first
    /// write (which carries SYN). Waits while `max_streams` are open.
    pub async fn open(&self) -> Result<Stream, MuxError> {
        let id = poll_fn(|cx| self.shared.core.borrow_mut().poll_open(Some(cx.waker()))).await?;
        Ok(Stream {
            shared: self.shared.clone(),
            id,
        })
    }

    /// The next peer-opened stream; `None` once the session ended.
    pub async fn accept(&self) -> Option<Stream> {
        let id = poll_fn(|cx| self.shared.core.borrow_mut().poll_accept(Some(cx.waker()))).await?;
        Some(Stream {
            shared: self.shared.clone(),
            id,
        })
    }

    /// Queues GOAWAY (length = 8 + msg), flushes it, then ends the session
    /// and closes the connection.
    pub fn goaway(&self, code: ErrorCode, msg: &str) {
        self.shared.core.borrow_mut().goaway(code, msg);
    }

    /// Ends the session now, dropping queued output.
    pub fn close(&self) {
        self.shared.core.borrow_mut().close();
    }

    pub fn is_closed(&self) -> bool {
        self.shared.core.borrow().is_ended()
    }

    /// Resolves when the session has ended.
    pub async fn closed(&self) {
        poll_fn(|cx| self.shared.core.borrow_mut().poll_closed(cx.waker())).await
    }

    /// Streams not yet closed in both directions.
    pub fn open_streams(&self) -> usize {
        self.shared.core.borrow().open_streams()
    }
}

/// Ends the core if the session future is dropped before it finished, so
/// streams and acceptors do not wait forever.
struct EndOnDrop(Rc<Shared>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        if let Ok(mut core) = self.0.core.try_borrow_mut() {
            core.close();
        }
    }
}

async fn run<IO>(io: IO, shared: Rc<Shared>) -> Result<(), MuxError>
where
    IO: AsyncReadRent + AsyncWriteRent + Split + 'static,
{
    let _guard = EndOnDrop(shared.clone());
    let (rd, wr) = io.into_split();
    {
        let mut reader = pin!(read_loop(rd, shared.clone()));
        let mut writer = pin!(write_loop(wr, shared.clone()));
        let mut reader_done = false;
        let mut writer_done = false;
        // 1. The session runs until it ends.
        poll_fn(|cx| {
            if stop_now(&shared, cx) {
                return Poll::Ready(());
            }
            if !reader_done && reader.as_mut().poll(cx).is_ready() {
                reader_done = true;
            }
            if writer.as_mut().poll(cx).is_ready() {
                writer_done = true;
                return Poll::Ready(());
            }
            if shared.core.borrow().is_ended() {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
        // 2. Ended: the writer writes what is left (GOAWAY included) and
        // shuts the connection down, within a bounded time.
        if !writer_done {
            let flush = poll_fn(|cx| {
                if stop_now(&shared, cx) {
                    return Poll::Ready(());
                }
                if !reader_done && reader.as_mut().poll(cx).is_ready() {
                    reader_done = true;
                }
                writer.as_mut().poll(cx)
            });
            writer_done = monoio::time::timeout(FINAL_FLUSH_TIMEOUT, flush)
                .await
                .is_ok();
        }
        // 3. Lingering close: keep reading (and discarding) until the peer
        // closes too, so that closing with unread input does not turn into
        // a TCP RST that could destroy our GOAWAY before the peer reads it.
        // Pointless if the output could not be written.
        if writer_done && !reader_done && !shared.core.borrow().must_stop_now() {
            let linger = poll_fn(|cx| {
                if stop_now(&shared, cx) {
                    return Poll::Ready(());
                }
                reader.as_mut().poll(cx)
            });
            let _ = monoio::time::timeout(LINGER_TIMEOUT, linger).await;
        }
    }
    let result = shared.core.borrow().end_result().unwrap_or(Ok(()));
    match &result {
        Ok(()) => tracing::debug!("muxado: session ended"),
        Err(e) => tracing::debug!(error = %e, "muxado: session ended with an error"),
    }
    result
}

/// Registers the session task's waker and tells whether to stop all I/O.
fn stop_now(shared: &Shared, cx: &mut Context<'_>) -> bool {
    let mut core = shared.core.borrow_mut();
    core.set_driver_waker(cx.waker());
    core.must_stop_now()
}

/// Reads and decodes until EOF or error. Once the session has ended
/// gracefully it keeps reading and discards everything (lingering close).
async fn read_loop<R: AsyncReadRent>(mut rd: R, shared: Rc<Shared>) {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        if buf.capacity() - buf.len() < READ_CHUNK / 2 {
            buf.reserve(READ_CHUNK);
        }
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, slice) = rd.read(buf.slice_mut(len..cap)).await;
        buf = slice.into_inner();
        let mut core = shared.core.borrow_mut();
        match res {
            Ok(0) => {
                core.peer_eof();
                return;
            }
            Ok(_) => {}
            Err(e) => {
                core.io_error(e);
                return;
            }
        }
        if core.is_ended() {
            if core.must_stop_now() {
                return;
            }
            buf.clear();
            continue;
        }
        match core.receive(&buf) {
            Ok(consumed) => {
                buf.drain(..consumed);
            }
            Err(_) => buf.clear(),
        }
        while let Some(event) = core.poll_event() {
            tracing::trace!(?event, "muxado event");
        }
    }
}

/// Writes queued output until the session has ended and everything is
/// out, then shuts the connection down. `run` bounds the time this takes
/// once the session has ended.
async fn write_loop<W: AsyncWriteRent>(mut wr: W, shared: Rc<Shared>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // Woken through the driver waker, which `run` registers each poll.
        poll_fn(|_| {
            let mut core = shared.core.borrow_mut();
            if core.has_output() {
                core.swap_output(&mut buf);
                Poll::Ready(())
            } else if core.is_ended() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        if buf.is_empty() {
            break;
        }
        let (res, back) = wr.write_all(buf).await;
        buf = back;
        if let Err(e) = res {
            shared.core.borrow_mut().io_error(e);
            return;
        }
        buf.clear();
        if buf.capacity() > WRITE_BUF_KEEP {
            buf = Vec::new();
        }
    }
    let _ = wr.shutdown().await;
}

/// One muxado stream. Reading returns `Ok(0)` after the peer's FIN and an
/// error after a reset or the session's end; writing waits for send window
/// and turns each write of n ≤ window bytes into exactly one DATA frame.
/// Dropping a stream that is not finished both ways sends RST
/// StreamCancelled, so shut down and read to EOF first for a clean close.
pub struct Stream {
    shared: Rc<Shared>,
    id: u32,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream").field("id", &self.id).finish()
    }
}

impl Stream {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Sends RST(code); both directions are done.
    pub fn reset(&self, code: ErrorCode) {
        self.shared.core.borrow_mut().reset(self.id, code);
    }

    /// The peer sent FIN or RST (or the session ended).
    pub fn is_read_closed(&self) -> bool {
        self.shared.core.borrow().is_read_closed(self.id)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Ok(mut core) = self.shared.core.try_borrow_mut() {
            core.release(self.id);
        }
    }
}

fn poll_read_buf<T: IoBufMut>(
    shared: &Shared,
    id: u32,
    buf: &mut T,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let cap = buf.bytes_total();
    if cap == 0 {
        return Poll::Ready(Ok(0));
    }
    let dst = buf.write_ptr();
    let mut at = 0;
    let res = shared
        .core
        .borrow_mut()
        .poll_read_with(id, cap, Some(cx.waker()), |chunk| {
            // SAFETY: `dst` is valid for `cap` bytes (IoBufMut contract) and
            // the core hands out at most `cap` bytes in total.
            unsafe { std::ptr::copy_nonoverlapping(chunk.as_ptr(), dst.add(at), chunk.len()) };
            at += chunk.len();
        });
    match res {
        Poll::Ready(Ok(n)) => {
            // SAFETY: the first n bytes were just written.
            unsafe { buf.set_init(n) };
            Poll::Ready(Ok(n))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
        Poll::Pending => Poll::Pending,
    }
}

impl AsyncReadRent for Stream {
    fn read<T: IoBufMut>(&mut self, mut buf: T) -> impl Future<Output = BufResult<usize, T>> {
        // The future holds its own Rc, not `&mut self`, so the read and
        // write halves of a split stream never alias.
        let shared = self.shared.clone();
        let id = self.id;
        async move {
            let res = poll_fn(|cx| poll_read_buf(&shared, id, &mut buf, cx)).await;
            (res, buf)
        }
    }

    fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> impl Future<Output = BufResult<usize, T>> {
        let shared = self.shared.clone();
        let id = self.id;
        async move {
            // SAFETY: the RawBuf points into `buf`'s first iovec, which `buf`
            // (owned by this future) keeps alive and in place.
            let Some(mut raw) = (unsafe { RawBuf::new_from_iovec_mut(&mut buf) }) else {
                return (Ok(0), buf);
            };
            let res = poll_fn(|cx| poll_read_buf(&shared, id, &mut raw, cx)).await;
            if let Ok(n) = res {
                // SAFETY: n bytes of the first iovec were written.
                unsafe { buf.set_init(n) };
            }
            (res, buf)
        }
    }
}

impl AsyncWriteRent for Stream {
    fn write<T: IoBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        let shared = self.shared.clone();
        let id = self.id;
        async move {
            let res = poll_fn(|cx| {
                // SAFETY: IoBuf guarantees `bytes_init` readable bytes at
                // `read_ptr` while we own `buf`.
                let data = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
                shared
                    .core
                    .borrow_mut()
                    .poll_write(id, &[data], Some(cx.waker()))
                    .map_err(io::Error::from)
            })
            .await;
            (res, buf)
        }
    }

    fn writev<T: IoVecBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        let shared = self.shared.clone();
        let id = self.id;
        async move {
            let res = poll_fn(|cx| {
                // SAFETY: IoVecBuf guarantees `read_iovec_len` valid iovecs
                // at `read_iovec_ptr`, each pointing at readable bytes, while
                // we own `buf`. Empty ones (maybe null) are skipped.
                let iovs = unsafe {
                    std::slice::from_raw_parts(buf.read_iovec_ptr(), buf.read_iovec_len())
                };
                let parts: Vec<&[u8]> = iovs
                    .iter()
                    .filter(|v| v.iov_len > 0)
                    .map(|v| unsafe {
                        std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len)
                    })
                    .collect();
                shared
                    .core
                    .borrow_mut()
                    .poll_write(id, &parts, Some(cx.waker()))
                    .map_err(io::Error::from)
            })
            .await;
            (res, buf)
        }
    }

    /// Writes are queued for the session writer at once: nothing to do.
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> {
        std::future::ready(Ok(()))
    }

    /// Sends FIN. Done before the future is polled, so it also happens
    /// when monoio's `OwnedWriteHalf` is dropped.
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> {
        let res = match self.shared.core.try_borrow_mut() {
            Ok(mut core) => core.close_write(self.id).map_err(io::Error::from),
            Err(_) => Err(io::Error::from(StreamError::SessionClosed)),
        };
        std::future::ready(res)
    }
}

// SAFETY: the read and write futures each hold their own `Rc` to the
// session (never a borrow of the Stream), and the core keeps the read
// state and the write state of a stream apart.
unsafe impl Split for Stream {}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
