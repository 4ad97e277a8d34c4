//! muxado frame codec, sans-IO: encode helpers that append to a `Vec<u8>`
//! and a decoder over `&[u8]` that returns a whole frame (borrowing its
//! body) or asks for more bytes. It owns the byte layout and the length
//! rules of spec §2; it never allocates, and never trusts a length before
//! the bytes it announces are there.
//!
//! Header (8 bytes, big-endian): `len:u24 | type:4 flags:4 | stream_id:u32`
//! with only the low 31 bits of the stream id meaningful.

use std::fmt;

/// Size of every frame header.
pub const HEADER_LEN: usize = 8;
/// Largest body the 24-bit length field can announce.
pub const MAX_FRAME_LEN: u32 = 0x00FF_FFFF;
/// Stream ids are 31 bits; the top bit is ignored.
pub const STREAM_ID_MASK: u32 = 0x7FFF_FFFF;
/// Flag on DATA: the sender's half of the stream is finished.
pub const FLAG_FIN: u8 = 0x1;
/// Flag on DATA: this frame opens the stream.
pub const FLAG_SYN: u8 = 0x2;
/// Per-stream, per-direction window both SDKs assume (no negotiation).
pub const DEFAULT_WINDOW: u32 = 256 * 1024;
/// GOAWAY debug text we keep; anything after it is never looked at
/// (GOAWAY is terminal, so the rest of the connection is not parsed).
pub const MAX_GOAWAY_MESSAGE: usize = 4096;
/// RST and WNDINC bodies are exactly this long; GOAWAY has at least this
/// much before its message.
const WORD: usize = 4;
const GOAWAY_FIXED: usize = 8;

/// Frame type: the high nibble of header byte 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameType {
    Rst,
    Data,
    WndInc,
    GoAway,
}

impl FrameType {
    fn from_nibble(n: u8) -> Option<FrameType> {
        match n {
            0 => Some(FrameType::Rst),
            1 => Some(FrameType::Data),
            2 => Some(FrameType::WndInc),
            3 => Some(FrameType::GoAway),
            _ => None,
        }
    }

    fn nibble(self) -> u8 {
        match self {
            FrameType::Rst => 0,
            FrameType::Data => 1,
            FrameType::WndInc => 2,
            FrameType::GoAway => 3,
        }
    }
}

/// A decoded (or to-be-encoded) frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub ty: FrameType,
    pub flags: u8,
    pub stream_id: u32,
}

impl FrameHeader {
    pub fn is_fin(&self) -> bool {
        self.flags & FLAG_FIN != 0
    }

    pub fn is_syn(&self) -> bool {
        self.flags & FLAG_SYN != 0
    }

    /// Appends the 8 header bytes. `len` is cut to 24 bits, `flags` to 4
    /// and the stream id to 31: callers keep them in range.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let len = (self.len & MAX_FRAME_LEN).to_be_bytes();
        let id = (self.stream_id & STREAM_ID_MASK).to_be_bytes();
        out.extend_from_slice(&[
            len[1],
            len[2],
            len[3],
            (self.ty.nibble() << 4) | (self.flags & 0x0F),
            id[0],
            id[1],
            id[2],
            id[3],
        ]);
    }

    /// Parses 8 header bytes without any length policy; unknown types
    /// are an error (we never skip frames we do not understand).
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<FrameHeader, FrameError> {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
        let ty =
            FrameType::from_nibble(bytes[3] >> 4).ok_or(FrameError::UnknownType(bytes[3] >> 4))?;
        let stream_id =
            u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) & STREAM_ID_MASK;
        Ok(FrameHeader {
            len,
            ty,
            flags: bytes[3] & 0x0F,
            stream_id,
        })
    }
}

/// Error codes carried by RST and GOAWAY (spec §2 table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    None,
    Protocol,
    Internal,
    FlowControl,
    StreamClosed,
    StreamRefused,
    StreamCancelled,
    StreamReset,
    FrameSizeError,
    AcceptQueueFull,
    EnhanceYourCalm,
    RemoteGoneAway,
    StreamsExhausted,
    WriteTimeout,
    SessionClosed,
    PeerEof,
    /// Any other value, kept as received.
    Unknown(u32),
}

impl ErrorCode {
    const KNOWN: [ErrorCode; 16] = [
        ErrorCode::None,
        ErrorCode::Protocol,
        ErrorCode::Internal,
        ErrorCode::FlowControl,
        ErrorCode::StreamClosed,
        ErrorCode::StreamRefused,
        ErrorCode::StreamCancelled,
        ErrorCode::StreamReset,
        ErrorCode::FrameSizeError,
        ErrorCode::AcceptQueueFull,
        ErrorCode::EnhanceYourCalm,
        ErrorCode::RemoteGoneAway,
        ErrorCode::StreamsExhausted,
        ErrorCode::WriteTimeout,
        ErrorCode::SessionClosed,
        ErrorCode::PeerEof,
    ];

    pub fn from_u32(v: u32) -> ErrorCode {
        match Self::KNOWN.get(v as usize) {
            Some(code) => *code,
            None => ErrorCode::Unknown(v),
        }
    }

    pub fn as_u32(self) -> u32 {
        match self {
            ErrorCode::Unknown(v) => v,
            known => Self::KNOWN.iter().position(|c| *c == known).unwrap_or(0) as u32,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::None => "None",
            ErrorCode::Protocol => "Protocol",
            ErrorCode::Internal => "Internal",
            ErrorCode::FlowControl => "FlowControl",
            ErrorCode::StreamClosed => "StreamClosed",
            ErrorCode::StreamRefused => "StreamRefused",
            ErrorCode::StreamCancelled => "StreamCancelled",
            ErrorCode::StreamReset => "StreamReset",
            ErrorCode::FrameSizeError => "FrameSizeError",
            ErrorCode::AcceptQueueFull => "AcceptQueueFull",
            ErrorCode::EnhanceYourCalm => "EnhanceYourCalm",
            ErrorCode::RemoteGoneAway => "RemoteGoneAway",
            ErrorCode::StreamsExhausted => "StreamsExhausted",
            ErrorCode::WriteTimeout => "WriteTimeout",
            ErrorCode::SessionClosed => "SessionClosed",
            ErrorCode::PeerEof => "PeerEOF",
            ErrorCode::Unknown(_) => "Unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Unknown(v) => write!(f, "Unknown(0x{v:x})"),
            known => write!(f, "{}(0x{:x})", known.name(), known.as_u32()),
        }
    }
}

/// A malformed frame. Every one of these ends the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown frame type {0:#x}")]
    UnknownType(u8),
    #[error("{ty:?} frame with body length {len}")]
    BadLength { ty: FrameType, len: u32 },
    #[error("DATA frame of {len} bytes exceeds the {max} byte limit")]
    DataTooLarge { len: u32, max: u32 },
    #[error("{0:?} frame on stream id 0")]
    ZeroStreamId(FrameType),
    #[error("GOAWAY frame on stream id {0}")]
    GoAwayStreamId(u32),
    #[error("WNDINC of zero on stream {0}")]
    ZeroIncrement(u32),
}

impl FrameError {
    /// The code to put in our GOAWAY when a peer sends this.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::BadLength { .. } | FrameError::DataTooLarge { .. } => {
                ErrorCode::FrameSizeError
            }
            _ => ErrorCode::Protocol,
        }
    }
}

/// A whole frame; DATA payloads and GOAWAY messages borrow the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    Rst {
        stream_id: u32,
        code: ErrorCode,
    },
    Data {
        stream_id: u32,
        flags: u8,
        payload: &'a [u8],
    },
    WndInc {
        stream_id: u32,
        increment: u32,
    },
    GoAway {
        last_stream_id: u32,
        code: ErrorCode,
        message: &'a [u8],
    },
}

impl Frame<'_> {
    /// Appends the encoded frame (see the `encode_*` helpers).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Frame::Rst { stream_id, code } => encode_rst(out, stream_id, code),
            Frame::Data {
                stream_id,
                flags,
                payload,
            } => encode_data(out, stream_id, flags, payload),
            Frame::WndInc {
                stream_id,
                increment,
            } => encode_wndinc(out, stream_id, increment),
            Frame::GoAway {
                last_stream_id,
                code,
                message,
            } => encode_goaway(out, last_stream_id, code, message),
        }
    }
}

/// Appends a DATA header announcing `len` payload bytes; the caller
/// appends exactly that many bytes next.
pub fn encode_data_header(out: &mut Vec<u8>, stream_id: u32, flags: u8, len: u32) {
    debug_assert!(len <= MAX_FRAME_LEN);
    FrameHeader {
        len,
        ty: FrameType::Data,
        flags,
        stream_id,
    }
    .encode(out);
}

/// Appends a DATA frame. `payload` must fit the 24-bit length.
pub fn encode_data(out: &mut Vec<u8>, stream_id: u32, flags: u8, payload: &[u8]) {
    encode_data_header(out, stream_id, flags, payload.len() as u32);
    out.extend_from_slice(payload);
}

/// Appends an RST frame.
pub fn encode_rst(out: &mut Vec<u8>, stream_id: u32, code: ErrorCode) {
    FrameHeader {
        len: WORD as u32,
        ty: FrameType::Rst,
        flags: 0,
        stream_id,
    }
    .encode(out);
    out.extend_from_slice(&code.as_u32().to_be_bytes());
}

/// Appends a WNDINC frame. `increment` must be in 1..=2^31-1 (a zero
/// increment kills Go sessions).
pub fn encode_wndinc(out: &mut Vec<u8>, stream_id: u32, increment: u32) {
    debug_assert!(increment != 0 && increment <= STREAM_ID_MASK);
    FrameHeader {
        len: WORD as u32,
        ty: FrameType::WndInc,
        flags: 0,
        stream_id,
    }
    .encode(out);
    out.extend_from_slice(&(increment & STREAM_ID_MASK).to_be_bytes());
}

/// Appends a GOAWAY frame with the correct length (8 + message). The
/// message is cut to [`MAX_GOAWAY_MESSAGE`] bytes.
pub fn encode_goaway(out: &mut Vec<u8>, last_stream_id: u32, code: ErrorCode, message: &[u8]) {
    let message = &message[..message.len().min(MAX_GOAWAY_MESSAGE)];
    FrameHeader {
        len: (GOAWAY_FIXED + message.len()) as u32,
        ty: FrameType::GoAway,
        flags: 0,
        stream_id: 0,
    }
    .encode(out);
    out.extend_from_slice(&(last_stream_id & STREAM_ID_MASK).to_be_bytes());
    out.extend_from_slice(&code.as_u32().to_be_bytes());
    out.extend_from_slice(message);
}

/// Outcome of [`Decoder::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole frame and how many input bytes it used.
    Frame { frame: Frame<'a>, consumed: usize },
    /// The input holds no whole frame yet.
    NeedMore,
}

/// Validates headers and bodies against the limits of one session.
#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    max_data: u32,
    lenient_goaway: bool,
}

impl Decoder {
    /// `max_data`: largest DATA body accepted (the receive window).
    /// `lenient_goaway`: the peer is a client, whose GOAWAY length may be
    /// wrong (Rust SDK writes `len(msg)` instead of `8 + len(msg)`): accept
    /// any length and read at least the 8 fixed bytes.
    pub fn new(max_data: u32, lenient_goaway: bool) -> Decoder {
        Decoder {
            max_data: max_data.min(MAX_FRAME_LEN),
            lenient_goaway,
        }
    }

    /// Parses and checks a header; `Ok(None)` if fewer than 8 bytes.
    pub fn decode_header(&self, buf: &[u8]) -> Result<Option<FrameHeader>, FrameError> {
        let Some(bytes) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let h = FrameHeader::parse(bytes)?;
        match h.ty {
            FrameType::Data => {
                if h.len > self.max_data {
                    return Err(FrameError::DataTooLarge {
                        len: h.len,
                        max: self.max_data,
                    });
                }
            }
            FrameType::Rst | FrameType::WndInc => {
                if h.len as usize != WORD {
                    return Err(FrameError::BadLength {
                        ty: h.ty,
                        len: h.len,
                    });
                }
            }
            FrameType::GoAway => {
                if !self.lenient_goaway {
                    if (h.len as usize) < GOAWAY_FIXED {
                        return Err(FrameError::BadLength {
                            ty: h.ty,
                            len: h.len,
                        });
                    }
                    if h.stream_id != 0 {
                        return Err(FrameError::GoAwayStreamId(h.stream_id));
                    }
                }
            }
        }
        if h.ty != FrameType::GoAway && h.stream_id == 0 {
            return Err(FrameError::ZeroStreamId(h.ty));
        }
        Ok(Some(h))
    }

    /// How many body bytes must be present before [`Decoder::decode_body`]
    /// can run. For GOAWAY this is not always `len` (see the quirk above and
    /// [`MAX_GOAWAY_MESSAGE`]).
    pub fn body_len(&self, h: &FrameHeader) -> usize {
        match h.ty {
            FrameType::GoAway => {
                let len = h.len as usize;
                let len = if self.lenient_goaway {
                    len.max(GOAWAY_FIXED)
                } else {
                    len
                };
                len.min(GOAWAY_FIXED + MAX_GOAWAY_MESSAGE)
            }
            _ => h.len as usize,
        }
    }

    /// Builds the frame from a checked header and exactly
    /// [`Decoder::body_len`] body bytes.
    pub fn decode_body<'a>(&self, h: FrameHeader, body: &'a [u8]) -> Result<Frame<'a>, FrameError> {
        let word = |at: usize| -> u32 {
            body.get(at..at + WORD)
                .and_then(|w| w.first_chunk::<WORD>())
                .map_or(0, |w| u32::from_be_bytes(*w))
        };
        Ok(match h.ty {
            FrameType::Data => Frame::Data {
                stream_id: h.stream_id,
                flags: h.flags,
                payload: body,
            },
            FrameType::Rst => Frame::Rst {
                stream_id: h.stream_id,
                code: ErrorCode::from_u32(word(0)),
            },
            FrameType::WndInc => {
                let increment = word(0) & STREAM_ID_MASK;
                if increment == 0 {
                    return Err(FrameError::ZeroIncrement(h.stream_id));
                }
                Frame::WndInc {
                    stream_id: h.stream_id,
                    increment,
                }
            }
            FrameType::GoAway => Frame::GoAway {
                last_stream_id: word(0) & STREAM_ID_MASK,
                code: ErrorCode::from_u32(word(WORD)),
                message: body.get(GOAWAY_FIXED..).unwrap_or(&[]),
            },
        })
    }

    /// Decodes one whole frame from the start of `buf`.
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Result<Decoded<'a>, FrameError> {
        let Some(h) = self.decode_header(buf)? else {
            return Ok(Decoded::NeedMore);
        };
        let need = self.body_len(&h);
        let Some(body) = buf.get(HEADER_LEN..HEADER_LEN + need) else {
            return Ok(Decoded::NeedMore);
        };
        let frame = self.decode_body(h, body)?;
        Ok(Decoded::Frame {
            frame,
            consumed: HEADER_LEN + need,
        })
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
