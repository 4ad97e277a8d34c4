//! Idle keep-alive connections to upstreams, per worker (no locks: a
//! worker's pool is only touched by its own thread). Most recently used
//! first, so the connections least likely to have been closed by the
//! upstream are reused; connections idle past the timeout are dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

/// True when the socket has nothing to read and no FIN or error pending:
/// the state of a healthy idle keep-alive connection.
fn still_open(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: recv on a valid fd into a one-byte stack buffer; MSG_PEEK and
    // MSG_DONTWAIT make it a non-destructive, non-blocking probe.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

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

    /// Like `take`, but skips connections whose peer has already closed
    /// (or sent unsolicited bytes), checked with a non-blocking peek. Used
    /// for requests that cannot be retried, so they are never written to a
    /// connection known to be dead.
    pub fn take_alive(&mut self, addr: SocketAddr, max_idle: Duration) -> Option<TcpStream> {
        while let Some(stream) = self.take(addr, max_idle) {
            if still_open(&stream) {
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
