//! Forwarders: what the agent does with one proxied connection.
//!
//! For every public connection the edge opens a stream to the agent that
//! carries plain HTTP/1.1 request bytes (agent protocol spec §6). A
//! [`Forwarder`], built once per endpoint from its upstream and options,
//! serves such streams, all on the agent's single monoio thread:
//!
//! | upstream | protocol | what happens |
//! |---|---|---|
//! | `http://`, `tcp://` | http1 | TCP dial, bytes copied both ways (`raw`, `pipe`) |
//! | `https://` | http1 | same through rustls (`tls`): unverified unless `tls_verify` |
//! | `http://`, `tcp://` | http2 | HTTP/1.1 parsed, sent over h2c prior knowledge (`h2c`) |
//! | `https://` | http2 | same over TLS with ALPN h2 |
//! | `file:///dir` | any | built-in static file server (`files`) |
//!
//! Upstream unreachable: the edge gets `502` with `ngrok-error-code:
//! ERR_NGROK_8012`, after the request head was read (`bad_gateway`).
//! Never: parse HTTP on the byte-copy path (Host and all headers reach the
//! upstream as the edge sent them), block the thread on DNS (`dial`), or
//! hold a `RefCell` borrow across an await.

mod bad_gateway;
mod dial;
mod edge_io;
mod error;
mod files;
mod h2c;
mod pipe;
mod raw;
mod tls;

#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};

use crate::agent::upstream_url::{UpstreamScheme, UpstreamUrl};
use crate::runtime::catch_unwind::{panic_message, CatchUnwind};
use dial::Resolver;
pub use error::ForwardError;
use files::FileServer;
use h2c::H2Upstream;
use raw::RawUpstream;

/// The protocol spoken to the upstream (`--upstream-protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// h2c with prior knowledge (`http://`), or TLS with ALPN h2.
    Http2,
}

/// Everything a forwarder is built from.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    pub upstream: UpstreamUrl,
    pub protocol: UpstreamProtocol,
    /// `--upstream-tls-verify`: check the `https://` upstream's certificate.
    pub tls_verify: bool,
    /// `--upstream-tls-verify-cas`: trust these CAs (PEM) instead of the
    /// system's roots.
    pub tls_verify_cas: Option<PathBuf>,
}

/// What one served connection moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ForwardStats {
    /// Bytes read from the edge's stream (requests).
    pub bytes_in: u64,
    /// Bytes written to the edge's stream (responses).
    pub bytes_out: u64,
}

/// Serves proxied connections for one endpoint. Not `Send`: it lives on the
/// agent's thread and is shared by reference (or `Rc`) by every stream.
pub struct Forwarder {
    upstream: UpstreamUrl,
    kind: Kind,
}

enum Kind {
    Raw(Resolver, RawUpstream),
    H2(Resolver, H2Upstream),
    Files(FileServer),
}

impl Forwarder {
    /// Builds the forwarder: TLS client configuration (reading the CA file
    /// when one is given) and nothing else; no network I/O.
    pub fn new(opts: ForwardOptions) -> Result<Forwarder, ForwardError> {
        let u = &opts.upstream;
        let display = u.to_string();
        let tls = |alpn_h2: bool| -> Result<_, ForwardError> {
            let cfg = tls::client_config(opts.tls_verify, opts.tls_verify_cas.as_deref(), alpn_h2)?;
            Ok(Some((cfg, tls::server_name(&u.host)?)))
        };
        let kind = match (u.scheme, opts.protocol) {
            (UpstreamScheme::File, _) => Kind::Files(FileServer::new(u.path.clone())),
            (UpstreamScheme::Http | UpstreamScheme::Tcp, UpstreamProtocol::Http1) => Kind::Raw(
                Resolver::new(&u.host, u.port),
                RawUpstream::new(display, None),
            ),
            (UpstreamScheme::Https, UpstreamProtocol::Http1) => Kind::Raw(
                Resolver::new(&u.host, u.port),
                RawUpstream::new(display, tls(false)?),
            ),
            (UpstreamScheme::Http | UpstreamScheme::Tcp, UpstreamProtocol::Http2) => Kind::H2(
                Resolver::new(&u.host, u.port),
                H2Upstream::new(display, None),
            ),
            (UpstreamScheme::Https, UpstreamProtocol::Http2) => Kind::H2(
                Resolver::new(&u.host, u.port),
                H2Upstream::new(display, tls(true)?),
            ),
        };
        Ok(Forwarder {
            upstream: opts.upstream,
            kind,
        })
    }

    pub fn upstream(&self) -> &UpstreamUrl {
        &self.upstream
    }

    /// Serves one proxied connection until both directions are done: the
    /// stream has been half-closed towards the edge (FIN) and the edge's
    /// side has ended or is no longer needed.
    ///
    /// `Err(ForwardError::Dial { .. })` means the upstream could not be
    /// reached and the edge already got the 502 page.
    pub async fn serve<S>(&self, stream: S) -> Result<ForwardStats, ForwardError>
    where
        S: AsyncReadRent + AsyncWriteRent + Split + 'static,
    {
        match &self.kind {
            Kind::Files(f) => f.serve(stream).await,
            Kind::Raw(resolver, raw) if raw.is_tls() => {
                // monoio-rustls 0.4 can panic when a TLS error meets a
                // write in flight on the split stream: keep it to this
                // connection.
                match CatchUnwind(Box::pin(raw.serve(resolver, stream))).await {
                    Ok(res) => res,
                    Err(p) => Err(ForwardError::Panic(panic_message(p.as_ref()).to_owned())),
                }
            }
            Kind::Raw(resolver, raw) => raw.serve(resolver, stream).await,
            Kind::H2(resolver, h2) => h2.serve(resolver, stream).await,
        }
    }
}

/// The system's trust store (honours SSL_CERT_FILE / SSL_CERT_DIR).
pub fn system_roots() -> Result<rustls::RootCertStore, ForwardError> {
    tls::roots(None)
}
