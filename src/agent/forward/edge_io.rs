//! The edge's side of a proxied connection, for the forwarders that speak
//! HTTP/1.1 on it (h2c bridge, file server, the 502 page): a buffered
//! reader that yields request heads and decoded body data, and a writer
//! that counts what it sends.

use std::io;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use super::error::ForwardError;
use crate::http1::limits::DEFAULT_MAX_HEAD_BYTES;
use crate::http1::{BodyDecoder, RequestHead};

/// Spare capacity guaranteed before each read.
const READ_CHUNK: usize = 16 * 1024;

/// Buffered reads from the edge's stream.
pub struct EdgeReader<R> {
    rd: R,
    buf: Vec<u8>,
    /// Start of the bytes not consumed yet.
    pos: usize,
    eof: bool,
    /// Bytes read from the edge so far.
    pub bytes_in: u64,
}

impl<R: AsyncReadRent> EdgeReader<R> {
    pub fn new(rd: R) -> Self {
        EdgeReader {
            rd,
            buf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            eof: false,
            bytes_in: 0,
        }
    }

    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Reads more bytes after the buffered ones; `Ok(0)` at EOF.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < READ_CHUNK {
            self.buf.reserve(READ_CHUNK);
        }
        let buf = std::mem::take(&mut self.buf);
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, slice) = self.rd.read(buf.slice_mut(len..cap)).await;
        self.buf = slice.into_inner();
        let n = res?;
        if n == 0 {
            self.eof = true;
        }
        self.bytes_in += n as u64;
        Ok(n)
    }

    /// Reads the next request head into `head`, copying its bytes into
    /// `head_buf` (the spans of `head` point there) and consuming them.
    /// `Ok(false)`: the edge closed the stream before a new request.
    pub async fn read_head(
        &mut self,
        head: &mut RequestHead,
        head_buf: &mut Vec<u8>,
    ) -> Result<bool, ForwardError> {
        head.reset();
        loop {
            if !self.buffered().is_empty() && head.parse(self.buffered(), DEFAULT_MAX_HEAD_BYTES)? {
                head_buf.clear();
                head_buf.extend_from_slice(&self.buffered()[..head.head_len]);
                self.consume(head.head_len);
                return Ok(true);
            }
            if self.fill().await.map_err(ForwardError::Edge)? == 0 {
                return if self.buffered().is_empty() {
                    Ok(false)
                } else {
                    Err(ForwardError::TruncatedRequest)
                };
            }
        }
    }

    /// The next piece of decoded body payload, or `None` at the end of the
    /// body. For a chunked body, `tail` collects the framing bytes after
    /// the last payload byte: at the end it holds the last-chunk line and
    /// the trailer section (see [`trailer_section`]).
    pub async fn body_data(
        &mut self,
        dec: &mut BodyDecoder,
        tail: &mut Vec<u8>,
    ) -> Result<Option<Bytes>, ForwardError> {
        let mut ranges: Vec<Range<usize>> = Vec::new();
        loop {
            if dec.is_done() {
                return Ok(None);
            }
            if !self.buffered().is_empty() {
                ranges.clear();
                let input = self.buffered();
                let n = dec.scan_with(input, |r| ranges.push(r), |_, _| {})?;
                let mut data = BytesMut::new();
                let mut framing_from = 0;
                for r in &ranges {
                    data.extend_from_slice(&input[r.clone()]);
                    framing_from = r.end;
                }
                if !ranges.is_empty() {
                    tail.clear();
                }
                tail.extend_from_slice(&input[framing_from..n]);
                self.consume(n);
                if !data.is_empty() {
                    return Ok(Some(data.freeze()));
                }
                if dec.is_done() {
                    return Ok(None);
                }
            }
            if self.fill().await.map_err(ForwardError::Edge)? == 0 {
                return if dec.ends_at_eof() {
                    Ok(None)
                } else {
                    Err(ForwardError::TruncatedRequest)
                };
            }
        }
    }

    /// Reads and drops the rest of a body.
    pub async fn discard_body(&mut self, dec: &mut BodyDecoder) -> Result<(), ForwardError> {
        let mut tail = Vec::new();
        while self.body_data(dec, &mut tail).await?.is_some() {
            tail.clear();
        }
        Ok(())
    }
}

/// The trailer field lines (with the final blank line) from the framing
/// bytes `EdgeReader::body_data` left in `tail` at the end of a chunked
/// body: "\r\n" (end of the last chunk), "0[;ext]\r\n", fields, "\r\n".
pub fn trailer_section(tail: &[u8]) -> &[u8] {
    let t = tail.strip_prefix(b"\r\n").unwrap_or(tail);
    match memchr::memchr(b'\n', t) {
        Some(i) => &t[i + 1..],
        None => &[],
    }
}

/// Writes to the edge's stream, counting bytes.
pub struct EdgeWriter<W> {
    wr: W,
    /// Bytes written to the edge so far.
    pub bytes_out: u64,
}

impl<W: AsyncWriteRent> EdgeWriter<W> {
    pub fn new(wr: W) -> Self {
        EdgeWriter { wr, bytes_out: 0 }
    }

    /// Writes all of `buf` and gives it back for reuse.
    pub async fn write_all(&mut self, buf: Vec<u8>) -> Result<Vec<u8>, ForwardError> {
        let len = buf.len() as u64;
        let (res, buf) = self.wr.write_all(buf).await;
        res.map_err(ForwardError::Edge)?;
        self.bytes_out += len;
        Ok(buf)
    }

    pub async fn write_bytes(&mut self, data: Bytes) -> Result<(), ForwardError> {
        let len = data.len() as u64;
        let (res, _) = self.wr.write_all(data).await;
        res.map_err(ForwardError::Edge)?;
        self.bytes_out += len;
        Ok(())
    }

    /// Half-closes towards the edge (FIN): the response is complete.
    pub async fn shutdown(&mut self) -> Result<(), ForwardError> {
        self.wr.shutdown().await.map_err(ForwardError::Edge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::Framing;

    #[test]
    fn trailer_section_forms() {
        assert_eq!(
            trailer_section(b"\r\n0\r\nX-A: 1\r\n\r\n"),
            b"X-A: 1\r\n\r\n"
        );
        assert_eq!(trailer_section(b"0;e=1\r\n\r\n"), b"\r\n");
        assert_eq!(trailer_section(b""), b"");
    }

    /// Feeds a chunked body split at every position through the decoder
    /// the way `body_data` does, and checks payload and trailers.
    #[test]
    fn chunked_payload_and_trailers_at_any_split() {
        let body: &[u8] = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nGrpc-Status: 0\r\nX-B: 2\r\n\r\n";
        for split in 1..body.len() {
            let mut dec = BodyDecoder::new(Framing::Chunked);
            let mut tail = Vec::new();
            let mut data = Vec::new();
            for part in [&body[..split], &body[split..]] {
                let mut ranges = Vec::new();
                let n = dec
                    .scan_with(part, |r| ranges.push(r), |_, _| {})
                    .expect("ok");
                let mut from = 0;
                for r in &ranges {
                    data.extend_from_slice(&part[r.clone()]);
                    from = r.end;
                }
                if !ranges.is_empty() {
                    tail.clear();
                }
                tail.extend_from_slice(&part[from..n]);
            }
            assert!(dec.is_done());
            assert_eq!(data, b"hello world", "split {split}");
            assert_eq!(
                trailer_section(&tail),
                b"Grpc-Status: 0\r\nX-B: 2\r\n\r\n",
                "split {split}"
            );
        }
    }
}
