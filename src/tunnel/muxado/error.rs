//! Errors of the muxado session (fatal) and of one stream (not fatal).

use std::io;
use std::sync::Arc;

use super::frame::{ErrorCode, FrameError};

/// Why a session ended, or why it could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MuxError {
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    #[error("stream {stream_id}: DATA of {len} bytes beyond the receive window ({window} left)")]
    FlowControl {
        stream_id: u32,
        len: u32,
        window: u32,
    },
    #[error("stream {0}: SYN with the wrong parity")]
    WrongParity(u32),
    #[error("stream {0}: SYN on an id that is in use or was used before")]
    StreamIdReused(u32),
    #[error("stream {0}: DATA without SYN on a stream we have not announced yet")]
    UnannouncedStream(u32),
    #[error("peer keeps opening streams beyond the limit of {0}")]
    StreamFlood(usize),
    #[error("peer does not read: {0} bytes of output pending")]
    OutputOverflow(usize),
    #[error("peer sent GOAWAY {code}: {message}")]
    RemoteGoAway { code: ErrorCode, message: String },
    #[error("stream ids exhausted")]
    StreamsExhausted,
    #[error("session closed")]
    SessionClosed,
    #[error("connection i/o: {0}")]
    Io(Arc<io::Error>),
}

impl MuxError {
    /// The code we send in our GOAWAY when this ends the session.
    pub fn code(&self) -> ErrorCode {
        match self {
            MuxError::Frame(e) => e.code(),
            MuxError::FlowControl { .. } => ErrorCode::FlowControl,
            MuxError::WrongParity(_)
            | MuxError::StreamIdReused(_)
            | MuxError::UnannouncedStream(_) => ErrorCode::Protocol,
            MuxError::StreamFlood(_) | MuxError::OutputOverflow(_) => ErrorCode::EnhanceYourCalm,
            MuxError::RemoteGoAway { .. } => ErrorCode::RemoteGoneAway,
            MuxError::StreamsExhausted => ErrorCode::StreamsExhausted,
            MuxError::SessionClosed => ErrorCode::SessionClosed,
            MuxError::Io(_) => ErrorCode::Internal,
        }
    }
}

impl From<io::Error> for MuxError {
    fn from(e: io::Error) -> Self {
        MuxError::Io(Arc::new(e))
    }
}

/// A stream operation that cannot proceed. The session may be fine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("stream reset by peer: {0}")]
    ResetByPeer(ErrorCode),
    #[error("stream reset locally: {0}")]
    Reset(ErrorCode),
    #[error("stream write side already closed")]
    WriteClosed,
    #[error("muxado session closed")]
    SessionClosed,
    #[error("unknown stream")]
    Unknown,
}

impl From<StreamError> for io::Error {
    fn from(e: StreamError) -> Self {
        let kind = match e {
            StreamError::ResetByPeer(_) | StreamError::Reset(_) => io::ErrorKind::ConnectionReset,
            StreamError::WriteClosed => io::ErrorKind::BrokenPipe,
            StreamError::SessionClosed => io::ErrorKind::ConnectionAborted,
            StreamError::Unknown => io::ErrorKind::NotConnected,
        };
        io::Error::new(kind, e)
    }
}
