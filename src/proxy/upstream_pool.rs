//! Idle keep-alive connections to upstreams, per worker (no locks: a
//! worker's pool is only touched by its own thread). Most recently used
//! first, so the connections least likely to have been closed by the
//! upstream are reused; connections idle past the timeout are dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

#[derive(Default)]
pub struct UpstreamPool {
    idle: HashMap<SocketAddr, Vec<(TcpStream, Instant)>>,
}

impl UpstreamPool {
    /// Takes the freshest idle connection to `addr`, if any is younger
    /// than `max_idle`.
    pub fn take(&mut self, addr: SocketAddr, max_idle: Duration) -> Option<TcpStream> {
        let list = self.idle.get_mut(&addr)?;
        while let Some((stream, since)) = list.pop() {
            if since.elapsed() < max_idle {
                return Some(stream);
            }
        }
        None
    }

    /// Returns a connection for reuse; beyond `max_per_host` the oldest is
    /// closed.
    pub fn put(&mut self, addr: SocketAddr, stream: TcpStream, max_per_host: usize) {
        if max_per_host == 0 {
            return;
        }
        let list = self.idle.entry(addr).or_default();
        if list.len() >= max_per_host {
            list.remove(0);
        }
        list.push((stream, Instant::now()));
    }

    /// Drops every idle connection (shutdown).
    pub fn clear(&mut self) {
        self.idle.clear();
    }

    pub fn idle_count(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }
}
