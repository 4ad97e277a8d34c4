//! Message body framing and a streaming scanner.
//!
//! The proxy forwards body bytes verbatim (no re-chunking): the scanner
//! only validates framing and says where the body ends, so a pipelined
//! next request, or garbage an upstream sends after its response, is never
//! mistaken for body.

use super::error::ParseError;
use super::limits::{MAX_CHUNK_EXT, MAX_TRAILER_BYTES};

/// How a message's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// No body at all.
    #[default]
    None,
    Length(u64),
    Chunked,
    /// Responses only: the body runs until the upstream closes.
    CloseDelimited,
}

/// Scans a body as it streams past.
#[derive(Debug, Clone)]
pub enum BodyDecoder {
    Length { remaining: u64 },
    Chunked(ChunkedScanner),
    UntilClose,
    Done,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::None | Framing::Length(0) => BodyDecoder::Done,
            Framing::Length(n) => BodyDecoder::Length { remaining: n },
            Framing::Chunked => BodyDecoder::Chunked(ChunkedScanner::default()),
            Framing::CloseDelimited => BodyDecoder::UntilClose,
        }
    }

    /// Consumes the body bytes at the start of `input`; returns how many
    /// belong to the body. Bytes past the end of the body are left alone.
    pub fn scan(&mut self, input: &[u8]) -> Result<usize, ParseError> {
        match self {
            BodyDecoder::Done => Ok(0),
            BodyDecoder::UntilClose => Ok(input.len()),
            BodyDecoder::Length { remaining } => {
                let n = (*remaining).min(input.len() as u64);
                *remaining -= n;
                if *remaining == 0 {
                    *self = BodyDecoder::Done;
                }
                Ok(n as usize)
            }
            BodyDecoder::Chunked(c) => {
                let n = c.scan(input)?;
                if c.is_done() {
                    *self = BodyDecoder::Done;
                }
                Ok(n)
            }
        }
    }

    /// Like `scan`, reporting the decoded payload (ranges of `input`) and,
    /// for chunked bodies, trailer field lines. See
    /// [`ChunkedScanner::scan_with`].
    pub fn scan_with(
        &mut self,
        input: &[u8],
        mut on_data: impl FnMut(std::ops::Range<usize>),
        on_trailer: impl FnMut(std::ops::Range<usize>, bool),
    ) -> Result<usize, ParseError> {
        match self {
            BodyDecoder::Chunked(c) => {
                let n = c.scan_with(input, on_data, on_trailer)?;
                if c.is_done() {
                    *self = BodyDecoder::Done;
                }
                Ok(n)
            }
            _ => {
                let n = self.scan(input)?;
                if n > 0 {
                    on_data(0..n);
                }
                Ok(n)
            }
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, BodyDecoder::Done)
    }

    /// Whether the body may end at EOF (only close-delimited ones do).
    pub fn ends_at_eof(&self) -> bool {
        matches!(self, BodyDecoder::UntilClose | BodyDecoder::Done)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// At the start of a chunk-size line (no digit yet).
    SizeStart,
    Size,
    /// Whitespace after the size: only `;` (an extension) may follow.
    SizeWs,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// After the last chunk: at the start of a trailer line or the final CRLF.
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

/// RFC 9112 §7.1 chunked coding, strictly: hex sizes without signs or
/// prefixes (at most 16 digits), CRLF line ends only, bounded extensions
/// and trailers.
#[derive(Debug, Clone)]
pub struct ChunkedScanner {
    state: ChunkState,
    size: u64,
    digits: u8,
    ext_len: usize,
    trailer_len: usize,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        ChunkedScanner {
            state: ChunkState::SizeStart,
            size: 0,
            digits: 0,
            ext_len: 0,
            trailer_len: 0,
        }
    }
}

impl ChunkedScanner {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Returns how many bytes of `input` belong to the chunked body.
    pub fn scan(&mut self, input: &[u8]) -> Result<usize, ParseError> {
        self.scan_with(input, |_| {}, |_, _| {})
    }

    /// Like `scan`, and reports where the decoded payload lies: each chunk
    /// data run as a range of `input` to `on_data`, each trailer field line
    /// (without its CRLF) to `on_trailer`: a line split across reads comes
    /// in pieces, the flag is true on the piece that ends the line (it may
    /// be empty). Used where the body must be
    /// re-framed (HTTP/2 DATA frames carry payload only).
    pub fn scan_with(
        &mut self,
        input: &[u8],
        mut on_data: impl FnMut(std::ops::Range<usize>),
        mut on_trailer: impl FnMut(std::ops::Range<usize>, bool),
    ) -> Result<usize, ParseError> {
        use ChunkState::*;
        let mut i = 0;
        let mut trailer_start = 0;
        while i < input.len() {
            match self.state {
                Done => return Ok(i),
                Data => {
                    let take = self.size.min((input.len() - i) as u64);
                    if take > 0 {
                        on_data(i..i + take as usize);
                    }
                    self.size -= take;
                    i += take as usize;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                _ => {}
            }
            let b = input[i];
            if self.state == TrailerStart && b != b'\r' {
                trailer_start = i;
            }
            i += 1;
            self.state = match (self.state, b) {
                (SizeStart | Size, _) if b.is_ascii_hexdigit() => {
                    if self.digits == 16 {
                        return Err(ParseError::Chunked("chunk size too large"));
                    }
                    self.digits += 1;
                    self.size = (self.size << 4) | u64::from(hex_val(b));
                    Size
                }
                (Size | SizeWs, b' ' | b'\t') => SizeWs,
                (Size | SizeWs, b';') => {
                    self.ext_len = 0;
                    Ext
                }
                (Size, b'\r') => SizeLf,
                (Ext, b'\r') => SizeLf,
                (Ext, _) if b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80 => {
                    self.ext_len += 1;
                    if self.ext_len > MAX_CHUNK_EXT {
                        return Err(ParseError::Chunked("chunk extension too long"));
                    }
                    Ext
                }
                (SizeLf, b'\n') => {
                    let size = self.size;
                    self.size = 0;
                    self.digits = 0;
                    if size == 0 {
                        TrailerStart
                    } else {
                        self.size = size;
                        Data
                    }
                }
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => SizeStart,
                (TrailerStart, b'\r') => FinalLf,
                (FinalLf, b'\n') => Done,
                (TrailerLine, b'\r') => {
                    on_trailer(trailer_start..i - 1, true);
                    TrailerLf
                }
                (TrailerStart | TrailerLine, _) if b == b'\t' || b >= b' ' && b != 0x7f => {
                    self.trailer_len += 1;
                    if self.trailer_len > MAX_TRAILER_BYTES {
                        return Err(ParseError::Chunked("trailer section too large"));
                    }
                    TrailerLine
                }
                (TrailerLf, b'\n') => TrailerStart,
                (SizeStart, _) => return Err(ParseError::Chunked("invalid chunk size")),
                (Size | SizeWs, _) => return Err(ParseError::Chunked("invalid chunk size line")),
                (Ext, _) => return Err(ParseError::Chunked("invalid chunk extension")),
                (DataCr | DataLf, _) => {
                    return Err(ParseError::Chunked("missing CRLF after chunk data"))
                }
                _ => return Err(ParseError::Chunked("invalid line ending")),
            };
            if self.state == Done {
                return Ok(i);
            }
        }
        if self.state == TrailerLine {
            // The line goes on in the next read: report this piece now
            // (its start is gone from the caller's buffer by then).
            on_trailer(trailer_start..i, false);
        }
        Ok(i)
    }
}

fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8]) -> Result<(usize, bool), ParseError> {
        let mut d = BodyDecoder::new(Framing::Chunked);
        let n = d.scan(input)?;
        Ok((n, d.is_done()))
    }

    #[test]
    fn chunked_complete_leaves_rest() {
        let body = b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1";
        assert_eq!(scan_all(body), Ok((15, true)));
    }

    #[test]
    fn chunked_byte_by_byte_equals_whole() {
        let body = b"a;ext=1\r\n0123456789\r\n1\r\nx\r\n0\r\nTrailer-A: b\r\n\r\n";
        let mut d = BodyDecoder::new(Framing::Chunked);
        let mut total = 0;
        for b in body.iter() {
            total += d.scan(std::slice::from_ref(b)).expect("valid");
        }
        assert!(d.is_done());
        assert_eq!(total, body.len());
    }

    #[test]
    fn chunked_with_trailers() {
        let body = b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-B: 2\r\n\r\n";
        assert_eq!(scan_all(body), Ok((body.len(), true)));
    }

    #[test]
    fn bad_chunk_sizes_rejected() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"-1\r\n",
            b"+1\r\n",
            b"0x5\r\n",
            b" 5\r\n",
            b"5 \r\n",
            b"5\n",
            b"11111111111111111\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\n0\r\n\r\n",
        ] {
            assert!(scan_all(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn whitespace_before_extension_ok() {
        assert_eq!(scan_all(b"1 ;a=b\r\nx\r\n0\r\n\r\n").map(|r| r.1), Ok(true));
    }

    #[test]
    fn huge_but_valid_size() {
        let mut d = BodyDecoder::new(Framing::Chunked);
        assert_eq!(d.scan(b"ffffffffffffffff\r\nabc"), Ok(21));
        assert!(!d.is_done());
    }

    #[test]
    fn length_body() {
        let mut d = BodyDecoder::new(Framing::Length(5));
        assert_eq!(d.scan(b"abc"), Ok(3));
        assert_eq!(d.scan(b"defgh"), Ok(2));
        assert!(d.is_done());
        assert!(BodyDecoder::new(Framing::Length(0)).is_done());
        assert!(BodyDecoder::new(Framing::None).is_done());
    }

    #[test]
    fn until_close() {
        let mut d = BodyDecoder::new(Framing::CloseDelimited);
        assert_eq!(d.scan(b"anything"), Ok(8));
        assert!(d.ends_at_eof());
        assert!(!BodyDecoder::new(Framing::Length(1)).ends_at_eof());
    }

    #[test]
    fn decoded_payload_and_trailers() {
        let body = b"5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\nX-B: 1\r\n\r\nNEXT";
        let mut c = ChunkedScanner::default();
        let mut data = Vec::new();
        let mut trailers = Vec::new();
        let n = c
            .scan_with(
                body,
                |r| data.extend_from_slice(&body[r]),
                |r, _| trailers.push(String::from_utf8_lossy(&body[r]).to_string()),
            )
            .expect("valid");
        assert_eq!(n, body.len() - 4);
        assert!(c.is_done());
        assert_eq!(data, b"hello world");
        assert_eq!(
            trailers,
            vec!["X-Sum: 42".to_string(), "X-B: 1".to_string()]
        );
    }

    /// Regression (found by the fuzz replay of `chunked`): a trailer line
    /// split across two reads was reported from the second read only, so
    /// `X-Secret: v` split after `X-` reached HTTP/2 clients as `Secret: v`.
    #[test]
    fn regression_trailer_line_split_across_reads() {
        let body = b"3\r\nabc\r\n0\r\nX-Secret: v\r\nY: 2\r\n\r\n";
        for split in 0..body.len() {
            let mut c = ChunkedScanner::default();
            let mut lines = String::new();
            for part in [&body[..split], &body[split..]] {
                c.scan_with(
                    part,
                    |_| {},
                    |r, end| {
                        lines.push_str(&String::from_utf8_lossy(&part[r]));
                        if end {
                            lines.push('|');
                        }
                    },
                )
                .expect("valid");
            }
            assert!(c.is_done());
            assert_eq!(lines, "X-Secret: v|Y: 2|", "split at {split}");
        }
    }

    #[test]
    fn extension_too_long() {
        let mut raw = b"1;".to_vec();
        raw.extend(std::iter::repeat_n(b'a', MAX_CHUNK_EXT + 1));
        assert!(scan_all(&raw).is_err());
    }
}
