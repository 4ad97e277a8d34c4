//! [`Inspected`]: the edge's stream of one proxied connection, with every
//! byte read from it (requests) and written to it (responses) shown to a
//! [`ConnTap`] after the I/O completed. The bytes themselves pass through
//! unchanged, in the same reads and writes; forwarders do not know.
//!
//! Only used with inspection on: with `--inspect=false` the forwarders get
//! the bare stream and nothing here runs.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::rc::Rc;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use monoio::BufResult;

use super::capture::ConnTap;

pub struct Inspected<S> {
    inner: S,
    tap: Rc<RefCell<ConnTap>>,
}

impl<S> Inspected<S> {
    pub fn new(inner: S, tap: ConnTap) -> Inspected<S> {
        Inspected {
            inner,
            tap: Rc::new(RefCell::new(tap)),
        }
    }
}

/// Shows `f` the `n` bytes at `ptr` (no borrow is held across an await:
/// the tap is borrowed only here, between I/O operations).
fn with_tap(tap: &RefCell<ConnTap>, f: impl FnOnce(&mut ConnTap)) {
    if let Ok(mut t) = tap.try_borrow_mut() {
        if t.is_live() {
            f(&mut t);
        }
    }
}

impl<S: AsyncReadRent> AsyncReadRent for Inspected<S> {
    fn read<T: IoBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        let tap = self.tap.clone();
        let fut = self.inner.read(buf);
        async move {
            let (res, mut buf) = fut.await;
            if let Ok(n) = res {
                if n > 0 {
                    // SAFETY: the read just initialised `n` bytes at
                    // `write_ptr` (monoio's contract for IoBufMut), and we
                    // own `buf`.
                    let data = unsafe { std::slice::from_raw_parts(buf.write_ptr(), n) };
                    with_tap(&tap, |t| t.on_request_bytes(data));
                }
            }
            (res, buf)
        }
    }

    fn readv<T: IoVecBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        let tap = self.tap.clone();
        let fut = self.inner.readv(buf);
        async move {
            let (res, mut buf) = fut.await;
            if let Ok(n) = res {
                let mut left = n;
                let (ptr, len) = (buf.write_iovec_ptr(), buf.write_iovec_len());
                for i in 0..len {
                    if left == 0 {
                        break;
                    }
                    // SAFETY: `len` iovecs at `ptr`, filled in order with
                    // `n` bytes in total by the read; we own `buf`.
                    let v = unsafe { &*ptr.add(i) };
                    let take = left.min(v.iov_len);
                    let data = unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, take) };
                    with_tap(&tap, |t| t.on_request_bytes(data));
                    left -= take;
                }
            }
            (res, buf)
        }
    }
}

impl<S: AsyncWriteRent> AsyncWriteRent for Inspected<S> {
    fn write<T: IoBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        let tap = self.tap.clone();
        let fut = self.inner.write(buf);
        async move {
            let (res, buf) = fut.await;
            if let Ok(n) = res {
                // SAFETY: IoBuf guarantees `bytes_init` readable bytes at
                // `read_ptr`; the write took the first `n` of them.
                let n = n.min(buf.bytes_init());
                let data = unsafe { std::slice::from_raw_parts(buf.read_ptr(), n) };
                with_tap(&tap, |t| t.on_response_bytes(data));
            }
            (res, buf)
        }
    }

    fn writev<T: IoVecBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        let tap = self.tap.clone();
        let fut = self.inner.writev(buf);
        async move {
            let (res, buf) = fut.await;
            if let Ok(n) = res {
                let mut left = n;
                let (ptr, len) = (buf.read_iovec_ptr(), buf.read_iovec_len());
                for i in 0..len {
                    if left == 0 {
                        break;
                    }
                    // SAFETY: `len` valid iovecs at `ptr` while we own
                    // `buf`; the write took the first `n` bytes in order.
                    let v = unsafe { &*ptr.add(i) };
                    let take = left.min(v.iov_len);
                    if take == 0 {
                        continue;
                    }
                    let data = unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, take) };
                    with_tap(&tap, |t| t.on_response_bytes(data));
                    left -= take;
                }
            }
            (res, buf)
        }
    }

    fn flush(&mut self) -> impl Future<Output = io::Result<()>> {
        self.inner.flush()
    }

    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> {
        with_tap(&self.tap, |t| t.on_response_end());
        self.inner.shutdown()
    }
}

// SAFETY: as for the inner stream; the tap is an `Rc<RefCell>` each
// future clones, borrowed only between I/O operations (never across an
// await), so the read and write halves never alias it.
unsafe impl<S: Split> Split for Inspected<S> {}
