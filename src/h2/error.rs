//! Errors of the HTTP/2 side: what ended a connection (`H2Error`) and why a
//! request or response head could not be converted (`ConvertError`).

use std::fmt;

/// Why `serve` returned an error. A client that simply goes away, or a
/// connection that ends with a graceful GOAWAY from either side, is `Ok`.
#[derive(Debug, thiserror::Error)]
pub enum H2Error {
    /// No valid client preface and SETTINGS within `handshake_timeout`.
    #[error("HTTP/2 handshake timed out")]
    HandshakeTimeout,
    /// The client preface or first SETTINGS frame was invalid, or the
    /// socket failed during the handshake.
    #[error("HTTP/2 handshake failed: {0}")]
    Handshake(#[source] h2::Error),
    /// The connection ended with a protocol error (ours or the client's:
    /// GOAWAY with an error code, including ENHANCE_YOUR_CALM for floods)
    /// or an I/O error.
    #[error("HTTP/2 connection error: {0}")]
    Connection(#[source] h2::Error),
    /// A graceful close after the idle timeout did not complete in time
    /// (the client stopped reading); the socket was dropped.
    #[error("HTTP/2 connection did not close after the idle timeout")]
    CloseTimeout,
    /// The I/O stack under h2 panicked; the connection was dropped and the
    /// worker goes on. Known cause: monoio-rustls 0.4 answers a TLS error
    /// on the read side by writing an alert, which panics ("buffer mut
    /// expected") when the bridge has a write in flight at that moment
    /// (tests/h2_server.rs `tls_error_while_a_write_is_blocked`).
    #[error("HTTP/2 connection I/O panicked: {0}")]
    Panic(String),
}

impl H2Error {
    pub fn is_timeout(&self) -> bool {
        matches!(self, H2Error::HandshakeTimeout | H2Error::CloseTimeout)
    }

    /// The GOAWAY or RST reason involved, when h2 reported one.
    pub fn reason(&self) -> Option<h2::Reason> {
        match self {
            H2Error::Handshake(e) | H2Error::Connection(e) => e.reason(),
            _ => None,
        }
    }

    /// The edge ended the connection because the client misbehaved
    /// (flood protections: ENHANCE_YOUR_CALM).
    pub fn is_calm_down(&self) -> bool {
        self.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM)
    }

    /// The socket failed (reset, broken pipe): nothing to report upwards.
    pub fn is_io(&self) -> bool {
        match self {
            H2Error::Handshake(e) | H2Error::Connection(e) => e.is_io(),
            _ => false,
        }
    }
}

/// Why a head could not be converted between HTTP/2 and HTTP/1.1. All are
/// the client's or the upstream's fault; `status` says what to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConvertError {
    /// Neither `:authority` nor `Host`.
    MissingAuthority,
    /// `:authority` and `Host` name different origins (RFC 9113 §8.3.1).
    AuthorityMismatch,
    /// More than one `Host` field.
    DuplicateHost,
    /// `:authority` with userinfo, or one that is not a valid host[:port].
    InvalidAuthority,
    /// `:path` missing, empty or not origin-form (`/...` or `*` for OPTIONS).
    InvalidPath,
    /// A connection-specific field (RFC 9113 §8.2.2) in a request.
    ConnectionSpecificHeader(&'static str),
    /// `te` with a value other than `trailers`.
    InvalidTe,
    /// Unparsable or conflicting `content-length`, or one that contradicts
    /// an END_STREAM on the headers.
    InvalidContentLength,
    /// Plain CONNECT (no `:protocol`), or extended CONNECT for a protocol
    /// other than `websocket`: this edge does not tunnel.
    UnsupportedConnect,
    /// A field name or value that HTTP/2 cannot carry (from an upstream's
    /// HTTP/1.1 head or trailers).
    InvalidField,
    /// An upstream status that HTTP/2 cannot carry (1xx other than the
    /// informational ones, or out of range).
    InvalidStatus,
    /// An HTTP/1.1 trailer section that does not parse.
    InvalidTrailers,
}

impl ConvertError {
    /// The status to answer the client with: 400 for a malformed request,
    /// 501 for an unsupported CONNECT, 502 for an upstream's unconvertible
    /// response.
    pub fn status(&self) -> u16 {
        match self {
            ConvertError::UnsupportedConnect => 501,
            ConvertError::InvalidField
            | ConvertError::InvalidStatus
            | ConvertError::InvalidTrailers => 502,
            _ => 400,
        }
    }

    /// The request is malformed in the sense of RFC 9113 §8.1.1: the
    /// stream should be reset with PROTOCOL_ERROR rather than answered.
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            ConvertError::ConnectionSpecificHeader(_)
                | ConvertError::InvalidTe
                | ConvertError::InvalidContentLength
                | ConvertError::AuthorityMismatch
                | ConvertError::InvalidPath
        )
    }
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvertError::MissingAuthority => {
                f.write_str("request has neither :authority nor Host")
            }
            ConvertError::AuthorityMismatch => f.write_str(":authority and Host differ"),
            ConvertError::DuplicateHost => f.write_str("more than one Host field"),
            ConvertError::InvalidAuthority => f.write_str("invalid :authority"),
            ConvertError::InvalidPath => f.write_str("invalid :path"),
            ConvertError::ConnectionSpecificHeader(n) => {
                write!(f, "connection-specific field {n:?} in an HTTP/2 request")
            }
            ConvertError::InvalidTe => f.write_str("te other than \"trailers\""),
            ConvertError::InvalidContentLength => f.write_str("invalid content-length"),
            ConvertError::UnsupportedConnect => f.write_str("CONNECT is not supported"),
            ConvertError::InvalidField => f.write_str("field not valid in HTTP/2"),
            ConvertError::InvalidStatus => f.write_str("status not valid in HTTP/2"),
            ConvertError::InvalidTrailers => f.write_str("invalid HTTP/1.1 trailer section"),
        }
    }
}

impl std::error::Error for ConvertError {}
