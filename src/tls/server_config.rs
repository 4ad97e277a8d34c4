//! The rustls server configuration of a worker. Each worker has its own
//! (its own session cache: no lock shared between cores); the ticket keys
//! are shared so a session resumes on whichever worker the kernel picks.

use std::sync::Arc;

use rustls::server::{ProducesTickets, ServerConfig, ServerSessionMemoryCache};

use super::resolver::SnapshotResolver;
use crate::runtime::snapshot::SnapshotStore;
use crate::tunnel::registry::Registry;

/// TLS 1.2 session IDs remembered per worker.
const SESSION_CACHE: usize = 8192;

/// ALPN protocols offered, most preferred first.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Shared ticket keys (rotated by rustls every 6 hours).
pub fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    rustls::crypto::aws_lc_rs::Ticketer::new()
}

/// Builds a worker's configuration. `h2` decides whether `h2` is offered.
pub fn worker_config(
    store: Arc<SnapshotStore>,
    tunnels: Option<Arc<Registry>>,
    ticketer: Arc<dyn ProducesTickets>,
    h2: bool,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SnapshotResolver::new(store, tunnels)));
    cfg.alpn_protocols = if h2 {
        vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()]
    } else {
        vec![ALPN_HTTP11.to_vec()]
    };
    cfg.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    cfg.ticketer = ticketer;
    // Follow the client's cipher preference (nginx's default too): clients
    // on hardware with AES prefer AES-128-GCM, whose SHA-256 key schedule
    // is measurably cheaper per handshake than AES-256-GCM-SHA384, which
    // is what the server order would impose (docs/performance.md).
    cfg.ignore_client_order = false;
    Ok(Arc::new(cfg))
}

/// The agent tunnel listener's configuration: the same certificates, no
/// ALPN (the ngrok SDKs offer none).
pub fn tunnel_config(
    store: Arc<SnapshotStore>,
    ticketer: Arc<dyn ProducesTickets>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let base = worker_config(store, None, ticketer, false)?;
    let mut cfg = (*base).clone();
    cfg.alpn_protocols.clear();
    Ok(Arc::new(cfg))
}
