//! The edge's listening sockets, by kind (`http`, `https`, `tunnel`, and
//! whatever a module adds with one `take_or_bind` call): binds them with
//! SO_REUSEPORT, or takes them over from the process being upgraded, and
//! keeps a duplicate of each so the next upgrade can hand them on.
//!
//! Owns: binding, matching inherited sockets to the config, the kept
//! duplicates. Must never: accept connections (workers and the API server
//! do), or keep a duplicate of a socket whose owner has stopped (the kernel
//! would queue connections on it that nobody accepts).

use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;

/// Accept queue length asked of the kernel (capped by net.core.somaxconn).
const LISTEN_BACKLOG: i32 = 4096;

#[derive(Debug, Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the running edge has {had} {kind} listeners on {addr}, this config runs {want} workers: an upgrade cannot lower the worker count (connections queued on the surplus sockets would be reset); restart instead")]
    FewerWorkers {
        kind: String,
        addr: SocketAddr,
        had: usize,
        want: usize,
    },
}

/// The slot of control-plane listeners (no worker's end releases them).
const CONTROL_SLOT: usize = usize::MAX;

/// One listening socket with its kind and the slot (worker) it serves.
#[derive(Debug)]
pub struct Kept {
    pub kind: String,
    pub slot: usize,
    pub addr: SocketAddr,
    pub socket: TcpListener,
}

#[derive(Debug, Default)]
pub struct Listeners {
    /// Sockets received from the previous process, not yet claimed.
    inherited: Vec<Kept>,
    /// A duplicate of every socket handed out, for the next hand-off.
    kept: Vec<Kept>,
}

impl Listeners {
    pub fn new() -> Listeners {
        Listeners::default()
    }

    /// Adds a socket received from the process being upgraded.
    pub fn inherit(&mut self, kind: &str, socket: TcpListener) {
        let addr = match socket.local_addr() {
            Ok(a) => a,
            // Not a bound TCP listener: nothing we could serve on.
            Err(_) => return,
        };
        let slot = self.inherited.iter().filter(|k| k.kind == kind).count();
        self.inherited.push(Kept {
            kind: kind.to_owned(),
            slot,
            addr,
            socket,
        });
    }

    /// `n` listening sockets of `kind` on `addr` (port 0: any port, or the
    /// inherited one): inherited sockets first, in their order, so the
    /// kernel's accept queues carry over; new SO_REUSEPORT binds for the
    /// rest. One socket per worker (or `n = 1` for a control-plane
    /// listener).
    pub fn take_or_bind(
        &mut self,
        kind: &str,
        addr: SocketAddr,
        n: usize,
    ) -> Result<Vec<TcpListener>, ListenError> {
        let (mine, rest): (Vec<Kept>, Vec<Kept>) = std::mem::take(&mut self.inherited)
            .into_iter()
            .partition(|k| k.kind == kind && same_address(addr, k.addr));
        self.inherited = rest;
        if mine.len() > n {
            return Err(ListenError::FewerWorkers {
                kind: kind.to_owned(),
                addr: mine[0].addr,
                had: mine.len(),
                want: n,
            });
        }
        let bind_addr = mine.first().map(|k| k.addr).unwrap_or(addr);
        let mut out: Vec<TcpListener> = mine.into_iter().map(|k| k.socket).collect();
        if out.len() < n {
            out.extend(bind_reuseport(bind_addr, n - out.len())?);
        }
        for (slot, socket) in out.iter().enumerate() {
            let dup = socket.try_clone().map_err(|source| ListenError::Bind {
                addr: bind_addr,
                source,
            })?;
            self.kept.push(Kept {
                kind: kind.to_owned(),
                slot,
                addr: dup.local_addr().unwrap_or(bind_addr),
                socket: dup,
            });
        }
        Ok(out)
    }

    /// One socket of `kind` for a control-plane server (the API listener:
    /// `listeners.take_or_bind_one("api", addr)`), never tied to a worker.
    pub fn take_or_bind_one(
        &mut self,
        kind: &str,
        addr: SocketAddr,
    ) -> Result<TcpListener, ListenError> {
        let mut v = self.take_or_bind(kind, addr, 1)?;
        if let Some(k) = self.kept.last_mut() {
            k.slot = CONTROL_SLOT;
        }
        v.pop().ok_or(ListenError::Bind {
            addr,
            source: std::io::ErrorKind::NotFound.into(),
        })
    }

    /// Inherited sockets this config did not claim (an address changed):
    /// they are dropped, and the old process's copies close when it stops.
    pub fn unclaimed(&mut self) -> Vec<(String, SocketAddr)> {
        std::mem::take(&mut self.inherited)
            .into_iter()
            .map(|k| (k.kind, k.addr))
            .collect()
    }

    /// Every socket in use, for a hand-off.
    pub fn kept(&self) -> &[Kept] {
        &self.kept
    }

    /// Drops the duplicates of the sockets serving `slot` (its worker
    /// ended), so the kernel stops queueing connections for it.
    pub fn release_slot(&mut self, slot: usize) {
        self.kept.retain(|k| k.slot != slot);
    }

    /// Drops every duplicate (the process stops accepting).
    pub fn release_all(&mut self) {
        self.kept.clear();
    }
}

/// Whether an inherited socket on `have` serves the configured `want`.
fn same_address(want: SocketAddr, have: SocketAddr) -> bool {
    want.ip() == have.ip() && (want.port() == 0 || want.port() == have.port())
}

/// Binds `n` listeners sharing one address through SO_REUSEPORT. With
/// port 0, the first bind picks the port and the others reuse it.
pub fn bind_reuseport(addr: SocketAddr, n: usize) -> Result<Vec<TcpListener>, ListenError> {
    let mut out = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n {
        let bind = |addr: SocketAddr| -> std::io::Result<TcpListener> {
            let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            sock.set_reuse_address(true)?;
            sock.set_reuse_port(true)?;
            sock.set_nonblocking(true)?;
            sock.set_nodelay(true)?;
            sock.bind(&addr.into())?;
            sock.listen(LISTEN_BACKLOG)?;
            Ok(sock.into())
        };
        let l = bind(addr).map_err(|source| ListenError::Bind { addr, source })?;
        if addr.port() == 0 {
            addr = l
                .local_addr()
                .map_err(|source| ListenError::Bind { addr, source })?;
        }
        out.push(l);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lo() -> SocketAddr {
        "127.0.0.1:0".parse().expect("addr")
    }

    #[test]
    fn inherited_sockets_are_taken_first_and_the_rest_bound() {
        let first = bind_reuseport(lo(), 2).expect("bind");
        let port = first[0].local_addr().expect("addr").port();
        let mut set = Listeners::new();
        for s in first {
            set.inherit("http", s);
        }
        let got = set.take_or_bind("http", lo(), 3).expect("take");
        assert_eq!(got.len(), 3);
        assert!(got
            .iter()
            .all(|l| l.local_addr().expect("addr").port() == port));
        assert_eq!(set.kept().len(), 3);
        assert!(set.unclaimed().is_empty());
    }

    #[test]
    fn fewer_workers_than_inherited_sockets_is_refused() {
        let mut set = Listeners::new();
        for s in bind_reuseport(lo(), 3).expect("bind") {
            set.inherit("tunnel", s);
        }
        let err = set.take_or_bind("tunnel", lo(), 2).expect_err("refused");
        assert!(err.to_string().contains("cannot lower the worker count"));
    }

    #[test]
    fn another_address_is_not_inherited() {
        let mut set = Listeners::new();
        for s in bind_reuseport(lo(), 1).expect("bind") {
            set.inherit("http", s);
        }
        let other: SocketAddr = "127.0.0.2:0".parse().expect("addr");
        let got = set.take_or_bind("http", other, 1).expect("bind");
        assert_eq!(got[0].local_addr().expect("addr").ip(), other.ip());
        assert_eq!(set.unclaimed().len(), 1);
    }

    #[test]
    fn a_finished_slot_releases_its_duplicates() {
        let mut set = Listeners::new();
        set.take_or_bind("http", lo(), 2).expect("bind");
        set.take_or_bind("https", lo(), 2).expect("bind");
        set.release_slot(1);
        assert_eq!(set.kept().len(), 2);
        assert!(set.kept().iter().all(|k| k.slot == 0));
    }
}
