//! Typed parse errors. Each maps to exactly one client-facing status.

use thiserror::Error;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    #[error("malformed request line or header: {0}")]
    Syntax(&'static str),
    #[error("head larger than the configured limit")]
    HeadTooLarge,
    #[error("too many header fields")]
    TooManyHeaders,
    #[error("unsupported HTTP version")]
    Version,
    #[error("missing Host header")]
    MissingHost,
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("invalid Host header")]
    InvalidHost,
    #[error("invalid Content-Length")]
    InvalidContentLength,
    #[error("Transfer-Encoding together with Content-Length")]
    TransferEncodingWithContentLength,
    #[error("Transfer-Encoding whose final coding is not chunked")]
    TransferEncodingNotChunked,
    #[error("invalid chunked body: {0}")]
    Chunked(&'static str),
    #[error("unsupported Expect value")]
    Expectation,
}

impl ParseError {
    /// The status a server answers this request error with.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::HeadTooLarge | ParseError::TooManyHeaders => 431,
            ParseError::Version => 505,
            ParseError::Expectation => 417,
            _ => 400,
        }
    }
}
