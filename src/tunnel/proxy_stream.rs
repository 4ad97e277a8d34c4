//! A proxy stream towards an agent, as the request path sees it: a byte
//! stream whose first write is prefixed with the stream type and the
//! ProxyHeader, so that type, header and the request head leave in one
//! muxado DATA frame (the SYN frame). It holds its session's stream permit
//! until dropped.

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::BufResult;
use std::time::Duration;

use super::limit::Permit;
use super::muxado;

pub struct TunnelStream {
    /// Always `Some` until dropped.
    inner: Option<muxado::Stream>,
    /// Type + ProxyHeader, not yet sent.
    preamble: Option<Vec<u8>>,
    permit: Option<Permit>,
}

/// How long a finished stream waits for the agent's FIN before it is reset.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// At most this much late data is read (and dropped) while waiting.
const CLOSE_DRAIN: usize = 1024 * 1024;

/// Closes a stream the way the SDKs expect: FIN, then wait for theirs.
/// Resetting instead would free our side at once while the agent still
/// counts the stream, and the Rust SDK dies past 512 streams; so the
/// permit is held until the agent's side is closed too.
async fn close_gracefully(mut inner: muxado::Stream, permit: Permit) {
    let _ = inner.shutdown().await;
    let drain = async {
        let mut seen = 0usize;
        let mut buf = Vec::with_capacity(16 * 1024);
        while seen < CLOSE_DRAIN {
            buf.clear();
            let (res, b) = inner.read(buf).await;
            buf = b;
            match res {
                Ok(n) if n > 0 => seen += n,
                _ => return true,
            }
        }
        false
    };
    let clean = matches!(monoio::time::timeout(CLOSE_WAIT, drain).await, Ok(true));
    if !clean {
        inner.reset(muxado::ErrorCode::StreamCancelled);
    }
    drop(inner);
    drop(permit);
}

impl Drop for TunnelStream {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        if self.preamble.is_some() {
            // Never written: nothing went on the wire.
            return;
        }
        if let Some(inner) = self.inner.take() {
            monoio::spawn(close_gracefully(inner, permit));
        }
    }
}

impl TunnelStream {
    pub fn new(inner: muxado::Stream, preamble: Vec<u8>, permit: Permit) -> TunnelStream {
        TunnelStream {
            inner: Some(inner),
            preamble: Some(preamble),
            permit: Some(permit),
        }
    }

    /// The agent closed its side (FIN or RST): not reusable.
    pub fn is_read_closed(&self) -> bool {
        self.inner.as_ref().is_none_or(|s| s.is_read_closed())
    }

    fn stream(&mut self) -> std::io::Result<&mut muxado::Stream> {
        self.inner
            .as_mut()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))
    }

    /// Sends the preamble followed by `data` in one write.
    async fn write_with_preamble(&mut self, mut pre: Vec<u8>, data: &[u8]) -> std::io::Result<()> {
        pre.extend_from_slice(data);
        let (res, _) = self.stream()?.write_all(pre).await;
        res.map(|_| ())
    }
}

impl AsyncReadRent for TunnelStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self.inner.as_mut() {
            Some(s) => s.read(buf).await,
            None => (Err(std::io::ErrorKind::NotConnected.into()), buf),
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self.inner.as_mut() {
            Some(s) => s.readv(buf).await,
            None => (Err(std::io::ErrorKind::NotConnected.into()), buf),
        }
    }
}

impl AsyncWriteRent for TunnelStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self.preamble.take() {
            None => match self.inner.as_mut() {
                Some(s) => s.write(buf).await,
                None => (Err(std::io::ErrorKind::NotConnected.into()), buf),
            },
            Some(pre) => {
                // SAFETY: read_ptr/bytes_init describe the initialized bytes
                // of a buffer we own for the duration of this call.
                let data = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
                let n = data.len();
                let res = self.write_with_preamble(pre, data).await;
                (res.map(|_| n), buf)
            }
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self.preamble.take() {
            None => match self.inner.as_mut() {
                Some(s) => s.writev(buf).await,
                None => (Err(std::io::ErrorKind::NotConnected.into()), buf),
            },
            Some(pre) => {
                let mut data = Vec::new();
                // SAFETY: the iovec array and the buffers it points to are
                // owned by `buf` for the duration of this call.
                unsafe {
                    let iov =
                        std::slice::from_raw_parts(buf.read_iovec_ptr(), buf.read_iovec_len());
                    for v in iov {
                        data.extend_from_slice(std::slice::from_raw_parts(
                            v.iov_base as *const u8,
                            v.iov_len,
                        ));
                    }
                }
                let n = data.len();
                let res = self.write_with_preamble(pre, &data).await;
                (res.map(|_| n), buf)
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.stream()?.flush().await
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        if let Some(pre) = self.preamble.take() {
            self.write_with_preamble(pre, &[]).await?;
        }
        self.stream()?.shutdown().await
    }
}

// SAFETY: reads touch only the muxado stream's receive side and writes its
// send side (plus the preamble, used by the writer only).
unsafe impl monoio::io::Split for TunnelStream {}
