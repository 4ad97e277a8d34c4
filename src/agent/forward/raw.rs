//! `http://`, `https://` and `tcp://` upstreams with HTTP/1.1: dial, then
//! copy bytes both ways ([`super::pipe`]), through TLS for `https://`.
//! When the upstream cannot be reached (connect or TLS handshake), the
//! edge gets the agent's 502 page instead ([`super::bad_gateway`]).

use std::sync::Arc;

use monoio::io::{AsyncReadRent, AsyncWriteRent, Split, Splitable};
use monoio_rustls::TlsConnector;
use rustls::pki_types::ServerName;
use tracing::debug;

use super::bad_gateway::answer_unreachable;
use super::dial::{self, Resolver, CONNECT_TIMEOUT};
use super::edge_io::{EdgeReader, EdgeWriter};
use super::error::ForwardError;
use super::pipe::{pipe, PipeOutcome};
use super::ForwardStats;

/// How to reach a byte-copy upstream.
pub struct RawUpstream {
    /// For error pages: the normalized upstream URL.
    upstream: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl RawUpstream {
    pub fn new(
        upstream: String,
        tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    ) -> RawUpstream {
        RawUpstream {
            upstream,
            tls: tls.map(|(cfg, name)| (TlsConnector::from(cfg), name)),
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub async fn serve<S>(
        &self,
        resolver: &Resolver,
        stream: S,
    ) -> Result<ForwardStats, ForwardError>
    where
        S: AsyncReadRent + AsyncWriteRent + Split + 'static,
    {
        let (edge_r, edge_w) = stream.into_split();
        let tcp = match dial::connect(resolver).await {
            Ok(t) => t,
            Err(e) => return Err(self.unreachable(edge_r, edge_w, &e.to_string()).await),
        };
        let outcome = match &self.tls {
            None => {
                let (up_r, up_w) = tcp.into_split();
                pipe(edge_r, edge_w, up_r, up_w).await
            }
            Some((connector, name)) => {
                let tls = match monoio::time::timeout(
                    CONNECT_TIMEOUT,
                    connector.connect(name.clone(), tcp),
                )
                .await
                {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        let reason = format!("TLS handshake failed: {e}");
                        return Err(self.unreachable(edge_r, edge_w, &reason).await);
                    }
                    Err(_) => {
                        let reason = "TLS handshake timed out";
                        return Err(self.unreachable(edge_r, edge_w, reason).await);
                    }
                };
                let (up_r, up_w) = tls.into_split();
                pipe(edge_r, edge_w, up_r, up_w).await
            }
        };
        finish(outcome)
    }

    async fn unreachable<R, W>(&self, r: R, w: W, reason: &str) -> ForwardError
    where
        R: AsyncReadRent,
        W: AsyncWriteRent,
    {
        debug!(upstream = %self.upstream, reason, "upstream unreachable");
        let mut rd = EdgeReader::new(r);
        let mut wr = EdgeWriter::new(w);
        answer_unreachable(&mut rd, &mut wr, &self.upstream, reason).await
    }
}

/// Statistics when both directions ended cleanly, else the first failure
/// (upstream first: an edge failure is usually its consequence).
fn finish(o: PipeOutcome) -> Result<ForwardStats, ForwardError> {
    if let Some(e) = o.upstream_error {
        return Err(ForwardError::Upstream(e));
    }
    if let Some(e) = o.edge_error {
        return Err(ForwardError::Edge(e));
    }
    Ok(ForwardStats {
        bytes_in: o.bytes_in,
        bytes_out: o.bytes_out,
    })
}
