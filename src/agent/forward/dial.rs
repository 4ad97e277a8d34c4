//! Reaching the upstream: its addresses (resolved off the agent thread and
//! cached) and a TCP connection to the first one that answers.
//!
//! IP literals need no lookup; `localhost` is 127.0.0.1 then ::1 without
//! asking the resolver (RFC 6761 §6.3). Other names are resolved by the
//! system resolver on a short-lived helper thread, so a slow DNS server
//! never stalls the agent's runtime, and the answer is kept for
//! [`RESOLVE_TTL`].

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use tracing::debug;

/// How long a resolved address list is reused.
pub const RESOLVE_TTL: Duration = Duration::from_secs(30);
/// Longest wait for one name lookup.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one TCP connect attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The upstream's addresses, resolved at most once per [`RESOLVE_TTL`].
#[derive(Debug)]
pub struct Resolver {
    host: String,
    port: u16,
    /// Known without a lookup (IP literal or `localhost`).
    fixed: Option<Rc<[SocketAddr]>>,
    cached: RefCell<Option<(Instant, Rc<[SocketAddr]>)>>,
}

impl Resolver {
    pub fn new(host: &str, port: u16) -> Resolver {
        let fixed: Option<Rc<[SocketAddr]>> = if let Ok(ip) = host.parse::<IpAddr>() {
            Some(Rc::from([SocketAddr::new(ip, port)]))
        } else if host.eq_ignore_ascii_case("localhost") {
            Some(Rc::from([
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
            ]))
        } else {
            None
        };
        Resolver {
            host: host.to_owned(),
            port,
            fixed,
            cached: RefCell::new(None),
        }
    }

    /// The addresses to try, in order.
    pub async fn addrs(&self) -> io::Result<Rc<[SocketAddr]>> {
        if let Some(f) = &self.fixed {
            return Ok(f.clone());
        }
        if let Some((at, addrs)) = self.cached.borrow().as_ref() {
            if at.elapsed() < RESOLVE_TTL {
                return Ok(addrs.clone());
            }
        }
        let addrs: Rc<[SocketAddr]> = resolve_off_thread(self.host.clone(), self.port)
            .await?
            .into();
        *self.cached.borrow_mut() = Some((Instant::now(), addrs.clone()));
        Ok(addrs)
    }

    /// Forgets the cached answer (after every address failed).
    pub fn forget(&self) {
        self.cached.borrow_mut().take();
    }
}

/// Runs the system resolver on a helper thread and waits for it without
/// blocking this one.
pub async fn resolve_off_thread(host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let name = host.clone();
    std::thread::Builder::new()
        .name("ringress-resolve".into())
        .spawn(move || {
            let res = (name.as_str(), port)
                .to_socket_addrs()
                .map(|it| it.collect::<Vec<_>>());
            let _ = tx.send(res);
        })?;
    let res = match monoio::time::timeout(RESOLVE_TIMEOUT, rx).await {
        Ok(Ok(res)) => res,
        Ok(Err(_)) => Err(io::Error::other("resolver thread ended without an answer")),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("resolving {host} timed out"),
        )),
    }?;
    if res.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} has no addresses"),
        ));
    }
    Ok(res)
}

/// Connects to the first address that accepts, with TCP_NODELAY set.
/// The error names the last failure.
pub async fn connect(resolver: &Resolver) -> io::Result<TcpStream> {
    let addrs = resolver.addrs().await?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no addresses");
    for addr in addrs.iter() {
        match monoio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect_addr(*addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => {
                debug!(%addr, error = %e, "upstream connect failed");
                last = e;
            }
            Err(_) => {
                debug!(%addr, "upstream connect timed out");
                last = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {addr} timed out"),
                );
            }
        }
    }
    resolver.forget();
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::forward::test_util::block_on;

    #[test]
    fn literals_and_localhost_need_no_lookup() {
        block_on(async {
            let r = Resolver::new("::1", 80);
            assert_eq!(
                &*r.addrs().await.expect("v6"),
                &["[::1]:80".parse().expect("a")]
            );
            let r = Resolver::new("LocalHost", 8080);
            let want: Vec<SocketAddr> = vec![
                "127.0.0.1:8080".parse().expect("a"),
                "[::1]:8080".parse().expect("a"),
            ];
            assert_eq!(&*r.addrs().await.expect("localhost"), want.as_slice());
        });
    }

    #[test]
    fn lookup_runs_off_thread_and_is_cached() {
        block_on(async {
            // The system resolver parses literals itself: no DNS needed.
            let got = resolve_off_thread("127.0.0.1".into(), 9).await.expect("ok");
            assert_eq!(got, vec!["127.0.0.1:9".parse().expect("a")]);
            let r = Resolver {
                host: "127.0.0.2".into(),
                port: 7,
                fixed: None,
                cached: RefCell::new(None),
            };
            let a = r.addrs().await.expect("ok");
            let b = r.addrs().await.expect("ok");
            assert!(Rc::ptr_eq(&a, &b), "second answer comes from the cache");
        });
    }

    #[test]
    fn connect_skips_dead_addresses() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        block_on(async move {
            // ::1 first (nothing listens there on this port), then 127.0.0.1.
            let r = Resolver {
                host: "x".into(),
                port,
                fixed: Some(Rc::from([
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
                ])),
                cached: RefCell::new(None),
            };
            let s = connect(&r).await.expect("connects to the second");
            assert_eq!(s.peer_addr().expect("peer").port(), port);
        });
        drop(listener);
    }
}
