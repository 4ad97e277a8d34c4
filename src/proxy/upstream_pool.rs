//! Idle keep-alive connections to upstreams, per worker (no locks: a
//! worker's pool is only touched by its own thread). Most recently used
//! first, so the connections least likely to have been closed by the
//! upstream are reused; connections idle past the timeout are dropped.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::upstream_stream::{PoolKey, UpStream};

#[derive(Default)]
pub struct UpstreamPool {
    idle: HashMap<PoolKey, Vec<(UpStream, Instant)>>,
}

impl UpstreamPool {
    /// Takes the freshest idle connection to `addr`, if any is younger
    /// than `max_idle`.
    pub fn take(&mut self, key: &PoolKey, max_idle: Duration) -> Option<UpStream> {
        let list = self.idle.get_mut(key)?;
        while let Some((stream, since)) = list.pop() {
            if since.elapsed() < max_idle {
                return Some(stream);
            }
        }
        None
    }

    /// Like `take`, but skips connections whose peer has already closed
    /// (or sent unsolicited bytes), checked with a non-blocking peek. Used
    /// for requests that cannot be retried, so they are never written to a
    /// connection known to be dead.
    pub fn take_alive(&mut self, key: &PoolKey, max_idle: Duration) -> Option<UpStream> {
        while let Some(stream) = self.take(key, max_idle) {
            if stream.still_open() {
                return Some(stream);
            }
        }
        None
    }

    /// Returns a connection for reuse; beyond `max_per_host` the oldest is
    /// closed.
    pub fn put(&mut self, key: PoolKey, stream: UpStream, max_per_host: usize) {
        if max_per_host == 0 {
            return;
        }
        let list = self.idle.entry(key).or_default();
        if list.len() >= max_per_host {
            list.remove(0);
        }
        list.push((stream, Instant::now()));
    }

    /// Closes the oldest idle stream of one agent session, to give its
    /// stream slot to a new request. Returns whether there was one.
    pub fn evict_one_of_session(&mut self, session: u64) -> bool {
        for (k, list) in self.idle.iter_mut() {
            if matches!(k, PoolKey::Tunnel { session: s, .. } if *s == session) && !list.is_empty()
            {
                list.remove(0);
                return true;
            }
        }
        false
    }

    /// Drops every idle stream of one agent session (it ended, or it is at
    /// its stream limit and needs the slots).
    pub fn drop_session(&mut self, session: u64) {
        self.idle
            .retain(|k, _| !matches!(k, PoolKey::Tunnel { session: s, .. } if *s == session));
    }

    /// Drops every idle connection (shutdown).
    pub fn clear(&mut self) {
        self.idle.clear();
    }
}
