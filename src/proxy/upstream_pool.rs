//! Idle keep-alive connections to upstreams, per worker (no locks: a
//! worker's pool is only touched by its own thread). Most recently used
//! first, so the connections least likely to have been closed by the
//! upstream are reused; connections idle past the timeout are dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::task::Waker;
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

/// Per upstream address: idle connections, how many are checked out, and
/// requests waiting for one.
#[derive(Default)]
struct Host {
    idle: Vec<(TcpStream, Instant)>,
    busy: usize,
    last_release: Option<Instant>,
    waiters: Vec<Waker>,
}

/// How recently a connection must have come back for a request to wait
/// for one rather than open a new connection: a fast upstream returns
/// connections continuously; one whose connections are all held (SSE, long
/// polls) does not, and then waiting would only add latency.
const RECENT_RELEASE: Duration = Duration::from_millis(5);

#[derive(Default)]
pub struct UpstreamPool {
    hosts: HashMap<SocketAddr, Host>,
}

impl UpstreamPool {
    /// Takes the freshest idle connection to `addr`, if any is younger
    /// than `max_idle`, and counts it as busy.
    pub fn take(&mut self, addr: SocketAddr, max_idle: Duration) -> Option<TcpStream> {
        let host = self.hosts.get_mut(&addr)?;
        while let Some((stream, since)) = host.idle.pop() {
            if since.elapsed() < max_idle {
                host.busy += 1;
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
            self.release_slot(addr);
        }
        None
    }

    /// Counts a newly opened connection as busy.
    pub fn opened(&mut self, addr: SocketAddr) {
        self.hosts.entry(addr).or_default().busy += 1;
    }

    /// Whether a request should wait for a connection to come back instead
    /// of opening one: `cap` are busy and the upstream is returning them.
    pub fn should_wait(&self, addr: SocketAddr, cap: usize) -> bool {
        self.hosts.get(&addr).is_some_and(|h| {
            cap > 0 && h.busy >= cap && h.last_release.is_some_and(|t| t.elapsed() < RECENT_RELEASE)
        })
    }

    /// Registers a waiter woken by the next `put` or `release_slot`.
    pub fn wait_for_release(&mut self, addr: SocketAddr, waker: &Waker) {
        self.hosts
            .entry(addr)
            .or_default()
            .waiters
            .push(waker.clone());
    }

    /// A busy connection ended without coming back (closed, or handed to an
    /// upgraded pipe): its slot is free.
    pub fn release_slot(&mut self, addr: SocketAddr) {
        if let Some(host) = self.hosts.get_mut(&addr) {
            host.busy = host.busy.saturating_sub(1);
            host.last_release = Some(Instant::now());
            // Wake every waiter: each re-checks the pool, and a waker left
            // by a waiter that timed out cannot swallow the wake-up.
            for w in host.waiters.drain(..) {
                w.wake();
            }
        }
    }

    /// Returns a busy connection for reuse; beyond `max_per_host` idle ones
    /// the oldest is closed.
    pub fn put(&mut self, addr: SocketAddr, stream: TcpStream, max_per_host: usize) {
        let host = self.hosts.entry(addr).or_default();
        if max_per_host > 0 {
            if host.idle.len() >= max_per_host {
                host.idle.remove(0);
            }
            host.idle.push((stream, Instant::now()));
        }
        self.release_slot(addr);
    }

    /// Drops every idle connection (shutdown).
    pub fn clear(&mut self) {
        for host in self.hosts.values_mut() {
            host.idle.clear();
            for w in host.waiters.drain(..) {
                w.wake();
            }
        }
    }

    pub fn idle_count(&self) -> usize {
        self.hosts.values().map(|h| h.idle.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_only_while_a_busy_upstream_returns_connections() {
        let mut pool = UpstreamPool::default();
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        pool.opened(a);
        pool.opened(a);
        // Two busy, cap 2, but nothing ever came back: do not wait.
        assert!(!pool.should_wait(a, 2));
        pool.release_slot(a);
        pool.opened(a);
        // A release just happened: a fast upstream, queue for it.
        assert!(pool.should_wait(a, 2));
        assert!(!pool.should_wait(a, 3), "below the cap");
        assert!(!pool.should_wait(a, 0), "cap 0 disables waiting");
        std::thread::sleep(RECENT_RELEASE * 2);
        assert!(
            !pool.should_wait(a, 2),
            "connections held for long: open more"
        );
    }

    #[test]
    fn releases_wake_every_waiter() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut pool = UpstreamPool::default();
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        pool.opened(a);
        pool.wait_for_release(a, &waker);
        pool.wait_for_release(a, &waker);
        pool.release_slot(a);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }
}
