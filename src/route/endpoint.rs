//! What an endpoint is once loaded: its URL, where its traffic goes, and
//! its compiled policy.

use std::net::SocketAddr;

use crate::policy::CompiledPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A direct upstream the edge proxies to itself. Addresses are resolved on
/// the control thread at load, never on a worker.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub url: String,
    pub addrs: Vec<SocketAddr>,
}

#[derive(Debug)]
pub struct Endpoint {
    /// The URL as configured, e.g. `http://*.example.com`.
    pub url: String,
    pub scheme: Scheme,
    /// Lowercase host, `*.` prefix kept for wildcards.
    pub host: String,
    pub upstream: Option<Upstream>,
    pub policy: Option<std::sync::Arc<CompiledPolicy>>,
    /// Agent endpoints: the sessions that bound this URL.
    pub tunnel: Option<TunnelTarget>,
    /// Inspector and events overrides (agent endpoints: none).
    pub observe: crate::observe::config::EndpointObserve,
}

/// Where an agent endpoint's traffic goes: one member per binding agent
/// (several with pooling), each with one session per edge worker it
/// reached (our agent opens one per worker; SDKs open one).
#[derive(Debug, Clone)]
pub struct TunnelTarget {
    pub members: Vec<Member>,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub sessions: Vec<Binding>,
}

/// One bound tunnel: on which worker its session lives, and its ids.
#[derive(Debug, Clone)]
pub struct Binding {
    pub worker: usize,
    pub session: u64,
    pub tunnel_id: std::sync::Arc<str>,
    pub proto: &'static str,
    /// The owning worker has requests waiting for one of the session's
    /// stream slots.
    pub pressure: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Endpoint {
    pub fn is_wildcard(&self) -> bool {
        self.host.starts_with("*.")
    }
}
