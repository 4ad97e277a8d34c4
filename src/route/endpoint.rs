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
    pub policy: Option<CompiledPolicy>,
}

impl Endpoint {
    pub fn is_wildcard(&self) -> bool {
        self.host.starts_with("*.")
    }
}
