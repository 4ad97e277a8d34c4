//! What can go wrong while building a forwarder or serving a connection.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::http1::ParseError;

#[derive(Debug, Error)]
pub enum ForwardError {
    /// `--upstream-tls-verify-cas` could not be read.
    #[error("reading CA file {path}: {source}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("no usable certificate in CA file {0}")]
    NoCaCertificates(PathBuf),
    /// `--upstream-tls-verify` without a CA file, and the system has no
    /// root certificates we could load.
    #[error("no system root certificates for upstream TLS verification: {0}")]
    SystemRoots(String),
    #[error("upstream TLS configuration: {0}")]
    TlsConfig(#[from] rustls::Error),
    /// The upstream could not be reached. The connection was answered with
    /// the agent's 502 page (ERR_NGROK_8012) before this was returned.
    #[error("could not reach upstream {upstream}: {reason}")]
    Dial { upstream: String, reason: String },
    /// Reading from or writing to the edge's stream failed.
    #[error("edge stream: {0}")]
    Edge(#[source] io::Error),
    /// Reading from or writing to the upstream failed mid-exchange.
    #[error("upstream: {0}")]
    Upstream(#[source] io::Error),
    /// The edge sent bytes that are not a valid HTTP/1.1 request (answered
    /// with the matching 4xx/5xx, then the connection was closed).
    #[error("request from the edge: {0}")]
    Request(#[from] ParseError),
    /// The edge closed the stream in the middle of a request.
    #[error("edge stream ended in the middle of a request")]
    TruncatedRequest,
    /// The HTTP/2 upstream failed (reset, GOAWAY, protocol error).
    #[error("HTTP/2 upstream: {0}")]
    H2(#[from] h2::Error),
    /// The I/O stack under the forwarder panicked (known cause: a
    /// monoio-rustls 0.4 TLS error while a write is in flight); only this
    /// connection was dropped.
    #[error("forwarding I/O panicked: {0}")]
    Panic(String),
}

impl ForwardError {
    /// The failure is the upstream's (or reaching it), not the edge's.
    pub fn is_upstream(&self) -> bool {
        matches!(
            self,
            ForwardError::Dial { .. } | ForwardError::Upstream(_) | ForwardError::H2(_)
        )
    }
}
