//! The agent's local inspector (`web_addr`, default 127.0.0.1:4040): a
//! capture of every HTTP request through the agent's endpoints, the web
//! page that shows them live, replay, and ngrok's agent API
//! (`/api/tunnels`, `/api/endpoints`, `/api/requests/http`, `/api/status`).
//!
//! - `capture`: sans-IO HTTP/1.1 observer of one connection's bytes;
//! - `tap`: the stream wrapper that feeds it, on the session threads;
//! - `store`: captures bounded by `inspect_db_size`;
//! - `server`: the HTTP server (hyper on tokio) on its own thread;
//! - `replay`: re-sends a capture to the upstream on a thread of its own.
//!
//! Session threads only send events into an unbounded channel: they never
//! wait for the inspector. The inspector never fails the agent: a port it
//! cannot bind is logged and the next ones are tried, as ngrok does.

pub mod capture;
pub mod json;
pub mod replay;
pub mod server;
pub mod store;
pub mod tap;

use std::net::SocketAddr;
use std::sync::Arc;

pub use capture::{ConnTap, TapConfig};
pub use tap::Inspected;

use super::run::AgentEndpoint;
use super::status::Counters;

/// `web_addr` default, as ngrok's.
pub const DEFAULT_WEB_ADDR: &str = "127.0.0.1:4040";
/// Ports tried after the configured one when it is taken (4041, 4042...).
pub const PORT_FALLBACKS: u16 = 10;

/// Where and whether the inspector runs.
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// Listen address; `None` turns the web interface (and so capture) off.
    pub addr: Option<String>,
    /// Bytes of captures kept (`inspect_db_size`); 0 = no capture.
    pub db_size: usize,
}

impl Default for WebOptions {
    fn default() -> Self {
        WebOptions {
            addr: Some(DEFAULT_WEB_ADDR.into()),
            db_size: store::DEFAULT_DB_SIZE,
        }
    }
}

/// What the agent's sessions need from a running inspector.
pub struct Running {
    /// Per endpoint: where its captures go (None: not inspected).
    pub taps: Vec<Option<TapConfig>>,
    pub addr: SocketAddr,
}

/// Starts the inspector thread, or returns None when it is off or cannot
/// listen anywhere (logged; the agent runs on without it).
pub fn start(
    web: &WebOptions,
    endpoints: &[AgentEndpoint],
    counters: Arc<Counters>,
) -> Option<Running> {
    let addr = web.addr.as_deref()?;
    let listener = match server::bind_with_fallback(addr) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(web_addr = addr, error = %e, "inspector off: cannot listen");
            return None;
        }
    };
    let local = listener.local_addr().ok()?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let capture = web.db_size > 0;
    let taps: Vec<Option<TapConfig>> = endpoints
        .iter()
        .map(|e| {
            (capture && e.inspect).then(|| TapConfig {
                sink: tx.clone(),
                tunnel_name: e.name.as_str().into(),
                body_cap: capture::DEFAULT_BODY_CAP.min(web.db_size),
            })
        })
        .collect();
    let state = server::State::new(endpoints, taps.clone(), counters, web.db_size, local);
    if let Err(e) = server::spawn(listener, state, rx) {
        tracing::warn!(error = %e, "inspector off: cannot start its thread");
        return None;
    }
    tracing::info!("inspector listening on http://{local}");
    Some(Running { taps, addr: local })
}
